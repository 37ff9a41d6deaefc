//! The listener: accepts connections and hands each to a session task; shuts
//! down gracefully.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ptt_codec::{CloseCode, GroupId, TerminalId};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::admission::{self, Admission, Limits, RetryCause, Verdict};
use crate::alert::BurstRecord;
use crate::config::Config;
use crate::hub::Hub;
use crate::metrics::{self, Metrics};
use crate::org::{auth::ProvisioningKey, Org};
use crate::session;
use crate::store::{self, Store};

/// A started handshake's slot: the semaphore permit, and its
/// [`admission::Ticket`] sent back to the accept loop when dropped (the
/// handshake is over: done, failed or abandoned).
#[derive(Debug)]
struct Slot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    ticket: admission::Ticket,
    done: mpsc::UnboundedSender<admission::Ticket>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        // The accept loop is gone only at shutdown, when nothing is
        // admitted any more.
        let _ = self.done.send(self.ticket);
    }
}

/// Warnings about refused attempts are logged at most this often; the
/// counters count every one.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// A gateway ready to serve: configuration, org and groups, no sockets.
///
/// Cheap to clone; clones share state.
#[derive(Debug, Clone)]
pub struct Gateway {
    hub: Arc<Hub>,
}

impl Gateway {
    /// Builds the run-time state: one talk group per org node, alerts in
    /// `store` (open it at `<data_dir>/gateway.db`), every packet carried
    /// by `net` (see [`crate::net`]).
    ///
    /// `config` must have passed [`Config::validate`] (as [`Config::load`]
    /// and [`Config::layered`] do): bounds are checked once, there, not
    /// clamped where they are used.
    pub fn new(
        config: Config,
        org: Org,
        key: ProvisioningKey,
        store: Store,
        net: crate::net::Thread,
    ) -> Self {
        debug_assert_eq!(
            config.validate(),
            Ok(()),
            "Gateway::new takes a validated config"
        );
        Self {
            hub: Arc::new(Hub::new(config, org, key, store, net)),
        }
    }

    /// Joins the cluster that `[cluster]` names (docs/CLUSTER.md); does
    /// nothing for a single node. Call once, before [`Gateway::run`].
    pub async fn join_cluster(&self) -> Result<(), crate::cluster::Error> {
        self.hub.join_cluster().await?;
        // The cluster's alerts: read before terminals come.
        crate::ops::replication::start(&self.hub).await;
        Ok(())
    }

    /// Binds the gateway's UDP socket at `addr` with certificate `id`: the
    /// endpoint to pass to [`Gateway::run`], driven on the gateway's network
    /// thread.
    pub fn bind(
        &self,
        addr: std::net::SocketAddr,
        id: &crate::tls::Identity,
    ) -> Result<quinn::Endpoint, crate::tls::Error> {
        let (endpoint, media) = crate::tls::bind(
            addr,
            id,
            &self.hub.config().transport,
            self.hub.web(),
            self.hub.net(),
            self.hub.metrics(),
        )?;
        media.set_handler(crate::session::media_handler(&self.hub));
        self.hub.media().set_port(media);
        Ok(endpoint)
    }

