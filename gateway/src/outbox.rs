//! Control messages waiting to be written to one terminal.
//!
//! A leaf: it knows the codec, the channel and the connection it closes when
//! the terminal stops reading, and nothing of sessions or groups, so groups,
//! alerts and sessions can all send through it without importing each other.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::link::Link;
use ptt_codec::{CloseCode, ServerMsg, TerminalId};
use tokio::sync::mpsc;

use crate::metrics::Metrics;

/// Control messages waiting to be written to one terminal.
///
/// Sending never blocks the caller: when the queue is full the terminal is
/// not reading and is disconnected, rather than letting its backlog grow or
/// silently losing floor messages. Messages it can do without (presence,
/// live receipt updates; [`Outbox::send_droppable`]) stop at half the
/// queue, so they are dropped long before the terminal is closed: only its
/// own backlog of messages it needs can close it, whoever sends them. The
/// close is logged once, naming the terminal and the cause.
///
/// Messages are queued boxed: a channel allocates its slots in blocks of 32,
/// and 32 unboxed `ServerMsg`s are 4.5 KB that every idle connection would
/// carry for nothing (a tenth of its memory; heaptrack at 8,815 connections).
///
/// Built by the session, which keeps the receiving end for its write loop.
#[derive(Debug, Clone)]
pub struct Outbox {
    /// The queue the session's write loop drains.
    pub(crate) tx: mpsc::Sender<Box<ServerMsg>>,
    /// Closed when the queue overflows.
    pub(crate) conn: Link,
    /// Who reads it and whether it was closed as too slow, for the log.
    reader: Arc<Reader>,
}

/// The terminal an outbox is for, as its log line names it.
#[derive(Debug)]
struct Reader {
    terminal: TerminalId,
    metrics: Arc<Metrics>,
    /// Set by the first overflow: closed once, logged once.
    closed: AtomicBool,
}

impl Outbox {
    /// An outbox of `capacity` messages for `terminal` on `conn`, and the
    /// receiver its session's write loop drains. Closing it as too slow is
    /// counted in `metrics`.
    pub(crate) fn open(
        conn: Link,
        terminal: TerminalId,
        capacity: usize,
        metrics: Arc<Metrics>,
    ) -> (Self, mpsc::Receiver<Box<ServerMsg>>) {
        let (tx, rx) = mpsc::channel(capacity);
        let reader = Arc::new(Reader {
            terminal,
            metrics,
            closed: AtomicBool::new(false),
        });
        (Self { tx, conn, reader }, rx)
    }

    /// Test support: an outbox of `capacity` for terminal 0, counted
    /// nowhere.
    #[cfg(test)]
    pub(crate) fn new(conn: Link, capacity: usize) -> (Self, mpsc::Receiver<Box<ServerMsg>>) {
        Self::open(conn, TerminalId(0), capacity, Arc::new(Metrics::default()))
    }

    /// Queues a message the terminal can do without when it falls behind
    /// (a live receipt update: `AlertStatus` stays authoritative; presence:
    /// `Joined.online` does). Dropped
    /// once the queue is half full, so a city-wide alert's 100,000 receipts
    /// never push out floor messages or disconnect the issuing console.
    /// Returns whether it was queued.
    pub fn send_droppable(&self, msg: ServerMsg) -> bool {
        if self.tx.capacity() * 2 < self.tx.max_capacity() {
            return false;
        }
        self.send(msg);
        true
    }

