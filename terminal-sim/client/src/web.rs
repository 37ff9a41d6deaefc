//! WebTransport: a terminal connected as the browser console is, over
//! HTTP/3 (ALPN `h3`) on the gateway's QUIC port, carrying the same
//! protocol (docs/CONSOLE.md).
//!
//! A WebTransport session is a QUIC connection on which both sides first
//! exchange HTTP/3 SETTINGS, the client sends an extended CONNECT to
//! `/console`, and from then on every stream and datagram of the session
//! carries a small header naming it (draft-ietf-webtrans-http3): `0x41`
//! and the session id in front of a bidirectional stream, `0x54` and the
//! session id in front of a unidirectional one, the quarter session id in
//! front of each datagram. [`Session::open`] does the handshake byte for
//! byte as a browser does; [`Terminal::connect_web`] then writes and
//! strips those headers at the few places a [`Terminal`] touches its
//! connection, so everything else in the library works unchanged.
//!
//! A console signs in with the 32-byte token of a console session (the
//! HTTP sign-in's `token`, hex-decoded) in place of a provisioned
//! credential, and trusts the gateway's console certificate by its SHA-256
//! hash, as a page does with `serverCertificateHashes` ([`endpoint`]).
//!
//! ```no_run
//! # async fn f(addr: std::net::SocketAddr, hashes: Vec<[u8; 32]>, token: [u8; 32])
//! # -> Result<(), ptt_terminal::Error> {
//! use ptt_codec::TerminalId;
//! use ptt_terminal::{web, SeenAlerts, Terminal};
//!
//! let endpoint = web::endpoint("127.0.0.1:0".parse().expect("an address"), hashes)?;
//! let console = Terminal::connect_web(&endpoint, addr, TerminalId(300), &token,
//!     SeenAlerts::default()).await?;
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes, BytesMut};
use quinn::crypto::rustls::QuicClientConfig;
use quinn::{RecvStream, SendStream};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::Digest;
use web_transport_proto::{ConnectRequest, ConnectResponse, Frame, Settings, StreamUni, VarInt};

use crate::{Error, SeenAlerts, Terminal};

/// The path of the console's WebTransport endpoint on the gateway.
pub const PATH: &str = "/console";

/// ALPN of HTTP/3.
const ALPN: &[u8] = b"h3";

/// The most bytes read from the CONNECT stream while waiting for the
/// gateway's answer (its HEADERS frame is a few dozen bytes).
const MAX_RESPONSE_BYTES: usize = 8 * 1024;

/// At most this many of the gateway's HTTP/3 streams (its control stream,
/// QPACK streams) are held open unread; more are stopped.
const MAX_HELD_STREAMS: usize = 4;

/// Accepts exactly the certificates whose SHA-256 is pinned, as a browser
/// does with `serverCertificateHashes`; signatures are checked as usual.
#[derive(Debug)]
struct Pinned {
    hashes: Vec<[u8; 32]>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let hash: [u8; 32] = sha2::Sha256::digest(end_entity.as_ref()).into();
        if self.hashes.contains(&hash) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("certificate hash not pinned".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not spoken".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// QUIC client configuration for WebTransport: TLS 1.3 with ALPN `h3`,
/// trusting only the certificates whose SHA-256 is in `hashes` (the
/// session's `webtransport.cert_hashes`), and the same keep-alive, idle
/// timeout and datagram buffer as [`crate::client_config`].
pub fn client_config(hashes: Vec<[u8; 32]>) -> Result<quinn::ClientConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned { hashes, provider }))
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| Error::Tls(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(crate::tls::transport()));
    Ok(config)
}

/// A client endpoint bound to `bind` (large socket buffers, as
/// [`crate::endpoint`]) whose connections speak WebTransport and trust the
/// certificates of `hashes`. Call it inside the tokio runtime.
pub fn endpoint(bind: SocketAddr, hashes: Vec<[u8; 32]>) -> Result<quinn::Endpoint, Error> {
    let runtime = quinn::default_runtime()
        .ok_or_else(|| Error::Io(std::io::Error::other("no async runtime")))?;
    let mut endpoint = quinn::Endpoint::new_with_abstract_socket(
        quinn::EndpointConfig::default(),
        None,
        crate::socket(bind)?,
        runtime,
    )?;
    endpoint.set_default_client_config(client_config(hashes)?);
    Ok(endpoint)
}

