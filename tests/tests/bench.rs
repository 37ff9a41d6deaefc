//! `ptt-bench` end to end, on a tiny workload: the baseline relay and the
//! gateway (once per listener kind) run and the report has the fields the
//! benchmark table is built from. Figures are not judged here (BENCHMARKS.md does that on a
//! quiet machine); only that each was measured.

use std::process::Command;

use ptt_tests::bin;

#[test]
fn ptt_bench_measures_the_baseline_and_the_gateway_on_one_workload() {
    // ptt-bench finds the other binaries next to itself.
    for name in ["terminal-sim", "ptt-gateway", "baseline-relay"] {
        bin(name);
    }
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("bench.json");
    let out = Command::new(bin("ptt-bench"))
        .args([
            "--workload",
            "voice-smoke",
            "--groups",
            "3",
            "--duration",
            "2",
        ])
        .arg("--report")
        .arg(&report)
        .arg("--workdir")
        .arg(dir.path().join("work"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ratio gateway/baseline"), "{stdout}");
    // CPU time comes from /proc in 10 ms clock ticks: on a workload this
    // small a relay may use less than one, so figures may be 0 (and the
    // ratio then null); they must be there.
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    for (side, key) in [
        ("baseline", "cpu_us_per_frame"),
        ("baseline", "delivered_ratio"),
        ("baseline", "rss_mb"),
        ("gateway", "cpu_us_per_frame"),
        ("gateway", "delivered_ratio"),
        ("gateway", "rss_mb"),
    ] {
        let v = r[side][key].as_f64();
        assert!(v.is_some_and(|v| v >= 0.0), "{side}.{key} in {r}");
    }
    assert!(r["baseline"]["rss_mb"].as_f64().unwrap() > 0.0, "{r}");
    for p in ["p50", "p99", "p999"] {
        assert!(r["gateway"]["latency_ms"][p].is_number(), "{p} in {r}");
        assert!(r["baseline"]["latency_ms"][p].is_number(), "{p} in {r}");
    }
    assert!(
        r["gateway"]["internal_latency_ms"]["p99"].is_number(),
        "{r}"
    );
    // The ratio is there, and null exactly when the baseline measured no CPU.
    let ratio = r.get("ratio").unwrap_or_else(|| panic!("no ratio in {r}"));
    let base = r["baseline"]["cpu_us_per_frame"].as_f64().unwrap();
    let gateway = r["gateway"]["cpu_us_per_frame"].as_f64().unwrap();
    if base > 0.0 {
        let ratio = ratio
            .as_f64()
            .unwrap_or_else(|| panic!("ratio {ratio} with a baseline of {base} us: {r}"));
        assert!(
            (ratio - gateway / base).abs() <= 1e-9 * ratio.abs().max(1.0),
            "ratio {ratio} is not {gateway} / {base}: {r}"
        );
    } else {
        assert!(
            ratio.is_null(),
            "ratio {ratio} without a baseline figure: {r}"
        );
    }
    // Delivery is judged loosely: this is a debug build on a shared machine.
    for side in ["baseline", "gateway"] {
        let d = r[side]["delivered_ratio"].as_f64().unwrap();
        assert!(d > 0.9, "{side} delivered {d}: {r}");
    }
    assert!(r["gateway"]["dropped_by_gateway"].is_u64(), "{r}");
    let loss = &r["gateway"]["loss"];
    for key in ["missing", "dropped_by_gateway", "in_harness"] {
        assert!(loss[key].is_u64(), "loss.{key} in {r}");
    }
    listener_kinds_are_both_measured(&r, &stdout);
}

/// The gateway ran once per listener kind (SRTP, QUIC datagrams), each
/// with the keys the kinds table and the targets are built from, and the
/// kind really was the one asked for.
fn listener_kinds_are_both_measured(r: &serde_json::Value, stdout: &str) {
    assert!(stdout.contains("raw relay"), "{stdout}");
    let base = r["baseline"]["cpu_us_per_frame"].as_f64().unwrap();
    for kind in ["srtp", "datagram"] {
        let k = &r["kinds"][kind];
        assert!(
            stdout.lines().any(|l| l.starts_with(kind)),
            "{kind}: {stdout}"
        );
        assert_eq!(k["media"], kind, "{r}");
        let cpu = k["cpu_us_per_frame"].as_f64();
        assert!(cpu.is_some_and(|c| c >= 0.0), "{kind}: {r}");
        let d = k["delivered_ratio"].as_f64().unwrap();
        assert!(d > 0.9, "{kind} delivered {d}: {r}");
        for p in ["p50", "p99"] {
            assert!(k["latency_ms"][p].is_number(), "{kind} {p}: {r}");
        }
        assert!(k["internal_latency_ms"]["p99"].is_number(), "{kind}: {r}");
        assert!(k["read_to_socket_ms"]["p99"].is_number(), "{kind}: {r}");
        // Null only when the baseline measured no CPU (as `ratio` above).
        assert_eq!(k["ratio"].is_number(), base > 0.0, "{kind}: {r}");
        // Every talker's frame reached several listeners; what listeners
        // sent per frame heard is a small number, never negative. Generous:
        // on 2 s the terminals' connection keep-alives weigh a lot.
        let up = k["listener_uplink_packets_per_frame"].as_f64();
        assert!(
            up.is_some_and(|u| (0.0..20.0).contains(&u)),
            "{kind} uplink {up:?}: {r}"
        );
        assert!(k["dropped_by_gateway"].is_u64(), "{kind}: {r}");
    }
    // The terminals took the form asked for: SRTP terminals verified their
    // path (a loaded machine may make a few fall back), datagram terminals
    // never offered SRTP.
    let srtp = &r["kinds"]["srtp"]["terminals"];
    assert!(srtp["srtp"].as_u64().unwrap() > 0, "{r}");
    let datagram = &r["kinds"]["datagram"]["terminals"];
    assert_eq!(datagram["srtp"], 0, "{r}");
    assert!(datagram["datagram"].as_u64().unwrap() > 0, "{r}");
    // `gateway` and `ratio` are the default kind's (SRTP).
    assert_eq!(r["gateway"]["media"], "srtp", "{r}");
    assert_eq!(
        r["gateway"]["listener_uplink_packets_per_frame"],
        r["kinds"]["srtp"]["listener_uplink_packets_per_frame"],
        "{r}"
    );
    assert_eq!(r["ratio"], r["kinds"]["srtp"]["ratio"], "{r}");
    // Each target is judged (or null where its figure is missing) on
    // the default kind.
    let t = &r["targets"];
    assert_eq!(t["kind"], "srtp", "{r}");
    assert_eq!(t["at_city_voice_peak"], false, "{r}");
    for target in [
        "cpu_ratio",
        "gateway_loss",
        "internal_p99_ms",
        "listener_uplink_packets_per_frame",
    ] {
        let pass = &t[target]["pass"];
        assert!(pass.is_boolean() || pass.is_null(), "{target}: {r}");
    }
    assert!(t["gateway_loss"]["pass"].is_boolean(), "{r}");
    assert!(t["all_pass"].is_boolean(), "{r}");
}

#[test]
fn ptt_bench_runs_a_workload_on_three_gateway_nodes_over_nats() {
    for name in ["terminal-sim", "ptt-gateway"] {
        bin(name);
    }
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("bench.json");
    let out = Command::new(bin("ptt-bench"))
        .args([
            "--workload",
            "voice-smoke",
            "--groups",
            "3",
            "--duration",
            "3",
            "--nodes",
            "3",
        ])
        .arg("--report")
        .arg(&report)
        .arg("--workdir")
        .arg(dir.path().join("work"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("latency added by the NATS hop"), "{stdout}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let c = &r["cluster"];
    assert_eq!(c["nodes"], 3, "{r}");
    for run in ["single_node", "cluster"] {
        let d = c[run]["delivered_ratio"].as_f64().unwrap();
        // Generous, as the test above: a debug build on a loaded 2-core CI
        // machine, three gateways, three NATS servers and the harness.
        assert!(d > 0.9, "{run} delivered {d}: {r}");
        assert!(c[run]["frames_sent"].as_u64().unwrap() > 0, "{run}: {r}");
        assert!(c[run]["latency_ms"]["all"]["p99"].is_number(), "{run}: {r}");
    }
    assert_eq!(
        c["single_node"]["nodes"].as_array().unwrap().len(),
        1,
        "{r}"
    );
    let nodes = c["cluster"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{r}");
    // Terminals on every node, every node's CPU read (figures may be 0 on a
    // workload this small: /proc counts 10 ms ticks).
    for node in nodes {
        assert!(node["terminals"].as_u64().unwrap() > 0, "{node}");
        assert!(
            node["cpu_seconds"].as_f64().is_some_and(|s| s >= 0.0),
            "{node}"
        );
    }
    let nats = &c["cluster"]["nats"];
    assert_eq!(nats["servers"], 3, "{r}");
    assert!(
        nats["cpu_seconds"].as_f64().is_some_and(|s| s >= 0.0),
        "{r}"
    );
    // Groups have members on several nodes: voice crossed NATS, and its
    // latency is told apart from voice that stayed on a node.
    for path in ["same_node", "other_node"] {
        let d = c["cluster"]["delivered_ratio_by_path"][path].as_f64();
        assert!(d.is_some_and(|d| d > 0.9), "{path}: {r}");
        assert!(
            c["cluster"]["latency_ms"][path]["p50"].is_number(),
            "{path}: {r}"
        );
    }
    assert!(c["latency_added_by_nats_ms"]["p50"].is_number(), "{r}");
}
