//! The async side of alerts within a session: store, confirm, deliver on
//! unidirectional streams, record receipts, tell the issuer.

use std::sync::Arc;

use bytes::BytesMut;
use ptt_codec::control::kind;
use ptt_codec::{AlertBody, ErrorCode, GroupId, ReceiptStatus, ServerMsg, Target, TerminalId};
use quinn::Connection;

use crate::alert::{now_ms, store, Service};
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::server::Shared;
use crate::session_streams as streams;

/// Runs a blocking store call off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    shared: &Arc<Shared>,
    f: impl FnOnce(&store::Store) -> T + Send + 'static,
) -> Option<T> {
    let store = shared.store.clone();
    tokio::task::spawn_blocking(move || f(&store)).await.ok()
}

fn alert_msg(a: &store::StoredAlert) -> ServerMsg {
    ServerMsg::Alert {
        alert: a.id,
        issuer: a.issuer,
        created_ms: a.created_ms,
        expires_ms: a.expires_ms,
        body: a.body.clone(),
    }
}

/// Sends one alert on a new unidirectional stream, then its attachments
/// (screens and consoles only: `attachments` is empty for others).
/// Failure is fine: the alert stays pending in the store and is sent again
/// on reconnect; attachments can be fetched.
async fn deliver(
    shared: Arc<Shared>,
    conn: Connection,
    msg: ServerMsg,
    attachments: Option<Arc<Vec<store::Attachment>>>,
) {
    let mut buf = BytesMut::new();
    msg.encode(&mut buf);
    // The semaphore is never closed, so acquiring only waits.
    let Ok(_permit) = shared.deliveries.acquire().await else {
        return;
    };
    let result = async {
        let mut stream = conn.open_uni().await?;
        stream.write_all(&buf).await?;
        stream.finish()?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    }
    .await;
    if let Err(e) = result {
        tracing::debug!("alert delivery failed, kept for reconnect: {e}");
        return;
    }
    drop(_permit);
    if let (Some(attachments), ServerMsg::Alert { alert, .. }) = (attachments, &msg) {
        streams::push(conn, *alert, attachments).await;
    }
}

/// The attachments to push with an alert to terminals that get them.
async fn pushed_attachments(
    shared: &Arc<Shared>,
    msg: &ServerMsg,
) -> Option<Arc<Vec<store::Attachment>>> {
    match msg {
        ServerMsg::Alert {
            alert,
            issuer,
            body,
            ..
        } if !body.attachments.is_empty() => Some(Arc::new(
            streams::load(shared, *alert, &body.attachments, *issuer).await,
        )),
        _ => None,
    }
}

/// Whether `terminal` gets attachments pushed.
fn gets_attachments(shared: &Shared, terminal: TerminalId) -> bool {
    shared
        .org
        .terminal(terminal)
        .is_some_and(|t| streams::gets_attachments(t.kind))
}

