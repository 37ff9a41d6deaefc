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
    jetstream: jetstream::Context,
    membership: Mutex<Membership>,
    config: config::Cluster,
    metrics: Arc<Metrics>,
}

/// What the cluster hands the hub: changes of the live set, and envelopes
/// from other nodes, in the order they came.
#[derive(Debug)]
pub(crate) enum Event {
    /// Nodes left or joined; every group re-checks its arbiter.
    Changed(Change),
    /// An envelope for this node.
    Envelope(wire::Envelope),
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
        let client = async_nats::ConnectOptions::new()
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
        });
        let (events, rx) = mpsc::channel(4096);
        let heard = cluster.subscribe(HEARTBEAT.to_owned()).await?;
        let inbox = cluster.subscribe(inbox(&cluster.me)).await?;
        tokio::spawn(Arc::clone(&cluster).heartbeats());
        tokio::spawn(Arc::clone(&cluster).listen(heard, inbox, events));
        tracing::info!(node = %cluster.me, nats = %urls, "joined the cluster");
        Ok((cluster, rx))
    }

    /// This node's name.
    pub(crate) fn me(&self) -> &NodeName {
        &self.me
    }

    /// The NATS connection, for JetStream users (alerts).
    pub(crate) fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The JetStream context.
    pub(crate) fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    /// The cluster settings.
    pub(crate) fn config(&self) -> &config::Cluster {
        &self.config
    }

    /// Who may grant the floor of `group` now, as this node sees it.
    pub(crate) fn arbiter(&self, group: GroupId) -> Arbiter {
        self.membership().arbiter(Instant::now(), group)
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
        }
        .encode();
        let mut tick =
            tokio::time::interval(Duration::from_millis(self.config.heartbeat_ms.into()));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
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
                        Heartbeat { node: Arc::from(hb.node), incarnation: hb.incarnation },
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
