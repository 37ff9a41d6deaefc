//! The real binaries, as an operator runs them: generate a city, serve it,
//! drive simulated terminals against it, stop it with SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ptt_tests::{bin, free_udp_port, wait_for_log};

#[test]
fn gen_city_serve_simulate_and_stop() {
    let dir = tempfile::tempdir().unwrap();
    let org = dir.path().join("city.toml");
    let status = Command::new(bin("terminal-sim"))
        .args(["gen-city", "--units", "30", "--out"])
        .arg(&org)
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        dir.path().join("city.key").exists(),
        "gen-city writes the provisioning key"
    );

    let port = free_udp_port();
    let log = dir.path().join("gateway.log");
    let data = dir.path().join("data");
    let mut gateway = Command::new(bin("ptt-gateway"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--org"])
        .arg(&org)
        .arg("--data-dir")
        .arg(&data)
        .stderr(std::fs::File::create(&log).unwrap())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_log(&log, "gateway listening", Duration::from_secs(20));
    assert!(
        data.join("cert.pem").exists(),
        "self-signed certificate generated"
    );
    // Secrets and the database are the gateway user's only.
    for (path, expected) in [
        (dir.path().join("city.key"), 0o600),
        (data.clone(), 0o700),
        (data.join("key.pem"), 0o600),
        (data.join("gateway.db"), 0o600),
        (data.join("gateway.db-wal"), 0o600),
        (data.join("gateway.db-shm"), 0o600),
    ] {
        assert_eq!(mode(&path), expected, "{}", path.display());
    }

    let report = dir.path().join("report.json");
    let out = Command::new(bin("terminal-sim"))
        .args(["run", "--gateway", &format!("127.0.0.1:{port}"), "--ca"])
        .arg(data.join("cert.pem"))
        .arg("--org")
        .arg(&org)
        .args([
            "--scenario",
            "voice-steady",
            "--duration",
            "3",
            "--groups",
            "5",
        ])
        .args(["--gateway-pid", &gateway.id().to_string(), "--report"])
        .arg(&report)
        .arg("--record-dir")
        .arg(dir.path().join("heard"))
        .arg("--plots")
        .arg(dir.path().join("plots"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "terminal-sim failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("delivered"), "{summary}");
    // The plots are PNG images (setup.sh installs the font they need).
    for png in ["latency-cdf.png", "delivery-over-time.png"] {
        let bytes = std::fs::read(dir.path().join("plots").join(png)).unwrap();
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{png}");
        assert!(bytes.len() > 10_000, "{png} has a plot in it");
    }

    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let v = &r["voice"];
    assert!(v["frames_sent"].as_u64().unwrap() > 0, "{r}");
    assert!(v["frames_received"].as_u64().unwrap() > 0, "{r}");
    for key in [
        "frames_to_non_members",
        "overlapping_talkers",
        "wrong_speaker",
    ] {
        assert_eq!(v[key].as_u64(), Some(0), "{key} in {r}");
    }
    for key in ["p50", "p90", "p99", "p999", "max"] {
        assert!(v["latency_ms"][key].is_number(), "latency {key} in {r}");
    }
    assert!(
        r["gateway"]["cpu_us_per_delivered_frame"].is_number(),
        "{r}"
    );
    assert!(r["floor"]["granted"].as_u64().unwrap() > 0, "{r}");
    let wavs = std::fs::read_dir(dir.path().join("heard")).unwrap().count();
    assert_eq!(wavs, 5, "one recording per group");

    // The second start reuses the certificate instead of generating another.
    let cert = std::fs::read(data.join("cert.pem")).unwrap();

    // SIGTERM: graceful stop.
    let started = Instant::now();
    let pid = gateway.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = loop {
        if let Some(s) = gateway.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "gateway did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "gateway exit status {status}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("SIGTERM received") && text.contains("gateway stopped"),
        "{text}"
    );

    let mut again = Command::new(bin("ptt-gateway"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{}", free_udp_port()),
            "--org",
        ])
        .arg(&org)
        .arg("--data-dir")
        .arg(&data)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_for_log(&log, "gateway listening", Duration::from_secs(20));
    again.kill().unwrap();
    let _ = again.wait();
    assert_eq!(
        std::fs::read(data.join("cert.pem")).unwrap(),
        cert,
        "certificate reused"
    );
}

#[test]
fn serve_without_org_explains_what_is_missing() {
    let out = Command::new(bin("ptt-gateway"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no org file"), "{err}");
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    meta.permissions().mode() & 0o7777
}

#[test]
fn serve_refuses_a_provisioning_key_others_can_read_saying_how_to_fix_it() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let org = dir.path().join("city.toml");
    assert!(Command::new(bin("terminal-sim"))
        .args(["gen-city", "--units", "3", "--out"])
        .arg(&org)
        .status()
        .unwrap()
        .success());
    let key = dir.path().join("city.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let data = dir.path().join("data");
    let out = Command::new(bin("ptt-gateway"))
        .args(["serve", "--listen", "127.0.0.1:0", "--org"])
        .arg(&org)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success(), "served with a world-readable key");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("chmod 600 {}", key.display())) && err.contains("0644"),
        "{err}"
    );
    assert!(!data.exists(), "refused before anything was written");
}

#[test]
fn serve_refuses_an_out_of_bounds_config_naming_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, "[transport]\nmax_handshakes = 0\n").unwrap();
    let out = Command::new(bin("ptt-gateway"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("transport.max_handshakes") && err.contains("at least 1"),
        "{err}"
    );
}

#[test]
fn the_alert_scenario_delivers_every_alert_and_collects_receipts() {
    let city = City::start(40);
    // A quick variant of alert-subtree: short delays.
    let (_, r) = city.run(
        "name = \"quick-alerts\"\npattern = \"alerts\"\nburst_ms = 0\ngap_ms = 700\nrespond_ms = 200\narrive_ms = 200\naccept_ratio = 0.5\n",
        2,
        40,
    );
    let a = &r["alerts"];
    let confirmed = a["confirmed"].as_u64().unwrap();
    assert!(confirmed >= 2, "{r}");
    assert_eq!(a["created"], a["confirmed"], "{r}");
    assert!(a["expected_deliveries"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(a["delivered"], a["expected_deliveries"], "{r}");
    assert_eq!(a["lost"].as_u64(), Some(0), "{r}");
    assert_eq!(a["duplicates_shown"].as_u64(), Some(0), "{r}");
    let responded = a["accepted"].as_u64().unwrap() + a["rejected"].as_u64().unwrap();
    assert_eq!(
        responded,
        a["delivered"].as_u64().unwrap(),
        "everyone answered a dispatch: {r}"
    );
    assert_eq!(a["arrived"], a["accepted"], "{r}");
    for key in ["p50", "p99", "max"] {
        assert!(a["delivery_latency_ms"][key].is_number(), "{r}");
    }
}

#[test]
fn frames_a_preempted_talker_sent_too_late_are_refused_not_lost() {
    let mut city = City::start(40);
    let (out, r) = city.run_scenario("floor-contention".as_ref(), 4, 20);
    let v = &r["voice"];
    assert!(r["floor"]["preempted"].as_u64().unwrap() > 0, "{r}");
    for key in [
        "frames_to_non_members",
        "overlapping_talkers",
        "wrong_speaker",
    ] {
        assert_eq!(v[key].as_u64(), Some(0), "{key} in {r}");
    }
    let counters = city.stop();
    // Every frame the harness takes out of the expected deliveries was
    // refused by the gateway as not sent by the floor holder: the harness
    // never excuses a frame the gateway relayed.
    let refused = v["frames_refused_after_revoke"].as_u64().unwrap();
    let not_holder = counters["voice_not_holder"].as_u64().unwrap();
    assert!(refused <= not_holder, "{refused} > {not_holder}: {r}");
    if refused > 0 {
        let summary = String::from_utf8_lossy(&out.stdout);
        assert!(
            summary.contains("after their floor was revoked"),
            "{summary}"
        );
    }
}

#[test]
fn a_drill_is_timed_reported_over_the_protocol_and_exported_by_the_cli() {
    let city = City::start(30);
    // The drill scenario with delays in hundreds of milliseconds.
    let (out, r) = city.run(
        "name = \"quick-drill\"\npattern = \"alerts\"\nburst_ms = 0\ngap_ms = 86400000\n\
         alert_kind = \"drill\"\naccept_ratio = 0.8\nrespond_ms = 300\narrive_ms = 300\n\
         response = { log-normal = { sigma = 0.5 } }\n",
        1,
        30,
    );
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("drill"), "{summary}");
    let drills = r["drills"].as_array().expect("drill reports in the JSON");
    assert!(!drills.is_empty(), "{r}");
    let total = drills
        .iter()
        .flat_map(|d| d["rows"].as_array().unwrap())
        .filter(|row| row["level"] == "total")
        .map(|row| row["accept"]["reached"].as_u64().unwrap())
        .sum::<u64>();
    assert!(total > 0, "some unit accepted: {r}");
    let alert = drills[0]["alert"].as_u64().unwrap();

    // The CLI lists it and exports the same report, beside the running gateway.
    let cli = |args: &[&str]| {
        let out = Command::new(bin("ptt-gateway"))
            .arg("drill-report")
            .arg("--data-dir")
            .arg(&city.data)
            .arg("--org")
            .arg(&city.org)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(cli(&["--list"]).contains(&format!("\n{alert}\t")));
    let json: serde_json::Value =
        serde_json::from_str(&cli(&["--alert", &alert.to_string()])).unwrap();
    assert_eq!(
        json["rows"], drills[0]["rows"],
        "same arithmetic, same data"
    );
    let csv_path = city.dir.path().join("drill.csv");
    cli(&[
        "--alert",
        &alert.to_string(),
        "--format",
        "csv",
        "--out",
        csv_path.to_str().unwrap(),
    ]);
    let csv = std::fs::read_to_string(&csv_path).unwrap();
    assert!(
        csv.starts_with("level,node,name,parent,units,members,"),
        "{csv}"
    );
    assert!(
        csv.lines().any(|l| l.starts_with("police_station,")),
        "{csv}"
    );
    assert!(csv.lines().last().unwrap().starts_with("total,0,"), "{csv}");
    // A drill that does not exist is a clear error.
    let out = Command::new(bin("ptt-gateway"))
        .args(["drill-report", "--data-dir"])
        .arg(&city.data)
        .arg("--org")
        .arg(&city.org)
        .args(["--alert", "999999"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no alert 999999"));
}

/// A generated city with a gateway process serving it on loopback; the
/// gateway is killed when this is dropped.
struct City {
    dir: tempfile::TempDir,
    org: std::path::PathBuf,
    data: std::path::PathBuf,
    port: u16,
    gateway: std::process::Child,
}

impl City {
    fn start(units: u32) -> City {
        let dir = tempfile::tempdir().unwrap();
        let org = dir.path().join("city.toml");
        assert!(Command::new(bin("terminal-sim"))
            .args(["gen-city", "--units", &units.to_string(), "--out"])
            .arg(&org)
            .status()
            .unwrap()
            .success());
        let port = free_udp_port();
        let log = dir.path().join("gateway.log");
        let data = dir.path().join("data");
        let gateway = Command::new(bin("ptt-gateway"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--org"])
            .arg(&org)
            .arg("--data-dir")
            .arg(&data)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        wait_for_log(&log, "gateway listening", Duration::from_secs(20));
        City {
            dir,
            org,
            data,
            port,
            gateway,
        }
    }

    /// Writes `toml` as a scenario file and runs it with terminal-sim;
    /// returns its output once it succeeded, and its JSON report.
    fn run(
        &self,
        toml: &str,
        duration: u32,
        groups: u32,
    ) -> (std::process::Output, serde_json::Value) {
        let scenario = self.dir.path().join("scenario.toml");
        std::fs::write(&scenario, toml).unwrap();
        self.run_scenario(scenario.as_os_str(), duration, groups)
    }

    /// Runs a scenario (a name or a file) with terminal-sim; returns its
    /// output once it succeeded, and its JSON report.
    fn run_scenario(
        &self,
        scenario: &std::ffi::OsStr,
        duration: u32,
        groups: u32,
    ) -> (std::process::Output, serde_json::Value) {
        let report = self.dir.path().join("report.json");
        let out = Command::new(bin("terminal-sim"))
            .args([
                "run",
                "--gateway",
                &format!("127.0.0.1:{}", self.port),
                "--ca",
            ])
            .arg(self.data.join("cert.pem"))
            .arg("--org")
            .arg(&self.org)
            .arg("--scenario")
            .arg(scenario)
            .args(["--duration", &duration.to_string()])
            .args(["--groups", &groups.to_string(), "--report"])
            .arg(&report)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
        (out, r)
    }
}

impl City {
    /// Stops the gateway with SIGTERM and returns the counters it logs as it
    /// stops.
    fn stop(&mut self) -> serde_json::Value {
        assert!(Command::new("kill")
            .args(["-TERM", &self.gateway.id().to_string()])
            .status()
            .unwrap()
            .success());
        assert!(self.gateway.wait().unwrap().success());
        let log = std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap();
        let counters = log
            .lines()
            .filter_map(|l| l.split_once("counters=").map(|(_, rest)| rest))
            .next_back()
            .unwrap_or_else(|| panic!("no counters in the log: {log}"));
        serde_json::from_str(counters.trim()).unwrap()
    }
}

impl Drop for City {
    fn drop(&mut self) {
        let _ = self.gateway.kill();
        let _ = self.gateway.wait();
    }
}
