//! Targets for the rules a peer's input drives: the receipt rule and the
//! sans-I/O state machines of `ptt-gateway-core`. Each reads its input as a sequence of operations (see
//! [`Source`]), runs them with a virtual clock that only moves forward, and
//! checks the machine's invariants after every step against a small model
//! built from what it said.

use std::collections::{BTreeMap, VecDeque};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ptt_codec::{receipt, Class, DenyCause, ReceiptStatus, RevokeCause, TerminalId};
use ptt_gateway_core::alert::{self, Step};
use ptt_gateway_core::{admission, fanout, floor};

use crate::input::{Rng, Source};
use crate::Outcome;

/// Generator of every operation-sequence target: random bytes, since any
/// byte string is a valid sequence.
pub fn gen_ops(rng: &mut Rng) -> Vec<u8> {
    rng.blob(1024)
}

/// The start of every virtual clock. One real reading, shared, so that a
/// case does not depend on when it runs.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// A step of the virtual clock: often none, sometimes long.
fn tick(s: &mut Source<'_>) -> Duration {
    match s.u8() % 4 {
        0 => Duration::ZERO,
        1 => Duration::from_millis(u64::from(s.u8())),
        2 => Duration::from_millis(u64::from(s.u16())),
        _ => Duration::from_secs(u64::from(s.u8())),
    }
}

// ---- receipts ---------------------------------------------------------------

fn rank(s: ReceiptStatus) -> Option<u8> {
    match s {
        ReceiptStatus::Rejected => None,
        ReceiptStatus::Pending => Some(0),
        ReceiptStatus::Delivered => Some(1),
        ReceiptStatus::Read => Some(2),
        ReceiptStatus::Accepted => Some(3),
        ReceiptStatus::Arrived => Some(4),
        ReceiptStatus::Resolved => Some(5),
    }
}

/// Check of the `receipt` target: a recipient's status under any sequence
/// of receipts, through `ptt_codec::receipt::advance` (the terminal's copy)
/// and `ptt_gateway_core::alert::advance` (the gateway's), which must agree.
pub fn check_receipt(input: &[u8]) -> Result<Outcome, String> {
    let mut s = Source::new(input);
    let mut status = ReceiptStatus::Pending;
    let mut advanced = 0;
    while !s.is_empty() {
        let to = s.pick(ReceiptStatus::ALL);
        let gateway = alert::advance(status, to);
        let terminal = receipt::advance(status, to);
        let same = match (&gateway, &terminal) {
            (Ok(Step::Advance), Ok(receipt::Step::Advance))
            | (Ok(Step::Duplicate), Ok(receipt::Step::Duplicate)) => true,
            (Err(a), Err(b)) => (a.from, a.to) == (b.from, b.to),
            _ => false,
        };
        ensure!(
            same,
            "{status:?} -> {to:?}: gateway {gateway:?}, terminal {terminal:?}"
        );
        let expected = match (rank(status), rank(to)) {
            (None, None) => Ok(Step::Duplicate),
            (None, Some(_)) => Err(()),
            (Some(f), None) if f < 3 => Ok(Step::Advance),
            (Some(_), None) => Err(()),
            (Some(f), Some(t)) if t <= f => Ok(Step::Duplicate),
            (Some(_), Some(_)) => Ok(Step::Advance),
        };
        ensure!(
            gateway.map_err(|_| ()) == expected,
            "{status:?} -> {to:?} gives {gateway:?}"
        );
        if gateway == Ok(Step::Advance) {
            // Never backwards: up the ranks, or to rejected before accepting.
            match (rank(status), rank(to)) {
                (Some(f), Some(t)) => ensure!(t > f, "{status:?} moved back to {to:?}"),
                (Some(f), None) => ensure!(f < 3, "rejected after {status:?}"),
                _ => return Err(format!("{status:?} left for {to:?}")),
            }
            status = to;
            advanced += 1;
        }
    }
    Ok(if advanced > 0 {
        "advanced"
    } else {
        "unchanged"
    })
}

