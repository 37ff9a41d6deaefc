//! One talk group at run time: its members online, its floor, and the
//! fan-out snapshot the voice path reads.
//!
//! This is the thin async shell around the sans-I/O [`rules::Machine`]
//! (`ptt_gateway_core::group`), which decides every message: each operation
//! locks the machine, steps it with the current time, drains its outputs,
//! and unlocks; only then are the messages queued to the terminals, ended
//! bursts sent to the audit log and the fan-out snapshot stored. The per-frame voice path never takes a lock (it
//! reads [`Group::fanout`]).
//!
//! Order: outputs of one step are carried out while holding a second lock,
//! `delivery`, taken before the machine's lock is released. So steps deliver
//! in the order they ran (a terminal never sees `FloorIdle` before the
//! `FloorTaken` it ends), while the machine's lock is never held across a
//! send or a connection close.
//!
//! Timers: one task per group ([`timer::Timer`]), started on its first timed
//! burst, sleeping towards [`rules::Machine::poll_timeout`] and moved through
//! a watch channel when the deadline changes. Not a task per burst, which
//! churned a spawn per key press and left stale sleepers waking for nothing;
//! not one task for all groups, which would need its own deadline heap and
//! cancellation to do what the runtime's timer wheel already does per task.
//! Groups are few (one per org node) next to connections, and an idle
//! group's task is parked on its channel.

mod remote;
mod timer;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use ptt_codec::{Class, GroupId, ServerMsg, TerminalId};
use ptt_gateway_core::cluster::NodeName;
use ptt_gateway_core::group as rules;

use crate::alert::{now_ms, BurstRecord};
use crate::fanout::{self, Receiver, Talker};
use crate::floor;
use crate::link::Link;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::recorder;

use timer::Timer;

/// The fan-out snapshot of a group in the gateway.
pub type Snapshot = fanout::Snapshot<Link>;

/// A terminal's live connection, as a group sees it.
#[derive(Debug, Clone)]
pub struct Contact {
    /// Session id: a newer session of the same terminal has a larger one.
    pub session: u64,
    /// For voice datagrams.
    pub conn: Link,
    /// For control messages.
    pub outbox: Outbox,
}

/// A member online in a group.
#[derive(Debug, Clone)]
pub struct Member {
    /// May request the floor.
    pub talk: bool,
    /// Floor priority (from role).
    pub priority: u8,
    /// Display name, for `FloorTaken`.
    pub name: Arc<str>,
    /// Where to reach it.
    pub link: Contact,
}

/// Where the group's machine reaches a member: a terminal connected to this
/// node, or one on another node of the cluster (its messages go to that
/// node's inbox).
#[derive(Debug)]
pub enum Reach {
    /// Connected here.
    Local(Contact),
    /// Connected to this node of the cluster.
    Remote(NodeName),
}

/// The group machine with the gateway's links (shared, so an output
/// addressed to a member costs a reference count, not three).
type Machine = rules::Machine<Arc<Reach>>;
type Output = rules::Output<Arc<Reach>>;

/// A talk group.
#[derive(Debug)]
pub struct Group {
    /// The group's id (its node's id).
    pub id: GroupId,
    fanout: ArcSwap<Snapshot>,
    /// Membership and floor; held only to step the machine and drain it.
    machine: Mutex<Machine>,
    /// Held while one step's outputs are carried out; see the module docs.
    delivery: Mutex<()>,
    /// Wakes the group at the machine's next deadline.
    timer: Timer,
    metrics: Arc<Metrics>,
    /// When each member waiting for a grant pressed its talk key, for
    /// `floor_grant_latency`; at most one entry per member.
    requested: Mutex<std::collections::HashMap<TerminalId, Instant>>,
    audit: tokio::sync::mpsc::UnboundedSender<BurstRecord>,
    /// Where bursts and their relayed frames are recorded, if recording.
    recorder: Option<recorder::Tap>,
    /// What a fresh machine is made of (a cluster node that takes the
    /// group over starts one).
    name: Arc<str>,
    floor: floor::Config,
    presence: Duration,
    /// The cluster's state of the group, when the gateway is a cluster
    /// node (see `remote.rs`).
    cluster: std::sync::OnceLock<remote::Clustered>,
}

