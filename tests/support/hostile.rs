//! The hostile-client harness (issue 11): the real `ptt-gateway serve`
//! process on a loopback port, legit traffic beside the attack, probes
//! timing what must keep working, and raw attack tools.
//!
//! A hostile test starts a [`GatewayProcess`] serving [`ORG`], starts a
//! [`Scene`] (legit voice in [`VOICE_GROUP`], the SOS and dispatch probes,
//! a [`Watch`] on the process's memory and data directory), runs one attack
//! for a few seconds with the tools below, and checks the [`Outcome`] with
//! [`Outcome::assert_unharmed`]: the bounds every attack must stay within.
//!
//! Every attacker connects from a UDP socket of its own, as a separate
//! handset would, so its packets never compete with the legit terminals'
//! in the test's own socket buffers.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ptt_codec::control::{split_frame, VERSION};
use ptt_codec::{
    AlertBody, AlertKind, Class, ClientMsg, ErrorCode, GroupId, ServerMsg, Target, TerminalId,
};
use ptt_gateway::org::auth::ProvisioningKey;
use ptt_terminal_sim::terminal::{self, Terminal, ANSWER_TIMEOUT};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{bin, free_udp_port};

/// The org the hostile suite's gateway serves.
///
/// ```text
/// 1 City (city)                         console 100
/// └─ 2 District (district)               console 200 (monitors unit 5)
///    ├─ 3 East (police station)          console 300
///    │  └─ 4 Plaza (station)
///    │     ├─ 5 Plaza unit 1 (unit)      501 attacker; 502 talks, 503, 504 listen
///    │     ├─ 6 Plaza unit 2 (unit)      601, 602 (attackers of their own unit)
///    │     └─ 7 Plaza unit 3 (unit)      701 the SOS probe
///    └─ 9 West (police station)          console 900 (the dispatch probe)
///       └─ 10 Hospital (station)
///          └─ 11 Hospital unit 1 (unit)  1101 the guard dispatched
/// ```
///
/// Legit voice runs in unit 5, where the member attacker 501 is: a
/// stolen handset's owner is in a unit with people talking. SOS attacks
/// come from unit 6, whose floor an SOS takes, never from the voice
/// unit: a real SOS pre-empting legit voice is the gateway doing its job.
pub const ORG: &str = r#"
[[node]]
id = 1
kind = "city"
name = "City"

[[node]]
id = 2
parent = 1
kind = "district"
name = "District"

[[node]]
id = 3
parent = 2
kind = "police_station"
name = "East"

[[node]]
id = 4
parent = 3
kind = "station"
name = "Plaza"

[[node]]
id = 5
parent = 4
kind = "unit"
name = "Plaza unit 1"

[[node]]
id = 6
parent = 4
kind = "unit"
name = "Plaza unit 2"

[[node]]
id = 7
parent = 4
kind = "unit"
name = "Plaza unit 3"

[[node]]
id = 9
parent = 2
kind = "police_station"
name = "West"

[[node]]
id = 10
parent = 9
kind = "station"
name = "Hospital"

[[node]]
id = 11
parent = 10
kind = "unit"
name = "Hospital unit 1"

[[terminal]]
id = 100
name = "City command"
role = "dispatcher"
kind = "console"
node = 1

[[terminal]]
id = 200
name = "District command"
role = "dispatcher"
kind = "console"
node = 2

[[terminal]]
id = 300
name = "East command room"
role = "dispatcher"
kind = "console"
node = 3

[[terminal]]
id = 501
name = "Attacker"
role = "security_guard"
kind = "handheld"
node = 5

[[terminal]]
id = 502
name = "Talker"
role = "security_guard"
kind = "handheld"
node = 5

[[terminal]]
id = 503
name = "Listener staff"
role = "staff"
kind = "phone_app"
node = 5

[[terminal]]
id = 504
name = "Listener police"
role = "police"
kind = "handheld"
node = 5

[[terminal]]
id = 601
name = "Second attacker"
role = "security_guard"
kind = "handheld"
node = 6

[[terminal]]
id = 602
name = "Accomplice"
role = "security_guard"
kind = "handheld"
node = 6

[[terminal]]
id = 701
name = "SOS probe"
role = "security_guard"
kind = "handheld"
node = 7

[[terminal]]
id = 900
name = "West command room"
role = "dispatcher"
kind = "console"
node = 9

[[terminal]]
id = 1101
name = "Dispatched guard"
role = "security_guard"
kind = "handheld"
node = 11
"#;

/// The city command console.
pub const CITY_CONSOLE: u32 = 100;
/// The district console; it monitors the voice group.
pub const DISTRICT_CONSOLE: u32 = 200;
/// The East police station's command room: the station console of units
/// 5, 6 and 7 (their reports and SOS go there).
pub const EAST_CONSOLE: u32 = 300;
/// The member attacker: an ordinary guard of the voice unit.
pub const ATTACKER: u32 = 501;
/// The legit talker of the voice unit.
pub const TALKER: u32 = 502;
/// The legit listeners of the voice group: two members and the district
/// console monitoring it.
pub const LISTENERS: [u32; 3] = [503, 504, DISTRICT_CONSOLE];
/// A second member attacker, in a unit of his own (SOS attacks).
pub const SECOND_ATTACKER: u32 = 601;
/// The second attacker's unit mate (the reader that never reads).
pub const ACCOMPLICE: u32 = 602;
/// Raises an SOS now and then to time its storing.
pub const SOS_PROBE: u32 = 701;
/// Dispatches the guard of another police station to time delivery.
pub const DISPATCH_CONSOLE: u32 = 900;
/// The guard the dispatch probe reaches.
pub const DISPATCHED_GUARD: u32 = 1101;
/// The voice group: unit 5.
pub const VOICE_GROUP: GroupId = GroupId(5);
/// The attacker's co-governance station group (listen-only for him).
pub const STATION: GroupId = GroupId(4);
/// The second attacker's unit.
pub const SECOND_UNIT: GroupId = GroupId(6);
/// The SOS probe's unit.
pub const PROBE_UNIT: GroupId = GroupId(7);
/// The dispatched guard's unit, under another police station.
pub const OTHER_UNIT: GroupId = GroupId(11);

