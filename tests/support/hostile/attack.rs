//! The attacker's tools: raw sessions that send what the reference client
//! never would, floods, connections without `Hello`, forged Initials.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ptt_codec::control::{split_frame, VERSION};
use ptt_codec::{ClientMsg, ErrorCode, ServerMsg, TerminalId};
use ptt_terminal_sim::terminal::{self, Terminal, ANSWER_TIMEOUT};
use tokio::io::AsyncReadExt;
use tokio::task::JoinHandle;

use super::GatewayProcess;

/// What the gateway sent a raw session on its control stream.
#[derive(Debug, Clone, Default)]
pub struct Replies {
    /// Frames decoded, by frame type.
    pub frames: BTreeMap<u8, u64>,
    /// `Error` frames by code.
    pub errors: BTreeMap<u16, u64>,
    /// `AlertRefused` frames by code.
    pub refused: BTreeMap<u16, u64>,
    /// Alert ids of the `AlertAccepted` frames, in order.
    pub accepted: Vec<u64>,
    /// Unidirectional streams the gateway opened to it, and their bytes.
    pub streams: u64,
    /// Bytes read on those streams.
    pub stream_bytes: u64,
}

impl Replies {
    /// `Error` frames with `code` so far.
    pub fn errors(&self, code: ErrorCode) -> u64 {
        self.errors.get(&code.code()).copied().unwrap_or(0)
    }
}

/// How a raw session treats what the gateway sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// Reads the control stream and every stream the gateway opens, as a
    /// conforming terminal does, and discards the content.
    All,
    /// Reads the control stream; never accepts a stream the gateway opens.
    ControlOnly,
    /// Reads nothing after the handshake.
    Nothing,
}

/// An authenticated connection driven by hand, to send what the reference
/// client never would, as fast as QUIC flow control lets it.
#[derive(Debug)]
pub struct RawSession {
    /// The QUIC connection.
    pub conn: quinn::Connection,
    send: quinn::SendStream,
    replies: Arc<Mutex<Replies>>,
    tasks: Vec<JoinHandle<()>>,
    /// Keeps the endpoint (its socket) alive with the connection.
    _endpoint: quinn::Endpoint,
}

impl RawSession {
    /// Connects as `terminal` with the reference client's transport,
    /// sends `Hello`, and reads as `reading` says.
    pub async fn connect(gw: &GatewayProcess, terminal: u32, reading: Reading) -> RawSession {
        let config = terminal::client_config(&gw.roots).expect("a client configuration");
        Self::connect_with(gw, terminal, reading, config).await
    }

