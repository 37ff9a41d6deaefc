//! Which gateway nodes are alive, and which node arbitrates each talk group,
//! as a sans-I/O state machine stepped with the time.
//!
//! Every node publishes a heartbeat on a NATS core subject every
//! [`Config::heartbeat`]; each node feeds the heartbeats it hears into
//! [`Membership::handle_heartbeat`]. A node is *live* while its last heartbeat
//! is younger than [`Config::timeout`]; a heartbeat with a new incarnation
//! (the node restarted) counts as a departure and a return.
//!
//! The arbiter of a group is the live node with the highest rendezvous
//! score for the group ([`owner`]): every node computes it alone, a node's
//! death moves only its own groups, spread evenly over the survivors.
//!
//! Arbitration fails closed. A node may grant the floor of a group only
//! when [`Membership::arbiter`] says [`Arbiter::Me`], which needs:
//! - a **quorum**: the node hears a strict majority of [`Config::size`]
//!   nodes, itself included. A node cut off from the others (its NATS
//!   server partitioned away, or NATS gone) loses it after `timeout` and
//!   grants nothing, so the majority side may take its groups over.
//! - **settled ownership**: the node owned the group in every view it held
//!   during the last [`Config::takeover`]. A node that takes a group over
//!   waits that long, which covers the time the previous owner needs to
//!   notice it lost the group (its heartbeats stopped reaching us at most
//!   `timeout` before we dropped it, and it drops its quorum within
//!   `timeout` of being cut off). A node that just started waits too.
//!
//! Why heartbeats on core subjects rather than a JetStream key-value
//! bucket: JetStream writes stall for 4-8 s while its stream leaders are
//! re-elected after a NATS server dies (measured; docs/CLUSTER.md), and a
//! liveness record kept there expired during every such election, which
//! would hand every group to a new arbiter and drop every call in the
//! cluster. Core pub/sub only pauses for a client's reconnect (~300 ms).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ptt_codec::GroupId;

/// A gateway node's name, unique in its cluster.
pub type NodeName = Arc<str>;

/// Settings of the cluster's membership.
#[derive(Debug, Clone)]
pub struct Config {
    /// How often each node publishes its heartbeat.
    pub heartbeat: Duration,
    /// A node not heard from for this long is dead.
    pub timeout: Duration,
    /// A node newly owning a group waits this long before granting in it.
    pub takeover: Duration,
    /// The number of gateway nodes the cluster is built with; a node
    /// arbitrates only while it hears a strict majority of them.
    pub size: usize,
}

/// A node's heartbeat, as heard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    /// Who sent it.
    pub node: NodeName,
    /// Chosen at each start of the node: a new one means it restarted.
    pub incarnation: u64,
    /// The node is shutting down and has stopped granting: its groups may
    /// be taken over at once, without waiting out `takeover`.
    pub leaving: bool,
}

/// What one node may do in one group now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arbiter {
    /// This node arbitrates the group: it may grant its floor.
    Me,
    /// Another node does; floor requests go there.
    Node(NodeName),
    /// Nobody may grant right now, from where this node stands: no quorum,
    /// or ownership moved here less than `takeover` ago.
    Unavailable(Unavailable),
}

/// Why a group has no arbiter this node can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// This node hears fewer than a majority of the cluster's nodes.
    NoQuorum,
    /// The group moved to this node moments ago; it waits out `takeover`.
    TakingOver,
}

/// A change of the live set: who left (or restarted) and who arrived.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Change {
    /// Nodes that were live and are not any more, or restarted.
    pub left: Vec<NodeName>,
    /// Nodes that are live now and were not (restarted ones included).
    pub joined: Vec<NodeName>,
}

impl Change {
    /// Whether anything changed.
    pub fn is_empty(&self) -> bool {
        self.left.is_empty() && self.joined.is_empty()
    }
}

#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    incarnation: u64,
}