    /// Queues `msg` for the terminal.
    pub fn send(&self, msg: ServerMsg) {
        match self.tx.try_send(Box::new(msg)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => self.too_slow(),
            // The session is ending; its cleanup tells the groups.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

impl Outbox {
    /// The queue overflowed: the terminal does not read what it needs.
    /// Closes it, and counts and logs that once (senders keep trying until
    /// its session ends).
    fn too_slow(&self) {
        close(&self.conn, CloseCode::TooSlow, "control stream not read");
        if !self.reader.closed.swap(true, Ordering::Relaxed) {
            Metrics::add(&self.reader.metrics.too_slow_closed, 1);
            tracing::warn!(
                terminal = %self.reader.terminal,
                cause = "its own control queue overflowed (session.outbox)",
                queued = self.tx.max_capacity(),
                "closing a terminal as too slow"
            );
        }
    }
}

/// Closes `conn` with `code` and `reason`.
pub(crate) fn close(conn: &Link, code: CloseCode, reason: &str) {
    conn.close(code, reason);
}

/// Test support: connection handles for outboxes and links.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
    use rustls::pki_types::PrivateKeyDer;

    /// Endpoints of a loopback connection (kept alive by the caller) and its
    /// client side.
    pub(crate) async fn connection() -> (quinn::Endpoint, quinn::Endpoint, crate::link::Link) {
        let rcgen::CertifiedKey { cert, key_pair } =
            rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let key = PrivateKeyDer::Pkcs8(key_pair.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server_tls = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .unwrap();
        server_tls.alpn_protocols = vec![ptt_codec::ALPN.to_vec()];
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        let mut client_tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client_tls.alpn_protocols = vec![ptt_codec::ALPN.to_vec()];

        let server_crypto = QuicServerConfig::try_from(server_tls).unwrap();
        let server = quinn::Endpoint::server(
            quinn::ServerConfig::with_crypto(Arc::new(server_crypto)),
            "127.0.0.1:0".parse().unwrap(),
        )
        .unwrap();
        let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        let client_crypto = QuicClientConfig::try_from(client_tls).unwrap();
        client.set_default_client_config(quinn::ClientConfig::new(Arc::new(client_crypto)));
        let connecting = client
            .connect(server.local_addr().unwrap(), "localhost")
            .unwrap();
        let (conn, accepted) =
            tokio::join!(connecting, async { server.accept().await.unwrap().await });
        accepted.unwrap();
        (server, client, crate::link::Link::native(conn.unwrap()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox(conn: &Link, capacity: usize) -> (Outbox, mpsc::Receiver<Box<ServerMsg>>) {
        Outbox::open(
            conn.clone(),
            TerminalId(1),
            capacity,
            Arc::new(Metrics::default()),
        )
    }

    fn pong(nonce: u64) -> ServerMsg {
        ServerMsg::Pong { nonce }
    }

    #[tokio::test]
    async fn droppable_messages_stop_at_half_full() {
        let (_server, _client, conn) = testing::connection().await;
        let (outbox, mut rx) = outbox(&conn, 4);
        assert!(outbox.send_droppable(pong(1)));
        assert!(outbox.send_droppable(pong(2)));
        assert!(
            outbox.send_droppable(pong(3)),
            "2 of 4 free: half, still queued"
        );
        assert!(!outbox.send_droppable(pong(4)));
        // Floor messages still fit, and nothing was closed.
        outbox.send(pong(5));
        assert!(conn.close_reason().is_none());
        let got: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok().map(|m| *m)).collect();
        assert_eq!(got, [pong(1), pong(2), pong(3), pong(5)]);
    }

    #[tokio::test]
    async fn a_full_queue_closes_the_connection_as_too_slow() {
        let (_server, _client, conn) = testing::connection().await;
        let (outbox, _rx) = outbox(&conn, 1);
        outbox.send(pong(1));
        assert!(conn.close_reason().is_none());
        outbox.send(pong(2));
        outbox.send(pong(3));
        match conn.close_reason() {
            Some(quinn::ConnectionError::LocallyClosed) => {}
            other => panic!("expected a local close, got {other:?}"),
        }
        assert_eq!(
            outbox.reader.metrics.snapshot().too_slow_closed,
            1,
            "counted once"
        );
    }

    #[tokio::test]
    async fn droppable_messages_never_close_a_reader() {
        let (_server, _client, conn) = testing::connection().await;
        let (outbox, _rx) = outbox(&conn, 4);
        let queued = (0..100).filter(|n| outbox.send_droppable(pong(*n))).count();
        assert_eq!(queued, 3, "up to half the queue");
        assert!(conn.close_reason().is_none());
        // Its own messages still fit: one more closes it.
        outbox.send(pong(200));
        assert!(conn.close_reason().is_none());
        outbox.send(pong(201));
        assert!(conn.close_reason().is_some());
    }

    #[tokio::test]
    async fn a_finished_session_is_not_an_error() {
        let (_server, _client, conn) = testing::connection().await;
        let (outbox, rx) = outbox(&conn, 1);
        drop(rx);
        outbox.send(pong(1));
        outbox.send(pong(2));
        assert!(conn.close_reason().is_none());
    }
}
