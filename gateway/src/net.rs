//! The network thread: one OS thread that carries every packet.
//!
//! quinn drives each connection with a task of its own (the connection
//! driver) plus one task for the endpoint (the socket). On tokio's
//! multi-threaded runtime a relayed voice frame then costs, per receiver, a
//! wake-up of that receiver's driver which is as likely as not on the other
//! worker: the waking worker writes the other's eventfd, the other leaves
//! `epoll_wait`, steals the task, and parks again when the burst is done.
//! A profile of the voice path at 100 groups showed a quarter of the
//! gateway's samples in that traffic (22 % `finish_task_switch`, 4 %
//! `eventfd_write`), more than quinn's packet building and encryption
//! together.
//!
//! So the endpoint driver, every connection driver and every voice relay
//! loop run on one current-thread tokio runtime on a thread of their own:
//! a frame is read, admitted, handed to its receivers' connections, and
//! their drivers build and send the packets, all on one thread and without
//! a single cross-thread wake-up. The rest of the gateway (control streams,
//! alerts, the database) stays on the multi-threaded runtime, and touches
//! connections through quinn's handles, which are thread-safe.
//!
//! This is the "runtime layout" lever of the performance model. It removes
//! the cross-thread part of quinn's scheduling cost, not the per-connection
//! part: each delivery and each ACK still costs a driver task poll, a timer
//! reset and a channel hop, which only a driver owning every connection over
//! `quinn-proto` would remove. At the city's voice peak that layer is about
//! 28 % of the gateway's CPU per delivered frame, `quinn-proto` and its
//! cryptography 34 %, and the kernel 31 % (BENCHMARKS.md, "the floor under
//! the CPU target"). One thread bounds the packet path at one core; going past it
//! means several endpoints on one port (`SO_REUSEPORT`), which needs
//! connection-ID-aware routing for migration and belongs to the cluster.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// A handle to the network thread. Cheap to clone. The thread stops, and
/// drops what still runs on it, when the last handle is dropped.
#[derive(Clone)]
pub struct Thread {
    inner: Arc<Inner>,
}

struct Inner {
    handle: Handle,
    /// Dropped with the last handle, which ends the thread's `block_on`.
    _stop: oneshot::Sender<()>,
}

impl fmt::Debug for Thread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("net::Thread").finish_non_exhaustive()
    }
}

impl Thread {
    /// Starts the thread, named `name` (shown by `top -H` and in profiles).
    pub fn start(name: &str) -> io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                // Err: every handle is gone, which is the signal to stop.
                let _ = runtime.block_on(stopped);
                // Tasks still here (connections of a gateway that is gone)
                // are dropped without waiting for them.
                runtime.shutdown_background();
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                handle,
                _stop: stop,
            }),
        })
    }

    /// Runs `future` on the network thread.
    pub fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.inner.handle.spawn(future)
    }

    /// The thread as a quinn runtime: an endpoint made with it runs its
    /// driver and every connection's driver on this thread.
    pub fn quinn_runtime(&self) -> Arc<dyn quinn::Runtime> {
        Arc::new(QuinnRuntime(self.clone()))
    }
}

/// quinn's tokio runtime, with timers, sockets and tasks on the network
/// thread whichever thread asks for them.
#[derive(Debug)]
struct QuinnRuntime(Thread);

impl quinn::Runtime for QuinnRuntime {
    fn new_timer(&self, at: Instant) -> Pin<Box<dyn quinn::AsyncTimer>> {
        let _in = self.0.inner.handle.enter();
        quinn::TokioRuntime.new_timer(at)
    }

    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) {
        self.0.inner.handle.spawn(future);
    }

    fn wrap_udp_socket(
        &self,
        t: std::net::UdpSocket,
    ) -> io::Result<Arc<dyn quinn::AsyncUdpSocket>> {
        let _in = self.0.inner.handle.enter();
        quinn::TokioRuntime.wrap_udp_socket(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spawned_work_runs_on_the_named_thread() {
        let net = Thread::start("ptt-net-test").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        net.spawn(async move {
            tx.send(std::thread::current().name().map(str::to_owned))
                .unwrap();
        });
        assert_eq!(rx.recv().unwrap().as_deref(), Some("ptt-net-test"));
    }

    #[test]
    fn timers_made_elsewhere_fire_on_the_thread() {
        let net = Thread::start("ptt-net-timer").unwrap();
        let rt = net.quinn_runtime();
        // Made outside any runtime: the network thread's timer wheel holds it.
        let mut timer = rt.new_timer(Instant::now() + std::time::Duration::from_millis(5));
        let (tx, rx) = std::sync::mpsc::channel();
        rt.spawn(Box::pin(async move {
            std::future::poll_fn(|cx| timer.as_mut().poll(cx)).await;
            tx.send(()).unwrap();
        }));
        rx.recv_timeout(std::time::Duration::from_secs(5))
            .expect("the timer fired");
    }

    #[test]
    fn the_thread_ends_with_its_last_handle() {
        let net = Thread::start("ptt-net-end").unwrap();
        let task = net.spawn(std::future::pending::<()>());
        drop(net);
        // The runtime is shut down: its tasks are cancelled.
        let handle = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let r = handle.block_on(task);
        assert!(r.unwrap_err().is_cancelled());
    }
}
