//! What a terminal asks of the gateway beyond its own session: one module
//! per kind of operation, each handler taking the asking session's
//! [`Caller`] (as mini-redis's commands take its `Handler`).
//!
//! Operations sit between sessions and the hub: sessions call them, they
//! call the hub, the store and the outboxes, never a session.

pub(crate) mod alerts;
pub(crate) mod attachments;
pub(crate) mod drills;
pub(crate) mod positions;
pub(crate) mod replication;
pub(crate) mod sos;
pub(crate) mod upkeep;

use std::sync::Arc;

use ptt_codec::{ErrorCode, ServerMsg, TerminalId};

use crate::hub::{self, Hub};
use crate::link::Link;
use crate::outbox::Outbox;

/// The session an operation runs for: who asks, and how to answer.
///
/// Cheap to clone: handlers that outlive the control loop's turn (store
/// calls, deliveries) take a clone into their task.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    /// The shared state.
    pub(crate) hub: Arc<Hub>,
    /// The authenticated terminal.
    pub(crate) terminal: TerminalId,
    /// Its session id (see [`crate::hub::Live::id`]).
    pub(crate) session: u64,
    /// Its connection, for streams to it.
    pub(crate) conn: Link,
    /// Its control messages.
    pub(crate) outbox: Outbox,
}

impl Caller {
    /// Sends an `Error` about a frame of type `frame` (no group).
    pub(crate) fn error(&self, code: ErrorCode, frame: u8, message: impl Into<String>) {
        self.outbox.send(ServerMsg::Error {
            code,
            frame,
            group: None,
            message: message.into(),
        });
    }
}

/// Why an operation did not finish, for the log; [`Error::to_code`] is
/// what the terminal is told when it is told. Content stays in the store:
/// alerts are sent again on reconnect, attachments and reports can be asked
/// for again.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// The store refused the request or failed.
    #[error(transparent)]
    Desk(#[from] hub::Error),
    /// The connection is gone.
    #[error(transparent)]
    Connection(#[from] quinn::ConnectionError),
    /// The terminal stopped the stream or the connection failed mid-write.
    #[error(transparent)]
    Write(#[from] quinn::WriteError),
    /// The stream was already finished or reset.
    #[error(transparent)]
    Closed(#[from] quinn::ClosedStream),
    /// The terminal took nothing on a stream for
    /// `attachments.stall_timeout_ms`; the stream was reset.
    #[error("the reader took nothing for {0:?}")]
    Stalled(std::time::Duration),
}

impl Error {
    /// The stable wire code for the terminal: the store's refusals keep
    /// their own; everything else is the gateway's side failing.
    pub(crate) fn to_code(&self) -> ErrorCode {
        match self {
            Error::Desk(e) => e.to_code(),
            Error::Connection(_) | Error::Write(_) | Error::Closed(_) | Error::Stalled(_) => {
                ErrorCode::Internal
            }
        }
    }
}

/// Whether a store call failed because the disk is full (SQLite's
/// `SQLITE_FULL`: nothing was stored); counts it in `store_full`. Call it
/// on a failed write before answering the terminal, which then gets
/// `STORAGE_FULL` rather than `INTERNAL`.
pub(crate) fn count_full(hub: &Hub, e: &hub::Error) -> bool {
    let full = matches!(e, hub::Error::Store(s) if s.is_full());
    if full {
        crate::metrics::Metrics::add(&hub.metrics().store_full, 1);
    }
    full
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store;

    #[test]
    fn errors_map_to_stable_wire_codes() {
        let refused = Error::from(hub::Error::Store(store::Error::UnknownAlert(1)));
        assert_eq!(refused.to_code(), ErrorCode::UnknownAlert);
        let drill = Error::from(hub::Error::Store(store::Error::NotADrill {
            alert: 1,
            kind: ptt_codec::AlertKind::Sos,
        }));
        assert_eq!(drill.to_code(), ErrorCode::NotADrill);
        assert_eq!(
            Error::from(hub::Error::ReceiptDropped).to_code(),
            ErrorCode::Internal
        );
        assert_eq!(
            Error::from(quinn::ConnectionError::LocallyClosed).to_code(),
            ErrorCode::Internal
        );
        assert_eq!(
            Error::from(quinn::ClosedStream::default()).to_code(),
            ErrorCode::Internal
        );
    }
}

/// Test support: a hub over a small org, and callers into it.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::Path;
    use std::sync::Arc;

    use ptt_codec::{ServerMsg, TerminalId};
    use tokio::sync::mpsc;

    use super::Caller;
    use crate::config::Config;
    use crate::hub::Hub;
    use crate::org::{auth::ProvisioningKey, Org};
    use crate::outbox::Outbox;
    use crate::store::Store;

    /// Station 3 with console 300, unit 5 with guards 501 and 502.
    const TREE: &str = r#"
        [[node]]
        id = 1
        kind = "city"
        name = "city"
        [[node]]
        id = 2
        parent = 1
        kind = "district"
        name = "district"
        [[node]]
        id = 3
        parent = 2
        kind = "police_station"
        name = "east"
        [[node]]
        id = 4
        parent = 3
        kind = "station"
        name = "station"
        [[node]]
        id = 5
        parent = 4
        kind = "unit"
        name = "unit"
        [[terminal]]
        id = 300
        node = 3
        role = "dispatcher"
        kind = "console"
        name = "console"
        [[terminal]]
        id = 502
        node = 5
        role = "volunteer"
        kind = "phone_app"
        name = "volunteer"
        [[terminal]]
        id = 501
        node = 5
        role = "security_guard"
        kind = "handheld"
        name = "guard"
    "#;

    pub(crate) fn hub() -> Arc<Hub> {
        let org = Org::from_toml(TREE, Path::new(".")).expect("the test tree is valid");
        Arc::new(Hub::new(
            Config::default(),
            org,
            ProvisioningKey::from_bytes([1; 32]),
            Store::in_memory().expect("in-memory store"),
            crate::net::Thread::start("test-net").expect("a thread"),
        ))
    }

    /// [`hub`] with `config` rather than the defaults.
    pub(crate) fn hub_with(config: Config) -> Arc<Hub> {
        let org = Org::from_toml(TREE, Path::new(".")).expect("the test tree is valid");
        Arc::new(Hub::new(
            config,
            org,
            ProvisioningKey::from_bytes([1; 32]),
            Store::in_memory().expect("in-memory store"),
            crate::net::Thread::start("test-net").expect("a thread"),
        ))
    }

    pub(crate) fn caller(
        hub: &Arc<Hub>,
        terminal: u32,
        conn: &crate::link::Link,
    ) -> (Caller, mpsc::Receiver<Box<ServerMsg>>) {
        let (outbox, rx) = Outbox::new(conn.clone(), 8);
        let cx = Caller {
            hub: hub.clone(),
            terminal: TerminalId(terminal),
            session: hub.registry().next_session(),
            conn: conn.clone(),
            outbox,
        };
        (cx, rx)
    }
}