/// Legit voice frames a listener must receive, of those the talker sent
/// (issue 11 item 10).
pub const MIN_VOICE_DELIVERED: f64 = 0.99;
/// An SOS raised during an attack is stored within this (issue 11 item 10).
pub const SOS_STORED_WITHIN: Duration = Duration::from_secs(1);
/// A dispatch sent during an attack reaches an online guard within this
/// (issue 11 item 10).
pub const DISPATCH_DELIVERED_WITHIN: Duration = Duration::from_secs(8);

/// The most memory the gateway process may hold while it serves the
/// suite's dozen terminals through an attack: 128 MiB.
///
/// Where it comes from: the debug gateway holds 13 MiB serving the suite's
/// terminals (measured before every attack: 12.4 to 12.9 MiB; at most
/// 19 MiB through the floods it withstands today). An honest load adds at
/// most the attachments in flight, each held whole today: a 4 MiB photo
/// per upload (`transport.max_uni_streams` = 2 at once per terminal) and
/// per push to a screen or console, about 40 MiB for a few terminals at
/// once; and quinn's buffers of the ~15 connections, which reading peers
/// keep well under 1 MiB each. 13 + 40 + 15 is under 70 MiB; 128 MiB
/// leaves nearly twice that for allocator slack and a busy machine, and
/// still fails every attack of issue 11 that held memory: they reached
/// 270 MB/s (attack 2), 1,388 MiB (attack 1), 7.2 MiB per connection
/// before `Hello` (attack 9, where the suite opens 30 such connections).
pub const RSS_BOUND: u64 = 128 * 1024 * 1024;

/// How much the data directory may grow during one attack: 32 MiB.
///
/// The gateway has no attachment quota yet (issue 11 item 2); whoever adds
/// it sets the per-terminal default at or below this (eight photos of
/// 4 MiB, a day of one handset's reports), plus the few hundred kilobytes
/// of alerts and receipts an attack's refusals and probes write. Attack 3
/// stored 19 MiB/s from one client, so it passes this within 2 s.
pub const DISK_BOUND: u64 = 32 * 1024 * 1024;

/// Memory at which the [`Watch`] kills the gateway: an attack that passed
/// [`RSS_BOUND`] this far has failed already, and on a shared machine an
/// out-of-memory gateway would take other processes with it.
const RSS_KILL: u64 = 1024 * 1024 * 1024;

/// Data directory size at which the [`Watch`] kills the gateway.
const DISK_KILL: u64 = 512 * 1024 * 1024;

/// Time between two samples of the [`Watch`]: short next to an attack's
/// seconds, long next to reading two small files.
const SAMPLE_EVERY: Duration = Duration::from_millis(25);

/// One voice frame's Opus packet: 80 bytes, a 20 ms frame at 32 kbit/s.
const OPUS_FRAME: [u8; 80] = [0xa5; 80];

/// Time between two voice frames: 20 ms, 50 frames a second.
const FRAME_TIME: Duration = Duration::from_millis(20);

/// Longest burst the talker keeps the floor for: below the 30 s talk limit
/// (TS 24.380 T2), so the gateway never revokes it.
const BURST: Duration = Duration::from_secs(20);

/// How long listeners keep counting after the talker stopped: frames in
/// flight on loopback arrive within milliseconds, a busy machine stalls a
/// task for a few hundred.
const VOICE_GRACE: Duration = Duration::from_millis(500);

/// Time between two rounds of probes during an attack.
const PROBE_GAP: Duration = Duration::from_millis(250);

/// The real gateway binary serving [`ORG`] on a loopback port, with a data
/// directory of its own; killed when dropped. It logs at `info` (set
/// `HOSTILE_GATEWAY_LOG` to another `RUST_LOG` filter to see more).
#[derive(Debug)]
pub struct GatewayProcess {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its data directory (certificate, database).
    pub data: PathBuf,
    /// The provisioning key terminals' credentials derive from.
    pub key: ProvisioningKey,
    /// The gateway's certificate, for client configurations.
    pub roots: rustls::RootCertStore,
    child: Child,
    config: PathBuf,
    org: PathBuf,
    key_file: PathBuf,
    log: PathBuf,
    dir: tempfile::TempDir,
    _alone: SuiteLock,
}

