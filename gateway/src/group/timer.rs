//! A group's one timer: a task that sleeps towards the machine's next
//! deadline and is moved, not respawned, when the deadline changes.

use std::sync::{Arc, OnceLock, Weak};
use std::time::Instant;

use tokio::sync::watch;

/// The deadline a group's timer task sleeps towards.
///
/// The task is started on the first deadline (so an idle group costs no
/// task) and then lives as long as its owner: it parks on the watch channel
/// while there is no deadline, wakes when the deadline moves, and calls the
/// owner back once the deadline has passed. It holds the owner weakly and
/// ends when the owner (and with it this `Timer`) is dropped.
#[derive(Debug)]
pub(crate) struct Timer {
    /// The current deadline; the task watches it.
    deadline: watch::Sender<Option<Instant>>,
    /// Set once the task is running.
    task: OnceLock<()>,
}

impl Timer {
    /// No deadline, no task.
    pub(crate) fn new() -> Self {
        Self {
            deadline: watch::Sender::new(None),
            task: OnceLock::new(),
        }
    }

    /// Call after every step of the owner's machine with its
    /// `poll_timeout()`: `fire(owner)` runs once `deadline` has passed, unless
    /// a later call moves or clears it first. Must be called inside a tokio
    /// runtime the first time a deadline is set (it starts the task).
    pub(crate) fn set<T>(&self, deadline: Option<Instant>, owner: &Arc<T>, fire: fn(&Arc<T>))
    where
        T: Send + Sync + 'static,
    {
        self.deadline.send_if_modified(|d| {
            let moved = *d != deadline;
            *d = deadline;
            moved
        });
        if deadline.is_some() {
            self.task.get_or_init(|| {
                let rx = self.deadline.subscribe();
                tokio::spawn(run(Arc::downgrade(owner), rx, fire));
            });
        }
    }
}

async fn run<T>(owner: Weak<T>, mut deadline: watch::Receiver<Option<Instant>>, fire: fn(&Arc<T>)) {
    loop {
        let next = *deadline.borrow_and_update();
        let moved = match next {
            None => deadline.changed().await,
            Some(at) => tokio::select! {
                () = tokio::time::sleep_until(tokio::time::Instant::from_std(at)) => {
                    let Some(owner) = owner.upgrade() else { return };
                    fire(&owner);
                    Ok(())
                }
                moved = deadline.changed() => moved,
            },
        };
        // The sender lives in the owner: an error means it was dropped.
        if moved.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use tokio::time::{advance, Instant as Now};

    use super::*;

    /// An owner that records when it was fired, in tokio's (paused) time.
    #[derive(Debug)]
    struct Owner {
        timer: Timer,
        fired: Mutex<Vec<Duration>>,
        start: Now,
    }

    impl Owner {
        fn new() -> Arc<Self> {
            Arc::new(Self {
                timer: Timer::new(),
                fired: Mutex::new(Vec::new()),
                start: Now::now(),
            })
        }

        fn set_in(self: &Arc<Self>, after: Option<Duration>) {
            let at = after.map(|a| (self.start + a).into_std());
            self.timer.set(at, self, Self::fire);
        }

        /// As a group does: the deadline is spent once it fired.
        fn fire(self: &Arc<Self>) {
            self.fired.lock().unwrap().push(self.start.elapsed());
            self.timer.set(None, self, Self::fire);
        }

        fn fired(&self) -> Vec<Duration> {
            self.fired.lock().unwrap().clone()
        }
    }

    /// Lets the timer task run at the current (paused) instant.
    async fn settle() {
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[tokio::test(start_paused = true)]
    async fn fires_at_the_deadline_not_before() {
        let owner = Owner::new();
        owner.set_in(Some(S(30)));
        settle().await;
        advance(S(29)).await;
        settle().await;
        assert!(owner.fired().is_empty());
        advance(S(1)).await;
        settle().await;
        assert_eq!(owner.fired(), [S(30)]);
        advance(S(60)).await;
        settle().await;
        assert_eq!(owner.fired(), [S(30)], "fires once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_moved_deadline_moves_the_wakeup() {
        let owner = Owner::new();
        owner.set_in(Some(S(30)));
        settle().await;
        advance(S(5)).await;
        // A new burst granted at 5 s with a 10 s hot-mic limit.
        owner.set_in(Some(S(15)));
        settle().await;
        advance(S(10)).await;
        settle().await;
        assert_eq!(owner.fired(), [S(15)]);
        // Granted again at 15 s, released at 20 s: no wakeup at 45 s.
        owner.set_in(Some(S(45)));
        settle().await;
        advance(S(5)).await;
        owner.set_in(None);
        settle().await;
        advance(S(60)).await;
        settle().await;
        assert_eq!(owner.fired(), [S(15)]);
    }

    #[tokio::test(start_paused = true)]
    async fn one_task_that_ends_with_its_owner() {
        let tasks = || {
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks()
        };
        let owner = Owner::new();
        owner.set_in(None);
        assert_eq!(tasks(), 0, "no deadline yet, no task");
        for s in [30, 20, 40] {
            owner.set_in(Some(S(s)));
        }
        settle().await;
        assert_eq!(tasks(), 1, "one task however often the deadline moves");
        drop(owner);
        settle().await;
        assert_eq!(tasks(), 0);
    }
}