// ---- floor ------------------------------------------------------------------

/// What the model knows of a queued terminal.
#[derive(Debug, Clone, Copy)]
struct Waiting {
    rank: (Class, u8),
    limit: Option<Duration>,
    /// Last position reported in a `Queued` event.
    position: Option<u16>,
}

/// The model of one floor, built from the machine's events only.
#[derive(Debug, Default)]
struct FloorModel {
    holder: Option<floor::Burst>,
    waiting: BTreeMap<TerminalId, Waiting>,
    granted: u64,
    ended: u64,
    last_id: Option<u16>,
    talk_limit: Duration,
}

/// What the step being checked was, for the event checks.
#[derive(Debug, Clone, Copy)]
enum FloorOp {
    Request(floor::Request),
    Release,
    Leave,
    Timeout,
    Other,
}

impl FloorModel {
    /// The holder of the floor ends its burst by its own action.
    fn end_quietly(&mut self, terminal: TerminalId) {
        if self.holder.is_some_and(|h| h.terminal == terminal) {
            self.holder = None;
            self.ended += 1;
        }
    }

    fn event(
        &mut self,
        op: FloorOp,
        ev: floor::Event,
        now: Instant,
        capacity: usize,
    ) -> Result<(), String> {
        match ev {
            floor::Event::Granted { burst, limit } => {
                ensure!(
                    self.holder.is_none(),
                    "granted {burst:?} over {:?}",
                    self.holder
                );
                ensure!(burst.id != 0, "burst id 0");
                ensure!(
                    Some(burst.id) != self.last_id,
                    "burst id {} reused",
                    burst.id
                );
                ensure!(burst.granted_at == now, "granted at another time");
                ensure!(limit == burst.limit, "two limits");
                let requester = match op {
                    FloorOp::Request(r) if r.terminal == burst.terminal => Some(r),
                    _ => None,
                };
                let want_limit = if let Some(r) = requester {
                    ensure!(
                        (burst.class, burst.priority) == (r.class, r.priority),
                        "granted with another rank"
                    );
                    self.waiting.remove(&burst.terminal);
                    r.limit
                } else {
                    let w = self
                        .waiting
                        .remove(&burst.terminal)
                        .ok_or_else(|| format!("granted {} which does not wait", burst.terminal))?;
                    ensure!(
                        (burst.class, burst.priority) == w.rank,
                        "granted with another rank than requested"
                    );
                    ensure!(
                        self.waiting.values().all(|o| o.rank <= w.rank),
                        "{} granted over a higher-ranked waiter",
                        burst.terminal
                    );
                    w.limit
                };
                ensure!(
                    limit == want_limit.unwrap_or(self.talk_limit),
                    "granted for {limit:?}"
                );
                self.holder = Some(burst);
                self.last_id = Some(burst.id);
                self.granted += 1;
            }
            floor::Event::Revoked {
                terminal,
                burst,
                cause,
            } => {
                let h = self
                    .holder
                    .ok_or_else(|| format!("revoked {terminal} with nobody holding"))?;
                ensure!(
                    (h.terminal, h.id) == (terminal, burst),
                    "revoked {terminal}/{burst}, holder {}/{}",
                    h.terminal,
                    h.id
                );
                match (op, cause) {
                    (FloorOp::Request(r), RevokeCause::Preempted) => ensure!(
                        (r.class, r.priority) > (h.class, h.priority),
                        "pre-empted by a request not strictly higher"
                    ),
                    (FloorOp::Timeout, RevokeCause::BurstTooLong) => {
                        ensure!(now >= h.granted_at + h.limit, "revoked before its limit")
                    }
                    _ => return Err(format!("revoked for {cause:?} on {op:?}")),
                }
                self.holder = None;
                self.ended += 1;
            }
            floor::Event::Denied { terminal, cause } => {
                let FloorOp::Request(r) = op else {
                    return Err(format!("denied on {op:?}"));
                };
                ensure!(terminal == r.terminal, "denied someone else");
                ensure!(cause == DenyCause::NoResources, "denied for {cause:?}");
                ensure!(
                    self.waiting.len() == capacity && !self.waiting.contains_key(&terminal),
                    "denied with room in the queue"
                );
            }
            floor::Event::Queued { terminal, position } => {
                if let FloorOp::Request(r) = op {
                    if r.terminal == terminal {
                        // A new or renewed request.
                        self.waiting.insert(
                            terminal,
                            Waiting {
                                rank: (r.class, r.priority),
                                limit: r.limit,
                                position: None,
                            },
                        );
                    }
                }
                let n = self.waiting.len();
                let w = self
                    .waiting
                    .get_mut(&terminal)
                    .ok_or_else(|| format!("{terminal} queued but never asked"))?;
                ensure!(
                    (1..=n).contains(&usize::from(position)),
                    "position {position} of {n}"
                );
                ensure!(w.position != Some(position), "unchanged position reported");
                w.position = Some(position);
            }
            floor::Event::Idle => {
                ensure!(
                    self.holder.is_none() && self.waiting.is_empty(),
                    "idle with a holder or waiters"
                );
            }
        }
        Ok(())
    }
}

