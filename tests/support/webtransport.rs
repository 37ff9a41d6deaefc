//! A WebTransport client as a browser is one, byte for byte on the wire
//! (HTTP/3 SETTINGS, extended CONNECT, stream and datagram headers), to
//! test the gateway's WebTransport side without a browser: the browser
//! tests (`tests/tests/console.rs`) check Chromium itself. The endpoint
//! (certificate pinned by hash) and the handshake are the client library's
//! (`ptt_terminal::web`, which load tools use too); what this adds is raw
//! access to the session's control stream and datagrams, for tests that
//! look at single frames.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use ptt_codec::control::split_frame;
use ptt_codec::{ClientMsg, ServerMsg, TerminalId};
use ptt_terminal_sim::terminal::{web, Error};
use web_transport_proto::{Frame, VarInt};

/// A client endpoint speaking HTTP/3 (ALPN `h3`) and trusting only the
/// certificates of `hashes` (the client library's, as a load tool uses it).
pub fn endpoint(hashes: Vec<[u8; 32]>) -> quinn::Endpoint {
    web::endpoint("127.0.0.1:0".parse().expect("address"), hashes).expect("client endpoint")
}

/// Why a WebTransport session could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// The QUIC connection failed or was closed.
    Connection(quinn::ConnectionError),
    /// The CONNECT was answered with this status.
    Status(u16),
    /// A stream failed.
    Stream(String),
}

/// A WebTransport session opened to the gateway: its connection, and the
/// streams a browser keeps open for it.
#[derive(Debug)]
pub struct WebSession {
    /// The QUIC connection.
    pub conn: quinn::Connection,
    /// The session id (the CONNECT stream's id).
    pub id: VarInt,
    /// The CONNECT stream.
    pub connect: (quinn::SendStream, quinn::RecvStream),
    _settings: quinn::SendStream,
}

impl WebSession {
    /// Opens a session at `https://127.0.0.1:<port><path>` with the
    /// client library ([`web::Session::open`]): SETTINGS, then the
    /// extended CONNECT; `Err(Status)` when not answered 200.
    pub async fn open(
        endpoint: &quinn::Endpoint,
        addr: SocketAddr,
        path: &str,
    ) -> Result<WebSession, OpenError> {
        let session = web::Session::open(endpoint, addr, "localhost", path)
            .await
            .map_err(|e| match e {
                Error::SessionRefused(status) => OpenError::Status(status),
                Error::Connection(e) => OpenError::Connection(e),
                other => OpenError::Stream(other.to_string()),
            })?;
        let parts = session.into_parts();
        Ok(WebSession {
            conn: parts.conn,
            id: parts.id,
            connect: parts.connect,
            _settings: parts.settings,
        })
    }

    /// Opens the session's control stream (a bidirectional stream with
    /// the WebTransport header) and sends `Hello` with `token`.
    pub async fn hello(self, terminal: TerminalId, token: &[u8]) -> Result<WebConsole, OpenError> {
        let (mut send, recv) = self.conn.open_bi().await.map_err(OpenError::Connection)?;
        let mut buf = BytesMut::new();
        Frame::WEBTRANSPORT.encode(&mut buf);
        self.id.encode(&mut buf);
        ClientMsg::Hello {
            version: 1,
            terminal,
            credential: Bytes::copy_from_slice(token),
            media: ptt_codec::MediaOffer::NONE,
        }
        .encode(&mut buf);
        write(&mut send, &buf).await?;
        Ok(WebConsole {
            session: self,
            send,
            recv,
            buf: BytesMut::new(),
        })
    }

    /// The datagram prefix of this session (its quarter stream id).
    pub fn datagram_prefix(&self) -> Vec<u8> {
        let mut prefix = BytesMut::new();
        VarInt::from_u64(self.id.into_inner() / 4)
            .expect("a varint")
            .encode(&mut prefix);
        prefix.to_vec()
    }
}

async fn write(send: &mut quinn::SendStream, bytes: &[u8]) -> Result<(), OpenError> {
    send.write_all(bytes)
        .await
        .map_err(|e| OpenError::Stream(e.to_string()))
}

/// A console signed in over WebTransport: the protocol's control stream
/// and datagrams, through the session's headers.
#[derive(Debug)]
pub struct WebConsole {
    /// The session.
    pub session: WebSession,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    buf: BytesMut,
}

impl WebConsole {
    /// Sends one control frame.
    pub async fn send(&mut self, msg: ClientMsg) {
        let mut buf = BytesMut::new();
        msg.encode(&mut buf);
        self.send
            .write_all(&buf)
            .await
            .expect("control stream open");
    }

    /// The next control frame, within 5 s; `None` when the stream ended
    /// or failed (the session was closed).
    pub async fn next(&mut self) -> Option<ServerMsg> {
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Ok(frame) = split_frame(&self.buf) {
                    let len = frame.len();
                    let msg = ServerMsg::decode(frame).expect("the gateway's frames decode");
                    self.buf.advance(len);
                    return Some(msg);
                }
                let mut chunk = [0u8; 4096];
                match self.recv.read(&mut chunk).await {
                    Ok(Some(n)) => self.buf.extend_from_slice(&chunk[..n]),
                    _ => return None,
                }
            }
        })
        .await
        .expect("a control frame within 5 s")
    }

    /// The next control frame that `pick` accepts, skipping others.
    pub async fn wait_for<T>(&mut self, mut pick: impl FnMut(ServerMsg) -> Option<T>) -> T {
        loop {
            let msg = self.next().await.expect("session open");
            if let Some(t) = pick(msg) {
                return t;
            }
        }
    }

    /// The code of the CLOSE_WEBTRANSPORT_SESSION capsule the gateway sent
    /// on the CONNECT stream (in an HTTP/3 DATA frame), within 5 s; `None`
    /// when the stream ended without one.
    pub async fn session_close_capsule(&mut self) -> Option<u32> {
        let recv = &mut self.session.connect.1;
        let bytes = tokio::time::timeout(Duration::from_secs(5), recv.read_to_end(64 * 1024))
            .await
            .expect("the CONNECT stream ends within 5 s")
            .ok()?;
        let mut buf = &bytes[..];
        let frame = VarInt::decode(&mut buf).ok()?;
        let _len = VarInt::decode(&mut buf).ok()?;
        let capsule = VarInt::decode(&mut buf).ok()?;
        let _len = VarInt::decode(&mut buf).ok()?;
        (frame.into_inner() == 0 && capsule.into_inner() == 0x2843 && buf.len() >= 4)
            .then(|| buf.get_u32())
    }

    /// Sends a voice datagram (the protocol's datagram behind the
    /// session's prefix).
    pub fn send_datagram(&self, datagram: &[u8]) {
        let mut framed = self.session.datagram_prefix();
        framed.extend_from_slice(datagram);
        self.session
            .conn
            .send_datagram(framed.into())
            .expect("datagram sent");
    }

    /// The next datagram, its session prefix checked and removed.
    pub async fn read_datagram(&self) -> Bytes {
        let mut datagram =
            tokio::time::timeout(Duration::from_secs(5), self.session.conn.read_datagram())
                .await
                .expect("a datagram within 5 s")
                .expect("connection open");
        let prefix = self.session.datagram_prefix();
        assert!(datagram.starts_with(&prefix), "datagram of this session");
        datagram.advance(prefix.len());
        datagram
    }
}
