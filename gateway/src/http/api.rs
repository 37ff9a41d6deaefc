//! `/readyz` and `/api/v1`: what the node is doing, as JSON, and the
//! operators' actions (each written to the admin audit table).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use ptt_codec::{CloseCode, GroupId, ReceiptStatus, TerminalId};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{exposition::role_name, Operator, Ops};
use crate::clock::now_ms;
use crate::hub::Hub;
use crate::ops::sos::end_sos;
use crate::store::{self, AdminAction, Store};

/// Most rows a list answers with, whatever `limit` asks.
pub(super) const MAX_LIMIT: u32 = 1_000;
/// Rows a list answers with when `limit` is not given.
const DEFAULT_LIMIT: u32 = 100;
/// How long a readiness answer is reused.
const READY_CACHE: Duration = Duration::from_secs(1);

/// The readiness checks, as `/readyz` answers them.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Readiness {
    ready: bool,
    /// The store took its write lock.
    store_writable: bool,
    /// The QUIC endpoint accepts connections.
    accepting: bool,
    /// Free bytes in the data directory's file system.
    disk_free_bytes: u64,
    /// `attachments.disk_reserve_bytes`.
    disk_reserve_bytes: u64,
    /// Why not ready, when not.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    failing: Vec<String>,
}

/// `/readyz`: 200 when the store is writable, the endpoint accepts
/// connections and the disk is above its reserve; 503 with what fails.
pub(super) async fn readyz(State(ops): State<Arc<Ops>>) -> Response {
    let cached = ops
        .ready
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .filter(|(at, _)| at.elapsed() < READY_CACHE);
    let readiness = match cached {
        Some((_, r)) => r,
        None => {
            let r = check_ready(&ops.hub).await;
            *ops.ready.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((Instant::now(), r.clone()));
            r
        }
    };
    let code = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(readiness)).into_response()
}

async fn check_ready(hub: &Arc<Hub>) -> Readiness {
    let mut failing = Vec::new();
    let store_writable = match hub.desk().blocking(Store::writable).await {
        Ok(()) => true,
        Err(e) => {
            failing.push(format!("store not writable: {e}"));
            false
        }
    };
    let accepting = hub.status().accepting.load(Ordering::Relaxed);
    if !accepting {
        failing.push("QUIC endpoint not accepting connections".into());
    }
    let dir = hub.config().data_dir.clone();
    let reserve = hub.config().attachments.disk_reserve_bytes;
    let free = match rustix::fs::statvfs(&dir) {
        Ok(st) => st.f_bavail.saturating_mul(st.f_frsize),
        Err(e) => {
            failing.push(format!("statvfs {}: {e}", dir.display()));
            0
        }
    };
    if free < reserve {
        failing.push(format!(
            "disk below its reserve: {free} bytes free of {reserve} kept"
        ));
    }
    Readiness {
        ready: failing.is_empty(),
        store_writable,
        accepting,
        disk_free_bytes: free,
        disk_reserve_bytes: reserve,
        failing,
    }
}

/// `/api/v1/status`: version, uptime, sessions, counters, relay latency.
pub(super) async fn status(State(ops): State<Arc<Ops>>) -> Json<Value> {
    let hub = &ops.hub;
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": hub.status().started.elapsed().as_secs(),
        "accepting": hub.status().accepting.load(Ordering::Relaxed),
        "sessions": hub.registry().online().len(),
        "groups": hub.group_count(),
        "terminals_in_org": hub.org().terminals().count(),
        "counters": hub.metrics().snapshot(),
        "relay_latency_us": hub.relay_latency().summary(),
        "socket_latency_us": hub.socket_latency().summary(),
    }))
}

