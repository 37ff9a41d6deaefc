//! The control-stream loop and the dispatch of each control message.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ptt_codec::control::split_frame;
use ptt_codec::{
    Class, ClientMsg, CloseCode, DenyCause, ErrorCode, GroupId, MediaOffer, Membership, ServerMsg,
    TerminalId,
};
use ptt_gateway_core::group::churn;
use ptt_gateway_core::limits::{Kind, Verdict};
use ptt_gateway_core::session::{self, JoinRefusal};
use quinn::{RecvStream, SendStream};

use crate::link::Link;
use tracing::Instrument;

use super::{read_frame, refuse, write_loop, Ended};
use crate::group::{Contact, Member};
use crate::hub::{Budget, Hub, Live};
use crate::metrics::Metrics;
use crate::ops::{self, Caller};
use crate::outbox::{close, Outbox};

/// One authenticated session: the context every handler gets, and what
/// the control loop keeps between frames.
pub(super) struct Session {
    cx: Caller,
    /// Floor priority (from role).
    priority: u8,
    /// Display name, for `FloorTaken`.
    name: Arc<str>,
    /// Malformed control frames so far (`session.max_malformed`).
    malformed: u32,
    /// Set by `Logout`: the loop ends after this frame.
    logged_out: bool,
    /// The terminal's frame rates and work in flight (`[limits]`).
    budget: Arc<Budget>,
    /// Its media plane, if its SRTP offer was answered.
    media: Option<Arc<crate::media::Route>>,
}

/// How often a terminal over its limits is warned about in the log, at
/// most.
const WARN_EVERY: Duration = Duration::from_secs(10);

