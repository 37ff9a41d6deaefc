//! The reference terminal: what a handheld, phone app or console vendor
//! embeds to talk to the gateway.
//!
//! ```no_run
//! # async fn demo(ca: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
//! use ptt_codec::{Class, GroupId, TerminalId};
//! use ptt_terminal::{self as terminal, Terminal};
//!
//! let endpoint = terminal::endpoint("0.0.0.0:0".parse()?, &terminal::load_ca(ca)?)?;
//! let credential = [0u8; 32]; // provisioned per terminal
//! let mut t = Terminal::connect(&endpoint, "127.0.0.1:4433".parse()?, "localhost",
//!     TerminalId(1001), &credential).await?;
//! t.join(GroupId(42)).await?;
//! let burst = t.talk(GroupId(42), Class::Normal).await?;
//! t.send_voice(GroupId(42), burst, 0, &[0xf8, 0xff, 0xfe], false)?;
//! t.release(GroupId(42))?;
//! # Ok(()) }
//! ```
//!
//! Control messages arrive in order through [`Terminal::next_event`]; voice
//! datagrams through [`Terminal::recv_voice`]. Helpers such as
//! [`Terminal::join`] wait for their answer and keep every other message for
//! `next_event`, so nothing is lost while waiting.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ptt_codec::control::{split_frame, FrameError, VERSION};
use ptt_codec::{
    AlertBody, Class, ClientMsg, CloseCode, DenyCause, ErrorCode, GroupId, Malformed, Membership,
    ReceiptStatus, RevokeCause, ServerMsg, StatusCounts, Target, TerminalId, VoiceHeader,
};
use quinn::crypto::rustls::QuicClientConfig;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

/// How long helpers wait for the gateway's answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of the terminal library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The gateway closed the connection with a protocol close code.
    #[error("closed by the gateway: {code:?} ({reason})")]
    Closed {
        /// The close code, if it is one the protocol defines.
        code: Option<CloseCode>,
        /// The gateway's reason text.
        reason: String,
    },
    /// The connection failed otherwise (timeout, reset, local close).
    #[error("connection: {0}")]
    Connection(quinn::ConnectionError),
    /// Connecting failed before a connection existed.
    #[error("connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The gateway answered with an `Error` frame.
    #[error("gateway error {code:?}: {message}")]
    Refused {
        /// Stable code.
        code: ErrorCode,
        /// Detail.
        message: String,
    },
    /// A floor request was denied.
    #[error("floor denied: {0:?}")]
    Denied(DenyCause),
    /// The floor was revoked while waiting for it.
    #[error("floor revoked: {0:?}")]
    Revoked(RevokeCause),
    /// The gateway sent something undecodable.
    #[error("malformed frame from the gateway: {0}")]
    Malformed(#[from] Malformed),
    /// No answer in time.
    #[error("no answer from the gateway within {0:?}")]
    Timeout(Duration),
    /// The control stream ended.
    #[error("control stream closed")]
    StreamClosed,
    /// TLS configuration.
    #[error("TLS: {0}")]
    Tls(String),
    /// A local I/O error (certificate file, socket).
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The voice datagram could not be sent (too large, or datagrams off).
    #[error("sending voice: {0}")]
    SendDatagram(#[from] quinn::SendDatagramError),
}

impl From<quinn::ConnectionError> for Error {
    fn from(e: quinn::ConnectionError) -> Self {
        match e {
            quinn::ConnectionError::ApplicationClosed(c) => Error::Closed {
                code: u32::try_from(c.error_code.into_inner())
                    .ok()
                    .and_then(CloseCode::from_code),
                reason: String::from_utf8_lossy(&c.reason).into_owned(),
            },
            other => Error::Connection(other),
        }
    }
}

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
/// keep-alives so NAT bindings of cellular networks stay open.
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
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(Duration::from_secs(10)));
    transport.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(Duration::from_secs(30)).expect("30 s fits an idle timeout"),
    ));
    transport.datagram_receive_buffer_size(Some(256 * 1024));
    config.transport_config(Arc::new(transport));
    Ok(config)
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
pub fn endpoint_with_socket(
    socket: Arc<dyn quinn::AsyncUdpSocket>,
    roots: &rustls::RootCertStore,
) -> Result<quinn::Endpoint, Error> {
    let runtime = quinn::default_runtime()
        .ok_or_else(|| Error::Io(std::io::Error::other("no async runtime")))?;
    let mut endpoint = quinn::Endpoint::new_with_abstract_socket(
        quinn::EndpointConfig::default(),
        None,
        socket,
        runtime,
    )?;
    endpoint.set_default_client_config(client_config(roots)?);
    Ok(endpoint)
}

