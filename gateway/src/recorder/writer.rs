//! The recorder thread: frames into files, ended bursts into the index.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ptt_codec::voice::VOICE_HEADER_LEN;
use ptt_codec::GroupId;
use ptt_gateway_core::audit::EndedBy;
use ptt_gateway_core::recording::{Framer, Packet};

use super::file::{date_path, BurstFile};
use super::{Control, Frame, Start};
use crate::metrics::Metrics;
use crate::store::{Recording, Store};

/// How long a burst's file stays open after the floor ended it, for frames
/// relayed under the old fan-out snapshot and still in the queue.
pub(super) const LINGER: Duration = Duration::from_millis(250);

/// At most one warning this often for bursts refused for the disk reserve.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Whether the file system of `dir` (or of its nearest existing ancestor:
/// the dated folders are made on demand) has less than `reserve` bytes
/// free. Unknown free space does not refuse (the write would fail and be
/// counted instead).
fn below_reserve(dir: &std::path::Path, reserve: u64) -> bool {
    if reserve == 0 {
        return false;
    }
    let Some(existing) = dir.ancestors().find(|d| d.exists()) else {
        return false;
    };
    match rustix::fs::statvfs(existing) {
        Ok(st) => st.f_bavail.saturating_mul(st.f_frsize) < reserve,
        Err(_) => false,
    }
}

/// The longest the thread sleeps without looking at the clock.
const TICK: Duration = Duration::from_millis(100);

/// A burst being recorded.
#[derive(Debug)]
struct Open {
    start: Start,
    framer: Framer,
    /// Created at the first frame: a burst nobody spoke in has no file.
    file: Option<BurstFile>,
    /// The file could not be written: the rest of the burst is not.
    failed: bool,
    /// Set when the floor ended it: when, how, frames dropped, and when
    /// to close the file.
    ended: Option<(u64, EndedBy, u64, Instant)>,
}

/// A closed burst waiting to be made durable.
#[derive(Debug)]
struct Closed {
    row: Recording,
    file: Option<File>,
}

/// The recorder thread's state.
#[derive(Debug)]
pub(super) struct Writer {
    dir: PathBuf,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    sync_interval: Duration,
    /// Free bytes to keep (`recording.disk_reserve_bytes`).
    reserve: u64,
    /// When a burst refused for the reserve was last logged.
    warned: Option<Instant>,
    open: HashMap<(GroupId, u16), Open>,
    closed: Vec<Closed>,
    /// When the oldest of `closed` closed.
    closed_since: Option<Instant>,
    /// Reused for each frame's packets.
    out: Vec<Packet>,
    /// When to look for bursts to close next.
    next_tick: Instant,
}

impl Writer {
    pub(super) fn new(
        dir: PathBuf,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        sync_interval: Duration,
        reserve: u64,
    ) -> Self {
        Self {
            dir,
            store,
            metrics,
            sync_interval,
            reserve,
            warned: None,
            open: HashMap::new(),
            closed: Vec::new(),
            closed_since: None,
            out: Vec::new(),
            next_tick: Instant::now(),
        }
    }

    /// Runs until `stop` is closed or every sender is gone, then finishes
    /// every burst and makes it durable. `sweep` is dropped last, stopping
    /// the sweep thread.
    pub(super) fn run(
        mut self,
        frames: Receiver<Frame>,
        control: Receiver<Control>,
        stop: Receiver<()>,
        sweep: Sender<()>,
    ) {
        loop {
            let mut done = match frames.recv_timeout(TICK) {
                Ok(frame) => {
                    // Its Start was queued before the frame could be
                    // admitted: read it first.
                    self.control(&control);
                    self.frame(frame);
                    false
                }
                Err(RecvTimeoutError::Timeout) => false,
                Err(RecvTimeoutError::Disconnected) => true,
            };
            done |= self.control(&control);
            done |= matches!(stop.try_recv(), Err(TryRecvError::Disconnected));
            if done {
                while let Ok(frame) = frames.try_recv() {
                    self.frame(frame);
                }
                self.control(&control);
            }
            let now = Instant::now();
            // Not per frame: the scan is over every open burst.
            if done || now >= self.next_tick {
                self.next_tick = now + TICK / 10;
                self.tick(now, done);
            }
            if done {
                break;
            }
        }
        drop(sweep);
    }

    /// Takes every queued start and end; returns whether the channel is
    /// closed.
    fn control(&mut self, control: &Receiver<Control>) -> bool {
        loop {
            match control.try_recv() {
                Ok(Control::Start(start)) => self.start(start),
                Ok(Control::End {
                    group,
                    burst,
                    ended_ms,
                    by,
                    dropped,
                }) => {
                    if let Some(open) = self.open.get_mut(&(group, burst)) {
                        if open.ended.is_none() {
                            open.ended = Some((ended_ms, by, dropped, Instant::now() + LINGER));
                        }
                    }
                }
                Err(TryRecvError::Empty) => return false,
                Err(TryRecvError::Disconnected) => return true,
            }
        }
    }

    fn start(&mut self, start: Start) {
        let key = (start.group, start.burst);
        match self.open.get(&key) {
            // The same grant told again (a reconnect's late entry).
            Some(open) if open.ended.is_none() && open.start.terminal == start.terminal => return,
            // A burst id reused (wrapped) while the old one lingers.
            Some(_) => {
                if let Some(old) = self.open.remove(&key) {
                    self.close(old, Instant::now());
                }
            }
            None => {}
        }
        self.open.insert(
            key,
            Open {
                start,
                framer: Framer::new(),
                file: None,
                failed: false,
                ended: None,
            },
        );
    }

