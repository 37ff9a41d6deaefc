//! One terminal's transport: a native QUIC connection (ALPN `ptt/1`) or a
//! WebTransport session (HTTP/3, ALPN `h3`: the browser console) on the
//! same endpoint. One protocol, two transports.
//!
//! Everything above the transport (sessions, groups, alerts) talks to a
//! [`Link`] and never learns which it is. A WebTransport session is a QUIC
//! connection whose streams and datagrams carry a small header naming the
//! session (draft-ietf-webtrans-http3): a varint stream type and the
//! session id in front of each stream, the quarter session id in front of
//! each datagram. [`Link`] writes and strips those headers; what follows
//! them is byte for byte the native protocol.
//!
//! A leaf like [`crate::outbox`]: it knows QUIC and nothing of sessions.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use ptt_codec::CloseCode;
use quinn::{Connection, ConnectionError, RecvStream, SendStream};
use web_transport_proto::{Capsule, StreamUni, VarInt};

use crate::media::Route;

/// HTTP/3 H3_NO_ERROR: the connection-level code a WebTransport session's
/// connection is closed with; the session's own code travels in its
/// CLOSE_WEBTRANSPORT_SESSION capsule.
const H3_NO_ERROR: u32 = 0x100;

/// How long a closed WebTransport session's connection stays open so that
/// its close capsule reaches the browser (which then closes it first).
const CAPSULE_GRACE: Duration = Duration::from_millis(300);

/// At most this many HTTP/3 streams the browser opens beside the session
/// (QPACK encoder and decoder) are held open unread; more are stopped.
const MAX_HELD_STREAMS: usize = 4;

/// A terminal's transport. Cheap to clone; clones share the connection.
#[derive(Debug, Clone)]
pub struct Link {
    conn: Connection,
    web: Option<Arc<WebSession>>,
    /// Its media plane, once its `Hello`'s SRTP offer was answered.
    media: Arc<OnceLock<Arc<Route>>>,
}

/// What a WebTransport session adds to its connection.
#[derive(Debug)]
struct WebSession {
    /// The session id: the CONNECT stream's id.
    id: VarInt,
    /// Written in front of every unidirectional stream the gateway opens.
    uni_header: Bytes,
    /// Written in front of every datagram: the quarter session id.
    datagram_prefix: Bytes,
    /// The CONNECT stream's sending side, where the close capsule goes;
    /// `None` once closed.
    connect: Mutex<Option<SendStream>>,
    /// HTTP/3 streams of the browser's own (its control stream, QPACK),
    /// held open unread: closing them would be a connection error for the
    /// browser.
    held: Mutex<Vec<RecvStream>>,
    /// The gateway's HTTP/3 control stream (its SETTINGS), held open for
    /// the same reason.
    _settings: SendStream,
}

impl Link {
    /// A native connection.
    pub(crate) fn native(conn: Connection) -> Self {
        Self {
            conn,
            web: None,
            media: Arc::default(),
        }
    }

    /// WebTransport session `id` on `conn` ([`crate::webtransport`]):
    /// `connect` is the CONNECT stream's sending side, `settings` the
    /// gateway's HTTP/3 control stream, `held` the browser's.
    pub(crate) fn web(
        conn: Connection,
        id: VarInt,
        connect: SendStream,
        settings: SendStream,
        held: Vec<RecvStream>,
    ) -> Self {
        let mut uni_header = BytesMut::new();
        StreamUni::WEBTRANSPORT.encode(&mut uni_header);
        id.encode(&mut uni_header);
        let mut datagram_prefix = BytesMut::new();
        quarter(id).encode(&mut datagram_prefix);
        let web = WebSession {
            id,
            uni_header: uni_header.freeze(),
            datagram_prefix: datagram_prefix.freeze(),
            connect: Mutex::new(Some(connect)),
            held: Mutex::new(held),
            _settings: settings,
        };
        Self {
            conn,
            web: Some(Arc::new(web)),
            media: Arc::default(),
        }
    }

