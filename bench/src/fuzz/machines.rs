//! Targets for the rules a peer's input drives: the receipt rule, the
//! sans-I/O state machines of `ptt-gateway-core` and the pure checks on the
//! org. Each reads its input as a sequence of operations (see
//! [`Source`]), runs them with a virtual clock that only moves forward, and
//! checks the machine's invariants after every step against a small model
//! built from what it said.

use std::collections::{BTreeMap, VecDeque};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ptt_codec::{receipt, AlertKind, Class, DenyCause, GroupId, ReceiptStatus, RevokeCause};
use ptt_codec::{Target, TerminalId};
use ptt_gateway_core::alert::{self, Step, MAX_TTL_S};
use ptt_gateway_core::drill::{self, Level, Progress};
use ptt_gateway_core::location::{distance_m, Fix, Positions};
use ptt_gateway_core::recipients::{self, MAX_FIX_AGE_MS};
use ptt_gateway_core::{admission, fanout, floor};
use ptt_org::auth::ProvisioningKey;
use ptt_org::{Org, Policy};

use crate::codec::{alert_body, target};
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

// ---- the org: recipients, rights, credentials, drills ------------------------

/// A small city: two police stations, three co-governance stations, five
/// units, consoles at three levels, every role and terminal kind.
const ORG: &str = r#"
[[node]]
id = 1
kind = "city"
name = "市"
[[node]]
id = 2
parent = 1
kind = "district"
name = "区"
[[node]]
id = 10
parent = 2
kind = "police_station"
name = "城南派出所"
[[node]]
id = 20
parent = 2
kind = "police_station"
name = "城北派出所"
[[node]]
id = 100
parent = 10
kind = "station"
name = "一站"
[[node]]
id = 101
parent = 10
kind = "station"
name = "二站"
[[node]]
id = 200
parent = 20
kind = "station"
name = "三站"
[[node]]
id = 1001
parent = 100
kind = "unit"
name = "单元1"
[[node]]
id = 1002
parent = 100
kind = "unit"
name = "单元2"
[[node]]
id = 1011
parent = 101
kind = "unit"
name = "单元3"
[[node]]
id = 2001
parent = 200
kind = "unit"
name = "单元4"
[[node]]
id = 2002
parent = 200
kind = "unit"
name = "单元5"
[[terminal]]
id = 1
node = 2
role = "dispatcher"
kind = "console"
name = "区指挥中心"
[[terminal]]
id = 2
node = 10
role = "dispatcher"
kind = "console"
name = "城南指挥室"
[[terminal]]
id = 3
node = 100
role = "staff"
kind = "console"
name = "一站台"
[[terminal]]
id = 4
node = 200
role = "staff"
kind = "console"
name = "三站台"
[[terminal]]
id = 5
node = 10
role = "police"
kind = "handheld"
name = "民警"
[[terminal]]
id = 6
node = 10
role = "auxiliary_police"
kind = "phone_app"
name = "辅警"
[[terminal]]
id = 7
node = 1001
role = "security_guard"
kind = "handheld"
name = "a"
[[terminal]]
id = 8
node = 1001
role = "volunteer"
kind = "phone_app"
name = "b"
[[terminal]]
id = 9
node = 1002
role = "security_guard"
kind = "handheld"
name = "c"
[[terminal]]
id = 10
node = 1002
role = "staff"
kind = "screen_terminal"
name = "d"
[[terminal]]
id = 11
node = 1011
role = "security_guard"
kind = "handheld"
name = "e"
[[terminal]]
id = 12
node = 2001
role = "security_guard"
kind = "handheld"
name = "f"
[[terminal]]
id = 13
node = 2002
role = "volunteer"
kind = "phone_app"
name = "g"
[[terminal]]
id = 14
node = 100
role = "security_guard"
kind = "handheld"
name = "h"
"#;

/// Terminal ids 1..=ORG_IDS cover the org and some strangers.
const ORG_IDS: u32 = 17;
/// Node ids worth targeting, with strangers.
const NODES: [u32; 14] = [
    0, 1, 2, 10, 20, 100, 101, 200, 1001, 1002, 1011, 2001, 2002, 3,
];

fn org() -> &'static Org {
    static ORG_CELL: OnceLock<Org> = OnceLock::new();
    ORG_CELL.get_or_init(|| {
        Org::from_toml(ORG, std::path::Path::new(".")).expect("the fuzz org is valid")
    })
}

/// A terminal of the org mostly (1 when the input has run out), a
/// stranger sometimes.
fn org_terminal(s: &mut Source<'_>) -> TerminalId {
    if s.u8() % 16 == 15 {
        TerminalId(s.u32())
    } else {
        TerminalId(1 + u32::from(s.u8()) % ORG_IDS)
    }
}

