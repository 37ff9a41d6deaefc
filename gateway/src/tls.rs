//! TLS 1.3 certificates and the QUIC endpoint.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::Digest;

use crate::config::{Config, Transport};
use crate::metrics::Metrics;

pub mod tickets;

/// Errors setting up TLS or the endpoint.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A certificate or key file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A PEM file held no usable certificate or key.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was missing.
        what: &'static str,
    },
    /// `cert` was configured without `key`, or the other way round.
    #[error("configure both `cert` and `key`, or neither")]
    HalfConfigured,
    /// Generating the self-signed certificate failed.
    #[error("generating a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the certificate or configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// Binding the UDP socket failed.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The shared session ticket key file (`transport.ticket_key_file`)
    /// does not load.
    #[error("TLS ticket key file {path}: {source}")]
    TicketKeys {
        /// The file.
        path: PathBuf,
        /// Why.
        source: tickets::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

/// The certificate chain and key the gateway presents.
#[derive(Debug)]
pub struct Identity {
    /// Leaf first.
    pub certs: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
    /// Where the certificate is, for terminals that must trust it.
    pub cert_path: PathBuf,
}

/// Loads the configured certificate, or the self-signed one in the data
/// directory, generating it on first start.
///
/// The self-signed key is the gateway's own file: it is written with mode
/// 0600 and narrowed to 0600 if found wider. A configured key is the
/// operator's (perhaps a mounted secret): if group or others can access
/// it, a warning is logged and it is used as it is.
pub fn identity(config: &Config) -> Result<Identity, Error> {
    match (&config.cert, &config.key) {
        (Some(cert), Some(key)) => {
            #[cfg(unix)]
            warn_if_exposed(key);
            load(cert, key)
        }
        (None, None) => {
            let cert = config.data_dir.join("cert.pem");
            let key = config.data_dir.join("key.pem");
            if !cert.exists() || !key.exists() {
                generate(&cert, &key)?;
            }
            #[cfg(unix)]
            narrow_own_key(&key)?;
            load(&cert, &key)
        }
        _ => Err(Error::HalfConfigured),
    }
}

/// Group and other permission bits: any of them exposes a private key.
#[cfg(unix)]
const GROUP_OTHER: u32 = 0o077;

#[cfg(unix)]
fn mode(path: &Path) -> std::io::Result<u32> {
    use std::os::unix::fs::PermissionsExt;
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o7777)
}

/// Warns when group or others can access the operator's key file `path`
/// (a missing file is reported by [`load`]).
#[cfg(unix)]
fn warn_if_exposed(path: &Path) {
    if let Ok(old) = mode(path) {
        if old & GROUP_OTHER != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format_args!("{old:04o}"),
                "group or others can access the TLS key; consider `chmod 600` on it"
            );
        }
    }
}

/// Narrows the self-signed key at `path` to 0600 if group or others can
/// access it, with a warning naming its old mode.
#[cfg(unix)]
fn narrow_own_key(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let old = mode(path).map_err(io(path))?;
    if old & GROUP_OTHER != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io(path))?;
        tracing::warn!(
            path = %path.display(),
            old_mode = format_args!("{old:04o}"),
            "the self-signed TLS key was open to group or others; narrowed it to 0600"
        );
    }
    Ok(())
}

/// Writes a self-signed certificate for `localhost`, `127.0.0.1` and `::1`.
fn generate(cert_path: &Path, key_path: &Path) -> Result<(), Error> {
    if let Some(dir) = cert_path.parent() {
        // The data directory, when the gateway has not created it yet:
        // private like the rest of it (see `store::create_data_dir`).
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir).map_err(io(dir))?;
    }
    let names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let rcgen::CertifiedKey { cert, key_pair } = rcgen::generate_simple_self_signed(names)?;
    write_private(key_path, key_pair.serialize_pem().as_bytes())?;
    std::fs::write(cert_path, cert.pem()).map_err(io(cert_path))?;
    tracing::info!(cert = %cert_path.display(), "generated a self-signed certificate");
    Ok(())
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(io(path))?;
    // The mode above applies only to a file created now; narrow an
    // existing one before the key is written into it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io(path))?;
    }
    file.write_all(data).map_err(io(path))
}