impl Group {
    /// A group with nobody online, telling a member's presence changes at
    /// most once per `presence` interval (coalesced, see
    /// `ptt_gateway_core::group`).
    /// Ended bursts go to `audit`, to be written to the floor audit log.
    pub fn new(
        id: GroupId,
        name: Arc<str>,
        floor: floor::Config,
        presence: Duration,
        metrics: Arc<Metrics>,
        audit: tokio::sync::mpsc::UnboundedSender<BurstRecord>,
    ) -> Self {
        Self {
            id,
            machine: Mutex::new(Machine::new(id, name.clone(), floor.clone(), presence)),
            name,
            floor,
            presence,
            cluster: std::sync::OnceLock::new(),
            fanout: ArcSwap::from_pointee(Snapshot::default()),
            delivery: Mutex::new(()),
            timer: Timer::new(),
            metrics,
            requested: Mutex::new(Default::default()),
            audit,
            recorder: None,
        }
    }

    /// The group, recording its bursts through `tap`. Call once, before
    /// anyone joins.
    pub fn recording_to(mut self, tap: recorder::Tap) -> Self {
        self.recorder = Some(tap);
        self
    }

    /// Hands a frame the voice path admitted and relayed to the recorder;
    /// never waits (see [`recorder::Tap::frame`]). Call after relaying it.
    #[inline]
    pub fn record(&self, header: &ptt_codec::VoiceHeader, datagram: &bytes::Bytes) {
        if !self.arbitrates() {
            // Recorded by the group's arbiter, which hears every node's voice.
            return;
        }
        if let Some(tap) = &self.recorder {
            tap.frame(header, datagram);
        }
    }

    /// The current fan-out snapshot. Lock-free; valid until the next
    /// membership or floor change, after which the next load sees the new one.
    #[inline]
    pub fn fanout(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.fanout.load()
    }

    /// Puts `terminal` online in the group, or replaces its link when it
    /// reconnected. With `announce`, the terminal is sent `Joined`; either
    /// way it is told who talks right now (late entry) and the others see it
    /// come online.
    pub fn attach(self: &Arc<Self>, terminal: TerminalId, member: Member, announce: bool) {
        if let Some(c) = self.cluster.get() {
            self.attach_clustered(c, terminal, member, announce);
            return;
        }
        self.attach_here(terminal, member, announce);
    }

    /// Attaches a member connected to this node to this node's machine.
    fn attach_here(self: &Arc<Self>, terminal: TerminalId, member: Member, announce: bool) {
        let member = rules::Member {
            talk: member.talk,
            priority: member.priority,
            name: member.name,
            session: member.link.session,
            link: Arc::new(Reach::Local(member.link)),
        };
        self.step(|m, now| m.handle_attach(now, terminal, member, announce));
    }

    /// Takes `terminal` offline in the group if its link belongs to
    /// `session` (a newer session's link is left alone). Ends its burst and
    /// drops its queued request. Returns whether it was removed.
    pub fn detach(self: &Arc<Self>, terminal: TerminalId, session: u64) -> bool {
        self.requests().remove(&terminal);
        if let Some(c) = self.cluster.get() {
            return self.detach_clustered(c, terminal, session);
        }
        self.step(|m, now| m.handle_detach(now, terminal, session))
    }

    /// A member pressed the talk key.
    pub fn request_floor(self: &Arc<Self>, terminal: TerminalId, class: Class) {
        self.request_floor_for(terminal, class, None);
    }

    /// A floor request with its own talk-time limit (an SOS hot-mic burst).
    pub fn request_floor_for(
        self: &Arc<Self>,
        terminal: TerminalId,
        class: Class,
        limit: Option<Duration>,
    ) {
        self.requests()
            .entry(terminal)
            .or_insert_with(std::time::Instant::now);
        if let Some(c) = self.cluster.get() {
            self.request_clustered(c, terminal, class, limit);
            return;
        }
        self.step(|m, now| m.handle_request(now, terminal, class, limit));
    }

    /// A member released the talk key (or withdrew its queued request).
    pub fn release_floor(self: &Arc<Self>, terminal: TerminalId) {
        self.requests().remove(&terminal);
        if let Some(c) = self.cluster.get() {
            self.release_clustered(c, terminal);
            return;
        }
        self.step(|m, now| m.handle_release(now, terminal));
    }