/// `/api/v1/terminals`: every terminal online, with its role, device,
/// groups, address, round-trip time and last position.
pub(super) async fn terminals(State(ops): State<Arc<Ops>>) -> Json<Value> {
    let hub = &ops.hub;
    let mut online = hub.registry().online();
    online.sort_by_key(|(t, _, _)| *t);
    let list: Vec<Value> = online
        .into_iter()
        .map(|(id, conn, groups)| {
            let org = hub.org();
            let t = org.terminal(id);
            let fix = hub.watch().last(id);
            json!({
                "id": id.0,
                "name": t.map(|t| t.name.as_str()),
                "role": t.map(|t| role_name(t.role)),
                "kind": t.map(|t| t.kind),
                "node": t.map(|t| t.node),
                "groups": groups.iter().map(|g| g.0).collect::<Vec<_>>(),
                "address": conn.remote_address().to_string(),
                "rtt_ms": conn.quic().rtt().as_secs_f64() * 1e3,
                "position": fix.map(|f| json!({
                    "lat": f64::from(f.lat_e7) / 1e7,
                    "lon": f64::from(f.lon_e7) / 1e7,
                    "accuracy_m": f.accuracy_m,
                    "at_ms": f.at_ms,
                })),
                "link": hub.link_quality().of(id).map(|e| link_json(&e)),
                // The voice form it receives (docs/PROTOCOL.md section 8):
                // `datagram` when it has no SRTP answer.
                "media": match conn.media() {
                    Some(r) => json!({
                        "form": r.mode().name(),
                        "ssrc": r.ssrc(),
                        "address": r.address().to_string(),
                    }),
                    None => json!({ "form": "datagram" }),
                },
            })
        })
        .collect();
    Json(json!({ "terminals": list }))
}

#[derive(Debug, Deserialize)]
pub(super) struct GroupsQuery {
    /// Every group, also those with nobody online.
    #[serde(default)]
    all: bool,
}

/// `/api/v1/groups[?all=true]`: groups with members online (or all), with
/// the current talker and the floor queue.
pub(super) async fn groups(
    State(ops): State<Arc<Ops>>,
    Query(q): Query<GroupsQuery>,
) -> Json<Value> {
    let hub = &ops.hub;
    let mut list = Vec::new();
    for id in hub.org().groups() {
        let Some(g) = hub.group(id) else { continue };
        let online = g.online();
        if online == 0 && !q.all {
            continue;
        }
        let (holder, queue) = g.floor_view();
        list.push(json!({
            "id": id.0,
            "name": hub.org().node(id).map(|n| n.name.as_str()),
            "online": online,
            "holder": holder.map(|b| json!({
                "terminal": b.terminal.0,
                "burst": b.id,
                "class": b.class.code(),
                "talking_ms": b.granted_at.elapsed().as_millis() as u64,
                "limit_s": b.limit.as_secs(),
            })),
            "queue": queue.iter().map(|t| t.0).collect::<Vec<_>>(),
        }));
    }
    Json(json!({ "groups": list }))
}

#[derive(Debug, Deserialize)]
pub(super) struct Since {
    /// Unix ms; default: the last 24 hours.
    since: Option<u64>,
    /// Rows at most (default 100, at most 1,000).
    limit: Option<u32>,
}

impl Since {
    fn since_ms(&self) -> u64 {
        self.since
            .unwrap_or_else(|| now_ms().saturating_sub(24 * 3600 * 1000))
    }

    fn limit(&self) -> u32 {
        self.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)
    }
}

/// `/api/v1/groups/{id}/bursts[?since=MS&limit=N]`: the floor audit log of a
/// group, newest first.
pub(super) async fn bursts(
    State(ops): State<Arc<Ops>>,
    Path(id): Path<u32>,
    Query(q): Query<Since>,
) -> Response {
    if ops.hub.group(GroupId(id)).is_none() {
        return not_found(format!("no group {id}"));
    }
    let (since, limit) = (q.since_ms(), q.limit() as usize);
    match ops.hub.desk().blocking(move |s| s.bursts(id, since)).await {
        Ok(mut bursts) => {
            bursts.sort_by_key(|b| std::cmp::Reverse(b.granted_ms));
            bursts.truncate(limit);
            let list: Vec<Value> = bursts
                .iter()
                .map(|b| {
                    json!({
                        "terminal": b.terminal.0,
                        "burst": b.burst,
                        "class": b.class,
                        "granted_ms": b.granted_ms,
                        "ended_ms": b.ended_ms,
                        "ended_by": b.ended_by.as_str(),
                    })
                })
                .collect();
            Json(json!({ "group": id, "bursts": list })).into_response()
        }
        Err(e) => internal(e),
    }
}

