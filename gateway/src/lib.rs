//! The PTT gateway: a QUIC server relaying group voice and alerts between
//! terminals of a city's governance tree.

pub mod floor;
pub mod org;
