//! State every session shares, as a handle with methods (as mini-redis's
//! `Db`): configuration and org, the registry of live terminals, the talk
//! groups, the alert desk, positions and their watchers, and the SOS book.
//!
//! Sessions and operations reach each part through a method named by its
//! role; no field is public, so each part's invariants live in its own
//! module.

mod budget;
mod consoles;
mod desk;
pub(crate) mod link;
mod registry;
mod reload;
mod revoked;
mod sos;
mod transfers;
mod warn;
mod watch;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use ptt_codec::{CloseCode, GroupId};
use tokio::sync::{mpsc, Notify, Semaphore};

use crate::alert::BurstRecord;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::floor;
use crate::group::Group;
use crate::metrics::{Metrics, RelayLatency};
use crate::net;
use crate::org::{auth::ProvisioningKey, Org};
use crate::recorder::Recorder;
use crate::store::Store;

pub(crate) use budget::{Budget, Budgets};
pub(crate) use consoles::{token_hash, Attempter, Consoles};
pub(crate) use desk::{Desk, Error, Urgency};
pub(crate) use registry::{Live, Registry};
pub(crate) use revoked::Revoked;
pub(crate) use sos::{Active as ActiveSos, Book as SosBook};
pub(crate) use transfers::{Busy, Ticket, Transfers};
pub(crate) use watch::{Watch, Watcher};

/// State shared by every session.
#[derive(Debug)]
pub(crate) struct Hub {
    config: Config,
    /// The governance tree; replaced whole by a reload ([`Hub::reload_org`]).
    org: ArcSwap<Org>,
    /// Verifies terminals' credentials.
    key: ProvisioningKey,
    /// Every talk group, one per org node. Read without a lock (the voice
    /// path looks a group up per frame); a reload stores a new map that
    /// keeps every surviving group's `Arc`.
    groups: ArcSwap<HashMap<GroupId, Arc<Group>>>,
    /// What a new group needs: the floor audit log's sender.
    audit_tx: mpsc::UnboundedSender<BurstRecord>,
    /// The org generation serving (successful reloads so far); its lock
    /// serialises reloads.
    reloads: Mutex<u64>,
    registry: Registry,
    desk: Desk,
    watch: Watch,
    sos: SosBook,
    /// Photo stream slots (`[attachments]`).
    transfers: Transfers,
    metrics: Arc<Metrics>,
    /// Where voice loops run: beside the connection drivers they wake.
    net: net::Thread,
    /// Voice relay latency of every voice loop, to the frame queued in every
    /// receiver's connection.
    relay_latency: RelayLatency,
    /// The same, to every receiver's packet handed to the socket (sampled).
    socket_latency: Arc<RelayLatency>,
    /// Handshakes in progress at once (`transport.max_handshakes`).
    handshakes: Arc<Semaphore>,
    /// Each terminal's frame rates and work in flight (`[limits]`).
    budgets: Budgets,
    /// Ended bursts waiting to be written; taken by [`Hub::audit_writer`].
    audit: Mutex<Option<mpsc::UnboundedReceiver<BurstRecord>>>,
    /// Terminals whose credential is revoked (the store's list, polled).
    revoked: Revoked,
    /// Records every burst (`[recording]`), when enabled and started.
    recorder: Option<Recorder>,
    /// When the gateway started, and whether its endpoint accepts
    /// connections now (the operations surface's status and readiness).
    status: Status,
    /// Signed-in browser consoles.
    consoles: Consoles,
    /// Whether and how the endpoint serves browsers (ALPN `h3`).
    web: crate::tls::Web,
    /// This node's place in a cluster, once joined ([`Hub::join_cluster`]).
    cluster: std::sync::OnceLock<Arc<Cluster>>,
    /// (cluster) Terminals connected to other nodes, and where.
    elsewhere: dashmap::DashMap<ptt_codec::TerminalId, ptt_gateway_core::cluster::NodeName>,
    /// The media plane's routes, by SSRC (SRTP beside QUIC).
    media: crate::media::Table,
    /// How well each terminal hears (its `LinkReport`s).
    link: link::Quality,
}

/// The gateway's run state, for the operations surface.
#[derive(Debug)]
pub(crate) struct Status {
    /// When the hub was built.
    pub(crate) started: std::time::Instant,
    /// Set while [`crate::server::Gateway::run`] accepts connections.
    pub(crate) accepting: std::sync::atomic::AtomicBool,
    /// The QUIC endpoint's address, once bound: where consoles connect.
    pub(crate) quic_addr: std::sync::OnceLock<std::net::SocketAddr>,
}

