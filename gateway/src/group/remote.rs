//! A talk group on a node of a cluster (docs/CLUSTER.md).
//!
//! One node arbitrates each group: the group's *owner*, chosen by
//! rendezvous hashing over the live nodes (`ptt_gateway_core::cluster`).
//! The owner's machine holds every member of the group, wherever it is
//! connected (a member elsewhere is a [`Reach::Remote`]), and decides the
//! floor, presence and late entry exactly as a single node does; its
//! messages for members on other nodes travel to those nodes' inboxes in
//! one [`Envelope::Deliver`] per node and step, with the burst now talking.
//!
//! Every other node keeps only its own members: it sends their joins,
//! leaves, talk keys and releases to the owner, delivers what the owner
//! sends back, and takes the current burst from it for its fan-out
//! snapshot. A node grants nothing it may not (`Arbiter::Me` is needed, see
//! the core's rules); a talk key it cannot take to an arbiter is refused
//! at once with `ARBITER_UNAVAILABLE`.
//!
//! Voice: the talker's node relays a frame to its own listeners and
//! publishes it once on the group's subject; every node with listeners in
//! the group (and the owner, which records the group) subscribes to it and
//! relays it to its own. Frames from other nodes are not checked against
//! the floor again: the sending node admitted them by the floor its
//! arbiter told it, and nodes trust each other (NATS authenticates them).
//!
//! When the live set changes, every group looks again at its owner: a node
//! that lost the group suspends its floor (the holder is told
//! `ARBITER_LOST`) and forgets its machine; a node that gained it starts a
//! fresh machine with its own members, and the other nodes attach theirs
//! to it again; members of nodes that left are taken offline. A burst that
//! a dead arbiter granted ends with `ARBITER_LOST`, told by the talker's
//! own node.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use ptt_codec::{Class, DenyCause, RevokeCause, ServerMsg, TerminalId, VoiceHeader};
use ptt_gateway_core::cluster::{Arbiter, NodeName};
use ptt_gateway_core::group as rules;

use super::{Group, Member, Reach, Receiver, Talker};
use crate::cluster::wire::{self, Envelope};
use crate::cluster::Cluster;
use crate::fanout;
use crate::link::Link;
use crate::metrics::Metrics;

/// A group's state as a cluster node.
#[derive(Debug)]
pub(crate) struct Clustered {
    cluster: Arc<Cluster>,
    /// Members connected to this node, whoever arbitrates.
    local: Mutex<BTreeMap<TerminalId, Member>>,
    /// The node the local members were last attached to: the owner as of
    /// the last change of the live set this group saw.
    owner: Mutex<NodeName>,
    /// Whether that is this node (the group's machine is authoritative).
    owning: AtomicBool,
    /// The burst the owner last told of, when the owner is another node.
    remote_talker: Mutex<Option<Talker>>,
    /// The task relaying the group's voice from other nodes, while wanted.
    voice: Mutex<Option<tokio::task::AbortHandle>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each is replaced or edited in one statement; a panic cannot leave
    // it half-changed.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Clustered {
    /// The cluster handle.
    pub(crate) fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The members connected here, as fan-out receivers.
    pub(super) fn receivers(&self) -> Arc<[Receiver<Link>]> {
        lock(&self.local)
            .iter()
            .map(|(t, m)| Receiver {
                terminal: *t,
                sink: m.link.conn.clone(),
            })
            .collect()
    }

    /// The burst the owner last told of, if another node owns the group.
    pub(super) fn remote_talker(&self) -> Option<Talker> {
        *lock(&self.remote_talker)
    }

    fn owner(&self) -> NodeName {
        lock(&self.owner).clone()
    }

    fn owning(&self) -> bool {
        self.owning.load(Ordering::Acquire)
    }
}

/// Messages for members on other nodes, gathered during one step.
#[derive(Debug, Default)]
pub(super) struct Outgoing {
    per_node: Vec<(NodeName, Vec<(u32, String)>)>,
}

impl Outgoing {
    /// Adds `msg` for `to`, on `node`.
    pub(super) fn push(&mut self, node: &NodeName, to: TerminalId, msg: &ServerMsg) {
        let entry = wire::encode_msg(to, msg);
        match self.per_node.iter_mut().find(|(n, _)| n == node) {
            Some((_, list)) => list.push(entry),
            None => self.per_node.push((node.clone(), vec![entry])),
        }
    }

    /// Sends one envelope per node, with the burst talking now.
    pub(super) fn send(
        self,
        cluster: &Cluster,
        group: ptt_codec::GroupId,
        talker: Option<(u32, u16)>,
    ) {
        for (node, messages) in self.per_node {
            cluster.send(
                &node,
                &Envelope::Deliver {
                    group: group.0,
                    talker,
                    messages,
                },
            );
        }
    }
}

