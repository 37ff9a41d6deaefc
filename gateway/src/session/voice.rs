//! The voice datagram loop: rate limit, decode, admit, relay.

use std::sync::Arc;
use std::time::Instant;

use crate::link::Link;
use ptt_codec::{TerminalId, VoiceHeader};

use crate::fanout::{self, RateLimit};
use crate::hub::Hub;
use crate::metrics::Metrics;

/// Reads voice datagrams from one terminal and relays the admitted ones.
///
/// Two latencies are measured from the moment the datagram is read from
/// the connection. Every frame: until it is queued in every receiver's
/// connection (`relay_latency`). One relayed frame in
/// [`crate::metrics::SOCKET_SAMPLE`]: until a packet has been handed to the
/// socket for every receiver (`socket_latency`), which the network thread's
/// socket reports ([`crate::net::follow`]): the receivers' connection
/// drivers, woken by the relay, build and send those packets once the
/// thread gets to them.
pub(super) async fn run(hub: Arc<Hub>, conn: Link, terminal: TerminalId) {
    let m = hub.metrics();
    let s = &hub.config().session;
    let mut rate = RateLimit::new(s.voice_rate, s.voice_burst);
    let mut relayed = 0u64;
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
        let Some(group) = hub.group(header.group) else {
            Metrics::add(&m.voice_unknown_group, 1);
            continue;
        };
        let snapshot = group.fanout();
        if fanout::admit(&snapshot, terminal, &header).is_err() {
            Metrics::add(&m.voice_not_holder, 1);
            continue;
        }
        let out = fanout::relay(&snapshot, terminal, &datagram);
        hub.relay_latency().record(received.elapsed());
        group.forward_voice(terminal, &datagram);
        group.record(&header, &datagram);
        Metrics::add(&m.voice_delivered, out.delivered as u64);
        if out.failed > 0 {
            Metrics::add(&m.voice_send_failed, out.failed as u64);
        }
        relayed += 1;
        if relayed % crate::metrics::SOCKET_SAMPLE == 1 && out.delivered > 0 {
            let to = snapshot
                .listeners(terminal)
                .map(|r| r.sink.remote_address())
                .collect();
            crate::net::follow(received, to, hub.socket_latency().clone());
        }
    }
}
