//! One terminal's connection: the QUIC handshake and `Hello`
//! ([`handshake`]), the control-stream loop and its dispatch ([`control`]),
//! the voice datagram loop ([`voice`]), and cleanup.

mod control;
mod handshake;
mod media;
mod voice;

pub(crate) use media::media_handler;

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use ptt_codec::control::{split_frame, FrameError};
use ptt_codec::{CloseCode, ServerMsg};
use quinn::{RecvStream, SendStream};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::hub::Hub;
use crate::link::Link;
use crate::metrics::Metrics;
use crate::ops;
use crate::outbox::close;

/// Why a session ended early, for the log.
#[derive(Debug, thiserror::Error)]
enum Ended {
    /// The connection was lost or closed.
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// Reading the control stream failed.
    #[error("reading control stream: {0}")]
    Read(#[from] quinn::ReadError),
    /// The control stream broke the framing rules (an oversized frame, a
    /// stream cut mid-frame, or unreadable).
    #[error("closed: {0}")]
    Framing(&'static str),
    /// The gateway refused the terminal or closed its session, with `code`.
    #[error("closed: {reason}")]
    Refused {
        /// The close code sent.
        code: CloseCode,
        /// The reason sent with it.
        reason: &'static str,
    },
}

impl Ended {
    /// The close code the gateway sends the terminal for this ending;
    /// `None` when the terminal or the network ended the session first.
    fn to_code(&self) -> Option<CloseCode> {
        match self {
            Ended::Connection(_) | Ended::Read(_) => None,
            Ended::Framing(_) => Some(CloseCode::ProtocolViolation),
            Ended::Refused { code, .. } => Some(*code),
        }
    }
}

/// Closes `conn` with `code` and `reason`, and says why the session ended.
fn refuse(conn: &Link, code: CloseCode, reason: &'static str) -> Ended {
    close(conn, code, reason);
    Ended::Refused { code, reason }
}

/// Drives one incoming connection until it ends. `slot` is its handshake
/// slot ([`crate::admission`]), dropped (given back) once the handshake is
/// over.
pub(crate) async fn run(hub: Arc<Hub>, incoming: quinn::Incoming, slot: impl Send) {
    let remote = incoming.remote_address();
    let metrics = hub.metrics().clone();
    let deadline = Duration::from_millis(u64::from(hub.config().transport.handshake_timeout_ms));
    // On timeout the handshake is dropped, which closes the connection.
    let conn = match tokio::time::timeout(deadline, incoming).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::debug!(%remote, "handshake failed: {e}");
            return;
        }
        Err(_) => {
            Metrics::add(&metrics.handshakes_timed_out, 1);
            tracing::debug!(%remote, "handshake not done within {deadline:?}");
            return;
        }
    };
    drop(slot);
    Metrics::add(&metrics.connections_accepted, 1);
    let hello_timeout = Duration::from_millis(u64::from(hub.config().session.hello_timeout_ms));
    let hello_by = tokio::time::Instant::now() + hello_timeout;
    let conn = if crate::tls::is_web(&conn) {
        // The browser console: the WebTransport handshake first, within
        // the time the Hello is given.
        match tokio::time::timeout_at(hello_by, crate::webtransport::accept(conn.clone())).await {
            Ok(Ok(link)) => {
                Metrics::add(&metrics.webtransport_sessions, 1);
                link
            }
            Ok(Err(e)) => {
                Metrics::add(&metrics.webtransport_refused, 1);
                tracing::debug!(%remote, "WebTransport handshake failed: {e}");
                conn.close(
                    quinn::VarInt::from_u32(0x100),
                    b"WebTransport handshake failed",
                );
                return;
            }
            Err(_) => {
                conn.close(
                    quinn::VarInt::from_u32(CloseCode::HelloTimeout.code()),
                    b"no WebTransport session in time",
                );
                return;
            }
        }
    } else {
        Link::native(conn)
    };
    let (send, mut recv, terminal, offer, buffered) =
        match tokio::time::timeout_at(hello_by, handshake::authenticate(&hub, &conn)).await {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                tracing::debug!(%remote, code = ?e.to_code(), "session refused: {e}");
                return;
            }
            Err(_) => {
                close(&conn, CloseCode::HelloTimeout, "no hello in time");
                return;
            }
        };
    crate::tls::open_after_hello(conn.quic(), &hub.config().transport);
    let span = tracing::info_span!("session", terminal = %terminal, %remote);
    let started = std::time::Instant::now();
    async move {
        let mut session = control::Session::start(hub.clone(), conn.clone(), send, terminal, offer);
        if hub.revoked().contains(terminal) {
            // Revoked between its Hello and its registration: the refresh
            // that revoked it may have missed this session, so close it
            // here (the control loop then ends at once).
            Metrics::add(&metrics.sessions_revoked, 1);
            close(&conn, CloseCode::Revoked, "credential revoked");
        }
        let voice = hub
            .net()
            .spawn(voice::run(hub.clone(), conn.clone(), terminal).in_current_span());
        let uploads =
            tokio::spawn(ops::attachments::accept_uploads(session.caller()).in_current_span());
        let result = session.control_loop(&mut recv, buffered).await;
        voice.abort();
        uploads.abort();
        // Only voice travels in DATAGRAM frames.
        let stats = conn.quic().stats();
        Metrics::add(&metrics.voice_datagrams_sent, stats.frame_tx.datagram);
        Metrics::add(&metrics.acks_received, stats.frame_rx.acks);
        session.finish();
        match result {
            Ok(()) | Err(Ended::Connection(quinn::ConnectionError::LocallyClosed)) => {
                tracing::info!(
                    duration_ms = started.elapsed().as_millis() as u64,
                    cause = "closed",
                    "session ended"
                )
            }
            Err(e) => tracing::info!(
                duration_ms = started.elapsed().as_millis() as u64,
                code = ?e.to_code(),
                cause = %e,
                "session ended: {e}"
            ),
        }
    }
    .instrument(span)
    .await
}

