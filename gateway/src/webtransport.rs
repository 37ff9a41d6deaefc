//! The WebTransport handshake on the gateway's QUIC endpoint (ALPN `h3`):
//! HTTP/3 SETTINGS both ways, then the browser's extended CONNECT to
//! `/console`, answered 200. What follows is a [`Link`] carrying the
//! native protocol ([`crate::link`]).
//!
//! The wire formats come from the `web-transport-proto` crate; this is the
//! thin async shell around them, with every read bounded: a browser (or
//! anyone claiming to be one) gets at most [`MAX_HEADER_BYTES`] read per
//! stream before it has a session, and the caller's Hello timeout covers
//! the whole handshake.

use bytes::{Buf, BytesMut};
use quinn::{Connection, ConnectionError, RecvStream, SendStream};
use web_transport_proto::{
    ConnectRequest, ConnectResponse, Settings, SettingsError, StreamUni, VarInt,
};

use crate::link::Link;

/// The path the console's WebTransport session must CONNECT to.
pub const PATH: &str = "/console";

/// The most bytes read from a stream while looking for a SETTINGS frame or
/// a CONNECT request (Chromium's are about 100-300 bytes).
const MAX_HEADER_BYTES: usize = 8 * 1024;

/// The most unidirectional streams the browser may open before its
/// control stream (its QPACK streams may come first).
const MAX_EARLY_STREAMS: usize = 4;

/// How long a refused CONNECT's answer may take to be acknowledged before
/// the connection is closed anyway.
const ANSWER_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// HTTP/3 H3_STREAM_CREATION_ERROR: a stream of a type not served.
const H3_STREAM_CREATION_ERROR: u32 = 0x103;

/// Why a WebTransport handshake failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// The connection was lost or closed.
    #[error("connection: {0}")]
    Connection(#[from] ConnectionError),
    /// A stream broke off or was reset.
    #[error("stream: {0}")]
    Stream(String),
    /// The browser's HTTP/3 did not follow the rules.
    #[error("protocol: {0}")]
    Protocol(String),
    /// A CONNECT to another path (answered 404).
    #[error("no WebTransport endpoint at {0}")]
    NotFound(String),
}

/// Runs the handshake on `conn`, a fresh connection that negotiated ALPN
/// `h3`, and returns the session's [`Link`]. Raises the connection's
/// stream limits just enough for the handshake (the browser's 3 HTTP/3
/// streams and 2 bidirectional ones: CONNECT and the control stream).
pub(crate) async fn accept(conn: Connection) -> Result<Link, Error> {
    conn.set_max_concurrent_uni_streams(quinn::VarInt::from_u32(MAX_EARLY_STREAMS as u32));
    conn.set_max_concurrent_bi_streams(quinn::VarInt::from_u32(2));
    let (settings, (browser_control, mut held)) =
        tokio::try_join!(send_settings(&conn), receive_settings(&conn))?;
    held.push(browser_control);
    let (mut send, mut recv) = conn.accept_bi().await?;
    let mut buf = BytesMut::new();
    let request = loop {
        let mut peek = &buf[..];
        match ConnectRequest::decode(&mut peek) {
            Ok(request) => {
                let used = buf.len() - peek.len();
                buf.advance(used);
                break request;
            }
            Err(web_transport_proto::ConnectError::UnexpectedEnd) => {}
            Err(e) => return Err(Error::Protocol(format!("CONNECT: {e}"))),
        }
        read_more(&mut recv, &mut buf).await?;
    };
    let status = if request.url.path() == PATH {
        http::StatusCode::OK
    } else {
        http::StatusCode::NOT_FOUND
    };
    let mut response = BytesMut::new();
    ConnectResponse { status }.encode(&mut response);
    send.write_all(&response)
        .await
        .map_err(|e| Error::Stream(e.to_string()))?;
    if status != http::StatusCode::OK {
        // Let the answer arrive before the connection is closed (a close
        // drops what is still unsent), within a bound.
        let _ = send.finish();
        let _ = tokio::time::timeout(ANSWER_GRACE, send.stopped()).await;
        return Err(Error::NotFound(request.url.path().to_owned()));
    }
    let id = VarInt::from_u64(send.id().into()).expect("a QUIC stream id is a varint");
    // The browser ends its session by a close capsule or by ending the
    // CONNECT stream: either ends the connection (one session each).
    tokio::spawn(watch_connect(conn.clone(), recv, buf));
    Ok(Link::web(conn, id, send, settings, held))
}

