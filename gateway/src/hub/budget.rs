//! Each terminal's budget of control frames (a rate per frame kind, and
//! its joins and leaves) and of work in flight, kept across its reconnects
//! so that reconnecting refills none of them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ptt_codec::TerminalId;
use ptt_gateway_core::limits::Limiter;
use tokio::sync::Semaphore;

use crate::config::Config;

/// One terminal's budget.
#[derive(Debug)]
pub(crate) struct Budget {
    /// Its frame rates and refusals (`[limits.rates]`, `limits.strikes`),
    /// and its joins and leaves (`session.join_rate`, `join_burst`,
    /// `join_max_refused`).
    pub(crate) limiter: Mutex<Limiter>,
    /// Its operations in flight (`limits.tasks`); a permit is held by each
    /// task until it ends.
    pub(crate) tasks: Arc<Semaphore>,
    /// Refusals since the last warning about them, and when that was: the
    /// session warns at most once in a while per terminal.
    pub(crate) warned: Mutex<(u64, Option<Instant>)>,
}

/// Every authenticated terminal's budget: at most one entry per terminal
/// of the org.
#[derive(Debug, Default)]
pub(crate) struct Budgets {
    by_terminal: Mutex<HashMap<TerminalId, Arc<Budget>>>,
}

impl Budgets {
    /// The budget of `terminal`, full if it has none yet. Call when its
    /// session starts, after it authenticated.
    pub(crate) fn of(&self, terminal: TerminalId, config: &Config) -> Arc<Budget> {
        let mut map = self
            .by_terminal
            .lock()
            .expect("no code panics while holding the budgets lock");
        map.entry(terminal)
            .or_insert_with(|| {
                let limits = &config.limits;
                let joins = config.session.join_limits();
                Arc::new(Budget {
                    limiter: Mutex::new(Limiter::new(&limits.rates, limits.abuse(), joins)),
                    tasks: Arc::new(Semaphore::new(limits.tasks as usize)),
                    warned: Mutex::new((0, None)),
                })
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What one terminal's budget costs, printed (`--no-capture`): the
    /// issue 11 hardening added 4.1 KB per connection at the city peak
    /// (BENCHMARKS.md); this is the budget's share of it.
    #[test]
    fn the_size_of_a_budget() {
        let config = Config::default();
        let budgets = Budgets::default();
        let budget = budgets.of(TerminalId(1), &config);
        let again = budgets.of(TerminalId(1), &config);
        assert!(Arc::ptr_eq(&budget, &again), "one budget per terminal");
        let limiter = std::mem::size_of::<Limiter>();
        let inline = std::mem::size_of::<Budget>();
        let semaphore = std::mem::size_of::<Semaphore>();
        // Two allocations (the budget and its semaphore, each behind an
        // Arc with two counters) and a map entry.
        let heap = inline + semaphore + 2 * 16 + std::mem::size_of::<(TerminalId, Arc<Budget>)>();
        eprintln!(
            "Limiter {limiter} B, Budget {inline} B, Semaphore {semaphore} B: about {heap} B per terminal"
        );
        assert!(heap < 1024, "{heap}");
    }
}