    /// Gives the link its media plane (once; later calls change nothing).
    pub(crate) fn attach_media(&self, route: Arc<Route>) {
        let _ = self.media.set(route);
    }

    /// Its media plane, if SRTP was answered.
    pub fn media(&self) -> Option<&Arc<Route>> {
        self.media.get()
    }

    /// Whether this is a WebTransport session (a browser console).
    pub fn is_web(&self) -> bool {
        self.web.is_some()
    }

    /// The underlying QUIC connection, for what is the same on both
    /// transports (address, statistics, limits). Its streams and
    /// datagrams must go through the `Link`.
    pub(crate) fn quic(&self) -> &Connection {
        &self.conn
    }

    /// The peer's address.
    pub fn remote_address(&self) -> std::net::SocketAddr {
        self.conn.remote_address()
    }

    /// Why the connection was closed; `None` while it is open.
    pub fn close_reason(&self) -> Option<ConnectionError> {
        self.conn.close_reason()
    }

    /// Opens a unidirectional stream to the terminal, its session header
    /// (if any) already written.
    pub(crate) async fn open_uni(&self) -> Result<SendStream, ConnectionError> {
        let mut send = self.conn.open_uni().await?;
        if let Some(web) = &self.web {
            // A few bytes on a fresh stream: within any flow-control
            // window, so this only fails with the connection.
            send.write_chunk(web.uni_header.clone())
                .await
                .map_err(|e| match e {
                    quinn::WriteError::ConnectionLost(e) => e,
                    _ => ConnectionError::Reset,
                })?;
        }
        Ok(send)
    }

    /// Accepts the terminal's control stream: its first bidirectional
    /// stream (on a WebTransport session, the first after CONNECT, its
    /// header checked and removed).
    pub(crate) async fn accept_bi(&self) -> Result<(SendStream, RecvStream), ConnectionError> {
        loop {
            let (send, mut recv) = self.conn.accept_bi().await?;
            let Some(web) = &self.web else {
                return Ok((send, recv));
            };
            let mut buf = BytesMut::new();
            let kind = read_varint(&mut recv, &mut buf).await;
            let id = read_varint(&mut recv, &mut buf).await;
            if kind == Some(web_transport_proto::Frame::WEBTRANSPORT.0) && id == Some(web.id) {
                return Ok((send, recv));
            }
            // Not one of this session's streams: refuse it and wait on.
            let _ = recv.stop(quinn::VarInt::from_u32(0));
        }
    }

    /// Waits for the terminal's next unidirectional stream. On a
    /// WebTransport session pass it to [`Link::claim_uni`] before reading.
    pub(crate) async fn accept_uni(&self) -> Result<RecvStream, ConnectionError> {
        self.conn.accept_uni().await
    }

    /// Reads a WebTransport stream header from `recv`, a stream the peer
    /// opened, and gives the stream back when it belongs to this session.
    /// Streams of the browser's HTTP/3 layer are held (up to
    /// [`MAX_HELD_STREAMS`]); anything else is stopped. On a native
    /// connection every stream is the terminal's. Call it with a timeout:
    /// it waits for the header's bytes.
    pub(crate) async fn claim_uni(&self, mut recv: RecvStream) -> Option<RecvStream> {
        let Some(web) = &self.web else {
            return Some(recv);
        };
        let mut buf = BytesMut::new();
        let kind = StreamUni(read_varint(&mut recv, &mut buf).await?);
        if kind == StreamUni::WEBTRANSPORT {
            if read_varint(&mut recv, &mut buf).await == Some(web.id) {
                return Some(recv);
            }
        } else if kind == StreamUni::QPACK_ENCODER || kind == StreamUni::QPACK_DECODER {
            let mut held = web.held.lock().expect("held streams: never poisoned");
            if held.len() < MAX_HELD_STREAMS {
                held.push(recv);
                return None;
            }
        }
        let _ = recv.stop(quinn::VarInt::from_u32(0));
        None
    }

