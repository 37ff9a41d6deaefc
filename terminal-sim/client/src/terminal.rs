//! The connected terminal and its helpers: each sends one request and
//! waits for its answer, keeping every other message for
//! [`Terminal::next_event`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ptt_codec::control::VERSION;
use ptt_codec::{
    AlertBody, Class, ClientMsg, CloseCode, GroupId, ReceiptStatus, ServerMsg, StatusCounts,
    Target, TerminalId, VoiceHeader,
};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::error::write_error;
use crate::media::MediaForm;
use crate::plane::{MediaStats, Plane};
use crate::srtp_voice::SrtpVoice;
pub use crate::srtp_voice::VoiceReceiver;
use crate::streams::{read_loop, stream_loop, write_loop};
use crate::web::Wire;
use crate::{Download, Error, FloorAnswer, Joined, ReceivedAlert, SeenAlerts, Voice, Welcome};

/// How long helpers ([`Terminal::join`], [`Terminal::talk`], ...) wait for
/// the gateway's answer before they return [`Error::Timeout`].
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// A connected, authenticated terminal: one QUIC connection to the
/// gateway, its control stream, and the tasks reading what the gateway
/// sends (see the crate documentation for the lifecycle).
///
/// Make one with [`Terminal::connect`] (or its variants) inside a tokio
/// runtime. End it with [`Terminal::close`] or [`Terminal::logout`].
#[derive(Debug)]
pub struct Terminal {
    /// The connection: datagrams, streams, close reason.
    conn: quinn::Connection,
    /// The WebTransport session's headers, when connected as a browser
    /// console ([`Terminal::connect_web`]); `None` on a native connection.
    web: Option<Arc<Wire>>,
    /// Who this terminal authenticated as.
    id: TerminalId,
    /// Alerts already shown, shared with the stream task that receives them.
    seen: SeenAlerts,
    /// Request id of the next `AlertSend` or `AttachmentPut`, matching its answer.
    next_request: u32,
    /// Queue of the control stream's writer task.
    control: mpsc::UnboundedSender<ClientMsg>,
    /// Control messages (and alerts) in arrival order; an `Err` last when the
    /// connection ended.
    events: mpsc::UnboundedReceiver<Result<ServerMsg, Error>>,
    /// Messages a helper read while waiting for its own answer, kept for
    /// `next_event` in order.
    pending: VecDeque<ServerMsg>,
    /// Attachments and drill reports, each read in full.
    downloads: mpsc::UnboundedReceiver<Download>,
    /// Downloads read while waiting for another one.
    pending_downloads: VecDeque<Download>,
    /// What the gateway said on connect.
    welcome: Welcome,
    /// The SRTP media plane, when the gateway answered the offer.
    srtp: Option<SrtpVoice>,
    /// Received voice, in whichever form it came.
    voice: VoiceReceiver,
    /// Reception counts, fed by every voice frame received, reported to
    /// the gateway every few seconds while voice is heard.
    link: crate::link::Shared,
}