    fn frame(&mut self, frame: Frame) {
        Metrics::add(&self.metrics.recorder_frames_taken, 1);
        let Some(open) = self.open.get_mut(&(frame.group, frame.burst)) else {
            Metrics::add(&self.metrics.recorder_frames_late, 1);
            return;
        };
        if open.failed {
            return;
        }
        if open.file.is_none() && below_reserve(&self.dir, self.reserve) {
            open.failed = true;
            Metrics::add(&self.metrics.recordings_refused_disk_reserve, 1);
            if self.warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                self.warned = Some(Instant::now());
                tracing::warn!(group = %open.start.group, terminal = %open.start.terminal,
                    "not recording: less than recording.disk_reserve_bytes free for {}", self.dir.display());
            }
            return;
        }
        // Admitted frames decoded, so the header is there.
        let opus = frame
            .datagram
            .slice(VOICE_HEADER_LEN.min(frame.datagram.len())..);
        let late = open.framer.stats().late;
        self.out.clear();
        open.framer.push(frame.seq, opus, &mut self.out);
        if open.framer.stats().late > late {
            Metrics::add(&self.metrics.recorder_frames_late, 1);
        }
        if self.out.is_empty() {
            return;
        }
        let written = match &mut open.file {
            Some(file) => file.write(self.out.drain(..)),
            None => BurstFile::create(&self.dir, &date_path(&open.start), &open.start).and_then(
                |mut file| {
                    let w = file.write(self.out.drain(..));
                    open.file = Some(file);
                    w
                },
            ),
        };
        if let Err(e) = written {
            Metrics::add(&self.metrics.recorder_errors, 1);
            tracing::error!(group = %open.start.group, terminal = %open.start.terminal, "recording a burst failed: {e}");
            open.failed = true;
        }
    }

    /// Closes bursts whose linger is over (every one when `all`), and
    /// makes closed ones durable when the oldest has waited the sync
    /// interval (all of them when `all`).
    fn tick(&mut self, now: Instant, all: bool) {
        let due: Vec<_> = self
            .open
            .iter()
            .filter(|(_, o)| all || o.ended.is_some_and(|(.., at)| at <= now))
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            if let Some(open) = self.open.remove(&key) {
                self.close(open, now);
            }
        }
        let sync_due = self
            .closed_since
            .is_some_and(|since| all || now.duration_since(since) >= self.sync_interval);
        if sync_due {
            self.sync();
        }
    }

    /// Finishes a burst's file and queues its row for the next sync.
    fn close(&mut self, open: Open, now: Instant) {
        let (ended_ms, by, dropped) = match open.ended {
            Some((ended_ms, by, dropped, _)) => (ended_ms, by, dropped),
            // Still talking when the gateway stopped: the gateway left.
            None => (crate::clock::now_ms(), EndedBy::Left, 0),
        };
        let stats = open.framer.stats();
        let rel = open.file.is_some().then(|| date_path(&open.start));
        let (file, bytes) = match open.file.map(BurstFile::finish) {
            Some(Ok((file, bytes))) => (Some(file), bytes),
            Some(Err(e)) => {
                Metrics::add(&self.metrics.recorder_errors, 1);
                tracing::error!(group = %open.start.group, terminal = %open.start.terminal, "closing a recording failed: {e}");
                (None, 0)
            }
            None => (None, 0),
        };
        self.closed.push(Closed {
            row: Recording {
                id: 0,
                group: open.start.group.0,
                terminal: open.start.terminal,
                burst: open.start.burst,
                class: open.start.class.code(),
                started_ms: open.start.started_ms,
                ended_ms,
                ended_by: by,
                path: rel,
                frames: stats.frames,
                filled: stats.filled,
                dropped,
                bytes,
            },
            file,
        });
        self.closed_since.get_or_insert(now);
    }

    /// Fsyncs every closed file and the folders holding them, then indexes
    /// them in one transaction.
    fn sync(&mut self) {
        let closed = std::mem::take(&mut self.closed);
        self.closed_since = None;
        let mut folders = BTreeSet::new();
        for c in &closed {
            if let Some(file) = &c.file {
                if let Err(e) = file.sync_all() {
                    Metrics::add(&self.metrics.recorder_errors, 1);
                    tracing::error!("fsync of a recording failed: {e}");
                }
            }
            if let Some(rel) = &c.row.path {
                if let Some(parent) = self.dir.join(rel).parent() {
                    folders.insert(parent.to_path_buf());
                }
            }
        }
        // A new file's name is durable once its folder is synced.
        for folder in folders {
            if let Err(e) = File::open(&folder).and_then(|f| f.sync_all()) {
                tracing::warn!("fsync of {} failed: {e}", folder.display());
            }
        }
        let rows: Vec<Recording> = closed.into_iter().map(|c| c.row).collect();
        match self.store.add_recordings(&rows) {
            Ok(ids) => Metrics::add(&self.metrics.recordings_written, ids.len() as u64),
            Err(e) => {
                Metrics::add(&self.metrics.recorder_errors, rows.len() as u64);
                tracing::error!(bursts = rows.len(), "indexing recordings failed: {e}");
            }
        }
    }
}
