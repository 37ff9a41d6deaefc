//! Bounded waits for what the gateway does asynchronously.
//!
//! A test that checks a counter or a member count right after the action
//! that changes it races the gateway's tasks; a fixed sleep first only
//! makes the race rarer, and slower. [`eventually`] polls instead: it
//! returns as soon as the condition holds and fails, naming what it waited
//! for, only after [`DEADLINE`].

use std::fmt::{Debug, Display};
use std::future::Future;
use std::time::Duration;

/// How long a test waits for something that should happen: [`eventually`],
/// and a bounded receive of an expected message. 10 s: loopback round trips
/// take microseconds, but the test machines are shared and a busy one
/// stalls a task for seconds; a hang still fails well within a test's time.
/// (Checks that something does *not* happen wait a short quiet window
/// instead; they cannot fail spuriously.)
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Time between two polls: short next to anything a test waits for.
pub const INTERVAL: Duration = Duration::from_millis(10);

/// What a probe returns: done with a value, or not yet (perhaps with what
/// it saw, for the failure message).
pub trait Outcome {
    /// What [`eventually`] returns once the probe is done.
    type Value;
    /// `Ok` when done, `Err` with what was observed (if anything) when not.
    fn into_result(self) -> Result<Self::Value, Option<String>>;
}

/// A condition: done when true.
impl Outcome for bool {
    type Value = ();
    fn into_result(self) -> Result<(), Option<String>> {
        if self {
            Ok(())
        } else {
            Err(None)
        }
    }
}

/// Done when `Some`.
impl<T> Outcome for Option<T> {
    type Value = T;
    fn into_result(self) -> Result<T, Option<String>> {
        self.ok_or(None)
    }
}

/// Done when `Ok`; the last `Err` is shown if the deadline passes.
impl<T, E: Debug> Outcome for Result<T, E> {
    type Value = T;
    fn into_result(self) -> Result<T, Option<String>> {
        self.map_err(|e| Some(format!("{e:?}")))
    }
}

/// Polls `probe` every [`INTERVAL`] until it is done, and returns its
/// value; panics after [`DEADLINE`] with `what` (phrase it as what was
/// awaited: "the unit is empty") and the last thing the probe saw.
///
/// Call it after an action whose effect the gateway applies on its own
/// tasks, before asserting that effect exactly.
pub async fn eventually<O: Outcome>(what: impl Display, mut probe: impl FnMut() -> O) -> O::Value {
    eventually_async(what, || std::future::ready(probe())).await
}

/// [`eventually`] for a probe that has to await (read a stream, query the
/// gateway over the network).
pub async fn eventually_async<O: Outcome, F: Future<Output = O>>(
    what: impl Display,
    mut probe: impl FnMut() -> F,
) -> O::Value {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let last = match probe().await.into_result() {
            Ok(value) => return value,
            Err(last) => last,
        };
        if tokio::time::Instant::now() >= deadline {
            match last {
                Some(last) => panic!("waited {DEADLINE:?} for {what}; last saw {last}"),
                None => panic!("waited {DEADLINE:?} for {what}"),
            }
        }
        tokio::time::sleep(INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn returns_once_the_probe_is_done() {
        let mut polls = 0;
        let got = eventually("the third poll", || {
            polls += 1;
            (polls == 3).then_some(polls)
        })
        .await;
        assert_eq!(got, 3);
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "waited 10s for a counter to reach 1; last saw 0")]
    async fn fails_naming_what_was_awaited() {
        eventually("a counter to reach 1", || match 0 {
            1 => Ok(()),
            n => Err(n),
        })
        .await;
    }
}