impl GatewayProcess {
    /// Starts `ptt-gateway serve` on [`ORG`] with `config` as its TOML
    /// config file (sections only; empty for the defaults) and waits until
    /// it listens. Call inside a tokio runtime.
    ///
    /// Waits first until no other hostile test's gateway runs on this
    /// machine ([`SuiteLock`]).
    pub async fn start(config: &str) -> GatewayProcess {
        crate::init_tracing();
        let alone = SuiteLock::acquire().await;
        let dir = tempfile::tempdir().expect("temporary directory");
        let org = dir.path().join("city.toml");
        std::fs::write(&org, ORG).expect("writing the org file");
        let key_file = dir.path().join("city.key");
        let key = ProvisioningKey::generate();
        key.save(&key_file).expect("writing the provisioning key");
        let config_file = dir.path().join("gateway.toml");
        std::fs::write(&config_file, config).expect("writing the config file");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_udp_port())
            .parse()
            .expect("a loopback address");
        let data = dir.path().join("data");
        let log = dir.path().join("gateway.log");
        let child = spawn(addr, &config_file, &org, &key_file, &data, &log);
        let mut gw = GatewayProcess {
            addr,
            data,
            key,
            roots: rustls::RootCertStore::empty(),
            child,
            config: config_file,
            org,
            key_file,
            log,
            dir,
            _alone: alone,
        };
        gw.wait_listening().await;
        gw.roots = terminal::load_ca(&gw.data.join("cert.pem")).expect("the gateway's certificate");
        gw
    }

    async fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.log_text().contains("gateway listening") {
                return;
            }
            if let Some(status) = self.child.try_wait().expect("polling the gateway") {
                panic!("the gateway exited with {status}:\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "the gateway did not listen within 20 s:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The process id, for /proc.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The gateway's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The gateway's resident memory now, in bytes (0 once it exited).
    pub fn rss(&self) -> u64 {
        rss_of(self.pid())
    }

    /// Bytes in the data directory now (database, WAL, certificate).
    pub fn data_bytes(&self) -> u64 {
        dir_bytes(&self.data)
    }

    /// `terminal`'s provisioned credential.
    pub fn credential(&self, terminal: u32) -> [u8; 32] {
        self.key.credential(TerminalId(terminal))
    }

    /// A client endpoint on a UDP socket of its own, trusting the gateway,
    /// as one handset has.
    pub fn endpoint(&self) -> quinn::Endpoint {
        terminal::endpoint("127.0.0.1:0".parse().expect("an address"), &self.roots)
            .expect("a client endpoint")
    }

    /// The reference client configuration with `transport` instead of the
    /// terminal's own (an attacker's windows and stream limits).
    pub fn client_config(&self, transport: quinn::TransportConfig) -> quinn::ClientConfig {
        let mut config = terminal::client_config(&self.roots).expect("a client configuration");
        config.transport_config(Arc::new(transport));
        config
    }

    /// Connects terminal `id` through the reference client, from a socket
    /// of its own.
    pub async fn terminal(&self, id: u32) -> Terminal {
        self.try_terminal(id)
            .await
            .unwrap_or_else(|e| panic!("terminal {id}: {e}\n{}", self.log_text()))
    }

    /// As [`GatewayProcess::terminal`], returning the error if it fails.
    pub async fn try_terminal(&self, id: u32) -> Result<Terminal, terminal::Error> {
        let endpoint = self.endpoint();
        Terminal::connect(
            &endpoint,
            self.addr,
            "localhost",
            TerminalId(id),
            &self.credential(id),
        )
        .await
    }

    /// Stops the gateway with SIGTERM and returns the counters it logs as
    /// it stops.
    pub async fn stop(&mut self) -> serde_json::Value {
        self.terminate().await;
        let log = self.log_text();
        let counters = log
            .lines()
            .filter_map(|l| l.split_once("counters=").map(|(_, rest)| rest))
            .next_back()
            .unwrap_or_else(|| panic!("no counters in the log:\n{log}"));
        serde_json::from_str(counters.trim()).expect("the counters are JSON")
    }

    async fn terminate(&mut self) {
        let pid = self.pid().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("running kill");
        assert!(sent.success(), "SIGTERM to the gateway");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().expect("polling the gateway") {
                assert!(status.success(), "gateway exit status {status}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the gateway did not stop on SIGTERM:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the gateway with SIGTERM and starts it again on the same
    /// address and data directory, as an operator's restart does.
    pub async fn restart(&mut self) {
        self.terminate().await;
        self.child = spawn(
            self.addr,
            &self.config,
            &self.org,
            &self.key_file,
            &self.data,
            &self.log,
        );
        self.wait_listening().await;
    }

    /// The temporary directory everything lives in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The gateway's database, opened beside the running gateway (as the
    /// `drill-report` command does), to check what it stored.
    pub fn store(&self) -> ptt_gateway::alert::Store {
        ptt_gateway::alert::Store::open(&self.data.join("gateway.db"))
            .expect("the gateway's database")
    }
}

/// One hostile test at a time on this machine.
///
/// Each attack saturates a core on purpose, and its bounds (an SOS stored
/// within 1 s) are about what the gateway does under that attack, not
/// under two attacks of two tests at once on a two-core CI runner; the
/// test runner runs tests in parallel processes, so the lock is a name in
/// the abstract Unix socket namespace: held while bound, released by the
/// kernel when the process ends however it ends.
#[derive(Debug)]
pub struct SuiteLock {
    _held: std::os::unix::net::UnixListener,
}

impl SuiteLock {
    /// Waits until no other process holds the lock, and takes it.
    pub async fn acquire() -> SuiteLock {
        use std::os::linux::net::SocketAddrExt;
        let name = std::os::unix::net::SocketAddr::from_abstract_name(b"ptt-tests-hostile-suite")
            .expect("an abstract socket name");
        loop {
            match std::os::unix::net::UnixListener::bind_addr(&name) {
                Ok(held) => return SuiteLock { _held: held },
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("taking the hostile suite's lock: {e}"),
            }
        }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(
    addr: SocketAddr,
    config: &Path,
    org: &Path,
    key: &Path,
    data: &Path,
    log: &Path,
) -> Child {
    // Appending: a restart keeps the first run's log.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("opening the gateway log");
    Command::new(bin("ptt-gateway"))
        .arg("serve")
        .arg("--config")
        .arg(config)
        .args(["--listen", &addr.to_string(), "--org"])
        .arg(org)
        .arg("--provisioning-key")
        .arg(key)
        .arg("--data-dir")
        .arg(data)
        .env(
            "RUST_LOG",
            std::env::var("HOSTILE_GATEWAY_LOG")
                .unwrap_or_else(|_| "info,quinn=warn,rustls=warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting ptt-gateway")
}

/// Resident memory of process `pid` in bytes (`VmRSS` of
/// `/proc/<pid>/status`); 0 when the process is gone.
pub fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Bytes of the files under `dir`, recursively (0 if it does not exist).
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Samples the gateway's memory and data directory on a thread of its own
/// while an attack runs, and kills the gateway past [`RSS_KILL`] or
/// [`DISK_KILL`] so a failing attack cannot exhaust the machine.
#[derive(Debug)]
pub struct Watch {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Peaks>,
}

/// What a [`Watch`] saw.
#[derive(Debug, Clone, Copy, Default)]
pub struct Peaks {
    /// Resident memory when the watch started, bytes.
    pub rss_start: u64,
    /// Largest resident memory seen, bytes.
    pub rss_max: u64,
    /// Data directory size when the watch started, bytes.
    pub disk_start: u64,
    /// Largest data directory size seen, bytes.
    pub disk_max: u64,
    /// Whether the watch killed the gateway (it passed a kill limit).
    pub killed: bool,
}

impl Peaks {
    /// How much the data directory grew at most.
    pub fn disk_growth(&self) -> u64 {
        self.disk_max.saturating_sub(self.disk_start)
    }
}

impl Watch {
    /// Starts sampling `gw`.
    pub fn start(gw: &GatewayProcess) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let (pid, data) = (gw.pid(), gw.data.clone());
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut p = Peaks {
                rss_start: rss_of(pid),
                disk_start: dir_bytes(&data),
                ..Peaks::default()
            };
            while !stopped.load(Ordering::Relaxed) {
                let (rss, disk) = (rss_of(pid), dir_bytes(&data));
                p.rss_max = p.rss_max.max(rss);
                p.disk_max = p.disk_max.max(disk);
                if !p.killed && (rss > RSS_KILL || disk > DISK_KILL) {
                    tracing::error!(rss, disk, "killing the gateway: past the safety limit");
                    let _ = Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status();
                    p.killed = true;
                }
                std::thread::sleep(SAMPLE_EVERY);
            }
            p
        });
        Watch { stop, thread }
    }

    /// Stops sampling and returns the peaks.
    pub fn finish(self) -> Peaks {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the watch thread does not panic")
    }
}

/// Legit voice in one group: a talker sending 20 ms Opus-sized frames at
/// 50 a second in bursts below the talk limit, listeners counting the
/// frames they receive from it.
#[derive(Debug)]
pub struct LegitVoice {
    stop: watch::Sender<bool>,
    talker: JoinHandle<Result<u64, String>>,
    listeners: Vec<(u32, JoinHandle<Heard>)>,
}

/// What one listener heard.
#[derive(Debug, Clone, Default)]
struct Heard {
    frames: u64,
    foreign: u64,
    lost_connection: Option<String>,
}

/// How legit voice fared.
#[derive(Debug, Clone, Default)]
pub struct VoiceTally {
    /// Frames the talker sent.
    pub sent: u64,
    /// Frames of the talker each listener received (distinct).
    pub received: BTreeMap<u32, u64>,
    /// Frames of anyone else each listener received.
    pub foreign: BTreeMap<u32, u64>,
    /// Why the talker stopped early, if it did.
    pub talker_failed: Option<String>,
    /// Listeners whose connection ended, and why.
    pub listeners_lost: BTreeMap<u32, String>,
}

impl VoiceTally {
    /// The smallest share of the talker's frames a listener received.
    pub fn delivered(&self) -> f64 {
        let least = self.received.values().copied().min().unwrap_or(0);
        if self.sent == 0 {
            0.0
        } else {
            least as f64 / self.sent as f64
        }
    }
}

impl LegitVoice {
    /// Connects the talker and listeners, joins them to `group` and starts
    /// talking; returns once every listener heard a first frame.
    pub async fn start(
        gw: &GatewayProcess,
        group: GroupId,
        talker: u32,
        listeners: &[u32],
    ) -> LegitVoice {
        let (stop, stopped) = watch::channel(false);
        let (first_tx, mut first) = tokio::sync::mpsc::channel(listeners.len().max(1));
        let mut tasks = Vec::new();
        for &id in listeners {
            let mut t = gw.terminal(id).await;
            t.join(group)
                .await
                .unwrap_or_else(|e| panic!("listener {id} joining {group}: {e}"));
            let stopped = stopped.clone();
            let first = first_tx.clone();
            tasks.push((id, tokio::spawn(listen(t, talker, group, stopped, first))));
        }
        let mut t = gw.terminal(talker).await;
        t.join(group)
            .await
            .unwrap_or_else(|e| panic!("talker {talker} joining {group}: {e}"));
        let talker = tokio::spawn(talk(t, group, stopped));
        for _ in listeners {
            tokio::time::timeout(ANSWER_TIMEOUT, first.recv())
                .await
                .expect("every listener hears the talker within 10 s");
        }
        LegitVoice {
            stop,
            talker,
            listeners: tasks,
        }
    }

    /// Stops talking, lets the last frames arrive, and counts.
    pub async fn finish(self) -> VoiceTally {
        let _ = self.stop.send(true);
        let mut tally = VoiceTally::default();
        match self.talker.await {
            Ok(Ok(sent)) => tally.sent = sent,
            Ok(Err(e)) => tally.talker_failed = Some(e),
            Err(e) => tally.talker_failed = Some(format!("talker task: {e}")),
        }
        for (id, task) in self.listeners {
            let heard = task.await.unwrap_or_default();
            tally.received.insert(id, heard.frames);
            tally.foreign.insert(id, heard.foreign);
            if let Some(why) = heard.lost_connection {
                tally.listeners_lost.insert(id, why);
            }
        }
        tally
    }
}

/// The talker: bursts of frames at 50 a second until stopped; returns the
/// frames sent, or why it could not go on (the frames sent so far are then
/// lost to the tally, which fails the test anyway).
async fn talk(
    mut t: Terminal,
    group: GroupId,
    mut stopped: watch::Receiver<bool>,
) -> Result<u64, String> {
    let mut sent = 0u64;
    loop {
        let burst = t
            .talk(group, Class::Normal)
            .await
            .map_err(|e| format!("floor request: {e}"))?;
        let started = Instant::now();
        let mut tick = tokio::time::interval(FRAME_TIME);
        // A stalled test task sends fewer frames, never a catch-up burst
        // that the gateway's voice rate limit would rightly cut.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut seq = 0u16;
        let stop = loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stopped.changed() => {}
            }
            let stop = *stopped.borrow();
            let end = stop || started.elapsed() >= BURST;
            t.send_voice(group, burst, seq, &OPUS_FRAME, end)
                .map_err(|e| format!("sending voice: {e}"))?;
            sent += 1;
            seq = seq.wrapping_add(1);
            if end {
                break stop;
            }
        };
        // One frame time for the last datagram to pass the release on the
        // control stream.
        tokio::time::sleep(2 * FRAME_TIME).await;
        t.release(group)
            .map_err(|e| format!("releasing the floor: {e}"))?;
        if stop {
            return Ok(sent);
        }
    }
}

/// A listener: counts the talker's distinct frames until stopped (plus
/// [`VOICE_GRACE`]) or its connection ends; tells `first` when it heard
/// one.
async fn listen(
    t: Terminal,
    talker: u32,
    group: GroupId,
    mut stopped: watch::Receiver<bool>,
    first: tokio::sync::mpsc::Sender<()>,
) -> Heard {
    let mut frames = HashSet::new();
    let mut heard = Heard::default();
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let grace = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            v = t.recv_voice() => match v {
                Ok(v) if v.header.speaker == talker && v.header.group == group => {
                    if frames.is_empty() {
                        let _ = first.try_send(());
                    }
                    frames.insert((v.header.burst, v.header.seq));
                }
                Ok(_) => heard.foreign += 1,
                Err(e) => {
                    heard.lost_connection = Some(e.to_string());
                    break;
                }
            },
            _ = stopped.changed(), if deadline.is_none() => {
                deadline = Some(tokio::time::Instant::now() + VOICE_GRACE);
            }
            () = grace => break,
        }
    }
    heard.frames = frames.len() as u64;
    heard
}

