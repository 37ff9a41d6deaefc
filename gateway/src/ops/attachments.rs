//! Attachments: uploads from terminals on unidirectional streams of their
//! own, pushed to screens and consoles with an alert, fetched by handhelds
//! (`AttachmentFetch`).
//!
//! Each transfer has a stream of its own at a lower priority than the
//! control stream and alert streams, so a 4 MiB photo never holds up a
//! floor message or an alert.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ptt_codec::alert::MAX_ATTACHMENT;
use ptt_codec::control::{kind, split_frame, FrameError};
use ptt_codec::{AttachmentRef, ClientMsg, ErrorCode, ServerMsg, TerminalId};
use quinn::RecvStream;

use crate::link::Link;
use tokio::io::AsyncReadExt;
use tokio::time::timeout;
use tracing::Instrument;

use super::{Caller, Error};
use crate::clock::now_ms;
use crate::hub::{self, Busy, Hub, Ticket};
use crate::metrics::Metrics;
use crate::org::TerminalKind;
use crate::store;

/// QUIC send priority of attachment and report streams: below the control
/// stream and alert streams (priority 0).
const BULK_PRIORITY: i32 = -1;

/// QUIC error code for stopping an upload stream that was refused.
const UPLOAD_REFUSED: u32 = 1;

/// Accepts the terminal's upload streams until the connection ends. At most
/// `transport.max_uni_streams` are open at once (QUIC flow control).
pub(crate) async fn accept_uploads(cx: Caller) {
    while let Ok(recv) = cx.conn.accept_uni().await {
        tokio::spawn(upload(cx.clone(), recv).in_current_span());
    }
}

/// Why an upload was refused, for the uploader.
struct Refused {
    /// The upload's request id, once its header was read: the refusal is
    /// then an `AlertRefused`, otherwise an `Error`.
    request: Option<u32>,
    code: ErrorCode,
    message: String,
}

impl Refused {
    /// A refusal before the header was understood.
    fn header(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            request: None,
            code,
            message: message.into(),
        }
    }

    /// A refusal of upload `request` as invalid.
    fn invalid(request: u32, message: impl Into<String>) -> Self {
        Self {
            request: Some(request),
            code: ErrorCode::AttachmentInvalid,
            message: message.into(),
        }
    }
}

/// One upload: `AttachmentPut`, then exactly `size` bytes, then the end of
/// the stream. Answered on the control stream; nothing is kept unless the
/// whole content arrived.
async fn upload(cx: Caller, recv: RecvStream) {
    // A browser console's stream starts with its WebTransport header; the
    // browser's own HTTP/3 streams are not uploads.
    let stall = Duration::from_millis(u64::from(cx.hub.config().attachments.stall_timeout_ms));
    let Ok(Some(mut recv)) = tokio::time::timeout(stall, cx.conn.claim_uni(recv)).await else {
        return;
    };
    let outbox = &cx.outbox;
    match receive(&cx, &mut recv).await {
        Ok((request, attachment, size)) => {
            tracing::info!(attachment, size, "attachment stored");
            outbox.send(ServerMsg::AttachmentStored {
                request,
                attachment,
                size,
            });
        }
        Err(Refused {
            request,
            code,
            message,
        }) => {
            tracing::info!(?code, "attachment upload refused: {message}");
            let _ = recv.stop(quinn::VarInt::from_u32(UPLOAD_REFUSED));
            match request {
                Some(request) => outbox.send(ServerMsg::AlertRefused {
                    request,
                    code,
                    message,
                }),
                None => cx.error(code, kind::ATTACHMENT_PUT, message),
            }
        }
    }
}

/// The per-terminal quota of unused uploads (`[attachments]`).
fn quota(hub: &Hub) -> store::Quota {
    let c = &hub.config().attachments;
    store::Quota {
        bytes: c.quota_bytes,
        uploads: c.quota_uploads,
    }
}

/// The data directory's free bytes if they are under
/// `attachments.disk_reserve_bytes` (plus the largest upload), so that an
/// upload now could eat into the reserve kept for SOS, alerts and
/// receipts. `None` when there is room, no reserve, or free space cannot
/// be read (logged; the upload is not refused for that). Blocks on the
/// file system: call it off the async threads.
fn below_reserve(dir: &std::path::Path, reserve: u64) -> Option<u64> {
    if reserve == 0 {
        return None;
    }
    match super::upkeep::free_bytes(dir) {
        Ok(free) => (free < reserve.saturating_add(u64::from(MAX_ATTACHMENT))).then_some(free),
        Err(e) => {
            tracing::warn!("reading the data directory's free space failed: {e}");
            None
        }
    }
}

