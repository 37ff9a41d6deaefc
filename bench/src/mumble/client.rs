//! One Mumble client: logs in over TLS, joins its channel, brings up UDP
//! voice (a UDP ping answered by the server), then runs as tasks: the
//! control reader (which counts voice that murmur tunnelled over TCP
//! instead of sending it by UDP), the keepalive (TCP and UDP pings every
//! 5 s, as Mumble's client), and the UDP receiver (counts frames and their
//! latency).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use prost::Message;
use ptt_terminal_sim::report::Latency;
use rustls::pki_types::ServerName;
use tokio::io::{BufReader, ReadHalf, WriteHalf};
use tokio::net::{TcpStream, UdpSocket};
use tokio_rustls::client::TlsStream;

use super::control::{self, kind};
use super::crypt::{self, Encrypt};
use super::ocb2::BLOCK;
use super::voice;

type Reader = BufReader<ReadHalf<TlsStream<TcpStream>>>;
type Writer = WriteHalf<TlsStream<TcpStream>>;

/// Mumble 1.3.4, the version murmur is: `1 << 16 | 3 << 8 | 4`.
const VERSION: u32 = 0x0001_0304;
/// How long a client keeps resending its first UDP ping before giving up.
const UDP_SETUP: Duration = Duration::from_secs(30);
/// Between those resends: a lost first ping leaves murmur's zeroed replay
/// history to refuse some nonces, so keep sending until one gets through.
const UDP_RETRY: Duration = Duration::from_millis(50);
/// Mumble's client pings over TCP and UDP every 5 s.
const KEEPALIVE: Duration = Duration::from_secs(5);

/// What every client of a run reports into.
#[derive(Debug)]
pub struct Shared {
    /// The run's clock: talkers stamp nanoseconds since it in the frames.
    pub start: Instant,
    /// Frames received now count.
    pub measuring: AtomicBool,
    /// Frames received while measuring.
    pub received: AtomicU64,
    /// Voice messages murmur sent over TCP (UDPTunnel): must stay 0.
    pub tunnelled: AtomicU64,
    /// UDP datagrams that failed to decrypt or parse.
    pub refused: AtomicU64,
    /// Control connections that ended before the run did.
    pub dropped: AtomicU64,
    /// Latency of the frames received while measuring.
    pub latency: Mutex<Latency>,
}

impl Shared {
    /// A fresh record, its clock started now.
    pub fn new() -> Shared {
        Shared {
            start: Instant::now(),
            measuring: AtomicBool::new(false),
            received: AtomicU64::new(0),
            tunnelled: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            latency: Mutex::new(Latency::default()),
        }
    }
}

/// A logged-in control connection.
pub struct Login {
    reader: Reader,
    writer: Writer,
    /// This client's session.
    pub session: u32,
    /// Channels announced so far, by name.
    pub channels: HashMap<String, u32>,
    setup: control::CryptSetup,
    body: Vec<u8>,
}

/// Connects and authenticates (`password` for SuperUser); returns after
/// ServerSync.
pub async fn login(
    addr: SocketAddr,
    tls: &tokio_rustls::TlsConnector,
    username: &str,
    password: Option<&str>,
) -> anyhow::Result<Login> {
    let tcp = TcpStream::connect(addr).await.context("TCP connect")?;
    tcp.set_nodelay(true)?;
    let stream = tls
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .context("TLS handshake")?;
    let (r, mut writer) = tokio::io::split(stream);
    let mut reader = BufReader::new(r);
    control::send(
        &mut writer,
        kind::VERSION,
        &control::Version {
            version_v1: Some(VERSION),
            release: Some("ptt-bench".into()),
            os: Some("Linux".into()),
            os_version: None,
        },
    )
    .await?;
    control::send(
        &mut writer,
        kind::AUTHENTICATE,
        &control::Authenticate {
            username: Some(username.into()),
            password: password.map(Into::into),
            opus: Some(true),
        },
    )
    .await?;
    let mut body = Vec::new();
    let mut channels = HashMap::new();
    let mut setup = None;
    loop {
        match control::recv(&mut reader, &mut body).await? {
            kind::CRYPT_SETUP => setup = Some(control::CryptSetup::decode(&body[..])?),
            kind::CHANNEL_STATE => {
                let c = control::ChannelState::decode(&body[..])?;
                if let (Some(id), Some(name)) = (c.channel_id, c.name) {
                    channels.insert(name, id);
                }
            }
            kind::REJECT => {
                let r = control::Reject::decode(&body[..])?;
                bail!("murmur rejected {username}: {:?} {:?}", r.kind, r.reason);
            }
            kind::SERVER_SYNC => {
                let s = control::ServerSync::decode(&body[..])?;
                return Ok(Login {
                    reader,
                    writer,
                    session: s.session.context("ServerSync without a session")?,
                    channels,
                    setup: setup.context("ServerSync before CryptSetup")?,
                    body,
                });
            }
            _ => {}
        }
    }
}