/// The probes of what must keep working during an attack: an SOS stored
/// (the sender's answer), a dispatch delivered (a console's alert reaching
/// an online guard).
#[derive(Debug)]
pub struct Probes {
    sos: Terminal,
    console: Terminal,
    guard: Terminal,
}

/// One probe's outcome: how long it took, or what went wrong.
pub type Timing = Result<Duration, String>;

impl Probes {
    /// Connects [`SOS_PROBE`], [`DISPATCH_CONSOLE`] and [`DISPATCHED_GUARD`].
    pub async fn connect(gw: &GatewayProcess) -> Probes {
        Probes {
            sos: gw.terminal(SOS_PROBE).await,
            console: gw.terminal(DISPATCH_CONSOLE).await,
            guard: gw.terminal(DISPATCHED_GUARD).await,
        }
    }

    /// Raises an SOS and times it until the gateway answers that it stored
    /// it; then cancels it, so its hot-mic burst ends.
    pub async fn sos_stored(&mut self) -> Timing {
        let started = Instant::now();
        let stored = self.sos.sos().await.map_err(|e| format!("SOS: {e}"))?;
        let took = started.elapsed();
        self.sos
            .cancel_sos(TerminalId(SOS_PROBE))
            .await
            .map_err(|e| format!("cancelling SOS {stored}: {e}"))?;
        Ok(took)
    }