/// Counts and logs an upload refused over the quota; the refusal for the
/// uploader.
fn over_quota(cx: &Caller, request: u32, e: &store::Error) -> ServerMsg {
    Metrics::add(&cx.hub.metrics().attachment_uploads_over_quota, 1);
    if cx.hub.transfers().should_warn(cx.terminal) {
        tracing::warn!(
            terminal = cx.terminal.0,
            "upload refused over the quota: {e}"
        );
    }
    ServerMsg::AlertRefused {
        request,
        code: ErrorCode::OverLimit,
        message: format!("{e}; use them in an alert or wait for them to expire"),
    }
}

/// Reads an upload stream: its header; then, if it fits the terminal's
/// quota and the disk reserve, its content, streamed a chunk at a time
/// into a zero-filled blob ([`Store::begin_upload`](store::Store)).
/// Returns the request, the attachment and its size once the content is
/// complete and committed; a stream that fails leaves no row.
async fn receive(cx: &Caller, recv: &mut RecvStream) -> Result<(u32, u64, u32), Refused> {
    let mut buf = BytesMut::with_capacity(256);
    let len = loop {
        match split_frame(&buf) {
            Ok(frame) => break frame.len(),
            Err(FrameError::TooLong(_)) => {
                return Err(Refused::header(
                    ErrorCode::Malformed,
                    "oversized upload header",
                ))
            }
            Err(FrameError::Incomplete) => {}
        }
        match recv.read_buf(&mut buf).await {
            Ok(n) if n > 0 => {}
            _ => {
                return Err(Refused::header(
                    ErrorCode::Malformed,
                    "upload stream ended before its header",
                ))
            }
        }
    };
    let header = buf.split_to(len);
    let raw = split_frame(&header).expect("complete frame");
    let (request, mime, size) = match ClientMsg::decode(raw) {
        Ok(ClientMsg::AttachmentPut {
            request,
            mime,
            size,
        }) => (request, mime, size),
        Ok(_) => {
            return Err(Refused::header(
                ErrorCode::UnexpectedFrame,
                "an upload stream starts with AttachmentPut",
            ))
        }
        Err(e) => return Err(Refused::header(ErrorCode::Malformed, e.to_string())),
    };
    if size > MAX_ATTACHMENT {
        return Err(Refused::invalid(
            request,
            format!("attachment of {size} bytes is over the {MAX_ATTACHMENT}-byte limit"),
        ));
    }
    let (terminal, quota) = (cx.terminal, quota(&cx.hub));
    let dir = cx.hub.config().data_dir.clone();
    let reserve = cx.hub.config().attachments.disk_reserve_bytes;
    let free = cx
        .hub
        .desk()
        .blocking(move |_| Ok(below_reserve(&dir, reserve)))
        .await
        .unwrap_or_else(|e| {
            tracing::warn!("reading the data directory's free space failed: {e}");
            None
        });
    if let Some(free) = free {
        Metrics::add(&cx.hub.metrics().attachment_uploads_disk_reserve, 1);
        if cx.hub.transfers().should_warn(terminal) {
            tracing::warn!(
                terminal = terminal.0,
                free,
                "upload refused: the data directory is down to its disk reserve \
                 (attachments.disk_reserve_bytes); free space for SOS, alerts and receipts"
            );
        }
        return Err(Refused {
            request: Some(request),
            code: ErrorCode::OverLimit,
            message: "the gateway is short of disk space; uploads are refused for now".into(),
        });
    }
    // The quota is checked here, before any content is read, and the
    // pending row counts against it until the upload ends.
    let begun = cx
        .hub
        .desk()
        .blocking(move |s| s.begin_upload(terminal, &mime, u64::from(size), now_ms(), quota))
        .await;
    let attachment = match begun {
        Ok(attachment) => attachment,
        Err(e) => return Err(store_refused(cx, request, e)),
    };
    let received = receive_content(cx, recv, attachment, size as usize, buf.freeze()).await;
    let finished = match received {
        Ok(()) => cx
            .hub
            .desk()
            .blocking(move |s| s.finish_upload(attachment))
            .await
            .map_err(|e| store_refused(cx, request, e))
            .and_then(|done| {
                done.then_some(()).ok_or_else(|| Refused {
                    request: Some(request),
                    code: ErrorCode::Internal,
                    message: "the upload expired before it ended; upload it again".into(),
                })
            }),
        Err(Short::Store(e)) => Err(store_refused(cx, request, e)),
        Err(e) => Err(e.refusal(request, size)),
    };
    if let Err(refused) = finished {
        Metrics::add(&cx.hub.metrics().attachment_uploads_abandoned, 1);
        let abandoned = cx
            .hub
            .desk()
            .blocking(move |s| s.abandon_upload(attachment))
            .await;
        if let Err(e) = abandoned {
            // Left pending: nobody can use it, and the expiry sweep
            // deletes it after `attachments.unused_expiry_s`.
            tracing::error!(attachment, "deleting an abandoned upload failed: {e}");
        }
        return Err(refused);
    }
    Ok((request, attachment, size))
}