/// An open WebTransport session: the connection, the session id, and the
/// HTTP/3 streams a browser keeps open for it. Pass it to
/// [`Terminal::handshake_web`], or take it apart with
/// [`Session::into_parts`] to speak to the gateway byte by byte.
#[derive(Debug)]
pub struct Session {
    conn: quinn::Connection,
    id: VarInt,
    connect: (SendStream, RecvStream),
    settings: SendStream,
}

/// The pieces of a [`Session`].
#[derive(Debug)]
pub struct SessionParts {
    /// The QUIC connection.
    pub conn: quinn::Connection,
    /// The session id (the CONNECT stream's id).
    pub id: VarInt,
    /// The CONNECT stream: the gateway's close capsule arrives on it;
    /// ending it ends the session.
    pub connect: (SendStream, RecvStream),
    /// The client's HTTP/3 control stream (its SETTINGS): keep it open.
    pub settings: SendStream,
}

impl Session {
    /// Connects to `addr` and opens a session at `path` ([`PATH`] for the
    /// console): SETTINGS, then the extended CONNECT. A CONNECT answered
    /// other than 200 ends in [`Error::SessionRefused`] with the status.
    pub async fn open(
        endpoint: &quinn::Endpoint,
        addr: SocketAddr,
        server_name: &str,
        path: &str,
    ) -> Result<Session, Error> {
        let conn = endpoint.connect(addr, server_name)?.await?;
        Self::open_on(conn, path).await
    }

    /// As [`Session::open`] on an established connection (ALPN `h3`).
    pub async fn open_on(conn: quinn::Connection, path: &str) -> Result<Session, Error> {
        let mut settings_stream = conn.open_uni().await?;
        let mut settings = Settings::default();
        settings.enable_webtransport(1);
        let mut buf = BytesMut::new();
        settings.encode(&mut buf);
        settings_stream
            .write_all(&buf)
            .await
            .map_err(crate::error::write_error)?;
        let (mut send, mut recv) = conn.open_bi().await?;
        let url = format!("https://{}{path}", conn.remote_address())
            .parse()
            .map_err(|e| Error::WebTransport(format!("URL: {e}")))?;
        let mut buf = BytesMut::new();
        ConnectRequest { url }.encode(&mut buf);
        send.write_all(&buf)
            .await
            .map_err(crate::error::write_error)?;
        let mut got = BytesMut::new();
        let status = loop {
            let mut peek = &got[..];
            match ConnectResponse::decode(&mut peek) {
                Ok(response) => break response.status.as_u16(),
                Err(web_transport_proto::ConnectError::UnexpectedEnd) => {}
                Err(web_transport_proto::ConnectError::WrongStatus(Some(status))) => {
                    break status.as_u16()
                }
                Err(e) => return Err(Error::WebTransport(format!("CONNECT answer: {e}"))),
            }
            if got.len() >= MAX_RESPONSE_BYTES {
                return Err(Error::WebTransport("CONNECT answer too long".into()));
            }
            let mut chunk = [0u8; 512];
            match recv.read(&mut chunk).await {
                Ok(Some(n)) => got.extend_from_slice(&chunk[..n]),
                Ok(None) => return Err(Error::WebTransport("CONNECT stream ended".into())),
                Err(quinn::ReadError::ConnectionLost(e)) => return Err(e.into()),
                Err(e) => return Err(Error::WebTransport(format!("CONNECT stream: {e}"))),
            }
        };
        if status != 200 {
            return Err(Error::SessionRefused(status));
        }
        let id = VarInt::from_u64(send.id().into()).expect("a QUIC stream id is a varint");
        Ok(Session {
            conn,
            id,
            connect: (send, recv),
            settings: settings_stream,
        })
    }

    /// The QUIC connection.
    pub fn connection(&self) -> &quinn::Connection {
        &self.conn
    }

    /// The session id (the CONNECT stream's id).
    pub fn id(&self) -> VarInt {
        self.id
    }

