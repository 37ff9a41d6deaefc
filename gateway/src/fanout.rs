//! The voice relay path: who receives a frame, and whether it is relayed at
//! all.
//!
//! The per-frame path takes no lock. Each group publishes an immutable
//! [`Snapshot`] (current burst + receivers) through an `ArcSwap`; the group
//! replaces the whole snapshot whenever membership or the floor holder
//! changes, and the relay reads whichever snapshot is current. One incoming
//! frame becomes one `Bytes` (the speaker stamped in), cloned by reference
//! count into every receiver's connection.
//!
//! Stale voice is never queued: the gateway keeps no buffer of its own, and
//! each connection's datagram send buffer is small (see
//! [`crate::config::Transport::datagram_send_buffer`]) so that when a
//! receiver's path is slower than the voice, quinn drops the oldest frames.

use std::sync::Arc;

use bytes::Bytes;
use ptt_codec::voice::stamp_speaker;
use ptt_codec::{TerminalId, VoiceHeader};

use crate::media::Route;

pub use ptt_gateway_core::fanout::{Drop, RateLimit, Talker};

/// Something a datagram can be handed to: a QUIC connection in the gateway,
/// a counter in benchmarks and tests.
pub trait Sink: Send + Sync {
    /// Queues one datagram. An error means this receiver cannot take it (the
    /// connection is gone); other receivers are unaffected.
    fn send(&self, datagram: Bytes) -> Result<(), SinkError>;

    /// The receiver's media plane, when it receives voice as SRTP now:
    /// the relay then sends it an SRTP packet instead of the datagram.
    fn srtp(&self) -> Option<&Route> {
        None
    }
}

impl Sink for Box<dyn Sink> {
    fn send(&self, datagram: Bytes) -> Result<(), SinkError> {
        (**self).send(datagram)
    }

    fn srtp(&self) -> Option<&Route> {
        (**self).srtp()
    }
}

/// A receiver refused a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("receiver refused the datagram")]
pub struct SinkError;

impl Sink for crate::link::Link {
    fn send(&self, datagram: Bytes) -> Result<(), SinkError> {
        self.send_datagram(datagram).map_err(|_| SinkError)
    }

    fn srtp(&self) -> Option<&Route> {
        self.media().map(|r| &**r).filter(|r| r.receives_srtp())
    }
}

/// One listener of a group.
#[derive(Debug, Clone)]
pub struct Receiver<S> {
    /// Who listens; a talker never receives its own voice.
    pub terminal: TerminalId,
    /// Where its datagrams go.
    pub sink: S,
}

/// What a group's relay needs to know, published whole on every change.
#[derive(Debug)]
pub struct Snapshot<S> {
    /// Current burst, if anyone holds the floor.
    pub talker: Option<Talker>,
    /// Everyone who hears the group: members and monitoring consoles, each
    /// exactly once.
    pub receivers: Arc<[Receiver<S>]>,
}

impl<S> Snapshot<S> {
    /// The receivers a frame from `sender` goes to: everyone but the sender.
    pub fn listeners(&self, sender: TerminalId) -> impl Iterator<Item = &Receiver<S>> {
        self.receivers.iter().filter(move |r| r.terminal != sender)
    }
}

impl<S> Default for Snapshot<S> {
    fn default() -> Self {
        Self {
            talker: None,
            receivers: Arc::new([]),
        }
    }
}

/// Outcome of relaying one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Relayed {
    /// Receivers whose connection accepted the frame.
    pub delivered: usize,
    /// Receivers whose connection refused it.
    pub failed: usize,
}

/// Checks that `sender` may send a frame with this header in the group whose
/// snapshot is given: it must hold the floor, with the burst id it was granted
/// (the rule is [`ptt_gateway_core::fanout::admit`]).
pub fn admit<S>(
    snapshot: &Snapshot<S>,
    sender: TerminalId,
    header: &VoiceHeader,
) -> Result<(), Drop> {
    ptt_gateway_core::fanout::admit(snapshot.talker, sender, header)
}

