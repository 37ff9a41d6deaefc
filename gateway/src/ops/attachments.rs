//! Attachments: uploads from terminals on unidirectional streams of their
//! own, pushed to screens and consoles with an alert, fetched by handhelds
//! (`AttachmentFetch`).
//!
//! Each transfer has a stream of its own at a lower priority than the
//! control stream and alert streams, so a 4 MiB photo never holds up a
//! floor message or an alert.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use ptt_codec::alert::MAX_ATTACHMENT;
use ptt_codec::control::{kind, split_frame, FrameError};
use ptt_codec::{ClientMsg, ErrorCode, ServerMsg, TerminalId};
use quinn::{Connection, RecvStream};
use tokio::io::AsyncReadExt;
use tracing::Instrument;

use super::{Caller, Error};
use crate::clock::now_ms;
use crate::hub::Hub;
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
/// the stream. Answered on the control stream; nothing is stored unless the
/// whole content arrived.
async fn upload(cx: Caller, mut recv: RecvStream) {
    let (terminal, outbox) = (cx.terminal, &cx.outbox);
    match receive(&mut recv).await {
        Ok((request, mime, data)) => {
            let size = data.len() as u32;
            let stored = cx
                .hub
                .desk()
                .blocking(move |s| s.put_attachment(terminal, &mime, &data, now_ms()))
                .await;
            match stored {
                Ok(attachment) => {
                    tracing::info!(attachment, size, "attachment stored");
                    outbox.send(ServerMsg::AttachmentStored {
                        request,
                        attachment,
                        size,
                    });
                }
                Err(e) => {
                    tracing::error!("storing an attachment failed: {e}");
                    outbox.send(ServerMsg::AlertRefused {
                        request,
                        code: ErrorCode::Internal,
                        message: "the attachment could not be stored; upload it again".into(),
                    });
                }
            }
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

/// Reads an upload stream: its header, then its content.
async fn receive(recv: &mut RecvStream) -> Result<(u32, String, Bytes), Refused> {
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
    let size = size as usize;
    // Grown as content arrives: a header alone reserves little memory.
    let mut data = BytesMut::with_capacity(size.min(64 * 1024));
    data.extend_from_slice(&buf);
    // Read one byte past the announced size to notice a stream that
    // carries more than it said.
    while data.len() <= size {
        match recv.read_buf(&mut data).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                return Err(Refused::invalid(
                    request,
                    format!("upload stream failed: {e}"),
                ))
            }
        }
    }
    if data.len() != size {
        let got = data.len();
        return Err(Refused::invalid(
            request,
            if got > size {
                format!("the stream carried more than the {size} bytes announced")
            } else {
                format!("the stream ended after {got} of {size} bytes")
            },
        ));
    }
    Ok((request, mime, data.freeze()))
}

/// Sends `header` and `content` on a new low-priority unidirectional stream.
pub(super) async fn send_stream(
    conn: &Connection,
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

/// Loads the attachments of an alert for pushing.
pub(crate) async fn load(
    hub: &Hub,
    alert: u64,
    refs: &[ptt_codec::AttachmentRef],
    issuer: TerminalId,
) -> Vec<store::Attachment> {
    let ids: Vec<u64> = refs.iter().map(|a| a.id).collect();
    let loaded = hub
        .desk()
        .blocking(move |s| {
            ids.iter()
                .map(|id| s.fetchable_attachment(issuer, *id))
                .collect::<Result<Vec<_>, _>>()
        })
        .await;
    match loaded {
        Ok(found) => found.into_iter().flatten().map(|(_, a)| a).collect(),
        Err(e) => {
            tracing::error!(alert, "loading attachments failed: {e}");
            Vec::new()
        }
    }
}

/// Pushes an alert's attachments to one screen terminal or console.
pub(crate) async fn push(conn: Connection, alert: u64, attachments: Arc<Vec<store::Attachment>>) {
    for a in attachments.iter() {
        let header = ServerMsg::Attachment {
            attachment: a.id,
            alert,
            mime: a.mime.clone(),
            size: a.data.len() as u32,
        };
        if let Err(e) = send_stream(&conn, header, &a.data).await {
            tracing::debug!(alert, "attachment push failed (fetchable later): {e}");
            return;
        }
    }
}

/// `AttachmentFetch`: the content, if the terminal may have it.
pub(crate) async fn fetch(cx: Caller, attachment: u64) {
    let terminal = cx.terminal;
    match cx
        .hub
        .desk()
        .blocking(move |s| s.fetchable_attachment(terminal, attachment))
        .await
    {
        Ok(Some((alert, a))) => {
            let header = ServerMsg::Attachment {
                attachment,
                alert,
                mime: a.mime,
                size: a.data.len() as u32,
            };
            if let Err(e) = send_stream(&cx.conn, header, &a.data).await {
                tracing::debug!(attachment, "attachment fetch failed: {e}");
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