/// What `Welcome` said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// This terminal.
    pub terminal: TerminalId,
    /// Its display name.
    pub name: String,
    /// Whether an earlier session's groups were restored.
    pub resumed: bool,
    /// Groups the terminal is in.
    pub groups: Vec<Membership>,
}

/// What `Joined` said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// May this terminal talk there.
    pub talk: bool,
    /// The group's name.
    pub name: String,
    /// Members online.
    pub online: Vec<TerminalId>,
}

/// Outcome of asking for the floor without waiting for a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloorAnswer {
    /// Granted with this burst id.
    Granted(u16),
    /// Queued at this position; a `FloorGranted` follows later.
    Queued(u16),
    /// Denied.
    Denied(DenyCause),
}

/// One voice frame received.
#[derive(Debug, Clone)]
pub struct Voice {
    /// Parsed header (speaker stamped by the gateway).
    pub header: VoiceHeader,
    /// The whole datagram; `opus()` is the payload.
    pub datagram: Bytes,
}

impl Voice {
    /// The Opus packet.
    pub fn opus(&self) -> &[u8] {
        &self.datagram[ptt_codec::voice::VOICE_HEADER_LEN..]
    }
}

/// Ids of alerts already shown, so a redelivered alert is shown once. Keep
/// it across reconnects ([`Terminal::connect_with_seen`]).
#[derive(Debug, Clone, Default)]
pub struct SeenAlerts(Arc<Mutex<HashSet<u64>>>);

impl SeenAlerts {
    /// Marks `alert` seen; true if it was new.
    pub fn insert(&self, alert: u64) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(alert)
    }

    /// How many distinct alerts were shown.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether none was.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An alert as the terminal shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedAlert {
    /// Id.
    pub alert: u64,
    /// Issuer.
    pub issuer: TerminalId,
    /// Unix ms.
    pub created_ms: u64,
    /// Unix ms.
    pub expires_ms: u64,
    /// Content.
    pub body: AlertBody,
}

/// Content the gateway sent on a stream of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Download {
    /// An attachment: pushed with an alert (screens and consoles) or
    /// fetched with [`Terminal::fetch_attachment`].
    Attachment {
        /// The attachment.
        attachment: u64,
        /// The alert it came with (0: fetched by its uploader).
        alert: u64,
        /// Media type.
        mime: String,
        /// Content.
        data: Bytes,
    },
    /// A drill report, JSON.
    DrillReport {
        /// The drill.
        alert: u64,
        /// The report.
        json: String,
    },
}

/// A connected, authenticated terminal.
#[derive(Debug)]
pub struct Terminal {
    conn: quinn::Connection,
    id: TerminalId,
    seen: SeenAlerts,
    next_request: u32,
    control: mpsc::UnboundedSender<ClientMsg>,
    events: mpsc::UnboundedReceiver<Result<ServerMsg, Error>>,
    pending: VecDeque<ServerMsg>,
    downloads: mpsc::UnboundedReceiver<Download>,
    pending_downloads: VecDeque<Download>,
    welcome: Welcome,
}

impl Terminal {
    /// Connects, authenticates, and waits for `Welcome`.
    pub async fn connect(
        endpoint: &quinn::Endpoint,
        addr: SocketAddr,
        server_name: &str,
        terminal: TerminalId,
        credential: &[u8],
    ) -> Result<Terminal, Error> {
        Self::connect_with_seen(
            endpoint,
            addr,
            server_name,
            terminal,
            credential,
            SeenAlerts::default(),
        )
        .await
    }

    /// As [`Terminal::connect`], remembering alerts already shown by an
    /// earlier connection so a redelivery after reconnect is not shown again.
    pub async fn connect_with_seen(
        endpoint: &quinn::Endpoint,
        addr: SocketAddr,
        server_name: &str,
        terminal: TerminalId,
        credential: &[u8],
        seen: SeenAlerts,
    ) -> Result<Terminal, Error> {
        let conn = endpoint.connect(addr, server_name)?.await?;
        Self::handshake(conn, terminal, credential, seen).await
    }