fn org_node(s: &mut Source<'_>) -> u32 {
    if s.u8() % 16 == 15 {
        s.u32()
    } else {
        s.pick(&NODES)
    }
}

/// A target aimed at the org: ids of its terminals and nodes.
fn org_target(s: &mut Source<'_>) -> Target {
    match target(s) {
        Target::Terminals(ids) => Target::Terminals(ids.iter().map(|_| org_terminal(s)).collect()),
        Target::Group(_) => Target::Group(GroupId(org_node(s).max(1))),
        Target::Subtree { roles, .. } => Target::Subtree {
            node: org_node(s).max(1),
            roles,
        },
        t => t,
    }
}

fn role_bit(role: ptt_org::Role) -> u8 {
    use ptt_org::Role;
    match role {
        Role::Police => 1,
        Role::AuxiliaryPolice => 2,
        Role::SecurityGuard => 4,
        Role::Staff => 8,
        Role::Volunteer => 16,
        Role::Dispatcher => 32,
    }
}

/// Check of the `recipients` target: who an alert from any sender with any
/// body and target reaches, with terminals reporting any positions, and
/// the join rights behind every group.
pub fn check_recipients(input: &[u8]) -> Result<Outcome, String> {
    let org = org();
    let mut s = Source::new(input);
    let positions = Positions::default();
    let now_ms = match s.u8() % 3 {
        0 => u64::from(s.u32()),
        1 => 1_800_000_000_000,
        _ => s.any_u64(),
    };
    let mut issuer = org_terminal(&mut s);
    let mut target = org_target(&mut s);
    let mut body = alert_body(&mut s);
    // Most cases get past the outer checks, so that the recipient rules
    // themselves run: a console (or, for reports, a member) with a
    // plausible body and a target of the right direction.
    if s.u8() % 4 != 3 {
        body.ttl_s = s.pick(&[1, 3600, MAX_TTL_S]);
        if body.title.trim().is_empty() {
            body.title = "演练".to_owned();
        }
        if body.kind == AlertKind::Sos {
            body.kind = AlertKind::Dispatch;
        }
        if body.kind.is_upward() {
            target = Target::Station;
        } else {
            issuer = TerminalId(1 + s.below(4) as u32);
            if target == Target::Station {
                target = Target::Subtree { node: 2, roles: 0 };
            }
        }
    } else if s.bool() {
        body.ttl_s = s.pick(&[0, 1, 3600, MAX_TTL_S, MAX_TTL_S + 1]);
    }
    let online_mask = !s.u32();
    let online = |t: TerminalId| t.0 < 32 && online_mask >> t.0 & 1 == 1;
    for _ in 0..s.below(24) {
        let t = org_terminal(&mut s);
        let (mut lat_e7, mut lon_e7) = crate::codec::coordinates(&mut s);
        if let (Some(at), true) = (&body.location, s.u8() % 4 != 3) {
            // Within a few kilometres of the incident, where nearest-member
            // targeting looks.
            let near = |c: i32, s: &mut Source<'_>, max: i32| {
                (c + (i32::from(s.u16()) - 32_768) * 10).clamp(-max, max)
            };
            lat_e7 = near(at.lat_e7, &mut s, 900_000_000);
            lon_e7 = near(at.lon_e7, &mut s, 1_800_000_000);
        }
        let age = match s.u8() % 3 {
            0 => 0,
            1 => MAX_FIX_AGE_MS + u64::from(s.u8()) - 128,
            _ => s.any_u64(),
        };
        positions.update(
            t,
            Fix {
                lat_e7,
                lon_e7,
                accuracy_m: s.u16(),
                at_ms: now_ms.wrapping_sub(age),
            },
        );
    }
    let _ = recipients::describe(&target);
    let got = recipients::resolve(org, &positions, online, issuer, &body, &target, now_ms);
    let outcome = match got {
        Err(refusal) => {
            let _ = (refusal.to_code(), refusal.to_string());
            use recipients::Refusal as R;
            match refusal {
                R::UnknownSender => "refused: unknown sender",
                R::UpwardNotToStation | R::DownwardToStation => "refused: direction",
                R::NotConsole => "refused: not a console",
                R::Sos | R::EmptyTitle | R::Ttl => "refused: body",
                R::UnknownTerminal(_) | R::UnknownGroup(_) | R::UnknownNode(_) => {
                    "refused: unknown target"
                }
                R::TerminalOutside(_) | R::GroupOutside(_) | R::NodeOutside(_) => {
                    "refused: outside command"
                }
                R::NoLocation => "refused: no location",
                R::NoRecipients => "refused: nobody",
                _ => "refused: other",
            }
        }
        Ok(list) => {
            let sender = org
                .terminal(issuer)
                .ok_or("an alert from a stranger was accepted")?;
            ensure!(!list.is_empty(), "accepted with no recipients");
            ensure!(
                list.windows(2).all(|w| w[0] < w[1]),
                "recipients not sorted and unique: {list:?}"
            );
            ensure!(!list.contains(&issuer), "the sender receives its own alert");
            ensure!(body.kind != AlertKind::Sos, "an SOS sent as an alert");
            ensure!(!body.title.trim().is_empty(), "an empty title accepted");
            ensure!(
                (1..=MAX_TTL_S).contains(&body.ttl_s),
                "ttl {} accepted",
                body.ttl_s
            );
            ensure!(
                body.kind.is_upward() == matches!(target, Target::Station),
                "{:?} accepted for {target:?}",
                body.kind
            );
            if !body.kind.is_upward() {
                ensure!(sender.is_console(), "a member sent a {:?}", body.kind);
            }
            for id in &list {
                let t = org
                    .terminal(*id)
                    .ok_or_else(|| format!("recipient {id} is not in the org"))?;
                match &target {
                    Target::Station => ensure!(
                        t.is_console() && org.is_ancestor_or_self(t.node, sender.node),
                        "report to {id}, not a console of the sender's station"
                    ),
                    _ => ensure!(
                        org.is_ancestor_or_self(sender.node, t.node),
                        "{id} is outside the sender's command"
                    ),
                }
                match &target {
                    Target::Group(g) => ensure!(t.node == g.0, "{id} is not in {g}"),
                    Target::Subtree { node, roles } => ensure!(
                        org.is_ancestor_or_self(*node, t.node)
                            && (*roles == 0 || roles & role_bit(t.role) != 0),
                        "{id} does not match the subtree filter"
                    ),
                    Target::Nearest { radius_m, .. } => {
                        let at = body.location.as_ref().ok_or("nearest without a location")?;
                        let fix = positions.last(*id).ok_or("nearest without a fix")?;
                        ensure!(online(*id) && !t.is_console(), "{id} offline or a console");
                        ensure!(
                            now_ms.saturating_sub(fix.at_ms) <= MAX_FIX_AGE_MS,
                            "{id}'s fix is stale"
                        );
                        let d = distance_m((at.lat_e7, at.lon_e7), (fix.lat_e7, fix.lon_e7));
                        ensure!(
                            d <= f64::from(*radius_m) + 1.0,
                            "{id} is {d} m away, beyond {radius_m} m"
                        );
                    }
                    _ => {}
                }
            }
            if let Target::Nearest { k, .. } = target {
                ensure!(list.len() <= usize::from(k), "more than {k} nearest");
            }
            "delivered"
        }
    };
    for c in recipients::station_consoles(org, issuer) {
        let t = org.terminal(c).ok_or("a station console not in the org")?;
        ensure!(
            t.is_console() && c != issuer,
            "{c} is not a station console"
        );
    }
    // Join rights: a console only at or under its node.
    let policy = Policy::default();
    let group = GroupId(org_node(&mut s));
    if let (Ok(rights), Some(t)) = (org.rights(&policy, issuer, group), org.terminal(issuer)) {
        ensure!(rights.listen || !rights.talk, "talk without listen");
        if t.is_console() {
            ensure!(
                org.is_ancestor_or_self(t.node, group.0),
                "console {issuer} joins {group} outside its node"
            );
        }
    }
    Ok(outcome)
}