/// `AlertSend`: check, store, confirm, deliver to everyone online.
pub(crate) async fn send(
    shared: Arc<Shared>,
    issuer: TerminalId,
    outbox: Outbox,
    request: u32,
    body: AlertBody,
    target: Target,
) {
    let online = |t: TerminalId| {
        shared
            .terminals
            .get(&t)
            .is_some_and(|e| e.session.is_some())
    };
    let recipients = match Service::recipients(
        &shared.org,
        &shared.positions,
        online,
        issuer,
        &body,
        &target,
    ) {
        Ok(r) => r,
        Err(refusal) => {
            tracing::info!(code = ?refusal.code, "alert refused: {}", refusal.message);
            outbox.send(ServerMsg::AlertRefused {
                request,
                code: refusal.code,
                message: refusal.message,
            });
            return;
        }
    };
    let created_ms = now_ms();
    let described = Service::describe(&target);
    let (mut stored_body, stored_recipients) = (body, recipients.clone());
    let stored = blocking(&shared, move |s| {
        // The gateway, not the sender, says how large each attachment is.
        let ids: Vec<u64> = stored_body.attachments.iter().map(|a| a.id).collect();
        stored_body.attachments = match s.attachment_refs(issuer, &ids)? {
            Ok(refs) => refs,
            Err(id) => return Err(store::Error::UnknownAttachment(id)),
        };
        let id = s.create_alert(
            issuer,
            &stored_body,
            &described,
            created_ms,
            &stored_recipients,
        )?;
        Ok((id, stored_body))
    })
    .await;
    let (id, body) = match stored {
        Some(Ok(stored)) => stored,
        Some(Err(store::Error::UnknownAttachment(a))) => {
            outbox.send(ServerMsg::AlertRefused {
                request,
                code: ErrorCode::UnknownAttachment,
                message: format!("attachment {a} is unknown or not yours; upload it first"),
            });
            return;
        }
        other => {
            tracing::error!("storing an alert failed: {other:?}");
            outbox.send(ServerMsg::AlertRefused {
                request,
                code: ErrorCode::Internal,
                message: "the alert could not be stored; nothing was sent".into(),
            });
            return;
        }
    };
    tracing::info!(alert = id, recipients = recipients.len(), "alert stored");
    for r in &recipients {
        shared.pending.insert(*r);
    }
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
    deliver_all(&shared, id, &recipients, msg).await;
}