    /// As [`Terminal::connect_with_seen`], with this terminal's own client
    /// configuration. A device keeps one for its lifetime: its TLS session
    /// tickets live there, so reconnecting resumes the session instead of a
    /// full handshake (an endpoint's default configuration is shared by
    /// every terminal on it, and would share, and exhaust, the tickets).
    pub async fn connect_with_config(
        endpoint: &quinn::Endpoint,
        config: quinn::ClientConfig,
        addr: SocketAddr,
        server_name: &str,
        terminal: TerminalId,
        credential: &[u8],
        seen: SeenAlerts,
    ) -> Result<Terminal, Error> {
        let conn = endpoint.connect_with(config, addr, server_name)?.await?;
        Self::handshake(conn, terminal, credential, seen).await
    }

    /// Authenticates on an established connection.
    pub async fn handshake(
        conn: quinn::Connection,
        terminal: TerminalId,
        credential: &[u8],
        seen: SeenAlerts,
    ) -> Result<Terminal, Error> {
        let (mut send, recv) = conn.open_bi().await?;
        let mut hello = BytesMut::new();
        ClientMsg::Hello {
            version: VERSION,
            terminal,
            credential: Bytes::copy_from_slice(credential),
        }
        .encode(&mut hello);
        send.write_all(&hello).await.map_err(write_error)?;

        let (control, control_rx) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        let (downloads_tx, downloads) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(send, control_rx));
        tokio::spawn(stream_loop(
            conn.clone(),
            control.clone(),
            events_tx.clone(),
            downloads_tx,
            seen.clone(),
        ));
        tokio::spawn(read_loop(recv, conn.clone(), events_tx));
        let mut t = Terminal {
            conn,
            id: terminal,
            seen,
            next_request: 1,
            control,
            events,
            pending: VecDeque::new(),
            downloads,
            pending_downloads: VecDeque::new(),
            welcome: Welcome {
                terminal,
                name: String::new(),
                resumed: false,
                groups: Vec::new(),
            },
        };
        let welcome = t
            .wait_for(|m| match m {
                ServerMsg::Welcome {
                    terminal,
                    name,
                    resumed,
                    groups,
                } => Some(Ok(Welcome {
                    terminal: *terminal,
                    name: name.clone(),
                    resumed: *resumed,
                    groups: groups.clone(),
                })),
                _ => None,
            })
            .await?;
        t.welcome = welcome;
        Ok(t)
    }

    /// This terminal's id.
    pub fn id(&self) -> TerminalId {
        self.id
    }

    /// What the gateway said on connect.
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// The QUIC connection (for stats, or to watch for its close).
    pub fn connection(&self) -> &quinn::Connection {
        &self.conn
    }

    /// Sends a control message without waiting for an answer.
    pub fn send(&self, msg: ClientMsg) -> Result<(), Error> {
        self.control.send(msg).map_err(|_| Error::StreamClosed)
    }

    /// The next control message from the gateway. Errors when the connection
    /// ended (with the gateway's close code, if it closed it).
    pub async fn next_event(&mut self) -> Result<ServerMsg, Error> {
        if let Some(m) = self.pending.pop_front() {
            return Ok(m);
        }
        match self.events.recv().await {
            Some(r) => r,
            None => Err(self.closed_error()),
        }
    }

    /// Like [`Terminal::next_event`], but gives up after `timeout`.
    pub async fn next_event_within(&mut self, timeout: Duration) -> Result<ServerMsg, Error> {
        tokio::time::timeout(timeout, self.next_event())
            .await
            .map_err(|_| Error::Timeout(timeout))?
    }

    fn closed_error(&self) -> Error {
        match self.conn.close_reason() {
            Some(e) => e.into(),
            None => Error::StreamClosed,
        }
    }

    /// Waits for the first message `pick` accepts, keeping the others for
    /// `next_event` in arrival order.
    pub async fn wait_for<T>(
        &mut self,
        mut pick: impl FnMut(&ServerMsg) -> Option<Result<T, Error>>,
    ) -> Result<T, Error> {
        if let Some(i) = self.pending.iter().position(|m| pick(m).is_some()) {
            let m = self.pending.remove(i).expect("index from position");
            return pick(&m).expect("matched above");
        }
        let deadline = tokio::time::Instant::now() + ANSWER_TIMEOUT;
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) => return Err(Error::Timeout(ANSWER_TIMEOUT)),
                Ok(None) => return Err(self.closed_error()),
                Ok(Some(r)) => r?,
            };
            match pick(&msg) {
                Some(r) => return r,
                None => self.pending.push_back(msg),
            }
        }
    }

    /// Joins `group` and waits for the answer.
    pub async fn join(&mut self, group: GroupId) -> Result<Joined, Error> {
        self.send(ClientMsg::Join { group })?;
        self.wait_for(|m| match m {
            ServerMsg::Joined {
                group: g,
                talk,
                name,
                online,
            } if *g == group => Some(Ok(Joined {
                talk: *talk,
                name: name.clone(),
                online: online.clone(),
            })),
            ServerMsg::Error {
                code,
                group: Some(g),
                message,
                ..
            } if *g == group => Some(Err(Error::Refused {
                code: *code,
                message: message.clone(),
            })),
            _ => None,
        })
        .await
    }

    /// Leaves `group` and waits for the answer.
    pub async fn leave(&mut self, group: GroupId) -> Result<(), Error> {
        self.send(ClientMsg::Leave { group })?;
        self.wait_for(|m| match m {
            ServerMsg::Left { group: g } if *g == group => Some(Ok(())),
            ServerMsg::Error {
                code,
                group: Some(g),
                message,
                ..
            } if *g == group => Some(Err(Error::Refused {
                code: *code,
                message: message.clone(),
            })),
            _ => None,
        })
        .await
    }

    /// Presses the talk key and returns the first answer: granted, queued or
    /// denied.
    pub async fn request_floor(
        &mut self,
        group: GroupId,
        class: Class,
    ) -> Result<FloorAnswer, Error> {
        self.send(ClientMsg::FloorRequest { group, class })?;
        self.wait_for(|m| floor_answer(m, group).map(Ok)).await
    }

    /// Presses the talk key and waits until the floor is granted (through
    /// the queue if need be). Returns the burst id.
    pub async fn talk(&mut self, group: GroupId, class: Class) -> Result<u16, Error> {
        self.send(ClientMsg::FloorRequest { group, class })?;
        self.wait_for(|m| match floor_answer(m, group)? {
            FloorAnswer::Granted(b) => Some(Ok(b)),
            FloorAnswer::Queued(_) => None,
            FloorAnswer::Denied(c) => Some(Err(Error::Denied(c))),
        })
        .await
    }

    /// Releases the talk key (or withdraws a queued request).
    pub fn release(&self, group: GroupId) -> Result<(), Error> {
        self.send(ClientMsg::FloorRelease { group })
    }

    /// Sends one Opus frame of burst `burst`.
    pub fn send_voice(
        &self,
        group: GroupId,
        burst: u16,
        seq: u16,
        opus: &[u8],
        end: bool,
    ) -> Result<(), Error> {
        let header = VoiceHeader {
            group,
            speaker: 0,
            burst,
            seq,
            flags: if end { ptt_codec::voice::FLAG_END } else { 0 },
        };
        self.send_raw_datagram(header.to_datagram(opus))
    }

    /// Sends arbitrary bytes as a datagram (for tests of hostile input).
    pub fn send_raw_datagram(&self, datagram: Bytes) -> Result<(), Error> {
        Ok(self.conn.send_datagram(datagram)?)
    }

    /// Waits for the next voice datagram. Undecodable datagrams are skipped.
    pub async fn recv_voice(&self) -> Result<Voice, Error> {
        loop {
            let datagram = self.conn.read_datagram().await?;
            if let Ok((header, _)) = VoiceHeader::decode(&datagram) {
                return Ok(Voice { header, datagram });
            }
        }
    }

    /// Alerts that arrived but were not read yet, without waiting. The
    /// library acknowledges an alert as delivered when it arrives and marks
    /// it seen, so the gateway will not send it again: take these before
    /// dropping a `Terminal` (to reconnect, say), or they are gone.
    pub fn take_unread_alerts(&mut self) -> Vec<ReceivedAlert> {
        let mut out = Vec::new();
        let mut keep = VecDeque::new();
        let buffered = std::mem::take(&mut self.pending)
            .into_iter()
            .map(Ok)
            .chain(std::iter::from_fn(|| self.events.try_recv().ok()));
        for m in buffered.collect::<Vec<_>>() {
            match m {
                Ok(ServerMsg::Alert {
                    alert,
                    issuer,
                    created_ms,
                    expires_ms,
                    body,
                }) => out.push(ReceivedAlert {
                    alert,
                    issuer,
                    created_ms,
                    expires_ms,
                    body,
                }),
                Ok(other) => keep.push_back(other),
                Err(_) => {}
            }
        }
        self.pending = keep;
        out
    }

    /// Alerts shown so far (pass to [`Terminal::connect_with_seen`] when
    /// reconnecting; see also [`Terminal::take_unread_alerts`]).
    pub fn seen_alerts(&self) -> SeenAlerts {
        self.seen.clone()
    }

    /// Sends an alert (consoles) and waits until the gateway has stored it.
    /// Returns the alert id and the number of recipients.
    pub async fn send_alert(
        &mut self,
        target: Target,
        body: AlertBody,
    ) -> Result<(u64, u32), Error> {
        let request = self.request_id();
        self.send(ClientMsg::AlertSend {
            request,
            body,
            target,
        })?;
        self.wait_for(|m| match m {
            ServerMsg::AlertAccepted {
                request: r,
                alert,
                recipients,
            } if *r == request => Some(Ok((*alert, *recipients))),
            m => request_refused(m, request).map(Err),
        })
        .await
    }

    /// Waits for the next alert (each alert once, however often the
    /// gateway delivers it). Its delivery receipt was already sent.
    pub async fn next_alert(&mut self) -> Result<ReceivedAlert, Error> {
        self.wait_for(|m| match m {
            ServerMsg::Alert {
                alert,
                issuer,
                created_ms,
                expires_ms,
                body,
            } => Some(Ok(ReceivedAlert {
                alert: *alert,
                issuer: *issuer,
                created_ms: *created_ms,
                expires_ms: *expires_ms,
                body: body.clone(),
            })),
            _ => None,
        })
        .await
    }

    /// Reports progress on an alert and waits until the gateway stored it.
    /// Returns the status stored (which may be further along, if this
    /// receipt was late).
    pub async fn receipt(
        &mut self,
        alert: u64,
        status: ReceiptStatus,
        reason: &str,
    ) -> Result<ReceiptStatus, Error> {
        self.send(ClientMsg::AlertReceipt {
            alert,
            status,
            reason: reason.to_owned(),
        })?;
        self.wait_for(|m| match m {
            ServerMsg::ReceiptSaved {
                alert: a,
                status: s,
            } if *a == alert && answers(*s, status) => Some(Ok(*s)),
            m => refusal(m, ptt_codec::control::kind::ALERT_RECEIPT).map(Err),
        })
        .await
    }

    /// Asks for an alert's status summary (its issuer only).
    pub async fn alert_status(&mut self, alert: u64) -> Result<(u32, StatusCounts), Error> {
        self.send(ClientMsg::AlertQuery { alert })?;
        self.wait_for(|m| match m {
            ServerMsg::AlertStatus {
                alert: a,
                recipients,
                counts,
            } if *a == alert => Some(Ok((*recipients, *counts))),
            m => refusal(m, ptt_codec::control::kind::ALERT_QUERY).map(Err),
        })
        .await
    }

    /// Raises an SOS and waits until the gateway stored it; returns the
    /// alert id. The floor of the terminal's unit follows as a
    /// `FloorGranted` event (emergency class, hot-mic limit).
    pub async fn sos(&mut self) -> Result<u64, Error> {
        self.send(ClientMsg::Sos)?;
        self.wait_for(|m| match m {
            ServerMsg::AlertAccepted {
                request: 0, alert, ..
            } => Some(Ok(*alert)),
            m => refusal(m, ptt_codec::control::kind::SOS).map(Err),
        })
        .await
    }

    /// Cancels `terminal`'s SOS (this terminal's own, or, from a console,
    /// one under it) and waits for the confirmation.
    pub async fn cancel_sos(&mut self, terminal: TerminalId) -> Result<u64, Error> {
        self.send(ClientMsg::SosCancel { terminal })?;
        self.wait_for(|m| match m {
            ServerMsg::AlertCancelled { alert, .. } => Some(Ok(*alert)),
            m => refusal(m, ptt_codec::control::kind::SOS_CANCEL).map(Err),
        })
        .await
    }

    /// Reports this terminal's position (1e-7 degrees; accuracy in metres).
    pub fn report_position(&self, lat_e7: i32, lon_e7: i32, accuracy_m: u16) -> Result<(), Error> {
        self.send(ClientMsg::Position {
            lat_e7,
            lon_e7,
            accuracy_m,
        })
    }

    /// Follows the positions of every terminal at or under `node`
    /// (consoles; 0 stops). Updates arrive as `PositionUpdate` events.
    pub fn watch_positions(&self, node: u32) -> Result<(), Error> {
        self.send(ClientMsg::WatchPositions { node })
    }

    fn request_id(&mut self) -> u32 {
        let request = self.next_request;
        self.next_request = self.next_request.wrapping_add(1);
        request
    }

    /// Uploads an attachment (a photo, at most 4 MiB) on a stream of its
    /// own and waits until the gateway stored it. Returns its id, to put in
    /// an alert's or report's `attachments`.
    pub async fn upload_attachment(&mut self, mime: &str, data: Bytes) -> Result<u64, Error> {
        let request = self.request_id();
        let mut header = BytesMut::new();
        ClientMsg::AttachmentPut {
            request,
            mime: mime.to_owned(),
            size: data.len() as u32,
        }
        .encode(&mut header);
        let mut stream = self.conn.open_uni().await?;
        // Below the control stream: a photo never delays floor messages.
        let _ = stream.set_priority(-1);
        stream.write_all(&header).await.map_err(write_error)?;
        // A refused upload is stopped by the gateway; its answer follows
        // on the control stream.
        if stream.write_chunk(data).await.is_ok() {
            let _ = stream.finish();
        }
        self.wait_for(|m| match m {
            ServerMsg::AttachmentStored {
                request: r,
                attachment,
                ..
            } if *r == request => Some(Ok(*attachment)),
            m => request_refused(m, request).map(Err),
        })
        .await
    }

    /// Sends a work report or clue (`kind` Report or Clue) to this
    /// terminal's station consoles and waits until it is stored. Returns
    /// the id (receipts arrive as `ReceiptUpdate` events) and the number of
    /// consoles it goes to.
    pub async fn send_report(&mut self, body: AlertBody) -> Result<(u64, u32), Error> {
        self.send_alert(Target::Station, body).await
    }

    /// Waits for the next download matching `pick`, or for an `Error` about
    /// a frame of type `frame`.
    async fn wait_download<T>(
        &mut self,
        frame: u8,
        mut pick: impl FnMut(&Download) -> Option<T>,
    ) -> Result<T, Error> {
        if let Some(i) = self
            .pending_downloads
            .iter()
            .position(|d| pick(d).is_some())
        {
            let d = self
                .pending_downloads
                .remove(i)
                .expect("index from position");
            return Ok(pick(&d).expect("matched above"));
        }
        if let Some(i) = self
            .pending
            .iter()
            .position(|m| refusal(m, frame).is_some())
        {
            let m = self.pending.remove(i).expect("index from position");
            return Err(refusal(&m, frame).expect("matched above"));
        }
        let deadline = tokio::time::Instant::now() + ANSWER_TIMEOUT;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return Err(Error::Timeout(ANSWER_TIMEOUT)),
                d = self.downloads.recv() => match d {
                    Some(d) => match pick(&d) {
                        Some(t) => return Ok(t),
                        None => self.pending_downloads.push_back(d),
                    },
                    None => return Err(self.closed_error()),
                },
                m = self.events.recv() => match m {
                    Some(Ok(m)) => match refusal(&m, frame) {
                        Some(e) => return Err(e),
                        None => self.pending.push_back(m),
                    },
                    Some(Err(e)) => return Err(e),
                    None => return Err(self.closed_error()),
                },
            }
        }
    }

    /// The next attachment the gateway pushed (screens and consoles get an
    /// alert's attachments right after the alert).
    pub async fn next_attachment(&mut self) -> Result<Download, Error> {
        self.wait_download(0, |d| {
            matches!(d, Download::Attachment { .. }).then(|| d.clone())
        })
        .await
    }

    /// Fetches an attachment of an alert this terminal received or sent
    /// (handhelds get only the text with the alert).
    pub async fn fetch_attachment(&mut self, attachment: u64) -> Result<Download, Error> {
        self.send(ClientMsg::AttachmentFetch { attachment })?;
        self.wait_download(ptt_codec::control::kind::ATTACHMENT_FETCH, |d| match d {
            Download::Attachment { attachment: a, .. } if *a == attachment => Some(d.clone()),
            _ => None,
        })
        .await
    }

    /// Asks for a drill's report (JSON; see PROTOCOL.md).
    pub async fn drill_report(&mut self, alert: u64) -> Result<String, Error> {
        self.send(ClientMsg::DrillReportQuery { alert })?;
        self.wait_download(ptt_codec::control::kind::DRILL_REPORT_QUERY, |d| match d {
            Download::DrillReport { alert: a, json } if *a == alert => Some(json.clone()),
            _ => None,
        })
        .await
    }

    /// Logs out: the gateway forgets this terminal's groups.
    pub fn logout(&self) -> Result<(), Error> {
        self.send(ClientMsg::Logout)
    }

    /// Closes the connection without logging out: the gateway keeps the
    /// groups for a reconnect.
    pub fn close(&self) {
        self.conn
            .close(quinn::VarInt::from_u32(CloseCode::Normal.code()), b"bye");
    }
}

