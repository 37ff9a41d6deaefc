//! The SRTP media plane end to end (issue 15): terminals of the reference
//! library offer SRTP, verify the path and talk and listen over it; a
//! DATAGRAM-only terminal in the same group hears the same burst; a
//! terminal whose media packets never get through falls back to DATAGRAMs
//! and still hears everything.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ptt_codec::{Class, TerminalId, VoiceHeader};
use ptt_terminal_sim::terminal::{self, ConnectOptions, MediaForm, Terminal};
use ptt_tests::eventually::DEADLINE;
use ptt_tests::org::*;
use ptt_tests::{eventually, TestGateway};
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};

const FRAMES: u16 = 20;
const OPUS: &[u8] = &[0xf8, 0xff, 0xfe];

/// Receives `n` voice frames, waiting up to [`DEADLINE`] for each.
async fn frames(t: &Terminal, n: usize) -> Vec<VoiceHeader> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        match tokio::time::timeout(DEADLINE, t.recv_voice()).await {
            Ok(Ok(v)) => {
                assert_eq!(v.opus(), OPUS, "the payload as sent");
                got.push(v.header);
            }
            Ok(Err(e)) => panic!("terminal {} after {} of {n} frames: {e}", t.id(), got.len()),
            Err(_) => panic!(
                "terminal {} heard {} of {n} frames within {DEADLINE:?}",
                t.id(),
                got.len()
            ),
        }
    }
    got
}

/// Waits until `t`'s voice travels in `form`.
async fn media_becomes(t: &Terminal, form: MediaForm) {
    eventually(&format!("terminal {} on {form:?}", t.id()), || {
        t.media() == form
    })
    .await;
}