/// The live nodes as this node sees them, and the views of the recent past.
#[derive(Debug)]
pub struct Membership {
    me: NodeName,
    config: Config,
    /// Other nodes heard, with their last heartbeat.
    seen: BTreeMap<NodeName, Seen>,
    /// The live set (sorted, this node included) as last computed.
    live: Vec<NodeName>,
    /// Earlier live sets with the time each was replaced, oldest first;
    /// kept for `takeover`.
    history: VecDeque<(Instant, Vec<NodeName>)>,
    /// When this node started: it owns nothing settled before
    /// `started + takeover`.
    started: Instant,
    /// Nodes that announced their departure, with the incarnation that
    /// left: a late heartbeat of it is ignored.
    departed: BTreeMap<NodeName, u64>,
}

impl Membership {
    /// The membership of node `me`, started at `now`, hearing nobody yet.
    pub fn new(me: NodeName, config: Config, now: Instant) -> Self {
        Self {
            live: vec![me.clone()],
            me,
            config,
            seen: BTreeMap::new(),
            history: VecDeque::new(),
            started: now,
            departed: BTreeMap::new(),
        }
    }

    /// This node's name.
    pub fn me(&self) -> &NodeName {
        &self.me
    }

    /// Takes a heartbeat heard at `now`. Returns the change of the live set
    /// it caused (a node arriving, or restarting), if any. Own heartbeats
    /// are ignored.
    pub fn handle_heartbeat(&mut self, now: Instant, heartbeat: Heartbeat) -> Change {
        if heartbeat.node == self.me
            || self.departed.get(&heartbeat.node) == Some(&heartbeat.incarnation)
        {
            return Change::default();
        }
        if heartbeat.leaving {
            return self.depart(now, heartbeat);
        }
        self.departed.remove(&heartbeat.node);
        let mut change = Change::default();
        match self.seen.get_mut(&heartbeat.node) {
            Some(seen) if seen.incarnation == heartbeat.incarnation => seen.at = now,
            Some(seen) => {
                // Restarted: it lost every group's state it held.
                let live = now.saturating_duration_since(seen.at) < self.config.timeout;
                *seen = Seen {
                    at: now,
                    incarnation: heartbeat.incarnation,
                };
                if live {
                    change.left.push(heartbeat.node.clone());
                }
            }
            None => {
                self.seen.insert(
                    heartbeat.node.clone(),
                    Seen {
                        at: now,
                        incarnation: heartbeat.incarnation,
                    },
                );
            }
        }
        let mut recomputed = self.recompute(now);
        if !change.left.is_empty() {
            // Left and came back in the same step: both, so that callers
            // resend what the node forgot.
            recomputed.left.extend(change.left);
            recomputed.joined.push(heartbeat.node);
            self.push_history(now);
        }
        recomputed
    }

    /// A node announced it leaves: gone at once, and as it grants nothing
    /// any more, the recent views forget it was ever there, so that its
    /// groups are taken over without waiting out `takeover`.
    fn depart(&mut self, now: Instant, heartbeat: Heartbeat) -> Change {
        self.seen.remove(&heartbeat.node);
        self.departed
            .insert(heartbeat.node.clone(), heartbeat.incarnation);
        for (_, view) in &mut self.history {
            view.retain(|n| *n != heartbeat.node);
        }
        let change = self.recompute(now);
        if let Some((_, last)) = self.history.back_mut() {
            last.retain(|n| *n != heartbeat.node);
        }
        change
    }

    /// Expires nodes not heard from for `timeout`. Call at
    /// [`Membership::poll_timeout`] (early calls are harmless).
    pub fn handle_timeout(&mut self, now: Instant) -> Change {
        self.recompute(now)
    }