/// The refusal carried by `m` if it is the `AlertRefused` answering
/// `request` (an `AlertSend` or an `AttachmentPut`).
fn request_refused(m: &ServerMsg, request: u32) -> Option<Error> {
    match m {
        ServerMsg::AlertRefused {
            request: r,
            code,
            message,
        } if *r == request => Some(Error::Refused {
            code: *code,
            message: message.clone(),
        }),
        _ => None,
    }
}

/// Whether a `ReceiptSaved` carrying the stored status `stored` answers a
/// receipt of status `sent`: the same status, or one further along (the
/// receipt was late and changed nothing). An answer to an earlier receipt
/// (the automatic "delivered", an "accepted" before this "arrived") is
/// behind and does not.
fn answers(stored: ReceiptStatus, sent: ReceiptStatus) -> bool {
    // The gateway's own rule: a receipt at or behind the stored status is a
    // duplicate, answered with the stored status.
    matches!(
        ptt_codec::receipt::advance(stored, sent),
        Ok(ptt_codec::receipt::Step::Duplicate)
    )
}

/// The refusal carried by `m` if it is an `Error` about a frame of type
/// `frame`.
fn refusal(m: &ServerMsg, frame: u8) -> Option<Error> {
    match m {
        ServerMsg::Error {
            code,
            frame: f,
            message,
            ..
        } if *f == frame => Some(Error::Refused {
            code: *code,
            message: message.clone(),
        }),
        _ => None,
    }
}

