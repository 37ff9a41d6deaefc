//! The control stream's first frame: `Hello`, version and credential.

use bytes::BytesMut;
use ptt_codec::control::split_frame;
use ptt_codec::{ClientMsg, CloseCode, MediaOffer, TerminalId};
use ptt_gateway_core::session::{self, Refusal};
use quinn::{RecvStream, SendStream};

use crate::link::Link;

use super::{read_frame, refuse, Ended};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::outbox::close;

/// Accepts the control stream and checks `Hello`. On failure the connection
/// is closed with the matching code. Returns the stream, the terminal, the
/// media it offered and the bytes already read behind the `Hello`.
pub(super) async fn authenticate(
    hub: &Hub,
    conn: &Link,
) -> Result<(SendStream, RecvStream, TerminalId, MediaOffer, BytesMut), Ended> {
    let (send, mut recv) = conn.accept_bi().await?;
    let mut buf = BytesMut::with_capacity(256);
    let refuse = |code: CloseCode, reason: &'static str| refuse(conn, code, reason);
    let Some(len) = read_frame(&mut recv, &mut buf).await.inspect_err(|_| {
        close(conn, CloseCode::ProtocolViolation, "bad hello");
    })?
    else {
        return Err(refuse(CloseCode::ProtocolViolation, "no hello"));
    };
    let frame =
        split_frame(&buf[..len]).map_err(|_| refuse(CloseCode::ProtocolViolation, "bad hello"))?;
    let first = ClientMsg::decode(frame).ok();
    let offer = match &first {
        Some(ClientMsg::Hello { media, .. }) => *media,
        _ => MediaOffer::NONE,
    };
    let org = hub.org();
    let authenticated = if conn.is_web() {
        // A browser console: its Hello carries its operator's session
        // token, good for the console terminal the operator sits at.
        let now = crate::clock::now_ms();
        session::authenticate_with(&org, first, |terminal, token| {
            hub.consoles().verify(terminal, token, now)
                && org.terminal(terminal).is_some_and(|t| t.is_console())
        })
    } else {
        session::authenticate(&org, hub.key(), first)
    };
    let terminal = match authenticated {
        Ok(terminal) => terminal,
        Err(refusal) => {
            if let Refusal::AuthFailed { terminal } = refusal {
                Metrics::add(&hub.metrics().auth_failures, 1);
                tracing::warn!(%terminal, remote = %conn.remote_address(), "authentication failed");
            }
            return Err(refuse(refusal.to_code(), refusal.reason()));
        }
    };
    if hub.revoked().contains(terminal) {
        // A valid credential, revoked: say so, so that the terminal stops
        // retrying and tells its user. Its alerts stay in the store.
        Metrics::add(&hub.metrics().hello_revoked, 1);
        if hub.revoked().warn_due(crate::clock::now_ms()) {
            tracing::warn!(%terminal, remote = %conn.remote_address(), cause = "credential revoked", "Hello refused");
        }
        return Err(refuse(CloseCode::Revoked, "credential revoked"));
    }
    // Frames sent right behind the Hello may already be buffered: keep them.
    let _hello = buf.split_to(len);
    Ok((send, recv, terminal, offer, buf))
}
