//! The async side of alerts within a session: store, confirm, deliver on
//! unidirectional streams, record receipts, tell the issuer.

use std::sync::Arc;

use bytes::BytesMut;
use ptt_codec::control::kind;
use ptt_codec::{AlertBody, ErrorCode, ReceiptStatus, ServerMsg, Target, TerminalId};
use quinn::Connection;

use crate::alert::{now_ms, store, Service};
use crate::server::Shared;
use crate::session::Outbox;

/// Runs a blocking store call off the async threads.
async fn blocking<T: Send + 'static>(
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

/// Sends one alert on a new unidirectional stream. Failure is fine: the
/// alert stays pending in the store and is sent again on reconnect.
async fn deliver(conn: Connection, msg: ServerMsg) {
    let mut buf = BytesMut::new();
    msg.encode(&mut buf);
    let result = async {
        let mut stream = conn.open_uni().await?;
        stream.write_all(&buf).await?;
        stream.finish()?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    }
    .await;
    if let Err(e) = result {
        tracing::debug!("alert delivery failed, kept for reconnect: {e}");
    }
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
    let recipients = match Service::recipients(&shared.org, issuer, &body, &target) {
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
    let (stored_body, stored_recipients) = (body.clone(), recipients.clone());
    let stored = blocking(&shared, move |s| {
        s.create_alert(
            issuer,
            &stored_body,
            &described,
            created_ms,
            &stored_recipients,
        )
    })
    .await;
    let id = match stored {
        Some(Ok(id)) => id,
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
    for r in recipients {
        let conn = shared
            .terminals
            .get(&r)
            .and_then(|e| e.session.as_ref().map(|l| l.conn.clone()));
        if let Some(conn) = conn {
            tokio::spawn(deliver(conn, msg.clone()));
        }
    }
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
            if !alerts.is_empty() {
                tracing::info!(
                    alerts = alerts.len(),
                    "forwarding alerts missed while offline"
                );
            }
            for a in alerts {
                deliver(conn.clone(), alert_msg(&a)).await;
            }
        }
        other => tracing::error!("reading undelivered alerts failed: {other:?}"),
    }
}

fn error(outbox: &Outbox, code: ErrorCode, frame: u8, message: impl Into<String>) {
    outbox.send(ServerMsg::Error {
        code,
        frame,
        group: None,
        message: message.into(),
    });
}

/// `AlertReceipt`: store it, confirm it, tell the issuer.
pub(crate) async fn receipt(
    shared: Arc<Shared>,
    terminal: TerminalId,
    outbox: Outbox,
    alert: u64,
    status: ReceiptStatus,
    reason: String,
) {
    let at_ms = now_ms();
    let stored_reason = reason.clone();
    let result = blocking(&shared, move |s| {
        s.record_receipt(alert, terminal, status, at_ms, &stored_reason)
    })
    .await;
    let frame = kind::ALERT_RECEIPT;
    match result {
        Some(Ok(store::Receipt::Advanced { issuer, status })) => {
            outbox.send(ServerMsg::ReceiptSaved { alert, status });
            let live = shared
                .terminals
                .get(&issuer)
                .and_then(|e| e.session.as_ref().map(|l| l.outbox.clone()));
            if let Some(issuer_outbox) = live {
                issuer_outbox.send(ServerMsg::ReceiptUpdate {
                    alert,
                    terminal,
                    status,
                    at_ms,
                    reason,
                });
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
