//! The voice datagram loop: rate limit, decode, admit, relay; and the relay
//! step itself, shared with voice that arrives as SRTP ([`super::media`]).

use std::cell::Cell;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use ptt_codec::{TerminalId, VoiceHeader};

use crate::fanout::{self, RateLimit, Sink};
use crate::hub::Hub;
use crate::link::Link;
use crate::metrics::Metrics;

/// Reads voice datagrams from one terminal and relays the admitted ones.
pub(super) async fn run(hub: Arc<Hub>, conn: Link, terminal: TerminalId) {
    let m = hub.metrics();
    let s = &hub.config().session;
    let mut rate = RateLimit::new(s.voice_rate, s.voice_burst);
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
        relay(&hub, terminal, &header, &datagram, received);
    }
}

thread_local! {
    /// Frames relayed on this thread, for sampling the socket latency.
    static RELAYED: Cell<u64> = const { Cell::new(0) };
}

/// Relays one voice frame `terminal` sent, read at `received` and decoded
/// (`header`, and `datagram`, its DATAGRAM form), if its sender holds the
/// group's floor with this burst: to every listener in the form it
/// receives, to the other nodes of a cluster, and to the recorder.
///
/// Two latencies are measured from `received`. Every frame: until it is
/// queued in every receiver's connection or handed to the socket for SRTP
/// receivers (`relay_latency`). One relayed frame in
/// [`crate::metrics::SOCKET_SAMPLE`]: until a packet has been handed to the
/// socket for every receiver (`socket_latency`), which the network thread's
/// socket reports ([`crate::net::follow`]).
pub(super) fn relay(
    hub: &Hub,
    terminal: TerminalId,
    header: &VoiceHeader,
    datagram: &Bytes,
    received: Instant,
) {
    let m = hub.metrics();
    let Some(group) = hub.group(header.group) else {
        Metrics::add(&m.voice_unknown_group, 1);
        return;
    };
    let snapshot = group.fanout();
    if fanout::admit(&snapshot, terminal, header).is_err() {
        Metrics::add(&m.voice_not_holder, 1);
        return;
    }
    let out = fanout::relay(&snapshot, terminal, datagram);
    hub.relay_latency().record(received.elapsed());
    group.forward_voice(terminal, datagram);
    group.record(header, datagram);
    Metrics::add(&m.voice_delivered, out.delivered as u64);
    if out.failed > 0 {
        Metrics::add(&m.voice_send_failed, out.failed as u64);
    }
    let relayed = RELAYED.get() + 1;
    RELAYED.set(relayed);
    if relayed % crate::metrics::SOCKET_SAMPLE == 1 && out.delivered > 0 {
        let to = snapshot
            .listeners(terminal)
            .map(|r| match r.sink.srtp() {
                Some(route) => route.address(),
                None => r.sink.remote_address(),
            })
            .collect();
        crate::net::follow(received, to, hub.socket_latency().clone());
    }
}