impl Hub {
    /// Builds the run-time state: one talk group per org node, alerts in
    /// `store`, voice loops on `net`.
    pub(crate) fn new(
        config: Config,
        org: Org,
        key: ProvisioningKey,
        store: Store,
        net: net::Thread,
    ) -> Self {
        let metrics = Arc::new(Metrics::default());
        let pending = store
            .terminals_with_pending(crate::clock::now_ms())
            .unwrap_or_else(|e| {
                tracing::error!("reading pending alerts failed, forwarding to everyone: {e}");
                org.terminals().map(|t| t.id).collect()
            });
        let active_sos = store.active_sos().unwrap_or_else(|e| {
            tracing::error!("reading active SOS failed, none can be cancelled: {e}");
            Vec::new()
        });
        let revoked = Revoked::default();
        match store.revoked_terminals() {
            Ok(list) => {
                revoked.replace(list);
            }
            // The first poll retries; until then nobody is refused.
            Err(e) => tracing::error!("reading revoked credentials failed: {e}"),
        }
        let sessions = store
            .console_sessions(crate::clock::now_ms())
            .unwrap_or_else(|e| {
                tracing::error!(
                    "reading console sessions failed, every operator signs in again: {e}"
                );
                Vec::new()
            });
        let consoles = Consoles::new(
            sessions,
            config.console.password_checks as usize,
            config.console.max_failures,
        );
        let web = web_transport(&config);
        let per_terminal = config.delivery.per_terminal;
        let desk = Desk::new(store, pending, per_terminal);
        let recorder = config
            .recording
            .enabled
            .then(|| {
                Recorder::start(
                    &config.recording,
                    &config.data_dir,
                    desk.store().clone(),
                    metrics.clone(),
                )
            })
            .and_then(|r| {
                r.inspect_err(|e| tracing::error!("the recorder did not start, not recording: {e}"))
                    .ok()
            });
        let (audit_tx, audit_rx) = mpsc::unbounded_channel();
        let groups = org
            .groups()
            .map(|id| {
                let group = new_group(&config, &org, id, &metrics, &audit_tx, recorder.as_ref());
                (id, group)
            })
            .collect();
        // At least 1: `Config::validate`.
        let handshakes = Arc::new(Semaphore::new(config.transport.max_handshakes));
        let transfers = Transfers::new(&config.attachments);
        Self {
            config,
            org: ArcSwap::from_pointee(org),
            key,
            groups: ArcSwap::from_pointee(groups),
            audit_tx,
            reloads: Mutex::new(0),
            registry: Registry::default(),
            desk,
            watch: Watch::default(),
            transfers,
            sos: SosBook::new(active_sos),
            metrics,
            net,
            relay_latency: Default::default(),
            socket_latency: Default::default(),
            handshakes,
            budgets: Budgets::default(),
            audit: Mutex::new(Some(audit_rx)),
            status: Status {
                started: std::time::Instant::now(),
                accepting: std::sync::atomic::AtomicBool::new(false),
                quic_addr: std::sync::OnceLock::new(),
            },
            consoles,
            web,
            revoked,
            recorder,
            cluster: std::sync::OnceLock::new(),
            elsewhere: Default::default(),
            media: Default::default(),
            link: link::Quality::default(),
        }
    }

    /// How well each terminal hears: its last link report and totals.
    pub(crate) fn link_quality(&self) -> &link::Quality {
        &self.link
    }

    /// The node `terminal` is connected to, if it is connected anywhere
    /// (this one included).
    pub(crate) fn connected_at(
        &self,
        terminal: ptt_codec::TerminalId,
    ) -> Option<ptt_gateway_core::cluster::NodeName> {
        if self.registry.is_online(terminal) {
            let me = self
                .cluster()
                .map_or_else(|| Arc::from(""), |c| c.me().clone());
            return Some(me);
        }
        self.elsewhere.get(&terminal).map(|n| n.clone())
    }

    /// Tells the other nodes `terminal` connected here, or left.
    pub(crate) fn announce(&self, terminal: ptt_codec::TerminalId, online: bool) {
        if let Some(cluster) = self.cluster() {
            let (on, off) = if online {
                (vec![terminal.0], Vec::new())
            } else {
                (Vec::new(), vec![terminal.0])
            };
            cluster.publish_presence(on, off, false);
        }
    }