/// `/api/v1/alerts[?since=MS&limit=N]`: alerts, newest first, with how far
/// their recipients got.
pub(super) async fn alerts(State(ops): State<Arc<Ops>>, Query(q): Query<Since>) -> Response {
    let (since, limit, now) = (q.since_ms(), q.limit(), now_ms());
    match ops
        .hub
        .desk()
        .blocking(move |s| s.recent_alerts(since, limit, now))
        .await
    {
        Ok(alerts) => {
            let list: Vec<Value> = alerts
                .iter()
                .map(|a| {
                    let receipts: serde_json::Map<String, Value> = ReceiptStatus::ALL
                        .iter()
                        .map(|s| {
                            let name = format!("{s:?}").to_lowercase();
                            (name, json!(a.counts.by_status[usize::from(s.code())]))
                        })
                        .chain([("expired".to_owned(), json!(a.counts.expired))])
                        .collect();
                    json!({
                        "id": a.id,
                        "kind": format!("{:?}", a.kind).to_lowercase(),
                        "issuer": a.issuer.0,
                        "title": a.title,
                        "created_ms": a.created_ms,
                        "expires_ms": a.expires_ms,
                        "cancelled": a.cancelled.map(|(by, at)| json!({"by": by.0, "at_ms": at})),
                        "recipients": a.recipients,
                        "receipts": receipts,
                    })
                })
                .collect();
            Json(json!({ "alerts": list })).into_response()
        }
        Err(e) => internal(e),
    }
}

/// `/api/v1/drills[?since=MS]`: drills, oldest first.
pub(super) async fn drills(State(ops): State<Arc<Ops>>, Query(q): Query<Since>) -> Response {
    let (since, limit) = (q.since_ms(), q.limit() as usize);
    match ops.hub.desk().blocking(move |s| s.drills(since)).await {
        Ok(drills) => {
            let list: Vec<Value> = drills
                .iter()
                .take(limit)
                .map(|(id, title, issuer, created_ms)| {
                    json!({"alert": id, "title": title, "issuer": issuer.0, "created_ms": created_ms})
                })
                .collect();
            Json(json!({ "drills": list })).into_response()
        }
        Err(e) => internal(e),
    }
}