/// The refusal of upload `request` for a failed store call: over the
/// quota (counted, warned), the disk full (counted), or the gateway's
/// fault.
fn store_refused(cx: &Caller, request: u32, e: hub::Error) -> Refused {
    match e {
        hub::Error::Store(e @ store::Error::OverQuota { .. }) => {
            let ServerMsg::AlertRefused { code, message, .. } = over_quota(cx, request, &e) else {
                unreachable!("over_quota is an AlertRefused")
            };
            Refused {
                request: Some(request),
                code,
                message,
            }
        }
        e if super::count_full(&cx.hub, &e) => {
            tracing::error!("an upload was refused, the disk is full: {e}");
            Refused {
                request: Some(request),
                code: ErrorCode::StorageFull,
                message: "the gateway's disk is full: the attachment was NOT stored".into(),
            }
        }
        e => {
            tracing::error!("storing an attachment failed: {e}");
            Refused {
                request: Some(request),
                code: ErrorCode::Internal,
                message: "the attachment could not be stored; upload it again".into(),
            }
        }
    }
}

/// Why an upload's content did not arrive whole.
#[derive(Debug)]
enum Short {
    /// The stream ended after this many bytes.
    Ended(usize),
    /// The stream carried more than it announced.
    Long,
    /// The stream failed (reset by the terminal, connection lost).
    Failed(quinn::ReadError),
    /// No chunk (or the rest) arrived within `attachments.stall_timeout_ms`.
    Stalled(Duration),
    /// Writing a chunk into the store failed.
    Store(hub::Error),
}

impl Short {
    fn refusal(self, request: u32, size: u32) -> Refused {
        let size_lie = |m: String| Refused::invalid(request, m);
        match self {
            Short::Ended(got) => size_lie(format!("the stream ended after {got} of {size} bytes")),
            Short::Long => size_lie(format!(
                "the stream carried more than the {size} bytes announced"
            )),
            Short::Failed(e) => size_lie(format!("upload stream failed: {e}")),
            Short::Stalled(d) => size_lie(format!(
                "the upload stalled: less than a {CHUNK}-byte chunk in {d:?}"
            )),
            Short::Store(e) => {
                tracing::error!("writing an upload failed: {e}");
                Refused {
                    request: Some(request),
                    code: e.to_code(),
                    message: "the attachment could not be stored; upload it again".into(),
                }
            }
        }
    }
}

/// Reads `buf.len()` bytes from `recv` into `buf`; how many arrived
/// before the stream ended.
async fn fill(recv: &mut RecvStream, buf: &mut [u8]) -> Result<usize, quinn::ReadError> {
    let mut filled = 0;
    while filled < buf.len() {
        match recv.read(&mut buf[filled..]).await? {
            Some(n) => filled += n,
            None => break,
        }
    }
    Ok(filled)
}

/// Streams an upload's `size` bytes of content (`early`, read with the
/// header, then the rest of `recv`) into pending attachment `attachment`,
/// a [`CHUNK`] at a time: all an upload holds in memory is one chunk. Each
/// chunk (or the rest) must arrive within `attachments.stall_timeout_ms`,
/// so a slow trickle is cut off like silence. The stream must end right
/// after the content.
async fn receive_content(
    cx: &Caller,
    recv: &mut RecvStream,
    attachment: u64,
    size: usize,
    mut early: Bytes,
) -> Result<(), Short> {
    let stall = Duration::from_millis(u64::from(cx.hub.config().attachments.stall_timeout_ms));
    let mut chunk = vec![0u8; CHUNK.min(size)];
    let mut offset = 0;
    while offset < size {
        let want = CHUNK.min(size - offset);
        let early_part = early.len().min(want);
        chunk[..early_part].copy_from_slice(&early.split_to(early_part));
        let filled = timeout(stall, fill(recv, &mut chunk[early_part..want]))
            .await
            .map_err(|_| Short::Stalled(stall))?
            .map_err(Short::Failed)?;
        if early_part + filled < want {
            return Err(Short::Ended(offset + early_part + filled));
        }
        chunk = cx
            .hub
            .desk()
            .blocking(move |s| {
                s.write_upload(attachment, offset, &chunk[..want])?;
                Ok(chunk)
            })
            .await
            .map_err(Short::Store)?;
        offset += want;
    }
    if !early.is_empty() {
        return Err(Short::Long);
    }
    // One byte past the size tells a stream that carries more from one
    // that ends.
    let mut past = [0u8; 1];
    match timeout(stall, fill(recv, &mut past)).await {
        Err(_) => Err(Short::Stalled(stall)),
        Ok(Err(e)) => Err(Short::Failed(e)),
        Ok(Ok(0)) => Ok(()),
        Ok(Ok(_)) => Err(Short::Long),
    }
}

