//! Last known positions: the spatial index lives in the core
//! ([`ptt_gateway_core::location`]); re-exported here for the driver.

pub use ptt_gateway_core::location::{distance_m, Fix, Positions};