    /// Takes another node's presence report.
    pub(crate) fn presence_from(&self, p: crate::cluster::wire::Presence) {
        let node: ptt_gateway_core::cluster::NodeName = Arc::from(p.node);
        if p.full {
            self.elsewhere.retain(|_, n| *n != node);
        }
        for t in p.offline {
            self.elsewhere
                .remove_if(&ptt_codec::TerminalId(t), |_, n| *n == node);
        }
        for t in p.online {
            self.elsewhere
                .insert(ptt_codec::TerminalId(t), node.clone());
        }
    }

    /// Remembers `fix` as `terminal`'s position (reported here or on
    /// another node) and tells the consoles here that watch its subtree.
    pub(crate) fn position(&self, terminal: ptt_codec::TerminalId, fix: crate::location::Fix) {
        self.watch.update(terminal, fix);
        let org = self.org();
        let Some(node) = org.terminal(terminal).map(|t| t.node) else {
            return;
        };
        self.watch.each_watcher(|w| {
            if w.terminal != terminal && org.is_ancestor_or_self(w.node, node) {
                // Positions are refreshed every few seconds: skip one rather
                // than fall behind.
                w.outbox
                    .send_droppable(ptt_codec::ServerMsg::PositionUpdate {
                        terminal,
                        lat_e7: fix.lat_e7,
                        lon_e7: fix.lon_e7,
                        accuracy_m: fix.accuracy_m,
                        at_ms: fix.at_ms,
                    });
            }
        });
    }

    /// Leaves the cluster on shutdown: every group this node arbitrates
    /// stops its floor, then the other nodes are told, so they take the
    /// groups over at once (a rolling restart costs a talker one press).
    pub(crate) async fn leave_cluster(&self) {
        let Some(cluster) = self.cluster.get() else {
            return;
        };
        for group in self.groups.load().values() {
            group.leave_cluster();
        }
        cluster.leave().await;
    }

