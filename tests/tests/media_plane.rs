//! The gateway's media plane (issue 15) from the wire: the real gateway
//! process, terminals made of a raw QUIC connection (Hello with the SRTP
//! offer, the keys from the TLS exporter) and a plain UDP socket each for
//! their media, as a vendor's implementation of docs/PROTOCOL.md would be.
//!
//! The media sockets are not the QUIC sockets, which the gateway learns by
//! authenticated latching: the first packet that authenticates moves a
//! terminal's media to where it came from.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ptt_codec::control::{split_frame, VERSION};
use ptt_codec::srtp::{self, rtcp, voice, MasterKeys, Role};
use ptt_codec::{
    Class, ClientMsg, GroupId, MediaAnswer, MediaOffer, ServerMsg, TerminalId, VoiceHeader,
};
use ptt_tests::hostile::GatewayProcess;
use tokio::io::AsyncReadExt;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

const UNIT: GroupId = GroupId(5);
const WAIT: Duration = Duration::from_secs(5);

/// A terminal of raw parts: its QUIC connection, control stream, and (if
/// answered) its media keys and socket.
struct Raw {
    id: u32,
    conn: quinn::Connection,
    send: quinn::SendStream,
    replies: mpsc::UnboundedReceiver<ServerMsg>,
    media: Option<Media>,
    _endpoint: quinn::Endpoint,
}

struct Media {
    answer: MediaAnswer,
    up: srtp::Sender,
    down: srtp::Receiver,
    socket: UdpSocket,
    seq: u16,
}

impl Raw {
    async fn connect(gw: &GatewayProcess, id: u32, offer: MediaOffer) -> Raw {
        let endpoint = gw.endpoint();
        let conn = endpoint
            .connect(gw.addr, "localhost")
            .expect("connecting")
            .await
            .expect("handshake");
        let (mut send, mut recv) = conn.open_bi().await.expect("control stream");
        let mut hello = BytesMut::new();
        ClientMsg::Hello {
            version: VERSION,
            terminal: TerminalId(id),
            credential: Bytes::copy_from_slice(&gw.credential(id)),
            media: offer,
        }
        .encode(&mut hello);
        send.write_all(&hello).await.expect("Hello");
        let (tx, mut replies) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut buf = BytesMut::new();
            loop {
                while let Ok(frame) = split_frame(&buf) {
                    let len = frame.len();
                    let msg = ServerMsg::decode(frame).expect("a valid frame");
                    let _ = buf.split_to(len);
                    if tx.send(msg).is_err() {
                        return;
                    }
                }
                match recv.read_buf(&mut buf).await {
                    Ok(n) if n > 0 => {}
                    _ => return,
                }
            }
        });
        let answer = match tokio::time::timeout(WAIT, replies.recv()).await {
            Ok(Some(ServerMsg::Welcome { media, .. })) => media,
            other => panic!("{id}: expected Welcome, got {other:?}"),
        };
        let media = match answer {
            Some(answer) => {
                let mut exported = [0u8; srtp::EXPORTER_LEN];
                conn.export_keying_material(
                    &mut exported,
                    srtp::EXPORTER_LABEL,
                    srtp::EXPORTER_CONTEXT,
                )
                .expect("exporter");
                let keys = MasterKeys::from_exporter(&exported).expect("56 bytes");
                Some(Media {
                    answer,
                    up: srtp::Sender::new(&keys.session(Role::Client.sending()), answer.ssrc),
                    down: srtp::Receiver::new(&keys.session(Role::Client.receiving()), answer.ssrc),
                    socket: UdpSocket::bind("127.0.0.1:0").await.expect("media socket"),
                    seq: 100,
                })
            }
            None => None,
        };
        Raw {
            id,
            conn,
            send,
            replies,
            media,
            _endpoint: endpoint,
        }
    }

    async fn send(&mut self, msg: ClientMsg) {
        let mut out = BytesMut::new();
        msg.encode(&mut out);
        self.send.write_all(&out).await.expect("control write");
    }

    async fn expect(&mut self, what: &str, mut ok: impl FnMut(&ServerMsg) -> bool) -> ServerMsg {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.replies.recv()).await {
                Ok(Some(m)) if ok(&m) => return m,
                Ok(Some(_)) => {}
                other => panic!("{}: no {what}: {other:?}", self.id),
            }
        }
    }

    async fn join(&mut self) {
        self.send(ClientMsg::Join { group: UNIT }).await;
        self.expect("Joined", |m| matches!(m, ServerMsg::Joined { .. }))
            .await;
    }

    /// Sends an SRTCP receiver report from `socket` (its media socket if
    /// `None`) and waits for the gateway's answer there.
    async fn probe(&mut self, gw: SocketAddr, socket: Option<&UdpSocket>) {
        let media = self.media.as_mut().expect("answered SRTP");
        let mut buf = [0u8; 128];
        let len = rtcp::write_receiver_report(media.answer.ssrc, &[], &mut buf).unwrap();
        let len = media.up.protect_rtcp(&mut buf, len).unwrap();
        let socket = socket.unwrap_or(&media.socket);
        socket.send_to(&buf[..len], gw).await.unwrap();
        let mut got = [0u8; 1500];
        let n = tokio::time::timeout(WAIT, socket.recv(&mut got))
            .await
            .unwrap_or_else(|_| panic!("{}: no SRTCP answer", self.id))
            .unwrap();
        assert!(srtp::is_rtcp(&got[..n]), "the answer is RTCP");
        media
            .down
            .unprotect_rtcp(&mut got[..n])
            .expect("the answer authenticates with the downlink keys");
    }

    /// Sends voice frame `seq` of `burst` as SRTP from its media socket.
    async fn talk(&mut self, gw: SocketAddr, burst: u16, seq: u16) -> Vec<u8> {
        let media = self.media.as_mut().expect("answered SRTP");
        media.seq += 1;
        let frame = VoiceHeader {
            group: UNIT,
            speaker: 0,
            burst,
            seq,
            flags: 0,
        };
        let rtp = voice::Rtp {
            ssrc: media.answer.ssrc,
            sequence: media.seq,
            timestamp: u32::from(seq) * voice::TICKS_PER_FRAME,
        };
        let mut buf = [0u8; 256];
        let opus = [0xf8, seq as u8, 0xfe];
        let len = voice::write(&frame, rtp, None, &opus, &mut buf).unwrap();
        let len = media.up.protect(&mut buf, len).unwrap();
        media.socket.send_to(&buf[..len], gw).await.unwrap();
        buf[..len].to_vec()
    }
}

