//! The gateway's side of a cluster of nodes joined through NATS
//! (docs/CLUSTER.md): the connection, the heartbeats that tell which nodes
//! are alive (rules in `ptt_gateway_core::cluster`), each node's inbox, and
//! the per-group voice subjects.
//!
//! Subjects, all under `ptt.`:
//! - `ptt.hb`: every node's heartbeat ([`wire::Heartbeat`]), every
//!   `cluster.heartbeat_ms`.
//! - `ptt.node.<name>`: a node's inbox ([`wire::Envelope`]): a group's
//!   members and floor requests sent to its arbiter, and the arbiter's
//!   messages for the terminals on the node.
//! - `ptt.voice.<group>`: the group's relayed voice, the gateway's stamped
//!   datagram as it is, published once by the talker's node; a node
//!   subscribes only while it has listeners in the group (or arbitrates a
//!   group with members elsewhere, to record its bursts).
//!
//! The connection does not echo a node's own messages back to it.
//!
//! This module only moves messages; what they mean to a group is in
//! `crate::group`, and the hub routes the inbox to the groups.

pub(crate) mod alerts;
pub(crate) mod wire;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use bytes::Bytes;
use ptt_codec::GroupId;
use ptt_gateway_core::cluster::{Arbiter, Change, Heartbeat, Membership, NodeName};
use tokio::sync::mpsc;

use crate::config;
use crate::metrics::Metrics;

/// The subject of every node's heartbeat.
const HEARTBEAT: &str = "ptt.hb";
/// The subject of every terminal's position reports, from whichever node.
const POSITIONS: &str = "ptt.pos";
/// The subject of which terminals are connected to which node.
const PRESENCE: &str = "ptt.presence";

/// Joining the cluster failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No NATS server answered.
    #[error("connecting to NATS at {urls}: {source}")]
    Connect {
        /// The servers tried.
        urls: String,
        /// Why.
        source: async_nats::ConnectError,
    },
    /// A subscription was refused.
    #[error("subscribing to {subject}: {source}")]
    Subscribe {
        /// The subject.
        subject: String,
        /// Why.
        source: async_nats::SubscribeError,
    },
}

/// A node's place in the cluster: shared by the hub and every group.
#[derive(Debug)]
pub(crate) struct Cluster {
    me: NodeName,
    incarnation: u64,
    client: async_nats::Client,
    #[allow(dead_code)] // For the cluster's JetStream users (alerts).
    jetstream: jetstream::Context,
    membership: Mutex<Membership>,
    config: config::Cluster,
    metrics: Arc<Metrics>,
    /// Set by [`Cluster::leave`]: no more heartbeats.
    left: std::sync::atomic::AtomicBool,
    /// Receipts stored here that the stream did not acknowledge in time,
    /// published again in the background (`alerts.rs`, `share_later`).
    later: std::sync::OnceLock<mpsc::Sender<alerts::ReceiptRecord>>,
}

/// What the cluster hands the hub: changes of the live set, and envelopes
/// from other nodes, in the order they came.
#[derive(Debug)]
pub(crate) enum Event {
    /// Nodes left or joined; every group re-checks its arbiter.
    Changed(Change),
    /// An envelope for this node.
    Envelope(wire::Envelope),
    /// A terminal on another node reported its position.
    Position(ptt_codec::TerminalId, crate::location::Fix),
    /// Terminals connected to another node, or no longer.
    Presence(wire::Presence),
}

