//! A gateway cluster on NATS (docs/CLUSTER.md), end to end: three NATS
//! servers with routes and JetStream, three `ptt-gateway` nodes as real
//! processes, terminals on different nodes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ptt_codec::{Class, DenyCause, GroupId, RevokeCause, ServerMsg, TerminalId};
use ptt_gateway_core::cluster::{owner, NodeName};
use ptt_terminal_sim::terminal::{Error, FloorAnswer, Terminal};
use ptt_tests::cluster::GatewayCluster;
use ptt_tests::nats::NatsCluster;
use ptt_tests::org::*;

const OPUS: &[u8] = &[0xfc, 0xff, 0xfe];

/// The node (index into `a`, `b`, `c`) that arbitrates `group` while all
/// three live, and the one that takes over when it dies.
fn arbiters(group: GroupId) -> (usize, usize) {
    let all: Vec<NodeName> = ["a", "b", "c"].into_iter().map(Arc::from).collect();
    let first = owner(group, &all).clone();
    let rest: Vec<NodeName> = all.iter().filter(|n| **n != first).cloned().collect();
    let second = owner(group, &rest).clone();
    let index = |n: &NodeName| all.iter().position(|x| x == n).unwrap();
    (index(&first), index(&second))
}

/// Receives `n` voice frames within `within`, or fewer.
async fn hear(t: &Terminal, n: usize, within: Duration) -> Vec<ptt_terminal_sim::terminal::Voice> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while got.len() < n {
        match tokio::time::timeout_at(deadline, t.recv_voice()).await {
            Ok(Ok(v)) => got.push(v),
            _ => break,
        }
    }
    got
}