/// Hands `msg` to every recipient online (a bounded window at a time) and
/// logs how long the whole fan-out took.
async fn deliver_all(shared: &Arc<Shared>, alert: u64, recipients: &[TerminalId], msg: ServerMsg) {
    let started = std::time::Instant::now();
    let attachments = pushed_attachments(shared, &msg).await;
    let mut deliveries = tokio::task::JoinSet::new();
    for r in recipients {
        let conn = shared
            .terminals
            .get(r)
            .and_then(|e| e.session.as_ref().map(|l| l.conn.clone()));
        if let Some(conn) = conn {
            let push = attachments.clone().filter(|_| gets_attachments(shared, *r));
            deliveries.spawn(deliver(shared.clone(), conn, msg.clone(), push));
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

/// Delivers what a terminal missed while offline, oldest first.
pub(crate) async fn forward_undelivered(
    shared: Arc<Shared>,
    conn: Connection,
    terminal: TerminalId,
) {
    let now = now_ms();
    match blocking(&shared, move |s| s.undelivered(terminal, now)).await {
        Some(Ok(alerts)) => {
            if alerts.is_empty() {
                // An alert created meanwhile is delivered directly: the
                // terminal is online.
                shared.pending.remove(&terminal);
            } else {
                tracing::info!(
                    alerts = alerts.len(),
                    "forwarding alerts missed while offline"
                );
            }
            let push = gets_attachments(&shared, terminal);
            for a in alerts {
                let msg = alert_msg(&a);
                let attachments = if push {
                    pushed_attachments(&shared, &msg).await
                } else {
                    None
                };
                deliver(shared.clone(), conn.clone(), msg, attachments).await;
            }
        }
        other => tracing::error!("reading undelivered alerts failed: {other:?}"),
    }
}

/// Sends an `Error` about a frame of type `frame` (no group).
pub(crate) fn error(outbox: &Outbox, code: ErrorCode, frame: u8, message: impl Into<String>) {
    outbox.send(ServerMsg::Error {
        code,
        frame,
        group: None,
        message: message.into(),
    });
}

/// `AlertReceipt`: store it, confirm it, tell the issuer.
///
/// The receipt is queued for the writer here, synchronously, so a
/// terminal's receipts are stored in the order it sent them (accepted before
/// arrived); the returned future waits for the write and answers.
pub(crate) fn receipt(
    shared: Arc<Shared>,
    terminal: TerminalId,
    outbox: Outbox,
    alert: u64,
    status: ReceiptStatus,
    reason: String,
) -> impl std::future::Future<Output = ()> + Send {
    let at_ms = now_ms();
    let (reply, answer) = tokio::sync::oneshot::channel();
    let queued = shared
        .receipts
        .send((
            store::ReceiptIn {
                alert,
                terminal,
                status,
                at_ms,
                reason: reason.clone(),
            },
            reply,
        ))
        .is_ok();
    async move {
        let result = if queued { answer.await.ok() } else { None };
        answer_receipt(shared, terminal, outbox, alert, at_ms, reason, result);
    }
}

fn answer_receipt(
    shared: Arc<Shared>,
    terminal: TerminalId,
    outbox: Outbox,
    alert: u64,
    at_ms: u64,
    reason: String,
    result: Option<Result<store::Receipt, store::Error>>,
) {
    let frame = kind::ALERT_RECEIPT;
    match result {
        Some(Ok(store::Receipt::Advanced { issuer, status })) => {
            outbox.send(ServerMsg::ReceiptSaved { alert, status });
            let live = shared
                .terminals
                .get(&issuer)
                .and_then(|e| e.session.as_ref().map(|l| l.outbox.clone()));
            if let Some(issuer_outbox) = live {
                let update = ServerMsg::ReceiptUpdate {
                    alert,
                    terminal,
                    status,
                    at_ms,
                    reason,
                };
                if !issuer_outbox.send_droppable(update) {
                    Metrics::add(&shared.metrics.receipt_updates_dropped, 1);
                }
            }
        }
        Some(Ok(store::Receipt::Duplicate { status })) => {
            outbox.send(ServerMsg::ReceiptSaved { alert, status })
        }
        Some(Ok(store::Receipt::UnknownAlert)) => error(
            &outbox,
            ErrorCode::UnknownAlert,
            frame,
            format!("no alert {alert}"),
        ),
        Some(Ok(store::Receipt::NotRecipient)) => error(
            &outbox,
            ErrorCode::NotRecipient,
            frame,
            format!("alert {alert} was not sent to you"),
        ),
        Some(Ok(store::Receipt::Invalid(e))) => {
            error(&outbox, ErrorCode::InvalidReceipt, frame, e.to_string())
        }
        other => {
            tracing::error!("storing a receipt failed: {other:?}");
            error(
                &outbox,
                ErrorCode::Internal,
                frame,
                "receipt not stored; send it again",
            );
        }
    }
}

/// `AlertQuery`: the issuer's summary of who got how far.
pub(crate) async fn query(shared: Arc<Shared>, terminal: TerminalId, outbox: Outbox, alert: u64) {
    let now = now_ms();
    match blocking(&shared, move |s| s.status(alert, now)).await {
        Some(Ok(Some((issuer, recipients, counts)))) if issuer == terminal => {
            outbox.send(ServerMsg::AlertStatus {
                alert,
                recipients,
                counts,
            });
        }
        Some(Ok(_)) => error(
            &outbox,
            ErrorCode::UnknownAlert,
            kind::ALERT_QUERY,
            format!("no alert {alert} of yours"),
        ),
        other => {
            tracing::error!("reading alert status failed: {other:?}");
            error(
                &outbox,
                ErrorCode::Internal,
                kind::ALERT_QUERY,
                "status unavailable; retry",
            );
        }
    }
}

/// A receipt waiting for the writer, and where to send what it did.
pub(crate) type QueuedReceipt = (
    store::ReceiptIn,
    tokio::sync::oneshot::Sender<Result<store::Receipt, store::Error>>,
);

/// Writes receipts in batches: everything queued while the previous batch
/// was being flushed goes into the next transaction, so a city-wide alert's
/// tens of thousands of delivery receipts cost tens of disk flushes, not
/// tens of thousands, and every receipt is still on disk before it is
/// acknowledged.
pub(crate) async fn write_receipts(
    store: Arc<store::Store>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<QueuedReceipt>,
) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, 4096).await > 0 {
        let (receipts, replies): (Vec<_>, Vec<_>) = std::mem::take(&mut batch).into_iter().unzip();
        let store = store.clone();
        let result = tokio::task::spawn_blocking(move || store.record_receipts(&receipts)).await;
        match result {
            Ok(Ok(outcomes)) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Ok(Err(e)) => {
                tracing::error!("writing receipts failed: {e}");
                // Dropping the replies tells each session the receipt was not stored.
            }
            Err(e) => tracing::error!("receipt writer task failed: {e}"),
        }
    }
}

/// `Position`: remember it and tell the consoles watching.
pub(crate) fn position(
    shared: &Shared,
    terminal: TerminalId,
    lat_e7: i32,
    lon_e7: i32,
    accuracy_m: u16,
) {
    let at_ms = now_ms();
    shared.positions.update(
        terminal,
        crate::location::Fix {
            lat_e7,
            lon_e7,
            accuracy_m,
            at_ms,
        },
    );
    let Some(node) = shared.org.terminal(terminal).map(|t| t.node) else {
        return;
    };
    let watchers = shared.watchers.lock().unwrap_or_else(|e| e.into_inner());
    for w in watchers.iter() {
        if w.terminal != terminal && shared.org.is_ancestor_or_self(w.node, node) {
            // Positions are refreshed every few seconds: skip one rather
            // than fall behind.
            w.outbox.send_droppable(ServerMsg::PositionUpdate {
                terminal,
                lat_e7,
                lon_e7,
                accuracy_m,
                at_ms,
            });
        }
    }
}

/// A console following positions under a node.
#[derive(Debug)]
pub(crate) struct Watcher {
    pub(crate) terminal: TerminalId,
    pub(crate) session: u64,
    pub(crate) node: u32,
    pub(crate) outbox: Outbox,
}

/// `WatchPositions`: start (with the positions known now) or stop.
pub(crate) fn watch(
    shared: &Shared,
    terminal: TerminalId,
    session: u64,
    outbox: &Outbox,
    node: u32,
) {
    let mut watchers = shared.watchers.lock().unwrap_or_else(|e| e.into_inner());
    watchers.retain(|w| w.session != session);
    if node == 0 {
        return;
    }
    let allowed = shared
        .org
        .terminal(terminal)
        .is_some_and(|t| t.is_console() && shared.org.is_ancestor_or_self(t.node, node));
    if !allowed {
        drop(watchers);
        error(
            outbox,
            ErrorCode::TargetNotAllowed,
            kind::WATCH_POSITIONS,
            format!("node {node} is outside your command"),
        );
        return;
    }
    watchers.push(Watcher {
        terminal,
        session,
        node,
        outbox: outbox.clone(),
    });
    drop(watchers);
    for t in shared
        .org
        .terminals()
        .filter(|t| shared.org.is_ancestor_or_self(node, t.node))
    {
        if let Some(fix) = shared.positions.last(t.id) {
            outbox.send_droppable(ServerMsg::PositionUpdate {
                terminal: t.id,
                lat_e7: fix.lat_e7,
                lon_e7: fix.lon_e7,
                accuracy_m: fix.accuracy_m,
                at_ms: fix.at_ms,
            });
        }
    }
}

/// Forgets a session's position watch when it ends.
pub(crate) fn unwatch(shared: &Shared, session: u64) {
    shared
        .watchers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|w| w.session != session);
}

