//! SOS: `Sos` (alert the unit and its station's consoles, hot mic on the
//! unit's floor) and `SosCancel`.

use ptt_codec::control::kind;
use ptt_codec::{ErrorCode, GroupId, ServerMsg, TerminalId};
use ptt_gateway_core::sos;

use std::sync::Arc;

use super::{alerts, Caller};
use crate::clock::now_ms;
use crate::hub::{ActiveSos, Hub};
use crate::metrics::Metrics;

/// `Sos`: alert the terminal's unit and its police station's consoles with
/// its last position, and give it the unit's floor with emergency class for
/// a hot-mic burst. A terminal has one SOS at most: pressing again while its
/// alert is deliverable refreshes it (same alert, later expiry) and answers
/// with the same alert id.
/// Call once the session has joined the terminal to its unit's group.
pub(crate) async fn sos(cx: Caller) {
    let (hub, terminal) = (&cx.hub, cx.terminal);
    let location = hub.watch().last(terminal).map(|f| ptt_codec::Location {
        lat_e7: f.lat_e7,
        lon_e7: f.lon_e7,
        address: String::new(),
    });
    let Some(raised) = sos::raise(&hub.org(), &hub.config().sos.rules(), terminal, location) else {
        return;
    };
    let _turn = hub.sos().turn(terminal).await;
    let created_ms = now_ms();
    if let Some(active) = hub.sos().get(terminal) {
        if active.refreshes_at(created_ms) {
            refresh(&cx, active, raised.expires_ms(created_ms)).await;
            return;
        }
    }
    let (unit, recipients) = (raised.unit, raised.recipients.clone());
    let expires_ms = raised.expires_ms(created_ms);
    // On a cluster node, the SOS goes through the cluster's alert stream so
    // that consoles on every node get it, if the stream answers at once.
    let shared = shared(hub, terminal, &raised.body, created_ms, &recipients).await;
    let (stored_body, stored_recipients) = (raised.body.clone(), recipients.clone());
    let stored = hub
        .desk()
        .blocking(move |s| {
            let alert = match shared {
                Some(Shared { id, .. }) => id,
                None => s.create_alert(
                    terminal,
                    &stored_body,
                    "sos",
                    created_ms,
                    &stored_recipients,
                )?,
            };
            let active = ActiveSos {
                alert,
                group: unit,
                recipients: stored_recipients,
                expires_ms,
            };
            // The alert is stored: a failure here only costs cancelling it
            // after a restart, so it is logged, not refused.
            if let Err(e) = s.put_active_sos(terminal, &active) {
                tracing::error!(alert, %terminal, "storing the active SOS failed: {e}");
            }
            Ok(active)
        })
        .await;
    let active = match stored {
        Ok(active) => {
            Metrics::add(&hub.metrics().alerts_created, 1);
            active
        }
        Err(e) if super::count_full(hub, &e) => {
            tracing::error!(%terminal, "SOS not stored, the disk is full: {e}");
            cx.error(
                ErrorCode::StorageFull,
                kind::SOS,
                "SOS NOT stored: the gateway's disk is full; call for help by radio or telephone",
            );
            return;
        }
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
    let id = active.alert;
    tracing::warn!(alert = id, recipients = recipients.len(), "SOS raised");
    hub.desk().mark_pending(&recipients);
    hub.sos().raise(terminal, active);
    cx.outbox.send(ServerMsg::AlertAccepted {
        request: 0,
        alert: id,
        recipients: recipients.len() as u32,
    });
    hot_mic(&cx, unit);
    if shared.is_some_and(|s| !s.fresh) {
        // This node's consumer stored and delivered it first.
        return;
    }
    let msg = ServerMsg::Alert {
        alert: id,
        issuer: terminal,
        created_ms,
        expires_ms,
        body: raised.body,
    };
    alerts::deliver_all(hub, id, &recipients, msg).await;
}

/// An SOS shared through the cluster's alert stream.
#[derive(Debug, Clone, Copy)]
struct Shared {
    /// Its cluster id.
    id: u64,
    /// Whether this call stored it here (and delivers it here).
    fresh: bool,
}

/// How long an SOS waits for the cluster's stream before it is raised on
/// this node alone: an SOS is never held up for a JetStream election.
const SHARE_WITHIN: std::time::Duration = std::time::Duration::from_millis(500);

/// Publishes an SOS to the cluster's alert stream (every node then delivers
/// it to the consoles connected to it), or `None` on a single node or when
/// the stream does not acknowledge within [`SHARE_WITHIN`]: the SOS is then
/// this node's alone, raised at once as on a single node. (A late
/// acknowledgement after the deadline makes a second copy on the other
/// nodes: shown twice there rather than missed.)
async fn shared(
    hub: &Arc<Hub>,
    terminal: TerminalId,
    body: &ptt_codec::AlertBody,
    created_ms: u64,
    recipients: &[TerminalId],
) -> Option<Shared> {
    let cluster = hub.cluster()?;
    let store = super::replication::store(
        hub,
        cluster,
        terminal,
        body.clone(),
        "sos".into(),
        created_ms,
        recipients,
    );
    match tokio::time::timeout(SHARE_WITHIN, store).await {
        Ok(Ok(stored)) => Some(Shared {
            id: stored.id,
            fresh: stored.fresh,
        }),
        Ok(Err(e)) => {
            Metrics::add(&hub.metrics().cluster_sos_local, 1);
            tracing::error!(%terminal, "SOS not shared with the cluster, raised on this node alone: {e}");
            None
        }
        Err(_) => {
            Metrics::add(&hub.metrics().cluster_sos_local, 1);
            tracing::error!(%terminal, "the cluster's stream did not answer an SOS in time: raised on this node alone");
            None
        }
    }
}

/// Answers an SOS pressed again within `sos.refresh_interval_s` of its last
/// stored refresh straight from the book: the same alert id, nothing stored,
/// no floor, no task. Returns false when the press needs [`sos`] (no active
/// SOS, or one due a refresh). Call on the session's control loop for every
/// `Sos` frame before spawning [`sos`], so a flood of presses costs a lookup
/// each.
pub(crate) fn answer_repeat(cx: &Caller) -> bool {
    let (hub, terminal) = (&cx.hub, cx.terminal);
    let Some(active) = hub.sos().get(terminal) else {
        return false;
    };
    let now = now_ms();
    let config = &hub.config().sos;
    let expires_ms = now.saturating_add(u64::from(config.ttl_s) * 1000);
    let interval_ms = u64::from(config.refresh_interval_s) * 1000;
    if !active.refreshes_at(now) || expires_ms >= active.expires_ms.saturating_add(interval_ms) {
        return false;
    }
    Metrics::add(&hub.metrics().sos_refreshed, 1);
    cx.outbox.send(ServerMsg::AlertAccepted {
        request: 0,
        alert: active.alert,
        recipients: active.recipients.len() as u32,
    });
    true
}

/// Whether `terminal` may request a floor at emergency class with its talk
/// key (`policy.emergency_roles`); its SOS hot mic always has it.
pub(crate) fn may_claim_emergency(hub: &Hub, terminal: TerminalId) -> bool {
    hub.org()
        .terminal(terminal)
        .is_some_and(|t| hub.config().policy.may_claim_emergency(t.role, t.kind))
}

/// Whether `terminal`'s floor request at emergency class is refused (see
/// [`may_claim_emergency`]); a refusal is counted and logged (one warning
/// per 10 s). Call for every `FloorRequest` at emergency class before the
/// group sees it, and answer a refusal with `EMERGENCY_NOT_ALLOWED`.
pub(crate) fn emergency_refused(hub: &Hub, terminal: TerminalId) -> bool {
    if may_claim_emergency(hub, terminal) {
        return false;
    }
    Metrics::add(&hub.metrics().floor_denied, 1);
    Metrics::add(&hub.metrics().floor_emergency_refused, 1);
    if hub.sos().warn_due(now_ms()) {
        tracing::warn!(
            %terminal,
            "floor request at emergency class refused: the role may not claim it \
             (policy.emergency_roles; further cases counted, not logged, for 10 s)"
        );
    }
    true
}

/// Gives the caller `unit`'s floor with emergency class for the SOS hot-mic
/// burst.
fn hot_mic(cx: &Caller, unit: GroupId) {
    let hub = &cx.hub;
    if let Some(g) = hub.group(unit) {
        let hot_mic = std::time::Duration::from_secs(u64::from(hub.config().floor.sos_hot_mic_s));
        g.request_floor_for(cx.terminal, ptt_codec::Class::Emergency, Some(hot_mic));
    }
}

/// SOS pressed again while `active` is deliverable: the same alert, now
/// deliverable until `expires_ms`, and the hot mic again. Presses within
/// `sos.refresh_interval_s` of the last stored refresh are only answered, so
/// a stuck key or a flood of presses costs no disk write and no floor.
async fn refresh(cx: &Caller, active: ActiveSos, expires_ms: u64) {
    let (hub, terminal) = (&cx.hub, cx.terminal);
    Metrics::add(&hub.metrics().sos_refreshed, 1);
    let interval_ms = u64::from(hub.config().sos.refresh_interval_s) * 1000;
    if expires_ms >= active.expires_ms.saturating_add(interval_ms) {
        let alert = active.alert;
        match hub
            .desk()
            .blocking(move |s| s.refresh_sos(terminal, alert, expires_ms))
            .await
        {
            Ok(()) => {
                tracing::warn!(alert, %terminal, "SOS pressed again, refreshed");
                hub.sos().raise(
                    terminal,
                    ActiveSos {
                        expires_ms,
                        ..active.clone()
                    },
                );
                hot_mic(cx, active.group);
            }
            // The SOS is stored and still deliverable: answer with it.
            Err(e) => tracing::error!(alert, %terminal, "refreshing an SOS failed: {e}"),
        }
    }
    cx.outbox.send(ServerMsg::AlertAccepted {
        request: 0,
        alert: active.alert,
        recipients: active.recipients.len() as u32,
    });
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
    let Some((alert, recipients)) = end_sos(hub, terminal, Some(by)).await else {
        cx.error(
            ErrorCode::UnknownAlert,
            kind::SOS_CANCEL,
            format!("{terminal} has no SOS"),
        );
        return;
    };
    if by != terminal && !recipients.contains(&by) {
        cx.outbox.send(ServerMsg::AlertCancelled { alert, by });
    }
}

/// Ends `terminal`'s active SOS, cancelled by terminal `by`, or by an
/// operator through the admin API (`None`): records who cancelled, ends the
/// hot-mic burst, tells the recipients and the terminal. Returns the alert
/// and its recipients, or `None` when the terminal has no active SOS. The
/// caller checked that `by` may.
///
/// An operator's cancel is stored as by [`OPERATOR`] (the admin audit table
/// has the operator's name) and told on the wire as by the terminal itself:
/// the protocol's terminal ids are never 0, and "your SOS has ended" is what
/// the terminal and the recipients need to know.
pub(crate) async fn end_sos(
    hub: &Arc<Hub>,
    terminal: TerminalId,
    by: Option<TerminalId>,
) -> Option<(u64, Vec<TerminalId>)> {
    let told = by.unwrap_or(terminal);
    let by = by.unwrap_or(OPERATOR);
    let _turn = hub.sos().turn(terminal).await;
    let ActiveSos {
        alert,
        group,
        recipients,
        ..
    } = hub.sos().take(terminal)?;
    let at = now_ms();
    let ended = hub
        .desk()
        .blocking(move |s| {
            s.cancel(alert, by, at)?;
            s.end_active_sos(terminal)
        })
        .await;
    if let Err(e) = ended {
        tracing::error!("recording an SOS cancel failed: {e}");
    }
    tracing::warn!(alert, %terminal, cancelled_by = %by, "SOS cancelled");
    if let Some(g) = hub.group(group) {
        g.release_floor(terminal);
    }
    let cancelled = ServerMsg::AlertCancelled { alert, by: told };
    for r in recipients.iter().chain([&terminal]) {
        if let Some(o) = hub.registry().outbox(*r) {
            o.send(cancelled.clone());
        }
    }
    Some((alert, recipients))
}

/// Who cancelled an SOS, in the store, when an operator did it through the
/// admin API (the operator's name is in the admin audit table): terminal id
/// 0, which no org file may give a terminal.
pub(crate) const OPERATOR: TerminalId = TerminalId(0);

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

    #[tokio::test]
    async fn pressing_again_refreshes_the_one_active_sos() {
        let (_server, _client, conn) = testing::connection().await;
        let hub = hub();
        let (guard, mut guard_rx) = caller(&hub, 501, &conn);
        let accepted = |rx: &mut tokio::sync::mpsc::Receiver<Box<ServerMsg>>| loop {
            if let ServerMsg::AlertAccepted { alert, .. } = next(rx) {
                break alert;
            }
        };
        assert!(!answer_repeat(&guard), "no SOS to repeat yet");
        sos(guard.clone()).await;
        let first = accepted(&mut guard_rx);
        for _ in 0..3 {
            sos(guard.clone()).await;
            assert_eq!(accepted(&mut guard_rx), first, "the same alert");
        }
        assert!(answer_repeat(&guard), "answered from the book");
        assert_eq!(accepted(&mut guard_rx), first);
        let stored = hub
            .desk()
            .blocking(|s| s.active_sos())
            .await
            .expect("readable");
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].1.alert, first);
        // Cancelled once, it is gone from the book and the store.
        sos_cancel(guard, TerminalId(501)).await;
        assert!(hub.sos().get(TerminalId(501)).is_none());
        let stored = hub
            .desk()
            .blocking(|s| s.active_sos())
            .await
            .expect("readable");
        assert!(stored.is_empty());
    }

    #[tokio::test]
    async fn an_sos_on_a_full_disk_is_answered_storage_full_and_counted() {
        let (_server, _client, conn) = testing::connection().await;
        let hub = hub();
        hub.desk().store().fill_up();
        let (guard, mut guard_rx) = caller(&hub, 501, &conn);
        sos(guard).await;
        let answer = next(&mut guard_rx);
        assert!(
            matches!(
                &answer,
                ServerMsg::Error {
                    code: ErrorCode::StorageFull,
                    frame: kind::SOS,
                    message,
                    ..
                } if message.contains("NOT stored")
            ),
            "{answer:?}"
        );
        assert!(hub.sos().get(TerminalId(501)).is_none(), "no SOS raised");
        let full = hub
            .metrics()
            .store_full
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(full, 1);
    }

    #[test]
    fn a_volunteer_may_not_claim_emergency_with_the_talk_key() {
        let hub = hub();
        assert!(may_claim_emergency(&hub, TerminalId(501)), "a guard");
        assert!(may_claim_emergency(&hub, TerminalId(300)), "a console");
        assert!(!may_claim_emergency(&hub, TerminalId(502)), "a volunteer");
        assert!(!may_claim_emergency(&hub, TerminalId(9)), "unknown");
        assert!(emergency_refused(&hub, TerminalId(502)));
        assert!(!emergency_refused(&hub, TerminalId(501)));
        assert_eq!(
            hub.metrics()
                .floor_emergency_refused
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }
}
