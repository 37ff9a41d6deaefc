//! Counters of the gateway, cheap enough for the per-frame path.
//!
//! Plain relaxed atomics: they are read for reports and tests, never used to
//! synchronise anything.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($( $(#[doc = $doc:literal])* $name:ident, )+) => {
        /// Gateway-wide counters. Increment with [`Metrics::add`]; read a
        /// consistent-enough copy with [`Metrics::snapshot`].
        #[derive(Debug, Default)]
        pub struct Metrics {
            $( $(#[doc = $doc])* pub $name: AtomicU64, )+
            /// Talk key pressed to `FloorGranted` sent, every grant: near
            /// zero when the floor was free, the queue's wait when not.
            pub floor_grant_latency: RelayLatency,
        }

        /// A copy of [`Metrics`] at one moment.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
        pub struct Snapshot {
            $( $(#[doc = $doc])* pub $name: u64, )+
        }

        impl Metrics {
            /// Reads every counter.
            pub fn snapshot(&self) -> Snapshot {
                Snapshot { $( $name: self.$name.load(Ordering::Relaxed), )+ }
            }
        }

        impl Snapshot {
            /// Calls `f` with every counter's name, its documentation (the
            /// doc comment above, as one line) and its value, in declaration
            /// order: what the Prometheus exposition is made from.
            pub fn each(&self, mut f: impl FnMut(&'static str, &'static str, u64)) {
                $( f(stringify!($name), concat!($($doc),*), self.$name); )+
            }
        }
    };
}

counters! {
    /// Connections that completed the QUIC handshake.
    connections_accepted,
    /// Handshakes that resumed a TLS session from a ticket the gateway
    /// issued (no certificate signature), out of `connections_accepted`.
    tls_tickets_accepted,
    /// Terminals that authenticated.
    sessions_authenticated,
    /// `Hello`s refused: unknown terminal or wrong credential.
    auth_failures,
    /// Sessions closed because the same terminal connected again.
    sessions_replaced,
    /// Sessions that got their groups back after a reconnect.
    sessions_resumed,
    /// Control frames received.
    control_frames,
    /// Control frames that could not be decoded.
    control_malformed,
    /// Voice datagrams received.
    voice_in,
    /// Voice datagrams handed to receivers' connections (one per receiver).
    voice_delivered,
    /// DATAGRAM frames the gateway's connections actually sent, counted
    /// when each session ends. `voice_delivered` minus this is what quinn
    /// dropped (oldest first) because a receiver's path fell behind.
    voice_datagrams_sent,
    /// Connection attempts dropped after waiting longer than
    /// `transport.handshake_queue_ms` for a handshake slot.
    handshakes_expired,
    /// Handshakes abandoned after `transport.handshake_timeout_ms`.
    handshakes_timed_out,
    /// ACK frames the gateway's connections received, counted when each
    /// session ends: listeners acknowledge voice (see
    /// `transport.ack_every_packets`).
    acks_received,
    /// Voice datagrams that could not be decoded.
    voice_malformed,
    /// Voice from a terminal that does not hold the floor of that group.
    voice_not_holder,
    /// Voice for a group that does not exist or the sender has not joined.
    voice_unknown_group,
    /// Voice over the per-connection rate limit.
    voice_rate_limited,
    /// Deliveries refused by a receiver's connection (closed, or datagrams
    /// unsupported by the peer).
    voice_send_failed,
    /// Floor grants.
    floor_granted,
    /// Floor denials.
    floor_denied,
    /// Floor revocations (pre-emption or talk-time limit).
    floor_revoked,
    /// `Presence` messages not queued to a member that fell behind
    /// reading (its queue half full); `Joined.online` stays authoritative.
    presence_dropped,
    /// `Join`s and `Leave`s refused BUSY over `session.join_rate`.
    joins_rate_limited,
    /// Sessions closed RATE_LIMITED after `session.join_max_refused`
    /// refused joins and leaves in a row.
    joins_abuse_closed,
    /// Sessions closed TOO_SLOW: their own queue of control messages
    /// (`session.outbox`) overflowed.
    too_slow_closed,
    /// SOS presses that refreshed the terminal's active SOS instead of
    /// raising another (one active SOS per terminal).
    sos_refreshed,
    /// Floor requests at emergency class refused: the role may not claim
    /// it (`policy.emergency_roles`).
    floor_emergency_refused,
    /// Alert deliveries abandoned because the recipient did not read them
    /// within `delivery.write_timeout_ms` (kept for its reconnect).
    alert_delivery_timed_out,
    /// Alert deliveries not attempted because the recipient already had
    /// `delivery.per_terminal` in flight for `delivery.write_timeout_ms`
    /// (kept for its reconnect).
    alert_delivery_recipient_busy,
    /// Live receipt updates not sent to an issuer that fell behind (its
    /// `AlertStatus` query still has every receipt).
    receipt_updates_dropped,
    /// Attachment references dropped because an alert named the same
    /// attachment more than once.
    attachment_refs_deduplicated,
    /// Photo streams (fetches and pushes) that waited for a transfer slot
    /// (`attachments.transfers_per_terminal`, `attachments.transfers`).
    attachment_transfers_waited,
    /// Fetches refused because the terminal had `attachments.queued_fetches`
    /// waiting already.
    attachment_fetches_refused,
    /// Photo streams reset because the reader took nothing for
    /// `attachments.stall_timeout_ms`.
    attachment_streams_stalled,
    /// Uploads refused over the terminal's quota of unused uploads.
    attachment_uploads_over_quota,
    /// Uploads refused to keep the data directory's disk reserve.
    attachment_uploads_disk_reserve,
    /// Unused uploads deleted after `attachments.unused_expiry_s`.
    attachments_expired,
    /// Attachments deleted after `attachments.retention_days`.
    attachments_retired,
    /// `Position` frames refused with BUSY: over `limits.rates.position`.
    rate_limited_positions,
    /// `AlertSend` frames over `limits.rates.alert`: not refused, the
    /// control stream was read on only once the alert could be handled.
    rate_limited_alerts,
    /// `AlertQuery` frames refused with BUSY: over `limits.rates.alert_query`.
    rate_limited_alert_queries,
    /// `DrillReportQuery` frames refused with BUSY: over
    /// `limits.rates.drill_query`.
    rate_limited_drill_queries,
    /// `SosCancel` frames refused with BUSY: over `limits.rates.sos_cancel`.
    rate_limited_sos_cancels,
    /// `WatchPositions` frames refused with BUSY: over `limits.rates.watch`.
    rate_limited_watches,
    /// `AlertReceipt` frames over `limits.rates.receipt`, or with
    /// `limits.tasks` in flight: not refused, the control stream was read
    /// only once the receipt could be handled.
    receipts_throttled,
    /// Frames refused with BUSY because their terminal had `limits.tasks`
    /// operations in flight.
    tasks_busy,
    /// Sessions closed with RATE_LIMITED: more than `limits.strikes` BUSY
    /// refusals within `limits.strike_window_ms`.
    sessions_rate_limited,
    /// `Hello`s with a valid credential refused REVOKED: the terminal's
    /// credential is revoked (`ptt-gateway revoke`).
    hello_revoked,
    /// Live sessions closed REVOKED when their terminal was revoked.
    sessions_revoked,
    /// Alerts deleted after `retention.alert_days` or `retention.sos_days`.
    alerts_retired,
    /// Recipient rows (receipts) deleted with their alerts.
    receipts_retired,
    /// Floor audit rows deleted after `retention.audit_days`.
    audit_rows_retired,
    /// Times the data directory's free space fell under the reserve
    /// (`attachments.disk_reserve_bytes` plus one upload): the disk alarm
    /// went on.
    disk_low_alarms,
    /// A gauge, not a counter: the data directory's free bytes at the
    /// disk watch's last reading (`disk.watch_interval_s`).
    disk_free_bytes,
    /// Writes of alerts, SOS, receipts or uploads that SQLite refused
    /// because the disk (or the database's page limit) was full; each was
    /// answered `STORAGE_FULL`.
    store_full,
    /// Uploads abandoned mid-stream (ended short, carried more than they
    /// announced, reset, or stalled for `attachments.stall_timeout_ms`):
    /// their row and bytes were deleted.
    attachment_uploads_abandoned,
    /// Relayed frames left out of their recording because the recorder's
    /// queue (`recording.queue`) was full: the recorder fell behind. The
    /// voice path never waits for it; the frames were relayed.
    recorder_frames_dropped,
    /// Alerts stored (dispatches, notices, reports, drills, SOS).
    alerts_created,
    /// Alert deliveries handed over: one per recipient that got it.
    alerts_delivered,
    /// Receipts that moved a recipient on, by status: it has the alert.
    receipts_delivered,
    /// Receipts: a person opened the alert.
    receipts_read,
    /// Receipts: the recipient accepted the task.
    receipts_accepted,
    /// Receipts: the recipient declined the task.
    receipts_rejected,
    /// Receipts: the recipient is on the scene.
    receipts_arrived,
    /// Receipts: the task is done.
    receipts_resolved,
    /// Relayed frames handed to the recorder's queue; minus
    /// `recorder_frames_taken`, the queue's depth now.
    recorder_frames_queued,
    /// Frames the recorder took from its queue.
    recorder_frames_taken,
    /// Relayed frames the recorder left out because they came after a
    /// later frame of their burst, or after their burst's file was closed.
    recorder_frames_late,
    /// Bursts recorded and indexed.
    recordings_written,
    /// Recording files or index rows that could not be written (disk
    /// full, permissions): each is logged.
    recorder_errors,
    /// Recordings deleted by `recording.retention_days`,
    /// `recording.sos_retention_days` or `recording.disk_budget_bytes`.
    recordings_deleted,
    /// Bursts not recorded because the recordings' file system had less
    /// than `recording.disk_reserve_bytes` free when they started.
    recordings_refused_disk_reserve,
    /// Connection attempts from unproven addresses answered with a QUIC
    /// Retry because `transport.retry_from` attempts were in handshake or
    /// waiting.
    handshakes_retried,
    /// Connection attempts from unproven addresses answered with a QUIC
    /// Retry because their address had `transport.handshakes_per_address`
    /// unproven attempts in handshake or waiting.
    handshakes_retried_address,
    /// Connection attempts with a valid Retry token (proven addresses)
    /// dropped unanswered: their address had
    /// `transport.handshakes_per_proven_address` proven attempts in
    /// handshake or waiting.
    handshakes_address_full,
    /// Connection attempts with a valid Retry token, out of those admitted:
    /// terminals that came back after a Retry.
    handshakes_proven,
    /// Org reloads that swapped a new org in (`ptt-gateway reload`, SIGHUP).
    org_reloads,
    /// Org reloads refused (file unreadable or invalid, key changed); the
    /// running org kept serving.
    org_reload_failures,
    /// Sessions closed with ORG_REMOVED: their terminal left the org in a
    /// reload.
    sessions_removed_by_reload,
    /// WebTransport sessions (browser consoles) established.
    webtransport_sessions,
    /// WebTransport handshakes refused: HTTP/3 rules broken, a CONNECT to
    /// another path than `/console`, or a stream cut short.
    webtransport_refused,
    /// Console sign-ins that succeeded.
    console_signins,
    /// Console sign-ins refused: unknown operator or wrong password.
    console_signin_failures,
    /// Console sign-ins refused without checking the password: too many
    /// failures for that name or address (`console.max_failures`).
    console_signins_throttled,
    /// Console sessions that ended: signed out or expired (their
    /// WebTransport session closed with SIGNED_OUT).
    console_sessions_ended,
    /// (cluster) Voice frames published for the other nodes, once per
    /// relayed frame.
    cluster_voice_out,
    /// (cluster) Voice frames received from other nodes.
    cluster_voice_in,
    /// (cluster) Voice frames not published: NATS unreachable (late voice
    /// is worthless) or the client's buffer full.
    cluster_voice_dropped,
    /// (cluster) Deliveries of other nodes' voice to local listeners.
    cluster_voice_delivered,
    /// (cluster) Envelopes sent to other nodes' inboxes.
    cluster_envelopes_out,
    /// (cluster) Envelopes not sent: NATS unreachable or its buffer full.
    cluster_envelopes_dropped,
    /// (cluster) Envelopes received.
    cluster_envelopes_in,
    /// (cluster) Heartbeats or envelopes that did not decode.
    cluster_malformed,
    /// (cluster) Changes of the live node set seen by this node.
    cluster_view_changes,
    /// (cluster) Floor requests refused with ARBITER_UNAVAILABLE: no
    /// quorum, or a group being taken over.
    cluster_floor_unavailable,
    /// (cluster) Bursts revoked with ARBITER_LOST: this node lost a
    /// group or its quorum, or the group's arbiter died.
    cluster_floor_lost,
    /// Session tickets terminals presented that did not open: sealed with a
    /// key this gateway no longer has (a rotation dropped it, a restart
    /// without `transport.ticket_key_file`, another cluster's), or forged.
    /// Each costs a full handshake; many after a failover mean the nodes
    /// do not share their ticket key file.
    tls_tickets_refused,
    /// Times the shared ticket key file (`transport.ticket_key_file`) was
    /// reread after it changed.
    tls_ticket_key_reloads,
    /// Times it changed but did not load (the keys already loaded stay in
    /// use; the log says why).
    tls_ticket_key_reload_failures,
    /// (cluster alerts) Alerts and receipts written to the cluster's
    /// JetStream stream (acknowledged by it), by this node.
    cluster_alert_records_out,
    /// (cluster alerts) Writes to the stream tried again: no answer or a
    /// refusal, as while JetStream elects a new leader.
    cluster_alert_publish_retries,
    /// (cluster alerts) Alerts refused (INTERNAL) because the stream did
    /// not acknowledge them within the retry window: nothing was sent.
    cluster_alerts_unconfirmed,
    /// (cluster alerts) Receipts answered INTERNAL because the stream did
    /// not acknowledge them (stored here; the terminal resends them).
    /// (cluster) SOS raised on this node alone: the cluster's stream did
    /// not acknowledge it within 500 ms (consoles on other nodes miss it).
    cluster_sos_local,
    /// (cluster) Receipts the stream did not acknowledge in time, queued
    /// here and shared again every second until it does.
    cluster_receipts_deferred,
    cluster_receipts_unconfirmed,
    /// (cluster alerts) Records read from the stream by this node's
    /// consumer (its own included).
    cluster_alert_records_in,
    /// (cluster alerts) Alerts of other nodes stored here from the stream
    /// (and delivered to their recipients here).
    cluster_alerts_replicated,
    /// (cluster alerts) Receipts made on other nodes that moved a
    /// recipient's status forward here.
    cluster_receipts_replicated,
    /// (cluster alerts) Records from the stream that did not decode, or
    /// receipts for an alert this node does not hold (acknowledged and
    /// skipped).
    cluster_alert_records_skipped,
    /// (cluster alerts) Records whose local write failed, left for the
    /// stream to redeliver.
    cluster_alert_records_failed,
    /// (media plane) Sessions that offered SRTP and were answered with it.
    media_sessions,
    /// (media plane) SRTP and SRTCP packets that arrived on the QUIC port.
    media_packets_in,
    /// (media plane) Media packets whose SSRC belongs to no session (or
    /// too short to carry one): dropped unanswered.
    media_unknown_ssrc,
    /// (media plane) Media packets refused: forged, corrupted, another
    /// key, replayed, too old, or not a voice packet. Dropped unanswered;
    /// none moved a window or an address.
    media_rejected,
    /// (media plane) Voice frames that arrived as SRTP and authenticated
    /// (then counted in `voice_in` and judged like any voice frame).
    media_voice_in,
    /// (media plane) SRTCP packets that authenticated (probes and
    /// keep-alives with their reception reports).
    media_rtcp_in,
    /// (media plane) SRTCP answers sent back, one per authenticated one.
    media_rtcp_out,
    /// (media plane) Media packets handed to the socket: SRTP voice for
    /// listeners, and the SRTCP answers counted in `media_rtcp_out`.
    media_packets_out,
    /// (media plane) SRTP packets for listeners the socket did not take
    /// (its send buffer full, or an error): lost at the gateway.
    media_send_dropped,
    /// (media plane) Times an authenticated packet moved a terminal's media
    /// address (NAT rebinding, a new network).
    media_address_moved,
    /// (media plane) Terminals that asked to fall back to QUIC DATAGRAMs
    /// (`MediaMode { srtp: false }`).
    media_fallbacks,
    /// Link quality reports (`LinkReport`) kept: each terminal's last one
    /// is in `GET /api/v1/link`.
    link_reports,
    /// Link quality reports dropped: less than 1 s after the last one kept
    /// from the same terminal (a misconfigured or flooding terminal).
    link_reports_dropped,
}

impl Metrics {
    /// Adds `n` to `counter`.
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Sets a gauge (`disk_free_bytes`) to `value`.
    #[inline]
    pub fn set(gauge: &AtomicU64, value: u64) {
        gauge.store(value, Ordering::Relaxed);
    }
}

/// A histogram of how long the gateway takes to relay voice frames,
/// microseconds. The gateway keeps two (see the session's voice
/// loop): to the frame queued in every receiver's connection, for every
/// frame; and to every receiver's packet handed to the socket, for one
/// frame in [`SOCKET_SAMPLE`].
///
/// Every voice loop runs on the network thread ([`crate::net`]), so the
/// lock is taken once per incoming frame (not per delivery) and never
/// contended: one histogram for the gateway, none per connection (a
/// histogram is ~120 KB, three times an idle connection).
#[derive(Debug)]
pub struct RelayLatency(std::sync::Mutex<hdrhistogram::Histogram<u64>>);

/// One relayed frame in this many is followed to the socket.
pub const SOCKET_SAMPLE: u64 = 64;

impl Default for RelayLatency {
    fn default() -> Self {
        Self(std::sync::Mutex::new(new_histogram()))
    }
}

/// 1 µs to 10 s, 3 significant digits.
fn new_histogram() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, 10_000_000, 3).expect("valid bounds")
}

