//! The running terminals: one actor and one voice listener per connected
//! terminal.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ptt_codec::GroupId;
use tokio::sync::watch;

use super::listen;
use crate::terminal;

/// Reads a terminal's voice datagrams until stopped, checking each, and
/// writing the recorded groups' audio to WAV.
pub(super) async fn listen_loop(
    mut connections: watch::Receiver<quinn::Connection>,
    groups: Vec<GroupId>,
    logs: Arc<HashMap<GroupId, Arc<listen::SendLog>>>,
    record: Vec<(GroupId, PathBuf)>,
    mut stop: watch::Receiver<bool>,
    epoch: Instant,
) -> anyhow::Result<listen::Heard> {
    let mut listener = listen::Listener::new(&groups, logs).since(epoch);
    let mut recorders = record
        .into_iter()
        .map(|(g, path)| Ok((g, crate::record::Recorder::create(&path)?)))
        .collect::<anyhow::Result<HashMap<_, _>>>()?;
    let mut playout = tokio::time::interval(Duration::from_millis(20));
    let mut conn = connections.borrow_and_update().clone();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            // The terminal reconnected: listen on the new connection.
            c = connections.changed() => {
                if c.is_err() {
                    break;
                }
                conn = connections.borrow_and_update().clone();
            }
            d = conn.read_datagram() => {
                let Ok(datagram) = d else {
                    // Connection gone: wait for the next one.
                    tokio::select! {
                        _ = stop.changed() => break,
                        c = connections.changed() => {
                            if c.is_err() {
                                break;
                            }
                            conn = connections.borrow_and_update().clone();
                        }
                    }
                    continue;
                };
                let now = Instant::now();
                let Ok((header, _)) = ptt_codec::VoiceHeader::decode(&datagram) else { continue };
                let voice = terminal::Voice { header, datagram };
                listener.on_frame(&voice, now);
                if let Some(r) = recorders.get_mut(&header.group) {
                    r.push(now, &voice);
                }
            }
            _ = playout.tick(), if !recorders.is_empty() => {
                let now = Instant::now();
                for r in recorders.values_mut() {
                    r.play(now)?;
                }
            }
        }
    }
    for (_, r) in recorders {
        r.finish()?;
    }
    Ok(listener.heard)
}