/// `/api/v1/drills/{alert}`: a drill's report, made now (the JSON of
/// `ptt-gateway drill-report`).
pub(super) async fn drill_report(State(ops): State<Arc<Ops>>, Path(alert): Path<u64>) -> Response {
    let hub = ops.hub.clone();
    let made = tokio::task::spawn_blocking(move || {
        crate::drill::from_store(
            hub.desk().store(),
            &hub.org(),
            &hub.config().drill.marks_s,
            alert,
            now_ms(),
        )
    })
    .await;
    match made {
        Ok(Ok(report)) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            report.to_json(),
        )
            .into_response(),
        Ok(Err(e @ (store::Error::UnknownAlert(_) | store::Error::NotADrill { .. }))) => {
            not_found(e.to_string())
        }
        Ok(Err(e)) => internal(e),
        Err(e) => internal(e),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct Limit {
    limit: Option<u32>,
}

/// `/api/v1/actions[?limit=N]`: what operators did, newest first.
pub(super) async fn actions(State(ops): State<Arc<Ops>>, Query(q): Query<Limit>) -> Response {
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    match ops
        .hub
        .desk()
        .blocking(move |s| s.admin_actions(limit))
        .await
    {
        Ok(actions) => {
            let list: Vec<Value> = actions
                .iter()
                .map(|a| {
                    json!({
                        "at_ms": a.at_ms,
                        "operator": a.operator,
                        "action": a.action,
                        "target": a.target,
                        "outcome": a.outcome,
                    })
                })
                .collect();
            Json(json!({ "actions": list })).into_response()
        }
        Err(e) => internal(e),
    }
}

/// `POST /api/v1/terminals/{id}/disconnect`: closes the terminal's session
/// with OPERATOR_DISCONNECT (10); it may reconnect.
pub(super) async fn disconnect(
    State(ops): State<Arc<Ops>>,
    Extension(Operator(operator)): Extension<Operator>,
    Path(id): Path<u32>,
) -> Response {
    let terminal = TerminalId(id);
    let done = match ops.hub.registry().conn(terminal) {
        Some(conn) => {
            conn.close(CloseCode::OperatorDisconnect, "disconnected by an operator");
            true
        }
        None => false,
    };
    let outcome = if done { "done" } else { "not online" };
    tracing::warn!(%terminal, %operator, outcome, "operator disconnect");
    record(
        &ops,
        operator,
        "disconnect",
        format!("terminal {id}"),
        outcome,
    )
    .await;
    if done {
        Json(json!({ "terminal": id, "disconnected": true })).into_response()
    } else {
        not_found(format!("terminal {id} is not online"))
    }
}

/// `POST /api/v1/terminals/{id}/sos/cancel`: ends the terminal's active
/// SOS as its console would (floor released, recipients told); the alert
/// records terminal 0 as who cancelled, the audit table the operator (see
/// [`end_sos`]).
pub(super) async fn cancel_sos(
    State(ops): State<Arc<Ops>>,
    Extension(Operator(operator)): Extension<Operator>,
    Path(id): Path<u32>,
) -> Response {
    let ended = end_sos(&ops.hub, TerminalId(id), None).await;
    let outcome = match &ended {
        Some((alert, _)) => format!("cancelled alert {alert}"),
        None => "no active SOS".to_owned(),
    };
    record(
        &ops,
        operator,
        "cancel-sos",
        format!("terminal {id}"),
        &outcome,
    )
    .await;
    match ended {
        Some((alert, _)) => {
            Json(json!({ "terminal": id, "alert": alert, "cancelled": true })).into_response()
        }
        None => not_found(format!("terminal {id} has no active SOS")),
    }
}

/// Writes an action to the admin audit table (logged if that fails: the
/// action itself is already done).
async fn record(ops: &Ops, operator: String, action: &str, target: String, outcome: &str) {
    let row = AdminAction {
        at_ms: now_ms(),
        operator,
        action: action.to_owned(),
        target,
        outcome: outcome.to_owned(),
    };
    if let Err(e) = ops
        .hub
        .desk()
        .blocking(move |s| s.record_admin_action(&row))
        .await
    {
        tracing::error!("recording an operator action failed: {e}");
    }
}

fn not_found(message: String) -> Response {
    (StatusCode::NOT_FOUND, Json(json!({ "error": message }))).into_response()
}

pub(super) fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!("operations surface: {e}");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(json!({ "error": "internal error; see the gateway's log" })),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
pub(super) struct RecordingsQuery {
    /// Only this group.
    group: Option<u32>,
    /// Only this talker.
    speaker: Option<u32>,
    /// Started at or after, Unix ms; default: the last 24 hours.
    since: Option<u64>,
    /// Started at or before, Unix ms.
    until: Option<u64>,
    /// The newest this many (default 100, at most 1,000).
    limit: Option<u32>,
}

/// `/api/v1/recordings[?group=G&speaker=T&since=MS&until=MS&limit=N]`: the
/// recorded bursts, oldest first, each with where its audio is.
pub(super) async fn recordings(
    State(ops): State<Arc<Ops>>,
    Query(q): Query<RecordingsQuery>,
) -> Response {
    let query = store::RecordingQuery {
        group: q.group,
        terminal: q.speaker.map(TerminalId),
        since_ms: Some(
            q.since
                .unwrap_or_else(|| now_ms().saturating_sub(24 * 3600 * 1000)),
        ),
        until_ms: q.until,
        limit: Some(q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)),
    };
    match ops.hub.desk().blocking(move |s| s.recordings(&query)).await {
        Ok(rows) => {
            let list: Vec<Value> = rows
                .iter()
                .map(|r| {
                    json!({
                        "id": r.id,
                        "group": r.group,
                        "speaker": r.terminal.0,
                        "burst": r.burst,
                        "class": r.class,
                        "started_ms": r.started_ms,
                        "ended_ms": r.ended_ms,
                        "ended_by": r.ended_by.as_str(),
                        "frames": r.frames,
                        "filled": r.filled,
                        "dropped": r.dropped,
                        "bytes": r.bytes,
                        "audio": r.path.as_ref().map(|_| format!("/api/v1/recordings/{}/audio", r.id)),
                    })
                })
                .collect();
            Json(json!({ "recordings": list })).into_response()
        }
        Err(e) => internal(e),
    }
}