impl Session {
    /// Registers the session (replacing an older one), starts the writer,
    /// sends `Welcome` and restores remembered groups.
    pub(super) fn start(
        hub: Arc<Hub>,
        conn: Link,
        send: SendStream,
        terminal: TerminalId,
        offer: MediaOffer,
    ) -> Self {
        let id = hub.registry().next_session();
        // `authenticate()` checked the terminal is in the org, but an org
        // reload may have removed it since: closed below, once registered.
        let org = hub.org();
        let (priority, name): (u8, Arc<str>) = match org.terminal(terminal) {
            Some(t) => (
                hub.config().policy.priority(t.role, t.kind),
                Arc::from(t.name.as_str()),
            ),
            None => (0, Arc::from("")),
        };
        drop(org);
        let (outbox, rx) = Outbox::open(
            conn.clone(),
            terminal,
            hub.config().session.outbox,
            hub.metrics().clone(),
        );
        tokio::spawn(write_loop(send, rx).in_current_span());

        let live = Live {
            id,
            conn: conn.clone(),
            outbox: outbox.clone(),
        };
        let (groups, replaced) = hub.registry().register(terminal, live);
        hub.announce(terminal, true);
        if let Some(old) = replaced {
            Metrics::add(&hub.metrics().sessions_replaced, 1);
            tracing::info!("replacing the older session of this terminal");
            close(
                &old,
                CloseCode::SessionReplaced,
                "replaced by a newer connection of this terminal",
            );
        }
        if hub.org().terminal(terminal).is_none() {
            // Registered before this check: a reload that removed the
            // terminal either saw this session (and closed it) or swapped
            // its org in before the check.
            close(&conn, CloseCode::OrgRemoved, "removed from the org");
        }
        Metrics::add(&hub.metrics().sessions_authenticated, 1);
        let resumed = !groups.is_empty();
        if resumed {
            Metrics::add(&hub.metrics().sessions_resumed, 1);
        }
        let media = super::media::answer(&hub, &conn, terminal, offer);
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
            media: media.as_ref().map(|(_, answer)| *answer),
        });
        let budget = hub.budgets().of(terminal, hub.config());
        let session = Self {
            budget,
            cx: Caller {
                hub,
                terminal,
                session: id,
                conn,
                outbox,
            },
            priority,
            name,
            malformed: 0,
            logged_out: false,
            media: media.map(|(route, _)| route),
        };
        for (group, talk) in groups {
            session.attach(group, talk, false);
        }
        // Store and forward: alerts that arrived while it was away.
        tokio::spawn(ops::alerts::forward_undelivered(session.caller()).in_current_span());
        tracing::info!(resumed, "session started");
        session
    }

    /// The context operations run with, for a task of their own.
    pub(super) fn caller(&self) -> Caller {
        self.cx.clone()
    }

    fn hub(&self) -> &Hub {
        &self.cx.hub
    }

    fn member(&self, talk: bool) -> Member {
        Member {
            talk,
            priority: self.priority,
            name: self.name.clone(),
            link: Contact {
                session: self.cx.session,
                conn: self.cx.conn.clone(),
                outbox: self.cx.outbox.clone(),
            },
        }
    }

    fn attach(&self, group: GroupId, talk: bool, announce: bool) {
        if let Some(g) = self.hub().group(group) {
            g.attach(self.cx.terminal, self.member(talk), announce);
        }
    }

    fn error(
        &self,
        code: ErrorCode,
        frame: u8,
        group: Option<GroupId>,
        message: impl Into<String>,
    ) {
        self.cx.outbox.send(ServerMsg::Error {
            code,
            frame,
            group,
            message: message.into(),
        });
    }

    /// Reads and handles control frames until the stream or connection
    /// ends. `buf` holds bytes already read behind the `Hello`.
    pub(super) async fn control_loop(
        &mut self,
        recv: &mut RecvStream,
        mut buf: BytesMut,
    ) -> Result<(), Ended> {
        while let Some(len) = read_frame(recv, &mut buf).await.inspect_err(|e| {
            if matches!(e, Ended::Framing(_)) {
                close(
                    &self.cx.conn,
                    CloseCode::ProtocolViolation,
                    "bad control framing",
                );
            }
        })? {
            let frame = buf.split_to(len);
            Metrics::add(&self.hub().metrics().control_frames, 1);
            let raw = split_frame(&frame).expect("read_frame returned a complete frame");
            match ClientMsg::decode(raw) {
                Ok(msg) => self.admit(msg).await?,
                Err(e) => {
                    Metrics::add(&self.hub().metrics().control_malformed, 1);
                    self.malformed += 1;
                    tracing::debug!(kind = raw.kind, "malformed control frame: {e}");
                    self.error(ErrorCode::Malformed, raw.kind, None, e.to_string());
                    if self.malformed >= self.hub().config().session.max_malformed {
                        return Err(refuse(
                            &self.cx.conn,
                            CloseCode::ProtocolViolation,
                            "too many malformed frames",
                        ));
                    }
                }
            }
            if self.logged_out {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Checks `msg` against its terminal's rate for its kind, then handles
    /// it. A frame over its rate is refused with BUSY, and the connection
    /// closed with RATE_LIMITED after too many refusals; a receipt or an
    /// alert over its rate is not refused (it must never be lost): the
    /// control stream is read on only once its token is there.
    async fn admit(&mut self, msg: ClientMsg) -> Result<(), Ended> {
        let Some(kind) = Kind::of(&msg) else {
            return self.handle(msg).await;
        };
        // Receipts and alerts must never be lost: over their rate they wait.
        if matches!(kind, Kind::Receipt | Kind::Alert) {
            let mut throttled = false;
            loop {
                let taken = self.limiter().try_take(kind, Instant::now());
                if taken {
                    break;
                }
                throttled = true;
                let per_second = self.limiter().per_second(kind).max(1);
                // Boxed: a rare wait, kept out of the control loop's
                // future (one per connection).
                Box::pin(tokio::time::sleep(Duration::from_secs(1) / per_second)).await;
            }
            if throttled {
                let m = self.hub().metrics();
                let counter = if kind == Kind::Alert {
                    &m.rate_limited_alerts
                } else {
                    &m.receipts_throttled
                };
                Metrics::add(counter, 1);
            }
            return self.handle(msg).await;
        }
        let verdict = self.limiter().check(kind, Instant::now());
        if verdict == Verdict::Allow {
            return self.handle(msg).await;
        }
        let m = self.hub().metrics();
        let counter = match kind {
            Kind::Position => &m.rate_limited_positions,
            Kind::Alert => &m.rate_limited_alerts,
            Kind::AlertQuery => &m.rate_limited_alert_queries,
            Kind::DrillQuery => &m.rate_limited_drill_queries,
            Kind::SosCancel => &m.rate_limited_sos_cancels,
            Kind::Watch => &m.rate_limited_watches,
            Kind::Receipt => &m.receipts_throttled,
        };
        Metrics::add(counter, 1);
        self.refused(
            verdict,
            msg.kind(),
            kind.name(),
            "over the rate of this frame kind",
        )
    }

    /// The terminal's rate limiter.
    fn limiter(&self) -> std::sync::MutexGuard<'_, ptt_gateway_core::limits::Limiter> {
        self.budget
            .limiter
            .lock()
            .expect("no code panics while holding a limiter")
    }

    /// Answers a frame refused with `verdict` (not [`Verdict::Allow`]):
    /// BUSY, or the connection closed with RATE_LIMITED. Warns at most once
    /// per [`WARN_EVERY`] per terminal (across its reconnects), naming the
    /// cause and the refusals since the last warning (the terminal is in the
    /// span).
    fn refused(
        &mut self,
        verdict: Verdict,
        frame: u8,
        what: &'static str,
        cause: &'static str,
    ) -> Result<(), Ended> {
        let now = Instant::now();
        let closing = verdict == Verdict::Close;
        if closing {
            Metrics::add(&self.hub().metrics().sessions_rate_limited, 1);
        }
        let warn = {
            let mut w = self
                .budget
                .warned
                .lock()
                .expect("no code panics while holding a warning state");
            w.0 += 1;
            let due =
                w.1.is_none_or(|last| now.saturating_duration_since(last) >= WARN_EVERY);
            let refused = w.0;
            if due {
                *w = (0, Some(now));
            }
            due.then_some(refused)
        };
        if let Some(refused) = warn {
            if closing {
                tracing::warn!(refused, "closing: {what} {cause}, refused too often");
            } else {
                tracing::warn!(refused, "refusing frames: {what} {cause}");
            }
        }
        if closing {
            return Err(refuse(
                &self.cx.conn,
                CloseCode::RateLimited,
                "too many frames over the rate limits",
            ));
        }
        self.error(ErrorCode::Busy, frame, None, format!("{what}: {cause}"));
        Ok(())
    }

    /// Runs an operation that waits (for the store or the network) on a
    /// task of its own, in the session's span, holding one of the
    /// terminal's `limits.tasks` permits; with none left within
    /// `limits.task_wait_ms` the frame is refused with BUSY.
    ///
    /// The operation is boxed before the wait for a permit, so the control
    /// loop's future (allocated once per connection, at the size of its
    /// largest state) does not hold the largest operation's whole state
    /// machine: 3,448 bytes per connection otherwise (debug build,
    /// `session::tests::the_size_of_a_session`).
    fn spawn(
        &mut self,
        frame: u8,
        op: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> impl std::future::Future<Output = Result<(), Ended>> + '_ {
        self.spawn_boxed(frame, Box::pin(op))
    }

    /// [`Session::spawn`] of a boxed operation.
    async fn spawn_boxed(
        &mut self,
        frame: u8,
        op: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'static>>,
    ) -> Result<(), Ended> {
        let tasks = self.budget.tasks.clone();
        let wait = Duration::from_millis(u64::from(self.hub().config().limits.task_wait_ms));
        let permit = match tasks.clone().try_acquire_owned() {
            Ok(permit) => Ok(permit),
            // Boxed: a rare wait, kept out of the control loop's future.
            Err(_) => Box::pin(tokio::time::timeout(wait, tasks.acquire_owned()))
                .await
                .map(|p| p.expect("the tasks semaphore is never closed")),
        };
        match permit {
            Ok(permit) => {
                tokio::spawn(
                    async move {
                        op.await;
                        drop(permit);
                    }
                    .in_current_span(),
                );
                Ok(())
            }
            Err(_) => {
                Metrics::add(&self.hub().metrics().tasks_busy, 1);
                let verdict = self.limiter().strike(Instant::now());
                self.refused(verdict, frame, "work", "too many operations in flight")
            }
        }
    }

    /// Handles one control message: session matters here, the rest by
    /// [`ops`], on a task of its own when it waits for the store or the
    /// network.
    async fn handle(&mut self, msg: ClientMsg) -> Result<(), Ended> {
        let kind = msg.kind();
        match msg {
            ClientMsg::Hello { .. } => self.error(
                ErrorCode::UnexpectedFrame,
                kind,
                None,
                "already authenticated",
            ),
            ClientMsg::Join { group } if self.churn_allows(kind, group) => self.join(kind, group),
            ClientMsg::Leave { group } if self.churn_allows(kind, group) => {
                self.leave(kind, group);
            }
            ClientMsg::Join { .. } | ClientMsg::Leave { .. } => {}
            ClientMsg::FloorRequest { group, class } => self.request_floor(group, class),
            ClientMsg::FloorRelease { group } => self.release_floor(kind, group),
            ClientMsg::Ping { nonce } => self.cx.outbox.send(ServerMsg::Pong { nonce }),
            ClientMsg::AlertSend {
                request,
                body,
                target,
            } => {
                return self
                    .spawn(
                        kind,
                        ops::alerts::send(self.caller(), request, body, target),
                    )
                    .await
            }
            ClientMsg::AlertReceipt {
                alert,
                status,
                reason,
            } => {
                // A receipt must never be lost: wait for a permit.
                let tasks = self.budget.tasks.clone();
                let permit = match tasks.try_acquire_owned() {
                    Ok(permit) => permit,
                    Err(_) => {
                        Metrics::add(&self.hub().metrics().receipts_throttled, 1);
                        // Boxed: a rare wait, kept out of the control
                        // loop's future.
                        Box::pin(self.budget.tasks.clone().acquire_owned())
                            .await
                            .expect("the tasks semaphore is never closed")
                    }
                };
                let op = ops::alerts::receipt(self.caller(), alert, status, reason);
                spawn(async move {
                    op.await;
                    drop(permit);
                });
            }
            ClientMsg::AlertQuery { alert } => {
                return self
                    .spawn(kind, ops::alerts::query(self.caller(), alert))
                    .await
            }
            ClientMsg::Position {
                lat_e7,
                lon_e7,
                accuracy_m,
            } => ops::positions::position(&self.cx, lat_e7, lon_e7, accuracy_m),
            ClientMsg::WatchPositions { node } => ops::positions::watch(&self.cx, node),
            ClientMsg::Sos => self.sos(kind),
            ClientMsg::MediaMode { srtp } => self.media_mode(srtp),
            ClientMsg::SosCancel { terminal } => {
                return self
                    .spawn(kind, ops::sos::sos_cancel(self.caller(), terminal))
                    .await
            }
            ClientMsg::AttachmentPut { .. } => self.error(
                ErrorCode::UnexpectedFrame,
                kind,
                None,
                "upload attachments on a unidirectional stream of their own",
            ),
            ClientMsg::AttachmentFetch { attachment } => {
                // Admitted on the control loop (the right and the
                // terminal's transfer bound) before any task is spawned.
                let Some(fetch) = ops::attachments::fetch(self.caller(), attachment) else {
                    return Ok(());
                };
                return self.spawn(kind, fetch).await;
            }
            ClientMsg::DrillReportQuery { alert } => {
                return self
                    .spawn(kind, ops::drills::query(self.caller(), alert))
                    .await
            }
            ClientMsg::Logout => self.logout(),
            ClientMsg::LinkReport {
                received,
                lost,
                late,
                jitter_us,
            } => self.link_report(crate::hub::link::Figures {
                received,
                lost,
                late,
                jitter_us,
            }),
        }
        Ok(())
    }

    /// `LinkReport`: kept as the terminal's last, unless it came less than
    /// a second after the last one kept (dropped and counted). No answer.
    fn link_report(&self, figures: crate::hub::link::Figures) {
        use crate::hub::link::Verdict;
        let now_ms = crate::clock::now_ms();
        let hub = self.hub();
        let verdict = hub
            .link_quality()
            .report(self.cx.terminal, figures, Instant::now(), now_ms);
        match verdict {
            Verdict::Kept => Metrics::add(&hub.metrics().link_reports, 1),
            Verdict::TooSoon => {
                Metrics::add(&hub.metrics().link_reports_dropped, 1);
                if hub.link_quality().warn_due(now_ms) {
                    tracing::warn!(
                        cause = "link reports less than 1 s apart",
                        "dropping link reports"
                    );
                }
            }
        }
    }

    /// Takes a `Join` or `Leave` of `group` from the terminal's limit (kept
    /// across its reconnects);
    /// answers BUSY when over it (and closes RATE_LIMITED when refused
    /// `session.join_max_refused` times in a row). Returns whether to carry
    /// it out.
    fn churn_allows(&mut self, kind: u8, group: GroupId) -> bool {
        let now = tokio::time::Instant::now().into_std();
        let (verdict, refused) = {
            let mut limiter = self.limiter();
            (limiter.join(now), limiter.joins_refused())
        };
        if verdict == churn::Verdict::Allow {
            return true;
        }
        let metrics = self.hub().metrics().clone();
        Metrics::add(&metrics.joins_rate_limited, 1);
        if refused == 1 {
            // Once per run of refusals, so the log is rate-limited too.
            tracing::warn!(
                cause = "joins and leaves over session.join_rate",
                "refusing joins and leaves"
            );
        }
        self.error(
            ErrorCode::Busy,
            kind,
            Some(group),
            "too many joins and leaves; retry later",
        );
        if verdict == churn::Verdict::Close {
            Metrics::add(&metrics.joins_abuse_closed, 1);
            tracing::warn!(
                cause = "joins and leaves refused session.join_max_refused times in a row",
                "closing the connection"
            );
            close(
                &self.cx.conn,
                CloseCode::RateLimited,
                "joins and leaves over the rate limit",
            );
        }
        false
    }

    /// `Leave`: forget the group, go offline there, confirm.
    fn leave(&self, kind: u8, group: GroupId) {
        let terminal = self.cx.terminal;
        let removed = self.hub().registry().forget(terminal, group);
        match (removed, self.hub().group(group)) {
            (true, Some(g)) => {
                g.detach(terminal, self.cx.session);
                self.cx.outbox.send(ServerMsg::Left { group });
            }
            _ => self.error(ErrorCode::NotJoined, kind, Some(group), "not in this group"),
        }
    }

    /// `FloorRequest`: denied unless joined, and at emergency class unless
    /// the policy lets the terminal's role claim it; else the group decides.
    fn request_floor(&self, group: GroupId, class: Class) {
        if !self.joined(group) {
            Metrics::add(&self.hub().metrics().floor_denied, 1);
            self.cx.outbox.send(ServerMsg::FloorDenied {
                group,
                cause: DenyCause::NotJoined,
            });
        } else if class == Class::Emergency
            && ops::sos::emergency_refused(self.hub(), self.cx.terminal)
        {
            self.cx.outbox.send(ServerMsg::FloorDenied {
                group,
                cause: DenyCause::EmergencyNotAllowed,
            });
        } else if let Some(g) = self.hub().group(group) {
            g.request_floor(self.cx.terminal, class);
        }
    }

    /// `FloorRelease`: the group decides, if the terminal is in it.
    fn release_floor(&self, kind: u8, group: GroupId) {
        match self.hub().group(group) {
            Some(g) if self.joined(group) => g.release_floor(self.cx.terminal),
            _ => self.error(ErrorCode::NotJoined, kind, Some(group), "not in this group"),
        }
    }

    /// `Sos`: join the unit's group first if the terminal has not, then
    /// raise it.
    fn sos(&mut self, kind: u8) {
        let unit = self
            .hub()
            .org()
            .terminal(self.cx.terminal)
            .map(|t| GroupId(t.node));
        if let Some(unit) = unit {
            if !self.joined(unit) {
                self.join(kind, unit);
            }
        }
        // Never refused for work in flight: an SOS goes through whatever
        // else the terminal has started; a repeat press inside the refresh
        // interval is answered from the book without a task.
        let caller = self.caller();
        if !ops::sos::answer_repeat(&caller) {
            spawn(ops::sos::sos(caller));
        }
    }

    /// `Logout`: forget every group, go offline there, close normally.
    fn logout(&mut self) {
        let terminal = self.cx.terminal;
        for group in self.hub().registry().forget_all(terminal) {
            if let Some(g) = self.hub().group(group) {
                g.detach(terminal, self.cx.session);
            }
        }
        self.logged_out = true;
        close(&self.cx.conn, CloseCode::Normal, "logged out");
    }

    fn joined(&self, group: GroupId) -> bool {
        self.hub().registry().joined(self.cx.terminal, group)
    }

    fn join(&mut self, kind: u8, group: GroupId) {
        let hub = self.cx.hub.clone();
        let terminal = self.cx.terminal;
        let joined = session::join_rights(&hub.org(), &hub.config().policy, terminal, group)
            .and_then(|rights| {
                let max_groups = hub.config().session.max_groups;
                hub.registry()
                    .remember(terminal, group, rights.talk, |count, already| {
                        session::within_limit(count, already, max_groups)
                    })
                    .map(|()| rights)
            });
        match joined {
            Ok(rights) => self.attach(group, rights.talk, true),
            Err(refusal) => {
                if refusal == JoinRefusal::NotAllowed {
                    tracing::debug!(%group, "join denied");
                }
                self.error(refusal.to_code(), kind, Some(group), refusal.message());
            }
        }
    }

    /// The terminal wants voice as SRTP again, or as QUIC DATAGRAMs (its
    /// SRTP packets do not get through). Without an SRTP answer it gets
    /// DATAGRAMs anyway.
    fn media_mode(&self, srtp: bool) {
        let Some(route) = &self.media else {
            return;
        };
        if !srtp && route.mode() != crate::media::Mode::Datagram {
            Metrics::add(&self.hub().metrics().media_fallbacks, 1);
            tracing::info!(ssrc = route.ssrc(), "media falls back to QUIC DATAGRAMs");
        }
        route.set_mode(srtp);
    }

    /// Takes the terminal offline in its groups, unless a newer session took
    /// over. Groups stay remembered for a reconnect (unless logged out).
    pub(super) fn finish(self) {
        let (hub, terminal, session) = (&self.cx.hub, self.cx.terminal, self.cx.session);
        if let Some(route) = &self.media {
            hub.media().close(route);
        }
        ops::positions::unwatch(hub, session);
        let Some(groups) = hub.registry().unregister(terminal, session) else {
            return;
        };
        hub.announce(terminal, false);
        for group in groups {
            if let Some(g) = hub.group(group) {
                g.detach(terminal, session);
            }
        }
    }
}

/// Runs an operation that waits (for the store or the network) on a task of
/// its own, in the session's span, without a `limits.tasks` permit: for
/// an SOS and a receipt that already holds one.
fn spawn(op: impl std::future::Future<Output = ()> + Send + 'static) {
    tokio::spawn(op.in_current_span());
}
