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