fn class(s: &mut Source<'_>) -> Class {
    s.pick(Class::ALL)
}

/// Check of the `floor` target: `floor::Machine` under any sequence of
/// requests, releases, leaves, timeouts and limit changes.
pub fn check_floor(input: &[u8]) -> Result<Outcome, String> {
    let mut s = Source::new(input);
    let capacity = s.below(6);
    let talk_limit = Duration::from_millis(u64::from(s.u16()));
    let mut m = floor::Machine::new(floor::Config {
        talk_limit,
        queue_capacity: capacity,
    });
    let mut model = FloorModel {
        talk_limit,
        ..FloorModel::default()
    };
    let mut now = epoch();
    let members = 1 + u32::from(s.u8() % 7);
    let mut steps = 0;
    while !s.is_empty() && steps < 512 {
        steps += 1;
        now += tick(&mut s);
        let who = TerminalId(1 + u32::from(s.u8()) % members);
        let op = match s.u8() % 9 {
            0..=2 => {
                let r = floor::Request {
                    terminal: who,
                    class: class(&mut s),
                    priority: {
                        let any = s.u8();
                        s.pick(&[0, 60, 80, 150, 200, 255, any])
                    },
                    limit: s.bool().then(|| Duration::from_millis(u64::from(s.u16()))),
                };
                let before = m.holder().copied();
                m.handle_request(now, r);
                if before.is_some_and(|h| h.terminal == who) {
                    ensure!(
                        m.poll_event().is_none(),
                        "the holder's own request did something"
                    );
                    FloorOp::Other
                } else {
                    FloorOp::Request(r)
                }
            }
            3 => {
                model.end_quietly(who);
                model.waiting.remove(&who);
                m.handle_release(now, who);
                FloorOp::Release
            }
            4 => {
                model.end_quietly(who);
                model.waiting.remove(&who);
                m.handle_leave(now, who);
                FloorOp::Leave
            }
            5 | 6 => {
                if let (true, Some(at)) = (s.bool(), m.poll_timeout()) {
                    now = now.max(at);
                }
                let due = m.poll_timeout().is_some_and(|at| now >= at);
                m.handle_timeout(now);
                if !due {
                    ensure!(m.poll_event().is_none(), "an early timeout did something");
                }
                FloorOp::Timeout
            }
            7 => {
                let limit = Duration::from_millis(u64::from(s.u16()));
                m.set_talk_limit(limit);
                model.talk_limit = limit;
                FloorOp::Other
            }
            _ => FloorOp::Other,
        };
        let mut answered = false;
        while let Some(ev) = m.poll_event() {
            if let FloorOp::Request(r) = op {
                answered |= match ev {
                    floor::Event::Granted { burst, .. } => burst.terminal == r.terminal,
                    floor::Event::Denied { terminal, .. }
                    | floor::Event::Queued { terminal, .. } => terminal == r.terminal,
                    _ => false,
                };
            }
            model.event(op, ev, now, capacity)?;
        }
        if let FloorOp::Request(r) = op {
            ensure!(answered, "{}'s request got no answer", r.terminal);
        }
        floor_invariants(&m, &model, capacity)?;
    }
    // Everybody leaves: every burst granted has ended exactly once.
    for t in 1..=members {
        let who = TerminalId(t);
        model.end_quietly(who);
        model.waiting.remove(&who);
        m.handle_leave(now, who);
        while let Some(ev) = m.poll_event() {
            model.event(FloorOp::Leave, ev, now, capacity)?;
        }
        floor_invariants(&m, &model, capacity)?;
    }
    ensure!(m.holder().is_none(), "a holder after everybody left");
    ensure!(
        model.granted == model.ended,
        "{} bursts granted, {} ended",
        model.granted,
        model.ended
    );
    Ok(match model.granted {
        0 => "no burst",
        1 => "one burst",
        _ => "several bursts",
    })
}