fn load(cert_path: &Path, key_path: &Path) -> Result<Identity, Error> {
    let pem = std::fs::read(cert_path).map_err(io(cert_path))?;
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(io(cert_path))?;
    if certs.is_empty() {
        return Err(Error::Pem {
            path: cert_path.to_owned(),
            what: "no certificate found",
        });
    }
    let pem = std::fs::read(key_path).map_err(io(key_path))?;
    let key = rustls_pemfile::private_key(&mut &pem[..])
        .map_err(io(key_path))?
        .ok_or_else(|| Error::Pem {
            path: key_path.to_owned(),
            what: "no private key found",
        })?;
    Ok(Identity {
        certs,
        key,
        cert_path: cert_path.to_owned(),
    })
}

/// The QUIC transport parameters of a gateway connection, as they are
/// before its `Hello`: one bidirectional stream (the control stream),
/// the 3 unidirectional ones HTTP/3 needs, and
/// `hello_receive_window` bytes on it, so that an unauthenticated
/// connection costs at most that much. Call [`open_after_hello`] once the
/// terminal has authenticated.
pub fn transport_config(t: &Transport) -> quinn::TransportConfig {
    let mut tc = quinn::TransportConfig::default();
    tc.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(Duration::from_millis(u64::from(t.idle_timeout_ms)))
            .unwrap_or(quinn::IdleTimeout::from(quinn::VarInt::from_u32(30_000))),
    ));
    tc.datagram_send_buffer_size(t.datagram_send_buffer);
    tc.datagram_receive_buffer_size(Some(t.datagram_receive_buffer));
    if t.ack_every_packets.get() != 2 {
        let mut ack = quinn::AckFrequencyConfig::default();
        ack.ack_eliciting_threshold(quinn::VarInt::from_u32(t.ack_every_packets.get() - 1))
            .max_ack_delay(Some(Duration::from_millis(u64::from(t.ack_max_delay_ms))));
        tc.ack_frequency_config(Some(ack));
    }
    tc.max_concurrent_bidi_streams(quinn::VarInt::from_u32(1));
    // HTTP/3 (the browser console's WebTransport) needs 3 unidirectional
    // streams from the start (RFC 9114 6.2: its control stream and QPACK's
    // two), and the transport parameters are the endpoint's, before the
    // ALPN is known. A native terminal gets nothing from them before its
    // Hello: nobody reads them, and what they carry counts against the
    // same `hello_receive_window`.
    tc.max_concurrent_uni_streams(quinn::VarInt::from_u32(H3_UNI_STREAMS));
    tc.receive_window(quinn::VarInt::from_u32(t.hello_receive_window));
    tc
}

/// Raises `conn`'s stream counts and receive window from their values
/// before `Hello` ([`transport_config`]) to the configured ones. Call once
/// its terminal has authenticated.
pub(crate) fn open_after_hello(conn: &quinn::Connection, t: &Transport) {
    conn.set_receive_window(quinn::VarInt::from_u32(t.receive_window));
    conn.set_max_concurrent_bi_streams(quinn::VarInt::from_u32(t.max_bidi_streams));
    conn.set_max_concurrent_uni_streams(quinn::VarInt::from_u32(t.max_uni_streams));
}

/// Unidirectional streams an HTTP/3 peer must be allowed from the start.
const H3_UNI_STREAMS: u32 = 3;

/// ALPN of HTTP/3: the browser console's WebTransport.
pub const ALPN_H3: &[u8] = b"h3";

