//! Targets for the rules a peer's input drives: the receipt rule and the
//! sans-I/O state machines of `ptt-gateway-core`. Each reads its input as a sequence of operations (see
//! [`Source`]), runs them with a virtual clock that only moves forward, and
//! checks the machine's invariants after every step against a small model
//! built from what it said.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ptt_codec::{
    receipt, Class, DenyCause, GroupId, ReceiptStatus, RevokeCause, ServerMsg, TerminalId,
};
use ptt_gateway_core::alert::{self, Step};
use ptt_gateway_core::group::{self, churn};
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

/// Check of the `receipt` target: the one receipt rule,
/// `ptt_codec::receipt::advance`, under any sequence of receipts. The
/// gateway's `ptt_gateway_core::alert::advance` is a re-export of it; both
/// paths are still compared, which costs nothing and catches a copy coming
/// back.
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

/// Check of the `admission` target: handshake admission against a model
/// (newest served first, the expired handed back oldest first, a Retry for
/// unproven attempts once `retry_from` are in handshake or waiting or
/// their address has `per_address` unproven ones, proven attempts over
/// `per_proven_address` dropped) and its bound in time: after `expired(now)`,
/// nothing older than `max_wait` waits. Per address it is bounded in
/// count; in total, the driver's handshake slots and quinn's incoming
/// buffer bound what reaches it.
pub fn check_admission(input: &[u8]) -> Result<Outcome, String> {
    let mut s = Source::new(input);
    let limits = admission::Limits {
        max_wait: Duration::from_millis(u64::from(s.u16() % 20_000)),
        retry_from: s.below(12),
        per_address: 1 + s.below(4),
        per_proven_address: 1 + s.below(4),
    };
    let max_wait = limits.max_wait;
    let mut q = admission::Admission::new(limits);
    // Waiting: (arrived, from, proven, id); started: (ticket, from, proven).
    let mut model: VecDeque<(Instant, SocketAddr, bool, u64)> = VecDeque::new();
    let mut started: Vec<(admission::Ticket, SocketAddr, bool)> = Vec::new();
    let mut now = epoch();
    let mut next = 0u64;
    let (mut dropped, mut refused) = (0, 0);
    while !s.is_empty() {
        now += tick(&mut s);
        match s.u8() % 5 {
            0 | 1 => {
                let from = SocketAddr::from(([127, 0, 0, 1], 1 + s.below(4) as u16));
                let proven = s.bool();
                let same = model
                    .iter()
                    .filter(|(_, f, p, _)| *f == from && *p == proven)
                    .count()
                    + started
                        .iter()
                        .filter(|(_, f, p)| *f == from && *p == proven)
                        .count();
                let busy = model.len() + started.len() >= limits.retry_from;
                let got = q.arrive(now, from, proven, next);
                let want = if !proven && busy {
                    admission::Verdict::Retry(next, admission::RetryCause::Busy)
                } else if !proven && same >= limits.per_address {
                    admission::Verdict::Retry(next, admission::RetryCause::Address)
                } else if proven && same >= limits.per_proven_address {
                    admission::Verdict::AddressFull(next)
                } else {
                    model.push_back((now, from, proven, next));
                    admission::Verdict::Queued
                };
                if want != admission::Verdict::Queued {
                    refused += 1;
                }
                ensure!(got == want, "arrival gave {got:?}, not {want:?}");
                next += 1;
            }
            2 => {
                let got = q.start();
                let want = model.pop_back();
                ensure!(
                    got.as_ref().map(|(_, a)| *a) == want.map(|(_, _, _, a)| a),
                    "start gave {got:?}, not the newest"
                );
                if let (Some((ticket, _)), Some((_, from, proven, _))) = (got, want) {
                    ensure!(ticket.from() == from, "the ticket's address");
                    started.push((ticket, from, proven));
                }
            }
            3 => {
                if !started.is_empty() {
                    let (ticket, _, _) = started.swap_remove(s.below(started.len()));
                    q.finished(ticket);
                }
            }
            _ => {
                let take = if s.bool() { usize::MAX } else { s.below(4) };
                let got: Vec<u64> = q.expired(now).take(take).collect();
                let mut want = Vec::new();
                while want.len() < take {
                    match model.front() {
                        Some((t, _, _, a)) if now.saturating_duration_since(*t) > max_wait => {
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
                            .all(|(t, _, _, _)| now.saturating_duration_since(*t) <= max_wait),
                        "an attempt older than {max_wait:?} still waits"
                    );
                }
            }
        }
        ensure!(
            q.waiting() == model.len() && q.is_empty() == model.is_empty(),
            "waiting"
        );
        ensure!(q.in_progress() == started.len(), "in progress");
        let addresses: std::collections::HashSet<SocketAddr> = model
            .iter()
            .map(|(_, f, _, _)| *f)
            .chain(started.iter().map(|(_, f, _)| *f))
            .collect();
        ensure!(q.addresses() == addresses.len(), "addresses");
        ensure!(
            q.next_expiry() == model.front().map(|(t, _, _, _)| *t + max_wait),
            "next expiry"
        );
    }
    Ok(match (dropped > 0, refused > 0) {
        (true, true) => "expired and refused some",
        (true, false) => "expired some",
        (false, true) => "refused some",
        (false, false) => "none expired or refused",
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

// ---- talk group -------------------------------------------------------------

/// The model of one talk group, built from the machine's outputs and the
/// driver's own calls.
#[derive(Debug, Default)]
struct GroupModel {
    /// Terminal -> session of the member online.
    online: BTreeMap<TerminalId, u64>,
    /// The burst granted and not yet ended: (talker, burst id).
    open: Option<(TerminalId, u16)>,
    granted: u64,
    ended: u64,
    /// What the others were last seen told of a terminal. A telling with
    /// nobody else online sends nothing, so the model sees a subset of the
    /// machine's tellings: it checks their spacing and their value, not
    /// that each differs from the one before.
    told: BTreeMap<TerminalId, bool>,
    /// Terminals told of in the step being drained (one telling goes to
    /// every other member).
    told_now: Vec<TerminalId>,
    /// When a terminal's presence was last seen told.
    told_at: BTreeMap<TerminalId, Instant>,
    /// When a terminal last came online or went offline.
    changed_at: BTreeMap<TerminalId, Instant>,
    /// A handle_timeout ran a presence interval or more after the last
    /// change: nothing of this terminal may be told until it changes again.
    settled: BTreeMap<TerminalId, bool>,
}

impl GroupModel {
    fn output(
        &mut self,
        out: group::Output<u64>,
        now: Instant,
        interval: Duration,
    ) -> Result<(), String> {
        match out {
            group::Output::Send { to, link, msg } => {
                ensure!(
                    self.online.get(&to) == Some(&link),
                    "{msg:?} sent to {to} over session {link}, online: {:?}",
                    self.online.get(&to)
                );
                match msg {
                    ServerMsg::FloorGranted { burst, .. } => {
                        ensure!(
                            self.open.is_none(),
                            "{to}/{burst} granted over {:?}",
                            self.open
                        );
                        self.open = Some((to, burst));
                        self.granted += 1;
                    }
                    ServerMsg::Presence {
                        terminal, online, ..
                    } => {
                        ensure!(terminal != to, "{to} told of its own presence");
                        let first = !self.told_now.contains(&terminal);
                        if first {
                            self.told_now.push(terminal);
                            ensure!(
                                !self.settled.get(&terminal).copied().unwrap_or(false),
                                "presence of {terminal} after it settled"
                            );
                            ensure!(
                                online == self.online.contains_key(&terminal),
                                "{terminal} told online={online}, it is not"
                            );
                            if let Some(at) = self.told_at.get(&terminal) {
                                ensure!(
                                    now.saturating_duration_since(*at) >= interval,
                                    "{terminal} told twice within {interval:?}"
                                );
                            }
                            self.told.insert(terminal, online);
                            self.told_at.insert(terminal, now);
                        } else {
                            ensure!(
                                self.told.get(&terminal) == Some(&online),
                                "{terminal} told both ways at once"
                            );
                        }
                    }
                    _ => {}
                }
            }
            group::Output::BurstEnded(e) => {
                let key = (e.burst.terminal, e.burst.id);
                ensure!(
                    self.open == Some(key),
                    "ended {key:?}, granted {:?}",
                    self.open
                );
                ensure!(e.ended_at == now, "ended at another time");
                self.open = None;
                self.ended += 1;
            }
            group::Output::Publish => {}
        }
        Ok(())
    }

    /// `who` came online or went offline at `now`.
    fn changed(&mut self, who: TerminalId, now: Instant) {
        self.changed_at.insert(who, now);
        self.settled.insert(who, false);
    }
}

/// Check of the `group` target: `group::Machine` under any attaches (new
/// sessions, replaced sessions), detaches (current and stale sessions),
/// requests, releases and timeouts, with `churn::Churn` in front of
/// attaches and detaches as the gateway has it.
pub fn check_group(input: &[u8]) -> Result<Outcome, String> {
    let mut s = Source::new(input);
    let talk_limit = Duration::from_millis(u64::from(s.u16()));
    let interval = Duration::from_millis(u64::from(s.u16() % 5_000));
    let capacity = s.below(6);
    let limits = churn::Limits {
        per_second: u32::from(s.u8() % 8),
        burst: 1 + u32::from(s.u8() % 8),
        max_refused: u32::from(s.u8() % 4),
    };
    let members = 1 + u32::from(s.u8() % 6);
    let mut m: group::Machine<u64> = group::Machine::new(
        GroupId(7),
        Arc::from("g"),
        floor::Config {
            talk_limit,
            queue_capacity: capacity,
        },
        interval,
    );
    let mut model = GroupModel::default();
    let mut churns: BTreeMap<TerminalId, (churn::Churn, u32)> = BTreeMap::new();
    let mut next_session = 1u64;
    let mut now = epoch();
    let mut steps = 0;
    let mut replaced = 0;
    while !s.is_empty() && steps < 512 {
        steps += 1;
        now += tick(&mut s);
        let who = TerminalId(1 + u32::from(s.u8()) % members);
        let op = s.u8() % 8;
        let mut timed_out = false;
        if op <= 2 && !s.bool() {
            // Attach or detach, through the churn limit (a refused one is
            // not carried out; `Close` only after `max_refused` in a row).
            let (c, in_row) = churns
                .entry(who)
                .or_insert_with(|| (churn::Churn::new(limits), 0));
            match c.check(now) {
                churn::Verdict::Allow => *in_row = 0,
                v => {
                    *in_row += 1;
                    ensure!(
                        c.refused() == *in_row,
                        "refused {} not {in_row}",
                        c.refused()
                    );
                    ensure!(
                        (v == churn::Verdict::Close) == (*in_row > limits.max_refused),
                        "{v:?} after {in_row} refusals, max {}",
                        limits.max_refused
                    );
                    if v == churn::Verdict::Close {
                        churns.remove(&who);
                    }
                    continue;
                }
            }
        }
        match op {
            0 | 1 => {
                let session = next_session;
                next_session += 1;
                let was = model.online.insert(who, session);
                if was.is_some() {
                    replaced += 1;
                } else {
                    model.changed(who, now);
                }
                let member = group::Member {
                    talk: !s.u8().is_multiple_of(4),
                    priority: s.u8(),
                    name: Arc::from("t"),
                    session,
                    link: session,
                };
                m.handle_attach(now, who, member, s.bool());
            }
            2 => {
                let current = model.online.get(&who).copied();
                let session = match (s.u8() % 3, current) {
                    (0 | 1, Some(c)) => c,
                    (2, Some(c)) if c > 1 => c - 1 - u64::from(s.u8()) % (c - 1),
                    _ => next_session.saturating_sub(1 + u64::from(s.u8())),
                };
                let before = (
                    m.members()
                        .map(|(t, mm)| (t, mm.session))
                        .collect::<Vec<_>>(),
                    m.holder().copied(),
                    m.poll_timeout(),
                );
                let removed = m.handle_detach(now, who, session);
                ensure!(
                    removed == (current == Some(session)),
                    "detach of {who}/{session} (online {current:?}) removed: {removed}"
                );
                if removed {
                    model.online.remove(&who);
                    model.changed(who, now);
                } else {
                    ensure!(m.poll_output().is_none(), "a stale detach did something");
                    let after = (
                        m.members()
                            .map(|(t, mm)| (t, mm.session))
                            .collect::<Vec<_>>(),
                        m.holder().copied(),
                        m.poll_timeout(),
                    );
                    ensure!(before == after, "a stale detach changed the group");
                }
            }
            3 | 4 => {
                let class = class(&mut s);
                let limit = s.bool().then(|| Duration::from_millis(u64::from(s.u16())));
                m.handle_request(now, who, class, limit);
            }
            5 => m.handle_release(now, who),
            _ => {
                if let (true, Some(at)) = (s.bool(), m.poll_timeout()) {
                    now = now.max(at);
                }
                let due = m.poll_timeout().is_some_and(|at| now >= at);
                m.handle_timeout(now);
                if !due {
                    ensure!(m.poll_output().is_none(), "an early timeout did something");
                }
                timed_out = true;
            }
        }
        model.told_now.clear();
        while let Some(out) = m.poll_output() {
            model.output(out, now, interval)?;
        }
        if timed_out {
            ensure!(
                m.poll_timeout().is_none_or(|at| at >= now),
                "timer in the past after handle_timeout"
            );
            for (t, at) in &model.changed_at {
                if now.saturating_duration_since(*at) >= interval {
                    model.settled.insert(*t, true);
                }
            }
        }
        group_invariants(&m, &model)?;
    }
    // Everybody leaves: every burst granted has ended exactly once.
    while let Some((who, session)) = model.online.pop_first() {
        ensure!(m.handle_detach(now, who, session), "{who} not detached");
        model.changed(who, now);
        model.told_now.clear();
        while let Some(out) = m.poll_output() {
            model.output(out, now, interval)?;
        }
        group_invariants(&m, &model)?;
    }
    ensure!(m.holder().is_none(), "a holder after everybody left");
    ensure!(
        model.granted == model.ended,
        "{} bursts granted, {} ended",
        model.granted,
        model.ended
    );
    Ok(match (model.granted, replaced) {
        (0, _) => "no burst",
        (_, 0) => "bursts",
        _ => "bursts and reconnects",
    })
}

fn group_invariants(m: &group::Machine<u64>, model: &GroupModel) -> Result<(), String> {
    let online: Vec<(TerminalId, u64)> = m.members().map(|(t, mm)| (t, mm.session)).collect();
    let want: Vec<(TerminalId, u64)> = model.online.iter().map(|(t, s)| (*t, *s)).collect();
    ensure!(online == want, "members {online:?}, calls say {want:?}");
    ensure!(m.online() == want.len(), "online count");
    let holder = m.holder().map(|b| (b.terminal, b.id));
    ensure!(
        holder == model.open,
        "holder {holder:?}, outputs say {:?}",
        model.open
    );
    if let Some((t, _)) = holder {
        ensure!(m.member(t).is_some(), "holder {t} is not online");
    }
    Ok(())
}
