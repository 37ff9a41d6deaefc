//! The voice director: who presses the talk key when, for the steady and
//! contention patterns.

use std::collections::HashMap;
use std::time::Duration;

use ptt_codec::{Class, GroupId, TerminalId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;

use super::{actor, Pattern, Plan, RunConfig};

/// Decides who presses the talk key when, per the scenario's pattern, until
/// the duration is over.
pub(super) async fn direct(
    config: &RunConfig,
    plan: &Plan,
    commands: &HashMap<TerminalId, mpsc::UnboundedSender<actor::Command>>,
    done: &mut mpsc::UnboundedReceiver<GroupId>,
) {
    let spec = &config.spec;
    let deadline = tokio::time::Instant::now() + config.duration;
    let mut rng = StdRng::seed_from_u64(config.seed);
    let press = |t: TerminalId, group: GroupId, class: Class, hold: Duration| {
        if let Some(tx) = commands.get(&t) {
            let _ = tx.send(actor::Command::Press { group, class, hold });
        }
    };
    let burst = Duration::from_millis(spec.burst_ms);
    let gap = Duration::from_millis(spec.gap_ms);
    match spec.pattern {
        Pattern::Steady => {
            // Each group's next talker presses `gap` after the previous burst
            // ended; the talk stops before the deadline.
            let mut turn: HashMap<GroupId, usize> = HashMap::new();
            let mut talkers: HashMap<GroupId, Vec<TerminalId>> = HashMap::new();
            for (i, g) in plan.groups.iter().enumerate() {
                if !talks(i, spec.talk_share) {
                    continue;
                }
                let online: Vec<TerminalId> = g
                    .talkers
                    .iter()
                    .copied()
                    .filter(|t| commands.contains_key(t))
                    .collect();
                if let Some(first) = online.first() {
                    press(*first, g.id, Class::Normal, burst.min(config.duration));
                }
                talkers.insert(g.id, online);
                turn.insert(g.id, 0);
            }
            let mut due: Vec<(tokio::time::Instant, GroupId)> = Vec::new();
            loop {
                let next_due = due.iter().map(|(t, _)| *t).min();
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => break,
                    Some(group) = done.recv() => due.push((tokio::time::Instant::now() + gap, group)),
                    _ = tokio::time::sleep_until(next_due.unwrap_or(deadline)), if next_due.is_some() => {
                        let now = tokio::time::Instant::now();
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
                            press(list[*i], group, Class::Normal, hold);
                        }
                    }
                }
            }
        }
        // Alert scenarios have their own director.
        Pattern::Alerts => {}
        Pattern::Contention => loop {
            let now = tokio::time::Instant::now();
            if now + burst >= deadline {
                tokio::time::sleep_until(deadline).await;
                break;
            }
            for g in &plan.groups {
                let online: Vec<TerminalId> = g
                    .talkers
                    .iter()
                    .copied()
                    .filter(|t| commands.contains_key(t))
                    .collect();
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
                    press(online[i], g.id, class, hold);
                }
                if rng.gen_bool(spec.console_ratio.clamp(0.0, 1.0)) {
                    if let Some(console) = g.console.filter(|c| commands.contains_key(c)) {
                        press(console, g.id, Class::Normal, burst / 2);
                    }
                }
            }
            tokio::time::sleep(burst + gap).await;
            while done.try_recv().is_ok() {}
        },
        // Directed by `reconnect_storm`.
        Pattern::ReconnectStorm => {}
    }
}

/// Whether the `i`-th exercised group talks when a `share` of them do:
/// spread evenly over the groups (and so over the city's stations).
pub fn talks(i: usize, share: f64) -> bool {
    let share = share.clamp(0.0, 1.0);
    ((i + 1) as f64 * share).floor() > (i as f64 * share).floor()
}