/// Whether `conn` negotiated HTTP/3 (a browser's WebTransport) rather
/// than the native protocol.
pub(crate) fn is_web(conn: &quinn::Connection) -> bool {
    conn.handshake_data()
        .and_then(|data| data.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|data| data.protocol)
        .is_some_and(|alpn| alpn == ALPN_H3)
}

/// Builds the quinn server configuration of a native-only endpoint (ALPN
/// `ptt/1`): TLS 1.3 only; resumed sessions counted in `metrics`.
pub fn server_config(
    id: &Identity,
    transport: &Transport,
    metrics: &Arc<Metrics>,
) -> Result<quinn::ServerConfig, Error> {
    server_config_for(id, transport, metrics, &Web::Off)
}

/// Whether an endpoint also serves the browser console's WebTransport
/// (ALPN `h3`), and with which certificate.
#[derive(Debug, Clone)]
pub enum Web {
    /// Native terminals only.
    Off,
    /// Browsers get the gateway's own certificate (a configured one, which
    /// they trust through its CA).
    SameCert,
    /// Browsers get the short-lived self-signed certificate of `WebCerts`,
    /// which the console page pins by its hash.
    OwnCerts(Arc<WebCerts>),
}

/// Builds the quinn server configuration: TLS 1.3 only, ALPN `ptt/1` and,
/// unless `web` is off, `h3`, each with its certificate; resumed sessions
/// counted in `metrics`.
pub fn server_config_for(
    id: &Identity,
    transport: &Transport,
    metrics: &Arc<Metrics>,
    web: &Web,
) -> Result<quinn::ServerConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let native = Arc::new(rustls::sign::CertifiedKey::new(
        id.certs.clone(),
        rustls::crypto::ring::sign::any_supported_type(&id.key)?,
    ));
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(ByAlpn {
            native,
            web: match web {
                Web::OwnCerts(certs) => Some(certs.clone()),
                _ => None,
            },
        }));
    tls.alpn_protocols = vec![ptt_codec::ALPN.to_vec()];
    if !matches!(web, Web::Off) {
        tls.alpn_protocols.push(ALPN_H3.to_vec());
    }
    // Stateless session tickets (encrypted with rotating keys): a terminal
    // that reconnects resumes its TLS session without a certificate
    // signature and verification, and the gateway keeps no per-terminal
    // cache (the default cache holds 256 sessions; a city has 32,000).
    // With `transport.ticket_key_file`, keys every node of a cluster
    // shares, so that a terminal whose node died resumes on another one.
    let inner: Arc<dyn rustls::server::ProducesTickets> = match &transport.ticket_key_file {
        Some(path) => Arc::new(
            tickets::Shared::open(path, metrics.clone()).map_err(|source| Error::TicketKeys {
                path: path.clone(),
                source,
            })?,
        ),
        None => rustls::crypto::ring::Ticketer::new()?,
    };
    tls.ticketer = Arc::new(CountingTicketer {
        inner,
        metrics: metrics.clone(),
    });
    // A ticket is spent by every attempt that presents it, answered or not.
    // In a reconnect storm a terminal's first attempts may go unanswered
    // (see `crate::admission`); with rustls's default of 2 tickets its
    // third attempt would be a full handshake, costing both sides a
    // certificate signature or verification. 4 tickets cost the gateway a
    // few microseconds and ~600 bytes per handshake.
    tls.send_tls13_tickets = 4;
    let crypto =
        QuicServerConfig::try_from(tls).map_err(|e| rustls::Error::General(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(transport_config(transport)));
    // Terminals on cellular networks change address; keep their connection.
    server.migration(true);
    Ok(server)
}

/// Counts the tickets terminals present that decrypt: each is a TLS session
/// resumed without a certificate signature (rustls then still checks the
/// ticket's age, suite and ALPN, which hold for our own terminals).
#[derive(Debug)]
struct CountingTicketer {
    inner: Arc<dyn rustls::server::ProducesTickets>,
    metrics: Arc<Metrics>,
}