    /// As [`RawSession::connect`] with a client configuration of one's
    /// own (see [`stingy_transport`]).
    pub async fn connect_with(
        gw: &GatewayProcess,
        terminal: u32,
        reading: Reading,
        config: quinn::ClientConfig,
    ) -> RawSession {
        let endpoint = gw.endpoint();
        let conn = endpoint
            .connect_with(config, gw.addr, "localhost")
            .expect("connecting")
            .await
            .unwrap_or_else(|e| panic!("raw session {terminal}: {e}"));
        let (mut send, mut recv) = conn.open_bi().await.expect("the control stream");
        let mut hello = BytesMut::new();
        ClientMsg::Hello {
            version: VERSION,
            terminal: TerminalId(terminal),
            credential: Bytes::copy_from_slice(&gw.credential(terminal)),
            media: ptt_codec::MediaOffer::NONE,
        }
        .encode(&mut hello);
        send.write_all(&hello).await.expect("sending Hello");
        let replies = Arc::new(Mutex::new(Replies::default()));
        let mut tasks = Vec::new();
        // Wait for Welcome, so the caller's frames follow a session.
        let mut buf = BytesMut::new();
        loop {
            if let Ok(frame) = split_frame(&buf) {
                let len = frame.len();
                match ServerMsg::decode(frame) {
                    Ok(ServerMsg::Welcome { .. }) => {
                        let _ = buf.split_to(len);
                        break;
                    }
                    other => panic!("raw session {terminal}: expected Welcome, got {other:?}"),
                }
            }
            let n = tokio::time::timeout(ANSWER_TIMEOUT, recv.read_buf(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("raw session {terminal}: no Welcome"))
                .unwrap_or_else(|e| panic!("raw session {terminal}: {e}"));
            assert!(n > 0, "raw session {terminal}: control stream ended");
        }
        if reading != Reading::Nothing {
            tasks.push(tokio::spawn(read_control(recv, buf, replies.clone())));
        } else {
            // Held open, never read.
            tasks.push(tokio::spawn(async move {
                let _recv = recv;
                std::future::pending::<()>().await;
            }));
        }
        if reading == Reading::All {
            tasks.push(tokio::spawn(read_streams(conn.clone(), replies.clone())));
        }
        RawSession {
            conn,
            send,
            replies,
            tasks,
            _endpoint: endpoint,
        }
    }

    /// What the gateway sent so far.
    pub fn replies(&self) -> Replies {
        self.replies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Writes `bytes` on the control stream; false once the stream or
    /// connection is gone.
    pub async fn write(&mut self, bytes: Bytes) -> bool {
        self.send.write_chunk(bytes).await.is_ok()
    }

    /// Writes `batch` (encoded frames, `frames` of them) again and again
    /// for `duration`, or until the connection ends, as fast as flow
    /// control allows, or at most `per_second` frames a second. Returns
    /// the frames written.
    pub async fn flood(
        &mut self,
        batch: &Bytes,
        frames: u64,
        duration: Duration,
        per_second: Option<u64>,
    ) -> u64 {
        let until = Instant::now() + duration;
        let started = Instant::now();
        let mut written = 0u64;
        while Instant::now() < until {
            if let Some(rate) = per_second {
                let due = Duration::from_secs_f64(written as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
            let write = tokio::time::timeout_at(until.into(), self.send.write_chunk(batch.clone()));
            match write.await {
                Ok(Ok(())) => written += frames,
                Ok(Err(_)) => break,
                Err(_) => break,
            }
        }
        written
    }
}

impl Drop for RawSession {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Reads the control stream, counting what arrives.
async fn read_control(
    mut recv: quinn::RecvStream,
    mut buf: BytesMut,
    replies: Arc<Mutex<Replies>>,
) {
    loop {
        while let Ok(frame) = split_frame(&buf) {
            let len = frame.len();
            let kind = frame.kind;
            let msg = ServerMsg::decode(frame);
            {
                let mut r = replies.lock().unwrap_or_else(|e| e.into_inner());
                *r.frames.entry(kind).or_default() += 1;
                match msg {
                    Ok(ServerMsg::Error { code, .. }) => {
                        *r.errors.entry(code.code()).or_default() += 1
                    }
                    Ok(ServerMsg::AlertRefused { code, .. }) => {
                        *r.refused.entry(code.code()).or_default() += 1
                    }
                    Ok(ServerMsg::AlertAccepted { alert, .. }) => r.accepted.push(alert),
                    _ => {}
                }
            }
            let _ = buf.split_to(len);
        }
        match recv.read_buf(&mut buf).await {
            Ok(n) if n > 0 => {}
            _ => return,
        }
    }
}

/// Accepts every stream the gateway opens and reads it to its end,
/// counting bytes and keeping none.
async fn read_streams(conn: quinn::Connection, replies: Arc<Mutex<Replies>>) {
    while let Ok(mut stream) = conn.accept_uni().await {
        let replies = replies.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while let Ok(Some(chunk)) = stream.read_chunk(64 * 1024, false).await {
                n += chunk.bytes.len() as u64;
            }
            let mut r = replies.lock().unwrap_or_else(|e| e.into_inner());
            r.streams += 1;
            r.stream_bytes += n;
        });
    }
}

/// `count` copies of `msg`, encoded one after another: a batch for
/// [`RawSession::flood`].
pub fn batch(msg: &ClientMsg, count: usize) -> Bytes {
    let mut out = BytesMut::new();
    for _ in 0..count {
        msg.encode(&mut out);
    }
    out.freeze()
}

/// `count` copies of a raw frame of type `kind` with body `body` (which
/// need not decode).
pub fn raw_batch(kind: u8, body: &[u8], count: usize) -> Bytes {
    let mut out = BytesMut::new();
    for _ in 0..count {
        out.extend_from_slice(&[kind]);
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(body);
    }
    out.freeze()
}

/// A client transport that never grants the gateway stream credit: no
/// unidirectional streams at all (the gateway's alert, photo and report
/// streams wait forever to open) and receive windows of `window` bytes
/// (bidirectional streams and the connection stall after that).
pub fn stingy_transport(window: u32) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    t.stream_receive_window(quinn::VarInt::from_u32(window));
    t.receive_window(quinn::VarInt::from_u32(window));
    t.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(Duration::from_secs(30)).expect("30 s fits an idle timeout"),
    ));
    t.keep_alive_interval(Some(Duration::from_secs(10)));
    t
}

