//! The alert director: consoles send dispatches or drills round after round
//! while recipients drop offline and come back; then it collects the drill
//! reports.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use ptt_codec::{AlertBody, AlertKind, Location, Target, TerminalId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use super::{actor, churn, unit_site, walk, AlertKindSpec, AlertTarget, Commands, Plan};
use super::{RunConfig, Spec, LOG};

/// A console that sends alerts.
#[derive(Debug, Clone, Copy)]
struct Sender {
    /// The console's terminal.
    console: TerminalId,
    /// The node whose subtree it alerts.
    node: u32,
    /// Recipients online in that subtree, the console excepted.
    expected: u64,
}

/// Directs the alerts pattern: fires the rounds until the duration is over,
/// waits for the deliveries and the last responses, and, for drills,
/// collects the reports of the drills each sender started. Call once every
/// actor runs; `senders` are the plan's alert consoles with their nodes.
pub(super) async fn direct(
    config: &RunConfig,
    plan: &Plan,
    senders: &[(TerminalId, u32)],
    commands: &Commands,
    shared: &actor::Shared,
) -> Vec<serde_json::Value> {
    let online = |t: TerminalId| commands.contains_key(&t);
    let senders: Vec<Sender> = senders
        .iter()
        .map(|(console, node)| Sender {
            console: *console,
            node: *node,
            expected: plan.under(*node, *console, online),
        })
        .collect();
    send_rounds(config, plan, &senders, commands, shared).await;
    if config.spec.alert_kind == AlertKindSpec::Drill {
        drill_reports(&senders, commands).await
    } else {
        Vec::new()
    }
}

/// Every `gap_ms`, each sender fires `alerts_per_round` dispatches (to its
/// subtree, or to the members nearest an incident near one of its units)
/// and a share of the recipients drops offline, until the duration is
/// over; then waits for every expected delivery and the last responses.
async fn send_rounds(
    config: &RunConfig,
    plan: &Plan,
    senders: &[Sender],
    commands: &Commands,
    shared: &actor::Shared,
) {
    let mut rounds = Rounds::new(config, plan, senders, commands);
    let mut round = 0u32;
    loop {
        round += 1;
        rounds.fire(round);
        let now = Instant::now();
        let next = now + rounds.gap;
        if rounds.spec.offline_ratio > 0.0 && now < rounds.deadline {
            rounds.churn(now);
        }
        if next >= rounds.deadline {
            break;
        }
        tokio::time::sleep_until(next).await;
    }
    tokio::time::sleep_until(rounds.deadline).await;
    rounds.drain(shared).await;
}

/// The alert rounds of one run.
struct Rounds<'a> {
    /// What to send, how often, how many go offline.
    spec: &'a Spec,
    /// The org (unit sites) and the exercised groups.
    plan: &'a Plan,
    /// The actors' command channels.
    commands: &'a Commands,
    /// Who sends.
    senders: &'a [Sender],
    /// Nearest: the exercised units each console commands, for incidents.
    units_of: HashMap<TerminalId, Vec<u32>>,
    /// Offline churn: every recipient online but the senders, sorted.
    candidates: Vec<TerminalId>,
    /// When each terminal sent offline is surely back.
    back_at: HashMap<TerminalId, Instant>,
    /// Incident places and the offline churn.
    rng: StdRng,
    /// Between rounds (at least 100 ms).
    gap: Duration,
    /// End of the measured phase.
    deadline: Instant,
}

impl<'a> Rounds<'a> {
    /// Call as the measured phase starts: its deadline is counted from now.
    fn new(
        config: &'a RunConfig,
        plan: &'a Plan,
        senders: &'a [Sender],
        commands: &'a Commands,
    ) -> Self {
        let spec = &config.spec;
        let deadline = Instant::now() + config.duration;
        let gap = Duration::from_millis(spec.gap_ms.max(100));
        let rng = StdRng::seed_from_u64(config.seed ^ 0x616c_6572_7473);
        let units_of = senders
            .iter()
            .map(|s| {
                let units = plan
                    .groups
                    .iter()
                    .filter(|g| plan.org.is_ancestor_or_self(s.node, g.id.0))
                    .map(|g| g.id.0)
                    .collect();
                (s.console, units)
            })
            .collect();
        let mut candidates: Vec<TerminalId> = commands
            .keys()
            .copied()
            .filter(|t| !senders.iter().any(|s| s.console == *t))
            .collect();
        candidates.sort_unstable();
        Rounds {
            spec,
            plan,
            commands,
            senders,
            units_of,
            candidates,
            back_at: HashMap::new(),
            rng,
            gap,
            deadline,
        }
    }

