//! The governance tree (city > district > police station > co-governance
//! station > co-governance unit), its terminals, and queries on it.
//!
//! Loaded once from the org file at start and immutable afterwards, so every
//! query is a plain read. Every node has a talk group whose id equals the
//! node's id.

pub mod auth;
mod file;
mod policy;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ptt_codec::{GroupId, TerminalId};
use serde::{Deserialize, Serialize};

pub use file::{AuthSection, File, NodeEntry, TerminalEntry};
pub use policy::{Denied, Policy, Rights, RolePriorities};

/// Levels of the governance tree, top down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    /// City police bureau and its command centre (市局).
    City,
    /// District or county (区/县).
    District,
    /// Police station (派出所) with its command room.
    PoliceStation,
    /// Co-governance station (共治站) at a crowded site.
    Station,
    /// Co-governance unit (共治单元), the smallest unit.
    Unit,
}

impl NodeKind {
    /// The kind a node of this kind must hang under; `None` for the root.
    pub fn parent_kind(self) -> Option<NodeKind> {
        match self {
            NodeKind::City => None,
            NodeKind::District => Some(NodeKind::City),
            NodeKind::PoliceStation => Some(NodeKind::District),
            NodeKind::Station => Some(NodeKind::PoliceStation),
            NodeKind::Unit => Some(NodeKind::Station),
        }
    }
}

/// What a terminal's user is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Police officer (民警).
    Police,
    /// Auxiliary police (辅警).
    AuxiliaryPolice,
    /// Security guard (保安员).
    SecurityGuard,
    /// Staff security officer or property manager.
    Staff,
    /// Volunteer.
    Volunteer,
    /// Command-room dispatcher.
    Dispatcher,
}

/// What kind of device a terminal is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TerminalKind {
    /// Handheld intercom (对讲终端).
    Handheld,
    /// Video-capable screen terminal (可视终端).
    ScreenTerminal,
    /// Phone app.
    PhoneApp,
    /// Command-room console.
    Console,
}

/// A node of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Node id, also its talk group's id.
    pub id: u32,
    /// Parent node; `None` only for the city.
    pub parent: Option<u32>,
    /// Level.
    pub kind: NodeKind,
    /// Display name.
    pub name: String,
}

/// A terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terminal {
    /// Terminal id.
    pub id: TerminalId,
    /// Display name of its user (e.g. "张伟").
    pub name: String,
    /// Its user's role.
    pub role: Role,
    /// Device kind.
    pub kind: TerminalKind,
    /// The node it belongs to.
    pub node: u32,
}

impl Terminal {
    /// Whether it is a command-room console (by device or by role).
    pub fn is_console(&self) -> bool {
        self.kind == TerminalKind::Console || self.role == Role::Dispatcher
    }
}

/// Why an org file was refused. Each message names the offending id.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML for the org schema.
    #[error("invalid org file: {0}")]
    Parse(#[from] toml::de::Error),
    /// A node or terminal has id 0, which the protocol reserves.
    #[error("{what} id 0 is reserved")]
    ZeroId {
        /// "node" or "terminal".
        what: &'static str,
    },
    /// Two nodes share an id.
    #[error("node {0} is defined twice")]
    DuplicateNode(u32),
    /// Two terminals share an id.
    #[error("terminal {0} is defined twice")]
    DuplicateTerminal(u32),
    /// No city node.
    #[error("the org has no city (root) node")]
    NoRoot,
    /// More than one node without a parent.
    #[error("node {0} is a second root: only the city has no parent")]
    SecondRoot(u32),
    /// A node's parent does not exist.
    #[error("node {node} names parent {parent}, which does not exist")]
    MissingParent {
        /// The node.
        node: u32,
        /// The missing parent.
        parent: u32,
    },
    /// A node hangs under the wrong level (e.g. a unit under a district).
    /// Because every level must sit under the one above, cycles are
    /// impossible too.
    #[error("node {node} ({kind:?}) cannot be under node {parent} ({parent_kind:?})")]
    WrongParent {
        /// The node.
        node: u32,
        /// Its kind.
        kind: NodeKind,
        /// Its parent.
        parent: u32,
        /// The parent's kind.
        parent_kind: NodeKind,
    },
    /// A terminal belongs to a node that does not exist.
    #[error("terminal {terminal} belongs to node {node}, which does not exist")]
    UnknownNode {
        /// The terminal.
        terminal: u32,
        /// The missing node.
        node: u32,
    },
}

/// The governance tree and its terminals.
#[derive(Debug, Clone)]
pub struct Org {
    nodes: HashMap<u32, Node>,
    children: HashMap<u32, Vec<u32>>,
    terminals: HashMap<TerminalId, Terminal>,
    root: u32,
    key_file: Option<PathBuf>,
}