/// Check of the `credential` target: a Hello's credential is accepted
/// exactly when it is the terminal's, whatever its length.
pub fn check_credential(input: &[u8]) -> Result<Outcome, String> {
    let mut s = Source::new(input);
    let key = ProvisioningKey::from_bytes(std::array::from_fn(|_| s.u8()));
    let terminal = TerminalId(s.id_u32());
    let real = key.credential(terminal);
    let mut presented: Vec<u8> = match s.u8() % 5 {
        0 => real.to_vec(),
        1 => real[..s.below(32)].to_vec(),
        2 => {
            let mut v = real.to_vec();
            v.extend((0..1 + s.below(40)).map(|_| s.u8()));
            v
        }
        3 => key.credential(TerminalId(terminal.0 ^ 1)).to_vec(),
        _ => (0..s.below(80)).map(|_| s.u8()).collect(),
    };
    if s.bool() && !presented.is_empty() {
        let i = s.below(presented.len());
        presented[i] ^= 1 << (s.u8() % 8);
    }
    let accepted = key.verify(terminal, &presented);
    ensure!(
        accepted == (presented == real),
        "verify({terminal}, {} bytes) = {accepted}",
        presented.len()
    );
    Ok(if accepted { "accepted" } else { "refused" })
}

/// Check of the `drill` target: a drill report from any receipts (times
/// before the start, far in the future, missing steps), any marks and any
/// title, and its JSON and CSV.
pub fn check_drill(input: &[u8]) -> Result<Outcome, String> {
    let org = org();
    let mut s = Source::new(input);
    let started_ms = match s.u8() % 3 {
        0 => 0,
        1 => 1_800_000_000_000,
        _ => s.any_u64(),
    };
    let at = |s: &mut Source<'_>| -> Option<u64> {
        match s.u8() % 5 {
            0 => None,
            1 => Some(started_ms.saturating_add(u64::from(s.u16()) * 100)),
            2 => Some(started_ms.wrapping_sub(u64::from(s.u8()))),
            3 => Some(s.any_u64()),
            _ => Some(started_ms.saturating_add(u64::from(s.u32()))),
        }
    };
    let progress: Vec<Progress> = (0..s.below(40))
        .map(|_| Progress {
            terminal: org_terminal(&mut s),
            receipt_ms: at(&mut s),
            accept_ms: at(&mut s),
            arrive_ms: at(&mut s),
        })
        .collect();
    let marks: Vec<u32> = match s.u8() % 4 {
        0 => drill::DEFAULT_MARKS_S.to_vec(),
        1 => Vec::new(),
        _ => (0..s.below(6))
            .map(|_| {
                let any = s.u32();
                s.pick(&[0, 1, 60, 180, 480, u32::MAX, any])
            })
            .collect(),
    };
    let title = s.string(ptt_codec::alert::MAX_TITLE);
    let d = drill::Drill {
        alert: s.any_u64(),
        title: &title,
        issuer: TerminalId(s.id_u32()),
        started_ms,
        progress: &progress,
    };
    let report = drill::report(org, &d, &marks, s.any_u64());
    let rows = &report.rows;
    let total = rows.last().ok_or("a report without its total")?;
    ensure!(total.level == Level::Total, "the last row is not the total");
    let order = |l: Level| match l {
        Level::Unit => 0,
        Level::CoStation => 1,
        Level::PoliceStation => 2,
        Level::Total => 3,
    };
    ensure!(
        rows.windows(2)
            .all(|w| (order(w[0].level), w[0].node) < (order(w[1].level), w[1].node)),
        "rows out of order"
    );
    let units: Vec<_> = rows.iter().filter(|r| r.level == Level::Unit).collect();
    ensure!(
        total.units as usize == units.len(),
        "total counts other units"
    );
    ensure!(
        total.members == units.iter().map(|r| r.members).sum::<u32>()
            && total.members as usize <= progress.len(),
        "total counts other members"
    );
    for r in rows {
        ensure!(
            r.level != Level::Unit || r.units == 1,
            "a unit row of several"
        );
        for m in [&r.receipt, &r.accept, &r.arrive] {
            ensure!(m.reached <= r.units, "more reached than units");
            ensure!(m.within.len() == marks.len(), "a count per mark");
            for (i, w) in m.within.iter().enumerate() {
                ensure!(*w <= m.reached, "more within a mark than reached");
                for (j, v) in m.within.iter().enumerate() {
                    if marks[i] <= marks[j] {
                        ensure!(w <= v, "fewer within a longer mark");
                    }
                }
            }
            ensure!(
                m.median_s.is_some() == (m.reached > 0) && m.max_s.is_some() == (m.reached > 0),
                "median or maximum without times"
            );
            if let (Some(med), Some(max)) = (m.median_s, m.max_s) {
                ensure!(
                    med.is_finite() && (0.0..=max).contains(&med),
                    "median {med} outside 0..={max}"
                );
            }
        }
        ensure!(
            r.receipt.reached >= r.accept.reached && r.accept.reached >= r.arrive.reached,
            "a later step reached by more units than an earlier one"
        );
    }
    let json: serde_json::Value = serde_json::from_str(&report.to_json())
        .map_err(|e| format!("the report's JSON does not parse: {e}"))?;
    ensure!(
        json["title"] == title.as_str()
            && json["rows"].as_array().map(Vec::len) == Some(rows.len()),
        "the JSON says something else"
    );
    let csv = report.to_csv();
    ensure!(
        csv.lines().count() == rows.len() + 1,
        "CSV of {} lines for {} rows",
        csv.lines().count(),
        rows.len()
    );
    Ok(if units.is_empty() {
        "no unit"
    } else {
        "units timed"
    })
}

// The talk-group machine (`ptt_gateway_core::group::Machine`: membership,
// presence and floor of one group) lands on main from another branch. When
// it is in this tree, add a `group` target here: attach/detach/request/
// release/timeout from any terminal and session in any order; invariants:
// a member is attached once per session, a detach of a stale session does
// nothing, the floor's invariants above hold through it, and every burst
// it reports started ends exactly once.