/// Opens `n` connections that complete the QUIC handshake and never send
/// `Hello` (each from a socket of its own); keep them to keep the sockets.
pub async fn without_hello(
    gw: &GatewayProcess,
    n: usize,
) -> Vec<(quinn::Endpoint, quinn::Connection)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let endpoint = gw.endpoint();
        let conn = endpoint
            .connect(gw.addr, "localhost")
            .expect("connecting")
            .await
            .expect("the QUIC handshake");
        out.push((endpoint, conn));
    }
    out
}

/// Fills what a connection without `Hello` may send: the control stream
/// gets all but the last byte of the longest `Hello` a frame may carry
/// (the gateway waits for the rest until its hello timeout), every other bidirectional and
/// unidirectional stream the gateway allows gets `bytes`, never finished.
/// Returns the bytes the gateway's flow control let in within `within`
/// (quinn stops the rest).
pub async fn fill_before_hello(conn: &quinn::Connection, bytes: usize, within: Duration) -> u64 {
    let chunk = Bytes::from(vec![0u8; bytes]);
    let written = Arc::new(AtomicU64::new(0));
    let (mut control, _) = match conn.open_bi().await {
        Ok(s) => s,
        Err(_) => return 0,
    };
    // A Hello header announcing the longest body a frame may have, and all
    // of that body but its last byte: the gateway holds it, waiting for
    // the rest.
    let body = ptt_codec::control::MAX_BODY;
    let len = u16::try_from(body).expect("MAX_BODY fits the u16 length field");
    let mut hello = vec![ptt_codec::control::kind::HELLO];
    hello.extend_from_slice(&len.to_be_bytes());
    hello.resize(3 + body - 1, 0);
    let mut tasks = tokio::task::JoinSet::new();
    let counted = written.clone();
    tasks.spawn(async move {
        let mut rest = Bytes::from(hello);
        while !rest.is_empty() {
            match control.write(&rest).await {
                Ok(n) => {
                    counted.fetch_add(n as u64, Ordering::Relaxed);
                    let _ = rest.split_to(n);
                }
                Err(_) => return,
            }
        }
        // Held open with the connection.
        std::future::pending::<()>().await;
    });
    for bidi in [true, false] {
        for _ in 0..4 {
            let conn = conn.clone();
            let chunk = chunk.clone();
            let written = written.clone();
            tasks.spawn(async move {
                let stream = if bidi {
                    conn.open_bi().await.map(|(s, _)| s)
                } else {
                    conn.open_uni().await
                };
                let Ok(mut stream) = stream else { return };
                let mut rest = chunk;
                while !rest.is_empty() {
                    match stream.write(&rest).await {
                        Ok(n) => {
                            written.fetch_add(n as u64, Ordering::Relaxed);
                            let _ = rest.split_to(n);
                        }
                        Err(_) => return,
                    }
                }
                // Held open: the gateway keeps what it received.
                std::future::pending::<()>().await;
            });
        }
    }
    let _ =
        tokio::time::timeout(within, async { while tasks.join_next().await.is_some() {} }).await;
    tasks.detach_all();
    written.load(Ordering::Relaxed)
}

/// `n` distinct QUIC Initial packets of real client handshakes to the
/// gateway, caught before they left: sent raw, each starts a handshake
/// the gateway waits for in vain.
pub async fn initials(gw: &GatewayProcess, n: usize) -> Vec<Vec<u8>> {
    let catcher = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("a catcher socket");
    let to = catcher.local_addr().expect("its address");
    let client = gw.endpoint();
    let mut out = Vec::with_capacity(n);
    let mut seen = HashSet::new();
    let mut buf = vec![0u8; 2048];
    while out.len() < n {
        let connecting = client.connect(to, "localhost").expect("connecting");
        // The first packet of a connection id not seen before: an
        // abandoned attempt's retransmissions and its CONNECTION_CLOSE
        // carry its own id, and the close would abort the handshake.
        loop {
            let len = tokio::time::timeout(ANSWER_TIMEOUT, catcher.recv(&mut buf))
                .await
                .expect("an Initial within 10 s")
                .expect("receiving it");
            let packet = &buf[..len];
            if let Some(id) = long_header_dcid(packet) {
                if seen.insert(id.to_vec()) {
                    out.push(packet.to_vec());
                    break;
                }
            }
        }
        drop(connecting);
    }
    out
}