fn floor_answer(m: &ServerMsg, group: GroupId) -> Option<FloorAnswer> {
    match m {
        ServerMsg::FloorGranted {
            group: g, burst, ..
        } if *g == group => Some(FloorAnswer::Granted(*burst)),
        ServerMsg::FloorQueued { group: g, position } if *g == group => {
            Some(FloorAnswer::Queued(*position))
        }
        ServerMsg::FloorDenied { group: g, cause } if *g == group => {
            Some(FloorAnswer::Denied(*cause))
        }
        _ => None,
    }
}

/// Receives the gateway's unidirectional streams: alerts (acknowledged,
/// each shown once) in the order the gateway opened their streams, and
/// attachments and drill reports, whose content is read on a task of its
/// own so a large photo never holds up the next alert.
async fn stream_loop(
    conn: quinn::Connection,
    control: mpsc::UnboundedSender<ClientMsg>,
    events: mpsc::UnboundedSender<Result<ServerMsg, Error>>,
    downloads: mpsc::UnboundedSender<Download>,
    seen: SeenAlerts,
) {
    while let Ok(mut stream) = conn.accept_uni().await {
        let Some((msg, rest)) = read_header(&mut stream).await else {
            continue;
        };
        match msg {
            ServerMsg::Alert { alert, .. } => {
                // Acknowledge even a duplicate: the first receipt may have been lost.
                let _ = control.send(ClientMsg::AlertReceipt {
                    alert,
                    status: ReceiptStatus::Delivered,
                    reason: String::new(),
                });
                if seen.insert(alert) && events.send(Ok(msg)).is_err() {
                    return;
                }
            }
            header => {
                tokio::spawn(read_download(stream, header, rest, downloads.clone()));
            }
        }
    }
}