    /// When the next node would expire, if nothing is heard from it.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.seen
            .iter()
            .filter(|(n, _)| self.live.contains(n))
            .map(|(_, s)| s.at + self.config.timeout)
            .min()
    }

    /// The live nodes, sorted, this node included.
    pub fn live(&self) -> &[NodeName] {
        &self.live
    }

    /// Whether this node hears a strict majority of the cluster.
    pub fn has_quorum(&self) -> bool {
        self.live.len() > self.config.size / 2
    }

    /// Who arbitrates `group` now, as this node sees it.
    pub fn arbiter(&self, now: Instant, group: GroupId) -> Arbiter {
        if !self.has_quorum() {
            return Arbiter::Unavailable(Unavailable::NoQuorum);
        }
        let current = owner(group, &self.live);
        if *current != self.me {
            return Arbiter::Node(current.clone());
        }
        if now < self.started + self.config.takeover {
            return Arbiter::Unavailable(Unavailable::TakingOver);
        }
        let horizon = now.checked_sub(self.config.takeover);
        let recent = self
            .history
            .iter()
            .filter(|(replaced, _)| horizon.is_none_or(|h| *replaced > h));
        for (_, view) in recent {
            if view.is_empty() || *owner(group, view) != self.me {
                return Arbiter::Unavailable(Unavailable::TakingOver);
            }
        }
        Arbiter::Me
    }

    fn recompute(&mut self, now: Instant) -> Change {
        let timeout = self.config.timeout;
        let mut live: Vec<NodeName> = self
            .seen
            .iter()
            .filter(|(_, s)| now.saturating_duration_since(s.at) < timeout)
            .map(|(n, _)| n.clone())
            .chain(std::iter::once(self.me.clone()))
            .collect();
        live.sort();
        let change = Change {
            left: self
                .live
                .iter()
                .filter(|n| !live.contains(n))
                .cloned()
                .collect(),
            joined: live
                .iter()
                .filter(|n| !self.live.contains(n))
                .cloned()
                .collect(),
        };
        if !change.is_empty() {
            self.push_history(now);
            self.live = live;
        }
        // Forget the dead after a while, so a fleet of restarts does not
        // grow the map (kept for a timeout so a late heartbeat of the same
        // incarnation is recognised).
        self.seen
            .retain(|_, s| now.saturating_duration_since(s.at) < timeout * 8);
        change
    }

    fn push_history(&mut self, now: Instant) {
        self.history.push_back((now, self.live.clone()));
        let keep = self.config.takeover;
        while let Some((at, _)) = self.history.front() {
            if now.saturating_duration_since(*at) > keep {
                self.history.pop_front();
            } else {
                break;
            }
        }
    }
}

/// The node of `live` that arbitrates `group`: the highest rendezvous
/// (highest random weight) score. `live` must not be empty.
pub fn owner(group: GroupId, live: &[NodeName]) -> &NodeName {
    live.iter()
        .max_by_key(|n| score(group, n))
        .expect("a live set holds at least this node")
}