/// The destination connection id of a QUIC long-header packet (RFC 9000
/// 17.2: flags, version, id length, id).
fn long_header_dcid(packet: &[u8]) -> Option<&[u8]> {
    let first = *packet.first()?;
    if first & 0x80 == 0 {
        return None;
    }
    let len = usize::from(*packet.get(5)?);
    packet.get(6..6 + len)
}

/// Sends `packets` to the gateway from one socket, `per_second` a second
/// (cycling through them), for `duration`. Returns the packets sent.
pub async fn send_initials(
    gw: &GatewayProcess,
    packets: &[Vec<u8>],
    per_second: u64,
    duration: Duration,
) -> u64 {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("an attacker socket");
    let started = Instant::now();
    let mut sent = 0u64;
    let mut buf = vec![0u8; 2048];
    while started.elapsed() < duration {
        let due = Duration::from_secs_f64(sent as f64 / per_second as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        let packet = &packets[sent as usize % packets.len()];
        if socket.send_to(packet, gw.addr).await.is_ok() {
            sent += 1;
        }
        // What the gateway answers is read and dropped, never acknowledged.
        while socket.try_recv_from(&mut buf).is_ok() {}
    }
    sent
}

/// Floods voice datagrams from `t`'s connection: `datagrams` in turn, as
/// fast as the connection sends them (up to 100,000 a second), for
/// `duration`. Returns the datagrams queued.
pub async fn voice_flood(t: &Terminal, datagrams: &[Bytes], duration: Duration) -> u64 {
    let started = Instant::now();
    let mut sent = 0u64;
    while started.elapsed() < duration {
        for d in datagrams.iter().cycle().take(100) {
            if t.send_raw_datagram(d.clone()).is_ok() {
                sent += 1;
            }
        }
        // Let the connection send what is queued (quinn drops the oldest
        // queued datagrams past its send buffer).
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    sent
}

/// What a [`flood`] did.
#[derive(Debug, Clone, Default)]
pub struct Flood {
    /// Frames written (the gateway took them: flow control let them in).
    pub frames: u64,
    /// Connections the flood used: it reconnects whenever the gateway
    /// closes one.
    pub connections: u64,
    /// How the gateway closed the flood's connections, by close code.
    pub closed: BTreeMap<u64, u64>,
    /// What the gateway answered, summed over the connections.
    pub replies: Replies,
}

/// Floods the control stream as `terminal` for `duration`: `batch` (of
/// `frames` frames) again and again, as fast as flow control lets it in or
/// at most `per_second` frames a second, reading as `reading` says.
/// Reconnects when the gateway closes the connection, as a hostile handset
/// would.
pub async fn flood(
    gw: &GatewayProcess,
    terminal: u32,
    reading: Reading,
    batch: &Bytes,
    frames: u64,
    duration: Duration,
    per_second: Option<u64>,
) -> Flood {
    let until = Instant::now() + duration;
    let mut out = Flood::default();
    while Instant::now() < until {
        let mut s = RawSession::connect(gw, terminal, reading).await;
        out.connections += 1;
        out.frames += s
            .flood(batch, frames, until - Instant::now(), per_second)
            .await;
        // The gateway may still be answering the last frames.
        let closed = tokio::time::timeout(Duration::from_millis(200), s.conn.closed()).await;
        if let Ok(quinn::ConnectionError::ApplicationClosed(c)) = closed {
            *out.closed.entry(c.error_code.into_inner()).or_default() += 1;
        }
        let r = s.replies();
        for (k, n) in r.frames {
            *out.replies.frames.entry(k).or_default() += n;
        }
        for (k, n) in r.errors {
            *out.replies.errors.entry(k).or_default() += n;
        }
        for (k, n) in r.refused {
            *out.replies.refused.entry(k).or_default() += n;
        }
        out.replies.accepted.extend(r.accepted);
        out.replies.streams += r.streams;
        out.replies.stream_bytes += r.stream_bytes;
    }
    out
}
