//! Recording of every talk burst, off the voice path.
//!
//! What is recorded is what the gateway relayed: each admitted frame's
//! datagram (a `Bytes` clone of the one the voice loop read, no copy) is
//! handed to the recorder thread through a bounded queue with `try_send`.
//! The voice loop never waits: a frame that finds the queue full is left
//! out of the recording, counted in `recorder_frames_dropped` and in its
//! recording's index row (`dropped`), and the file keeps its timing with a
//! filler where it would have been ([`ptt_gateway_core::recording`]).
//!
//! Bursts start and end on the floor's path (`group`): `Start` is queued
//! before the fan-out snapshot that admits the burst's frames is published,
//! and `End` when the floor ends it, on an unbounded channel of their own
//! (a few per burst, never dropped). The recorder reads that channel before
//! every frame, so a frame's `Start` is always known when the frame is.
//!
//! The thread ([`writer`]) writes one Ogg Opus file per burst
//! (`<dir>/YYYY/MM/DD/g<group>-t<talker>-<start ms>-b<burst>.opus`, UTC),
//! waits 250 ms after a burst's end for frames still in flight, closes the
//! file, and makes it durable in batches: every file, its folder and the
//! index rows are fsynced at most `sync_interval_ms` after the first of
//! them closed (one store transaction per batch). A burst is therefore
//! durable within `sync_interval_ms` + 250 ms of its end, plus the fsyncs.
//!
//! A second thread ([`sweep`]) enforces retention and the disk budget.

#[cfg(feature = "wav-export")]
pub mod export;
mod file;
mod sweep;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use bytes::Bytes;
use ptt_codec::{Class, GroupId, TerminalId, VoiceHeader};
use ptt_gateway_core::audit::EndedBy;

use crate::config;
use crate::metrics::Metrics;
use crate::store::Store;

pub use file::{date_path, parse_time, read_packets, utc, ReadPacket};

/// A burst the floor granted: its recording begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    /// The group.
    pub group: GroupId,
    /// Who talks.
    pub terminal: TerminalId,
    /// The floor's burst id, which the burst's frames carry.
    pub burst: u16,
    /// The class it was granted at.
    pub class: Class,
    /// Granted, Unix ms.
    pub started_ms: u64,
}

/// What the floor tells the recorder, in the order it happened.
#[derive(Debug)]
enum Control {
    Start(Start),
    End {
        group: GroupId,
        burst: u16,
        ended_ms: u64,
        by: EndedBy,
        /// Frames of the burst the queue was too full to take.
        dropped: u64,
    },
}

/// One relayed frame.
#[derive(Debug)]
struct Frame {
    group: GroupId,
    burst: u16,
    seq: u16,
    /// The datagram as relayed (header and Opus packet).
    datagram: Bytes,
}

/// A group's handle on the recorder: where the group's shell reports
/// bursts and its voice path hands frames. One per group.
#[derive(Debug)]
pub struct Tap {
    frames: SyncSender<Frame>,
    control: Sender<Control>,
    /// Frames of the group's current burst dropped at a full queue.
    dropped: AtomicU64,
    metrics: Arc<Metrics>,
}

impl Tap {
    /// Hands an admitted, relayed frame to the recorder. Never waits: when
    /// the queue is full the frame is dropped from the recording and
    /// counted. Call after relaying it, with the datagram as read.
    #[inline]
    pub fn frame(&self, header: &VoiceHeader, datagram: &Bytes) {
        let frame = Frame {
            group: header.group,
            burst: header.burst,
            seq: header.seq,
            datagram: datagram.clone(),
        };
        match self.frames.try_send(frame) {
            Ok(()) => Metrics::add(&self.metrics.recorder_frames_queued, 1),
            // A recorder gone (it failed to start or panicked) drops
            // frames the same way: counted, the voice path unaffected.
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                Metrics::add(&self.metrics.recorder_frames_dropped, 1);
            }
        }
    }

    /// The floor granted a burst. Call before publishing the fan-out
    /// snapshot that admits its frames.
    pub fn start(&self, start: Start) {
        let _ = self.control.send(Control::Start(start));
    }

    /// The floor ended burst `burst` of `group` at `ended_ms`.
    pub fn end(&self, group: GroupId, burst: u16, ended_ms: u64, by: EndedBy) {
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        let _ = self.control.send(Control::End {
            group,
            burst,
            ended_ms,
            by,
            dropped,
        });
    }
}

