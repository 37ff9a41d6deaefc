//! A WebTransport client as a browser is one, byte for byte on the wire
//! (HTTP/3 SETTINGS, extended CONNECT, stream and datagram headers), built
//! on quinn and `web-transport-proto`, to test the gateway's WebTransport
//! side without a browser: the browser tests (`tests/tests/console.rs`)
//! check Chromium itself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use ptt_codec::control::split_frame;
use ptt_codec::{ClientMsg, ServerMsg, TerminalId};
use quinn::crypto::rustls::QuicClientConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::Digest;
use web_transport_proto::{ConnectRequest, ConnectResponse, Frame, Settings, VarInt};

/// Accepts exactly the certificates whose SHA-256 is pinned, as a browser
/// does with `serverCertificateHashes`.
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

/// A client endpoint speaking HTTP/3 (ALPN `h3`) and trusting only the
/// certificates of `hashes`.
pub fn endpoint(hashes: Vec<[u8; 32]>) -> quinn::Endpoint {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned { hashes, provider }))
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let crypto = QuicClientConfig::try_from(tls).expect("QUIC TLS");
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(
        Duration::from_secs(30).try_into().expect("idle timeout"),
    ));
    config.transport_config(Arc::new(transport));
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("address")).expect("client endpoint");
    endpoint.set_default_client_config(config);
    endpoint
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
    /// Opens a session at `https://127.0.0.1:<port><path>`: SETTINGS, then
    /// the extended CONNECT; `Err(Status)` when not answered 200.
    pub async fn open(
        endpoint: &quinn::Endpoint,
        addr: SocketAddr,
        path: &str,
    ) -> Result<WebSession, OpenError> {
        let conn = endpoint
            .connect(addr, "localhost")
            .expect("a connection attempt")
            .await
            .map_err(OpenError::Connection)?;
        let mut settings_stream = conn.open_uni().await.map_err(OpenError::Connection)?;
        let mut settings = Settings::default();
        settings.enable_webtransport(1);
        let mut buf = BytesMut::new();
        settings.encode(&mut buf);
        write(&mut settings_stream, &buf).await?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(OpenError::Connection)?;
        let url = format!("https://127.0.0.1:{}{path}", addr.port())
            .parse()
            .expect("a URL");
        let mut buf = BytesMut::new();
        ConnectRequest { url }.encode(&mut buf);
        write(&mut send, &buf).await?;
        let mut got = BytesMut::new();
        let status = loop {
            let mut peek = &got[..];
            match ConnectResponse::decode(&mut peek) {
                Ok(response) => break response.status.as_u16(),
                Err(web_transport_proto::ConnectError::UnexpectedEnd) => {}
                Err(web_transport_proto::ConnectError::WrongStatus(Some(status))) => {
                    break status.as_u16()
                }
                Err(e) => return Err(OpenError::Stream(e.to_string())),
            }
            let mut chunk = [0u8; 512];
            match recv.read(&mut chunk).await {
                Ok(Some(n)) => got.extend_from_slice(&chunk[..n]),
                Ok(None) => return Err(OpenError::Stream("CONNECT stream ended".into())),
                Err(e) => return Err(OpenError::Stream(e.to_string())),
            }
        };
        if status != 200 {
            return Err(OpenError::Status(status));
        }
        let id = VarInt::from_u64(send.id().into()).expect("a stream id is a varint");
        Ok(WebSession {
            conn,
            id,
            connect: (send, recv),
            _settings: settings_stream,
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
