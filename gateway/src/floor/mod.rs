//! Floor control (placeholder, being written).
