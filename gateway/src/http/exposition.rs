//! `/metrics`: the gateway's counters, gauges and latency histograms in the
//! Prometheus text exposition format (OpenMetrics), encoded by
//! `prometheus-client`.
//!
//! Nothing here runs on the voice path: the counters stay the relaxed
//! atomics of [`crate::metrics`] and are read on each scrape, as a
//! `prometheus_client` collector; gauges walk the registry and groups then.
//! Names follow Prometheus conventions: every name starts `ptt_`, counters
//! end `_total`, times are `_seconds`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::hub::Hub;
use crate::metrics::RelayLatency;

/// Histogram bucket bounds, microseconds: 50 us to 10 s, fine around the
/// 0.2-1 ms a healthy relay shows at the city's peak, coarse up to the
/// seconds a store call under attack once took.
const LATENCY_BOUNDS_US: [u64; 14] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 250_000, 1_000_000, 2_500_000,
    10_000_000,
];

/// The values among [`crate::metrics::Metrics`] that are gauges (set to a
/// reading), not counters.
const GAUGES: &[&str] = &["disk_free_bytes"];

/// The registry `/metrics` encodes: one collector over the hub.
pub(super) fn registry(hub: Arc<Hub>) -> Registry {
    let mut registry = Registry::with_prefix("ptt");
    registry.register_collector(Box::new(HubCollector(hub)));
    registry
}

/// Encodes `registry` as the body of a `/metrics` answer.
pub(super) fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::with_capacity(16 * 1024);
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}

/// Reads the hub on each scrape.
#[derive(Debug)]
struct HubCollector(Arc<Hub>);

impl Collector for HubCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let hub = &self.0;
        let mut result = Ok(());
        hub.metrics().snapshot().each(|name, help, value| {
            if result.is_ok() {
                result = if GAUGES.contains(&name) {
                    gauge(&mut encoder, name, help.trim(), value as i64)
                } else {
                    counter(&mut encoder, name, help.trim(), value)
                };
            }
        });
        result?;

        // Sessions online by role.
        let mut by_role: std::collections::BTreeMap<&'static str, i64> = Default::default();
        for (terminal, _, _) in hub.registry().online() {
            let role = hub
                .org()
                .terminal(terminal)
                .map_or("unknown", |t| role_name(t.role));
            *by_role.entry(role).or_default() += 1;
        }
        let mut family = encoder.encode_descriptor(
            "sessions",
            "Terminals online now, by role.",
            None,
            MetricType::Gauge,
        )?;
        for (role, n) in by_role {
            let labels = [("role", role)];
            ConstGauge::new(n).encode(family.encode_family(&labels)?)?;
        }

        let (mut talking, mut queued) = (0i64, 0i64);
        for id in hub.org().groups() {
            if let Some(g) = hub.group(id) {
                let (holder, queue) = g.floor_view();
                talking += i64::from(holder.is_some());
                queued += queue.len() as i64;
            }
        }
        gauge(
            &mut encoder,
            "groups_talking",
            "Groups where someone holds the floor now.",
            talking,
        )?;
        gauge(
            &mut encoder,
            "floor_queued",
            "Terminals waiting for a floor, all groups.",
            queued,
        )?;
        let slots = hub.config().transport.max_handshakes;
        let free = hub.handshakes().available_permits();
        gauge(
            &mut encoder,
            "handshakes_in_progress",
            "QUIC handshakes holding a slot now (of transport.max_handshakes).",
            slots.saturating_sub(free) as i64,
        )?;
        let uptime = hub.status().started.elapsed().as_secs_f64();
        let m = encoder.encode_descriptor(
            "uptime",
            "Time since the gateway started.",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        ConstGauge::new(uptime).encode(m)?;
        gauge(
            &mut encoder,
            "accepting",
            "1 while the QUIC endpoint accepts connections.",
            i64::from(hub.status().accepting.load(Ordering::Relaxed)),
        )?;

        histogram(
            &mut encoder,
            "relay_latency",
            "Voice frame read to queued in every receiver's connection.",
            hub.relay_latency(),
        )?;
        histogram(
            &mut encoder,
            "store_call_latency",
            "A store call from asked to answered: waiting for a blocking thread and the database's lock included.",
            hub.desk().latency(),
        )?;
        let snapshot = hub.metrics().snapshot();
        gauge(
            &mut encoder,
            "recorder_queue_depth",
            "Frames waiting in the recorder's queue (recording.queue).",
            snapshot
                .recorder_frames_queued
                .saturating_sub(snapshot.recorder_frames_taken) as i64,
        )?;
        histogram(
            &mut encoder,
            "socket_latency",
            "Voice frame read to every receiver's packet handed to the socket (sampled).",
            hub.socket_latency(),
        )?;
        Ok(())
    }
}

fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(value).encode(m)
}

fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(m)
}

/// A latency histogram in seconds, from the hdrhistogram the relay keeps.
fn histogram(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    latency: &RelayLatency,
) -> Result<(), std::fmt::Error> {
    let (sum_us, count, cumulative) = latency.cumulative(&LATENCY_BOUNDS_US);
    // The encoder takes each bucket's own count and accumulates them.
    let mut buckets = Vec::with_capacity(LATENCY_BOUNDS_US.len() + 1);
    let mut below = 0;
    for (bound, at_or_under) in LATENCY_BOUNDS_US.iter().zip(cumulative) {
        buckets.push((*bound as f64 / 1e6, at_or_under - below));
        below = at_or_under;
    }
    buckets.push((f64::MAX, count - below));
    let mut m =
        encoder.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
    m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
        sum_us / 1e6,
        count,
        &buckets,
        None,
    )
}

/// A role's name as the org file spells it.
pub(super) fn role_name(role: crate::org::Role) -> &'static str {
    use crate::org::Role;
    match role {
        Role::Police => "police",
        Role::AuxiliaryPolice => "auxiliary_police",
        Role::SecurityGuard => "security_guard",
        Role::Staff => "staff",
        Role::Volunteer => "volunteer",
        Role::Dispatcher => "dispatcher",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_gauge_is_named_as_one_and_every_counter_is_not() {
        let mut seen = Vec::new();
        crate::metrics::Metrics::default()
            .snapshot()
            .each(|name, help, _| {
                let says_gauge = help.trim().starts_with("A gauge");
                assert_eq!(GAUGES.contains(&name), says_gauge, "{name}: {help}");
                seen.push(name);
            });
        for g in GAUGES {
            assert!(seen.contains(g), "{g} is not a metric");
        }
    }
}
