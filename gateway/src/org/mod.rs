//! Governance tree (placeholder, being written).