    /// Sends a dispatch to the guard and times it until the guard has it.
    pub async fn dispatch_delivered(&mut self) -> Timing {
        let started = Instant::now();
        let (alert, _) = self
            .console
            .send_alert(
                Target::Terminals(vec![TerminalId(DISPATCHED_GUARD)]),
                dispatch("Probe"),
            )
            .await
            .map_err(|e| format!("dispatch: {e}"))?;
        loop {
            let got = self
                .guard
                .next_alert()
                .await
                .map_err(|e| format!("dispatch {alert} not delivered: {e}"))?;
            if got.alert == alert {
                return Ok(started.elapsed());
            }
        }
    }

    /// Runs both probes in turn every [`PROBE_GAP`] until `stop` says so,
    /// then returns them with their timings.
    pub fn run(mut self, mut stop: watch::Receiver<bool>) -> JoinHandle<(Probes, ProbeTimings)> {
        tokio::spawn(async move {
            let mut timings = ProbeTimings::default();
            loop {
                timings.sos.push(self.sos_stored().await);
                timings.dispatch.push(self.dispatch_delivered().await);
                if *stop.borrow() {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(PROBE_GAP) => {}
                    _ = stop.changed() => {}
                }
            }
            (self, timings)
        })
    }
}

/// Timings of the probes during an attack.
#[derive(Debug, Clone, Default)]
pub struct ProbeTimings {
    /// SOS raised until stored.
    pub sos: Vec<Timing>,
    /// Dispatch sent until delivered.
    pub dispatch: Vec<Timing>,
}

/// A dispatch alert with `title`.
pub fn dispatch(title: &str) -> AlertBody {
    AlertBody {
        kind: AlertKind::Dispatch,
        priority: 3,
        ttl_s: 600,
        title: title.into(),
        text: "North entrance".into(),
        location: None,
        attachments: Vec::new(),
    }
}

/// A work report naming `attachments`.
pub fn report(title: &str, attachments: &[u64]) -> AlertBody {
    AlertBody {
        kind: AlertKind::Report,
        priority: 1,
        ttl_s: 600,
        title: title.into(),
        text: "Patrol done".into(),
        location: None,
        attachments: attachments
            .iter()
            .map(|id| ptt_codec::AttachmentRef {
                id: *id,
                size: 0,
                mime: String::new(),
            })
            .collect(),
    }
}

/// A photo-sized payload of `len` bytes that is not all one byte.
pub fn photo(len: usize) -> Bytes {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// Everything that runs beside an attack: legit voice, the probes, the
/// watch. Start it, run the attack, then [`Scene::finish`].
#[derive(Debug)]
pub struct Scene {
    voice: LegitVoice,
    watch: Watch,
    stop_probes: watch::Sender<bool>,
    probes: JoinHandle<(Probes, ProbeTimings)>,
    started: Instant,
}

impl Scene {
    /// Starts legit voice in [`VOICE_GROUP`] ([`TALKER`] to [`LISTENERS`]),
    /// the probes and the watch on `gw`.
    pub async fn start(gw: &GatewayProcess) -> Scene {
        let voice = LegitVoice::start(gw, VOICE_GROUP, TALKER, &LISTENERS).await;
        let probes = Probes::connect(gw).await;
        let watch = Watch::start(gw);
        let (stop_probes, stop) = watch::channel(false);
        let probes = probes.run(stop);
        Scene {
            voice,
            watch,
            stop_probes,
            probes,
            started: Instant::now(),
        }
    }

    /// Stops legit traffic and the probes (after their current round) and
    /// returns how everything fared.
    pub async fn finish(self) -> Outcome {
        let _ = self.stop_probes.send(true);
        let probes = match self.probes.await {
            Ok((_, timings)) => timings,
            Err(e) => ProbeTimings {
                sos: vec![Err(format!("probe task: {e}"))],
                dispatch: Vec::new(),
            },
        };
        let voice = self.voice.finish().await;
        let peaks = self.watch.finish();
        Outcome {
            voice,
            probes,
            peaks,
            lasted: self.started.elapsed(),
        }
    }
}

/// How legit traffic, the probes and the gateway's resources fared during
/// an attack.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Legit voice.
    pub voice: VoiceTally,
    /// SOS and dispatch timings.
    pub probes: ProbeTimings,
    /// Gateway memory and disk.
    pub peaks: Peaks,
    /// How long the scene ran.
    pub lasted: Duration,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        writeln!(f, "scene lasted {:?}", self.lasted)?;
        writeln!(
            f,
            "voice: {:.2} % delivered; sent {}, received {:?} (and {:?} from others), talker failed {:?}, listeners lost {:?}",
            100.0 * self.voice.delivered(),
            self.voice.sent,
            self.voice.received,
            self.voice.foreign,
            self.voice.talker_failed,
            self.voice.listeners_lost
        )?;
        writeln!(f, "SOS stored: {:?}", self.probes.sos)?;
        writeln!(f, "dispatch delivered: {:?}", self.probes.dispatch)?;
        write!(
            f,
            "gateway RSS {:.1} -> max {:.1} MiB (bound {:.0}); data dir {:.2} -> max {:.2} MiB (growth bound {:.0}){}",
            mib(self.peaks.rss_start),
            mib(self.peaks.rss_max),
            mib(RSS_BOUND),
            mib(self.peaks.disk_start),
            mib(self.peaks.disk_max),
            mib(DISK_BOUND),
            if self.peaks.killed {
                "; KILLED past the safety limit"
            } else {
                ""
            }
        )
    }
}

