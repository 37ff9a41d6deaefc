//! Path verification of the SRTP media plane, sans I/O: when to send an
//! SRTCP receiver report, when the path counts as verified, and when to
//! give SRTP up and fall back to QUIC DATAGRAM voice (docs/PROTOCOL.md
//! "Media plane", /work decision MEDIA.md "Path verification and fallback").
//!
//! After a `Welcome` carrying a media answer the terminal sends a receiver
//! report at once, then after [`PROBE_INTERVAL`], the gap doubling (0,
//! 250, 750, 1,750 ms), until an SRTCP packet from the gateway
//! authenticates, for at most [`VERIFY_WITHIN`]; then one every
//! [`KEEPALIVE_INTERVAL`] with its reception block, which the driver sends
//! only if voice arrived since the last one: an idle terminal's NAT binding
//! is the one its QUIC connection's keep-alives hold (same socket, same
//! 5-tuple), and a city of idle handsets must not each send 12 packets a
//! minute. No answer in time: fall back (`MediaMode { srtp: false }`) and
//! send nothing more on the media plane.
//!
//! The driver ([`crate::terminal`]) feeds it the time and the answers it
//! gets, and does what it says; the unit tests run it in virtual time.

use std::time::{Duration, Instant};

/// The first gap between an unverified terminal's receiver reports; it
/// doubles after each (a whole city verifying at once after a gateway
/// restart sends 4 probes each, not 12).
pub const PROBE_INTERVAL: Duration = Duration::from_millis(250);

/// How long a terminal waits for the gateway's first SRTCP answer before
/// it falls back to QUIC DATAGRAM voice.
pub const VERIFY_WITHIN: Duration = Duration::from_secs(3);

/// How often a verified terminal sends a receiver report (NAT keep-alive
/// and reception figures).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);

/// The form a terminal's voice travels in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaForm {
    /// QUIC DATAGRAM frames: SRTP was not offered or not answered, or the
    /// path is not verified yet.
    Datagram,
    /// SRTP beside the QUIC connection, path verified.
    Srtp,
    /// SRTP was answered but the path never verified: QUIC DATAGRAM frames,
    /// and the gateway was told so.
    FellBack,
}

/// What the driver must do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Send one SRTCP receiver report.
    Probe,
    /// The path is verified: send voice as SRTP from now on.
    Verified,
    /// Give SRTP up: send `MediaMode { srtp: false }`, voice as DATAGRAM.
    FallBack,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Probing since `since`; the next probe is due at `next`, the one
    /// after it `gap` later.
    Verifying {
        since: Instant,
        next: Instant,
        gap: Duration,
    },
    /// Verified; the next keep-alive report is due at `next`.
    Verified { next: Instant },
    /// Gave up.
    FellBack,
}

/// One terminal's path check. Make one when the `Welcome` with a media
/// answer arrived; call [`PathCheck::poll`] at [`PathCheck::deadline`] and
/// [`PathCheck::on_answer`] whenever an SRTCP packet from the gateway
/// authenticated.
#[derive(Debug, Clone)]
pub struct PathCheck {
    state: State,
}

impl PathCheck {
    /// A check starting at `now`: the first probe is due at once.
    pub fn new(now: Instant) -> PathCheck {
        PathCheck {
            state: State::Verifying {
                since: now,
                next: now,
                gap: PROBE_INTERVAL,
            },
        }
    }

    /// The form voice travels in, as far as this check knows.
    pub fn form(&self) -> MediaForm {
        match self.state {
            State::Verifying { .. } => MediaForm::Datagram,
            State::Verified { .. } => MediaForm::Srtp,
            State::FellBack => MediaForm::FellBack,
        }
    }