impl rustls::server::ProducesTickets for CountingTicketer {
    fn enabled(&self) -> bool {
        self.inner.enabled()
    }

    fn lifetime(&self) -> u32 {
        self.inner.lifetime()
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.inner.encrypt(plain)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        let plain = self.inner.decrypt(cipher);
        if plain.is_some() {
            Metrics::add(&self.metrics.tls_tickets_accepted, 1);
        } else {
            Metrics::add(&self.metrics.tls_tickets_refused, 1);
        }
        plain
    }
}

/// Picks the certificate by the ALPN the client offers: a browser (only
/// `h3`) gets the console's short-lived one when there is one, everyone
/// else the gateway's own.
#[derive(Debug)]
struct ByAlpn {
    native: Arc<rustls::sign::CertifiedKey>,
    web: Option<Arc<WebCerts>>,
}

impl rustls::server::ResolvesServerCert for ByAlpn {
    fn resolve(
        &self,
        hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let offers = |alpn: &[u8]| hello.alpn().is_some_and(|mut all| all.any(|p| p == alpn));
        match &self.web {
            Some(web) if offers(ALPN_H3) && !offers(ptt_codec::ALPN) => Some(web.current()),
            _ => Some(self.native.clone()),
        }
    }
}

/// The browser console's self-signed certificates: ECDSA P-256, valid for
/// at most 14 days, as browsers require of a certificate they accept by
/// its hash (WebTransport `serverCertificateHashes`). A new one is made
/// when the current one is `rotate_days` old; the previous one's hash is
/// still given out until the next change, so a page that fetched the
/// hashes just before a change still connects.
#[derive(Debug)]
pub struct WebCerts {
    certs: arc_swap::ArcSwap<WebCertPair>,
    names: Vec<String>,
    days: u32,
    rotate_days: u32,
}

#[derive(Debug)]
struct WebCertPair {
    current: WebCert,
    previous: Option<WebCert>,
}

#[derive(Debug)]
struct WebCert {
    key: Arc<rustls::sign::CertifiedKey>,
    /// SHA-256 of the DER certificate.
    hash: [u8; 32],
    made: std::time::SystemTime,
}

impl WebCerts {
    /// Makes the first certificate, for `localhost`, `127.0.0.1`, `::1`
    /// and `names`, valid for `days` (1..=14), replaced every
    /// `rotate_days`.
    pub fn new(names: &[String], days: u32, rotate_days: u32) -> Result<Self, Error> {
        let mut all: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(String::from).into();
        all.extend(names.iter().cloned());
        let current = web_cert(&all, days)?;
        Ok(Self {
            certs: arc_swap::ArcSwap::from_pointee(WebCertPair {
                current,
                previous: None,
            }),
            names: all,
            days,
            rotate_days,
        })
    }

    fn current(&self) -> Arc<rustls::sign::CertifiedKey> {
        self.certs.load().current.key.clone()
    }

    /// The SHA-256 hashes a page passes as `serverCertificateHashes`:
    /// the current certificate's, then the previous one's.
    pub fn hashes(&self) -> Vec<[u8; 32]> {
        let pair = self.certs.load();
        std::iter::once(pair.current.hash)
            .chain(pair.previous.as_ref().map(|p| p.hash))
            .collect()
    }

    /// Replaces the current certificate if it is `rotate_days` old at
    /// `now`; whether it did. Call every hour or so.
    pub fn rotate_if_due(&self, now: std::time::SystemTime) -> Result<bool, Error> {
        let age = now
            .duration_since(self.certs.load().current.made)
            .unwrap_or_default();
        if age < Duration::from_secs(u64::from(self.rotate_days) * 86_400) {
            return Ok(false);
        }
        let current = web_cert(&self.names, self.days)?;
        let old = self.certs.load_full();
        let previous = WebCert {
            key: old.current.key.clone(),
            hash: old.current.hash,
            made: old.current.made,
        };
        self.certs.store(Arc::new(WebCertPair {
            current,
            previous: Some(previous),
        }));
        tracing::info!(days = self.days, "console certificate rotated");
        Ok(true)
    }
}