/// The recorder: its threads and the channels groups send on. Stop it with
/// [`Recorder::stop`] to make every burst durable before the process
/// exits; dropped without it, the thread still finishes once every group's
/// [`Tap`] is gone.
#[derive(Debug)]
pub struct Recorder {
    frames: SyncSender<Frame>,
    control: Mutex<Sender<Control>>,
    metrics: Arc<Metrics>,
    /// Closing it stops the writer (after the groups' taps) and the sweep.
    stop: Mutex<Option<Sender<()>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    dir: PathBuf,
}

impl Recorder {
    /// Starts the recorder threads for `config`, writing under
    /// `<data_dir>/recordings` (or `config.dir`) and indexing in `store`.
    pub fn start(
        config: &config::Recording,
        data_dir: &Path,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Recorder> {
        let dir = config.dir(data_dir);
        let (frames_tx, frames_rx) = mpsc::sync_channel(config.queue);
        let (control_tx, control_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let writer = writer::Writer::new(
            dir.clone(),
            store.clone(),
            metrics.clone(),
            std::time::Duration::from_millis(u64::from(config.sync_interval_ms)),
            config.disk_reserve_bytes,
        );
        let (sweep_stop_tx, sweep_stop_rx) = mpsc::channel::<()>();
        let writer = std::thread::Builder::new()
            .name("ptt-recorder".into())
            .spawn(move || writer.run(frames_rx, control_rx, stop_rx, sweep_stop_tx))?;
        let sweep = sweep::Sweep::new(config, dir.clone(), store, metrics.clone());
        let sweep = std::thread::Builder::new()
            .name("ptt-recordings-sweep".into())
            .spawn(move || sweep.run(sweep_stop_rx))?;
        Ok(Recorder {
            frames: frames_tx,
            control: Mutex::new(control_tx),
            metrics,
            stop: Mutex::new(Some(stop_tx)),
            threads: Mutex::new(vec![writer, sweep]),
            dir,
        })
    }

    /// Where the files are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A tap for one group.
    pub fn tap(&self) -> Tap {
        Tap {
            frames: self.frames.clone(),
            control: self
                .control
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            dropped: AtomicU64::new(0),
            metrics: self.metrics.clone(),
        }
    }

    /// Finishes every burst (one still talking is closed as `left`: the
    /// gateway left), makes them durable, and stops the threads. Blocks on
    /// disk I/O: call from a blocking thread, once, after the sessions are
    /// gone. Later frames are dropped and counted.
    pub fn stop(&self) {
        drop(self.stop.lock().unwrap_or_else(|e| e.into_inner()).take());
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            if t.join().is_err() {
                tracing::error!("a recorder thread panicked");
            }
        }
    }
}

/// A tap whose recorder is the test: what the group sent it, as text
/// (`start <terminal> <burst> <class>`, `frame <burst> <seq>`,
/// `end <burst> <ended_by> dropped=<n>`), in the order each channel got it
/// (starts and ends first).
#[cfg(test)]
pub(crate) fn test_tap(metrics: Arc<Metrics>) -> (Tap, impl Fn() -> Vec<String>) {
    let (frames, frames_rx) = mpsc::sync_channel(16);
    let (control, control_rx) = mpsc::channel();
    let tap = Tap {
        frames,
        control,
        dropped: AtomicU64::new(0),
        metrics,
    };
    let events = move || {
        let mut out: Vec<String> = control_rx
            .try_iter()
            .map(|c| match c {
                Control::Start(s) => format!("start {} {} {:?}", s.terminal.0, s.burst, s.class),
                Control::End {
                    burst, by, dropped, ..
                } => format!("end {burst} {by} dropped={dropped}"),
            })
            .collect();
        out.extend(
            frames_rx
                .try_iter()
                .map(|f| format!("frame {} {}", f.burst, f.seq)),
        );
        out
    };
    (tap, events)
}

#[cfg(test)]
mod tests;
