//! The PTT gateway: a QUIC server relaying group voice and alerts between
//! terminals of a city's governance tree.
//!
//! Layout, from the wire inwards:
//! - [`server`]: the listener; [`Gateway::run`] takes its endpoint and a
//!   shutdown future, so tests bind port 0 and stop cleanly.
//! - `session`: one terminal's connection (handshake and `Hello`, the
//!   control stream and its dispatch, voice datagrams).
//! - `ops`: what sessions ask of the gateway (alerts, SOS, positions,
//!   attachments, drills), each handler taking the session's context.
//! - `hub`: the state sessions share, as a handle with methods (registry of
//!   live terminals, groups, alert desk, positions, SOS book).
//! - `group`: a talk group at run time, the async shell around the
//!   sans-I/O `ptt_gateway_core::group::Machine` (membership and
//!   [`floor::Machine`]), publishing [`fanout::Snapshot`]s.
//! - `outbox`: the queue of control messages to one terminal.
//!
//! Dependencies point one way: session -> ops -> hub -> group -> outbox,
//! with the rules below them in `ptt-gateway-core` and `ptt-org`.
//! - [`fanout`]: the lock-free voice relay path.
//! - [`floor`]: sans-I/O floor control (TS 24.380).
//! - [`org`]: the governance tree, authorisation policy and credentials.
//! - [`alert`]: alert rules at the current time (the rules are the core's).
//! - [`store`]: the SQLite store, one file per group of tables.
//! - [`net`]: the network thread that carries every packet.
//! - [`config`], [`tls`]: configuration and certificates.

pub mod alert;
pub mod clock;
pub mod config;
pub mod drill;
pub mod fanout;
mod group;
mod hub;
pub mod location;
pub mod metrics;
pub mod net;
mod ops;
mod outbox;
pub mod server;
mod session;
pub mod store;
pub mod tls;

pub use ptt_gateway_core::{admission, floor};
pub use ptt_org as org;

pub use config::Config;
pub use server::Gateway;