/// One self-signed ECDSA P-256 certificate for `names`, valid from an
/// hour ago for `days` in all.
fn web_cert(names: &[String], days: u32) -> Result<WebCert, Error> {
    let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = params.not_before + time::Duration::days(i64::from(days));
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "ptt-gateway console");
    let cert = params.self_signed(&key_pair)?;
    let der = cert.der().clone();
    let hash = sha2::Sha256::digest(&der).into();
    let key = PrivateKeyDer::Pkcs8(key_pair.serialize_der().into());
    let key = Arc::new(rustls::sign::CertifiedKey::new(
        vec![der],
        rustls::crypto::ring::sign::any_supported_type(&key)?,
    ));
    Ok(WebCert {
        key,
        hash,
        made: std::time::SystemTime::now(),
    })
}

/// Binds the gateway's UDP socket and QUIC endpoint, driven on `net` (the
/// endpoint and all its connections; see [`crate::net`]), and the port's
/// media side (SRTP shares the port). Use [`crate::Gateway::bind`], which
/// passes the gateway's own.
pub(crate) fn bind(
    addr: SocketAddr,
    id: &Identity,
    transport: &Transport,
    web: &Web,
    net: &crate::net::Thread,
    metrics: &Arc<Metrics>,
) -> Result<(quinn::Endpoint, Arc<crate::net::MediaPort>), Error> {
    let socket = std::net::UdpSocket::bind(addr).map_err(|source| Error::Bind { addr, source })?;
    if transport.socket_buffer > 0 {
        let sock = socket2_ref(&socket);
        // Best effort: the kernel caps these at net.core.[rw]mem_max.
        let _ = sock.set_recv_buffer_size(transport.socket_buffer);
        let _ = sock.set_send_buffer_size(transport.socket_buffer);
    }
    let runtime = net.quinn_runtime();
    let media = crate::net::MediaPort::new(&socket, metrics.clone())
        .map_err(|source| Error::Bind { addr, source })?;
    let socket = net
        .wrap_shared_socket(socket, media.clone())
        .map_err(|source| Error::Bind { addr, source })?;
    let endpoint = quinn::Endpoint::new_with_abstract_socket(
        endpoint_config(),
        Some(server_config_for(id, transport, metrics, web)?),
        socket,
        runtime,
    )
    .map_err(|source| Error::Bind { addr, source })?;
    Ok((endpoint, media))
}

/// The gateway's endpoint configuration: quinn's defaults, with the
/// gateway's connection IDs ([`Cids`]).
pub fn endpoint_config() -> quinn::EndpointConfig {
    let mut config = quinn::EndpointConfig::default();
    config.cid_generator(|| Box::new(Cids::new()));
    // SRTP shares the port, told apart by the first byte (RFC 9443): a
    // QUIC packet with its fixed bit cleared could pass for RTP.
    config.grease_quic_bit(false);
    config
}

/// The gateway's connection IDs: 8 bytes, 6 of them random and 2 a keyed
/// check of those (so that packets for IDs it never issued are dropped
/// without a stateless reset, as quinn's default generator does).
///
/// Not quinn's default (`HashedConnectionIdGenerator`), whose IDs have 3
/// random bytes: 16.7 million IDs. quinn-proto 0.11 makes the ID of a
/// QUIC Retry with the generator but without checking it against the IDs
/// of live connections, and routes every packet, Initials included, by
/// those first. A retried terminal whose Retry ID equals a live
/// connection's sends its token-carrying Initials into that connection,
/// where they are dropped, and never gets an answer: its handshake times
/// out. With ~5 IDs per connection, a gateway holding 15,000 connections
/// loses about 0.4 % of retried terminals so (measured 0.4-0.6 % in a
/// whole-city ramp, BENCHMARKS.md). 6 random bytes make it about one in
/// 4 billion at a whole city's 150,000 IDs.
#[derive(Debug)]
struct Cids {
    key: std::hash::RandomState,
}