    /// Members waiting for a grant, and since when.
    fn requests(&self) -> MutexGuard<'_, std::collections::HashMap<TerminalId, Instant>> {
        // Plain insert/remove: a panic cannot leave it half-changed.
        self.requested.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of members online.
    pub fn online(&self) -> usize {
        self.lock().online()
    }

    /// The terminal holding the floor, if any.
    pub fn holder(&self) -> Option<TerminalId> {
        self.lock().holder().map(|b| b.terminal)
    }

    /// The current burst, if any, and the terminals waiting for the floor,
    /// next first (for operators' views).
    pub fn floor_view(&self) -> (Option<floor::Burst>, Vec<TerminalId>) {
        let machine = self.lock();
        (machine.holder().copied(), machine.queued().collect())
    }

    /// Called by the timer task once the machine's deadline has passed.
    fn on_timeout(self: &Arc<Self>) {
        self.step(|m, now| m.handle_timeout(now));
    }

    fn lock(&self) -> MutexGuard<'_, Machine> {
        // A panic while holding this lock is a bug in this module or the
        // machine; the state is still consistent enough to keep serving
        // other terminals.
        self.machine.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `input` on the machine at the current time, then carries out
    /// what it asked for, after releasing the machine (see the module docs).
    fn step<R>(self: &Arc<Self>, input: impl FnOnce(&mut Machine, Instant) -> R) -> R {
        let mut machine = self.lock();
        // Read under the lock, so the machine never sees time go back. Tokio's
        // clock, so tests with paused time step the machine too.
        let now = tokio::time::Instant::now().into_std();
        let result = input(&mut machine, now);
        let outputs: Vec<Output> = std::iter::from_fn(|| machine.poll_output()).collect();
        // Built from the machine after the step (stored before its messages
        // are sent: see `deliver`).
        let snapshot = outputs
            .iter()
            .any(|o| matches!(o, rules::Output::Publish))
            .then(|| self.snapshot(&machine));
        let talking = machine.holder().map(|b| (b.terminal, b.id, b.class));
        self.timer
            .set(machine.poll_timeout(), self, Self::on_timeout);
        // Taken before the machine is released, so deliveries keep the order
        // of the steps; a panic while delivering poisons nothing we rely on.
        let _delivery = self.delivery.lock().unwrap_or_else(|e| e.into_inner());
        drop(machine);
        self.deliver(outputs, snapshot.as_ref(), talking);
        result
    }

    /// Carries out one step's outputs; `snapshot` is what a republish
    /// stores, `talking` the burst holding the floor after the step.
    ///
    /// The republish goes first, before any message: a talker that sends
    /// its first frame the moment `FloorGranted` arrives finds the snapshot
    /// that admits it already stored (sent first, the grant raced the
    /// store and could lose that frame as `voice_not_holder`), and a
    /// revoked holder's frames stop being relayed before it is told. A
    /// granted burst's recording starts before the republish admits its
    /// frames.
    fn deliver(
        &self,
        outputs: Vec<Output>,
        snapshot: Option<&Arc<Snapshot>>,
        talking: Option<(TerminalId, u16, Class)>,
    ) {
        // Bursts' starts and ends, in the step's order, for the audit log
        // and the recorder.
        let mut sends = Vec::with_capacity(outputs.len());
        let mut remote = remote::Outgoing::default();
        for output in outputs {
            match output {
                rules::Output::Send { to, link, msg } => {
                    if let ServerMsg::FloorGranted { burst, .. } = msg {
                        // Recorded here, the arbiter, wherever the talker is.
                        self.record_start(to, burst, talking);
                    }
                    let link = match &*link {
                        Reach::Local(contact) => contact,
                        Reach::Remote(node) => {
                            self.count(to, &msg);
                            remote.push(node, to, &msg);
                            continue;
                        }
                    };
                    if let ServerMsg::FloorGranted { .. } = msg {
                        if let Some(pressed) = self.requests().remove(&to) {
                            self.metrics.floor_grant_latency.record(pressed.elapsed());
                        }
                    } else if matches!(msg, ServerMsg::FloorDenied { .. }) {
                        self.requests().remove(&to);
                    }
                    sends.push((to, link.clone(), msg));
                }
                rules::Output::BurstEnded(ended) => self.log(ended),
                // Stored next, before the messages.
                rules::Output::Publish => {}
            }
        }
        if let Some(snapshot) = snapshot {
            self.fanout.store(Arc::clone(snapshot));
        }
        for (to, link, msg) in sends {
            self.count(to, &msg);
            self.send_local(&link, msg);
        }
        if let Some(c) = self.cluster.get() {
            let talker = talking.map(|(t, burst, _)| (t.0, burst));
            remote.send(c.cluster(), self.id, talker);
        }
    }

