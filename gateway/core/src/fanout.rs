//! Fan-out admission: whether a voice frame is relayed at all, and the
//! per-connection rate limit. The relay itself (snapshots of receivers and
//! the sinks datagrams go to) is the driver's.

use std::time::Instant;

use ptt_codec::{TerminalId, VoiceHeader};

/// The burst a group is relaying now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Talker {
    /// The floor holder: the only terminal whose voice is relayed.
    pub terminal: TerminalId,
    /// The burst id granted to it; frames of older bursts are dropped.
    pub burst: u16,
}

/// Why a voice datagram was not relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Drop {
    /// The sender does not hold the floor, or sent a burst id other than the
    /// one it was granted (a frame from an earlier burst).
    #[error("sender does not hold the floor")]
    NotHolder,
}

/// Checks that `sender` may send a frame with this header in a group whose
/// current burst is `talker`: it must hold the floor, with the burst id it
/// was granted. Call it for every frame before relaying.
pub fn admit(talker: Option<Talker>, sender: TerminalId, header: &VoiceHeader) -> Result<(), Drop> {
    match talker {
        Some(t) if t.terminal == sender && t.burst == header.burst => Ok(()),
        _ => Err(Drop::NotHolder),
    }
}

/// Per-connection voice rate limit: a token bucket in frames.
///
/// One 20 ms talker sends 50 frames/s per group; the default allows a few
/// groups at once plus jitter bursts, and stops a terminal flooding the relay.
#[derive(Debug, Clone)]
pub struct RateLimit {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl RateLimit {
    /// `per_second` sustained frames with bursts of up to `burst` frames.
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self {
            per_second: f64::from(per_second),
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: None,
        }
    }

    /// Takes one token at `now`; false if the frame must be dropped.
    pub fn allow(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last);
            self.tokens = (self.tokens + elapsed.as_secs_f64() * self.per_second).min(self.burst);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ptt_codec::GroupId;
    use std::time::Duration;

    fn header(burst: u16) -> VoiceHeader {
        VoiceHeader {
            group: GroupId(9),
            speaker: 0,
            burst,
            seq: 3,
            flags: 0,
        }
    }

    #[test]
    fn only_the_holder_with_its_burst_is_admitted() {
        let talker = Some(Talker {
            terminal: TerminalId(1),
            burst: 5,
        });
        assert!(admit(talker, TerminalId(1), &header(5)).is_ok());
        assert_eq!(
            admit(talker, TerminalId(2), &header(5)),
            Err(Drop::NotHolder)
        );
        assert_eq!(
            admit(talker, TerminalId(1), &header(4)),
            Err(Drop::NotHolder)
        );
        assert_eq!(admit(None, TerminalId(1), &header(5)), Err(Drop::NotHolder));
    }

    #[test]
    fn rate_limit_refills_over_time() {
        // The virtual clock: one real reading, then offsets from it.
        let t0 = Instant::now();
        let mut rl = RateLimit::new(50, 10);
        assert_eq!((0..20).filter(|_| rl.allow(t0)).count(), 10);
        assert!(!rl.allow(t0));
        // 100 ms later: 5 more frames.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!((0..20).filter(|_| rl.allow(t1)).count(), 5);
        // Never above the burst, however long the pause.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!((0..20).filter(|_| rl.allow(t2)).count(), 10);
    }
}