fn floor_invariants(m: &floor::Machine, model: &FloorModel, capacity: usize) -> Result<(), String> {
    ensure!(
        m.holder().copied() == model.holder,
        "holder {:?}, events say {:?}",
        m.holder(),
        model.holder
    );
    ensure!(
        m.queue_len() == model.waiting.len(),
        "queue of {}, events say {}",
        m.queue_len(),
        model.waiting.len()
    );
    ensure!(
        m.queue_len() <= capacity,
        "queue of {} over {capacity}",
        m.queue_len()
    );
    ensure!(
        m.holder().is_some() || m.queue_len() == 0,
        "waiters on an idle floor"
    );
    if let Some(h) = m.holder() {
        ensure!(
            !model.waiting.contains_key(&h.terminal),
            "the holder also waits"
        );
        ensure!(
            m.poll_timeout() == Some(h.granted_at + h.limit),
            "timer disagrees with the burst"
        );
    } else {
        ensure!(m.poll_timeout().is_none(), "a timer without a burst");
    }
    let mut positions: Vec<Option<u16>> = model.waiting.values().map(|w| w.position).collect();
    positions.sort_unstable();
    let want: Vec<Option<u16>> = (1..=model.waiting.len())
        .map(|p| u16::try_from(p).ok())
        .collect();
    ensure!(
        positions == want,
        "reported positions {positions:?}, queue of {}",
        model.waiting.len()
    );
    Ok(())
}

// ---- admission --------------------------------------------------------------

/// Check of the `admission` target: the handshake queue against a model
/// (newest served first, the expired handed back oldest first) and its
/// bound in time: after `expired(now)`, nothing older than `max_wait` waits.
/// It has no bound in count; the driver's handshake slots and quinn's
/// incoming buffer bound what reaches it.
pub fn check_admission(input: &[u8]) -> Result<Outcome, String> {
    let mut s = Source::new(input);
    let max_wait = Duration::from_millis(u64::from(s.u16() % 20_000));
    let mut q = admission::Queue::new(max_wait);
    let mut model: VecDeque<(Instant, u64)> = VecDeque::new();
    let mut now = epoch();
    let mut next = 0u64;
    let mut dropped = 0;
    while !s.is_empty() {
        now += tick(&mut s);
        match s.u8() % 4 {
            0 | 1 => {
                q.push(now, next);
                model.push_back((now, next));
                next += 1;
            }
            2 => {
                let got = q.pop();
                ensure!(
                    got == model.pop_back().map(|(_, a)| a),
                    "pop gave {got:?}, not the newest"
                );
            }
            _ => {
                let take = if s.bool() { usize::MAX } else { s.below(4) };
                let got: Vec<u64> = q.expired(now).take(take).collect();
                let mut want = Vec::new();
                while want.len() < take {
                    match model.front() {
                        Some((t, a)) if now.saturating_duration_since(*t) > max_wait => {
                            want.push(*a);
                            model.pop_front();
                        }
                        _ => break,
                    }
                }
                ensure!(got == want, "expired {got:?}, expected {want:?}");
                dropped += got.len();
                if take == usize::MAX {
                    ensure!(
                        model
                            .iter()
                            .all(|(t, _)| now.saturating_duration_since(*t) <= max_wait),
                        "an attempt older than {max_wait:?} still waits"
                    );
                }
            }
        }
        ensure!(
            q.len() == model.len() && q.is_empty() == model.is_empty(),
            "length"
        );
        ensure!(
            q.next_expiry() == model.front().map(|(t, _)| *t + max_wait),
            "next expiry"
        );
    }
    Ok(if dropped > 0 {
        "expired some"
    } else {
        "none expired"
    })
}