/// `talker` takes the floor of UNIT_A and sends [`FRAMES`] frames, paced.
async fn talk(talker: &mut Terminal) -> u16 {
    let burst = talker.talk(UNIT_A, Class::Normal).await.unwrap();
    for seq in 0..FRAMES {
        talker
            .send_voice(UNIT_A, burst, seq, OPUS, seq + 1 == FRAMES)
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    talker.release(UNIT_A).unwrap();
    burst
}

fn assert_whole_burst(t: &Terminal, got: &[VoiceHeader], burst: u16) {
    let seqs: Vec<u16> = got.iter().map(|h| h.seq).collect();
    assert_eq!(
        seqs,
        (0..FRAMES).collect::<Vec<_>>(),
        "terminal {} heard every frame in order",
        t.id()
    );
    assert!(got
        .iter()
        .all(|h| h.group == UNIT_A && h.speaker == GUARD_A1 && h.burst == burst));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srtp_listeners_hear_every_frame_and_a_datagram_listener_the_same_burst() {
    let gw = TestGateway::start(ORG).await;
    let mut talker = gw.terminal(GUARD_A1).await;
    let mut listener = gw.terminal(GUARD_A2).await;
    let credential = gw.key.credential(TerminalId(STAFF_A3));
    let options = ConnectOptions {
        srtp: false,
        ..ConnectOptions::default()
    };
    let mut plain = Terminal::connect_with_options(
        &gw.client,
        gw.addr,
        "localhost",
        TerminalId(STAFF_A3),
        &credential,
        options,
    )
    .await
    .unwrap();
    for t in [&mut talker, &mut listener, &mut plain] {
        t.join(UNIT_A).await.unwrap();
    }
    media_becomes(&talker, MediaForm::Srtp).await;
    media_becomes(&listener, MediaForm::Srtp).await;
    assert_eq!(plain.media(), MediaForm::Datagram, "it did not offer SRTP");

    let burst = talk(&mut talker).await;
    let heard = frames(&listener, usize::from(FRAMES)).await;
    assert_whole_burst(&listener, &heard, burst);
    let heard = frames(&plain, usize::from(FRAMES)).await;
    assert_whole_burst(&plain, &heard, burst);

    let sent = talker.media_stats();
    assert_eq!(sent.srtp_sent, u64::from(FRAMES), "talked over SRTP");
    let got = listener.media_stats();
    assert_eq!(got.srtp_received, u64::from(FRAMES), "heard over SRTP");
    assert!(got.rtcp_sent >= 1 && got.rtcp_received >= 1, "{got:?}");
    assert_eq!(got.replayed + got.unauthentic + got.malformed, 0, "{got:?}");
    assert_eq!(plain.media_stats().srtp_received, 0);
    let stats = terminal::endpoint_stats(&gw.client).expect("the library's endpoint");
    assert_eq!(stats.unknown_ssrc, 0, "{stats:?}");
    assert!(stats.media_received >= u64::from(FRAMES), "{stats:?}");
    // The gateway's side: the talker's frames came in as SRTP, went out as
    // SRTP to the one SRTP listener, nothing refused.
    let m = gw.gateway.metrics();
    assert_eq!(m.media_sessions, 2, "the two that offered");
    assert_eq!(m.media_voice_in, u64::from(FRAMES));
    // SRTP out: the frames to the SRTP listener and the SRTCP answers.
    assert_eq!(m.media_packets_out, u64::from(FRAMES) + m.media_rtcp_out);
    assert_eq!((m.media_rejected, m.media_unknown_ssrc), (0, 0));
    assert_eq!(m.voice_delivered, 2 * u64::from(FRAMES));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_whose_media_never_gets_through_falls_back_and_hears_everything() {
    let gw = TestGateway::start(ORG).await;
    let mut talker = gw.terminal(GUARD_A1).await;
    // The listener's network lets QUIC through but not its media packets.
    let socket = terminal::socket("127.0.0.1:0".parse().unwrap()).unwrap();
    let blocked = Arc::new(NoMediaOut(socket));
    let endpoint = terminal::endpoint_with_socket(blocked, &gw.roots).unwrap();
    let credential = gw.key.credential(TerminalId(GUARD_A2));
    let mut listener = Terminal::connect(
        &endpoint,
        gw.addr,
        "localhost",
        TerminalId(GUARD_A2),
        &credential,
    )
    .await
    .unwrap();
    for t in [&mut talker, &mut listener] {
        t.join(UNIT_A).await.unwrap();
    }
    assert_eq!(listener.media(), MediaForm::Datagram, "verifying");
    media_becomes(&listener, MediaForm::FellBack).await;
    let probes = listener.media_stats().rtcp_sent;
    assert!(
        probes == 4,
        "probes at 0, 250, 750 and 1750 ms, then the fallback at 3 s: {probes}"
    );
    media_becomes(&talker, MediaForm::Srtp).await;

    let burst = talk(&mut talker).await;
    let heard = frames(&listener, usize::from(FRAMES)).await;
    assert_whole_burst(&listener, &heard, burst);
    let got = listener.media_stats();
    assert_eq!(
        got.srtp_received, 0,
        "the gateway never latched it: {got:?}"
    );
    assert_eq!(got.rtcp_received, 0);
    assert_eq!(talker.media_stats().srtp_sent, u64::from(FRAMES));
    let m = gw.gateway.metrics();
    assert_eq!(m.media_fallbacks, 1, "the listener told the gateway");
    assert_eq!(
        m.media_packets_out, m.media_rtcp_out,
        "no voice sent to an unverified path, only the talker's answers"
    );
    assert_eq!(m.media_voice_in, u64::from(FRAMES));
}

/// A socket that drops every media packet it is asked to send (first byte
/// 128-191) and passes QUIC: a path that blocks the media plane.
struct NoMediaOut(Arc<dyn AsyncUdpSocket>);

impl fmt::Debug for NoMediaOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NoMediaOut")
    }
}

impl AsyncUdpSocket for NoMediaOut {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.0.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        if matches!(transmit.contents.first(), Some(128..=191)) {
            return Ok(());
        }
        self.0.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.0.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.0.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.0.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.0.may_fragment()
    }
}