impl Group {
    /// Makes the group a cluster node's: call once, before anyone joins.
    pub(crate) fn join_cluster(self: &Arc<Self>, cluster: Arc<Cluster>) {
        let owner = cluster.owner(self.id);
        let owning = owner == *cluster.me();
        let _ = self.cluster.set(Clustered {
            cluster,
            local: Mutex::default(),
            owner: Mutex::new(owner),
            owning: AtomicBool::new(owning),
            remote_talker: Mutex::default(),
            voice: Mutex::default(),
        });
    }

    /// Whether this node's machine decides the group's floor: always alone,
    /// and on a cluster node that owns the group.
    pub(crate) fn arbitrates(&self) -> bool {
        self.cluster.get().is_none_or(Clustered::owning)
    }

    /// Publishes a frame this node relayed for the other nodes' listeners.
    /// Call after relaying it here.
    #[inline]
    pub fn forward_voice(&self, sender: TerminalId, datagram: &[u8]) {
        if let Some(c) = self.cluster.get() {
            let stamped = ptt_codec::voice::stamp_speaker(datagram, sender);
            c.cluster.publish_voice(self.id, stamped);
        }
    }

    pub(super) fn attach_clustered(
        self: &Arc<Self>,
        c: &Clustered,
        terminal: TerminalId,
        member: Member,
        announce: bool,
    ) {
        lock(&c.local).insert(terminal, member.clone());
        if c.owning() {
            self.attach_here(terminal, member, announce);
        } else {
            c.cluster.send(
                &c.owner(),
                &attach(self.id, c.cluster.me(), terminal, &member, announce),
            );
            self.republish();
        }
        self.refresh_voice();
    }

    pub(super) fn detach_clustered(
        self: &Arc<Self>,
        c: &Clustered,
        terminal: TerminalId,
        session: u64,
    ) -> bool {
        let removed = {
            let mut local = lock(&c.local);
            match local.get(&terminal) {
                Some(m) if m.link.session == session => local.remove(&terminal).is_some(),
                _ => false,
            }
        };
        if !removed {
            return false;
        }
        if c.owning() {
            self.step(|m, now| m.handle_detach(now, terminal, session));
        } else {
            let envelope = Envelope::Detach {
                group: self.id.0,
                terminal: terminal.0,
                session,
            };
            c.cluster.send(&c.owner(), &envelope);
            self.republish();
        }
        self.refresh_voice();
        true
    }

    pub(super) fn request_clustered(
        self: &Arc<Self>,
        c: &Clustered,
        terminal: TerminalId,
        class: Class,
        limit: Option<Duration>,
    ) {
        match c.cluster.arbiter(self.id) {
            Arbiter::Me if c.owning() => {
                self.step(|m, now| m.handle_request(now, terminal, class, limit));
            }
            Arbiter::Node(node) if !c.owning() => {
                let envelope = Envelope::Request {
                    group: self.id.0,
                    terminal: terminal.0,
                    from: c.cluster.me().to_string(),
                    class: class.code(),
                    limit_ms: limit.map(|l| u64::try_from(l.as_millis()).unwrap_or(u64::MAX)),
                };
                c.cluster.send(&node, &envelope);
            }
            // No quorum, taking over, or a change of the live set this
            // group has not handled yet: nobody can grant now.
            _ => {
                Metrics::add(&self.metrics.cluster_floor_unavailable, 1);
                self.requests().remove(&terminal);
                let member = lock(&c.local).get(&terminal).map(|m| m.link.clone());
                if let Some(link) = member {
                    self.send_local(&link, unavailable(self.id));
                }
            }
        }
    }

    pub(super) fn release_clustered(self: &Arc<Self>, c: &Clustered, terminal: TerminalId) {
        if c.owning() {
            self.step(|m, now| m.handle_release(now, terminal));
        } else {
            let envelope = Envelope::Release {
                group: self.id.0,
                terminal: terminal.0,
            };
            c.cluster.send(&c.owner(), &envelope);
        }
    }

