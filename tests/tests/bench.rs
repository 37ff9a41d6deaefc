//! `ptt-bench` end to end, on a tiny workload: the baseline relay and the
//! gateway both run and the report has the fields the benchmark table is
//! built from. Figures are not judged here (BENCHMARKS.md does that on a
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
