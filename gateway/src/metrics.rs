//! Counters of the gateway, cheap enough for the per-frame path.
//!
//! Plain relaxed atomics: they are read for reports and tests, never used to
//! synchronise anything.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident, )+) => {
        /// Gateway-wide counters. Increment with [`Metrics::add`]; read a
        /// consistent-enough copy with [`Metrics::snapshot`].
        #[derive(Debug, Default)]
        pub struct Metrics {
            $( $(#[$doc])* pub $name: AtomicU64, )+
        }

        /// A copy of [`Metrics`] at one moment.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
        pub struct Snapshot {
            $( $(#[$doc])* pub $name: u64, )+
        }

        impl Metrics {
            /// Reads every counter.
            pub fn snapshot(&self) -> Snapshot {
                Snapshot { $( $name: self.$name.load(Ordering::Relaxed), )+ }
            }
        }
    };
}

counters! {
    /// Connections that completed the QUIC handshake.
    connections_accepted,
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
    /// Live receipt updates not sent to an issuer that fell behind (its
    /// `AlertStatus` query still has every receipt).
    receipt_updates_dropped,
}

impl Metrics {
    /// Adds `n` to `counter`.
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