/// How [`Terminal::connect_with_options`] connects.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Alerts already shown (see [`Terminal::connect_with_seen`]).
    pub seen: SeenAlerts,
    /// The terminal's own client configuration (see
    /// [`Terminal::connect_with_config`]); `None`: the endpoint's default.
    pub config: Option<quinn::ClientConfig>,
    /// Offer SRTP voice in `Hello` (default true; only on an endpoint this
    /// library made, and unless [`crate::set_media_offer`] turned it off
    /// for the endpoint). False keeps the terminal on QUIC DATAGRAM voice.
    pub srtp: bool,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            seen: SeenAlerts::default(),
            config: None,
            srtp: true,
        }
    }
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
        let options = ConnectOptions {
            seen,
            ..ConnectOptions::default()
        };
        Self::connect_with_options(endpoint, addr, server_name, terminal, credential, options).await
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
        let options = ConnectOptions {
            seen,
            config: Some(config),
            ..ConnectOptions::default()
        };
        Self::connect_with_options(endpoint, addr, server_name, terminal, credential, options).await
    }

    /// Connects with `options`, authenticates, and waits for `Welcome`.
    /// The other `connect` functions are this with default options but one.
    pub async fn connect_with_options(
        endpoint: &quinn::Endpoint,
        addr: SocketAddr,
        server_name: &str,
        terminal: TerminalId,
        credential: &[u8],
        options: ConnectOptions,
    ) -> Result<Terminal, Error> {
        let conn = match options.config {
            Some(config) => endpoint.connect_with(config, addr, server_name)?.await?,
            None => endpoint.connect(addr, server_name)?.await?,
        };
        let plane = Plane::of(endpoint).filter(|p| options.srtp && p.offers());
        Self::handshake_with_plane(conn, None, plane, terminal, credential, options.seen).await
    }

    /// Authenticates on an established connection.
    pub async fn handshake(
        conn: quinn::Connection,
        terminal: TerminalId,
        credential: &[u8],
        seen: SeenAlerts,
    ) -> Result<Terminal, Error> {
        Self::handshake_on(conn, None, terminal, credential, seen).await
    }

    /// Authenticates on `conn`, natively or (with `web`) on a WebTransport
    /// session whose headers `web` writes and strips.
    pub(crate) async fn handshake_on(
        conn: quinn::Connection,
        web: Option<Arc<Wire>>,
        terminal: TerminalId,
        credential: &[u8],
        seen: SeenAlerts,
    ) -> Result<Terminal, Error> {
        Self::handshake_with_plane(conn, web, None, terminal, credential, seen).await
    }

    /// Authenticates on `conn`, offering SRTP if `plane` (the endpoint's
    /// media plane) is given.
    async fn handshake_with_plane(
        conn: quinn::Connection,
        web: Option<Arc<Wire>>,
        plane: Option<Arc<Plane>>,
        terminal: TerminalId,
        credential: &[u8],
        seen: SeenAlerts,
    ) -> Result<Terminal, Error> {
        // A WebTransport session cannot send raw UDP: never offer it there.
        let plane = plane.filter(|_| web.is_none());
        let (mut send, recv) = conn.open_bi().await?;
        let mut hello = BytesMut::new();
        if let Some(web) = &web {
            hello.extend_from_slice(web.bi_header());
        }
        ClientMsg::Hello {
            version: VERSION,
            terminal,
            credential: Bytes::copy_from_slice(credential),
            media: match plane {
                Some(_) => ptt_codec::MediaOffer::SRTP,
                None => ptt_codec::MediaOffer::NONE,
            },
        }
        .encode(&mut hello);
        send.write_all(&hello).await.map_err(write_error)?;

        let (control, control_rx) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        let (downloads_tx, downloads) = mpsc::unbounded_channel();
        // The tasks' events carry the terminal, as a vendor's logs of many
        // terminals (a console, a load harness) need.
        let span = tracing::debug_span!("terminal", terminal = terminal.0);
        tokio::spawn(write_loop(send, control_rx).instrument(span.clone()));
        tokio::spawn(
            stream_loop(
                conn.clone(),
                web.clone(),
                control.clone(),
                events_tx.clone(),
                downloads_tx,
                seen.clone(),
            )
            .instrument(span.clone()),
        );
        tokio::spawn(read_loop(recv, conn.clone(), events_tx).instrument(span.clone()));
        let link = crate::link::Shared::default();
        span.in_scope(|| link.spawn_reports(&control));
        let voice = VoiceReceiver::new(conn.clone(), web.clone(), None, link.clone());
        let mut t = Terminal {
            conn,
            web,
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
            srtp: None,
            voice,
            link,
        };
        let mut answer = None;
        let welcome = t
            .wait_for(|m| match m {
                ServerMsg::Welcome {
                    terminal,
                    name,
                    resumed,
                    groups,
                    media,
                } => Some(Ok(Welcome {
                    terminal: *terminal,
                    name: name.clone(),
                    resumed: *resumed,
                    groups: groups.clone(),
                }))
                .inspect(|_| answer = *media),
                _ => None,
            })
            .await?;
        if let (Some(plane), Some(answer)) = (plane, answer) {
            let _in = span.enter();
            let (srtp, voice) = SrtpVoice::start(plane, &t.conn, answer, t.control.clone())?;
            t.srtp = Some(srtp);
            t.voice =
                VoiceReceiver::new(t.conn.clone(), t.web.clone(), Some(voice), t.link.clone());
        }
        tracing::debug!(
            terminal = terminal.0,
            resumed = welcome.resumed,
            groups = welcome.groups.len(),
            "welcomed"
        );
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

    /// How well this terminal hears: the counts behind its link quality
    /// reports (fed by [`Terminal::recv_voice`]; feed it frames received
    /// any other way), and their interval.
    pub fn link(&self) -> &crate::link::Shared {
        &self.link
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
        if let Some(srtp) = &self.srtp {
            if srtp.send_voice(&self.conn, &header, opus)? {
                return Ok(());
            }
        }
        self.send_raw_datagram(header.to_datagram(opus))
    }

    /// Sends arbitrary bytes as a datagram (for tests of hostile input).
    pub fn send_raw_datagram(&self, datagram: Bytes) -> Result<(), Error> {
        let datagram = match &self.web {
            None => datagram,
            Some(web) => web.frame_datagram(&datagram),
        };
        Ok(self.conn.send_datagram(datagram)?)
    }

    /// Waits for the next voice frame, received as a QUIC DATAGRAM or as
    /// SRTP. Undecodable datagrams are skipped.
    pub async fn recv_voice(&self) -> Result<Voice, Error> {
        self.voice.recv().await
    }

    /// Where this terminal's voice arrives, to read it in a task of its
    /// own (clone it freely).
    pub fn voice_receiver(&self) -> VoiceReceiver {
        self.voice.clone()
    }

    /// The form voice travels in now: [`MediaForm::Srtp`] once the SRTP
    /// path is verified, [`MediaForm::FellBack`] if it never was within
    /// 3 s, [`MediaForm::Datagram`] otherwise (not offered, not answered,
    /// or still being verified).
    pub fn media(&self) -> MediaForm {
        self.srtp.as_ref().map_or(MediaForm::Datagram, |s| s.form())
    }

    /// This terminal's SRTP counters (all zero without SRTP).
    pub fn media_stats(&self) -> MediaStats {
        self.srtp.as_ref().map(|s| s.stats()).unwrap_or_default()
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
        if let Some(web) = &self.web {
            header.extend_from_slice(web.uni_header());
        }
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
