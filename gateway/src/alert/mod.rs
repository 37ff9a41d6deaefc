//! Alerts: the durable store and the recipient rules at the current time.
//! The rules themselves (receipt lifecycle, recipients, limits) are in
//! [`ptt_gateway_core::alert`] and [`ptt_gateway_core::recipients`].

mod service;

pub use crate::store::{self, Store};
pub use ptt_gateway_core::alert::{advance, InvalidReceipt, Step, MAX_TTL_S};
pub use ptt_gateway_core::audit::{BurstRecord, EndedBy};
pub use ptt_gateway_core::recipients::MAX_FIX_AGE_MS;
pub use service::{Refusal, Service};

pub use crate::clock::now_ms;