/// Sends `header` and `content` on a new low-priority unidirectional stream.
pub(super) async fn send_stream(
    conn: &Link,
    header: ServerMsg,
    content: &Bytes,
) -> Result<(), Error> {
    let mut buf = BytesMut::new();
    header.encode(&mut buf);
    let mut stream = conn.open_uni().await?;
    stream.set_priority(BULK_PRIORITY)?;
    stream.write_all(&buf).await?;
    stream.write_chunk(content.clone()).await?;
    stream.finish()?;
    Ok(())
}

/// Whether terminals of this kind get attachments pushed with the alert
/// (screens and consoles); handhelds and phones fetch on request.
pub(crate) fn gets_attachments(kind: TerminalKind) -> bool {
    matches!(kind, TerminalKind::ScreenTerminal | TerminalKind::Console)
}

/// Bytes of an attachment read from the store and written to its stream
/// at a time: all a photo stream holds in memory.
const CHUNK: usize = 64 * 1024;

/// QUIC error code for resetting a photo stream whose reader stalled or
/// whose content could not be read.
const STREAM_ABANDONED: u32 = 2;

/// Streams attachment `a` (fetched through `alert`) to `conn` on a new
/// low-priority unidirectional stream, a chunk at a time from the store.
/// Call it holding a [`Slot`](crate::hub::Transfers): it holds one chunk
/// of memory. A reader that takes nothing for `attachments.stall_timeout_ms`
/// has its stream reset.
async fn stream(hub: &Hub, conn: &Link, alert: u64, a: &AttachmentRef) -> Result<(), Error> {
    let stall = Duration::from_millis(u64::from(hub.config().attachments.stall_timeout_ms));
    let stalled = |_| {
        Metrics::add(&hub.metrics().attachment_streams_stalled, 1);
        Error::Stalled(stall)
    };
    let mut stream = timeout(stall, conn.open_uni()).await.map_err(stalled)??;
    let result = async {
        stream.set_priority(BULK_PRIORITY)?;
        let mut header = BytesMut::new();
        ServerMsg::Attachment {
            attachment: a.id,
            alert,
            mime: a.mime.clone(),
            size: a.size,
        }
        .encode(&mut header);
        timeout(stall, stream.write_all(&header))
            .await
            .map_err(stalled)??;
        let (id, size) = (a.id, a.size as usize);
        let mut offset = 0;
        while offset < size {
            let len = CHUNK.min(size - offset);
            let chunk = hub
                .desk()
                .blocking(move |s| {
                    let mut buf = vec![0; len];
                    s.read_attachment(id, offset, &mut buf)?;
                    Ok(buf)
                })
                .await?;
            timeout(stall, stream.write_chunk(Bytes::from(chunk)))
                .await
                .map_err(stalled)??;
            offset += len;
        }
        stream.finish()?;
        Ok(())
    }
    .await;
    if result.is_err() {
        let _ = stream.reset(quinn::VarInt::from_u32(STREAM_ABANDONED));
    }
    result
}

/// Pushes an alert's attachments to one screen terminal or console,
/// streaming each from the store within the terminal's transfer slots.
pub(crate) async fn push(
    hub: Arc<Hub>,
    conn: Link,
    terminal: TerminalId,
    alert: u64,
    attachments: Arc<Vec<AttachmentRef>>,
) {
    for a in attachments.iter() {
        let (_slot, waited) = hub.transfers().push(terminal).await;
        if waited {
            Metrics::add(&hub.metrics().attachment_transfers_waited, 1);
        }
        if let Err(e) = stream(&hub, &conn, alert, a).await {
            stream_failed(&hub, terminal, a.id, &e);
            return;
        }
    }
}

