//! The listener: accepts connections and hands each to a session task; shuts
//! down gracefully.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use ptt_codec::{CloseCode, GroupId, TerminalId};
use tokio::task::JoinSet;

use crate::alert::{BurstRecord, Store};
use crate::config::Config;
use crate::floor;
use crate::group::Group;
use crate::metrics::{self, Metrics};
use crate::org::{auth::ProvisioningKey, Org};
use crate::session::{self, Remembered};

/// Alert deliveries in flight at once (see `Shared::deliveries`).
const MAX_DELIVERIES_IN_FLIGHT: usize = 512;

/// An SOS not yet cancelled: its alert, the unit group whose floor it
/// took, and its recipients (to tell them of a cancel).
pub(crate) type ActiveSos = (u64, GroupId, Vec<TerminalId>);

/// State shared by every session.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) org: Org,
    pub(crate) key: ProvisioningKey,
    /// Alerts and receipts on disk.
    pub(crate) store: Arc<Store>,
    /// Every talk group, one per org node. Fixed at start, so the voice path
    /// looks groups up without a lock.
    pub(crate) groups: HashMap<GroupId, Arc<Group>>,
    pub(crate) terminals: DashMap<TerminalId, Remembered>,
    pub(crate) metrics: Arc<Metrics>,
    /// Where voice loops run: beside the connection drivers they wake.
    pub(crate) net: crate::net::Thread,
    /// Voice relay latency of every voice loop, to the frame queued in every
    /// receiver's connection.
    pub(crate) relay_latency: crate::metrics::RelayLatency,
    /// The same, to every receiver's packet handed to the socket (sampled).
    pub(crate) socket_latency: Arc<crate::metrics::RelayLatency>,
    pub(crate) next_session: AtomicU64,
    /// Alert deliveries in flight at once. Opening a stream to every
    /// terminal of a city in the same instant makes a burst of tens of
    /// thousands of packets that overflows receive buffers (and, on real
    /// networks, the operators' queues); a bounded window keeps the burst
    /// flowing without drops.
    pub(crate) deliveries: tokio::sync::Semaphore,
    /// Handshakes in progress at once (`transport.max_handshakes`).
    pub(crate) handshakes: Arc<tokio::sync::Semaphore>,
    /// Terminals that may have alerts waiting (a superset): only these are
    /// looked up in the database when they connect, so a reconnect storm of
    /// 30,000 terminals does not queue 30,000 queries ahead of new alerts.
    pub(crate) pending: dashmap::DashSet<TerminalId>,
    /// Last known positions of terminals.
    pub(crate) positions: crate::location::Positions,
    /// Active SOS per terminal.
    pub(crate) sos: std::sync::Mutex<HashMap<TerminalId, ActiveSos>>,
    /// Consoles following positions.
    pub(crate) watchers: std::sync::Mutex<Vec<crate::session_alerts::Watcher>>,
    /// Receipts waiting for the group-commit writer.
    pub(crate) receipts: tokio::sync::mpsc::UnboundedSender<crate::session_alerts::QueuedReceipt>,
    receipts_rx: std::sync::Mutex<
        Option<tokio::sync::mpsc::UnboundedReceiver<crate::session_alerts::QueuedReceipt>>,
    >,
    /// Ended bursts waiting to be written; taken by `run`.
    audit: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<BurstRecord>>>,
}

/// A gateway ready to serve: configuration, org and groups, no sockets.
///
/// Cheap to clone; clones share state.
#[derive(Debug, Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
}