impl Cluster {
    /// Connects to NATS as node `config.node` and starts the heartbeat and
    /// inbox tasks; the hub reads their events from the receiver until the
    /// gateway stops. Call inside the runtime, once.
    pub(crate) async fn join(
        config: &config::Cluster,
        metrics: Arc<Metrics>,
    ) -> Result<(Arc<Self>, mpsc::Receiver<Event>), Error> {
        let me: NodeName = Arc::from(config.node.as_deref().unwrap_or("node"));
        let urls = config.nats.join(",");
        let mut options = async_nats::ConnectOptions::new();
        if !config.discover_servers {
            options = options.ignore_discovered_servers();
        }
        let client = options
            .name(format!("ptt-gateway {me}"))
            .no_echo()
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(2))
            // Voice is worthless late: keep the client's buffer for a
            // disconnected spell small (publishes are refused while
            // disconnected anyway, see `publish_voice`).
            .client_capacity(4096)
            .event_callback({
                let me = me.clone();
                move |event| {
                    let me = me.clone();
                    async move { tracing::info!(node = %me, "NATS: {event}") }
                }
            })
            .connect(config.nats.clone())
            .await
            .map_err(|source| Error::Connect {
                urls: urls.clone(),
                source,
            })?;
        let jetstream = jetstream::new(client.clone());
        let cluster = Arc::new(Self {
            incarnation: rand::random(),
            membership: Mutex::new(Membership::new(
                me.clone(),
                config.membership(),
                Instant::now(),
            )),
            me,
            client,
            jetstream,
            config: config.clone(),
            metrics,
            left: Default::default(),
            later: Default::default(),
        });
        let (events, rx) = mpsc::channel(4096);
        let heard = cluster.subscribe(HEARTBEAT.to_owned()).await?;
        let inbox = cluster.subscribe(inbox(&cluster.me)).await?;
        let positions = cluster.subscribe(POSITIONS.to_owned()).await?;
        let presence = cluster.subscribe(PRESENCE.to_owned()).await?;
        tokio::spawn(Arc::clone(&cluster).heartbeats());
        tokio::spawn(Arc::clone(&cluster).listen(heard, inbox, [positions, presence], events));
        tracing::info!(node = %cluster.me, nats = %urls, "joined the cluster");
        Ok((cluster, rx))
    }

    /// This node's name.
    pub(crate) fn me(&self) -> &NodeName {
        &self.me
    }

    /// The NATS connection, for JetStream users (alerts).
    #[allow(dead_code)] // For the cluster's JetStream users (alerts).
    pub(crate) fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The JetStream context.
    #[allow(dead_code)] // For the cluster's JetStream users (alerts).
    pub(crate) fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    /// The cluster settings.
    #[allow(dead_code)] // For the cluster's JetStream users (alerts).
    pub(crate) fn config(&self) -> &config::Cluster {
        &self.config
    }

    /// Who may grant the floor of `group` now, as this node sees it.
    pub(crate) fn arbiter(&self, group: GroupId) -> Arbiter {
        if self.has_left() {
            return Arbiter::Unavailable(ptt_gateway_core::cluster::Unavailable::NoQuorum);
        }
        self.membership().arbiter(Instant::now(), group)
    }

    /// Whether this node left the cluster (it is shutting down).
    pub(crate) fn has_left(&self) -> bool {
        self.left.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The node that holds `group`'s members and floor: the rendezvous
    /// owner among the live nodes, whether or not it may grant yet.
    pub(crate) fn owner(&self, group: GroupId) -> NodeName {
        ptt_gateway_core::cluster::owner(group, self.membership().live()).clone()
    }

    /// The live nodes, this one included.
    pub(crate) fn live(&self) -> Vec<NodeName> {
        self.membership().live().to_vec()
    }

    /// Whether the NATS connection is up.
    pub(crate) fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Publishes a relayed voice frame of `group` for the other nodes. A
    /// frame is dropped, not buffered, while NATS is unreachable: it would
    /// arrive too late to be heard.
    pub(crate) fn publish_voice(&self, group: GroupId, stamped: Bytes) {
        if !self.connected() {
            Metrics::add(&self.metrics.cluster_voice_dropped, 1);
            return;
        }
        match self.client.publish(voice(group), stamped).now_or_never() {
            Some(Ok(())) => Metrics::add(&self.metrics.cluster_voice_out, 1),
            _ => Metrics::add(&self.metrics.cluster_voice_dropped, 1),
        }
    }

    /// Tells the other nodes a terminal here reported its position (for
    /// their consoles' maps and nearest-K dispatch).
    pub(crate) fn publish_position(
        &self,
        terminal: ptt_codec::TerminalId,
        fix: crate::location::Fix,
    ) {
        let payload = wire::Position::from_fix(terminal, fix).encode();
        if self.connected() {
            let _ = self
                .client
                .publish(POSITIONS, payload.into())
                .now_or_never();
        }
    }

    /// Tells the other nodes which terminals connected here (`online`) or
    /// left (`offline`); `full`: `online` is all of them.
    pub(crate) fn publish_presence(&self, online: Vec<u32>, offline: Vec<u32>, full: bool) {
        let payload = wire::Presence {
            node: self.me.to_string(),
            online,
            offline,
            full,
        }
        .encode();
        match self.client.publish(PRESENCE, payload.into()).now_or_never() {
            Some(Ok(())) => {}
            _ => Metrics::add(&self.metrics.cluster_envelopes_dropped, 1),
        }
    }

    /// Subscribes to `group`'s voice from the other nodes.
    pub(crate) async fn voice(&self, group: GroupId) -> Result<async_nats::Subscriber, Error> {
        self.subscribe(voice(group)).await
    }

    /// Sends `envelope` to `node`'s inbox. Lost if NATS is down: its
    /// senders keep nothing that a lost envelope could corrupt (a resync
    /// follows every change of the live set).
    pub(crate) fn send(&self, node: &str, envelope: &wire::Envelope) {
        let payload = Bytes::from(envelope.encode());
        match self.client.publish(inbox(node), payload).now_or_never() {
            Some(Ok(())) => Metrics::add(&self.metrics.cluster_envelopes_out, 1),
            _ => Metrics::add(&self.metrics.cluster_envelopes_dropped, 1),
        }
    }

    /// Tells the other nodes this node leaves, so they take its groups over
    /// at once. Call on shutdown, after this node stopped granting (every
    /// group it owns suspended), before the terminals are closed.
    pub(crate) async fn leave(&self) {
        self.left.store(true, std::sync::atomic::Ordering::Release);
        let beat = wire::Heartbeat {
            node: self.me.to_string(),
            incarnation: self.incarnation,
            leaving: true,
        }
        .encode();
        if self.client.publish(HEARTBEAT, beat.into()).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(1), self.client.flush()).await;
        }
        tracing::info!(node = %self.me, "left the cluster");
    }

    fn membership(&self) -> MutexGuard<'_, Membership> {
        // Stepped in place; a panic cannot leave it half-changed.
        self.membership.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn subscribe(&self, subject: String) -> Result<async_nats::Subscriber, Error> {
        self.client
            .subscribe(subject.clone())
            .await
            .map_err(|source| Error::Subscribe { subject, source })
    }

    /// Publishes this node's heartbeat, for the gateway's life.
    async fn heartbeats(self: Arc<Self>) {
        let beat = wire::Heartbeat {
            node: self.me.to_string(),
            incarnation: self.incarnation,
            leaving: false,
        }
        .encode();
        let mut tick =
            tokio::time::interval(Duration::from_millis(self.config.heartbeat_ms.into()));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.has_left() {
                return;
            }
            // Not while disconnected: a late heartbeat says nothing true.
            if self.connected() {
                let _ = self.client.publish(HEARTBEAT, beat.clone().into()).await;
            }
        }
    }

    /// Feeds heartbeats to the membership, expires silent nodes, and hands
    /// changes and envelopes to the hub.
    async fn listen(
        self: Arc<Self>,
        mut heard: async_nats::Subscriber,
        mut inbox: async_nats::Subscriber,
        [mut positions, mut presence]: [async_nats::Subscriber; 2],
        events: mpsc::Sender<Event>,
    ) {
        use futures_util::StreamExt;
        let mut tick = tokio::time::interval(Duration::from_millis(
            (self.config.heartbeat_ms / 4).max(1).into(),
        ));
        loop {
            let change = tokio::select! {
                Some(msg) = heard.next() => match wire::Heartbeat::decode(&msg.payload) {
                    Ok(hb) => self.membership().handle_heartbeat(
                        Instant::now(),
                        Heartbeat {
                            node: Arc::from(hb.node),
                            incarnation: hb.incarnation,
                            leaving: hb.leaving,
                        },
                    ),
                    Err(e) => {
                        Metrics::add(&self.metrics.cluster_malformed, 1);
                        tracing::warn!("malformed heartbeat: {e}");
                        continue;
                    }
                },
                Some(msg) = inbox.next() => {
                    Metrics::add(&self.metrics.cluster_envelopes_in, 1);
                    match wire::Envelope::decode(&msg.payload) {
                        Ok(envelope) => {
                            if events.send(Event::Envelope(envelope)).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            Metrics::add(&self.metrics.cluster_malformed, 1);
                            tracing::warn!("malformed envelope: {e}");
                        }
                    }
                    continue;
                }
                Some(msg) = positions.next() => {
                    match wire::Position::decode(&msg.payload) {
                        Ok(p) => {
                            let (terminal, fix) = p.into_fix();
                            // Positions are refreshed every few seconds:
                            // one dropped under load is not worth waiting for.
                            let _ = events.try_send(Event::Position(terminal, fix));
                        }
                        Err(e) => {
                            Metrics::add(&self.metrics.cluster_malformed, 1);
                            tracing::warn!("malformed position: {e}");
                        }
                    }
                    continue;
                }
                Some(msg) = presence.next() => {
                    match wire::Presence::decode(&msg.payload) {
                        Ok(p) => {
                            if events.send(Event::Presence(p)).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            Metrics::add(&self.metrics.cluster_malformed, 1);
                            tracing::warn!("malformed presence: {e}");
                        }
                    }
                    continue;
                }
                _ = tick.tick() => self.membership().handle_timeout(Instant::now()),
            };
            if !change.is_empty() {
                let live = self.live();
                Metrics::add(&self.metrics.cluster_view_changes, 1);
                tracing::warn!(
                    node = %self.me,
                    left = ?change.left,
                    joined = ?change.joined,
                    live = ?live,
                    quorum = self.membership().has_quorum(),
                    "cluster membership changed"
                );
                if events.send(Event::Changed(change)).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// A node's inbox subject.
fn inbox(node: &str) -> String {
    format!("ptt.node.{node}")
}

/// A group's voice subject.
fn voice(group: GroupId) -> String {
    format!("ptt.voice.{}", group.0)
}

use futures_util::FutureExt;