/// Reads one control frame into `buf`, returning its length, or `None` when
/// the stream ended cleanly between frames.
async fn read_frame(recv: &mut RecvStream, buf: &mut BytesMut) -> Result<Option<usize>, Ended> {
    loop {
        match split_frame(buf) {
            Ok(frame) => return Ok(Some(frame.len())),
            Err(FrameError::TooLong(_)) => return Err(Ended::Framing("oversized control frame")),
            Err(FrameError::Incomplete) => {}
        }
        let n = recv
            .read_buf(buf)
            .await
            .map_err(|e| match e.downcast::<quinn::ReadError>() {
                Ok(e) => Ended::Read(e),
                Err(_) => Ended::Framing("control stream read failed"),
            })?;
        if n == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(Ended::Framing("control stream ended mid-frame"))
            };
        }
    }
}

/// Encodes and writes queued control messages, batching what is queued.
///
/// Each batch is encoded into a buffer of its own and handed to quinn
/// without a copy; an idle connection keeps no write buffer.
async fn write_loop(mut send: SendStream, mut rx: mpsc::Receiver<Box<ServerMsg>>) {
    while let Some(msg) = rx.recv().await {
        let mut buf = BytesMut::new();
        msg.encode(&mut buf);
        while let Ok(msg) = rx.try_recv() {
            msg.encode(&mut buf);
        }
        if send.write_chunk(buf.freeze()).await.is_err() {
            return;
        }
    }
    let _ = send.finish();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endings_map_to_stable_close_codes() {
        assert_eq!(
            Ended::Framing("oversized control frame").to_code(),
            Some(CloseCode::ProtocolViolation)
        );
        for code in [
            CloseCode::ProtocolViolation,
            CloseCode::UnsupportedVersion,
            CloseCode::AuthFailed,
        ] {
            let ended = Ended::Refused {
                code,
                reason: "refused",
            };
            assert_eq!(ended.to_code(), Some(code));
        }
        assert_eq!(
            Ended::Connection(quinn::ConnectionError::LocallyClosed).to_code(),
            None
        );
        assert_eq!(Ended::Read(quinn::ReadError::ClosedStream).to_code(), None);
        // The wire numbers themselves are pinned in the codec's tests.
    }

    /// What one session's task holds while it waits for its next control
    /// frame, printed (`--no-capture`): its control loop's future (every
    /// handler's state it may await, nested) and the session itself. The
    /// session task is allocated once per connection, at its largest.
    #[tokio::test]
    async fn the_size_of_a_session() {
        let hub = crate::ops::testing::hub();
        let (_server, _client, conn) = crate::outbox::testing::connection().await;
        let (send, mut recv) = conn.quic().open_bi().await.expect("a stream");
        let mut session = control::Session::start(
            hub.clone(),
            conn.clone(),
            send,
            ptt_codec::TerminalId(501),
            ptt_codec::MediaOffer::NONE,
        );
        let session_size = std::mem::size_of_val(&session);
        let control_loop = {
            let fut = session.control_loop(&mut recv, BytesMut::new());
            std::mem::size_of_val(&fut)
        };
        let hello = {
            let fut = handshake::authenticate(&hub, &conn);
            std::mem::size_of_val(&fut)
        };
        eprintln!(
            "Session {session_size} B, control loop future {control_loop} B, Hello future {hello} B \
             (a ClientMsg {} B, a Sleep {} B, a semaphore Acquire {} B)",
            std::mem::size_of::<ptt_codec::ClientMsg>(),
            std::mem::size_of::<tokio::time::Sleep>(),
            std::mem::size_of_val(&tokio::sync::Semaphore::new(1).acquire()),
        );
        // 3,448 B when an operation's whole future was held across the
        // wait for its task permit (the issue 11 hardening), 1,256 B with
        // it boxed first, 1,064 B with the rare waits (throttle, task
        // permit) boxed too (debug build); the bound keeps it from
        // creeping back.
        assert!(control_loop <= 2048, "{control_loop}");
        session.finish();
    }
}
