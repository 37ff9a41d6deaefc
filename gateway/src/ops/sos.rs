//! SOS: `Sos` (alert the unit and its station's consoles, hot mic on the
//! unit's floor) and `SosCancel`.

use ptt_codec::control::kind;
use ptt_codec::{ErrorCode, ServerMsg, TerminalId};
use ptt_gateway_core::sos;

use super::{alerts, Caller};
use crate::clock::now_ms;
use crate::hub::ActiveSos;

/// `Sos`: alert the terminal's unit and its police station's consoles with
/// its last position, and give it the unit's floor with emergency class for
/// a hot-mic burst.
/// Call once the session has joined the terminal to its unit's group.
pub(crate) async fn sos(cx: Caller) {
    let (hub, terminal) = (&cx.hub, cx.terminal);
    let location = hub.watch().last(terminal).map(|f| ptt_codec::Location {
        lat_e7: f.lat_e7,
        lon_e7: f.lon_e7,
        address: String::new(),
    });
    let Some(raised) = sos::raise(hub.org(), &hub.config().sos.rules(), terminal, location) else {
        return;
    };
    let (unit, recipients) = (raised.unit, raised.recipients.clone());
    let created_ms = now_ms();
    let (stored_body, stored_recipients) = (raised.body.clone(), recipients.clone());
    let stored = hub
        .desk()
        .blocking(move |s| {
            s.create_alert(
                terminal,
                &stored_body,
                "sos",
                created_ms,
                &stored_recipients,
            )
        })
        .await;
    let id = match stored {
        Ok(id) => id,
        Err(e) => {
            tracing::error!("storing an SOS failed: {e}");
            cx.error(
                ErrorCode::Internal,
                kind::SOS,
                "SOS not stored; press again",
            );
            return;
        }
    };
    tracing::warn!(alert = id, recipients = recipients.len(), "SOS raised");
    hub.desk().mark_pending(&recipients);
    hub.sos().raise(
        terminal,
        ActiveSos {
            alert: id,
            group: unit,
            recipients: recipients.clone(),
        },
    );
    cx.outbox.send(ServerMsg::AlertAccepted {
        request: 0,
        alert: id,
        recipients: recipients.len() as u32,
    });
    // Hot mic: the unit's floor, at emergency class.
    if let Some(g) = hub.group(unit) {
        let hot_mic = std::time::Duration::from_secs(u64::from(hub.config().floor.sos_hot_mic_s));
        g.request_floor_for(terminal, ptt_codec::Class::Emergency, Some(hot_mic));
    }
    let msg = ServerMsg::Alert {
        alert: id,
        issuer: terminal,
        created_ms,
        expires_ms: raised.expires_ms(created_ms),
        body: raised.body,
    };
    alerts::deliver_all(hub, id, &recipients, msg).await;
}

/// `SosCancel`: by the terminal itself or a console above it. Records who
/// cancelled, ends the hot-mic burst, tells everyone the alert reached.
pub(crate) async fn sos_cancel(cx: Caller, terminal: TerminalId) {
    let (hub, by) = (&cx.hub, cx.terminal);
    if !hub.org().commands(by, terminal) {
        cx.error(
            ErrorCode::TargetNotAllowed,
            kind::SOS_CANCEL,
            format!("{terminal} is outside your command"),
        );
        return;
    }
    let Some(ActiveSos {
        alert,
        group,
        recipients,
    }) = hub.sos().take(terminal)
    else {
        cx.error(
            ErrorCode::UnknownAlert,
            kind::SOS_CANCEL,
            format!("{terminal} has no SOS"),
        );
        return;
    };
    let at = now_ms();
    if let Err(e) = hub.desk().blocking(move |s| s.cancel(alert, by, at)).await {
        tracing::error!("recording an SOS cancel failed: {e}");
    }
    tracing::warn!(alert, %terminal, cancelled_by = %by, "SOS cancelled");
    if let Some(g) = hub.group(group) {
        g.release_floor(terminal);
    }
    let cancelled = ServerMsg::AlertCancelled { alert, by };
    for r in recipients.iter().chain([&terminal]) {
        if let Some(o) = hub.registry().outbox(*r) {
            o.send(cancelled.clone());
        }
    }
    if by != terminal && !recipients.contains(&by) {
        cx.outbox.send(cancelled);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{caller, hub};
    use crate::outbox::testing;

    fn next(rx: &mut tokio::sync::mpsc::Receiver<Box<ServerMsg>>) -> ServerMsg {
        *rx.try_recv().expect("a message")
    }

    #[tokio::test]
    async fn an_sos_is_booked_and_cancelled_by_a_console_above_it() {
        let (_server, _client, conn) = testing::connection().await;
        let hub = hub();
        let (guard, mut guard_rx) = caller(&hub, 501, &conn);
        sos(guard.clone()).await;
        let ServerMsg::AlertAccepted {
            request: 0,
            alert,
            recipients,
        } = next(&mut guard_rx)
        else {
            panic!("the SOS is accepted");
        };
        // The station's console and the unit's volunteer.
        assert_eq!(recipients, 2);

        // A terminal outside the guard's command may not cancel it.
        let (volunteer, mut volunteer_rx) = caller(&hub, 502, &conn);
        sos_cancel(volunteer, TerminalId(501)).await;
        assert!(matches!(
            next(&mut volunteer_rx),
            ServerMsg::Error {
                code: ErrorCode::TargetNotAllowed,
                frame: kind::SOS_CANCEL,
                ..
            }
        ));

        let (console, mut console_rx) = caller(&hub, 300, &conn);
        sos_cancel(console.clone(), TerminalId(501)).await;
        // The console was alerted, so it hears the cancel as a recipient
        // (through its live session, which this test has none of).
        assert!(console_rx.try_recv().is_err());
        let cancelled = hub
            .desk()
            .blocking(move |s| s.cancelled(alert))
            .await
            .expect("readable");
        assert_eq!(cancelled.map(|(by, _)| by), Some(TerminalId(300)));

        // Nothing left to cancel.
        sos_cancel(console, TerminalId(501)).await;
        assert!(matches!(
            next(&mut console_rx),
            ServerMsg::Error {
                code: ErrorCode::UnknownAlert,
                ..
            }
        ));
    }
}