impl Gateway {
    /// Builds the run-time state: one talk group per org node, alerts in
    /// `store` (open it at `<data_dir>/gateway.db`), every packet carried
    /// by `net` (see [`crate::net`]).
    pub fn new(
        config: Config,
        org: Org,
        key: ProvisioningKey,
        store: Store,
        net: crate::net::Thread,
    ) -> Self {
        let metrics = Arc::new(Metrics::default());
        let pending = store
            .terminals_with_pending(crate::alert::now_ms())
            .unwrap_or_else(|e| {
                tracing::error!("reading pending alerts failed, forwarding to everyone: {e}");
                org.terminals().map(|t| t.id).collect()
            })
            .into_iter()
            .collect();
        let (audit_tx, audit_rx) = tokio::sync::mpsc::unbounded_channel();
        let (receipts, receipts_rx) = tokio::sync::mpsc::unbounded_channel();
        let groups = org
            .groups()
            .map(|id| {
                let name: Arc<str> = org.node(id).map_or("", |n| n.name.as_str()).into();
                let floor = floor::Config {
                    talk_limit: config.floor.talk_limit(id.0),
                    queue_capacity: config.floor.queue,
                };
                let group = Group::new(id, name, floor, metrics.clone(), audit_tx.clone());
                (id, Arc::new(group))
            })
            .collect();
        let handshakes = Arc::new(tokio::sync::Semaphore::new(
            config.transport.max_handshakes.max(1),
        ));
        Self {
            shared: Arc::new(Shared {
                config,
                org,
                key,
                store: Arc::new(store),
                groups,
                terminals: DashMap::new(),
                metrics,
                net,
                relay_latency: Default::default(),
                socket_latency: Default::default(),
                next_session: AtomicU64::new(1),
                deliveries: tokio::sync::Semaphore::new(MAX_DELIVERIES_IN_FLIGHT),
                handshakes,
                pending,
                positions: Default::default(),
                sos: Default::default(),
                watchers: Default::default(),
                receipts,
                receipts_rx: std::sync::Mutex::new(Some(receipts_rx)),
                audit: std::sync::Mutex::new(Some(audit_rx)),
            }),
        }
    }

    /// Binds the gateway's UDP socket at `addr` with certificate `id`: the
    /// endpoint to pass to [`Gateway::run`], driven on the gateway's network
    /// thread.
    pub fn bind(
        &self,
        addr: std::net::SocketAddr,
        id: &crate::tls::Identity,
    ) -> Result<quinn::Endpoint, crate::tls::Error> {
        crate::tls::bind(
            addr,
            id,
            &self.shared.config.transport,
            &self.shared.net,
            &self.shared.metrics,
        )
    }

    /// The gateway's counters, live.
    pub fn metrics(&self) -> metrics::Snapshot {
        self.shared.metrics.snapshot()
    }

    /// Voice relay latency so far: frame read to frame queued in every
    /// receiver's connection, every frame.
    pub fn relay_latency(&self) -> metrics::LatencySummary {
        self.shared.relay_latency.summary()
    }

    /// Voice relay latency so far: frame read to every receiver's packet
    /// handed to the socket, one frame in [`metrics::SOCKET_SAMPLE`].
    pub fn socket_latency(&self) -> metrics::LatencySummary {
        self.shared.socket_latency.summary()
    }

    /// Members online in `group`, or `None` for an unknown group.
    pub fn online(&self, group: GroupId) -> Option<usize> {
        self.shared.groups.get(&group).map(|g| g.online())
    }

    /// The floor audit log of `group` since `since_ms` (blocking: reads the
    /// database).
    pub fn bursts(&self, group: GroupId, since_ms: u64) -> Vec<BurstRecord> {
        self.shared
            .store
            .bursts(group.0, since_ms)
            .unwrap_or_default()
    }

    /// Who cancelled alert `alert`, and when (blocking: reads the database).
    pub fn alert_cancelled(&self, alert: u64) -> Option<(TerminalId, u64)> {
        self.shared.store.cancelled(alert).ok().flatten()
    }

    /// The terminal holding the floor of `group`.
    pub fn holder(&self, group: GroupId) -> Option<TerminalId> {
        self.shared.groups.get(&group).and_then(|g| g.holder())
    }

