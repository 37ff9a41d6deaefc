//! One terminal's connection: handshake, authentication, the control-stream
//! loop, the voice datagram loop, and cleanup.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ptt_codec::control::{split_frame, FrameError, VERSION};
use ptt_codec::{
    ClientMsg, CloseCode, DenyCause, ErrorCode, GroupId, Membership, ServerMsg, TerminalId,
    VoiceHeader,
};
use quinn::{Connection, RecvStream, SendStream};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::fanout::{self, RateLimit};
use crate::group::{Link, Member};
use crate::metrics::Metrics;
use crate::org::Denied;
use crate::outbox::{close, Outbox};
use crate::server::Shared;
use crate::session_alerts as alerts;
use crate::session_streams as streams;

/// A terminal's live session, as other sessions reach it.
#[derive(Debug, Clone)]
pub(crate) struct Live {
    pub(crate) id: u64,
    pub(crate) conn: Connection,
    pub(crate) outbox: Outbox,
}

/// What the gateway remembers of a terminal across connections.
#[derive(Debug, Default)]
pub(crate) struct Remembered {
    /// The live session, if any.
    pub(crate) session: Option<Live>,
    /// Groups the terminal is in, with its talk right there. Kept while it
    /// is offline so a reconnect restores them.
    pub(crate) groups: BTreeMap<GroupId, bool>,
}

/// Why a session ended early, for the log.
#[derive(Debug, thiserror::Error)]
enum Ended {
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("reading control stream: {0}")]
    Read(#[from] quinn::ReadError),
    #[error("closed: {0}")]
    Closed(&'static str),
}

/// Drives one incoming connection until it ends. `slot` is its handshake
/// slot ([`crate::admission`]), given back once the handshake is over.
pub(crate) async fn run(
    shared: Arc<Shared>,
    incoming: quinn::Incoming,
    slot: tokio::sync::OwnedSemaphorePermit,
) {
    let remote = incoming.remote_address();
    let deadline = Duration::from_millis(u64::from(shared.config.transport.handshake_timeout_ms));
    // On timeout the handshake is dropped, which closes the connection.
    let conn = match tokio::time::timeout(deadline, incoming).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::debug!(%remote, "handshake failed: {e}");
            return;
        }
        Err(_) => {
            Metrics::add(&shared.metrics.handshakes_timed_out, 1);
            tracing::debug!(%remote, "handshake not done within {deadline:?}");
            return;
        }
    };
    drop(slot);
    Metrics::add(&shared.metrics.connections_accepted, 1);
    let hello_timeout = Duration::from_millis(u64::from(shared.config.session.hello_timeout_ms));
    let (send, mut recv, terminal, buffered) =
        match tokio::time::timeout(hello_timeout, authenticate(&shared, &conn)).await {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                tracing::debug!(%remote, "session refused: {e}");
                return;
            }
            Err(_) => {
                close(&conn, CloseCode::HelloTimeout, "no hello in time");
                return;
            }
        };
    let span = tracing::info_span!("session", terminal = %terminal, %remote);
    async move {
        let mut session = Session::start(&shared, conn.clone(), send, terminal);
        let voice = shared
            .net
            .spawn(voice_loop(shared.clone(), conn.clone(), terminal).in_current_span());
        let uploads = tokio::spawn(
            streams::accept_uploads(
                shared.clone(),
                conn.clone(),
                terminal,
                session.outbox.clone(),
            )
            .in_current_span(),
        );
        let result = session.control_loop(&mut recv, buffered).await;
        voice.abort();
        uploads.abort();
        // Only voice travels in DATAGRAM frames.
        let stats = conn.stats();
        Metrics::add(
            &shared.metrics.voice_datagrams_sent,
            stats.frame_tx.datagram,
        );
        Metrics::add(&shared.metrics.acks_received, stats.frame_rx.acks);
        session.finish();
        match result {
            Ok(()) | Err(Ended::Connection(quinn::ConnectionError::LocallyClosed)) => {
                tracing::info!("session ended")
            }
            Err(e) => tracing::info!("session ended: {e}"),
        }
    }
    .instrument(span)
    .await
}