impl Outcome {
    /// The failures against the bounds of issue 11 item 10: legit voice at
    /// least [`MIN_VOICE_DELIVERED`], every SOS stored within
    /// [`SOS_STORED_WITHIN`], every dispatch delivered within
    /// [`DISPATCH_DELIVERED_WITHIN`], memory under [`RSS_BOUND`], data
    /// growth under [`DISK_BOUND`]. Empty when all held.
    pub fn failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        if self.voice.delivered() < MIN_VOICE_DELIVERED {
            failures.push(format!(
                "legit voice {:.2} % delivered, under {} %",
                100.0 * self.voice.delivered(),
                100.0 * MIN_VOICE_DELIVERED
            ));
        }
        let late = |timings: &[Timing], within: Duration, what: &str| {
            let mut out = Vec::new();
            if timings.is_empty() {
                out.push(format!("no {what} probe ran"));
            }
            for t in timings {
                match t {
                    Ok(took) if *took <= within => {}
                    Ok(took) => out.push(format!("{what} took {took:?}, not within {within:?}")),
                    Err(e) => out.push(format!("{what} failed: {e}")),
                }
            }
            out
        };
        failures.extend(late(&self.probes.sos, SOS_STORED_WITHIN, "SOS stored"));
        failures.extend(late(
            &self.probes.dispatch,
            DISPATCH_DELIVERED_WITHIN,
            "dispatch delivered",
        ));
        if self.peaks.rss_max > RSS_BOUND || self.peaks.killed {
            failures.push(format!(
                "gateway RSS reached {} bytes, over the {RSS_BOUND}-byte bound",
                self.peaks.rss_max
            ));
        }
        if self.peaks.disk_growth() > DISK_BOUND {
            failures.push(format!(
                "data directory grew by {} bytes, over the {DISK_BOUND}-byte bound",
                self.peaks.disk_growth()
            ));
        }
        failures
    }

    /// Panics with the whole outcome unless every bound held.
    pub fn assert_unharmed(&self) {
        let failures = self.failures();
        assert!(
            failures.is_empty(),
            "the attack did harm:\n  {}\n{self}",
            failures.join("\n  ")
        );
    }
}

/// What the gateway sent a raw session on its control stream.
#[derive(Debug, Clone, Default)]
pub struct Replies {
    /// Frames decoded, by frame type.
    pub frames: BTreeMap<u8, u64>,
    /// `Error` frames by code.
    pub errors: BTreeMap<u16, u64>,
    /// `AlertRefused` frames by code.
    pub refused: BTreeMap<u16, u64>,
    /// Alert ids of the `AlertAccepted` frames, in order.
    pub accepted: Vec<u64>,
    /// Unidirectional streams the gateway opened to it, and their bytes.
    pub streams: u64,
    /// Bytes read on those streams.
    pub stream_bytes: u64,
}

impl Replies {
    /// `Error` frames with `code` so far.
    pub fn errors(&self, code: ErrorCode) -> u64 {
        self.errors.get(&code.code()).copied().unwrap_or(0)
    }
}

/// How a raw session treats what the gateway sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// Reads the control stream and every stream the gateway opens, as a
    /// conforming terminal does, and discards the content.
    All,
    /// Reads the control stream; never accepts a stream the gateway opens.
    ControlOnly,
    /// Reads nothing after the handshake.
    Nothing,
}

/// An authenticated connection driven by hand, to send what the reference
/// client never would, as fast as QUIC flow control lets it.
#[derive(Debug)]
pub struct RawSession {
    /// The QUIC connection.
    pub conn: quinn::Connection,
    send: quinn::SendStream,
    replies: Arc<Mutex<Replies>>,
    tasks: Vec<JoinHandle<()>>,
    /// Keeps the endpoint (its socket) alive with the connection.
    _endpoint: quinn::Endpoint,
}

impl RawSession {
    /// Connects as `terminal` with the reference client's transport,
    /// sends `Hello`, and reads as `reading` says.
    pub async fn connect(gw: &GatewayProcess, terminal: u32, reading: Reading) -> RawSession {
        let config = terminal::client_config(&gw.roots).expect("a client configuration");
        Self::connect_with(gw, terminal, reading, config).await
    }

