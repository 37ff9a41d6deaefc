//! The org file's TOML schema.
//!
//! ```toml
//! [auth]
//! key_file = "city.key"        # provisioning key, relative to this file
//!
//! [[node]]
//! id = 1
//! kind = "city"                # city, district, police_station, station, unit
//! name = "金华市"
//!
//! [[node]]
//! id = 2
//! parent = 1
//! kind = "district"
//! name = "婺城区"
//!
//! [[terminal]]
//! id = 100001
//! name = "张伟"
//! role = "security_guard"      # police, auxiliary_police, security_guard, staff, volunteer, dispatcher
//! kind = "handheld"            # handheld, screen_terminal, phone_app, console
//! node = 5
//! ```

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{NodeKind, Role, TerminalKind};

/// A whole org file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// Authentication settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSection>,
    /// The tree's nodes, any order.
    #[serde(default, rename = "node")]
    pub nodes: Vec<NodeEntry>,
    /// The terminals, any order.
    #[serde(default, rename = "terminal")]
    pub terminals: Vec<TerminalEntry>,
}

/// `[auth]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// The provisioning key file (hex), relative to the org file.
    pub key_file: PathBuf,
}

/// `[[node]]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    /// Node id (and talk group id), non-zero.
    pub id: u32,
    /// Parent node id; absent for the city.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<u32>,
    /// Level.
    pub kind: NodeKind,
    /// Display name.
    pub name: String,
}

/// `[[terminal]]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TerminalEntry {
    /// Terminal id, non-zero.
    pub id: u32,
    /// User's display name.
    pub name: String,
    /// User's role.
    pub role: Role,
    /// Device kind.
    pub kind: TerminalKind,
    /// Node the terminal belongs to.
    pub node: u32,
}