/// Opens the gateway's HTTP/3 control stream and sends its SETTINGS:
/// WebTransport (one session) and datagrams on.
async fn send_settings(conn: &Connection) -> Result<SendStream, Error> {
    let mut send = conn.open_uni().await?;
    let mut settings = Settings::default();
    settings.enable_webtransport(1);
    let mut buf = BytesMut::new();
    settings.encode(&mut buf);
    send.write_all(&buf)
        .await
        .map_err(|e| Error::Stream(e.to_string()))?;
    Ok(send)
}

/// Accepts the browser's unidirectional streams until its HTTP/3 control
/// stream, and reads its SETTINGS: they must offer WebTransport and
/// datagrams. Returns the control stream and the streams that came before
/// it (QPACK), all to be held open.
async fn receive_settings(conn: &Connection) -> Result<(RecvStream, Vec<RecvStream>), Error> {
    let mut early = Vec::new();
    let mut seen = 0;
    loop {
        let mut recv = conn.accept_uni().await?;
        let mut buf = BytesMut::new();
        read_more(&mut recv, &mut buf).await?;
        let mut peek = &buf[..];
        let kind = loop {
            match StreamUni::decode(&mut peek) {
                Ok(kind) => break kind,
                Err(_) => {
                    read_more(&mut recv, &mut buf).await?;
                    peek = &buf[..];
                }
            }
        };
        if kind != StreamUni::CONTROL {
            seen += 1;
            if seen > MAX_EARLY_STREAMS {
                return Err(Error::Protocol("too many streams before SETTINGS".into()));
            }
            if kind == StreamUni::QPACK_ENCODER || kind == StreamUni::QPACK_DECODER {
                early.push(recv);
            } else {
                // Unknown (or grease) stream types are ignored (RFC 9114 6.2).
                let _ = recv.stop(quinn::VarInt::from_u32(H3_STREAM_CREATION_ERROR));
            }
            continue;
        }
        loop {
            let mut peek = &buf[..];
            match Settings::decode(&mut peek) {
                Ok(settings) if settings.supports_webtransport() > 0 => return Ok((recv, early)),
                Ok(_) => return Err(Error::Protocol("SETTINGS without WebTransport".into())),
                Err(SettingsError::UnexpectedEnd) => read_more(&mut recv, &mut buf).await?,
                Err(e) => return Err(Error::Protocol(format!("SETTINGS: {e}"))),
            }
        }
    }
}

/// Reads more of `recv` into `buf`, up to [`MAX_HEADER_BYTES`] in all.
async fn read_more(recv: &mut RecvStream, buf: &mut BytesMut) -> Result<(), Error> {
    if buf.len() >= MAX_HEADER_BYTES {
        return Err(Error::Protocol(format!(
            "no complete header within {MAX_HEADER_BYTES} bytes"
        )));
    }
    let mut chunk = [0u8; 1024];
    let room = (MAX_HEADER_BYTES - buf.len()).min(chunk.len());
    match recv.read(&mut chunk[..room]).await {
        Ok(Some(n)) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(())
        }
        Ok(None) => Err(Error::Stream("stream ended before its header".into())),
        Err(e) => Err(Error::Stream(e.to_string())),
    }
}

/// Reads the CONNECT stream until the browser closes the session (its
/// CLOSE_WEBTRANSPORT_SESSION capsule comes with the stream's end, or the
/// stream is reset), then closes the connection: one session each.
/// Whatever the stream carries meanwhile (HTTP/3 frames holding capsules)
/// is read and dropped, never kept.
async fn watch_connect(conn: Connection, mut recv: RecvStream, _read: BytesMut) {
    let mut sink = [0u8; 1024];
    while let Ok(Some(_)) = recv.read(&mut sink).await {}
    tracing::debug!(remote = %conn.remote_address(), "WebTransport session closed by the browser");
    conn.close(quinn::VarInt::from_u32(0x100), b"session closed");
}
