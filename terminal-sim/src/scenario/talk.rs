//! The voice director: who presses the talk key when, for the steady and
//! contention patterns.

use std::collections::HashMap;
use std::time::Duration;

use ptt_codec::{Class, GroupId, TerminalId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::plan::GroupPlan;
use super::{actor, Commands, Pattern, Plan, RunConfig};

/// Decides who presses the talk key when, per the scenario's pattern, until
/// the duration is over. Call once every actor runs; `done` hears the group
/// of every burst that ended.
pub(super) async fn direct(
    config: &RunConfig,
    plan: &Plan,
    commands: &Commands,
    done: &mut mpsc::UnboundedReceiver<GroupId>,
) {
    let deadline = Instant::now() + config.duration;
    match config.spec.pattern {
        Pattern::Steady => steady(config, plan, commands, done, deadline).await,
        // Alert scenarios have their own director.
        Pattern::Alerts => {}
        Pattern::Contention => contention(config, plan, commands, done, deadline).await,
        // Directed by `storm::direct`.
        Pattern::ReconnectStorm => {}
        // Directed by `life::direct`.
        Pattern::LivingCity => {}
    }
}

/// Each talking group's next talker presses `gap` after the previous burst
/// ended; the talk stops before the deadline.
async fn steady(
    config: &RunConfig,
    plan: &Plan,
    commands: &Commands,
    done: &mut mpsc::UnboundedReceiver<GroupId>,
    deadline: Instant,
) {
    let spec = &config.spec;
    let burst = Duration::from_millis(spec.burst_ms);
    let gap = Duration::from_millis(spec.gap_ms);
    let mut turn: HashMap<GroupId, usize> = HashMap::new();
    let mut talkers: HashMap<GroupId, Vec<TerminalId>> = HashMap::new();
    for (i, g) in plan.groups.iter().enumerate() {
        if !talks(i, spec.talk_share) {
            continue;
        }
        let online = online_talkers(g, commands);
        if let Some(first) = online.first() {
            press(
                commands,
                *first,
                g.id,
                Class::Normal,
                burst.min(config.duration),
            );
        }
        talkers.insert(g.id, online);
        turn.insert(g.id, 0);
    }
    let mut due: Vec<(Instant, GroupId)> = Vec::new();
    loop {
        let next_due = due.iter().map(|(t, _)| *t).min();
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            Some(group) = done.recv() => due.push((Instant::now() + gap, group)),
            _ = tokio::time::sleep_until(next_due.unwrap_or(deadline)), if next_due.is_some() => {
                let now = Instant::now();
                let (ready, later): (Vec<_>, Vec<_>) = due.drain(..).partition(|(t, _)| *t <= now);
                due = later;
                for (_, group) in ready {
                    let list = &talkers[&group];
                    if list.is_empty() || deadline <= now {
                        continue;
                    }
                    let i = turn.entry(group).or_default();
                    *i = (*i + 1) % list.len();
                    let hold = burst.min(deadline - now);
                    press(commands, list[*i], group, Class::Normal, hold);
                }
            }
        }
    }
}

/// Every `burst + gap`, `presses_per_round` talkers of each group (one of
/// them in emergency now and then, and sometimes the console) press at
/// once, until the next round would pass the deadline.
async fn contention(
    config: &RunConfig,
    plan: &Plan,
    commands: &Commands,
    done: &mut mpsc::UnboundedReceiver<GroupId>,
    deadline: Instant,
) {
    let spec = &config.spec;
    let burst = Duration::from_millis(spec.burst_ms);
    let gap = Duration::from_millis(spec.gap_ms);
    let mut rng = StdRng::seed_from_u64(config.seed);
    loop {
        let now = Instant::now();
        if now + burst >= deadline {
            tokio::time::sleep_until(deadline).await;
            break;
        }
        for g in &plan.groups {
            let online = online_talkers(g, commands);
            if online.is_empty() {
                continue;
            }
            let n = spec.presses_per_round.min(online.len());
            let chosen = rand::seq::index::sample(&mut rng, online.len(), n);
            let emergency = rng.gen_bool(spec.emergency_ratio.clamp(0.0, 1.0));
            for (k, i) in chosen.iter().enumerate() {
                let class = if emergency && k == 0 {
                    Class::Emergency
                } else {
                    Class::Normal
                };
                let hold = burst.mul_f64(rng.gen_range(0.5..=1.0));
                press(commands, online[i], g.id, class, hold);
            }
            if rng.gen_bool(spec.console_ratio.clamp(0.0, 1.0)) {
                if let Some(console) = g.console.filter(|c| commands.contains_key(c)) {
                    press(commands, console, g.id, Class::Normal, burst / 2);
                }
            }
        }
        tokio::time::sleep(burst + gap).await;
        while done.try_recv().is_ok() {}
    }
}

/// The group's talkers that are online (have an actor), in plan order.
fn online_talkers(group: &GroupPlan, commands: &Commands) -> Vec<TerminalId> {
    group
        .talkers
        .iter()
        .copied()
        .filter(|t| commands.contains_key(t))
        .collect()
}

/// Tells `talker`, if online, to press the talk key in `group` and talk
/// for `hold` once granted.
fn press(commands: &Commands, talker: TerminalId, group: GroupId, class: Class, hold: Duration) {
    if let Some(tx) = commands.get(&talker) {
        let _ = tx.send(actor::Command::Press { group, class, hold });
    }
}

/// Whether the `i`-th exercised group talks when a `share` of them do:
/// spread evenly over the groups (and so over the city's stations).
pub fn talks(i: usize, share: f64) -> bool {
    let share = share.clamp(0.0, 1.0);
    ((i + 1) as f64 * share).floor() > (i as f64 * share).floor()
}
