//! The PTT gateway: a QUIC server relaying group voice and alerts between
//! terminals of a city's governance tree.
//!
//! Layout, from the wire inwards:
//! - [`server`]: the listener; [`Gateway::run`] takes its endpoint and a
//!   shutdown future, so tests bind port 0 and stop cleanly.
//! - `session`: one terminal's connection (authentication, control
//!   stream, voice datagrams).
//! - `group`: a talk group at run time, the async shell around the
//!   sans-I/O `ptt_gateway_core::group::Machine` (membership and
//!   [`floor::Machine`]), publishing [`fanout::Snapshot`]s.
//! - `outbox`: a terminal's queue of control messages, a leaf every
//!   sender (sessions, groups, alerts) uses without importing the others.
//! - [`fanout`]: the lock-free voice relay path.
//! - [`floor`]: sans-I/O floor control (TS 24.380).
//! - [`org`]: the governance tree, authorisation policy and credentials.
//! - [`alert`]: alert lifecycle, the SQLite store, recipient resolution.
//! - [`net`]: the network thread that carries every packet.
//! - [`config`], [`tls`]: configuration and certificates.

pub mod alert;
pub mod config;
pub mod drill;
pub mod fanout;
mod group;
pub mod location;
pub mod metrics;
pub mod net;
mod outbox;
pub mod server;
mod session;
mod session_alerts;
mod session_streams;
pub mod tls;

pub use ptt_gateway_core::{admission, floor};
pub use ptt_org as org;

pub use config::Config;
pub use server::Gateway;