    /// Carries out an envelope another node sent about this group.
    pub(crate) fn on_envelope(self: &Arc<Self>, envelope: Envelope) {
        let Some(c) = self.cluster.get() else { return };
        let owning = c.owning();
        match envelope {
            Envelope::Attach {
                terminal,
                from,
                talk,
                priority,
                name,
                session,
                announce,
                ..
            } if owning => {
                let member = rules::Member {
                    talk,
                    priority,
                    name: name.into(),
                    session,
                    link: Arc::new(Reach::Remote(from.into())),
                };
                let terminal = TerminalId(terminal);
                self.step(|m, now| m.handle_attach(now, terminal, member, announce));
                self.refresh_voice();
            }
            Envelope::Detach {
                terminal, session, ..
            } if owning => {
                let terminal = TerminalId(terminal);
                self.step(|m, now| m.handle_detach(now, terminal, session));
                self.refresh_voice();
            }
            Envelope::Request {
                terminal,
                from,
                class,
                limit_ms,
                ..
            } => {
                let terminal = TerminalId(terminal);
                match wire::class(class) {
                    Some(class) if owning && c.cluster.arbiter(self.id) == Arbiter::Me => {
                        let limit = limit_ms.map(Duration::from_millis);
                        self.step(|m, now| m.handle_request(now, terminal, class, limit));
                    }
                    _ => {
                        Metrics::add(&self.metrics.cluster_floor_unavailable, 1);
                        let mut out = Outgoing::default();
                        out.push(&NodeName::from(from), terminal, &unavailable(self.id));
                        out.send(&c.cluster, self.id, None);
                    }
                }
            }
            Envelope::Release { terminal, .. } if owning => {
                let terminal = TerminalId(terminal);
                self.step(|m, now| m.handle_release(now, terminal));
            }
            Envelope::Deliver {
                talker, messages, ..
            } if !owning => self.deliver_remote(c, talker, messages),
            // Sent to this node as the owner it no longer is (or not yet
            // is): the sender resends everything once it sees the change.
            _ => Metrics::add(&self.metrics.cluster_envelopes_dropped, 1),
        }
    }

    /// Delivers the owner's messages to members connected here and takes
    /// its burst for the fan-out.
    fn deliver_remote(
        &self,
        c: &Clustered,
        talker: Option<(u32, u16)>,
        messages: Vec<(u32, String)>,
    ) {
        let talker = talker.map(|(terminal, burst)| Talker {
            terminal: TerminalId(terminal),
            burst,
        });
        // The machine's lock, then `delivery`, as in `step`: deliveries keep
        // their order and the two locks are always taken in one order.
        let machine = self.lock();
        let _delivery = self.delivery.lock().unwrap_or_else(|e| e.into_inner());
        let changed = {
            let mut current = lock(&c.remote_talker);
            std::mem::replace(&mut *current, talker) != talker
        };
        if changed {
            // Stored before the messages, as on the owner (see `deliver`).
            self.fanout.store(self.snapshot(&machine));
        }
        drop(machine);
        for (to, frame) in messages {
            let to = TerminalId(to);
            let msg = match wire::decode_msg(&frame) {
                Ok(msg) => msg,
                Err(e) => {
                    Metrics::add(&self.metrics.cluster_malformed, 1);
                    tracing::warn!(group = %self.id, "a message from the arbiter: {e}");
                    continue;
                }
            };
            let Some(link) = lock(&c.local).get(&to).map(|m| m.link.clone()) else {
                continue;
            };
            match msg {
                ServerMsg::FloorGranted { .. } => {
                    if let Some(pressed) = self.requests().remove(&to) {
                        self.metrics.floor_grant_latency.record(pressed.elapsed());
                    }
                }
                ServerMsg::FloorDenied { .. } => {
                    self.requests().remove(&to);
                }
                _ => {}
            }
            self.count(to, &msg);
            self.send_local(&link, msg);
        }
    }

    /// This node shuts down: if it arbitrates the group, the floor stops
    /// (the holder is told `ARBITER_LOST`, its members elsewhere through
    /// their nodes) and nothing more is granted here.
    pub(crate) fn leave_cluster(self: &Arc<Self>) {
        let Some(c) = self.cluster.get() else { return };
        if c.owning.swap(false, Ordering::AcqRel) {
            self.step(|m, now| m.handle_suspend(now));
        }
    }