/// `Sos`: alert the terminal's unit and its police station's consoles with
/// its last position, and give it the unit's floor with emergency class for
/// a hot-mic burst.
/// The session has joined the terminal to its unit's group already.
pub(crate) async fn sos(shared: Arc<Shared>, terminal: TerminalId, outbox: Outbox) {
    let org = &shared.org;
    let Some(t) = org.terminal(terminal) else {
        return;
    };
    let unit = t.node;
    let station = org.ancestor_of_kind(unit, crate::org::NodeKind::PoliceStation);
    let mut recipients: Vec<TerminalId> = org
        .terminals()
        .filter(|r| r.id != terminal)
        .filter(|r| r.node == unit || (r.is_console() && Some(r.node) == station))
        .map(|r| r.id)
        .collect();
    recipients.sort_unstable();
    let unit_name = org.node(GroupId(unit)).map_or("", |n| n.name.as_str());
    let body = AlertBody {
        kind: ptt_codec::AlertKind::Sos,
        priority: 3,
        ttl_s: 3600,
        title: format!("SOS 紧急求助: {}", t.name),
        text: unit_name.to_owned(),
        location: shared
            .positions
            .last(terminal)
            .map(|f| ptt_codec::Location {
                lat_e7: f.lat_e7,
                lon_e7: f.lon_e7,
                address: String::new(),
            }),
        attachments: Vec::new(),
    };
    let created_ms = now_ms();
    let (stored_body, stored_recipients) = (body.clone(), recipients.clone());
    let stored = blocking(&shared, move |s| {
        s.create_alert(
            terminal,
            &stored_body,
            "sos",
            created_ms,
            &stored_recipients,
        )
    })
    .await;
    let Some(Ok(id)) = stored else {
        tracing::error!("storing an SOS failed: {stored:?}");
        error(
            &outbox,
            ErrorCode::Internal,
            kind::SOS,
            "SOS not stored; press again",
        );
        return;
    };
    tracing::warn!(alert = id, recipients = recipients.len(), "SOS raised");
    for r in &recipients {
        shared.pending.insert(*r);
    }
    shared
        .sos
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(terminal, (id, GroupId(unit), recipients.clone()));
    outbox.send(ServerMsg::AlertAccepted {
        request: 0,
        alert: id,
        recipients: recipients.len() as u32,
    });
    // Hot mic: the unit's floor, at emergency class.
    if let Some(g) = shared.groups.get(&GroupId(unit)) {
        let hot_mic = std::time::Duration::from_secs(u64::from(shared.config.floor.sos_hot_mic_s));
        g.request_floor_for(terminal, ptt_codec::Class::Emergency, Some(hot_mic));
    }
    let msg = ServerMsg::Alert {
        alert: id,
        issuer: terminal,
        created_ms,
        expires_ms: created_ms + 3_600_000,
        body,
    };
    deliver_all(&shared, id, &recipients, msg).await;
}