/// Reads one control frame into `buf`, returning its length.
async fn read_frame(recv: &mut RecvStream, buf: &mut BytesMut) -> Result<Option<usize>, Ended> {
    loop {
        match split_frame(buf) {
            Ok(frame) => return Ok(Some(frame.len())),
            Err(FrameError::TooLong(_)) => return Err(Ended::Closed("oversized control frame")),
            Err(FrameError::Incomplete) => {}
        }
        let n = recv
            .read_buf(buf)
            .await
            .map_err(|e| match e.downcast::<quinn::ReadError>() {
                Ok(e) => Ended::Read(e),
                Err(_) => Ended::Closed("control stream read failed"),
            })?;
        if n == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(Ended::Closed("control stream ended mid-frame"))
            };
        }
    }
}

/// Accepts the control stream and checks `Hello`. On failure the connection
/// is closed with the matching code.
async fn authenticate(
    shared: &Shared,
    conn: &Connection,
) -> Result<(SendStream, RecvStream, TerminalId, BytesMut), Ended> {
    let (send, mut recv) = conn.accept_bi().await?;
    let mut buf = BytesMut::with_capacity(256);
    let refuse = |code: CloseCode, reason: &'static str| {
        close(conn, code, reason);
        Ended::Closed(reason)
    };
    let Some(len) = read_frame(&mut recv, &mut buf).await.inspect_err(|_| {
        close(conn, CloseCode::ProtocolViolation, "bad hello");
    })?
    else {
        return Err(refuse(CloseCode::ProtocolViolation, "no hello"));
    };
    let frame =
        split_frame(&buf[..len]).map_err(|_| refuse(CloseCode::ProtocolViolation, "bad hello"))?;
    let (version, terminal, credential) = match ClientMsg::decode(frame) {
        Ok(ClientMsg::Hello {
            version,
            terminal,
            credential,
        }) => (version, terminal, credential),
        _ => {
            return Err(refuse(
                CloseCode::ProtocolViolation,
                "first frame must be a valid hello",
            ))
        }
    };
    if version != VERSION {
        return Err(refuse(
            CloseCode::UnsupportedVersion,
            "unsupported protocol version",
        ));
    }
    let known = shared.org.terminal(terminal).is_some();
    // Verify even for unknown terminals so timing does not tell them apart.
    let valid = shared.key.verify(terminal, &credential);
    if !known || !valid {
        Metrics::add(&shared.metrics.auth_failures, 1);
        tracing::warn!(%terminal, remote = %conn.remote_address(), "authentication failed");
        return Err(refuse(
            CloseCode::AuthFailed,
            "unknown terminal or wrong credential",
        ));
    }
    // Frames sent right behind the Hello may already be buffered: keep them.
    let _hello = buf.split_to(len);
    Ok((send, recv, terminal, buf))
}

struct Session<'a> {
    shared: &'a Arc<Shared>,
    conn: Connection,
    terminal: TerminalId,
    id: u64,
    priority: u8,
    name: Arc<str>,
    outbox: Outbox,
    malformed: u32,
    logged_out: bool,
}

impl<'a> Session<'a> {
    /// Registers the session (replacing an older one), starts the writer,
    /// sends `Welcome` and restores remembered groups.
    fn start(
        shared: &'a Arc<Shared>,
        conn: Connection,
        send: SendStream,
        terminal: TerminalId,
    ) -> Self {
        let id = shared.next_session.fetch_add(1, Ordering::Relaxed);
        // The terminal exists: authenticate() checked it.
        let t = shared
            .org
            .terminal(terminal)
            .expect("authenticated terminal is in the org");
        let priority = shared.config.policy.priority(t.role, t.kind);
        let name: Arc<str> = Arc::from(t.name.as_str());
        let (tx, rx) = mpsc::channel(shared.config.session.outbox);
        let outbox = Outbox {
            tx,
            conn: conn.clone(),
        };
        tokio::spawn(write_loop(send, rx).in_current_span());

        let groups = {
            let mut entry = shared.terminals.entry(terminal).or_default();
            let live = Live {
                id,
                conn: conn.clone(),
                outbox: outbox.clone(),
            };
            if let Some(Live { conn: old, .. }) = entry.session.replace(live) {
                Metrics::add(&shared.metrics.sessions_replaced, 1);
                tracing::info!("replacing the older session of this terminal");
                close(
                    &old,
                    CloseCode::SessionReplaced,
                    "replaced by a newer connection of this terminal",
                );
            }
            entry.groups.clone()
        };
        Metrics::add(&shared.metrics.sessions_authenticated, 1);
        let resumed = !groups.is_empty();
        if resumed {
            Metrics::add(&shared.metrics.sessions_resumed, 1);
        }
        outbox.send(ServerMsg::Welcome {
            terminal,
            name: name.to_string(),
            resumed,
            groups: groups
                .iter()
                .map(|(g, talk)| Membership {
                    group: *g,
                    talk: *talk,
                })
                .collect(),
        });
        let session = Self {
            shared,
            conn,
            terminal,
            id,
            priority,
            name,
            outbox,
            malformed: 0,
            logged_out: false,
        };
        for (group, talk) in groups {
            session.attach(group, talk, false);
        }
        // Store and forward: alerts that arrived while it was away.
        tokio::spawn(
            alerts::forward_undelivered(shared.clone(), session.conn.clone(), terminal)
                .in_current_span(),
        );
        tracing::info!(resumed, "session started");
        session
    }

