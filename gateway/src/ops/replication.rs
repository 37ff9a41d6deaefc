//! Alerts and receipts across a cluster's nodes (docs/notes/h-alerts.md).
//!
//! The cluster's JetStream stream (`crate::cluster::alerts`) is the source
//! of truth; each node's SQLite store is its local copy and view. An alert
//! is written to the stream, and acknowledged by it, before its issuer is
//! told `AlertAccepted`. Every node reads the stream with a durable
//! consumer of its own, stores each alert (once: by id) and delivers it to
//! its recipients connected there, and applies each receipt (receipts only
//! move forward), telling the issuer if it is connected there. A terminal
//! that moves to another node gets what it missed from that node's store,
//! as on one node.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use ptt_codec::{AlertBody, ServerMsg, TerminalId};

use super::alerts::{deliver_all, Stored, Unstored};
use crate::clock::now_ms;
use crate::cluster::alerts::{AlertRecord, ReceiptRecord, Record};
use crate::cluster::Cluster;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::store::{self, ReceiptIn, CLUSTER_IDS};

/// How long a joining node waits for its consumer before it accepts
/// terminals anyway (it keeps trying meanwhile): a new NATS cluster elects
/// its JetStream leader in a few seconds.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// The longest pause before reading the stream again after a failure.
const MAX_RETRY: Duration = Duration::from_secs(5);

/// How long one pull request waits for records.
const PULL_EXPIRES: Duration = Duration::from_secs(5);

/// The server's heartbeat on an idle pull; two missed are a read error.
const PULL_HEARTBEAT: Duration = Duration::from_secs(1);

/// Read errors in a row after which the consumer is opened again.
const ERRORS_BEFORE_REOPEN: u32 = 5;

/// Starts this node's consumer of the cluster's alerts, if it is a cluster
/// node, and waits (up to [`READY_WITHIN`]) until it reads. Call once,
/// after joining the cluster and before accepting terminals.
pub(crate) async fn start(hub: &Arc<Hub>) {
    let Some(cluster) = hub.cluster().cloned() else {
        return;
    };
    let (ready, reading) = tokio::sync::oneshot::channel();
    tokio::spawn(consume(hub.clone(), cluster, ready));
    if tokio::time::timeout(READY_WITHIN, reading).await.is_err() {
        tracing::error!(
            "the cluster's alert stream is not readable yet; alerts wait for it (AlertSend is refused until it is)"
        );
    }
}

/// Stores an alert `issuer` sends on a cluster node: its attachments
/// sized from this store, its record acknowledged by the cluster's stream
/// (which gives its id), then stored here. `fresh` says whether this call
/// stored it here (and must deliver it) or this node's consumer was first.
pub(super) async fn store(
    hub: &Arc<Hub>,
    cluster: &Arc<Cluster>,
    issuer: TerminalId,
    mut body: AlertBody,
    target: String,
    created_ms: u64,
    recipients: &[TerminalId],
) -> Result<Stored, Unstored> {
    let ids: Vec<u64> = body.attachments.iter().map(|a| a.id).collect();
    // The gateway, not the sender, says how large each attachment is.
    body.attachments = hub
        .desk()
        .blocking(move |s| s.attachment_refs(issuer, &ids))
        .await
        .map_err(Unstored::Store)?;
    let record = AlertRecord::new(issuer, &body, target.clone(), created_ms, recipients);
    // One key for every try of this AlertSend.
    let key = format!("a-{}-{:016x}", cluster.me(), rand::random::<u64>());
    let id = cluster
        .publish_alert(&key, &record)
        .await
        .map_err(Unstored::Cluster)?;
    let (stored_body, to) = (body.clone(), recipients.to_vec());
    let here = hub
        .desk()
        .blocking(move |s| {
            s.store_cluster_alert(id, issuer, &stored_body, &target, created_ms, &to)
        })
        .await;
    let fresh = match here {
        Ok(Some(kept)) => {
            body.attachments = kept;
            true
        }
        Ok(None) => false,
        // It is in the stream: confirmed. This node's consumer stores and
        // delivers it when its store takes writes again.
        Err(e) => {
            tracing::error!(
                alert = id,
                "storing a confirmed cluster alert here failed: {e}"
            );
            false
        }
    };
    Ok(Stored { id, body, fresh })
}