    /// Decides what becomes of `incoming`, which just arrived: a place in
    /// the queue, a Retry, or nothing ([`admission`]).
    fn arrived(
        &self,
        admission: &mut Admission<quinn::Incoming>,
        incoming: quinn::Incoming,
        warned: &mut Option<std::time::Instant>,
    ) {
        let metrics = self.hub.metrics();
        let from = incoming.remote_address();
        let proven = incoming.remote_address_validated();
        let now = std::time::Instant::now();
        match admission.arrive(now, from, proven, incoming) {
            Verdict::Queued => {
                if proven {
                    Metrics::add(&metrics.handshakes_proven, 1);
                }
            }
            Verdict::Retry(incoming, cause) => {
                let counter = match cause {
                    RetryCause::Busy => &metrics.handshakes_retried,
                    RetryCause::Address => &metrics.handshakes_retried_address,
                };
                Metrics::add(counter, 1);
                // Admission retries only unproven attempts, which quinn may
                // always retry; should it refuse, the attempt is dropped.
                if let Err(e) = incoming.retry() {
                    e.into_incoming().ignore();
                }
            }
            Verdict::AddressFull(incoming) => {
                Metrics::add(&metrics.handshakes_address_full, 1);
                incoming.ignore();
                if warned.is_none_or(|at| now.duration_since(at) >= WARN_EVERY) {
                    *warned = Some(now);
                    tracing::warn!(
                        %from,
                        limit = self.hub.config().transport.handshakes_per_proven_address,
                        dropped = metrics.handshakes_address_full.load(std::sync::atomic::Ordering::Relaxed),
                        "connection attempts dropped: too many handshakes from one address (transport.handshakes_per_proven_address)"
                    );
                }
            }
        }
    }

    /// SHA-256 hashes of the browser console's current self-signed
    /// certificates (what the page passes as `serverCertificateHashes`);
    /// empty with the console off or a configured certificate.
    pub fn console_cert_hashes(&self) -> Vec<[u8; 32]> {
        match self.hub.web() {
            crate::tls::Web::OwnCerts(certs) => certs.hashes(),
            _ => Vec::new(),
        }
    }

    /// The gateway's counters, live.
    pub fn metrics(&self) -> metrics::Snapshot {
        self.hub.metrics().snapshot()
    }

    /// Voice relay latency so far: frame read to frame queued in every
    /// receiver's connection, every frame.
    pub fn relay_latency(&self) -> metrics::LatencySummary {
        self.hub.relay_latency().summary()
    }

    /// Voice relay latency so far: frame read to every receiver's packet
    /// handed to the socket, one frame in [`metrics::SOCKET_SAMPLE`].
    pub fn socket_latency(&self) -> metrics::LatencySummary {
        self.hub.socket_latency().summary()
    }

    /// Members online in `group`, or `None` for an unknown group.
    pub fn online(&self, group: GroupId) -> Option<usize> {
        self.hub.group(group).map(|g| g.online())
    }

    /// The floor audit log of `group` since `since_ms` (blocking: reads the
    /// database). Bursts ended in the last moments may still be queued for
    /// the writer.
    pub fn bursts(&self, group: GroupId, since_ms: u64) -> Result<Vec<BurstRecord>, store::Error> {
        self.hub.desk().store().bursts(group.0, since_ms)
    }

    /// Who cancelled alert `alert`, and when; `None` while it is not
    /// cancelled (blocking: reads the database).
    pub fn alert_cancelled(&self, alert: u64) -> Result<Option<(TerminalId, u64)>, store::Error> {
        self.hub.desk().store().cancelled(alert)
    }

    /// The terminal holding the floor of `group`.
    pub fn holder(&self, group: GroupId) -> Option<TerminalId> {
        self.hub.group(group).and_then(|g| g.holder())
    }

    /// Reads the revocation list from the store now and closes the
    /// sessions of terminals newly revoked (`REVOKED`). The gateway does
    /// this every `auth.revocation_poll_ms` by itself; call it on SIGHUP.
    pub async fn refresh_revocations(&self) {
        self.hub.refresh_revocations().await;
    }

    /// Reads the org file again and swaps it in if it loads whole with the
    /// same provisioning key (see [`crate::reload`]); any error leaves the
    /// running org serving. Call on SIGHUP. Blocks while it reads the file.
    pub fn reload_org(&self) -> Result<crate::reload::Outcome, crate::reload::Error> {
        self.hub.reload_org()
    }

    /// The org generation serving: 0 at start, one more per reload.
    pub fn org_generation(&self) -> u64 {
        self.hub.org_generation()
    }