/// `/api/v1/recordings/{id}/audio`: the burst's Ogg Opus file
/// (`audio/ogg`), with HTTP range requests (`Range`, `206`) and
/// conditional requests, served by `tower-http`'s `ServeFile`.
pub(super) async fn recording_audio(
    State(ops): State<Arc<Ops>>,
    Path(id): Path<u64>,
    request: axum::extract::Request,
) -> Response {
    let Some(recorder) = ops.hub.recorder() else {
        return not_found("recording is off on this gateway".into());
    };
    let dir = recorder.dir().to_owned();
    let row = match ops.hub.desk().blocking(move |s| s.recording(id)).await {
        Ok(Some(row)) => row,
        Ok(None) => return not_found(format!("no recording {id}")),
        Err(e) => return internal(e),
    };
    let Some(path) = row.path else {
        return not_found(format!("recording {id} has no audio: nobody spoke"));
    };
    // The path comes from the gateway's own index; still, never leave the
    // recordings directory.
    let relative = std::path::Path::new(&path);
    if !relative
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)))
    {
        return internal(format!("recording {id} has a bad path {path:?}"));
    }
    let mut file = tower_http::services::ServeFile::new_with_mime(
        dir.join(relative),
        &"audio/ogg".parse().expect("a valid MIME type"),
    );
    match file.try_call(request).await {
        Ok(response) => response.map(axum::body::Body::new),
        Err(e) => internal(e),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct Reason {
    /// Why, e.g. "handset stolen, report 2026-118".
    #[serde(default)]
    reason: String,
}

/// `POST /api/v1/terminals/{id}/revoke[?reason=...]`: revokes the
/// terminal's credential (as `ptt-gateway revoke`): its live session is
/// closed REVOKED (9) at once and its `Hello` refused until unrevoked.
pub(super) async fn revoke(
    State(ops): State<Arc<Ops>>,
    Extension(Operator(operator)): Extension<Operator>,
    Path(id): Path<u32>,
    Query(Reason { reason }): Query<Reason>,
) -> Response {
    let terminal = TerminalId(id);
    if ops.hub.org().terminal(terminal).is_none() {
        return not_found(format!("terminal {id} is not in the org"));
    }
    let (by, why, now) = (format!("api:{operator}"), reason.clone(), now_ms());
    let revoked = ops
        .hub
        .desk()
        .blocking(move |s| s.revoke(terminal, &why, &by, now))
        .await;
    let outcome = match &revoked {
        Ok(None) => "revoked".to_owned(),
        Ok(Some(r)) => format!("already revoked by {}", r.revoked_by),
        Err(e) => return internal(e),
    };
    ops.hub.refresh_revocations().await;
    record(
        &ops,
        operator,
        "revoke",
        format!("terminal {id}: {reason}"),
        &outcome,
    )
    .await;
    Json(json!({ "terminal": id, "revoked": true, "outcome": outcome })).into_response()
}

/// `POST /api/v1/terminals/{id}/unrevoke`: lifts a revocation; the
/// terminal may connect again.
pub(super) async fn unrevoke(
    State(ops): State<Arc<Ops>>,
    Extension(Operator(operator)): Extension<Operator>,
    Path(id): Path<u32>,
) -> Response {
    let terminal = TerminalId(id);
    let lifted = match ops.hub.desk().blocking(move |s| s.unrevoke(terminal)).await {
        Ok(lifted) => lifted,
        Err(e) => return internal(e),
    };
    ops.hub.refresh_revocations().await;
    let outcome = if lifted { "lifted" } else { "was not revoked" };
    record(
        &ops,
        operator,
        "unrevoke",
        format!("terminal {id}"),
        outcome,
    )
    .await;
    if lifted {
        Json(json!({ "terminal": id, "revoked": false })).into_response()
    } else {
        not_found(format!("terminal {id} was not revoked"))
    }
}

/// A terminal's link quality entry as the admin API shows it: the last
/// report, its ratios, when it came, and the totals since start.
fn link_json(e: &crate::hub::link::Entry) -> Value {
    let last = &e.last;
    json!({
        "received": last.received,
        "lost": last.lost,
        "late": last.late,
        "jitter_us": last.jitter_us,
        "loss_ratio": last.loss_ratio(),
        "late_ratio": last.late_ratio(),
        "at_ms": e.at_ms,
        "age_s": e.at.elapsed().as_secs(),
        "totals": {
            "reports": e.totals.reports,
            "received": e.totals.received,
            "lost": e.totals.lost,
            "late": e.totals.late,
            "loss_ratio": e.totals.loss_ratio(),
        },
    })
}

/// `/api/v1/link[?limit=N]`: every terminal that sent a link quality
/// report, worst hearing first (by the last report's loss ratio, then its
/// late ratio, then jitter), online or not, with its last report.
pub(super) async fn link(State(ops): State<Arc<Ops>>, Query(q): Query<Limit>) -> Json<Value> {
    let hub = &ops.hub;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT) as usize;
    let org = hub.org();
    let list: Vec<Value> = hub
        .link_quality()
        .worst_first()
        .into_iter()
        .take(limit)
        .map(|(id, e)| {
            let t = org.terminal(id);
            json!({
                "id": id.0,
                "name": t.map(|t| t.name.as_str()),
                "node": t.map(|t| t.node),
                "online": hub.registry().is_online(id),
                "link": link_json(&e),
            })
        })
        .collect();
    Json(json!({ "terminals": list }))
}