    /// This node's cluster, if it is a cluster node.
    pub(crate) fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.get()
    }

    /// Joins the cluster `[cluster]` names, if it names one: connects to
    /// NATS, makes every group a cluster group, and routes the cluster's
    /// events to the groups for the gateway's life. Call once, before the
    /// gateway accepts terminals.
    pub(crate) async fn join_cluster(self: &Arc<Self>) -> Result<(), crate::cluster::Error> {
        if self.config.cluster.node.is_none() || self.cluster.get().is_some() {
            return Ok(());
        }
        let (cluster, mut events) =
            Cluster::join(&self.config.cluster, Arc::clone(&self.metrics)).await?;
        for group in self.groups.load().values() {
            group.join_cluster(Arc::clone(&cluster));
        }
        let _ = self.cluster.set(cluster);
        let hub = Arc::clone(self);
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                match event {
                    crate::cluster::Event::Changed(change) => {
                        for node in &change.left {
                            hub.elsewhere.retain(|_, n| n != node);
                        }
                        if !change.joined.is_empty() {
                            // Newcomers learn who is here.
                            let here = hub
                                .registry
                                .online()
                                .into_iter()
                                .map(|(t, ..)| t.0)
                                .collect();
                            if let Some(c) = hub.cluster() {
                                c.publish_presence(here, Vec::new(), true);
                            }
                        }
                        for group in hub.groups.load().values() {
                            group.on_view_change(&change.left);
                        }
                    }
                    crate::cluster::Event::Presence(p) => hub.presence_from(p),
                    crate::cluster::Event::Position(terminal, fix) => hub.position(terminal, fix),
                    crate::cluster::Event::Envelope(envelope) => {
                        match hub.group(envelope.group()) {
                            Some(group) => group.on_envelope(envelope),
                            None => Metrics::add(&hub.metrics.cluster_malformed, 1),
                        }
                    }
                }
            }
        });
        Ok(())
    }

    /// Signed-in browser consoles.
    pub(crate) fn consoles(&self) -> &Consoles {
        &self.consoles
    }

    /// Whether and how the endpoint serves browsers.
    pub(crate) fn web(&self) -> &crate::tls::Web {
        &self.web
    }

    /// Ends console sessions: closes the live WebTransport session of each
    /// one's console with SIGNED_OUT. Call after removing them from
    /// [`Hub::consoles`] (sign-out, expiry, a removed operator).
    pub(crate) fn end_consoles(&self, ended: &[crate::store::ConsoleSession]) {
        for session in ended {
            Metrics::add(&self.metrics.console_sessions_ended, 1);
            if let Some(link) = self.registry.conn(session.terminal) {
                if link.is_web() {
                    link.close(CloseCode::SignedOut, "signed out");
                }
            }
        }
    }

    /// Terminals whose credential is revoked.
    pub(crate) fn revoked(&self) -> &Revoked {
        &self.revoked
    }

    /// Reads the revocation list from the store and closes the live
    /// session of every terminal newly on it with `REVOKED`. Call every
    /// `auth.revocation_poll_ms` ([`poll_revocations`]), on SIGHUP, and
    /// after revoking through the gateway's own store (admin API).
    pub(crate) async fn refresh_revocations(&self) {
        let store = self.desk.store().clone();
        let list = tokio::task::spawn_blocking(move || store.revoked_terminals())
            .await
            .map_err(Error::from)
            .and_then(|r| r.map_err(Error::from));
        let list = match list {
            Ok(list) => list,
            Err(e) => {
                // Keep the set as it was: a failed read lifts nothing.
                tracing::error!("reading revoked credentials failed: {e}");
                return;
            }
        };
        let (added, lifted) = self.revoked.replace(list);
        if lifted > 0 {
            tracing::info!(lifted, revoked = self.revoked.len(), "revocations lifted");
        }
        for terminal in added {
            // The set is updated first and a starting session checks it
            // after registering, so a session never slips between the two.
            let closed = self.registry.conn(terminal).is_some_and(|conn| {
                crate::outbox::close(&conn, CloseCode::Revoked, "credential revoked");
                true
            });
            if closed {
                Metrics::add(&self.metrics.sessions_revoked, 1);
            }
            tracing::warn!(%terminal, closed, "credential revoked: session closed, Hello refused");
        }
    }

    /// The recorder, when recording.
    pub(crate) fn recorder(&self) -> Option<&Recorder> {
        self.recorder.as_ref()
    }

    /// The configuration the gateway started with.
    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// The governance tree now. Hold it for one decision: a reload may
    /// replace it right after.
    pub(crate) fn org(&self) -> Arc<Org> {
        self.org.load_full()
    }

    /// The key terminals' credentials are derived from.
    pub(crate) fn key(&self) -> &ProvisioningKey {
        &self.key
    }

    /// The talk group `id`, if there is one. Lock-free.
    #[inline]
    pub(crate) fn group(&self, id: GroupId) -> Option<Arc<Group>> {
        self.groups.load().get(&id).cloned()
    }

    /// How many talk groups there are.
    pub(crate) fn group_count(&self) -> usize {
        self.groups.load().len()
    }

    /// Each terminal's budget of frames and work in flight.
    pub(crate) fn budgets(&self) -> &Budgets {
        &self.budgets
    }

    /// Live terminals and their remembered groups.
    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The alert desk: store, delivery window, pending set, receipt queue.
    pub(crate) fn desk(&self) -> &Desk {
        &self.desk
    }

    /// Positions and the consoles following them.
    pub(crate) fn watch(&self) -> &Watch {
        &self.watch
    }

    /// Active SOS per terminal.
    pub(crate) fn sos(&self) -> &SosBook {
        &self.sos
    }

    /// Photo stream slots per terminal and gateway-wide.
    pub(crate) fn transfers(&self) -> &Transfers {
        &self.transfers
    }

    /// The gateway's counters.
    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The network thread every packet and voice loop runs on.
    pub(crate) fn net(&self) -> &net::Thread {
        &self.net
    }

    /// The media plane's routes (SRTP terminals), by SSRC.
    pub(crate) fn media(&self) -> &crate::media::Table {
        &self.media
    }

    /// Voice relay latency to the frame queued in every receiver's
    /// connection.
    pub(crate) fn relay_latency(&self) -> &RelayLatency {
        &self.relay_latency
    }

    /// Voice relay latency to every receiver's packet on the socket.
    pub(crate) fn socket_latency(&self) -> &Arc<RelayLatency> {
        &self.socket_latency
    }

    /// Start time and whether the endpoint accepts connections.
    pub(crate) fn status(&self) -> &Status {
        &self.status
    }

    /// Handshake slots (`transport.max_handshakes`).
    pub(crate) fn handshakes(&self) -> &Arc<Semaphore> {
        &self.handshakes
    }

    /// The floor audit writer, the first time it is asked for: run it until
    /// `stop` is notified, after which it writes what is queued and ends.
    pub(crate) fn audit_writer(
        &self,
        stop: Arc<Notify>,
    ) -> Option<impl std::future::Future<Output = ()>> {
        let rx = self
            .audit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()?;
        Some(write_audit(self.desk.store().clone(), rx, stop))
    }
}