/// Reads a stream's first frame; returns it and the bytes read past it.
async fn read_header(stream: &mut quinn::RecvStream) -> Option<(ServerMsg, BytesMut)> {
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        match split_frame(&buf) {
            Ok(frame) => {
                let len = frame.len();
                let msg = ServerMsg::decode(frame).ok()?;
                let _ = buf.split_to(len);
                return Some((msg, buf));
            }
            Err(FrameError::TooLong(_)) => return None,
            Err(FrameError::Incomplete) => {}
        }
        match stream.read_buf(&mut buf).await {
            Ok(n) if n > 0 => {}
            _ => return None,
        }
    }
}

/// Largest content a stream from the gateway may carry: an attachment, or
/// a city-wide drill report.
const MAX_DOWNLOAD: usize = 16 * 1024 * 1024;

async fn read_download(
    mut stream: quinn::RecvStream,
    header: ServerMsg,
    mut content: BytesMut,
    downloads: mpsc::UnboundedSender<Download>,
) {
    let Ok(rest) = stream.read_to_end(MAX_DOWNLOAD).await else {
        return;
    };
    content.extend_from_slice(&rest);
    let content = content.freeze();
    match header {
        ServerMsg::Attachment {
            attachment,
            alert,
            mime,
            size,
        } if content.len() == size as usize => {
            let _ = downloads.send(Download::Attachment {
                attachment,
                alert,
                mime,
                data: content,
            });
        }
        ServerMsg::DrillReport { alert, size } if content.len() == size as usize => {
            if let Ok(json) = String::from_utf8(content.to_vec()) {
                let _ = downloads.send(Download::DrillReport { alert, json });
            }
        }
        _ => {}
    }
}