/// Receives SRTP voice on `socket` until `n` frames came or nothing came
/// for a while; returns the frames.
async fn hear(socket: &UdpSocket, down: &mut srtp::Receiver, n: usize) -> Vec<VoiceHeader> {
    let mut heard = Vec::new();
    let mut buf = [0u8; 1500];
    while heard.len() < n {
        let Ok(Ok(len)) =
            tokio::time::timeout(Duration::from_millis(1500), socket.recv(&mut buf)).await
        else {
            break;
        };
        let got = down
            .unprotect(&mut buf[..len])
            .expect("downlink voice authenticates");
        let (h, opus) = voice::read(&got, &buf[..len]).expect("a voice packet");
        assert_eq!(opus[0], 0xf8);
        assert_eq!(opus[1], h.seq as u8, "the Opus packet of that frame");
        heard.push(h);
    }
    heard
}

/// Receives voice datagrams on `conn` until `n` came or none for a while.
async fn hear_datagrams(conn: &quinn::Connection, n: usize) -> Vec<VoiceHeader> {
    let mut heard = Vec::new();
    while heard.len() < n {
        let Ok(Ok(d)) =
            tokio::time::timeout(Duration::from_millis(1500), conn.read_datagram()).await
        else {
            break;
        };
        heard.push(VoiceHeader::decode(&d).expect("voice datagram").0);
    }
    heard
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srtp_voice_is_relayed_to_srtp_and_datagram_listeners_and_nothing_else_gets_through() {
    let mut gw = GatewayProcess::start("").await;
    let addr = gw.addr;
    let mut talker = Raw::connect(&gw, 502, MediaOffer::SRTP).await;
    let mut srtp_listener = Raw::connect(&gw, 503, MediaOffer::SRTP).await;
    let mut datagram_listener = Raw::connect(&gw, 504, MediaOffer::NONE).await;
    let mut intruder = Raw::connect(&gw, 501, MediaOffer::SRTP).await;
    assert!(datagram_listener.media.is_none(), "no offer, no answer");
    let ssrcs = [&talker, &srtp_listener, &intruder].map(|t| t.media.as_ref().unwrap().answer.ssrc);
    assert!(ssrcs[0] != ssrcs[1] && ssrcs[1] != ssrcs[2] && ssrcs[0] != ssrcs[2]);
    for t in [
        &mut talker,
        &mut srtp_listener,
        &mut datagram_listener,
        &mut intruder,
    ] {
        t.join().await;
    }

    // Each proves its media path; the gateway answers on the downlink keys.
    talker.probe(addr, None).await;
    srtp_listener.probe(addr, None).await;
    intruder.probe(addr, None).await;

    talker
        .send(ClientMsg::FloorRequest {
            group: UNIT,
            class: Class::Normal,
        })
        .await;
    let burst = match talker
        .expect("FloorGranted", |m| {
            matches!(m, ServerMsg::FloorGranted { .. })
        })
        .await
    {
        ServerMsg::FloorGranted { burst, .. } => burst,
        _ => unreachable!(),
    };

    // Twenty frames of SRTP from the holder.
    let mut sent = Vec::new();
    for seq in 0..20 {
        sent.push(talker.talk(addr, burst, seq).await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let media = srtp_listener.media.as_mut().unwrap();
    let heard = hear(&media.socket, &mut media.down, 20).await;
    assert_eq!(heard.len(), 20, "every frame over SRTP: {heard:?}");
    for (i, h) in heard.iter().enumerate() {
        assert_eq!(
            (h.group, h.speaker, h.burst, h.seq),
            (UNIT, 502, burst, i as u16),
            "speaker stamped from the CSRC, fields from the extension"
        );
    }
    let heard = hear_datagrams(&datagram_listener.conn, 20).await;
    assert_eq!(
        heard.len(),
        20,
        "the DATAGRAM listener hears the same burst"
    );
    assert!(heard.iter().all(|h| h.speaker == 502 && h.burst == burst));

    // Hostile: a replayed packet from another address, a forged one with the
    // talker's SSRC, and the intruder talking without the floor.
    let attacker = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    attacker.send_to(&sent[3], addr).await.unwrap();
    let mut forged = sent[4].clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    attacker.send_to(&forged, addr).await.unwrap();
    attacker.send_to(&[0x80, 0, 0], addr).await.unwrap();
    intruder.talk(addr, burst, 0).await;
    intruder.talk(addr, 1, 0).await;
    let media = srtp_listener.media.as_mut().unwrap();
    let heard = hear(&media.socket, &mut media.down, 1).await;
    assert!(heard.is_empty(), "nothing got through: {heard:?}");

    // The talker's media stays where it was (the replay did not move it):
    // the next frames still reach the listener, and still only the holder's.
    for seq in 20..25 {
        talker.talk(addr, burst, seq).await;
    }
    let heard = hear(&media.socket, &mut media.down, 5).await;
    assert_eq!(heard.len(), 5);

    // The listener moves to another socket (a new network): its first
    // authenticated packet from there moves its media.
    let moved = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    srtp_listener.probe(addr, Some(&moved)).await;
    for seq in 25..30 {
        talker.talk(addr, burst, seq).await;
    }
    let media = srtp_listener.media.as_mut().unwrap();
    let heard = hear(&moved, &mut media.down, 5).await;
    assert_eq!(heard.len(), 5, "voice follows the authenticated move");

    // It asks to fall back: voice comes as DATAGRAMs from now on.
    srtp_listener
        .send(ClientMsg::MediaMode { srtp: false })
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    for seq in 30..35 {
        talker.talk(addr, burst, seq).await;
    }
    let heard = hear_datagrams(&srtp_listener.conn, 5).await;
    assert_eq!(heard.len(), 5, "after the fallback, DATAGRAMs");

    let counters = gw.stop().await;
    let c = |name: &str| counters[name].as_u64().unwrap_or_else(|| panic!("{name}"));
    assert_eq!(c("media_sessions"), 3);
    assert_eq!(c("media_voice_in"), 20 + 2 + 5 + 5 + 5);
    assert!(c("media_rejected") >= 2, "the replay and the forgery");
    assert!(c("media_unknown_ssrc") >= 1, "the truncated packet");
    assert!(c("voice_not_holder") >= 2, "the intruder's frames");
    assert_eq!(
        c("media_address_moved"),
        3 + 1,
        "three first latches, one move"
    );
    assert_eq!(c("media_fallbacks"), 1);
    assert!(c("media_packets_out") >= 30 + 4);
    assert_eq!(c("media_send_dropped"), 0);
}
