//! Alerts: `AlertSend` (check, store, confirm, deliver on unidirectional
//! streams), store and forward on reconnect, `AlertReceipt` (record, confirm,
//! tell the issuer) and `AlertQuery`.

use std::sync::Arc;

use crate::link::Link;
use bytes::BytesMut;
use ptt_codec::control::kind;
use ptt_codec::{
    AlertBody, AlertKind, AttachmentRef, ErrorCode, ReceiptStatus, ServerMsg, Target, TerminalId,
};

use super::{attachments, Caller, Error};
use crate::clock::now_ms;
use crate::hub::{self, Hub, Urgency};
use crate::metrics::Metrics;
use crate::store;
use ptt_gateway_core::recipients;

fn alert_msg(a: &store::StoredAlert) -> ServerMsg {
    ServerMsg::Alert {
        alert: a.id,
        issuer: a.issuer,
        created_ms: a.created_ms,
        expires_ms: a.expires_ms,
        body: a.body.clone(),
    }
}

/// Sends one alert to `terminal` on a new unidirectional stream, then its
/// attachments (screens and consoles only: `attachments` is empty for
/// others). Returns whether the alert was handed over.
///
/// A terminal holds at most `delivery.per_terminal` deliveries in flight,
/// and each has `delivery.write_timeout_ms` to get the terminal's stream
/// credit and be written: a terminal that does not read holds its own
/// places and a shared one for that long at most. Failure is fine: the
/// alert stays pending in the store and is sent again on reconnect;
/// attachments can be fetched.
async fn deliver(
    hub: Arc<Hub>,
    conn: Link,
    terminal: TerminalId,
    msg: ServerMsg,
    urgency: Urgency,
    attachments: Option<Arc<Vec<AttachmentRef>>>,
) -> bool {
    let mut buf = BytesMut::new();
    msg.encode(&mut buf);
    let timeout = hub.config().delivery.write_timeout();
    let Some(slot) = hub.desk().delivery_slot(terminal, urgency, timeout).await else {
        Metrics::add(&hub.metrics().alert_delivery_recipient_busy, 1);
        warn_undelivered(
            &hub,
            terminal,
            &msg,
            "its deliveries in flight are not read",
        );
        return false;
    };
    let result = async {
        let mut stream = tokio::time::timeout(timeout, conn.open_uni())
            .await
            .map_err(|_| TimedOut)??;
        match tokio::time::timeout(timeout, stream.write_all(&buf)).await {
            Ok(written) => written?,
            Err(_) => {
                // Give back what quinn buffered for it.
                let _ = stream.reset(quinn::VarInt::from_u32(0));
                return Err(TimedOut.into());
            }
        }
        stream.finish()?;
        Ok::<_, DeliveryError>(())
    }
    .await;
    drop(slot);
    match result {
        Ok(()) => {}
        Err(DeliveryError::TimedOut(_)) => {
            Metrics::add(&hub.metrics().alert_delivery_timed_out, 1);
            warn_undelivered(&hub, terminal, &msg, "it did not read it in time");
            return false;
        }
        Err(DeliveryError::Failed(e)) => {
            tracing::debug!("alert delivery failed, kept for reconnect: {e}");
            return false;
        }
    }
    Metrics::add(&hub.metrics().alerts_delivered, 1);
    if let (Some(attachments), ServerMsg::Alert { alert, .. }) = (attachments, &msg) {
        attachments::push(hub, conn, terminal, *alert, attachments).await;
    }
    true
}

/// A delivery took longer than `delivery.write_timeout_ms`.
#[derive(Debug, thiserror::Error)]
#[error("delivery timed out")]
struct TimedOut;