    fn member(&self, talk: bool) -> Member {
        Member {
            talk,
            priority: self.priority,
            name: self.name.clone(),
            link: Link {
                session: self.id,
                conn: self.conn.clone(),
                outbox: self.outbox.clone(),
            },
        }
    }

    fn attach(&self, group: GroupId, talk: bool, announce: bool) {
        if let Some(g) = self.shared.groups.get(&group) {
            g.attach(self.terminal, self.member(talk), announce);
        }
    }

    fn error(
        &self,
        code: ErrorCode,
        frame: u8,
        group: Option<GroupId>,
        message: impl Into<String>,
    ) {
        self.outbox.send(ServerMsg::Error {
            code,
            frame,
            group,
            message: message.into(),
        });
    }

    /// Reads and handles control frames until the stream or connection
    /// ends. `buf` holds bytes already read behind the `Hello`.
    async fn control_loop(
        &mut self,
        recv: &mut RecvStream,
        mut buf: BytesMut,
    ) -> Result<(), Ended> {
        while let Some(len) = read_frame(recv, &mut buf).await.inspect_err(|e| {
            if matches!(e, Ended::Closed(_)) {
                close(
                    &self.conn,
                    CloseCode::ProtocolViolation,
                    "bad control framing",
                );
            }
        })? {
            let frame = buf.split_to(len);
            Metrics::add(&self.shared.metrics.control_frames, 1);
            let raw = split_frame(&frame).expect("read_frame returned a complete frame");
            match ClientMsg::decode(raw) {
                Ok(msg) => self.handle(msg),
                Err(e) => {
                    Metrics::add(&self.shared.metrics.control_malformed, 1);
                    self.malformed += 1;
                    tracing::debug!(kind = raw.kind, "malformed control frame: {e}");
                    self.error(ErrorCode::Malformed, raw.kind, None, e.to_string());
                    if self.malformed >= self.shared.config.session.max_malformed {
                        close(
                            &self.conn,
                            CloseCode::ProtocolViolation,
                            "too many malformed frames",
                        );
                        return Err(Ended::Closed("too many malformed frames"));
                    }
                }
            }
            if self.logged_out {
                return Ok(());
            }
        }
        Ok(())
    }