/// Shares a receipt for cluster alert `alert` (at least [`CLUSTER_IDS`])
/// that this node stored; false if the stream did not acknowledge it (the
/// terminal is told to send it again). Other alerts are this node's alone:
/// true.
pub(super) async fn share_receipt(hub: &Hub, receipt: &ReceiptIn) -> bool {
    let Some(cluster) = hub.cluster() else {
        return true;
    };
    if receipt.alert < CLUSTER_IDS {
        return true;
    }
    let record = ReceiptRecord {
        alert: receipt.alert,
        terminal: receipt.terminal.0,
        status: receipt.status.code(),
        at_ms: receipt.at_ms,
        reason: receipt.reason.clone(),
    };
    match cluster.publish_receipt(&record).await {
        Ok(()) => true,
        // Stored here, and shared as soon as the stream takes writes again:
        // confirmed to the terminal (its automatic `Delivered` is never
        // sent again, so telling it to resend would lose it).
        Err(_) if cluster.share_later(record) => {
            Metrics::add(&hub.metrics().cluster_receipts_deferred, 1);
            true
        }
        Err(e) => {
            Metrics::add(&hub.metrics().cluster_receipts_unconfirmed, 1);
            if hub.desk().warn_due(now_ms()) {
                tracing::error!(
                    terminal = %receipt.terminal,
                    alert = receipt.alert,
                    "receipt not shared with the cluster, the terminal is told to resend it: {e} \
                     (further cases counted, not logged, for 10 s)"
                );
            }
            false
        }
    }
}