impl Org {
    /// Reads and validates an org file; `key_file` is resolved relative to it.
    pub fn load(path: &Path) -> Result<Org, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Org::from_toml(&text, base)
    }

    /// Parses and validates org TOML; `base_dir` resolves `key_file`.
    pub fn from_toml(text: &str, base_dir: &Path) -> Result<Org, Error> {
        let file: File = toml::from_str(text)?;
        Org::from_file(file, base_dir)
    }

    /// Validates a parsed org file.
    pub fn from_file(file: File, base_dir: &Path) -> Result<Org, Error> {
        let mut nodes = HashMap::with_capacity(file.nodes.len());
        let mut root = None;
        for n in file.nodes {
            if n.id == 0 {
                return Err(Error::ZeroId { what: "node" });
            }
            if n.parent.is_none() {
                if root.is_some() || n.kind != NodeKind::City {
                    return Err(Error::SecondRoot(n.id));
                }
                root = Some(n.id);
            }
            let node = Node {
                id: n.id,
                parent: n.parent,
                kind: n.kind,
                name: n.name,
            };
            if nodes.insert(n.id, node).is_some() {
                return Err(Error::DuplicateNode(n.id));
            }
        }
        let root = root.ok_or(Error::NoRoot)?;
        let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
        for n in nodes.values() {
            let (Some(parent), Some(want)) = (n.parent, n.kind.parent_kind()) else {
                if n.parent.is_some() {
                    // A city with a parent.
                    return Err(Error::SecondRoot(n.id));
                }
                continue;
            };
            let p = nodes
                .get(&parent)
                .ok_or(Error::MissingParent { node: n.id, parent })?;
            if p.kind != want {
                return Err(Error::WrongParent {
                    node: n.id,
                    kind: n.kind,
                    parent,
                    parent_kind: p.kind,
                });
            }
            children.entry(parent).or_default().push(n.id);
        }
        for c in children.values_mut() {
            c.sort_unstable();
        }
        let mut terminals = HashMap::with_capacity(file.terminals.len());
        for t in file.terminals {
            if t.id == 0 {
                return Err(Error::ZeroId { what: "terminal" });
            }
            if !nodes.contains_key(&t.node) {
                return Err(Error::UnknownNode {
                    terminal: t.id,
                    node: t.node,
                });
            }
            let terminal = Terminal {
                id: TerminalId(t.id),
                name: t.name,
                role: t.role,
                kind: t.kind,
                node: t.node,
            };
            if terminals.insert(TerminalId(t.id), terminal).is_some() {
                return Err(Error::DuplicateTerminal(t.id));
            }
        }
        Ok(Org {
            nodes,
            children,
            terminals,
            root,
            key_file: file.auth.map(|a| base_dir.join(a.key_file)),
        })
    }

    /// A terminal by id.
    pub fn terminal(&self, id: TerminalId) -> Option<&Terminal> {
        self.terminals.get(&id)
    }

    /// Every terminal, in no particular order.
    pub fn terminals(&self) -> impl Iterator<Item = &Terminal> + '_ {
        self.terminals.values()
    }

    /// The node whose talk group is `group`.
    pub fn node(&self, group: GroupId) -> Option<&Node> {
        self.nodes.get(&group.0)
    }

    /// Every talk group (one per node), in no particular order.
    pub fn groups(&self) -> impl Iterator<Item = GroupId> + '_ {
        self.nodes.keys().map(|id| GroupId(*id))
    }

    /// The city node.
    pub fn root(&self) -> &Node {
        &self.nodes[&self.root]
    }

    /// Children of a node, by id.
    pub fn children(&self, node: u32) -> &[u32] {
        self.children.get(&node).map_or(&[], Vec::as_slice)
    }

    /// Whether `ancestor` is `node` or above it. O(depth), depth <= 5.
    pub fn is_ancestor_or_self(&self, ancestor: u32, node: u32) -> bool {
        let mut at = Some(node);
        while let Some(id) = at {
            if id == ancestor {
                return true;
            }
            at = self.nodes.get(&id).and_then(|n| n.parent);
        }
        false
    }

    /// The nearest node of `kind` at or above `node`.
    pub fn ancestor_of_kind(&self, node: u32, kind: NodeKind) -> Option<u32> {
        let mut at = self.nodes.get(&node);
        while let Some(n) = at {
            if n.kind == kind {
                return Some(n.id);
            }
            at = n.parent.and_then(|p| self.nodes.get(&p));
        }
        None
    }

    /// The provisioning key file named by the org file, resolved.
    pub fn key_file(&self) -> Option<&Path> {
        self.key_file.as_deref()
    }
}
