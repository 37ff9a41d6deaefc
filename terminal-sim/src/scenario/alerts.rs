//! The alert director: consoles send dispatches or drills round after round
//! while recipients drop offline and come back; then it collects the drill
//! reports.

use std::collections::HashMap;
use std::time::Duration;

use ptt_codec::TerminalId;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;

use super::{actor, churn, unit_site, walk, AlertKindSpec, AlertTarget, Plan, RunConfig};

/// Every `gap_ms`, each sender fires `alerts_per_round` dispatches (to its
/// subtree, or to the members nearest an incident near one of its units)
/// and a share of the recipients drops offline, until the duration is
/// over; then waits for every expected delivery and the last responses.
pub(super) async fn direct_alerts(
    config: &RunConfig,
    plan: &Plan,
    senders: &[(TerminalId, u32, u64)],
    commands: &HashMap<TerminalId, mpsc::UnboundedSender<actor::Command>>,
    shared: &actor::Shared,
) {
    let spec = &config.spec;
    let deadline = tokio::time::Instant::now() + config.duration;
    let gap = Duration::from_millis(spec.gap_ms.max(100));
    let mut rng = StdRng::seed_from_u64(config.seed ^ 0x616c_6572_7473);
    // Nearest: the exercised units each console commands, for incidents.
    let units_of: HashMap<TerminalId, Vec<u32>> = senders
        .iter()
        .map(|(c, node, _)| {
            let units = plan
                .groups
                .iter()
                .filter(|g| plan.org.is_ancestor_or_self(*node, g.id.0))
                .map(|g| g.id.0)
                .collect();
            (*c, units)
        })
        .collect();
    // Offline churn: every recipient online but the senders.
    let mut candidates: Vec<TerminalId> = commands
        .keys()
        .copied()
        .filter(|t| !senders.iter().any(|(s, _, _)| s == t))
        .collect();
    candidates.sort_unstable();
    let mut back_at: HashMap<TerminalId, tokio::time::Instant> = HashMap::new();
    let mut round = 0u32;
    loop {
        round += 1;
        for (console, node, expected) in senders {
            let Some(tx) = commands.get(console) else {
                continue;
            };
            for i in 1..=spec.alerts_per_round {
                let (target, location, expected) = match spec.alert_target {
                    AlertTarget::Subtree => (
                        ptt_codec::Target::Subtree {
                            node: *node,
                            roles: 0,
                        },
                        ptt_codec::Location {
                            lat_e7: 290_800_000,
                            lon_e7: 1_196_400_000,
                            address: "城南路165号".into(),
                        },
                        Some(*expected),
                    ),
                    AlertTarget::Nearest => {
                        let units = &units_of[console];
                        if units.is_empty() {
                            continue;
                        }
                        let unit = units[rng.gen_range(0..units.len())];
                        let (lat_e7, lon_e7) =
                            walk::near(unit_site(&plan.org, unit), spec.walk_radius_m, &mut rng);
                        (
                            ptt_codec::Target::Nearest {
                                k: spec.nearest_k,
                                radius_m: spec.nearest_radius_m,
                            },
                            ptt_codec::Location {
                                lat_e7,
                                lon_e7,
                                address: format!("共治单元 {unit} 附近"),
                            },
                            None,
                        )
                    }
                };
                let body = ptt_codec::AlertBody {
                    kind: match spec.alert_kind {
                        AlertKindSpec::Dispatch => ptt_codec::AlertKind::Dispatch,
                        AlertKindSpec::Drill => ptt_codec::AlertKind::Drill,
                    },
                    priority: 3,
                    ttl_s: spec.ttl_s,
                    title: match spec.alert_kind {
                        AlertKindSpec::Dispatch => {
                            format!("指令 {round}-{i}: {} 两名男子试图拉车门", location.address)
                        }
                        AlertKindSpec::Drill => {
                            format!("拉动演练 {round}-{i}: {}", location.address)
                        }
                    },
                    text: match spec.alert_kind {
                        AlertKindSpec::Dispatch => "就近处置，到场后回报。".into(),
                        AlertKindSpec::Drill => "演练：接单后立即出发，到场后回报。".into(),
                    },
                    location: Some(location),
                    attachments: Vec::new(),
                };
                let _ = tx.send(actor::Command::Alert {
                    target,
                    body,
                    expected,
                });
            }
        }
        let now = tokio::time::Instant::now();
        let next = now + gap;
        if spec.offline_ratio > 0.0 && now < deadline {
            let away_max = Duration::from_millis(spec.offline_ms);
            for t in churn::select_offline(&candidates, spec.offline_ratio, &back_at, now, &mut rng)
            {
                // Somewhere in this round, before the measured phase ends.
                let after = gap.min(deadline - now).mul_f64(rng.gen_range(0.0..1.0));
                let away = churn::offline_for(away_max, &mut rng);
                // Eligible again once surely back (reconnecting takes a moment).
                back_at.insert(t, now + after + away + Duration::from_secs(3));
                if let Some(tx) = commands.get(&t) {
                    let _ = tx.send(actor::Command::GoOffline { after, away });
                }
            }
        }
        if next >= deadline {
            break;
        }
        tokio::time::sleep_until(next).await;
    }
    tokio::time::sleep_until(deadline).await;
    // Wait (up to drain_ms) until every terminal sent offline is back and
    // every confirmed alert reached every recipient, then for the last
    // responses.
    use std::sync::atomic::Ordering::Relaxed;
    let limit = tokio::time::Instant::now() + Duration::from_millis(spec.drain_ms);
    let all_back = back_at.values().max().copied();
    while (shared.alerts_delivered.load(Relaxed) < shared.alerts_expected.load(Relaxed)
        || all_back.is_some_and(|t| tokio::time::Instant::now() < t))
        && tokio::time::Instant::now() < limit
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(
        spec.response.max_ms(spec.respond_ms) + spec.response.max_ms(spec.arrive_ms) + 500,
    ))
    .await;
}

/// Asks every sender for the reports of the drills it started.
pub(super) async fn drill_reports(
    senders: &[(TerminalId, u32, u64)],
    commands: &HashMap<TerminalId, mpsc::UnboundedSender<actor::Command>>,
) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for (console, _, _) in senders {
        let Some(tx) = commands.get(console) else {
            continue;
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        if tx.send(actor::Command::DrillReports { reply }).is_err() {
            continue;
        }
        for json in answer.await.unwrap_or_default() {
            match serde_json::from_str(&json) {
                Ok(v) => out.push(v),
                Err(e) => tracing::warn!("unreadable drill report: {e}"),
            }
        }
    }
    out
}