    /// Serves the operations surface (metrics, health, admin API) on
    /// `listener` until the returned future is dropped. Spawn it beside
    /// [`Gateway::run`].
    pub fn serve_http(&self, listener: crate::http::Listener) -> impl Future<Output = ()> {
        crate::http::serve(self.hub.clone(), listener)
    }

    /// Serves `endpoint` until `shutdown` completes, then closes every
    /// connection with [`CloseCode::ServerShutdown`] and waits (up to 5 s)
    /// for sessions to end.
    pub async fn run(self, endpoint: quinn::Endpoint, shutdown: impl Future<Output = ()>) {
        let mut sessions = JoinSet::new();
        let receipt_writer = self.hub.desk().receipt_writer().map(tokio::spawn);
        let audit_stop = Arc::new(tokio::sync::Notify::new());
        let audit = self.hub.audit_writer(audit_stop.clone()).map(tokio::spawn);
        let sweep = tokio::spawn(crate::ops::attachments::sweep(self.hub.clone()));
        let revocations = tokio::spawn(crate::hub::poll_revocations(self.hub.clone()));
        let retention = tokio::spawn(crate::ops::upkeep::retention(self.hub.clone()));
        let disk_watch = tokio::spawn(crate::ops::upkeep::watch_disk(self.hub.clone()));
        let consoles = tokio::spawn(crate::hub::console_upkeep(self.hub.clone()));
        if let Ok(addr) = endpoint.local_addr() {
            let _ = self.hub.status().quic_addr.set(addr);
        }
        tokio::pin!(shutdown);
        tracing::info!(addr = ?endpoint.local_addr().ok(), groups = self.hub.group_count(), "gateway listening");
        let accepting = &self.hub.status().accepting;
        accepting.store(true, std::sync::atomic::Ordering::Relaxed);
        let transport = &self.hub.config().transport;
        let mut admission = Admission::new(Limits {
            max_wait: Duration::from_millis(u64::from(transport.handshake_queue_ms)),
            retry_from: transport.retry_from,
            per_address: transport.handshakes_per_address,
            per_proven_address: transport.handshakes_per_proven_address,
        });
        // Handshake slots given back, so that admission counts what is in
        // handshake per address. Never closed: `done` lives as long.
        let (done, mut finished) = mpsc::unbounded_channel();
        let mut warned: Option<std::time::Instant> = None;
        loop {
            let expiry = admission.next_expiry().map(tokio::time::Instant::from_std);
            tokio::select! {
                incoming = endpoint.accept() => {
                    let Some(incoming) = incoming else { break };
                    self.arrived(&mut admission, incoming, &mut warned);
                }
                // The semaphore is never closed.
                Ok(permit) = self.hub.handshakes().clone().acquire_owned(), if !admission.is_empty() => {
                    if let Some((ticket, incoming)) = admission.start() {
                        let slot = Slot { _permit: permit, ticket, done: done.clone() };
                        sessions.spawn(session::run(self.hub.clone(), incoming, slot));
                    }
                }
                Some(ticket) = finished.recv() => admission.finished(ticket),
                () = tokio::time::sleep_until(expiry.unwrap_or_else(tokio::time::Instant::now)), if expiry.is_some() => {}
                Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
                () = &mut shutdown => break,
            }
            for stale in admission.expired(std::time::Instant::now()) {
                Metrics::add(&self.hub.metrics().handshakes_expired, 1);
                stale.ignore();
            }
        }
        tracing::info!(sessions = sessions.len(), "shutting down");
        accepting.store(false, std::sync::atomic::Ordering::Relaxed);
        self.hub.leave_cluster().await;
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
        sweep.abort();
        revocations.abort();
        retention.abort();
        disk_watch.abort();
        consoles.abort();
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
        // Every burst recorded so far made durable before the line below.
        let hub = self.hub.clone();
        let _ = tokio::task::spawn_blocking(move || hub.recorder().map(|r| r.stop())).await;
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