/// Reads the cluster's alert stream for the gateway's life: opens (creates
/// or updates) the stream and this node's consumer, then applies every
/// record in order; opens them again after failures, with backoff.
async fn consume(hub: Arc<Hub>, cluster: Arc<Cluster>, ready: tokio::sync::oneshot::Sender<()>) {
    let mut ready = Some(ready);
    let mut retry = Duration::from_millis(100);
    loop {
        match read(&hub, &cluster, &mut ready).await {
            Ok(()) => retry = Duration::from_millis(100),
            Err(e) => {
                tracing::warn!(node = %cluster.me(), "reading the alert stream: {e}; again in {retry:?}")
            }
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(MAX_RETRY);
    }
}

/// Opens the stream and the consumer and applies records until reading
/// fails [`ERRORS_BEFORE_REOPEN`] times in a row or the consumer ends.
async fn read(
    hub: &Arc<Hub>,
    cluster: &Arc<Cluster>,
    ready: &mut Option<tokio::sync::oneshot::Sender<()>>,
) -> Result<(), crate::cluster::alerts::Error> {
    use crate::cluster::alerts::Error;
    cluster.ensure_alert_stream().await?;
    let consumer = cluster.alert_consumer().await?;
    // Short pulls with heartbeats: a pull left on a NATS server that died
    // is noticed and made again within seconds, not the default 30 s.
    let mut messages = consumer
        .stream()
        .expires(PULL_EXPIRES)
        .heartbeat(PULL_HEARTBEAT)
        .messages()
        .await
        .map_err(|e| Error::Stream(e.to_string()))?;
    tracing::info!(node = %cluster.me(), "reading the cluster's alert stream");
    if let Some(ready) = ready.take() {
        let _ = ready.send(());
    }
    let mut errors = 0;
    while let Some(message) = messages.next().await {
        match message {
            Ok(message) => {
                errors = 0;
                apply(hub, message).await;
            }
            // Missed heartbeats while a NATS server is replaced: the
            // client pulls again by itself.
            Err(e) => {
                errors += 1;
                if errors >= ERRORS_BEFORE_REOPEN {
                    return Err(Error::Stream(e.to_string()));
                }
                tracing::debug!("alert stream read error: {e}");
            }
        }
    }
    Ok(())
}

/// Applies one record: stores an alert (and delivers it here if this
/// stored it), applies a receipt (and tells the issuer here if it moved a
/// status forward). Acknowledges it once written, or when it can never be
/// (malformed, for an alert this node does not hold); leaves it for the
/// stream to send again when the write failed.
async fn apply(hub: &Arc<Hub>, message: async_nats::jetstream::Message) {
    let m = hub.metrics();
    Metrics::add(&m.cluster_alert_records_in, 1);
    let sequence = match message.info() {
        Ok(info) => info.stream_sequence,
        Err(e) => {
            Metrics::add(&m.cluster_alert_records_skipped, 1);
            if hub.desk().warn_due(now_ms()) {
                tracing::warn!("alert stream message without its sequence, skipped: {e}");
            }
            ack(&message).await;
            return;
        }
    };
    let record = match Record::decode(message.subject.as_str(), sequence, &message.payload) {
        Ok(record) => record,
        Err(e) => {
            Metrics::add(&m.cluster_alert_records_skipped, 1);
            if hub.desk().warn_due(now_ms()) {
                tracing::warn!(
                    sequence,
                    "malformed record in the alert stream, skipped: {e}"
                );
            }
            ack(&message).await;
            return;
        }
    };
    match record {
        Record::Alert(id, alert) => {
            let recipients = alert.recipients();
            let mut body = alert.body();
            let (stored_body, to) = (body.clone(), recipients.clone());
            let target = alert.target;
            let stored = hub
                .desk()
                .blocking(move |s| {
                    s.store_cluster_alert(
                        id,
                        TerminalId(alert.issuer),
                        &stored_body,
                        &target,
                        alert.created_ms,
                        &to,
                    )
                })
                .await;
            match stored {
                Ok(Some(kept)) => {
                    ack(&message).await;
                    Metrics::add(&m.cluster_alerts_replicated, 1);
                    hub.desk().mark_pending(&recipients);
                    body.attachments = kept;
                    let msg = ServerMsg::Alert {
                        alert: id,
                        issuer: TerminalId(alert.issuer),
                        created_ms: alert.created_ms,
                        expires_ms: alert
                            .created_ms
                            .saturating_add(u64::from(body.ttl_s) * 1000),
                        body,
                    };
                    let hub = hub.clone();
                    tokio::spawn(async move { deliver_all(&hub, id, &recipients, msg).await });
                }
                Ok(None) => ack(&message).await,
                Err(e) => {
                    Metrics::add(&m.cluster_alert_records_failed, 1);
                    if hub.desk().warn_due(now_ms()) {
                        tracing::error!(
                            alert = id,
                            "storing a cluster alert failed, the stream sends it again: {e}"
                        );
                    }
                }
            }
        }
        Record::Receipt(r) => {
            let receipt = ReceiptIn {
                alert: r.alert,
                terminal: TerminalId(r.terminal),
                status: r.status(),
                at_ms: r.at_ms,
                reason: r.reason.clone(),
            };
            // Queued here, in stream order; written by the desk's
            // group-commit writer.
            let pending = hub.desk().queue_receipt(receipt);
            let hub = hub.clone();
            tokio::spawn(async move {
                let m = hub.metrics();
                match pending.stored().await {
                    Ok(store::Receipt::Advanced { issuer, status }) => {
                        ack(&message).await;
                        Metrics::add(&m.cluster_receipts_replicated, 1);
                        super::alerts::tell_issuer(
                            &hub,
                            issuer,
                            ServerMsg::ReceiptUpdate {
                                alert: r.alert,
                                terminal: TerminalId(r.terminal),
                                status,
                                at_ms: r.at_ms,
                                reason: r.reason,
                            },
                        );
                    }
                    Ok(store::Receipt::Duplicate { .. } | store::Receipt::Invalid(_)) => {
                        ack(&message).await
                    }
                    Ok(store::Receipt::UnknownAlert | store::Receipt::NotRecipient) => {
                        Metrics::add(&m.cluster_alert_records_skipped, 1);
                        ack(&message).await;
                    }
                    Err(e) => {
                        Metrics::add(&m.cluster_alert_records_failed, 1);
                        if hub.desk().warn_due(now_ms()) {
                            tracing::error!(
                                alert = r.alert,
                                terminal = r.terminal,
                                "applying a cluster receipt failed, the stream sends it again: {e}"
                            );
                        }
                    }
                }
            });
        }
    }
}

/// Acknowledges a record to the stream. A lost acknowledgement makes the
/// stream send it again, which is harmless: every record applies once.
async fn ack(message: &async_nats::jetstream::Message) {
    if let Err(e) = message.ack().await {
        tracing::debug!("acknowledging an alert stream record: {e}");
    }
}
