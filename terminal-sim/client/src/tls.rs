//! TLS and QUIC set-up: the certificates a terminal trusts, its client
//! configuration, and the UDP endpoint its connections run on.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicClientConfig;

use crate::Error;

/// Reads the PEM certificate(s) a terminal trusts (the gateway's
/// self-signed `cert.pem`, or a CA).
pub fn load_ca(path: &Path) -> Result<rustls::RootCertStore, Error> {
    let pem = std::fs::read(path)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &pem[..]) {
        roots.add(cert?).map_err(|e| Error::Tls(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(Error::Tls(format!("no certificate in {}", path.display())));
    }
    Ok(roots)
}

/// QUIC client configuration for terminals: TLS 1.3, the protocol's ALPN,
/// keep-alives every 15 s so NAT bindings of cellular networks stay open
/// (the gateway closes connections idle for 30 s). [`endpoint`] installs
/// one as the endpoint's default; a device that reconnects keeps one of its
/// own for [`Terminal::connect_with_config`](crate::Terminal::connect_with_config),
/// since its TLS session tickets live in it.
pub fn client_config(roots: &rustls::RootCertStore) -> Result<quinn::ClientConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    tls.alpn_protocols = vec![ptt_codec::ALPN.to_vec()];
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| Error::Tls(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport()));
    Ok(config)
}

/// The transport settings of every terminal connection, native or
/// WebTransport ([`crate::web::client_config`]).
pub(crate) fn transport() -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    // Every keep-alive wakes an idle handset's radio; a lost one is sent
    // again within a probe timeout, so 15 s is safe under the 30 s idle
    // timeout (docs/PROTOCOL.md section 1). They also hold the NAT binding
    // of the SRTP media, which shares the socket.
    transport.keep_alive_interval(Some(Duration::from_secs(15)));
    transport.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(Duration::from_secs(30)).expect("30 s fits an idle timeout"),
    ));
    transport.datagram_receive_buffer_size(Some(256 * 1024));
    transport
}

/// Makes connections with `config` notice a dead gateway node within
/// `idle` (at least 300 ms, at most an hour) instead of 30 s: keep-alives
/// every third of it, and the connection ends after `idle` without a
/// packet from the gateway (the shorter of this and the gateway's idle
/// timeout applies). Shorter moves terminals off a dead node sooner and
/// costs a handset a keep-alive packet that much more often.
pub fn set_idle_timeout(config: &mut quinn::ClientConfig, idle: Duration) {
    let idle = idle.max(Duration::from_millis(300));
    config.transport_config(Arc::new(transport_with_idle(idle)));
}

/// [`transport`] with keep-alives every third of `idle` and an idle
/// timeout of `idle` (at most an hour), so that a dead gateway node is
/// noticed within `idle` ([`crate::Failover::with_idle_timeout`]).
pub(crate) fn transport_with_idle(idle: Duration) -> quinn::TransportConfig {
    let idle = idle.min(Duration::from_secs(3600));
    let mut transport = transport();
    transport.keep_alive_interval(Some(idle / 3));
    transport.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(idle).expect("an hour fits an idle timeout"),
    ));
    transport
}

/// Socket buffer size asked for on client endpoints: one endpoint carries
/// hundreds of simulated terminals, and a burst to all of them (an alert to
/// a whole city) must not overflow the kernel's default 208 KiB.
const SOCKET_BUFFER: usize = 4 * 1024 * 1024;

/// A UDP socket bound to `bind` with large kernel buffers, ready for the
/// current tokio runtime. Call it inside the runtime; wrap the result (to
/// delay or drop packets in a test harness, say) before handing it to
/// [`endpoint_with_socket`].
pub fn socket(bind: SocketAddr) -> Result<Arc<dyn quinn::AsyncUdpSocket>, Error> {
    let socket = std::net::UdpSocket::bind(bind)?;
    let state = quinn::udp::UdpSocketState::new((&socket).into())?;
    // Best effort: the kernel caps these at net.core.[rw]mem_max.
    let _ = state.set_recv_buffer_size((&socket).into(), SOCKET_BUFFER);
    let _ = state.set_send_buffer_size((&socket).into(), SOCKET_BUFFER);
    let runtime = quinn::default_runtime()
        .ok_or_else(|| Error::Io(std::io::Error::other("no async runtime")))?;
    Ok(runtime.wrap_udp_socket(socket)?)
}

/// A client endpoint bound to `bind`, usable for many terminals at once.
pub fn endpoint(bind: SocketAddr, roots: &rustls::RootCertStore) -> Result<quinn::Endpoint, Error> {
    endpoint_with_socket(socket(bind)?, roots)
}

/// A client endpoint on `socket` (see [`socket`]), whose terminals trust
/// `roots`. Call it inside the tokio runtime the endpoint will run on.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), ptt_terminal::Error> {
/// let socket = ptt_terminal::socket("127.0.0.1:0".parse().expect("an address"))?;
/// // Wrap `socket` here: an emulated delay, a loss model, a packet capture.
/// let roots = rustls::RootCertStore::empty(); // `load_ca` in a terminal
/// let endpoint = ptt_terminal::endpoint_with_socket(socket, &roots)?;
/// assert_ne!(endpoint.local_addr()?.port(), 0);
/// # Ok(())
/// # }
/// ```
pub fn endpoint_with_socket(
    socket: Arc<dyn quinn::AsyncUdpSocket>,
    roots: &rustls::RootCertStore,
) -> Result<quinn::Endpoint, Error> {
    let runtime = quinn::default_runtime()
        .ok_or_else(|| Error::Io(std::io::Error::other("no async runtime")))?;
    // QUIC and SRTP share the socket (crate::socket); a greased QUIC bit
    // could make a QUIC packet look like RTP (RFC 9443, PROTOCOL.md).
    let mut config = quinn::EndpointConfig::default();
    config.grease_quic_bit(false);
    let plane = crate::plane::Plane::new(socket.clone());
    let socket = Arc::new(crate::socket::MediaSocket::new(socket, plane.clone()));
    let mut endpoint = quinn::Endpoint::new_with_abstract_socket(config, None, socket, runtime)?;
    crate::plane::Plane::register(endpoint.local_addr()?, &plane);
    endpoint.set_default_client_config(client_config(roots)?);
    Ok(endpoint)
}

/// Whether terminals connecting on `endpoint` offer SRTP voice in `Hello`
/// (they do by default). Call it before connecting them; `false` keeps
/// every terminal of the endpoint on QUIC DATAGRAM voice, as a console
/// behind a browser has to be. Returns `false`, changing nothing, for an
/// endpoint this library did not make ([`endpoint`],
/// [`endpoint_with_socket`]): its terminals never offer SRTP.
pub fn set_media_offer(endpoint: &quinn::Endpoint, srtp: bool) -> bool {
    match crate::plane::Plane::of(endpoint) {
        Some(plane) => {
            plane.set_offer(srtp);
            true
        }
        None => false,
    }
}

/// What `endpoint` sent and received on the media plane, summed over its
/// terminals; `None` for an endpoint this library did not make. Read it
/// before and after a period to count a handset's uplink packets.
pub fn endpoint_stats(endpoint: &quinn::Endpoint) -> Option<crate::EndpointStats> {
    crate::plane::Plane::of(endpoint).map(|p| p.stats())
}