/// Why a delivery was not handed over.
#[derive(Debug, thiserror::Error)]
enum DeliveryError {
    /// The recipient did not take it in time.
    #[error(transparent)]
    TimedOut(#[from] TimedOut),
    /// The connection or the stream failed.
    #[error(transparent)]
    Failed(#[from] Error),
}

impl From<quinn::ConnectionError> for DeliveryError {
    fn from(e: quinn::ConnectionError) -> Self {
        DeliveryError::Failed(e.into())
    }
}

impl From<quinn::WriteError> for DeliveryError {
    fn from(e: quinn::WriteError) -> Self {
        DeliveryError::Failed(e.into())
    }
}

impl From<quinn::ClosedStream> for DeliveryError {
    fn from(e: quinn::ClosedStream) -> Self {
        DeliveryError::Failed(e.into())
    }
}

/// Logs (rate-limited) that `msg` was not delivered to `terminal`, and why.
fn warn_undelivered(hub: &Hub, terminal: TerminalId, msg: &ServerMsg, cause: &str) {
    if hub.desk().warn_due(now_ms()) {
        let alert = match msg {
            ServerMsg::Alert { alert, .. } => *alert,
            _ => 0,
        };
        tracing::warn!(
            %terminal,
            alert,
            "alert not delivered, kept for its reconnect: {cause} (further cases counted, not logged, for 10 s)"
        );
    }
}

/// How urgent delivering `msg` live is: SOS and dispatch use the whole
/// delivery window, everything else its routine share.
fn urgency(msg: &ServerMsg) -> Urgency {
    match msg {
        ServerMsg::Alert { body, .. }
            if matches!(body.kind, AlertKind::Sos | AlertKind::Dispatch) =>
        {
            Urgency::Urgent
        }
        _ => Urgency::Routine,
    }
}

/// The order a terminal coming online gets its missed alerts in: SOS first,
/// then dispatches, then the rest, each oldest first.
fn backlog_rank(a: &store::StoredAlert) -> u8 {
    match a.body.kind {
        AlertKind::Sos => 0,
        AlertKind::Dispatch => 1,
        _ => 2,
    }
}

/// The attachments to push with an alert to terminals that get them: the
/// references the store gave it (each once, sized by the gateway); their
/// content is streamed from the store when pushed.
fn pushed_attachments(msg: &ServerMsg) -> Option<Arc<Vec<AttachmentRef>>> {
    match msg {
        ServerMsg::Alert { body, .. } if !body.attachments.is_empty() => {
            Some(Arc::new(body.attachments.clone()))
        }
        _ => None,
    }
}

/// Whether `terminal` gets attachments pushed.
fn gets_attachments(hub: &Hub, terminal: TerminalId) -> bool {
    hub.org()
        .terminal(terminal)
        .is_some_and(|t| attachments::gets_attachments(t.kind))
}

/// `AlertSend`: check, store, confirm, deliver to everyone online.
pub(crate) async fn send(cx: Caller, request: u32, body: AlertBody, target: Target) {
    let (hub, issuer, outbox) = (&cx.hub, cx.terminal, &cx.outbox);
    let online = |t: TerminalId| hub.registry().is_online(t);
    let recipients = match recipients::resolve(
        &hub.org(),
        hub.watch().positions(),
        online,
        issuer,
        &body,
        &target,
        now_ms(),
    ) {
        Ok(r) => r,
        Err(refusal) => {
            tracing::info!(code = ?refusal.to_code(), "alert refused: {refusal}");
            outbox.send(ServerMsg::AlertRefused {
                request,
                code: refusal.to_code(),
                message: refusal.to_string(),
            });
            return;
        }
    };
    let created_ms = now_ms();
    let described = recipients::describe(&target);
    let named = body.attachments.len();
    let stored = match hub.cluster() {
        Some(cluster) => {
            super::replication::store(
                hub,
                cluster,
                issuer,
                body,
                described,
                created_ms,
                &recipients,
            )
            .await
        }
        None => store_here(hub, issuer, body, described, created_ms, &recipients).await,
    };
    let Stored { id, body, fresh } = match stored {
        Ok(stored) => {
            Metrics::add(&hub.metrics().alerts_created, 1);
            // A report naming one photo eight times carries it once.
            let repeated = named.saturating_sub(stored.body.attachments.len());
            Metrics::add(&hub.metrics().attachment_refs_deduplicated, repeated as u64);
            stored
        }
        Err(Unstored::Store(hub::Error::Store(store::Error::UnknownAttachment(a)))) => {
            outbox.send(ServerMsg::AlertRefused {
                request,
                code: ErrorCode::UnknownAttachment,
                message: format!("attachment {a} is unknown or not yours; upload it first"),
            });
            return;
        }
        Err(Unstored::Store(e)) if super::count_full(hub, &e) => {
            tracing::error!("alert not stored, the disk is full: {e}");
            outbox.send(ServerMsg::AlertRefused {
                request,
                code: ErrorCode::StorageFull,
                message: "the gateway's disk is full: the alert was NOT stored or sent; \
                          use the radio or telephone"
                    .into(),
            });
            return;
        }
        Err(Unstored::Store(e)) => {
            tracing::error!("storing an alert failed: {e}");
            outbox.send(ServerMsg::AlertRefused {
                request,
                code: ErrorCode::Internal,
                message: "the alert could not be stored; nothing was sent".into(),
            });
            return;
        }
        Err(Unstored::Cluster(e)) => {
            Metrics::add(&hub.metrics().cluster_alerts_unconfirmed, 1);
            if hub.desk().warn_due(now_ms()) {
                tracing::error!(
                    terminal = %issuer,
                    "alert refused, the cluster did not store it: {e} \
                     (further cases counted, not logged, for 10 s)"
                );
            }
            outbox.send(ServerMsg::AlertRefused {
                request,
                code: ErrorCode::Internal,
                message: "the gateway cluster could not store the alert (its NATS stream \
                          did not answer): it was NOT sent; retry, or use the radio or telephone"
                    .into(),
            });
            return;
        }
    };
    tracing::info!(alert = id, recipients = recipients.len(), "alert stored");
    hub.desk().mark_pending(&recipients);
    outbox.send(ServerMsg::AlertAccepted {
        request,
        alert: id,
        recipients: recipients.len() as u32,
    });
    let msg = ServerMsg::Alert {
        alert: id,
        issuer,
        created_ms,
        expires_ms: created_ms.saturating_add(u64::from(body.ttl_s) * 1000),
        body,
    };
    // On a cluster node, this node's consumer of the cluster's alerts may
    // have stored it first: then it delivers.
    if fresh {
        deliver_all(hub, id, &recipients, msg).await;
    }
}

/// An alert on disk, as `AlertAccepted` confirms it.
#[derive(Debug)]
pub(super) struct Stored {
    /// Its id.
    pub(super) id: u64,
    /// Its body, attachments as stored.
    pub(super) body: AlertBody,
    /// Whether this call stored it here, and so delivers it here.
    pub(super) fresh: bool,
}

/// Why an alert was not stored.
#[derive(Debug, thiserror::Error)]
pub(super) enum Unstored {
    /// This node's store refused or failed.
    #[error(transparent)]
    Store(hub::Error),
    /// The cluster's stream did not acknowledge it.
    #[error(transparent)]
    Cluster(crate::cluster::alerts::Error),
}

/// Stores an alert on a single node: its attachments sized, the alert and
/// its recipients in one transaction.
async fn store_here(
    hub: &Arc<Hub>,
    issuer: TerminalId,
    mut body: AlertBody,
    described: String,
    created_ms: u64,
    recipients: &[TerminalId],
) -> Result<Stored, Unstored> {
    let recipients = recipients.to_vec();
    hub.desk()
        .blocking(move |s| {
            // The gateway, not the sender, says how large each attachment is.
            let ids: Vec<u64> = body.attachments.iter().map(|a| a.id).collect();
            body.attachments = s.attachment_refs(issuer, &ids)?;
            let id = s.create_alert(issuer, &body, &described, created_ms, &recipients)?;
            Ok(Stored {
                id,
                body,
                fresh: true,
            })
        })
        .await
        .map_err(Unstored::Store)
}

/// Sends `update` (a `ReceiptUpdate`) to `issuer` if it is connected to
/// this node; counted when its outbox is too full to take it.
pub(super) fn tell_issuer(hub: &Hub, issuer: TerminalId, update: ServerMsg) {
    if let Some(issuer_outbox) = hub.registry().outbox(issuer) {
        if !issuer_outbox.send_droppable(update) {
            Metrics::add(&hub.metrics().receipt_updates_dropped, 1);
        }
    }
}

/// Hands `msg` to every recipient online (a bounded window at a time) and
/// logs how long the whole fan-out took.
pub(super) async fn deliver_all(
    hub: &Arc<Hub>,
    alert: u64,
    recipients: &[TerminalId],
    msg: ServerMsg,
) {
    let started = std::time::Instant::now();
    let attachments = pushed_attachments(&msg);
    let mut deliveries = tokio::task::JoinSet::new();
    let urgency = urgency(&msg);
    for r in recipients {
        if let Some(conn) = hub.registry().conn(*r) {
            let push = attachments.clone().filter(|_| gets_attachments(hub, *r));
            deliveries.spawn(deliver(hub.clone(), conn, *r, msg.clone(), urgency, push));
        }
    }
    let online = deliveries.len();
    while deliveries.join_next().await.is_some() {}
    tracing::info!(
        alert,
        online,
        "alert handed to every recipient online in {:?}",
        started.elapsed()
    );
}

/// Delivers what a terminal missed while offline: every alert first (SOS,
/// then dispatches, then the rest, each oldest first), then the photos of
/// those that carry them. Stops at the first alert the terminal does not
/// take; the rest stay in the store for its next connection. Call once its
/// session is registered.
pub(crate) async fn forward_undelivered(cx: Caller) {
    let (hub, terminal) = (&cx.hub, cx.terminal);
    let now = now_ms();
    match hub
        .desk()
        .blocking(move |s| s.undelivered(terminal, now))
        .await
    {
        Ok(mut alerts) => {
            if alerts.is_empty() {
                // An alert created meanwhile is delivered directly: the
                // terminal is online.
                hub.desk().clear_pending(terminal);
            } else {
                tracing::info!(
                    alerts = alerts.len(),
                    "forwarding alerts missed while offline"
                );
            }
            alerts.sort_by_key(backlog_rank);
            let push = gets_attachments(hub, terminal);
            let mut photos = Vec::new();
            for a in alerts {
                let msg = alert_msg(&a);
                let refs = pushed_attachments(&msg).filter(|_| push);
                if !deliver(
                    hub.clone(),
                    cx.conn.clone(),
                    terminal,
                    msg,
                    Urgency::Routine,
                    None,
                )
                .await
                {
                    return;
                }
                if let Some(refs) = refs {
                    photos.push((a.id, refs));
                }
            }
            for (alert, refs) in photos {
                attachments::push(hub.clone(), cx.conn.clone(), terminal, alert, refs).await;
            }
        }
        Err(e) => tracing::error!("reading undelivered alerts failed: {e}"),
    }
}

/// `AlertReceipt`: store it, confirm it, tell the issuer.
///
/// The receipt is queued for the writer here, synchronously, so a
/// terminal's receipts are stored in the order it sent them (accepted before
/// arrived); the returned future waits for the write and answers.
pub(crate) fn receipt(
    cx: Caller,
    alert: u64,
    status: ReceiptStatus,
    reason: String,
) -> impl std::future::Future<Output = ()> + Send {
    let at_ms = now_ms();
    let receipt = store::ReceiptIn {
        alert,
        terminal: cx.terminal,
        status,
        at_ms,
        reason: reason.clone(),
    };
    let pending = cx.hub.desk().queue_receipt(receipt.clone());
    async move {
        let result = pending.stored().await;
        // On a cluster node, a receipt is confirmed once the cluster's
        // stream holds it too (a duplicate again: its first share may have
        // failed).
        let stored = matches!(
            result,
            Ok(store::Receipt::Advanced { .. } | store::Receipt::Duplicate { .. })
        );
        if stored && !super::replication::share_receipt(&cx.hub, &receipt).await {
            if let Ok(store::Receipt::Advanced { issuer, status }) = result {
                tell_issuer(
                    &cx.hub,
                    issuer,
                    ServerMsg::ReceiptUpdate {
                        alert,
                        terminal: cx.terminal,
                        status,
                        at_ms,
                        reason,
                    },
                );
            }
            cx.error(
                ErrorCode::Internal,
                kind::ALERT_RECEIPT,
                "receipt stored on this node but not shared with the cluster; send it again",
            );
            return;
        }
        answer_receipt(&cx, alert, at_ms, reason, result);
    }
}

fn answer_receipt(
    cx: &Caller,
    alert: u64,
    at_ms: u64,
    reason: String,
    result: Result<store::Receipt, hub::Error>,
) {
    let frame = kind::ALERT_RECEIPT;
    match result {
        Ok(store::Receipt::Advanced { issuer, status }) => {
            let m = cx.hub.metrics();
            let counter = match status {
                ReceiptStatus::Delivered => Some(&m.receipts_delivered),
                ReceiptStatus::Read => Some(&m.receipts_read),
                ReceiptStatus::Accepted => Some(&m.receipts_accepted),
                ReceiptStatus::Rejected => Some(&m.receipts_rejected),
                ReceiptStatus::Arrived => Some(&m.receipts_arrived),
                ReceiptStatus::Resolved => Some(&m.receipts_resolved),
                // Never sent by terminals (refused before it is stored).
                ReceiptStatus::Pending => None,
            };
            if let Some(counter) = counter {
                Metrics::add(counter, 1);
            }
            cx.outbox.send(ServerMsg::ReceiptSaved { alert, status });
            let update = ServerMsg::ReceiptUpdate {
                alert,
                terminal: cx.terminal,
                status,
                at_ms,
                reason,
            };
            tell_issuer(&cx.hub, issuer, update);
        }
        Ok(store::Receipt::Duplicate { status }) => {
            cx.outbox.send(ServerMsg::ReceiptSaved { alert, status })
        }
        Ok(store::Receipt::UnknownAlert) => {
            cx.error(ErrorCode::UnknownAlert, frame, format!("no alert {alert}"))
        }
        Ok(store::Receipt::NotRecipient) => cx.error(
            ErrorCode::NotRecipient,
            frame,
            format!("alert {alert} was not sent to you"),
        ),
        Ok(store::Receipt::Invalid(e)) => cx.error(ErrorCode::InvalidReceipt, frame, e.to_string()),
        Err(e) if super::count_full(&cx.hub, &e) => {
            tracing::error!("receipt not stored, the disk is full: {e}");
            cx.error(
                ErrorCode::StorageFull,
                frame,
                "the gateway's disk is full: receipt NOT stored; send it again later",
            );
        }
        Err(e) => {
            tracing::error!("storing a receipt failed: {e}");
            cx.error(
                ErrorCode::Internal,
                frame,
                "receipt not stored; send it again",
            );
        }
    }
}

/// `AlertQuery`: the issuer's summary of who got how far.
pub(crate) async fn query(cx: Caller, alert: u64) {
    let now = now_ms();
    match cx.hub.desk().blocking(move |s| s.status(alert, now)).await {
        Ok(Some((issuer, recipients, counts))) if issuer == cx.terminal => {
            cx.outbox.send(ServerMsg::AlertStatus {
                alert,
                recipients,
                counts,
            });
        }
        Ok(_) => cx.error(
            ErrorCode::UnknownAlert,
            kind::ALERT_QUERY,
            format!("no alert {alert} of yours"),
        ),
        Err(e) => {
            tracing::error!("reading alert status failed: {e}");
            cx.error(
                ErrorCode::Internal,
                kind::ALERT_QUERY,
                "status unavailable; retry",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(id: u64, kind: AlertKind) -> store::StoredAlert {
        store::StoredAlert {
            id,
            issuer: TerminalId(300),
            body: AlertBody {
                kind,
                priority: 1,
                ttl_s: 60,
                title: String::new(),
                text: String::new(),
                location: None,
                attachments: Vec::new(),
            },
            created_ms: id,
            expires_ms: id + 60_000,
        }
    }

    #[test]
    fn a_backlog_goes_sos_first_then_dispatches_then_the_rest_oldest_first() {
        let mut backlog = [
            stored(1, AlertKind::Notice),
            stored(2, AlertKind::Dispatch),
            stored(3, AlertKind::Sos),
            stored(4, AlertKind::Dispatch),
            stored(5, AlertKind::Sos),
        ];
        backlog.sort_by_key(backlog_rank);
        let order: Vec<u64> = backlog.iter().map(|a| a.id).collect();
        assert_eq!(order, [3, 5, 2, 4, 1]);
    }

    #[test]
    fn live_sos_and_dispatch_are_urgent() {
        for (kind, urgent) in [
            (AlertKind::Sos, Urgency::Urgent),
            (AlertKind::Dispatch, Urgency::Urgent),
            (AlertKind::Notice, Urgency::Routine),
        ] {
            assert_eq!(urgency(&alert_msg(&stored(1, kind))), urgent, "{kind:?}");
        }
    }
}