fn write_error(e: quinn::WriteError) -> Error {
    match e {
        quinn::WriteError::ConnectionLost(c) => c.into(),
        _ => Error::StreamClosed,
    }
}

async fn write_loop(mut send: quinn::SendStream, mut rx: mpsc::UnboundedReceiver<ClientMsg>) {
    let mut buf = BytesMut::new();
    while let Some(msg) = rx.recv().await {
        buf.clear();
        msg.encode(&mut buf);
        while let Ok(msg) = rx.try_recv() {
            msg.encode(&mut buf);
        }
        if send.write_all(&buf).await.is_err() {
            return;
        }
    }
    let _ = send.finish();
}

async fn read_loop(
    mut recv: quinn::RecvStream,
    conn: quinn::Connection,
    tx: mpsc::UnboundedSender<Result<ServerMsg, Error>>,
) {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        match split_frame(&buf) {
            Ok(frame) => {
                let len = frame.len();
                let msg = ServerMsg::decode(frame).map_err(Error::from);
                let _ = buf.split_to(len);
                if tx.send(msg).is_err() {
                    return;
                }
                continue;
            }
            Err(FrameError::TooLong(_)) => {
                let _ = tx.send(Err(Error::Malformed(Malformed::TooLong)));
                return;
            }
            Err(FrameError::Incomplete) => {}
        }
        match recv.read_buf(&mut buf).await {
            Ok(n) if n > 0 => {}
            _ => {
                let err = match conn.close_reason() {
                    Some(e) => e.into(),
                    None => match tokio::time::timeout(Duration::from_secs(1), conn.closed()).await
                    {
                        Ok(e) => e.into(),
                        Err(_) => Error::StreamClosed,
                    },
                };
                let _ = tx.send(Err(err));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receipt_is_answered_by_its_own_status_or_one_further_along() {
        use ReceiptStatus::*;
        assert!(answers(Arrived, Arrived));
        assert!(answers(Resolved, Arrived), "late: already further");
        assert!(
            !answers(Accepted, Arrived),
            "the answer to the earlier accept"
        );
        assert!(!answers(Delivered, Read), "the automatic delivered receipt");
        assert!(answers(Rejected, Rejected));
        assert!(!answers(Rejected, Accepted));
        assert!(!answers(Accepted, Rejected));
    }
}
