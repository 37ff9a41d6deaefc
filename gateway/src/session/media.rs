//! Media packets that arrive on the QUIC port (SRTP voice and SRTCP
//! reports), from the terminals the gateway answered SRTP: authenticated,
//! then judged exactly as voice datagrams are (docs/PROTOCOL.md, "Media
//! plane: SRTP").
//!
//! Runs inside the network thread's socket receive ([`crate::net`]): a
//! talker's packet is decrypted once, admitted by the floor, and relayed to
//! every listener before the socket reads on. Nothing is answered to a
//! packet that does not authenticate, and only an authenticated packet can
//! move a terminal's media address or prove its path.

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Instant;

use ptt_codec::srtp::{self, voice};
use ptt_codec::{MediaAnswer, MediaOffer, TerminalId, VoiceHeader};
use ptt_gateway_core::fanout::RateLimit;

use crate::hub::Hub;
use crate::link::Link;
use crate::media::Route;
use crate::metrics::Metrics;
use crate::net::MediaHandler;

/// The handler of the port's media packets for the gateway of `hub`.
pub(crate) fn media_handler(hub: &Arc<Hub>) -> Arc<dyn MediaHandler> {
    Arc::new(Uplink {
        hub: Arc::downgrade(hub),
    })
}

/// Answers a terminal's SRTP offer: a route keyed from its connection, if it
/// offered SRTP, is a native QUIC terminal (a browser cannot send raw UDP),
/// and `transport.srtp` is on. Call it before `Welcome`, which carries the
/// answer.
pub(super) fn answer(
    hub: &Hub,
    conn: &Link,
    terminal: TerminalId,
    offer: MediaOffer,
) -> Option<(Arc<Route>, MediaAnswer)> {
    if !offer.srtp() || conn.is_web() || !hub.config().transport.srtp {
        return None;
    }
    let mut exported = [0u8; srtp::EXPORTER_LEN];
    conn.quic()
        .export_keying_material(&mut exported, srtp::EXPORTER_LABEL, srtp::EXPORTER_CONTEXT)
        .ok()?;
    let s = &hub.config().session;
    let route = hub.media().open(
        terminal,
        &exported,
        conn.remote_address(),
        RateLimit::new(s.voice_rate, s.voice_burst),
    )?;
    conn.attach_media(route.clone());
    Metrics::add(&hub.metrics().media_sessions, 1);
    let answer = MediaAnswer { ssrc: route.ssrc() };
    Some((route, answer))
}

struct Uplink {
    hub: Weak<Hub>,
}

impl MediaHandler for Uplink {
    fn packet(&self, from: SocketAddr, packet: &mut [u8]) {
        let Some(hub) = self.hub.upgrade() else {
            return;
        };
        let m = hub.metrics();
        Metrics::add(&m.media_packets_in, 1);
        let rtcp = srtp::is_rtcp(packet);
        // The sender's SSRC: RTP bytes 8..12, RTCP bytes 4..8.
        let at = if rtcp { 4 } else { 8 };
        let route = packet
            .get(at..at + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .and_then(|ssrc| hub.media().get(ssrc));
        let Some(route) = route else {
            Metrics::add(&m.media_unknown_ssrc, 1);
            return;
        };
        let received = Instant::now();
        if rtcp {
            report(&hub, &route, from, packet, received);
        } else {
            voice(&hub, &route, from, packet, received);
        }
    }
}

/// An SRTCP packet: the terminal's probe or keep-alive, with its reception
/// report. Answered with one report on its uplink, to where it came from.
fn report(hub: &Hub, route: &Route, from: SocketAddr, packet: &mut [u8], received: Instant) {
    let m = hub.metrics();
    let mut uplink = route.uplink();
    if uplink.receiver.unprotect_rtcp(packet).is_err() {
        drop(uplink);
        Metrics::add(&m.media_rejected, 1);
        return;
    }
    let allowed = uplink.rate.allow(received);
    let block = uplink.reception.report(route.ssrc());
    drop(uplink);
    Metrics::add(&m.media_rtcp_in, 1);
    moved(hub, route, from);
    if !allowed {
        Metrics::add(&m.voice_rate_limited, 1);
        return;
    }
    if route.answer(from, block) {
        Metrics::add(&m.media_rtcp_out, 1);
    }
}

/// An SRTP voice packet: decrypted once, then relayed as a voice datagram
/// would be.
fn voice(hub: &Hub, route: &Route, from: SocketAddr, packet: &mut [u8], received: Instant) {
    let m = hub.metrics();
    let mut uplink = route.uplink();
    let Ok(unprotected) = uplink.receiver.unprotect(packet) else {
        drop(uplink);
        Metrics::add(&m.media_rejected, 1);
        return;
    };
    let allowed = uplink.rate.allow(received);
    uplink.reception.on_packet(
        unprotected.index,
        unprotected.header.timestamp,
        route.clock_at(received),
    );
    drop(uplink);
    moved(hub, route, from);
    Metrics::add(&m.media_voice_in, 1);
    Metrics::add(&m.voice_in, 1);
    if !allowed {
        Metrics::add(&m.voice_rate_limited, 1);
        return;
    }
    let Ok((header, opus)) = voice::read(&unprotected, packet) else {
        Metrics::add(&m.voice_malformed, 1);
        return;
    };
    // The relay stamps the speaker; a terminal's CSRC is never trusted.
    let header = VoiceHeader {
        speaker: 0,
        ..header
    };
    let datagram = header.to_datagram(opus);
    super::voice::relay(hub, route.terminal(), &header, &datagram, received);
}

/// Notes an authenticated packet of `route` from `from`.
fn moved(hub: &Hub, route: &Route, from: SocketAddr) {
    let before = route.address();
    if route.authenticated(from) {
        Metrics::add(&hub.metrics().media_address_moved, 1);
        tracing::debug!(terminal = %route.terminal(), %before, now = %from, "media address moved");
    }
}
