//! The reference terminal library, the city generator and the drill/load
//! harness of the PTT gateway.
//!
//! - [`terminal`]: the reference client, the `ptt-terminal` crate (what a
//!   terminal vendor embeds: connect, authenticate, join, floor, voice,
//!   alerts), re-exported under its old path.
//! - [`jitter`], [`speech`], [`wav`], [`record`]: the audio side of a
//!   terminal (playout buffer, a test speech signal, WAV files);
//!   [`quality`]: how closely what a listener heard follows what was said.
//! - [`city`]: generates a city's org file following FIELD.md.
//! - [`scenario`], [`report`]: the load and drill harness behind
//!   `terminal-sim run`; [`wan`]: a round-trip delay and voice loss for its
//!   terminals.

pub mod city;
pub mod jitter;
pub mod plot;
pub mod quality;
pub mod record;
pub mod report;
pub mod scenario;
pub mod shards;
pub mod speech;
pub mod wan;
pub mod wav;

pub use ptt_terminal as terminal;