    fn handle(&mut self, msg: ClientMsg) {
        let kind = msg.kind();
        match msg {
            ClientMsg::Hello { .. } => self.error(
                ErrorCode::UnexpectedFrame,
                kind,
                None,
                "already authenticated",
            ),
            ClientMsg::Join { group } => self.join(kind, group),
            ClientMsg::Leave { group } => {
                let removed = self
                    .shared
                    .terminals
                    .get_mut(&self.terminal)
                    .and_then(|mut e| e.groups.remove(&group));
                match (removed, self.shared.groups.get(&group)) {
                    (Some(_), Some(g)) => {
                        g.detach(self.terminal, self.id);
                        self.outbox.send(ServerMsg::Left { group });
                    }
                    _ => self.error(ErrorCode::NotJoined, kind, Some(group), "not in this group"),
                }
            }
            ClientMsg::FloorRequest { group, class } => {
                if !self.joined(group) {
                    Metrics::add(&self.shared.metrics.floor_denied, 1);
                    self.outbox.send(ServerMsg::FloorDenied {
                        group,
                        cause: DenyCause::NotJoined,
                    });
                } else if let Some(g) = self.shared.groups.get(&group) {
                    g.request_floor(self.terminal, class);
                }
            }
            ClientMsg::FloorRelease { group } => match self.shared.groups.get(&group) {
                Some(g) if self.joined(group) => g.release_floor(self.terminal),
                _ => self.error(ErrorCode::NotJoined, kind, Some(group), "not in this group"),
            },
            ClientMsg::Ping { nonce } => self.outbox.send(ServerMsg::Pong { nonce }),
            ClientMsg::AlertSend {
                request,
                body,
                target,
            } => {
                let task = alerts::send(
                    self.shared.clone(),
                    self.terminal,
                    self.outbox.clone(),
                    request,
                    body,
                    target,
                );
                tokio::spawn(task.in_current_span());
            }
            ClientMsg::AlertReceipt {
                alert,
                status,
                reason,
            } => {
                let task = alerts::receipt(
                    self.shared.clone(),
                    self.terminal,
                    self.outbox.clone(),
                    alert,
                    status,
                    reason,
                );
                tokio::spawn(task.in_current_span());
            }
            ClientMsg::Position {
                lat_e7,
                lon_e7,
                accuracy_m,
            } => alerts::position(self.shared, self.terminal, lat_e7, lon_e7, accuracy_m),
            ClientMsg::WatchPositions { node } => {
                alerts::watch(self.shared, self.terminal, self.id, &self.outbox, node)
            }
            ClientMsg::Sos => {
                // Join the unit's group first if the terminal has not.
                let unit = self
                    .shared
                    .org
                    .terminal(self.terminal)
                    .map(|t| GroupId(t.node));
                if let Some(unit) = unit {
                    if !self.joined(unit) {
                        self.join(kind, unit);
                    }
                }
                let task = alerts::sos(self.shared.clone(), self.terminal, self.outbox.clone());
                tokio::spawn(task.in_current_span());
            }
            ClientMsg::AttachmentPut { .. } => self.error(
                ErrorCode::UnexpectedFrame,
                kind,
                None,
                "upload attachments on a unidirectional stream of their own",
            ),
            ClientMsg::AttachmentFetch { attachment } => {
                let task = streams::fetch(
                    self.shared.clone(),
                    self.terminal,
                    self.conn.clone(),
                    self.outbox.clone(),
                    attachment,
                );
                tokio::spawn(task.in_current_span());
            }
            ClientMsg::DrillReportQuery { alert } => {
                let task = streams::drill_query(
                    self.shared.clone(),
                    self.terminal,
                    self.conn.clone(),
                    self.outbox.clone(),
                    alert,
                );
                tokio::spawn(task.in_current_span());
            }
            ClientMsg::SosCancel { terminal } => {
                let task = alerts::sos_cancel(
                    self.shared.clone(),
                    self.terminal,
                    self.outbox.clone(),
                    terminal,
                );
                tokio::spawn(task.in_current_span());
            }
            ClientMsg::AlertQuery { alert } => {
                let task = alerts::query(
                    self.shared.clone(),
                    self.terminal,
                    self.outbox.clone(),
                    alert,
                );
                tokio::spawn(task.in_current_span());
            }
            ClientMsg::Logout => {
                let groups = self
                    .shared
                    .terminals
                    .get_mut(&self.terminal)
                    .map(|mut e| std::mem::take(&mut e.groups))
                    .unwrap_or_default();
                for group in groups.keys() {
                    if let Some(g) = self.shared.groups.get(group) {
                        g.detach(self.terminal, self.id);
                    }
                }
                self.logged_out = true;
                close(&self.conn, CloseCode::Normal, "logged out");
            }
        }
    }

    fn joined(&self, group: GroupId) -> bool {
        self.shared
            .terminals
            .get(&self.terminal)
            .is_some_and(|e| e.groups.contains_key(&group))
    }

