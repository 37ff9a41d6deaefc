//! Positions: `Position` (remember, tell the consoles watching) and
//! `WatchPositions` (start or stop following a subtree).

use ptt_codec::control::kind;
use ptt_codec::{ErrorCode, ServerMsg};

use super::Caller;
use crate::clock::now_ms;
use crate::hub::{Hub, Watcher};
use crate::location::Fix;

/// `Position`: remember it and tell the consoles watching, on this node
/// and, in a cluster, on every node.
pub(crate) fn position(cx: &Caller, lat_e7: i32, lon_e7: i32, accuracy_m: u16) {
    let (hub, terminal) = (&cx.hub, cx.terminal);
    let fix = Fix {
        lat_e7,
        lon_e7,
        accuracy_m,
        at_ms: now_ms(),
    };
    hub.position(terminal, fix);
    if let Some(cluster) = hub.cluster() {
        cluster.publish_position(terminal, fix);
    }
}

/// `WatchPositions`: start (with the positions known now) or stop (node 0).
/// A new watch replaces the session's previous one.
pub(crate) fn watch(cx: &Caller, node: u32) {
    let (hub, terminal) = (&cx.hub, cx.terminal);
    hub.watch().unwatch(cx.session);
    if node == 0 {
        return;
    }
    let org = hub.org();
    if !org.commands_node(terminal, node) {
        cx.error(
            ErrorCode::TargetNotAllowed,
            kind::WATCH_POSITIONS,
            format!("node {node} is outside your command"),
        );
        return;
    }
    hub.watch().watch(Watcher {
        terminal,
        session: cx.session,
        node,
        outbox: cx.outbox.clone(),
    });
    for t in org
        .terminals()
        .filter(|t| org.is_ancestor_or_self(node, t.node))
    {
        if let Some(fix) = hub.watch().last(t.id) {
            cx.outbox.send_droppable(ServerMsg::PositionUpdate {
                terminal: t.id,
                lat_e7: fix.lat_e7,
                lon_e7: fix.lon_e7,
                accuracy_m: fix.accuracy_m,
                at_ms: fix.at_ms,
            });
        }
    }
}

/// Forgets a session's position watch; call when the session ends.
pub(crate) fn unwatch(hub: &Hub, session: u64) {
    hub.watch().unwatch(session);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{caller, hub};
    use crate::outbox::testing;

    #[tokio::test]
    async fn a_console_watching_a_node_hears_positions_below_it() {
        let (_server, _client, conn) = testing::connection().await;
        let hub = hub();
        let (guard, _) = caller(&hub, 501, &conn);
        position(&guard, 10, 20, 5);
        let (console, mut heard) = caller(&hub, 300, &conn);
        watch(&console, 3);
        // The position known when the watch started, then a live one.
        position(&guard, 11, 21, 6);
        let mut fixes = Vec::new();
        while let Ok(msg) = heard.try_recv() {
            match *msg {
                ServerMsg::PositionUpdate {
                    terminal, lat_e7, ..
                } => fixes.push((terminal.0, lat_e7)),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(fixes, [(501, 10), (501, 11)]);
        // Watching node 0 stops it.
        watch(&console, 0);
        position(&guard, 12, 22, 7);
        assert!(heard.try_recv().is_err());
    }

    #[tokio::test]
    async fn only_a_console_commanding_the_node_may_watch() {
        let (_server, _client, conn) = testing::connection().await;
        let hub = hub();
        let (guard, mut told) = caller(&hub, 501, &conn);
        watch(&guard, 5);
        let msg = told.try_recv().expect("an error");
        assert!(
            matches!(
                &*msg,
                ServerMsg::Error {
                    code: ErrorCode::TargetNotAllowed,
                    frame: kind::WATCH_POSITIONS,
                    ..
                }
            ),
            "{msg:?}"
        );
        let (console, mut told) = caller(&hub, 300, &conn);
        watch(&console, 1);
        let msg = told.try_recv().expect("an error");
        assert!(
            matches!(
                &*msg,
                ServerMsg::Error {
                    code: ErrorCode::TargetNotAllowed,
                    ..
                }
            ),
            "{msg:?}"
        );
    }

    #[tokio::test]
    async fn presence_and_positions_from_other_nodes_are_kept() {
        let (_server, _client, conn) = testing::connection().await;
        let hub = hub();
        let (console, mut heard) = caller(&hub, 300, &conn);
        watch(&console, 3);
        // A position another node's terminal reported reaches the console.
        hub.position(
            ptt_codec::TerminalId(501),
            Fix {
                lat_e7: 5,
                lon_e7: 6,
                accuracy_m: 1,
                at_ms: 7,
            },
        );
        assert!(matches!(
            *heard.try_recv().expect("an update"),
            ServerMsg::PositionUpdate { lat_e7: 5, .. }
        ));
        // Presence: on, off, and replaced whole by a full report.
        let t = ptt_codec::TerminalId;
        let report = |online: Vec<u32>, offline: Vec<u32>, full| crate::cluster::wire::Presence {
            node: "b".into(),
            online,
            offline,
            full,
        };
        hub.presence_from(report(vec![501, 502], vec![], false));
        assert_eq!(hub.connected_at(t(501)).as_deref(), Some("b"));
        hub.presence_from(report(vec![], vec![501], false));
        assert_eq!(hub.connected_at(t(501)), None);
        hub.presence_from(report(vec![503], vec![], true));
        assert_eq!(hub.connected_at(t(502)), None, "a full report replaces");
        assert_eq!(hub.connected_at(t(503)).as_deref(), Some("b"));
        // Another node's "offline" does not take away this node's entry.
        hub.presence_from(crate::cluster::wire::Presence {
            node: "c".into(),
            online: vec![],
            offline: vec![503],
            full: false,
        });
        assert_eq!(hub.connected_at(t(503)).as_deref(), Some("b"));
    }
}
