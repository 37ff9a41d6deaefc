//! Opus (being written).