    /// As [`RawSession::connect`] with a client configuration of one's
    /// own (see [`stingy_transport`]).
    pub async fn connect_with(
        gw: &GatewayProcess,
        terminal: u32,
        reading: Reading,
        config: quinn::ClientConfig,
    ) -> RawSession {
        let endpoint = gw.endpoint();
        let conn = endpoint
            .connect_with(config, gw.addr, "localhost")
            .expect("connecting")
            .await
            .unwrap_or_else(|e| panic!("raw session {terminal}: {e}"));
        let (mut send, mut recv) = conn.open_bi().await.expect("the control stream");
        let mut hello = BytesMut::new();
        ClientMsg::Hello {
            version: VERSION,
            terminal: TerminalId(terminal),
            credential: Bytes::copy_from_slice(&gw.credential(terminal)),
        }
        .encode(&mut hello);
        send.write_all(&hello).await.expect("sending Hello");
        let replies = Arc::new(Mutex::new(Replies::default()));
        let mut tasks = Vec::new();
        // Wait for Welcome, so the caller's frames follow a session.
        let mut buf = BytesMut::new();
        loop {
            if let Ok(frame) = split_frame(&buf) {
                let len = frame.len();
                match ServerMsg::decode(frame) {
                    Ok(ServerMsg::Welcome { .. }) => {
                        let _ = buf.split_to(len);
                        break;
                    }
                    other => panic!("raw session {terminal}: expected Welcome, got {other:?}"),
                }
            }
            let n = tokio::time::timeout(ANSWER_TIMEOUT, recv.read_buf(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("raw session {terminal}: no Welcome"))
                .unwrap_or_else(|e| panic!("raw session {terminal}: {e}"));
            assert!(n > 0, "raw session {terminal}: control stream ended");
        }
        if reading != Reading::Nothing {
            tasks.push(tokio::spawn(read_control(recv, buf, replies.clone())));
        } else {
            // Held open, never read.
            tasks.push(tokio::spawn(async move {
                let _recv = recv;
                std::future::pending::<()>().await;
            }));
        }
        if reading == Reading::All {
            tasks.push(tokio::spawn(read_streams(conn.clone(), replies.clone())));
        }
        RawSession {
            conn,
            send,
            replies,
            tasks,
            _endpoint: endpoint,
        }
    }

    /// What the gateway sent so far.
    pub fn replies(&self) -> Replies {
        self.replies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Writes `bytes` on the control stream; false once the stream or
    /// connection is gone.
    pub async fn write(&mut self, bytes: Bytes) -> bool {
        self.send.write_chunk(bytes).await.is_ok()
    }

    /// Writes `batch` (encoded frames, `frames` of them) again and again
    /// for `duration`, or until the connection ends, as fast as flow
    /// control allows, or at most `per_second` frames a second. Returns
    /// the frames written.
    pub async fn flood(
        &mut self,
        batch: &Bytes,
        frames: u64,
        duration: Duration,
        per_second: Option<u64>,
    ) -> u64 {
        let until = Instant::now() + duration;
        let started = Instant::now();
        let mut written = 0u64;
        while Instant::now() < until {
            if let Some(rate) = per_second {
                let due = Duration::from_secs_f64(written as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
            let write = tokio::time::timeout_at(until.into(), self.send.write_chunk(batch.clone()));
            match write.await {
                Ok(Ok(())) => written += frames,
                Ok(Err(_)) => break,
                Err(_) => break,
            }
        }
        written
    }
}

impl Drop for RawSession {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Reads the control stream, counting what arrives.
async fn read_control(
    mut recv: quinn::RecvStream,
    mut buf: BytesMut,
    replies: Arc<Mutex<Replies>>,
) {
    loop {
        while let Ok(frame) = split_frame(&buf) {
            let len = frame.len();
            let kind = frame.kind;
            let msg = ServerMsg::decode(frame);
            {
                let mut r = replies.lock().unwrap_or_else(|e| e.into_inner());
                *r.frames.entry(kind).or_default() += 1;
                match msg {
                    Ok(ServerMsg::Error { code, .. }) => {
                        *r.errors.entry(code.code()).or_default() += 1
                    }
                    Ok(ServerMsg::AlertRefused { code, .. }) => {
                        *r.refused.entry(code.code()).or_default() += 1
                    }
                    Ok(ServerMsg::AlertAccepted { alert, .. }) => r.accepted.push(alert),
                    _ => {}
                }
            }
            let _ = buf.split_to(len);
        }
        match recv.read_buf(&mut buf).await {
            Ok(n) if n > 0 => {}
            _ => return,
        }
    }
}

/// Accepts every stream the gateway opens and reads it to its end,
/// counting bytes and keeping none.
async fn read_streams(conn: quinn::Connection, replies: Arc<Mutex<Replies>>) {
    while let Ok(mut stream) = conn.accept_uni().await {
        let replies = replies.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while let Ok(Some(chunk)) = stream.read_chunk(64 * 1024, false).await {
                n += chunk.bytes.len() as u64;
            }
            let mut r = replies.lock().unwrap_or_else(|e| e.into_inner());
            r.streams += 1;
            r.stream_bytes += n;
        });
    }
}

/// `count` copies of `msg`, encoded one after another: a batch for
/// [`RawSession::flood`].
pub fn batch(msg: &ClientMsg, count: usize) -> Bytes {
    let mut out = BytesMut::new();
    for _ in 0..count {
        msg.encode(&mut out);
    }
    out.freeze()
}

/// `count` copies of a raw frame of type `kind` with body `body` (which
/// need not decode).
pub fn raw_batch(kind: u8, body: &[u8], count: usize) -> Bytes {
    let mut out = BytesMut::new();
    for _ in 0..count {
        out.extend_from_slice(&[kind]);
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(body);
    }
    out.freeze()
}

/// A client transport that never grants the gateway stream credit: no
/// unidirectional streams at all (the gateway's alert, photo and report
/// streams wait forever to open) and receive windows of `window` bytes
/// (bidirectional streams and the connection stall after that).
pub fn stingy_transport(window: u32) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    t.stream_receive_window(quinn::VarInt::from_u32(window));
    t.receive_window(quinn::VarInt::from_u32(window));
    t.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(Duration::from_secs(30)).expect("30 s fits an idle timeout"),
    ));
    t.keep_alive_interval(Some(Duration::from_secs(10)));
    t
}

/// Opens `n` connections that complete the QUIC handshake and never send
/// `Hello` (each from a socket of its own); keep them to keep the sockets.
pub async fn without_hello(
    gw: &GatewayProcess,
    n: usize,
) -> Vec<(quinn::Endpoint, quinn::Connection)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let endpoint = gw.endpoint();
        let conn = endpoint
            .connect(gw.addr, "localhost")
            .expect("connecting")
            .await
            .expect("the QUIC handshake");
        out.push((endpoint, conn));
    }
    out
}