    /// Has every online sender send `alerts_per_round` alerts of round
    /// `round`.
    fn fire(&mut self, round: u32) {
        for sender in self.senders {
            let Some(tx) = self.commands.get(&sender.console) else {
                continue;
            };
            for i in 1..=self.spec.alerts_per_round {
                let Some((target, location, expected)) = self.aim(sender) else {
                    continue;
                };
                let _ = tx.send(actor::Command::Alert {
                    target,
                    body: body(self.spec, round, i, location),
                    expected,
                });
            }
        }
    }

    /// Where `sender`'s next alert goes, and how many deliveries the harness
    /// expects (`None`: as many as the gateway names). `None` when a
    /// nearest alert has no unit to place its incident near.
    fn aim(&mut self, sender: &Sender) -> Option<(Target, Location, Option<u64>)> {
        match self.spec.alert_target {
            AlertTarget::Subtree => Some((
                Target::Subtree {
                    node: sender.node,
                    roles: 0,
                },
                Location {
                    lat_e7: 290_800_000,
                    lon_e7: 1_196_400_000,
                    address: "城南路165号".into(),
                },
                Some(sender.expected),
            )),
            AlertTarget::Nearest => {
                let units = &self.units_of[&sender.console];
                if units.is_empty() {
                    return None;
                }
                let unit = units[self.rng.gen_range(0..units.len())];
                let site = unit_site(&self.plan.org, unit);
                let (lat_e7, lon_e7) = walk::near(site, self.spec.walk_radius_m, &mut self.rng);
                Some((
                    Target::Nearest {
                        k: self.spec.nearest_k,
                        radius_m: self.spec.nearest_radius_m,
                    },
                    Location {
                        lat_e7,
                        lon_e7,
                        address: format!("共治单元 {unit} 附近"),
                    },
                    None,
                ))
            }
        }
    }

    /// Sends a share of the candidates offline, each at some point in this
    /// round before the deadline. Call at most once per round, before the
    /// deadline.
    fn churn(&mut self, now: Instant) {
        let away_max = Duration::from_millis(self.spec.offline_ms);
        let ratio = self.spec.offline_ratio;
        for t in churn::select_offline(&self.candidates, ratio, &self.back_at, now, &mut self.rng) {
            // Somewhere in this round, before the measured phase ends.
            let after = self
                .gap
                .min(self.deadline - now)
                .mul_f64(self.rng.gen_range(0.0..1.0));
            let away = churn::offline_for(away_max, &mut self.rng);
            // Eligible again once surely back (reconnecting takes a moment).
            self.back_at
                .insert(t, now + after + away + Duration::from_secs(3));
            if let Some(tx) = self.commands.get(&t) {
                let _ = tx.send(actor::Command::GoOffline { after, away });
            }
        }
    }

    /// Waits (up to `drain_ms`) until every terminal sent offline is back
    /// and every confirmed alert reached every recipient, then for the last
    /// responses. Call once the deadline has passed.
    async fn drain(&self, shared: &actor::Shared) {
        let spec = self.spec;
        let limit = Instant::now() + Duration::from_millis(spec.drain_ms);
        let all_back = self.back_at.values().max().copied();
        while (shared.alerts_delivered.load(Relaxed) < shared.alerts_expected.load(Relaxed)
            || all_back.is_some_and(|t| Instant::now() < t))
            && Instant::now() < limit
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(
            spec.response.max_ms(spec.respond_ms) + spec.response.max_ms(spec.arrive_ms) + 500,
        ))
        .await;
    }
}

/// The `i`-th alert of round `round`, about `location`.
fn body(spec: &Spec, round: u32, i: usize, location: Location) -> AlertBody {
    AlertBody {
        kind: match spec.alert_kind {
            AlertKindSpec::Dispatch => AlertKind::Dispatch,
            AlertKindSpec::Drill => AlertKind::Drill,
        },
        priority: 3,
        ttl_s: spec.ttl_s,
        title: match spec.alert_kind {
            AlertKindSpec::Dispatch => {
                format!("指令 {round}-{i}: {} 两名男子试图拉车门", location.address)
            }
            AlertKindSpec::Drill => format!("拉动演练 {round}-{i}: {}", location.address),
        },
        text: match spec.alert_kind {
            AlertKindSpec::Dispatch => "就近处置，到场后回报。".into(),
            AlertKindSpec::Drill => "演练：接单后立即出发，到场后回报。".into(),
        },
        location: Some(location),
        attachments: Vec::new(),
    }
}

/// Asks every sender for the reports of the drills it started. Call after
/// the drain, once the last receipts are in.
async fn drill_reports(senders: &[Sender], commands: &Commands) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for sender in senders {
        let Some(tx) = commands.get(&sender.console) else {
            continue;
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        if tx.send(actor::Command::DrillReports { reply }).is_err() {
            continue;
        }
        for json in answer.await.unwrap_or_default() {
            match serde_json::from_str(&json) {
                Ok(v) => out.push(v),
                Err(e) => tracing::warn!(target: LOG, "unreadable drill report: {e}"),
            }
        }
    }
    out
}
