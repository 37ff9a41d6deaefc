//! The reference terminal library, the city generator and the drill/load
//! harness of the PTT gateway.
//!
//! - [`terminal`]: what a terminal vendor embeds: connect, authenticate,
//!   join, floor, voice.

pub mod terminal;