    /// What goes in front of a bidirectional stream of this session.
    pub fn bi_header(&self) -> Bytes {
        header(Frame::WEBTRANSPORT.0, self.id)
    }

    /// What goes in front of each datagram of this session.
    pub fn datagram_prefix(&self) -> Bytes {
        let mut prefix = BytesMut::new();
        quarter(self.id).encode(&mut prefix);
        prefix.freeze()
    }

    /// The session's pieces.
    pub fn into_parts(self) -> SessionParts {
        SessionParts {
            conn: self.conn,
            id: self.id,
            connect: self.connect,
            settings: self.settings,
        }
    }
}

/// What a [`Terminal`] on a WebTransport session writes and strips: the
/// session's headers, and the streams held open beside it.
#[derive(Debug)]
pub(crate) struct Wire {
    id: VarInt,
    bi_header: Bytes,
    uni_header: Bytes,
    datagram_prefix: Bytes,
    /// The CONNECT stream and the client's HTTP/3 control stream: ending
    /// either would end the session.
    _session: (SendStream, RecvStream, SendStream),
    /// The gateway's HTTP/3 streams (control, QPACK), held open unread:
    /// stopping its control stream would be an HTTP/3 connection error.
    held: Mutex<Vec<RecvStream>>,
}

impl Wire {
    fn new(session: Session) -> Wire {
        Wire {
            id: session.id,
            bi_header: session.bi_header(),
            uni_header: header(StreamUni::WEBTRANSPORT.0, session.id),
            datagram_prefix: session.datagram_prefix(),
            _session: (session.connect.0, session.connect.1, session.settings),
            held: Mutex::new(Vec::new()),
        }
    }

    /// Written in front of the control stream's first frame.
    pub(crate) fn bi_header(&self) -> &Bytes {
        &self.bi_header
    }

    /// Written in front of an upload stream's first frame.
    pub(crate) fn uni_header(&self) -> &Bytes {
        &self.uni_header
    }

    /// `datagram` behind the session's prefix: one copy.
    pub(crate) fn frame_datagram(&self, datagram: &[u8]) -> Bytes {
        behind(&self.datagram_prefix, datagram)
    }

    /// `datagram` without the session's prefix; `None` when it belongs to
    /// no session of ours (or is empty behind it).
    pub(crate) fn strip_datagram(&self, datagram: Bytes) -> Option<Bytes> {
        strip(&self.datagram_prefix, datagram)
    }

    /// Reads the header of `recv`, a unidirectional stream the gateway
    /// opened, and gives the stream back when it is one of this session's;
    /// the gateway's HTTP/3 streams are held, anything else stopped.
    pub(crate) async fn claim_uni(&self, mut recv: RecvStream) -> Option<RecvStream> {
        let kind = StreamUni(read_varint(&mut recv).await?);
        if kind == StreamUni::WEBTRANSPORT {
            if read_varint(&mut recv).await == Some(self.id) {
                return Some(recv);
            }
        } else if matches!(
            kind,
            StreamUni::CONTROL | StreamUni::QPACK_ENCODER | StreamUni::QPACK_DECODER
        ) {
            let mut held = self.held.lock().expect("held streams: never poisoned");
            if held.len() < MAX_HELD_STREAMS {
                held.push(recv);
                return None;
            }
        }
        let _ = recv.stop(quinn::VarInt::from_u32(0));
        None
    }
}

impl Terminal {
    /// Connects over WebTransport as the browser console does: opens a
    /// session at [`PATH`] on `endpoint` (one made by [`endpoint`]), sends
    /// `Hello` with `token`, the 32 bytes of a console session's token, and
    /// waits for `Welcome`. Only console terminals sign in this way.
    pub async fn connect_web(
        endpoint: &quinn::Endpoint,
        addr: SocketAddr,
        terminal: ptt_codec::TerminalId,
        token: &[u8],
        seen: SeenAlerts,
    ) -> Result<Terminal, Error> {
        let session = Session::open(endpoint, addr, "localhost", PATH).await?;
        Self::handshake_web(session, terminal, token, seen).await
    }