// ---- voice rate limit -------------------------------------------------------

/// Check of the `ratelimit` target: `fanout::RateLimit` never lets more
/// than `burst + rate * t` frames through in any stretch of time `t`, lets
/// the first `burst` through, and is full again after a long pause.
pub fn check_ratelimit(input: &[u8]) -> Result<Outcome, String> {
    let mut s = Source::new(input);
    let rate = match s.u8() % 4 {
        0 => 0,
        1 => 50,
        _ => u32::from(s.u16() % 5_000),
    };
    let burst = match s.u8() % 4 {
        0 => 0,
        1 => 1,
        _ => u32::from(s.u16() % 1_000),
    };
    let mut rl = fanout::RateLimit::new(rate, burst);
    let mut now = epoch();
    let mut allowed: Vec<Instant> = Vec::new();
    let mut refused = 0u64;
    let mut first = true;
    while !s.is_empty() {
        let pause = match s.u8() % 4 {
            0 => Duration::ZERO,
            1 => Duration::from_micros(u64::from(s.u16())),
            2 => Duration::from_millis(u64::from(s.u16())),
            _ => Duration::from_secs(u64::from(s.u8())),
        };
        now += pause;
        let full =
            first || (rate > 0 && pause.as_secs_f64() * f64::from(rate) >= f64::from(burst) + 1.0);
        first = false;
        let calls = 1 + usize::from(s.u8() % 32);
        let mut here = 0u32;
        for _ in 0..calls {
            if rl.allow(now) {
                allowed.push(now);
                here += 1;
            } else {
                refused += 1;
            }
        }
        if full {
            let want = burst.min(u32::try_from(calls).unwrap_or(u32::MAX));
            ensure!(
                here == want,
                "{here} of {calls} frames through a full bucket of {burst}"
            );
        }
    }
    // Any stretch from an admitted frame i to a later one j: at most the
    // burst plus what the rate refilled, j - i + 1 <= burst + rate * (t_j -
    // t_i), i.e. g(j) - g(i) + 1 <= burst with g(k) = k - rate * t_k; all
    // windows at once with a running minimum of g (a little slack for
    // floating point).
    let mut min_g = f64::INFINITY;
    for (k, t) in allowed.iter().enumerate() {
        let g = k as f64 - f64::from(rate) * t.duration_since(epoch()).as_secs_f64();
        min_g = min_g.min(g);
        ensure!(
            g - min_g + 1.0 <= f64::from(burst) + 1e-6,
            "{} frames through {rate}/s with a burst of {burst} in too short a time",
            (g - min_g + 1.0).round()
        );
    }
    Ok(if refused > 0 {
        "limited"
    } else {
        "all through"
    })
}

// The talk-group machine (`ptt_gateway_core::group::Machine`: membership,
// presence and floor of one group) lands on main from another branch. When
// it is in this tree, add a `group` target here: attach/detach/request/
// release/timeout from any terminal and session in any order; invariants:
// a member is attached once per session, a detach of a stale session does
// nothing, the floor's invariants above hold through it, and every burst
// it reports started ends exactly once.
