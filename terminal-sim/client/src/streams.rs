//! The tasks behind a [`Terminal`](crate::Terminal): the control stream's
//! writer and reader, and the receiver of the gateway's own streams
//! (alerts, attachments, drill reports). They run on the tokio runtime
//! from the handshake until the connection ends.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use ptt_codec::control::{split_frame, FrameError};
use ptt_codec::{ClientMsg, Malformed, ReceiptStatus, ServerMsg};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::web::Wire;
use crate::{Download, Error, SeenAlerts};

/// Receives the gateway's unidirectional streams: alerts (acknowledged,
/// each shown once) in the order the gateway opened their streams, and
/// attachments and drill reports, whose content is read on a task of its
/// own so a large photo never holds up the next alert.
pub(crate) async fn stream_loop(
    conn: quinn::Connection,
    web: Option<Arc<Wire>>,
    control: mpsc::UnboundedSender<ClientMsg>,
    events: mpsc::UnboundedSender<Result<ServerMsg, Error>>,
    downloads: mpsc::UnboundedSender<Download>,
    seen: SeenAlerts,
) {
    while let Ok(stream) = conn.accept_uni().await {
        // On a WebTransport session, only the session's own streams carry
        // the protocol (their header removed here).
        let mut stream = match &web {
            None => stream,
            Some(web) => match web.claim_uni(stream).await {
                Some(ours) => ours,
                None => continue,
            },
        };
        let Some((msg, rest)) = read_header(&mut stream).await else {
            tracing::debug!("skipped a stream from the gateway without a valid first frame");
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
                tokio::spawn(
                    read_download(stream, header, rest, downloads.clone()).in_current_span(),
                );
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

/// Reads the rest of a download stream whose first frame was `header` and
/// hands the content on if its length is the one announced.
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

/// Writes the control messages the terminal queues, batching whatever is
/// queued by the time the previous write finished; finishes the stream when
/// the [`Terminal`](crate::Terminal) is dropped.
pub(crate) async fn write_loop(
    mut send: quinn::SendStream,
    mut rx: mpsc::UnboundedReceiver<ClientMsg>,
) {
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

/// Reads the control stream's frames into `tx` in order; at its end sends
/// the connection's close reason (the gateway's close code, if it closed
/// it) as the last item.
pub(crate) async fn read_loop(
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
                tracing::debug!(error = %err, "control stream ended");
                let _ = tx.send(Err(err));
                return;
            }
        }
    }
}