/// Percentiles of [`RelayLatency`], microseconds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct LatencySummary {
    /// Frames measured.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Slowest.
    pub max_us: u64,
}

impl RelayLatency {
    fn lock(&self) -> std::sync::MutexGuard<'_, hdrhistogram::Histogram<u64>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one frame that took `d`.
    pub fn record(&self, d: std::time::Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
        self.lock().saturating_record(us);
    }

    /// What has been recorded so far as a cumulative histogram: the sum of
    /// all values (microseconds, from the histogram's mean, so within its
    /// 3 significant digits), the count, and for each of `bounds_us` the
    /// number of values at or under it.
    pub fn cumulative(&self, bounds_us: &[u64]) -> (f64, u64, Vec<u64>) {
        let h = self.lock();
        let counts = bounds_us
            .iter()
            .map(|&b| h.count_between(0, b.max(1)))
            .collect();
        (h.mean() * h.len() as f64, h.len(), counts)
    }

    /// What has been recorded so far.
    pub fn summary(&self) -> LatencySummary {
        let h = self.lock();
        if h.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: h.len(),
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn relay_latency_percentiles_in_microseconds() {
        let shared = RelayLatency::default();
        assert_eq!(shared.summary(), LatencySummary::default());
        for us in 1..=100u64 {
            shared.record(Duration::from_micros(us * 10));
        }
        // Below a microsecond still counts, as 1 us.
        shared.record(Duration::from_nanos(300));
        shared.record(Duration::from_micros(5000));
        let s = shared.summary();
        assert_eq!(s.count, 102);
        assert!((495..=505).contains(&s.p50_us), "{s:?}");
        assert!((4995..=5005).contains(&s.max_us), "{s:?}");
    }
}