/// Relays an admitted frame from `sender` to every receiver but the sender,
/// with the speaker field stamped by the gateway: the same `Bytes` to each
/// QUIC DATAGRAM receiver, and an SRTP packet, sealed for it alone, to each
/// media-plane receiver (all of them handed to the socket in batches before
/// this returns).
pub fn relay<S: Sink>(snapshot: &Snapshot<S>, sender: TerminalId, datagram: &[u8]) -> Relayed {
    let stamped = stamp_speaker(datagram, sender);
    // Read once, for the first media-plane receiver.
    let mut frame = None;
    let mut out = Relayed::default();
    for r in snapshot.listeners(sender) {
        let sent = match r.sink.srtp() {
            Some(route) => match *frame.get_or_insert_with(|| VoiceHeader::decode(&stamped).ok()) {
                Some((header, opus)) => route.send_voice(&header, opus),
                // Admitted frames decoded before: cannot happen.
                None => false,
            },
            None => r.sink.send(stamped.clone()).is_ok(),
        };
        if sent {
            out.delivered += 1;
        } else {
            out.failed += 1;
        }
    }
    if frame.is_some() {
        crate::net::flush();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ptt_codec::GroupId;
    use std::sync::Mutex;

    #[derive(Debug, Default)]
    struct Recorder(Mutex<Vec<Bytes>>);

    impl Sink for Arc<Recorder> {
        fn send(&self, datagram: Bytes) -> Result<(), SinkError> {
            self.0.lock().unwrap().push(datagram);
            Ok(())
        }
    }

    #[derive(Debug)]
    struct Closed;

    impl Sink for Closed {
        fn send(&self, _: Bytes) -> Result<(), SinkError> {
            Err(SinkError)
        }
    }

    fn frame(speaker: u32, burst: u16) -> Bytes {
        VoiceHeader {
            group: GroupId(9),
            speaker,
            burst,
            seq: 3,
            flags: 0,
        }
        .to_datagram(b"opus")
    }

    fn snapshot(
        talker: Option<(u32, u16)>,
        n: u32,
    ) -> (Snapshot<Arc<Recorder>>, Vec<Arc<Recorder>>) {
        let sinks: Vec<_> = (0..n).map(|_| Arc::new(Recorder::default())).collect();
        let receivers = sinks
            .iter()
            .enumerate()
            .map(|(i, s)| Receiver {
                terminal: TerminalId(i as u32 + 1),
                sink: s.clone(),
            })
            .collect();
        let talker = talker.map(|(t, burst)| Talker {
            terminal: TerminalId(t),
            burst,
        });
        (Snapshot { talker, receivers }, sinks)
    }

    #[test]
    fn only_the_holder_with_its_burst_is_admitted() {
        let (snap, _) = snapshot(Some((1, 5)), 3);
        let header = |burst| VoiceHeader::decode(&frame(0, burst)).unwrap().0;
        assert!(admit(&snap, TerminalId(1), &header(5)).is_ok());
        assert_eq!(
            admit(&snap, TerminalId(2), &header(5)),
            Err(Drop::NotHolder)
        );
        assert_eq!(
            admit(&snap, TerminalId(1), &header(4)),
            Err(Drop::NotHolder)
        );
        let (idle, _) = snapshot(None, 3);
        assert_eq!(
            admit(&idle, TerminalId(1), &header(5)),
            Err(Drop::NotHolder)
        );
    }

    #[test]
    fn every_receiver_but_the_sender_gets_one_stamped_copy() {
        let (snap, sinks) = snapshot(Some((2, 5)), 4);
        // The sender claims to be terminal 3; the gateway knows it is 2.
        let out = relay(&snap, TerminalId(2), &frame(3, 5));
        assert_eq!(
            out,
            Relayed {
                delivered: 3,
                failed: 0
            }
        );
        for (i, s) in sinks.iter().enumerate() {
            let got = s.0.lock().unwrap();
            if i == 1 {
                assert!(got.is_empty(), "the talker must not hear itself");
                continue;
            }
            assert_eq!(got.len(), 1);
            let (h, opus) = VoiceHeader::decode(&got[0]).unwrap();
            assert_eq!(h.speaker, 2);
            assert_eq!(opus, b"opus");
        }
        // All receivers share one buffer.
        let a = sinks[0].0.lock().unwrap()[0].as_ptr();
        let b = sinks[3].0.lock().unwrap()[0].as_ptr();
        assert_eq!(a, b);
    }

    #[test]
    fn a_closed_receiver_does_not_stop_the_others() {
        let receivers: Arc<[Receiver<Box<dyn Sink>>]> = Arc::new([
            Receiver {
                terminal: TerminalId(5),
                sink: Box::new(Closed) as Box<dyn Sink>,
            },
            Receiver {
                terminal: TerminalId(6),
                sink: Box::new(Arc::new(Recorder::default())),
            },
        ]);
        let snap = Snapshot {
            talker: None,
            receivers,
        };
        assert_eq!(
            relay(&snap, TerminalId(1), &frame(0, 1)),
            Relayed {
                delivered: 1,
                failed: 1
            }
        );
    }
}