/// Random bytes of a [`Cids`] ID.
const CID_NONCE: usize = 6;
/// Check bytes of a [`Cids`] ID.
const CID_CHECK: usize = 2;

impl Cids {
    fn new() -> Self {
        Self {
            key: std::hash::RandomState::new(),
        }
    }

    fn check(&self, nonce: &[u8]) -> [u8; CID_CHECK] {
        use std::hash::BuildHasher;
        let h = self.key.hash_one(nonce).to_le_bytes();
        [h[0], h[1]]
    }
}

impl quinn::ConnectionIdGenerator for Cids {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        let mut id = [0u8; CID_NONCE + CID_CHECK];
        rand::Rng::fill(&mut rand::thread_rng(), &mut id[..CID_NONCE]);
        let check = self.check(&id[..CID_NONCE]);
        id[CID_NONCE..].copy_from_slice(&check);
        quinn::ConnectionId::new(&id)
    }

    fn validate(&self, cid: &quinn::ConnectionId) -> Result<(), quinn_proto::InvalidCid> {
        let (nonce, check) = cid.split_at(CID_NONCE.min(cid.len()));
        if check == self.check(nonce) {
            Ok(())
        } else {
            Err(quinn_proto::InvalidCid)
        }
    }

    fn cid_len(&self) -> usize {
        CID_NONCE + CID_CHECK
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

fn socket2_ref(socket: &std::net::UdpSocket) -> socket2::SockRef<'_> {
    socket2::SockRef::from(socket)
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn set_mode(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn connection_ids_check_themselves_and_do_not_repeat() {
        use quinn::ConnectionIdGenerator;
        let mut cids = Cids::new();
        let ids: std::collections::HashSet<_> = (0..100_000).map(|_| cids.generate_cid()).collect();
        assert_eq!(
            ids.len(),
            100_000,
            "no repeats in 100,000 (quinn's default: ~300)"
        );
        assert!(ids
            .iter()
            .all(|id| id.len() == 8 && cids.validate(id).is_ok()));
        // Another gateway's (or a forged) ID fails the check, but for 1 in 65,536.
        let other = Cids::new();
        let accepted = ids.iter().filter(|id| other.validate(id).is_ok()).count();
        assert!(
            accepted < 20,
            "{accepted} of 100,000 foreign IDs pass the check"
        );
    }

    #[test]
    fn the_self_signed_key_is_0600_and_narrowed_back_if_widened() {
        let tmp = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: tmp.path().join("data"),
            ..Config::default()
        };
        let first = identity(&config).unwrap();
        let key = config.data_dir.join("key.pem");
        assert_eq!(mode(&key).unwrap(), 0o600);
        assert_eq!(mode(&config.data_dir).unwrap(), 0o700, "created private");

        set_mode(&key, 0o644);
        let again = identity(&config).unwrap();
        assert_eq!(mode(&key).unwrap(), 0o600, "narrowed");
        assert_eq!(again.certs, first.certs, "reused, not regenerated");
    }

    #[test]
    fn a_configured_key_others_can_read_is_used_with_a_warning() {
        let tmp = tempfile::tempdir().unwrap();
        let own = Config {
            data_dir: tmp.path().join("data"),
            ..Config::default()
        };
        identity(&own).unwrap();
        let (cert, key) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
        std::fs::copy(own.data_dir.join("cert.pem"), &cert).unwrap();
        std::fs::copy(own.data_dir.join("key.pem"), &key).unwrap();
        set_mode(&key, 0o644);
        let config = Config {
            cert: Some(cert),
            key: Some(key.clone()),
            ..own
        };
        assert!(identity(&config).is_ok(), "a mounted secret is not refused");
        assert_eq!(
            mode(&key).unwrap(),
            0o644,
            "the operator's file is left alone"
        );
    }
}