/// Fills what a connection without `Hello` may send: the control stream
/// gets the start of a `Hello` that never ends (the gateway waits for the
/// rest until its hello timeout), every other bidirectional and
/// unidirectional stream the gateway allows gets `bytes`, never finished.
/// Returns the bytes the gateway's flow control let in within `within`
/// (quinn stops the rest).
pub async fn fill_before_hello(conn: &quinn::Connection, bytes: usize, within: Duration) -> u64 {
    let chunk = Bytes::from(vec![0u8; bytes]);
    let written = Arc::new(AtomicU64::new(0));
    let (mut control, _) = match conn.open_bi().await {
        Ok(s) => s,
        Err(_) => return 0,
    };
    // A Hello header announcing 200 bytes of body, and no body.
    let header = [ptt_codec::control::kind::HELLO, 0, 200];
    if control.write_all(&header).await.is_err() {
        return 0;
    }
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(async move {
        // Held open with the connection.
        let _control = control;
        std::future::pending::<()>().await;
    });
    for bidi in [true, false] {
        for _ in 0..4 {
            let conn = conn.clone();
            let chunk = chunk.clone();
            let written = written.clone();
            tasks.spawn(async move {
                let stream = if bidi {
                    conn.open_bi().await.map(|(s, _)| s)
                } else {
                    conn.open_uni().await
                };
                let Ok(mut stream) = stream else { return };
                let mut rest = chunk;
                while !rest.is_empty() {
                    match stream.write(&rest).await {
                        Ok(n) => {
                            written.fetch_add(n as u64, Ordering::Relaxed);
                            let _ = rest.split_to(n);
                        }
                        Err(_) => return,
                    }
                }
                // Held open: the gateway keeps what it received.
                std::future::pending::<()>().await;
            });
        }
    }
    let _ =
        tokio::time::timeout(within, async { while tasks.join_next().await.is_some() {} }).await;
    tasks.detach_all();
    written.load(Ordering::Relaxed)
}

/// `n` distinct QUIC Initial packets of real client handshakes to the
/// gateway, caught before they left: sent raw, each starts a handshake
/// the gateway waits for in vain.
pub async fn initials(gw: &GatewayProcess, n: usize) -> Vec<Vec<u8>> {
    let catcher = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("a catcher socket");
    let to = catcher.local_addr().expect("its address");
    let client = gw.endpoint();
    let mut out = Vec::with_capacity(n);
    let mut seen = HashSet::new();
    let mut buf = vec![0u8; 2048];
    while out.len() < n {
        let connecting = client.connect(to, "localhost").expect("connecting");
        // The first packet of a connection id not seen before: an
        // abandoned attempt's retransmissions and its CONNECTION_CLOSE
        // carry its own id, and the close would abort the handshake.
        loop {
            let len = tokio::time::timeout(ANSWER_TIMEOUT, catcher.recv(&mut buf))
                .await
                .expect("an Initial within 10 s")
                .expect("receiving it");
            let packet = &buf[..len];
            if let Some(id) = long_header_dcid(packet) {
                if seen.insert(id.to_vec()) {
                    out.push(packet.to_vec());
                    break;
                }
            }
        }
        drop(connecting);
    }
    out
}

/// The destination connection id of a QUIC long-header packet (RFC 9000
/// 17.2: flags, version, id length, id).
fn long_header_dcid(packet: &[u8]) -> Option<&[u8]> {
    let first = *packet.first()?;
    if first & 0x80 == 0 {
        return None;
    }
    let len = usize::from(*packet.get(5)?);
    packet.get(6..6 + len)
}

/// Sends `packets` to the gateway from one socket, `per_second` a second
/// (cycling through them), for `duration`. Returns the packets sent.
pub async fn send_initials(
    gw: &GatewayProcess,
    packets: &[Vec<u8>],
    per_second: u64,
    duration: Duration,
) -> u64 {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("an attacker socket");
    let started = Instant::now();
    let mut sent = 0u64;
    let mut buf = vec![0u8; 2048];
    while started.elapsed() < duration {
        let due = Duration::from_secs_f64(sent as f64 / per_second as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        let packet = &packets[sent as usize % packets.len()];
        if socket.send_to(packet, gw.addr).await.is_ok() {
            sent += 1;
        }
        // What the gateway answers is read and dropped, never acknowledged.
        while socket.try_recv_from(&mut buf).is_ok() {}
    }
    sent
}

/// Floods voice datagrams from `t`'s connection: `datagrams` in turn, as
/// fast as the connection sends them (up to 100,000 a second), for
/// `duration`. Returns the datagrams queued.
pub async fn voice_flood(t: &Terminal, datagrams: &[Bytes], duration: Duration) -> u64 {
    let started = Instant::now();
    let mut sent = 0u64;
    while started.elapsed() < duration {
        for d in datagrams.iter().cycle().take(100) {
            if t.send_raw_datagram(d.clone()).is_ok() {
                sent += 1;
            }
        }
        // Let the connection send what is queued (quinn drops the oldest
        // queued datagrams past its send buffer).
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    sent
}

/// What a [`flood`] did.
#[derive(Debug, Clone, Default)]
pub struct Flood {
    /// Frames written (the gateway took them: flow control let them in).
    pub frames: u64,
    /// Connections the flood used: it reconnects whenever the gateway
    /// closes one.
    pub connections: u64,
    /// How the gateway closed the flood's connections, by close code.
    pub closed: BTreeMap<u64, u64>,
    /// What the gateway answered, summed over the connections.
    pub replies: Replies,
}

/// Floods the control stream as `terminal` for `duration`: `batch` (of
/// `frames` frames) again and again, as fast as flow control lets it in or
/// at most `per_second` frames a second, reading as `reading` says.
/// Reconnects when the gateway closes the connection, as a hostile handset
/// would.
pub async fn flood(
    gw: &GatewayProcess,
    terminal: u32,
    reading: Reading,
    batch: &Bytes,
    frames: u64,
    duration: Duration,
    per_second: Option<u64>,
) -> Flood {
    let until = Instant::now() + duration;
    let mut out = Flood::default();
    while Instant::now() < until {
        let mut s = RawSession::connect(gw, terminal, reading).await;
        out.connections += 1;
        out.frames += s
            .flood(batch, frames, until - Instant::now(), per_second)
            .await;
        // The gateway may still be answering the last frames.
        let closed = tokio::time::timeout(Duration::from_millis(200), s.conn.closed()).await;
        if let Ok(quinn::ConnectionError::ApplicationClosed(c)) = closed {
            *out.closed.entry(c.error_code.into_inner()).or_default() += 1;
        }
        let r = s.replies();
        for (k, n) in r.frames {
            *out.replies.frames.entry(k).or_default() += n;
        }
        for (k, n) in r.errors {
            *out.replies.errors.entry(k).or_default() += n;
        }
        for (k, n) in r.refused {
            *out.replies.refused.entry(k).or_default() += n;
        }
        out.replies.accepted.extend(r.accepted);
        out.replies.streams += r.streams;
        out.replies.stream_bytes += r.stream_bytes;
    }
    out
}
