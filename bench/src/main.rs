//! `ptt-bench`: runs a workload against a real gateway process and reports
//! what it cost.
//!
//! It generates a city, starts `ptt-gateway` on a loopback port, drives it
//! with `terminal-sim run --gateway-pid` (so the gateway's own CPU time is
//! measured from /proc, independent of how fast the harness is), stops the
//! gateway with SIGTERM and writes the terminal-sim report plus the
//! gateway's counters as JSON. Use the release build: the binaries are
//! looked up next to this one.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;

#[derive(Debug, Parser)]
#[command(about = "Benchmark the PTT gateway on a loopback workload")]
struct Args {
    /// Workload: a terminal-sim scenario (voice-steady, floor-contention or a TOML file).
    #[arg(long, default_value = "voice-steady")]
    workload: String,
    /// Unit groups exercised.
    #[arg(long, default_value_t = 50)]
    groups: usize,
    /// Seconds of measured traffic.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Units in the generated city (at least `groups`).
    #[arg(long, default_value_t = 300)]
    units: usize,
    /// Where to write the JSON report.
    #[arg(long)]
    report: PathBuf,
    /// Working directory for the city, certificate and logs.
    #[arg(long, default_value = "target/bench")]
    workdir: PathBuf,
}

fn bin(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name(name);
    if !path.exists() {
        bail!(
            "{} not found: build with `cargo build --release --bins`",
            path.display()
        );
    }
    Ok(path)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn wait_for(log: &Path, needle: &str, gateway: &mut Child) -> anyhow::Result<()> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains(needle)
        {
            return Ok(());
        }
        if let Some(status) = gateway.try_wait()? {
            bail!("gateway exited with {status}: see {}", log.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("gateway did not start within 30 s: see {}", log.display())
}

struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // A fresh gateway every run: alerts stored by an earlier run would be
    // forwarded to this run's terminals and skew its figures.
    if args.workdir.join("gateway").exists() {
        std::fs::remove_dir_all(args.workdir.join("gateway"))?;
    }
    std::fs::create_dir_all(&args.workdir)?;
    let org = args.workdir.join("city.toml");
    let status = Command::new(bin("terminal-sim")?)
        .args([
            "gen-city",
            "--units",
            &args.units.max(args.groups).to_string(),
            "--out",
        ])
        .arg(&org)
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("gen-city failed");
    }
    let port = free_port()?;
    let data = args.workdir.join("gateway");
    let log = args.workdir.join("gateway.log");
    let child = Command::new(bin("ptt-gateway")?)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--org"])
        .arg(&org)
        .arg("--data-dir")
        .arg(&data)
        .env("RUST_LOG", "info,quinn=warn")
        .stderr(std::fs::File::create(&log).context("creating the gateway log")?)
        .spawn()
        .context("starting ptt-gateway")?;
    let mut gateway = Gateway(child);
    wait_for(&log, "gateway listening", &mut gateway.0)?;

    let sim_report = args.workdir.join("terminal-sim.json");
    let status = Command::new(bin("terminal-sim")?)
        .args(["run", "--gateway", &format!("127.0.0.1:{port}"), "--ca"])
        .arg(data.join("cert.pem"))
        .arg("--org")
        .arg(&org)
        .args(["--scenario", &args.workload])
        .args(["--duration", &args.duration.to_string()])
        .args(["--groups", &args.groups.to_string()])
        .args(["--gateway-pid", &gateway.0.id().to_string()])
        .arg("--report")
        .arg(&sim_report)
        .status()?;
    drop(gateway);
    if !status.success() {
        bail!("terminal-sim failed");
    }
    let mut report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&sim_report)?)?;
    // The gateway logs its counters when it stops: where loss happened, if any.
    let text = std::fs::read_to_string(&log)?;
    if let Some(json) = text
        .lines()
        .filter_map(|l| l.split_once("counters=").map(|(_, rest)| rest))
        .next_back()
        .and_then(|rest| {
            rest.split_once(" gateway stopped")
                .map(|(j, _)| j)
                .or(Some(rest))
        })
    {
        report["gateway_counters"] =
            serde_json::from_str(json.trim()).unwrap_or(serde_json::Value::Null);
    }
    report["bench"] = serde_json::json!({
        "workload": args.workload,
        "groups": args.groups,
        "duration_s": args.duration,
        "machine": machine(),
    });
    std::fs::write(&args.report, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("report: {}", args.report.display());
    Ok(())
}

/// CPU model and count, for the record.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} x {model}")
}