/// The talk group of node `id` of `org`, with nobody online.
/// How the endpoint serves browsers under `config`: not at all with the
/// console off; with the configured certificate when there is one;
/// otherwise with short-lived self-signed ones ([`crate::tls::WebCerts`]).
fn web_transport(config: &Config) -> crate::tls::Web {
    use crate::tls::{Web, WebCerts};
    let c = &config.console;
    if !c.enabled {
        return Web::Off;
    }
    if config.cert.is_some() {
        return Web::SameCert;
    }
    match WebCerts::new(&[], c.cert_days, c.cert_rotate_days) {
        Ok(certs) => Web::OwnCerts(Arc::new(certs)),
        Err(e) => {
            tracing::error!("making the console certificate failed, console off: {e}");
            Web::Off
        }
    }
}

/// Ends expired console sessions every 30 s and rotates the console's
/// certificate when due (checked hourly). Runs beside the gateway.
pub(crate) async fn console_upkeep(hub: Arc<Hub>) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    let mut ticks = 0u64;
    loop {
        tick.tick().await;
        let now = crate::clock::now_ms();
        let expired = hub.consoles.expire(now);
        if !expired.is_empty() {
            tracing::info!(sessions = expired.len(), "console sessions expired");
            hub.end_consoles(&expired);
        }
        // Operators removed or given a new password by the CLI meanwhile.
        let store = hub.desk.store().clone();
        if let Ok(Ok(stored)) =
            tokio::task::spawn_blocking(move || store.console_sessions(now)).await
        {
            let ended = hub.consoles.sync(stored);
            if !ended.is_empty() {
                tracing::info!(
                    sessions = ended.len(),
                    "console sessions ended by an operator change"
                );
                hub.end_consoles(&ended);
            }
        }
        if ticks.is_multiple_of(120) {
            if let crate::tls::Web::OwnCerts(certs) = &hub.web {
                if let Err(e) = certs.rotate_if_due(std::time::SystemTime::now()) {
                    tracing::error!("rotating the console certificate failed: {e}");
                }
            }
        }
        ticks += 1;
    }
}

fn new_group(
    config: &Config,
    org: &Org,
    id: GroupId,
    metrics: &Arc<Metrics>,
    audit: &mpsc::UnboundedSender<BurstRecord>,
    recorder: Option<&Recorder>,
) -> Arc<Group> {
    let name: Arc<str> = org.node(id).map_or("", |n| n.name.as_str()).into();
    let floor = floor::Config {
        talk_limit: config.floor.talk_limit(id.0),
        queue_capacity: config.floor.queue,
    };
    let presence = config.session.presence_interval();
    let group = Group::new(id, name, floor, presence, metrics.clone(), audit.clone());
    Arc::new(match recorder {
        Some(r) => group.recording_to(r.tap()),
        None => group,
    })
}

/// Reads the revocation list every `auth.revocation_poll_ms`, until
/// aborted. Run it for the gateway's life.
pub(crate) async fn poll_revocations(hub: Arc<Hub>) {
    let mut every = tokio::time::interval(hub.config().auth.revocation_poll());
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        hub.refresh_revocations().await;
    }
}

/// Writes ended bursts to the floor audit log in batches, off the async
/// threads.
async fn write_audit(
    store: Arc<Store>,
    mut rx: mpsc::UnboundedReceiver<BurstRecord>,
    stop: Arc<Notify>,
) {
    let mut batch = Vec::new();
    loop {
        let last = tokio::select! {
            n = rx.recv_many(&mut batch, 256) => n == 0,
            () = stop.notified() => {
                while let Ok(r) = rx.try_recv() {
                    batch.push(r);
                }
                true
            }
        };
        if !batch.is_empty() {
            let records = std::mem::take(&mut batch);
            let store = store.clone();
            let written = tokio::task::spawn_blocking(move || store.record_bursts(&records))
                .await
                .map_err(Error::from)
                .and_then(|r| r.map_err(Error::from));
            if let Err(e) = written {
                tracing::error!("writing the floor audit log failed: {e}");
            }
        }
        if last {
            return;
        }
    }
}
