//! Terminals going away and coming back: which terminals a scenario sends
//! offline, and for how long (the reconnect backoff is the terminal
//! library's [`crate::terminal::Backoff`]).

use std::collections::HashMap;
use std::time::Duration;

use ptt_codec::TerminalId;
use rand::seq::SliceRandom;
use rand::Rng;

/// Picks `ratio` of `candidates` (rounded, at least one if the ratio is
/// above 0 and someone is eligible) to go offline now, leaving out those
/// still offline: `back_at` says when each terminal sent offline earlier
/// is due back, and one is eligible again `now >= back_at`.
pub fn select_offline<T: PartialOrd + Copy>(
    candidates: &[TerminalId],
    ratio: f64,
    back_at: &HashMap<TerminalId, T>,
    now: T,
    rng: &mut impl Rng,
) -> Vec<TerminalId> {
    if ratio <= 0.0 || candidates.is_empty() {
        return Vec::new();
    }
    let want = ((candidates.len() as f64 * ratio.min(1.0)).round() as usize).max(1);
    let mut eligible: Vec<TerminalId> = candidates
        .iter()
        .copied()
        .filter(|t| back_at.get(t).is_none_or(|at| now >= *at))
        .collect();
    eligible.shuffle(rng);
    eligible.truncate(want);
    eligible.sort_unstable();
    eligible
}

/// How long one terminal stays offline: uniform in a tenth of `max` up to
/// `max`.
pub fn offline_for(max: Duration, rng: &mut impl Rng) -> Duration {
    max.mul_f64(rng.gen_range(0.1..=1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn offline_selection_takes_the_share_and_skips_those_still_away() {
        let mut rng = StdRng::seed_from_u64(5);
        let all: Vec<TerminalId> = (1..=100).map(TerminalId).collect();
        let none = HashMap::new();
        let first = select_offline(&all, 0.1, &none, 0u64, &mut rng);
        assert_eq!(first.len(), 10);
        let mut dedup = first.clone();
        dedup.dedup();
        assert_eq!(dedup.len(), 10);

        // Those ten are due back at t = 50: not chosen again before then.
        let back: HashMap<TerminalId, u64> = first.iter().map(|t| (*t, 50)).collect();
        for _ in 0..20 {
            let again = select_offline(&all, 0.1, &back, 10, &mut rng);
            assert_eq!(again.len(), 10);
            assert!(again.iter().all(|t| !first.contains(t)));
        }
        // When only a few are eligible, only they go.
        let most: HashMap<TerminalId, u64> = all.iter().skip(3).map(|t| (*t, 50)).collect();
        assert_eq!(
            select_offline(&all, 0.1, &most, 10, &mut rng),
            vec![TerminalId(1), TerminalId(2), TerminalId(3)]
        );
        assert_eq!(select_offline(&all, 0.1, &most, 50, &mut rng).len(), 10);
        // No share, nobody; a tiny share of a few, one.
        assert!(select_offline(&all, 0.0, &none, 0, &mut rng).is_empty());
        assert_eq!(select_offline(&all[..3], 0.01, &none, 0, &mut rng).len(), 1);
    }

    #[test]
    fn offline_times_stay_within_the_limit() {
        let mut rng = StdRng::seed_from_u64(9);
        let max = Duration::from_secs(10);
        for _ in 0..1000 {
            let d = offline_for(max, &mut rng);
            assert!(d >= Duration::from_secs(1) && d <= max);
        }
    }
}