async fn joined(cluster: &GatewayCluster, node: usize, id: u32, group: GroupId) -> Terminal {
    let mut t = cluster.terminal(node, id).await;
    t.join(group).await.unwrap();
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_on_one_node_is_heard_on_the_others() {
    let nats = NatsCluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let cluster = GatewayCluster::start(dir.path(), 3, ORG, &nats);
    let mut talker = joined(&cluster, 0, GUARD_A1, UNIT_A).await;
    let mut on_b = joined(&cluster, 1, GUARD_A2, UNIT_A).await;
    let mut on_c = joined(&cluster, 2, STAFF_A3, UNIT_A).await;
    // Presence crosses nodes: the late joiner's Joined lists everyone.
    let burst = talker.talk(UNIT_A, Class::Normal).await.unwrap();
    for listener in [&mut on_b, &mut on_c] {
        let taken = listener
            .wait_for(|m| match m {
                ServerMsg::FloorTaken {
                    speaker, burst: b, ..
                } => Some(Ok((*speaker, *b))),
                _ => None,
            })
            .await
            .unwrap();
        assert_eq!(taken, (TerminalId(GUARD_A1), burst));
    }
    const FRAMES: u16 = 50;
    for seq in 0..FRAMES {
        talker
            .send_voice(UNIT_A, burst, seq, OPUS, seq + 1 == FRAMES)
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (listener, name) in [(&on_b, "b"), (&on_c, "c")] {
        let got = hear(listener, FRAMES as usize, Duration::from_secs(5)).await;
        assert_eq!(got.len(), FRAMES as usize, "frames heard on node {name}");
        for (i, v) in got.iter().enumerate() {
            assert_eq!(v.header.speaker, GUARD_A1, "the gateway stamps the speaker");
            assert_eq!(v.header.burst, burst);
            assert_eq!(v.header.seq, i as u16, "in order, each once");
        }
    }
    talker.release(UNIT_A).unwrap();
    for listener in [&mut on_b, &mut on_c] {
        listener
            .wait_for(|m| {
                matches!(m, ServerMsg::FloorIdle { group } if *group == UNIT_A).then_some(Ok(()))
            })
            .await
            .unwrap();
    }
    // Nothing more arrives: no frame was delivered twice.
    assert!(hear(&on_b, 1, Duration::from_millis(300)).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contention_across_nodes_grants_one_talker_at_a_time() {
    let nats = NatsCluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let cluster = GatewayCluster::start(dir.path(), 3, ORG, &nats);
    // Two guards and a member of staff (lower priority: a guard's request
    // pre-empts the staff member's burst, as on one node).
    let ids = [GUARD_A1, GUARD_A2, STAFF_A3];
    let mut terminals = Vec::new();
    for (node, id) in ids.iter().enumerate() {
        terminals.push(joined(&cluster, node, *id, UNIT_A).await);
    }
    let mut bursts = Vec::new();
    for _round in 0..5 {
        // All three press at once, each on its own node.
        for t in &terminals {
            t.send(ptt_codec::ClientMsg::FloorRequest {
                group: UNIT_A,
                class: Class::Normal,
            })
            .unwrap();
        }
        // Whoever is granted talks briefly and releases; a grant while
        // another holds the floor must be a pre-emption of that holder.
        let mut holder: Option<(usize, u16)> = None;
        let mut quiet_since = Instant::now();
        let round = Instant::now();
        loop {
            assert!(
                round.elapsed() < Duration::from_secs(20),
                "the round never ended"
            );
            let mut any = false;
            for i in 0..3 {
                let Ok(msg) = terminals[i]
                    .next_event_within(Duration::from_millis(10))
                    .await
                else {
                    continue;
                };
                any = true;
                match msg {
                    ServerMsg::FloorGranted { burst, .. } => {
                        if let Some((h, hb)) = holder {
                            assert_ne!(h, i, "granted twice");
                            // The holder must have been pre-empted.
                            let revoked = terminals[h]
                                .wait_for(|m| match m {
                                    ServerMsg::FloorRevoked { burst, cause, .. } => {
                                        Some(Ok((*burst, *cause)))
                                    }
                                    ServerMsg::FloorGranted { .. } => {
                                        Some(Err(Error::StreamClosed))
                                    }
                                    _ => None,
                                })
                                .await
                                .unwrap_or_else(|_| {
                                    panic!("{} granted while {} talks", ids[i], ids[h])
                                });
                            assert_eq!(revoked, (hb, RevokeCause::Preempted));
                        }
                        holder = Some((i, burst));
                        bursts.push(burst);
                    }
                    // Read here when the new grant was read first.
                    ServerMsg::FloorRevoked { burst, .. }
                        if holder.is_some_and(|(h, b)| h == i && b == burst) =>
                    {
                        holder = None;
                    }
                    _ => {}
                }
            }
            if any {
                quiet_since = Instant::now();
            } else if let Some((h, _)) = holder.take() {
                tokio::time::sleep(Duration::from_millis(50)).await;
                terminals[h].release(UNIT_A).unwrap();
            } else if quiet_since.elapsed() > Duration::from_millis(1500) {
                break;
            }
        }
    }
    // One arbiter numbers every burst: strictly increasing, never twice.
    assert!(bursts.len() >= 10, "bursts {bursts:?}");
    assert!(bursts.windows(2).all(|w| w[0] < w[1]), "bursts {bursts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_arbiters_death_hands_the_group_over_within_seconds() {
    let nats = NatsCluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = GatewayCluster::start(dir.path(), 3, ORG, &nats);
    let (arbiter, _next) = arbiters(UNIT_A);
    let others: Vec<usize> = (0..3).filter(|&n| n != arbiter).collect();
    let mut talker = joined(&cluster, others[0], GUARD_A1, UNIT_A).await;
    let listener = joined(&cluster, others[1], GUARD_A2, UNIT_A).await;
    let burst = talker.talk(UNIT_A, Class::Normal).await.unwrap();
    talker.send_voice(UNIT_A, burst, 0, OPUS, false).unwrap();
    assert_eq!(hear(&listener, 1, Duration::from_secs(3)).await.len(), 1);

    // The arbiter dies mid-burst: the talker's own node revokes the burst.
    let killed = Instant::now();
    cluster.kill(arbiter);
    let revoked = talker
        .wait_for(|m| match m {
            ServerMsg::FloorRevoked { cause, .. } => Some(Ok(*cause)),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(revoked, RevokeCause::ArbiterLost);
    // Until the new arbiter has waited out its takeover, a talk key is
    // refused at once with a clear cause (never left hanging), then granted.
    let mut refusals = 0;
    let (granted_after, burst) = loop {
        match talker.request_floor(UNIT_A, Class::Normal).await.unwrap() {
            FloorAnswer::Granted(burst) => break (killed.elapsed(), burst),
            FloorAnswer::Denied(cause) => {
                assert_eq!(cause, DenyCause::ArbiterUnavailable);
                refusals += 1;
            }
            FloorAnswer::Queued(p) => panic!("queued at {p} on an idle floor"),
        }
        assert!(killed.elapsed() < Duration::from_secs(10), "no takeover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("takeover: granted {granted_after:?} after the kill, {refusals} refusals before");
    assert!(
        refusals > 0,
        "the takeover waits: some requests must be refused"
    );
    // Voice flows again between the survivors.
    talker.send_voice(UNIT_A, burst, 0, OPUS, false).unwrap();
    let heard = hear(&listener, 5, Duration::from_secs(3)).await;
    assert!(heard
        .iter()
        .any(|v| v.header.burst == burst && v.header.speaker == GUARD_A1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_servers_death_is_a_reconnect() {
    let mut nats = NatsCluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let cluster = GatewayCluster::start(dir.path(), 3, ORG, &nats);
    let mut talker = joined(&cluster, 0, GUARD_A1, UNIT_A).await;
    let on_b = joined(&cluster, 1, GUARD_A2, UNIT_A).await;
    let on_c = joined(&cluster, 2, STAFF_A3, UNIT_A).await;
    // Each server in turn is killed and restarted, so that every node
    // loses the server it is connected to once, whichever it is.
    let mut seq = 0;
    for server in 0..3 {
        let killed = Instant::now();
        nats.kill(server);
        let back = loop {
            assert!(
                killed.elapsed() < Duration::from_secs(15),
                "voice never crossed nodes again after server {server} died"
            );
            let burst = match talker.talk(UNIT_A, Class::Normal).await {
                Ok(b) => b,
                Err(Error::Denied(DenyCause::ArbiterUnavailable)) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(e) => panic!("{e}"),
            };
            for _ in 0..5 {
                talker.send_voice(UNIT_A, burst, seq, OPUS, false).unwrap();
                seq += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let b = hear(&on_b, 5, Duration::from_millis(500)).await;
            let c = hear(&on_c, 5, Duration::from_millis(500)).await;
            talker.release(UNIT_A).unwrap();
            if b.iter()
                .chain(&c)
                .filter(|v| v.header.burst == burst)
                .count()
                == 10
            {
                break killed.elapsed();
            }
        };
        println!("voice across nodes again {back:?} after NATS server {server} was killed");
        nats.restart(server);
    }
}

/// Cross-node voice latency and CPU, for BENCHMARKS.md (not a test: run
/// with `--ignored --nocapture`). A talker on node a; a listener on a and
/// one on b; 20 ms frames for 20 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; see BENCHMARKS.md"]
async fn measure_cross_node_voice() {
    let nats = NatsCluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let cluster = GatewayCluster::start(dir.path(), 3, ORG, &nats);
    let mut talker = joined(&cluster, 0, GUARD_A1, UNIT_A).await;
    let same = Arc::new(joined(&cluster, 0, GUARD_A2, UNIT_A).await);
    let other = Arc::new(joined(&cluster, 1, STAFF_A3, UNIT_A).await);
    let burst = talker.talk(UNIT_A, Class::Normal).await.unwrap();
    const FRAMES: usize = 1000;
    let start = Instant::now();
    let cpu = |i: usize| cpu_seconds(cluster.pid(i).unwrap());
    let cpu_before = [cpu(0), cpu(1), cpu(2)];
    let listen = |t: Arc<Terminal>| {
        tokio::spawn(async move {
            let mut at = vec![None; FRAMES];
            while let Ok(Ok(v)) = tokio::time::timeout(Duration::from_secs(2), t.recv_voice()).await
            {
                if let Some(slot) = at.get_mut(v.header.seq as usize) {
                    *slot = Some(start.elapsed());
                }
            }
            at
        })
    };
    let (same_rx, other_rx) = (listen(same), listen(other));
    let mut sent = Vec::with_capacity(FRAMES);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for seq in 0..FRAMES {
        tick.tick().await;
        sent.push(start.elapsed());
        talker
            .send_voice(UNIT_A, burst, seq as u16, &[0x55; 60], false)
            .unwrap();
    }
    let same_at = same_rx.await.unwrap();
    let other_at = other_rx.await.unwrap();
    let cpu_after = [cpu(0), cpu(1), cpu(2)];
    let latency = |at: &[Option<Duration>]| {
        let mut l: Vec<f64> = at
            .iter()
            .zip(&sent)
            .filter_map(|(r, s)| r.map(|r| (r - *s).as_secs_f64() * 1000.0))
            .collect();
        l.sort_by(f64::total_cmp);
        let q = |p: f64| l[((l.len() - 1) as f64 * p) as usize];
        (l.len(), q(0.5), q(0.99))
    };
    let (n_same, p50_same, p99_same) = latency(&same_at);
    let (n_other, p50_other, p99_other) = latency(&other_at);
    println!("same node:  {n_same}/{FRAMES} frames, p50 {p50_same:.2} ms, p99 {p99_same:.2} ms");
    println!("other node: {n_other}/{FRAMES} frames, p50 {p50_other:.2} ms, p99 {p99_other:.2} ms");
    println!(
        "added by the hop: p50 {:.2} ms, p99 {:.2} ms",
        p50_other - p50_same,
        p99_other - p99_same
    );
    for (i, name) in ["a (talker's)", "b (listener's)", "c (idle)"]
        .iter()
        .enumerate()
    {
        let used = cpu_after[i] - cpu_before[i];
        println!(
            "node {name}: {:.1} us CPU per frame sent ({used:.3} s over {FRAMES} frames)",
            used / FRAMES as f64 * 1e6
        );
    }
}

/// Floor grant latency on an idle floor, for BENCHMARKS.md (not a test: run
/// with `--ignored --nocapture`): talk key to `FloorGranted`, for a terminal
/// on the group's arbiter node and for one on another node, 300 presses
/// each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; see BENCHMARKS.md"]
async fn measure_cross_node_grant_latency() {
    let nats = NatsCluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let cluster = GatewayCluster::start(dir.path(), 3, ORG, &nats);
    let (arbiter, _) = arbiters(UNIT_A);
    let elsewhere = (arbiter + 1) % 3;
    let _listener = joined(&cluster, (arbiter + 2) % 3, STAFF_A3, UNIT_A).await;
    for (node, id, what) in [
        (arbiter, GUARD_A1, "on the arbiter's node"),
        (elsewhere, GUARD_A2, "on another node"),
    ] {
        let mut t = joined(&cluster, node, id, UNIT_A).await;
        let mut ms = Vec::new();
        for _ in 0..300 {
            let pressed = Instant::now();
            t.talk(UNIT_A, Class::Normal).await.unwrap();
            ms.push(pressed.elapsed().as_secs_f64() * 1000.0);
            t.release(UNIT_A).unwrap();
            // The release reaches the arbiter before the next press.
            t.wait_for(|m| matches!(m, ServerMsg::FloorIdle { .. }).then_some(Ok(())))
                .await
                .ok();
        }
        ms.sort_by(f64::total_cmp);
        let q = |p: f64| ms[((ms.len() - 1) as f64 * p) as usize];
        println!(
            "grant latency {what}: p50 {:.2} ms, p99 {:.2} ms",
            q(0.5),
            q(0.99)
        );
        t.close();
    }
}

/// User plus system CPU seconds of process `pid` so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_keeps_the_group_talking() {
    let nats = NatsCluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = GatewayCluster::start(dir.path(), 3, ORG, &nats);
    for stopped in 0..3 {
        let (t, l) = ((stopped + 1) % 3, (stopped + 2) % 3);
        let mut talker = joined(&cluster, t, GUARD_A1, UNIT_A).await;
        let listener = joined(&cluster, l, GUARD_A2, UNIT_A).await;
        let mut moved = joined(&cluster, stopped, STAFF_A3, UNIT_A).await;
        let burst = talker.talk(UNIT_A, Class::Normal).await.unwrap();
        talker.send_voice(UNIT_A, burst, 0, OPUS, false).unwrap();
        assert_eq!(hear(&listener, 1, Duration::from_secs(3)).await.len(), 1);

        // A graceful stop: the node's terminal is closed and moves to a
        // surviving node; the group goes on with at most one more press.
        let stopping = Instant::now();
        cluster.stop(stopped);
        while moved.next_event().await.is_ok() {}
        moved = joined(&cluster, t, STAFF_A3, UNIT_A).await;
        let reconnected = stopping.elapsed();
        let mut presses = 0;
        let burst = loop {
            assert!(
                stopping.elapsed() < Duration::from_secs(15),
                "the group never talked again"
            );
            presses += 1;
            talker.release(UNIT_A).unwrap();
            match talker.talk(UNIT_A, Class::Normal).await {
                Ok(b) => break b,
                Err(Error::Denied(DenyCause::ArbiterUnavailable)) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("{e}"),
            }
        };
        let talking = stopping.elapsed();
        for seq in 1..=5 {
            talker.send_voice(UNIT_A, burst, seq, OPUS, false).unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for (who, t) in [("listener", &listener), ("moved terminal", &moved)] {
            let got = hear(t, 5, Duration::from_secs(3)).await;
            assert!(
                got.iter().any(|v| v.header.burst == burst),
                "the {who} heard nothing after node {stopped} stopped"
            );
        }
        println!(
            "node {stopped} stopped: its terminal back in {reconnected:?}, \
             the group talking again {talking:?} after the stop ({presses} presses)"
        );
        talker.close();
        listener.close();
        moved.close();
        cluster.restart(stopped);
        cluster.wait_settled();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_reach_consoles_on_every_node() {
    let nats = NatsCluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let cluster = GatewayCluster::start(dir.path(), 3, ORG, &nats);
    let mut console = cluster.terminal(0, CONSOLE_PS).await;
    console.watch_positions(3).unwrap();
    let guard = cluster.terminal(1, GUARD_A1).await;
    // The watch is set up once the console's first message was handled;
    // report until the update arrives.
    let update = async {
        loop {
            guard
                .report_position(291_000_000, 1_196_000_000, 8)
                .unwrap();
            if let Ok(ServerMsg::PositionUpdate {
                terminal, lat_e7, ..
            }) = console.next_event_within(Duration::from_millis(200)).await
            {
                break (terminal, lat_e7);
            }
        }
    };
    let (terminal, lat) = tokio::time::timeout(Duration::from_secs(10), update)
        .await
        .expect("a position from node b reached the console on node a");
    assert_eq!((terminal, lat), (TerminalId(GUARD_A1), 291_000_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_nats_grants_nothing_and_rejoins_cleanly() {
    let mut nats = NatsCluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    // Node i knows only NATS server i.
    let cluster = GatewayCluster::start_pinned(dir.path(), 3, ORG, &nats);
    let mut cut = joined(&cluster, 2, GUARD_A1, UNIT_A).await;
    let mut majority = joined(&cluster, 0, GUARD_A2, UNIT_A).await;
    let listener = joined(&cluster, 1, STAFF_A3, UNIT_A).await;

    nats.kill(2);
    // Node c hears nobody: no quorum, so it refuses with a clear cause.
    cluster.wait_views(&[2], &[2]);
    match cut.request_floor(UNIT_A, Class::Normal).await.unwrap() {
        FloorAnswer::Denied(cause) => assert_eq!(cause, DenyCause::ArbiterUnavailable),
        other => panic!("a node without quorum answered {other:?}"),
    }
    // The majority goes on: a and b arbitrate the group between them.
    cluster.wait_views(&[0, 1], &[0, 1]);
    let burst = majority.talk(UNIT_A, Class::Normal).await.unwrap();
    majority.send_voice(UNIT_A, burst, 0, OPUS, false).unwrap();
    assert_eq!(hear(&listener, 1, Duration::from_secs(3)).await.len(), 1);
    majority.release(UNIT_A).unwrap();

    // The server comes back: c rejoins, resends its members, and its
    // terminal talks to the others again.
    nats.restart(2);
    cluster.wait_settled();
    let burst = loop {
        match cut.talk(UNIT_A, Class::Normal).await {
            Ok(b) => break b,
            Err(Error::Denied(DenyCause::ArbiterUnavailable)) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    for seq in 0..3 {
        cut.send_voice(UNIT_A, burst, seq, OPUS, false).unwrap();
    }
    let heard = hear(&listener, 3, Duration::from_secs(3)).await;
    assert!(
        heard
            .iter()
            .any(|v| v.header.speaker == GUARD_A1 && v.header.burst == burst),
        "the rejoined node's talker is heard on the others"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sos_reaches_the_command_room_on_another_node() {
    let nats = NatsCluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let cluster = GatewayCluster::start(dir.path(), 3, ORG, &nats);
    let mut console = cluster.terminal(0, CONSOLE_PS).await;
    let mut guard = joined(&cluster, 1, GUARD_A1, UNIT_A).await;
    let mut listener = joined(&cluster, 2, GUARD_A2, UNIT_A).await;
    let alert = guard.sos().await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), console.next_alert())
        .await
        .expect("the SOS reached the station's console on node a")
        .unwrap();
    assert_eq!(got.alert, alert, "one id cluster-wide");
    assert_eq!(got.issuer, TerminalId(GUARD_A1));
    assert_eq!(got.body.kind, ptt_codec::AlertKind::Sos);
    // Its hot mic is the unit's emergency burst, seen on a third node.
    let taken = listener
        .wait_for(|m| match m {
            ServerMsg::FloorTaken { speaker, class, .. } => Some(Ok((*speaker, *class))),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(taken, (TerminalId(GUARD_A1), Class::Emergency));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_report_covers_units_on_every_node() {
    let nats = NatsCluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let cluster = GatewayCluster::start(dir.path(), 3, ORG, &nats);
    let mut console = cluster.terminal(0, CONSOLE_PS).await;
    let mut on_b = cluster.terminal(1, GUARD_A1).await;
    let mut on_c = cluster.terminal(2, GUARD_B1).await;
    let body = ptt_codec::AlertBody {
        kind: ptt_codec::AlertKind::Drill,
        priority: 2,
        ttl_s: 600,
        title: "1-3-8 拉动演练".into(),
        text: "城南路165号".into(),
        location: None,
        attachments: Vec::new(),
    };
    let (drill, _) = console
        .send_alert(ptt_codec::Target::Subtree { node: 3, roles: 0 }, body)
        .await
        .unwrap();
    for guard in [&mut on_b, &mut on_c] {
        assert_eq!(guard.next_alert().await.unwrap().alert, drill);
        guard
            .receipt(drill, ptt_codec::ReceiptStatus::Accepted, "")
            .await
            .unwrap();
    }
    // The receipts reach node a through the stream: the report there
    // counts both units, whichever node their guards are on.
    let start = Instant::now();
    loop {
        let json = console.drill_report(drill).await.unwrap();
        let report: serde_json::Value = serde_json::from_str(&json).unwrap();
        let reached = |unit: GroupId| {
            report["rows"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["level"] == "unit" && r["node"] == unit.0)
                .map(|r| r["accept"]["reached"].as_u64().unwrap_or(0))
                .unwrap_or(0)
        };
        if reached(UNIT_A) == 1 && reached(UNIT_B) == 1 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "report: {json}");
        // Drill report queries are limited to 1 a second (bursts of 10,
        // `limits.drill_query`): poll within it.
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
}