    /// Authenticates on an open WebTransport session (see
    /// [`Terminal::connect_web`]).
    pub async fn handshake_web(
        session: Session,
        terminal: ptt_codec::TerminalId,
        token: &[u8],
        seen: SeenAlerts,
    ) -> Result<Terminal, Error> {
        let conn = session.conn.clone();
        let wire = Arc::new(Wire::new(session));
        Self::handshake_on(conn, Some(wire), terminal, token, seen).await
    }
}

/// A stream header: a varint type and the session id.
fn header(kind: VarInt, id: VarInt) -> Bytes {
    let mut buf = BytesMut::new();
    kind.encode(&mut buf);
    id.encode(&mut buf);
    buf.freeze()
}

/// `datagram` behind `prefix`, in one new buffer.
fn behind(prefix: &[u8], datagram: &[u8]) -> Bytes {
    let mut framed = BytesMut::with_capacity(prefix.len() + datagram.len());
    framed.extend_from_slice(prefix);
    framed.extend_from_slice(datagram);
    framed.freeze()
}

/// `datagram` without `prefix`; `None` when it does not start with it or
/// nothing follows it.
fn strip(prefix: &[u8], mut datagram: Bytes) -> Option<Bytes> {
    (datagram.len() > prefix.len() && datagram.starts_with(prefix)).then(|| {
        datagram.advance(prefix.len());
        datagram
    })
}

/// The quarter stream id that prefixes a session's datagrams.
fn quarter(id: VarInt) -> VarInt {
    VarInt::from_u64(id.into_inner() / 4).expect("a quarter of a varint is a varint")
}

/// Reads one QUIC varint from `recv` byte by byte (at most 8 bytes);
/// `None` when the stream ends or fails first.
async fn read_varint(recv: &mut RecvStream) -> Option<VarInt> {
    let mut buf = Vec::with_capacity(VarInt::MAX_SIZE);
    loop {
        let mut peek = &buf[..];
        if let Ok(value) = VarInt::decode(&mut peek) {
            return Some(value);
        }
        if buf.len() >= VarInt::MAX_SIZE {
            return None;
        }
        let mut byte = [0u8; 1];
        match recv.read(&mut byte).await {
            Ok(Some(1)) => buf.push(byte[0]),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire_bytes(id: u64) -> (Bytes, Bytes) {
        let id = VarInt::from_u64(id).expect("small");
        let mut prefix = BytesMut::new();
        quarter(id).encode(&mut prefix);
        (header(Frame::WEBTRANSPORT.0, id), prefix.freeze())
    }

    #[test]
    fn headers_are_the_drafts_bytes() {
        // Session 0 (the client's first bidirectional stream): 0x41 as a
        // two-byte varint, then 0; datagrams behind the quarter id 0.
        let (bi, prefix) = wire_bytes(0);
        assert_eq!(&bi[..], &[0x40, 0x41, 0x00]);
        assert_eq!(&prefix[..], &[0x00]);
        // Session 4: quarter id 1.
        let (bi, prefix) = wire_bytes(4);
        assert_eq!(&bi[..], &[0x40, 0x41, 0x04]);
        assert_eq!(&prefix[..], &[0x01]);
        assert_eq!(
            &header(StreamUni::WEBTRANSPORT.0, VarInt::from_u32(4))[..],
            &[0x40, 0x54, 0x04]
        );
    }

    #[test]
    fn datagrams_of_other_sessions_and_empty_ones_are_not_ours() {
        let framed = behind(&[0x01], b"voice");
        assert_eq!(&framed[..], b"\x01voice");
        assert_eq!(strip(&[0x01], framed).as_deref(), Some(&b"voice"[..]));
        assert_eq!(strip(&[0x01], Bytes::from_static(b"\x02voice")), None);
        assert_eq!(strip(&[0x01], Bytes::from_static(b"\x01")), None);
        assert_eq!(strip(&[0x01], Bytes::new()), None);
        // A two-byte prefix (quarter id 64) is matched whole.
        assert_eq!(strip(&[0x40, 0x40], Bytes::from_static(b"\x40")), None);
        assert_eq!(
            strip(&[0x40, 0x40], Bytes::from_static(b"\x40\x40x")).as_deref(),
            Some(&b"x"[..])
        );
    }
}
