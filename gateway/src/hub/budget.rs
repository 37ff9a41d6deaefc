//! Each terminal's budget of control frames (a rate per frame kind) and of
//! work in flight, kept across its reconnects so that reconnecting refills
//! neither.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ptt_codec::TerminalId;
use ptt_gateway_core::limits::Limiter;
use tokio::sync::Semaphore;

use crate::config::Limits;

/// One terminal's budget.
#[derive(Debug)]
pub(crate) struct Budget {
    /// Its frame rates and refusals (`[limits.rates]`, `limits.strikes`).
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
    pub(crate) fn of(&self, terminal: TerminalId, limits: &Limits) -> Arc<Budget> {
        let mut map = self
            .by_terminal
            .lock()
            .expect("no code panics while holding the budgets lock");
        map.entry(terminal)
            .or_insert_with(|| {
                Arc::new(Budget {
                    limiter: Mutex::new(Limiter::new(&limits.rates, limits.abuse())),
                    tasks: Arc::new(Semaphore::new(limits.tasks as usize)),
                    warned: Mutex::new((0, None)),
                })
            })
            .clone()
    }
}