    /// When [`PathCheck::poll`] has something to do next; `None` once
    /// fallen back (nothing more ever).
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Verifying { since, next, .. } => Some(next.min(since + VERIFY_WITHIN)),
            State::Verified { next } => Some(next),
            State::FellBack => None,
        }
    }

    /// What to do at `now`: at most one step per call; call again until
    /// `None`.
    pub fn poll(&mut self, now: Instant) -> Option<Step> {
        match &mut self.state {
            State::Verifying { since, next, gap } => {
                if now >= *since + VERIFY_WITHIN {
                    self.state = State::FellBack;
                    return Some(Step::FallBack);
                }
                if now >= *next {
                    // Probes keep their rhythm; a late poll sends one, not
                    // a backlog.
                    while *next <= now {
                        *next += *gap;
                        *gap *= 2;
                    }
                    return Some(Step::Probe);
                }
                None
            }
            State::Verified { next } => {
                if now >= *next {
                    while *next <= now {
                        *next += KEEPALIVE_INTERVAL;
                    }
                    return Some(Step::Probe);
                }
                None
            }
            State::FellBack => None,
        }
    }

    /// An SRTCP packet from the gateway authenticated at `now`. Returns
    /// [`Step::Verified`] the first time (and only while still verifying:
    /// an answer after the fallback changes nothing).
    pub fn on_answer(&mut self, now: Instant) -> Option<Step> {
        match self.state {
            State::Verifying { .. } => {
                self.state = State::Verified {
                    next: now + KEEPALIVE_INTERVAL,
                };
                Some(Step::Verified)
            }
            State::Verified { .. } | State::FellBack => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `check` from `start` to `end` in 10 ms steps, answering at
    /// `answer` (if any); returns each step with its time since `start`.
    fn run(
        check: &mut PathCheck,
        start: Instant,
        end: Duration,
        answer: Option<Duration>,
    ) -> Vec<(Duration, Step)> {
        let mut out = Vec::new();
        let mut t = Duration::ZERO;
        let mut answered = false;
        while t <= end {
            let now = start + t;
            if let Some(a) = answer {
                if !answered && t >= a {
                    answered = true;
                    if let Some(s) = check.on_answer(now) {
                        out.push((t, s));
                    }
                }
            }
            if check.deadline().is_some_and(|d| d <= now) {
                while let Some(s) = check.poll(now) {
                    out.push((t, s));
                }
            }
            t += Duration::from_millis(10);
        }
        out
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn probes_back_off_and_fall_back_after_3_s_without_answer() {
        let start = Instant::now();
        let mut check = PathCheck::new(start);
        assert_eq!(check.form(), MediaForm::Datagram);
        let steps = run(&mut check, start, Duration::from_secs(10), None);
        let probes: Vec<Duration> = steps
            .iter()
            .filter(|(_, s)| *s == Step::Probe)
            .map(|(t, _)| *t)
            .collect();
        // 0, 250, 750, 1750 ms: four probes, then the fallback at 3 s.
        assert_eq!(probes, [ms(0), ms(250), ms(750), ms(1750)]);
        let last = steps.last().expect("steps");
        assert_eq!(*last, (ms(3000), Step::FallBack));
        assert_eq!(check.form(), MediaForm::FellBack);
        assert_eq!(check.deadline(), None, "nothing more after a fallback");
    }

    #[test]
    fn an_answer_verifies_and_probes_become_5_s_keepalives() {
        let start = Instant::now();
        let mut check = PathCheck::new(start);
        let steps = run(&mut check, start, Duration::from_secs(16), Some(ms(600)));
        assert!(steps.contains(&(ms(600), Step::Verified)), "{steps:?}");
        assert_eq!(check.form(), MediaForm::Srtp);
        let after: Vec<Duration> = steps
            .iter()
            .filter(|(t, s)| *s == Step::Probe && *t > ms(600))
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(after, [ms(5600), ms(10600), ms(15600)]);
        assert!(!steps.iter().any(|(_, s)| *s == Step::FallBack));
    }

    #[test]
    fn a_late_answer_after_the_fallback_changes_nothing() {
        let start = Instant::now();
        let mut check = PathCheck::new(start);
        let steps = run(&mut check, start, Duration::from_secs(5), Some(ms(3500)));
        assert!(steps.contains(&(ms(3000), Step::FallBack)));
        assert!(!steps.iter().any(|(_, s)| *s == Step::Verified));
        assert_eq!(check.form(), MediaForm::FellBack);
    }

    #[test]
    fn a_second_answer_is_no_news_and_a_late_poll_sends_one_probe() {
        let start = Instant::now();
        let mut check = PathCheck::new(start);
        assert_eq!(check.poll(start), Some(Step::Probe));
        assert_eq!(check.poll(start), None, "one probe per due time");
        // Polled at 900 ms, after two due times: one probe, the rhythm
        // kept (the next at 1750).
        assert_eq!(check.poll(start + ms(900)), Some(Step::Probe));
        assert_eq!(check.poll(start + ms(900)), None);
        assert_eq!(check.deadline(), Some(start + ms(1750)));
        assert_eq!(check.on_answer(start + ms(950)), Some(Step::Verified));
        assert_eq!(check.on_answer(start + ms(960)), None);
        assert_eq!(check.deadline(), Some(start + ms(5950)));
    }

    #[test]
    fn the_fallback_comes_at_3_s_even_between_probes() {
        let start = Instant::now();
        let mut check = PathCheck::new(start);
        assert_eq!(check.poll(start), Some(Step::Probe));
        // Nobody polled until 3.1 s: the fallback, not another probe.
        assert_eq!(check.poll(start + ms(3100)), Some(Step::FallBack));
        assert_eq!(check.poll(start + ms(3200)), None);
    }
}