/// `SosCancel`: by the terminal itself or a console above it. Records who
/// cancelled, ends the hot-mic burst, tells everyone the alert reached.
pub(crate) async fn sos_cancel(
    shared: Arc<Shared>,
    by: TerminalId,
    outbox: Outbox,
    terminal: TerminalId,
) {
    let org = &shared.org;
    let allowed = by == terminal
        || match (org.terminal(by), org.terminal(terminal)) {
            (Some(b), Some(t)) => b.is_console() && org.is_ancestor_or_self(b.node, t.node),
            _ => false,
        };
    if !allowed {
        error(
            &outbox,
            ErrorCode::TargetNotAllowed,
            kind::SOS_CANCEL,
            format!("{terminal} is outside your command"),
        );
        return;
    }
    let active = shared
        .sos
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&terminal);
    let Some((alert, group, recipients)) = active else {
        error(
            &outbox,
            ErrorCode::UnknownAlert,
            kind::SOS_CANCEL,
            format!("{terminal} has no SOS"),
        );
        return;
    };
    let at = now_ms();
    match blocking(&shared, move |s| s.cancel(alert, by, at)).await {
        Some(Ok(_)) => {}
        other => tracing::error!("recording an SOS cancel failed: {other:?}"),
    }
    tracing::warn!(alert, %terminal, cancelled_by = %by, "SOS cancelled");
    if let Some(g) = shared.groups.get(&group) {
        g.release_floor(terminal);
    }
    let cancelled = ServerMsg::AlertCancelled { alert, by };
    for r in recipients.iter().chain([&terminal]) {
        let live = shared
            .terminals
            .get(r)
            .and_then(|e| e.session.as_ref().map(|l| l.outbox.clone()));
        if let Some(o) = live {
            o.send(cancelled.clone());
        }
    }
    if by != terminal && !recipients.contains(&by) {
        outbox.send(cancelled);
    }
}
