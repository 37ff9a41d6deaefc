//! The reference PTT terminal library.

mod terminal;

pub use terminal::*;