    fn join(&mut self, kind: u8, group: GroupId) {
        let shared = self.shared;
        if !shared.groups.contains_key(&group) {
            return self.error(ErrorCode::UnknownGroup, kind, Some(group), "no such group");
        }
        let rights = match shared
            .org
            .rights(&shared.config.policy, self.terminal, group)
        {
            Ok(r) if r.listen || r.talk => r,
            Ok(_) | Err(Denied::NotAllowed) => {
                tracing::debug!(%group, "join denied");
                return self.error(
                    ErrorCode::JoinDenied,
                    kind,
                    Some(group),
                    "not allowed in this group",
                );
            }
            Err(e) => {
                return self.error(ErrorCode::UnknownGroup, kind, Some(group), format!("{e:?}"))
            }
        };
        {
            let Some(mut entry) = shared.terminals.get_mut(&self.terminal) else {
                return self.error(
                    ErrorCode::Internal,
                    kind,
                    Some(group),
                    "session not registered",
                );
            };
            if !entry.groups.contains_key(&group)
                && entry.groups.len() >= shared.config.session.max_groups
            {
                drop(entry);
                return self.error(
                    ErrorCode::TooManyGroups,
                    kind,
                    Some(group),
                    "group limit reached",
                );
            }
            entry.groups.insert(group, rights.talk);
        }
        self.attach(group, rights.talk, true);
    }

    /// Takes the terminal offline in its groups, unless a newer session took
    /// over. Groups stay remembered for a reconnect (unless logged out).
    fn finish(self) {
        alerts::unwatch(self.shared, self.id);
        let groups: Vec<GroupId> = {
            let Some(mut entry) = self.shared.terminals.get_mut(&self.terminal) else {
                return;
            };
            match &entry.session {
                Some(live) if live.id == self.id => entry.session = None,
                _ => return,
            }
            entry.groups.keys().copied().collect()
        };
        for group in groups {
            if let Some(g) = self.shared.groups.get(&group) {
                g.detach(self.terminal, self.id);
            }
        }
    }
}

/// Encodes and writes queued control messages, batching what is queued.
///
/// Each batch is encoded into a buffer of its own and handed to quinn
/// without a copy; an idle connection keeps no write buffer.
async fn write_loop(mut send: SendStream, mut rx: mpsc::Receiver<Box<ServerMsg>>) {
    while let Some(msg) = rx.recv().await {
        let mut buf = BytesMut::new();
        msg.encode(&mut buf);
        while let Ok(msg) = rx.try_recv() {
            msg.encode(&mut buf);
        }
        if send.write_chunk(buf.freeze()).await.is_err() {
            return;
        }
    }
    let _ = send.finish();
}

/// Reads voice datagrams from one terminal and relays the admitted ones.
///
/// Two latencies are measured from the moment the datagram is read from
/// the connection. Every frame: until it is queued in every receiver's
/// connection (`relay_latency`). One relayed frame in
/// [`crate::metrics::SOCKET_SAMPLE`]: until a packet has been handed to the
/// socket for every receiver (`socket_latency`), which the network thread's
/// socket reports ([`crate::net::follow`]): the receivers' connection
/// drivers, woken by the relay, build and send those packets once the
/// thread gets to them.
async fn voice_loop(shared: Arc<Shared>, conn: Connection, terminal: TerminalId) {
    let m = &shared.metrics;
    let s = &shared.config.session;
    let mut rate = RateLimit::new(s.voice_rate, s.voice_burst);
    let mut relayed = 0u64;
    while let Ok(datagram) = conn.read_datagram().await {
        let received = Instant::now();
        Metrics::add(&m.voice_in, 1);
        if !rate.allow(received) {
            Metrics::add(&m.voice_rate_limited, 1);
            continue;
        }
        let header = match VoiceHeader::decode(&datagram) {
            Ok((h, _)) => h,
            Err(e) => {
                Metrics::add(&m.voice_malformed, 1);
                tracing::trace!("malformed voice datagram: {e}");
                continue;
            }
        };
        let Some(group) = shared.groups.get(&header.group) else {
            Metrics::add(&m.voice_unknown_group, 1);
            continue;
        };
        let snapshot = group.fanout();
        if fanout::admit(&snapshot, terminal, &header).is_err() {
            Metrics::add(&m.voice_not_holder, 1);
            continue;
        }
        let out = fanout::relay(&snapshot, terminal, &datagram);
        shared.relay_latency.record(received.elapsed());
        Metrics::add(&m.voice_delivered, out.delivered as u64);
        if out.failed > 0 {
            Metrics::add(&m.voice_send_failed, out.failed as u64);
        }
        relayed += 1;
        if relayed % crate::metrics::SOCKET_SAMPLE == 1 && out.delivered > 0 {
            let to = snapshot
                .listeners(terminal)
                .map(|r| r.sink.remote_address())
                .collect();
            crate::net::follow(received, to, shared.socket_latency.clone());
        }
    }
}