    /// Looks again at the group's owner after the live set changed (`left`:
    /// the nodes that left or restarted).
    pub(crate) fn on_view_change(self: &Arc<Self>, left: &[NodeName]) {
        let Some(c) = self.cluster.get() else { return };
        if c.cluster.has_left() {
            return;
        }
        let me = c.cluster.me().clone();
        let owner = c.cluster.owner(self.id);
        let previous = std::mem::replace(&mut *lock(&c.owner), owner.clone());
        let was_owning = c.owning();
        let owning = owner == me;
        if previous != owner || (!owning && left.contains(&owner)) {
            if was_owning {
                // No longer ours: stop its floor (members are told), then
                // forget the machine; the new owner starts afresh.
                self.step(|m, now| m.handle_suspend(now));
                *self.lock() = super::Machine::new(
                    self.id,
                    self.name.clone(),
                    self.floor.clone(),
                    self.presence,
                );
            }
            c.owning.store(owning, Ordering::Release);
            self.end_remote_burst(c);
            let local: Vec<(TerminalId, Member)> = lock(&c.local)
                .iter()
                .map(|(t, m)| (*t, m.clone()))
                .collect();
            for (terminal, member) in local {
                if owning {
                    self.attach_here(terminal, member, false);
                } else {
                    c.cluster
                        .send(&owner, &attach(self.id, &me, terminal, &member, false));
                }
            }
            self.republish();
        } else if owning {
            // Still ours: members of nodes that left are offline.
            let gone: Vec<(TerminalId, u64)> = self
                .lock()
                .members()
                .filter(|(_, m)| matches!(&*m.link, Reach::Remote(n) if left.contains(n)))
                .map(|(t, m)| (t, m.session))
                .collect();
            for (terminal, session) in gone {
                self.step(|m, now| m.handle_detach(now, terminal, session));
            }
            let lost = !matches!(c.cluster.arbiter(self.id), Arbiter::Me)
                && self.lock().holder().is_some();
            if lost {
                Metrics::add(&self.metrics.cluster_floor_lost, 1);
                self.step(|m, now| m.handle_suspend(now));
            }
        }
        self.refresh_voice();
    }

    /// The owner that granted the current burst is gone: this node tells
    /// its own members, since the owner cannot.
    fn end_remote_burst(&self, c: &Clustered) {
        let Some(talker) = lock(&c.remote_talker).take() else {
            return;
        };
        Metrics::add(&self.metrics.cluster_floor_lost, 1);
        let local: Vec<(TerminalId, super::Contact)> = lock(&c.local)
            .iter()
            .map(|(t, m)| (*t, m.link.clone()))
            .collect();
        for (terminal, link) in local {
            let msg = if terminal == talker.terminal {
                ServerMsg::FloorRevoked {
                    group: self.id,
                    burst: talker.burst,
                    cause: RevokeCause::ArbiterLost,
                }
            } else {
                ServerMsg::FloorIdle { group: self.id }
            };
            self.count(terminal, &msg);
            self.send_local(&link, msg);
        }
    }

    /// Stores a fresh fan-out snapshot (members here or the remote burst
    /// changed outside a step of the machine).
    fn republish(&self) {
        let machine = self.lock();
        let snapshot = self.snapshot(&machine);
        self.fanout.store(snapshot);
    }

    /// Subscribes to the group's voice from other nodes while this node
    /// has listeners in it, or owns it with members elsewhere (to record);
    /// unsubscribes otherwise.
    fn refresh_voice(self: &Arc<Self>) {
        let Some(c) = self.cluster.get() else { return };
        let here = lock(&c.local).len();
        let wanted = here > 0 || (c.owning() && self.lock().online() > here);
        let mut task = lock(&c.voice);
        match (&*task, wanted) {
            (None, true) => {
                let group = Arc::clone(self);
                let handle = tokio::spawn(async move {
                    let Some(c) = group.cluster.get() else { return };
                    let mut sub = match c.cluster.voice(group.id).await {
                        Ok(sub) => sub,
                        Err(e) => {
                            tracing::error!(group = %group.id, "voice from other nodes: {e}");
                            return;
                        }
                    };
                    while let Some(msg) = sub.next().await {
                        group.relay_remote(&msg.payload);
                    }
                });
                *task = Some(handle.abort_handle());
            }
            (Some(handle), false) => {
                handle.abort();
                *task = None;
            }
            _ => {}
        }
    }

    /// Relays a frame another node published to the listeners here.
    fn relay_remote(&self, datagram: &Bytes) {
        let m = &self.metrics;
        Metrics::add(&m.cluster_voice_in, 1);
        let Ok((header, _)) = VoiceHeader::decode(datagram) else {
            Metrics::add(&m.cluster_malformed, 1);
            return;
        };
        let snapshot = self.fanout();
        let out = fanout::relay(&snapshot, TerminalId(header.speaker), datagram);
        Metrics::add(&m.cluster_voice_delivered, out.delivered as u64);
        if out.failed > 0 {
            Metrics::add(&m.voice_send_failed, out.failed as u64);
        }
        self.record(&header, datagram);
    }
}

fn attach(
    group: ptt_codec::GroupId,
    me: &NodeName,
    terminal: TerminalId,
    member: &Member,
    announce: bool,
) -> Envelope {
    Envelope::Attach {
        group: group.0,
        terminal: terminal.0,
        from: me.to_string(),
        talk: member.talk,
        priority: member.priority,
        name: member.name.to_string(),
        session: member.link.session,
        announce,
    }
}

fn unavailable(group: ptt_codec::GroupId) -> ServerMsg {
    ServerMsg::FloorDenied {
        group,
        cause: DenyCause::ArbiterUnavailable,
    }
}