    /// Queues `msg` to a member connected here.
    fn send_local(&self, link: &Contact, msg: ServerMsg) {
        // Presence is the one message a member can do without when it
        // falls behind: dropped, never a reason to close it (it learns
        // who is online from its next `Joined`).
        if matches!(msg, ServerMsg::Presence { .. }) {
            if !link.outbox.send_droppable(msg) {
                Metrics::add(&self.metrics.presence_dropped, 1);
            }
        } else {
            link.outbox.send(msg);
        }
    }

    /// Floor metrics and events, from the messages that carry them.
    fn count(&self, to: TerminalId, msg: &ServerMsg) {
        match msg {
            ServerMsg::FloorGranted {
                burst, limit_ms, ..
            } => {
                Metrics::add(&self.metrics.floor_granted, 1);
                tracing::debug!(group = %self.id, terminal = %to, burst, limit_ms, "floor granted");
            }
            ServerMsg::FloorDenied { .. } => Metrics::add(&self.metrics.floor_denied, 1),
            ServerMsg::FloorRevoked { burst, cause, .. } => {
                Metrics::add(&self.metrics.floor_revoked, 1);
                tracing::debug!(group = %self.id, terminal = %to, burst, ?cause, "floor revoked");
            }
            _ => {}
        }
    }

    /// Tells the recorder that `terminal` was granted `burst`.
    fn record_start(
        &self,
        terminal: TerminalId,
        burst: u16,
        talking: Option<(TerminalId, u16, Class)>,
    ) {
        let Some(tap) = &self.recorder else { return };
        let class = match talking {
            Some((t, id, class)) if t == terminal && id == burst => class,
            _ => Class::Normal,
        };
        tap.start(recorder::Start {
            group: self.id,
            terminal,
            burst,
            class,
            started_ms: now_ms(),
        });
    }

    /// Sends an ended burst to the audit log. The machine times bursts with
    /// the monotonic clock; the log wants Unix ms, so the end is stamped now
    /// and the grant that long before it.
    fn log(&self, ended: rules::Ended) {
        let ended_ms = now_ms();
        let talked = ended
            .ended_at
            .saturating_duration_since(ended.burst.granted_at);
        let talked_ms = u64::try_from(talked.as_millis()).unwrap_or(u64::MAX);
        if let Some(tap) = &self.recorder {
            tap.end(self.id, ended.burst.id, ended_ms, ended.by);
        }
        let _ = self.audit.send(BurstRecord {
            group: self.id.0,
            terminal: ended.burst.terminal,
            burst: ended.burst.id,
            class: ended.burst.class.code(),
            granted_ms: ended_ms.saturating_sub(talked_ms),
            ended_ms,
            ended_by: ended.by,
        });
    }
}

impl Group {
    /// The fan-out snapshot as it is now: the members connected here, and
    /// the burst of `machine` (or, on a cluster node that does not
    /// arbitrate the group, the burst its arbiter last told of).
    fn snapshot(&self, machine: &Machine) -> Arc<Snapshot> {
        let receivers: Arc<[Receiver<Link>]> = match self.cluster.get() {
            Some(c) => c.receivers(),
            None => machine
                .members()
                .filter_map(|(terminal, m)| match &*m.link {
                    Reach::Local(contact) => Some(Receiver {
                        terminal,
                        sink: contact.conn.clone(),
                    }),
                    Reach::Remote(_) => None,
                })
                .collect(),
        };
        let talker = machine
            .holder()
            .map(|b| Talker {
                terminal: b.terminal,
                burst: b.id,
            })
            .or_else(|| self.cluster.get().and_then(|c| c.remote_talker()));
        Arc::new(Snapshot { talker, receivers })
    }
}

#[cfg(test)]
mod tests;