/// Logs a photo stream that did not finish: a warning (rate-limited) when
/// its reader stalled, else at debug level (the terminal went away).
fn stream_failed(hub: &Hub, terminal: TerminalId, attachment: u64, e: &Error) {
    match e {
        Error::Stalled(_) if hub.transfers().should_warn(terminal) => tracing::warn!(
            terminal = terminal.0,
            attachment,
            "photo stream reset, its reader stalled: {e}"
        ),
        Error::Desk(_) => tracing::error!(attachment, "reading an attachment failed: {e}"),
        _ => tracing::debug!(attachment, "photo stream failed (fetchable later): {e}"),
    }
}

/// `AttachmentFetch`: the content, if the terminal may have it. Call it on
/// the control loop and spawn the future it returns: a terminal with too
/// many fetches admitted is refused here (OVER_LIMIT) and gets none, so a
/// flood of fetches costs no task. The future waits for one of the
/// terminal's transfer slots, checks the right without reading any
/// content, then streams it.
pub(crate) fn fetch(
    cx: Caller,
    attachment: u64,
) -> Option<impl std::future::Future<Output = ()> + Send> {
    let terminal = cx.terminal;
    let ticket = match cx.hub.transfers().admit_fetch(terminal) {
        Ok(ticket) => ticket,
        Err(Busy) => {
            Metrics::add(&cx.hub.metrics().attachment_fetches_refused, 1);
            if cx.hub.transfers().should_warn(terminal) {
                tracing::warn!(
                    terminal = terminal.0,
                    "attachment fetch refused: too many fetches waiting"
                );
            }
            cx.error(
                ErrorCode::OverLimit,
                kind::ATTACHMENT_FETCH,
                format!("too many fetches waiting; fetch {attachment} again once one has arrived"),
            );
            return None;
        }
    };
    Some(fetch_admitted(cx, attachment, ticket))
}

async fn fetch_admitted(cx: Caller, attachment: u64, ticket: Ticket) {
    let (hub, terminal) = (&cx.hub, cx.terminal);
    let (_slot, waited) = hub.transfers().fetch(&ticket).await;
    if waited {
        Metrics::add(&hub.metrics().attachment_transfers_waited, 1);
    }
    match hub
        .desk()
        .blocking(move |s| s.fetchable_attachment(terminal, attachment))
        .await
    {
        Ok(Some((alert, a))) => {
            if let Err(e) = stream(hub, &cx.conn, alert, &a).await {
                stream_failed(hub, terminal, attachment, &e);
            }
        }
        Ok(None) => cx.error(
            ErrorCode::UnknownAttachment,
            kind::ATTACHMENT_FETCH,
            format!("no attachment {attachment} for you"),
        ),
        Err(e) => {
            tracing::error!("reading an attachment failed: {e}");
            cx.error(
                ErrorCode::Internal,
                kind::ATTACHMENT_FETCH,
                "attachment unavailable; retry",
            );
        }
    }
}

/// Deletes unused uploads after `attachments.unused_expiry_s` (pending
/// ones, left by a crash mid-upload, once no upload can still be
/// streaming into them) and, with `attachments.retention_days` set, every
/// attachment older than that, every `attachments.sweep_interval_s`. Run
/// it once, beside the listener, until the gateway stops.
pub(crate) async fn sweep(hub: Arc<Hub>) {
    let c = hub.config().attachments.clone();
    let mut every = tokio::time::interval(Duration::from_secs(u64::from(c.sweep_interval_s)));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let now = now_ms();
        let unused_before = now.saturating_sub(u64::from(c.unused_expiry_s) * 1000);
        // An upload in progress gets a chunk per stall timeout at the
        // slowest: never deleted before the longest it can take.
        let longest_upload_ms = u64::from(MAX_ATTACHMENT).div_ceil(CHUNK as u64)
            * u64::from(c.stall_timeout_ms)
            + 60_000;
        let pending_before = unused_before.min(now.saturating_sub(longest_upload_ms));
        let retired_before = (c.retention_days > 0)
            .then(|| now.saturating_sub(u64::from(c.retention_days) * 86_400_000));
        let swept = hub
            .desk()
            .blocking(move |s| {
                let expired = s.expire_unused(unused_before, pending_before)?;
                let retired = match retired_before {
                    Some(before) => s.retire_attachments(before)?,
                    None => 0,
                };
                Ok((expired, retired))
            })
            .await;
        match swept {
            Ok((expired, retired)) => {
                Metrics::add(&hub.metrics().attachments_expired, expired as u64);
                Metrics::add(&hub.metrics().attachments_retired, retired as u64);
                if expired + retired > 0 {
                    tracing::info!(expired, retired, "attachments deleted");
                }
            }
            Err(e) => tracing::error!("deleting old attachments failed: {e}"),
        }
    }
}