    /// Serves `endpoint` until `shutdown` completes, then closes every
    /// connection with [`CloseCode::ServerShutdown`] and waits (up to 5 s)
    /// for sessions to end.
    pub async fn run(self, endpoint: quinn::Endpoint, shutdown: impl Future<Output = ()>) {
        let mut sessions = JoinSet::new();
        let audit_rx = self.shared.audit.lock().ok().and_then(|mut a| a.take());
        let receipts_rx = self
            .shared
            .receipts_rx
            .lock()
            .ok()
            .and_then(|mut r| r.take());
        let receipt_writer = receipts_rx.map(|rx| {
            tokio::spawn(crate::session_alerts::write_receipts(
                self.shared.store.clone(),
                rx,
            ))
        });
        let audit_stop = Arc::new(tokio::sync::Notify::new());
        let audit = audit_rx.map(|rx| {
            tokio::spawn(write_audit(
                self.shared.store.clone(),
                rx,
                audit_stop.clone(),
            ))
        });
        tokio::pin!(shutdown);
        tracing::info!(addr = ?endpoint.local_addr().ok(), groups = self.shared.groups.len(), "gateway listening");
        let transport = &self.shared.config.transport;
        let mut waiting = crate::admission::Queue::new(Duration::from_millis(u64::from(
            transport.handshake_queue_ms,
        )));
        loop {
            let expiry = waiting.next_expiry().map(tokio::time::Instant::from_std);
            tokio::select! {
                incoming = endpoint.accept() => {
                    let Some(incoming) = incoming else { break };
                    waiting.push(std::time::Instant::now(), incoming);
                }
                // The semaphore is never closed.
                Ok(slot) = self.shared.handshakes.clone().acquire_owned(), if !waiting.is_empty() => {
                    if let Some(incoming) = waiting.pop() {
                        sessions.spawn(session::run(self.shared.clone(), incoming, slot));
                    }
                }
                () = tokio::time::sleep_until(expiry.unwrap_or_else(tokio::time::Instant::now)), if expiry.is_some() => {}
                Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
                () = &mut shutdown => break,
            }
            for stale in waiting.expired(std::time::Instant::now()) {
                Metrics::add(&self.shared.metrics.handshakes_expired, 1);
                stale.ignore();
            }
        }
        tracing::info!(sessions = sessions.len(), "shutting down");
        endpoint.set_server_config(None);
        endpoint.close(
            quinn::VarInt::from_u32(CloseCode::ServerShutdown.code()),
            b"gateway shutting down",
        );
        let drain = async { while sessions.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(5), drain)
            .await
            .is_err()
        {
            tracing::warn!("sessions did not end in time");
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
        if let Some(w) = receipt_writer {
            // Sessions are gone; receipts already queued were answered or
            // are dropped unacknowledged, which terminals resend.
            w.abort();
        }
        if let Some(audit) = audit {
            // Bursts ended by the shutdown are still queued: write them too.
            audit_stop.notify_one();
            let _ = audit.await;
        }
        // One JSON object the benchmark reads: counters, and the relay
        // latency histograms' percentiles.
        let mut counters = serde_json::to_value(self.metrics()).unwrap_or_default();
        counters["relay_latency_us"] =
            serde_json::to_value(self.relay_latency()).unwrap_or_default();
        counters["socket_latency_us"] =
            serde_json::to_value(self.socket_latency()).unwrap_or_default();
        let counters = counters.to_string();
        tracing::info!(%counters, "gateway stopped");
    }
}

/// Writes ended bursts to the floor audit log in batches, off the async
/// threads.
async fn write_audit(
    store: Arc<Store>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<BurstRecord>,
    stop: Arc<tokio::sync::Notify>,
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
            match tokio::task::spawn_blocking(move || store.record_bursts(&records)).await {
                Ok(Ok(())) => {}
                other => tracing::error!("writing the floor audit log failed: {other:?}"),
            }
        }
        if last {
            return;
        }
    }
}
