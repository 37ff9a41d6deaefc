//! The listener: accepts connections and hands each to a session task; shuts
//! down gracefully.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use ptt_codec::{CloseCode, GroupId, TerminalId};
use tokio::task::JoinSet;

use crate::alert::Store;
use crate::config::Config;
use crate::floor;
use crate::group::Group;
use crate::metrics::{self, Metrics};
use crate::org::{auth::ProvisioningKey, Org};
use crate::session::{self, Remembered};

/// State shared by every session.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) org: Org,
    pub(crate) key: ProvisioningKey,
    /// Alerts and receipts on disk.
    pub(crate) store: Arc<Store>,
    /// Every talk group, one per org node. Fixed at start, so the voice path
    /// looks groups up without a lock.
    pub(crate) groups: HashMap<GroupId, Arc<Group>>,
    pub(crate) terminals: DashMap<TerminalId, Remembered>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) next_session: AtomicU64,
}

/// A gateway ready to serve: configuration, org and groups, no sockets.
///
/// Cheap to clone; clones share state.
#[derive(Debug, Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
}

impl Gateway {
    /// Builds the run-time state: one talk group per org node, alerts in
    /// `store` (open it at `<data_dir>/gateway.db`).
    pub fn new(config: Config, org: Org, key: ProvisioningKey, store: Store) -> Self {
        let metrics = Arc::new(Metrics::default());
        let groups = org
            .groups()
            .map(|id| {
                let name: Arc<str> = org.node(id).map_or("", |n| n.name.as_str()).into();
                let floor = floor::Config {
                    talk_limit: config.floor.talk_limit(id.0),
                    queue_capacity: config.floor.queue,
                };
                (id, Arc::new(Group::new(id, name, floor, metrics.clone())))
            })
            .collect();
        Self {
            shared: Arc::new(Shared {
                config,
                org,
                key,
                store: Arc::new(store),
                groups,
                terminals: DashMap::new(),
                metrics,
                next_session: AtomicU64::new(1),
            }),
        }
    }

    /// The gateway's counters, live.
    pub fn metrics(&self) -> metrics::Snapshot {
        self.shared.metrics.snapshot()
    }

    /// Members online in `group`, or `None` for an unknown group.
    pub fn online(&self, group: GroupId) -> Option<usize> {
        self.shared.groups.get(&group).map(|g| g.online())
    }

    /// The terminal holding the floor of `group`.
    pub fn holder(&self, group: GroupId) -> Option<TerminalId> {
        self.shared.groups.get(&group).and_then(|g| g.holder())
    }

    /// Serves `endpoint` until `shutdown` completes, then closes every
    /// connection with [`CloseCode::ServerShutdown`] and waits (up to 5 s)
    /// for sessions to end.
    pub async fn run(self, endpoint: quinn::Endpoint, shutdown: impl Future<Output = ()>) {
        let mut sessions = JoinSet::new();
        tokio::pin!(shutdown);
        tracing::info!(addr = ?endpoint.local_addr().ok(), groups = self.shared.groups.len(), "gateway listening");
        loop {
            tokio::select! {
                incoming = endpoint.accept() => {
                    let Some(incoming) = incoming else { break };
                    sessions.spawn(session::run(self.shared.clone(), incoming));
                }
                Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
                () = &mut shutdown => break,
            }
        }
        tracing::info!(sessions = sessions.len(), "shutting down");
        endpoint.set_server_config(None);
        endpoint.close(
            quinn::VarInt::from_u32(CloseCode::ServerShutdown.code()),
            b"gateway shutting down",
        );
        let drain = async { while sessions.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(5), drain)
            .await
            .is_err()
        {
            tracing::warn!("sessions did not end in time");
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
        let counters = serde_json::to_string(&self.metrics()).unwrap_or_default();
        tracing::info!(%counters, "gateway stopped");
    }
}
