//! Alerts in the driver: the durable store and the clock. The rules
//! (receipt lifecycle, recipients, limits) are in [`ptt_gateway_core::alert`]
//! and [`ptt_gateway_core::recipients`], applied by `ops::alerts`.

pub use crate::store::{self, Store};
pub use ptt_gateway_core::alert::{advance, InvalidReceipt, Step, MAX_TTL_S};
pub use ptt_gateway_core::audit::{BurstRecord, EndedBy};
pub use ptt_gateway_core::recipients::MAX_FIX_AGE_MS;

pub use crate::clock::now_ms;