    /// Reads the terminal's next datagram, its session prefix removed.
    /// Datagrams of no session of this connection are skipped.
    pub(crate) async fn read_datagram(&self) -> Result<Bytes, ConnectionError> {
        loop {
            let mut datagram = self.conn.read_datagram().await?;
            let Some(web) = &self.web else {
                return Ok(datagram);
            };
            let prefix = &web.datagram_prefix;
            if datagram.len() > prefix.len() && datagram.starts_with(prefix) {
                datagram.advance(prefix.len());
                return Ok(datagram);
            }
        }
    }

    /// Queues one datagram to the terminal, with its session prefix.
    pub(crate) fn send_datagram(&self, datagram: Bytes) -> Result<(), quinn::SendDatagramError> {
        match &self.web {
            None => self.conn.send_datagram(datagram),
            Some(web) => {
                let mut framed =
                    BytesMut::with_capacity(web.datagram_prefix.len() + datagram.len());
                framed.extend_from_slice(&web.datagram_prefix);
                framed.extend_from_slice(&datagram);
                self.conn.send_datagram(framed.freeze())
            }
        }
    }

    /// Closes the session with `code` and `reason`.
    ///
    /// A native connection is closed at once (QUIC CONNECTION_CLOSE with
    /// the code). A WebTransport session gets a CLOSE_WEBTRANSPORT_SESSION
    /// capsule carrying the code, which the page sees as
    /// `WebTransport.closed`'s `closeCode`; its connection is closed
    /// [`CAPSULE_GRACE`] later, when the browser has not closed it first.
    pub(crate) fn close(&self, code: CloseCode, reason: &str) {
        let Some(web) = &self.web else {
            self.conn
                .close(quinn::VarInt::from_u32(code.code()), reason.as_bytes());
            return;
        };
        let connect = web
            .connect
            .lock()
            .expect("connect stream: never poisoned")
            .take();
        let Some(mut connect) = connect else {
            return;
        };
        // RFC 9297: on HTTP/3 a capsule travels in a DATA frame.
        let mut body = BytesMut::new();
        Capsule::CloseWebTransportSession {
            code: code.code(),
            reason: reason.to_owned(),
        }
        .encode(&mut body);
        let mut capsule = BytesMut::new();
        web_transport_proto::Frame::DATA.encode(&mut capsule);
        VarInt::from_u32(body.len() as u32).encode(&mut capsule);
        capsule.extend_from_slice(&body);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.conn
                .close(quinn::VarInt::from_u32(H3_NO_ERROR), reason.as_bytes());
            return;
        };
        let conn = self.conn.clone();
        let reason = reason.as_bytes().to_vec();
        runtime.spawn(async move {
            // Small, on an open stream: written at once unless the
            // connection is already going.
            let _ =
                tokio::time::timeout(CAPSULE_GRACE, connect.write_chunk(capsule.freeze())).await;
            let _ = connect.finish();
            tokio::time::sleep(CAPSULE_GRACE).await;
            conn.close(quinn::VarInt::from_u32(H3_NO_ERROR), &reason);
        });
    }
}

/// The quarter stream id that prefixes a session's datagrams.
fn quarter(id: VarInt) -> VarInt {
    VarInt::from_u64(id.into_inner() / 4).expect("a quarter of a varint is a varint")
}

/// Reads one QUIC varint from `recv`, byte by byte into `buf` (at most 8
/// bytes: a varint's largest size); `None` when the stream ends or fails
/// first. The bytes of the varint are consumed from `buf`.
async fn read_varint(recv: &mut RecvStream, buf: &mut BytesMut) -> Option<VarInt> {
    loop {
        let mut peek = &buf[..];
        if let Ok(value) = VarInt::decode(&mut peek) {
            let used = buf.len() - peek.len();
            buf.advance(used);
            return Some(value);
        }
        if buf.len() >= VarInt::MAX_SIZE {
            return None;
        }
        let mut byte = [0u8; 1];
        match recv.read(&mut byte).await {
            Ok(Some(1)) => buf.extend_from_slice(&byte),
            _ => return None,
        }
    }
}