impl Login {
    /// Creates a permanent channel under the root named `name` unless it
    /// exists (needs SuperUser); returns once murmur announces it.
    pub async fn create_channels(&mut self, names: &[String]) -> anyhow::Result<()> {
        for name in names {
            if self.channels.contains_key(name) {
                continue;
            }
            control::send(
                &mut self.writer,
                kind::CHANNEL_STATE,
                &control::ChannelState {
                    parent: Some(0),
                    name: Some(name.clone()),
                    temporary: Some(false),
                    channel_id: None,
                },
            )
            .await?;
        }
        while names.iter().any(|n| !self.channels.contains_key(n)) {
            match control::recv(&mut self.reader, &mut self.body).await? {
                kind::CHANNEL_STATE => {
                    let c = control::ChannelState::decode(&self.body[..])?;
                    if let (Some(id), Some(name)) = (c.channel_id, c.name) {
                        self.channels.insert(name, id);
                    }
                }
                kind::PERMISSION_DENIED => {
                    let d = control::PermissionDenied::decode(&self.body[..])?;
                    bail!("murmur refused to create a channel: {d:?}");
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Moves this client into `channel`; returns once murmur confirms.
    pub async fn join(&mut self, channel: u32) -> anyhow::Result<()> {
        control::send(
            &mut self.writer,
            kind::USER_STATE,
            &control::UserState {
                session: Some(self.session),
                channel_id: Some(channel),
                ..Default::default()
            },
        )
        .await?;
        loop {
            match control::recv(&mut self.reader, &mut self.body).await? {
                kind::USER_STATE => {
                    let u = control::UserState::decode(&self.body[..])?;
                    if u.session == Some(self.session) && u.channel_id == Some(channel) {
                        return Ok(());
                    }
                }
                kind::PERMISSION_DENIED => {
                    let d = control::PermissionDenied::decode(&self.body[..])?;
                    bail!("murmur refused the move to channel {channel}: {d:?}");
                }
                _ => {}
            }
        }
    }

    /// Brings up UDP voice: sends encrypted UDP pings until the server's
    /// echo comes back (murmur sends voice to a client by UDP only once it
    /// has heard from it by UDP), then starts the client's tasks. Returns
    /// what a talker needs.
    pub async fn start(
        self,
        server: SocketAddr,
        shared: Arc<Shared>,
        stop: tokio::sync::watch::Receiver<bool>,
        tasks: &mut tokio::task::JoinSet<()>,
    ) -> anyhow::Result<Talker> {
        let block = |v: &Option<Vec<u8>>, what: &str| -> anyhow::Result<[u8; BLOCK]> {
            v.as_deref()
                .and_then(|b| b.try_into().ok())
                .with_context(|| format!("CryptSetup {what} is not 16 bytes"))
        };
        let (encrypt, mut decrypt) = crypt::from_setup(
            &block(&self.setup.key, "key")?,
            &block(&self.setup.client_nonce, "client nonce")?,
            &block(&self.setup.server_nonce, "server nonce")?,
        );
        let udp = UdpSocket::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)).await?;
        socket2::SockRef::from(&udp).set_recv_buffer_size(1 << 20)?;
        udp.connect(server).await?;
        let udp = Arc::new(udp);
        let talker = Talker {
            udp: udp.clone(),
            encrypt: Arc::new(Mutex::new(encrypt)),
        };
        let began = Instant::now();
        let (mut plain, mut buf) = (Vec::new(), [0u8; 1500]);
        'setup: loop {
            if began.elapsed() > UDP_SETUP {
                bail!(
                    "session {}: no UDP ping echo within {UDP_SETUP:?}",
                    self.session
                );
            }
            talker
                .ping(shared.start.elapsed().as_nanos() as u64)
                .await?;
            let deadline = tokio::time::Instant::now() + UDP_RETRY;
            while let Ok(r) = tokio::time::timeout_at(deadline, udp.recv(&mut buf)).await {
                plain.clear();
                if decrypt.open(&buf[..r?], &mut plain).is_ok()
                    && matches!(voice::parse(&plain, true), Ok(voice::Packet::Ping { .. }))
                {
                    break 'setup;
                }
            }
        }
        let Login {
            mut reader,
            mut writer,
            mut body,
            ..
        } = self;
        // Control reader: keeps the connection drained (every join is
        // broadcast to everyone) and counts tunnelled voice.
        let (s, mut stopped) = (shared.clone(), stop.clone());
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = stopped.changed() => return,
                    r = control::recv(&mut reader, &mut body) => match r {
                        Ok(kind::UDP_TUNNEL) => {
                            s.tunnelled.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => {}
                        Err(_) => {
                            s.dropped.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    },
                }
            }
        });
        // Keepalive, as Mumble's client: a TCP ping and a UDP ping every
        // 5 s, the first at a random point of the period.
        let (s, mut stopped, t) = (shared.clone(), stop.clone(), talker.clone());
        tasks.spawn(async move {
            let offset = Duration::from_millis(u64::from(t.udp_port()) % 5000);
            let mut tick =
                tokio::time::interval_at(tokio::time::Instant::now() + offset, KEEPALIVE);
            loop {
                tokio::select! {
                    _ = stopped.changed() => return,
                    _ = tick.tick() => {}
                }
                let now = s.start.elapsed().as_nanos() as u64;
                let ping = control::Ping {
                    timestamp: Some(now),
                    ..Default::default()
                };
                if control::send(&mut writer, kind::PING, &ping).await.is_err() {
                    return;
                }
                let _ = t.ping(now).await;
            }
        });
        // UDP receiver: frames and their latency.
        let (s, mut stopped) = (shared, stop);
        tasks.spawn(async move {
            let (mut buf, mut plain) = ([0u8; 1500], Vec::with_capacity(1500));
            let (mut local, mut n, mut refused) = (Latency::default(), 0u64, 0u64);
            loop {
                let len = tokio::select! {
                    _ = stopped.changed() => break,
                    r = udp.recv(&mut buf) => match r {
                        Ok(len) => len,
                        Err(_) => break,
                    },
                };
                plain.clear();
                if decrypt.open(&buf[..len], &mut plain).is_err() {
                    refused += 1;
                    continue;
                }
                match voice::parse(&plain, true) {
                    Ok(voice::Packet::Opus { data, .. }) if data.len() >= 8 => {
                        if !s.measuring.load(Ordering::Relaxed) {
                            continue;
                        }
                        let sent = u64::from_be_bytes(data[..8].try_into().expect("8 bytes"));
                        let now = s.start.elapsed().as_nanos() as u64;
                        local.record(Duration::from_nanos(now.saturating_sub(sent)));
                        n += 1;
                    }
                    Ok(_) => {}
                    Err(_) => refused += 1,
                }
            }
            s.received.fetch_add(n, Ordering::Relaxed);
            s.refused.fetch_add(refused, Ordering::Relaxed);
            s.latency
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .merge(&local);
        });
        Ok(talker)
    }
}

/// What sends a client's UDP: its socket and its encrypting half (shared
/// by the talk loop and the keepalive, which must not reuse a nonce).
#[derive(Debug, Clone)]
pub struct Talker {
    udp: Arc<UdpSocket>,
    encrypt: Arc<Mutex<Encrypt>>,
}

impl Talker {
    fn udp_port(&self) -> u16 {
        self.udp.local_addr().map_or(0, |a| a.port())
    }

    fn seal(&self, plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plain.len() + crypt::HEADER);
        self.encrypt
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .seal(plain, &mut out);
        out
    }

    async fn ping(&self, timestamp: u64) -> std::io::Result<()> {
        let mut plain = Vec::new();
        voice::ping(timestamp, &mut plain);
        self.udp.send(&self.seal(&plain)).await.map(|_| ())
    }

    /// Sends one Opus frame to the client's channel.
    pub async fn talk(&self, sequence: u64, last: bool, data: &[u8]) -> std::io::Result<()> {
        let mut plain = Vec::with_capacity(data.len() + 8);
        voice::opus(voice::TARGET_CHANNEL, sequence, last, data, &mut plain);
        self.udp.send(&self.seal(&plain)).await.map(|_| ())
    }
}