/// The rendezvous score of `node` for `group`: FNV-1a over the name and the
/// group id, finished with a 64-bit mix so near names spread.
fn score(group: GroupId, node: &str) -> (u64, &str) {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.bytes().chain(group.0.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // splitmix64's finaliser.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    // Ties (never seen in practice) broken by name, so all nodes agree.
    (h, node)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            heartbeat: Duration::from_millis(500),
            timeout: Duration::from_secs(2),
            takeover: Duration::from_secs(2),
            size: 3,
        }
    }

    fn name(s: &str) -> NodeName {
        Arc::from(s)
    }

    fn hb(node: &str, incarnation: u64) -> Heartbeat {
        Heartbeat {
            node: name(node),
            incarnation,
            leaving: false,
        }
    }

    /// A membership of node `me` that has heard `others` and settled.
    fn settled(me: &str, others: &[&str]) -> (Membership, Instant) {
        let t0 = Instant::now();
        let mut m = Membership::new(name(me), config(), t0);
        for o in others {
            m.handle_heartbeat(t0, hb(o, 1));
        }
        let now = t0 + Duration::from_secs(3);
        for o in others {
            m.handle_heartbeat(now, hb(o, 1));
        }
        (m, now)
    }

    #[test]
    fn every_node_computes_the_same_owner_whatever_the_order() {
        let a = [name("a"), name("b"), name("c")];
        let b = [name("c"), name("a"), name("b")];
        for g in 0..500 {
            assert_eq!(owner(GroupId(g), &a), owner(GroupId(g), &b));
        }
    }

    #[test]
    fn groups_spread_over_nodes_and_a_death_moves_only_the_dead_nodes_groups() {
        let three = [name("a"), name("b"), name("c")];
        let two = [name("a"), name("c")];
        let mut per_node = BTreeMap::<NodeName, usize>::new();
        for g in 0..3000 {
            let before = owner(GroupId(g), &three).clone();
            *per_node.entry(before.clone()).or_default() += 1;
            let after = owner(GroupId(g), &two);
            if &*before != "b" {
                assert_eq!(&before, after, "group {g} moved though its owner lived");
            }
        }
        for (node, n) in per_node {
            assert!((800..1200).contains(&n), "{node} owns {n} of 3000");
        }
    }

    #[test]
    fn a_node_alone_has_no_quorum_and_grants_nothing() {
        let t0 = Instant::now();
        let m = Membership::new(name("a"), config(), t0);
        assert_eq!(
            m.arbiter(t0 + Duration::from_secs(10), GroupId(1)),
            Arbiter::Unavailable(Unavailable::NoQuorum)
        );
    }

    #[test]
    fn a_started_node_waits_out_takeover_before_granting() {
        let t0 = Instant::now();
        let mut m = Membership::new(name("a"), config(), t0);
        m.handle_heartbeat(t0, hb("b", 1));
        let mine = (0..100)
            .map(GroupId)
            .find(|g| &**owner(*g, m.live()) == "a")
            .unwrap();
        assert_eq!(
            m.arbiter(t0 + Duration::from_millis(100), mine),
            Arbiter::Unavailable(Unavailable::TakingOver)
        );
        let later = t0 + Duration::from_millis(2100);
        m.handle_heartbeat(later, hb("b", 1));
        assert_eq!(m.arbiter(later, mine), Arbiter::Me);
    }

    #[test]
    fn a_dead_nodes_groups_are_taken_over_after_timeout_plus_takeover() {
        let (mut m, t) = settled("a", &["b", "c"]);
        // A group of b's that moves to a when b dies.
        let moved = (0..1000)
            .map(GroupId)
            .find(|g| &**owner(*g, m.live()) == "b" && &**owner(*g, &[name("a"), name("c")]) == "a")
            .unwrap();
        assert_eq!(m.arbiter(t, moved), Arbiter::Node(name("b")));
        // b falls silent at t; c goes on.
        let mut now = t;
        let mut left_at = None;
        while now < t + Duration::from_secs(6) {
            now += Duration::from_millis(100);
            let heard = m.handle_heartbeat(now, hb("c", 1));
            let expired = m.handle_timeout(now);
            if heard.left.contains(&name("b")) || expired.left.contains(&name("b")) {
                left_at = Some(now);
            }
            match m.arbiter(now, moved) {
                Arbiter::Me => break,
                Arbiter::Node(n) => assert_eq!(&*n, "b"),
                Arbiter::Unavailable(u) => assert_eq!(u, Unavailable::TakingOver),
            }
        }
        let left_at = left_at.expect("b expired");
        assert_eq!(left_at, t + Duration::from_secs(2));
        assert_eq!(m.arbiter(now, moved), Arbiter::Me);
        assert!(now >= left_at + Duration::from_secs(2));
        assert!(now <= left_at + Duration::from_millis(2100));
    }

    #[test]
    fn an_isolated_owner_loses_quorum_before_the_others_take_over() {
        // a owns group g; a is cut off from b and c at t.
        let (mut a, t) = settled("a", &["b", "c"]);
        let (mut b, _) = settled("b", &["a", "c"]);
        let (mut c, _) = settled("c", &["a", "b"]);
        let g = (0..1000)
            .map(GroupId)
            .find(|g| &**owner(*g, a.live()) == "a")
            .unwrap();
        assert_eq!(a.arbiter(t, g), Arbiter::Me);
        let mut a_stopped = None;
        let mut taken_over = None;
        let mut now = t;
        while now < t + Duration::from_secs(8) {
            now += Duration::from_millis(50);
            a.handle_timeout(now);
            b.handle_heartbeat(now, hb("c", 1));
            c.handle_heartbeat(now, hb("b", 1));
            b.handle_timeout(now);
            c.handle_timeout(now);
            if a_stopped.is_none() && a.arbiter(now, g) != Arbiter::Me {
                a_stopped = Some(now);
            }
            let others = [b.arbiter(now, g), c.arbiter(now, g)];
            if taken_over.is_none() && others.contains(&Arbiter::Me) {
                taken_over = Some(now);
            }
        }
        let a_stopped = a_stopped.expect("a stops");
        assert_eq!(
            a.arbiter(now, g),
            Arbiter::Unavailable(Unavailable::NoQuorum)
        );
        let taken_over = taken_over.expect("the majority takes g over");
        assert!(
            taken_over >= a_stopped + Duration::from_secs(2),
            "taken over at {:?}, a stopped at {:?}",
            taken_over - t,
            a_stopped - t
        );
        assert!(taken_over <= t + Duration::from_millis(4100));
    }

    #[test]
    fn a_restart_is_a_departure_and_a_return() {
        let (mut m, t) = settled("a", &["b", "c"]);
        let change = m.handle_heartbeat(t + Duration::from_millis(300), hb("b", 2));
        assert_eq!(change.left, vec![name("b")]);
        assert_eq!(change.joined, vec![name("b")]);
        assert_eq!(m.live().len(), 3);
        // Groups that b owns are b's again, but a group a took over in the
        // meantime would have to wait: b's restart is a view change.
        let again = m.handle_heartbeat(t + Duration::from_millis(400), hb("b", 2));
        assert!(again.is_empty());
    }

    #[test]
    fn a_node_that_announces_its_departure_is_taken_over_at_once() {
        let (mut m, t) = settled("a", &["b", "c"]);
        let moved = (0..1000)
            .map(GroupId)
            .find(|g| &**owner(*g, m.live()) == "b" && &**owner(*g, &[name("a"), name("c")]) == "a")
            .unwrap();
        let now = t + Duration::from_millis(100);
        let change = m.handle_heartbeat(
            now,
            Heartbeat {
                leaving: true,
                ..hb("b", 1)
            },
        );
        assert_eq!(change.left, vec![name("b")]);
        assert_eq!(m.arbiter(now, moved), Arbiter::Me);
        // A late heartbeat of the incarnation that left brings nothing back.
        assert!(m.handle_heartbeat(now, hb("b", 1)).is_empty());
        assert_eq!(m.live(), &[name("a"), name("c")]);
        // Its next start does, as a node to wait for.
        let back = m.handle_heartbeat(now, hb("b", 2));
        assert_eq!(back.joined, vec![name("b")]);
    }

    #[test]
    fn own_heartbeats_and_repeats_change_nothing() {
        let (mut m, t) = settled("a", &["b", "c"]);
        assert!(m.handle_heartbeat(t, hb("a", 9)).is_empty());
        assert!(m.handle_heartbeat(t, hb("b", 1)).is_empty());
        assert_eq!(m.live(), &[name("a"), name("b"), name("c")]);
    }

    #[test]
    fn the_dead_are_forgotten() {
        let (mut m, t) = settled("a", &["b", "c"]);
        m.handle_timeout(t + Duration::from_secs(60));
        assert_eq!(m.live(), &[name("a")]);
        assert!(m.seen.is_empty());
        assert_eq!(m.poll_timeout(), None);
    }
}
