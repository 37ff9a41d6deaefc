//! The threads simulated terminals run on.
//!
//! Each thread is a current-thread tokio runtime that owns a share of the
//! client endpoints and everything that uses them: the endpoints' drivers,
//! the connections, and the tasks of the terminals on those endpoints. A
//! received frame is handled on the thread that read it, and no thread
//! steals another's work. On a 2-core machine shared with the gateway,
//! tokio's work-stealing runtime lost 5-13 % of a city's voice to kernel
//! receive-buffer drops, its two workers busy waking each other; threads
//! that own their terminals do not wake each other at all.

use std::io;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

/// The current runtime plus `n - 1` runtimes on threads of their own, which
/// stop (dropping what still runs on them) when this is dropped.
#[derive(Debug)]
pub struct Shards {
    handles: Vec<Handle>,
    _stops: Vec<oneshot::Sender<()>>,
}

impl Shards {
    /// Shard 0 is the calling runtime; call from inside one.
    pub fn start(n: usize) -> io::Result<Self> {
        let mut handles = vec![Handle::current()];
        let mut stops = Vec::new();
        for i in 1..n.max(1) {
            let runtime = Builder::new_current_thread().enable_all().build()?;
            handles.push(runtime.handle().clone());
            let (stop, stopped) = oneshot::channel::<()>();
            std::thread::Builder::new()
                .name(format!("terminals-{i}"))
                .spawn(move || {
                    // Err: this `Shards` is gone, which is the signal to stop.
                    let _ = runtime.block_on(stopped);
                    runtime.shutdown_background();
                })?;
            stops.push(stop);
        }
        Ok(Self {
            handles,
            _stops: stops,
        })
    }

    /// The runtime of endpoint `i`.
    pub fn of(&self, i: usize) -> &Handle {
        &self.handles[i % self.handles.len()]
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Never: there is always the calling runtime.
    pub fn is_empty(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_on_its_shard_s_thread() {
        let shards = Shards::start(3).unwrap();
        assert_eq!(shards.len(), 3);
        let mut names = Vec::new();
        for i in 0..4 {
            let name = shards
                .of(i)
                .spawn(async { std::thread::current().name().map(str::to_owned) })
                .await
                .unwrap();
            names.push(name);
        }
        let here = std::thread::current().name().map(str::to_owned);
        assert_eq!(names[0], here, "shard 0 is the calling runtime");
        assert_eq!(names[1].as_deref(), Some("terminals-1"));
        assert_eq!(names[2].as_deref(), Some("terminals-2"));
        assert_eq!(names[3], names[0], "endpoint 3 of 3 shards is on shard 0");
    }
}
