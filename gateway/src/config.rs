//! Gateway configuration in three layers: the defaults, then a TOML file,
//! then command-line flags ([`Config::layered`]). A flag given wins; a flag
//! not given leaves the file's value.
//!
//! Every default says where it comes from. Units are in the field names or
//! their docs; a value with bounds says them, and [`Config::validate`]
//! refuses a value outside them when the configuration is loaded, rather
//! than the value being corrected where it is used.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::org::Policy;

/// Everything `ptt-gateway serve` needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// UDP address to listen on. Default `0.0.0.0:4433`: terminals reach the
    /// gateway over cellular networks, so it listens on every interface.
    pub listen: SocketAddr,
    /// Directory for the generated certificate and the database. Default
    /// `data`, relative to the working directory: enough to try the gateway
    /// out; a deployment names its own.
    pub data_dir: PathBuf,
    /// The org file (governance tree and terminals). Required.
    pub org: Option<PathBuf>,
    /// PEM certificate chain. Without it a self-signed certificate is
    /// generated into `<data_dir>/cert.pem` on first start and reused.
    pub cert: Option<PathBuf>,
    /// PEM private key for `cert`.
    pub key: Option<PathBuf>,
    /// The provisioning key file. Default: the org file's `key_file`.
    pub provisioning_key: Option<PathBuf>,
    /// Who may join, talk and monitor where.
    pub policy: Policy,
    /// Floor control.
    pub floor: Floor,
    /// QUIC transport.
    pub transport: Transport,
    /// Per-session limits.
    pub session: Session,
    /// Drill reports.
    pub drill: Drill,
    /// SOS alerts.
    pub sos: Sos,
    /// Attachments (photos): quotas, expiry, retention, transfers.
    pub attachments: Attachments,
    /// Alert delivery.
    pub delivery: Delivery,
    /// Per-terminal bounds on control frames and work in flight.
    pub limits: Limits,
    /// Authentication: credential revocation.
    pub auth: Auth,
    /// The operations surface over HTTP: metrics, health, admin API.
    pub http: Http,
    /// How long alerts, receipts and the floor audit are kept.
    pub retention: Retention,
    /// The watch on the data directory's free space.
    pub disk: Disk,
    /// Recording of every talk burst (`[recording]`).
    pub recording: Recording,
    /// The browser console (`[console]`).
    pub console: Console,
    /// Joining a cluster of gateway nodes on NATS (`[cluster]`).
    pub cluster: Cluster,
}

/// Authentication settings (`[auth]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Auth {
    /// How often the running gateway reads the revocation list from the
    /// store (`ptt-gateway revoke` writes it), milliseconds, at least 100.
    /// A revoked terminal's session is closed and its `Hello` refused
    /// within this long; SIGHUP reads the list at once. Default 2000: a
    /// stolen handset must be cut off within seconds, and each read is one
    /// small primary-key scan of a table of a few rows (well under a
    /// millisecond), 0.5 a second.
    pub revocation_poll_ms: u32,
}

impl Default for Auth {
    fn default() -> Self {
        Self {
            revocation_poll_ms: 2000,
        }
    }
}

/// Retention of alerts, receipts and the floor audit (`[retention]`; photos
/// have `attachments.retention_days`). Everything said and sent is
/// evidence (FIELD.md): the defaults keep a year, SOS three, and 0 keeps
/// forever. Deleted by a background sweep, a bounded batch per transaction.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Retention {
    /// Alerts other than SOS (dispatches, notices, reports, drills) older
    /// than this are deleted with their receipts, drill reports and the
    /// photos no younger alert carries, days; 0 keeps them forever. An
    /// alert still deliverable (not expired) is never deleted. Default
    /// 365: a year of dispatches and who accepted and arrived, enough for
    /// the annual review of a unit's drills and for complaints, which come
    /// within months.
    pub alert_days: u32,
    /// SOS alerts older than this are deleted, with their receipts, days;
    /// 0 keeps them forever. A terminal's active SOS is never deleted.
    /// Default 1095: three years, the general limitation period for civil
    /// claims (PRC Civil Code art. 188) that an incident may lead to; an
    /// SOS is the record of a guard in danger and who came.
    pub sos_days: u32,
    /// Floor audit rows (who talked in which group, when) older than this
    /// are deleted, days; 0 keeps them forever. Default 365, as alerts:
    /// the audit says who was on the air when an alert was handled.
    pub audit_days: u32,
    /// How often the sweep runs, seconds, at least 1. Default 300: rows
    /// are due by the day; a sweep finds few.
    pub interval_s: u32,
    /// Rows (alerts, recipients, audit rows) deleted in one transaction at
    /// most, at least 1. Default 500: a few milliseconds of the store's
    /// lock, so an SOS waiting for it is not held up noticeably; a
    /// city-wide alert's 30,000 recipients take 60 batches.
    pub batch_rows: u32,
    /// Pause between two batches, ms. Default 50: other store calls (an
    /// SOS, receipts) take the lock in between; a backlog of a million
    /// rows (the first sweep after retention is configured) takes under
    /// two minutes.
    pub batch_pause_ms: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            alert_days: 365,
            sos_days: 1095,
            audit_days: 365,
            interval_s: 300,
            batch_rows: 500,
            batch_pause_ms: 50,
        }
    }
}

/// The operations surface (`[http]`): Prometheus metrics, health probes and
/// the admin API (docs/OPERATIONS.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Http {
    /// Serve it at all. Default true: an operator must see a running node's
    /// health without a restart to turn it on.
    pub enabled: bool,
    /// TCP address. Default `127.0.0.1:9090`: loopback, so a fresh install
    /// exposes nothing; bound beyond loopback it is HTTPS with the
    /// gateway's certificate (plain HTTP only on loopback).
    pub listen: SocketAddr,
    /// File holding the operator token that `/metrics` and `/api/v1` ask
    /// for (`Authorization: Bearer <token>`). Default
    /// `<data_dir>/operator.token`, generated (random, mode 0600) on first
    /// start; the health probes need no token.
    pub token_file: Option<PathBuf>,
}

impl Default for Http {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            token_file: None,
        }
    }
}

/// Recording settings (`[recording]`): every talk burst written as it was
/// relayed to an Ogg Opus file and indexed in the store, off the voice path
/// (see `crate::recorder`).
///
/// Durability: a burst's file and index row are fsynced within
/// `sync_interval_ms` + 250 ms (the recorder's wait for frames still in
/// flight) of the burst's end, plus the time the fsyncs take; a crash
/// before then loses at most those bursts, never an indexed one.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Recording {
    /// Record at all. Default true: what was said on a police net is
    /// evidence.
    pub enabled: bool,
    /// Frames waiting for the recorder thread, at least 1; a frame that
    /// finds the queue full is dropped from the recording (never from the
    /// voice path), counted in `recorder_frames_dropped` and in its
    /// recording's index row. Default 16384: 1.6 s of 500 bursts at once
    /// (20 ms frames), about 2.5 MB of queued datagrams at most.
    pub queue: usize,
    /// Where the files go, in dated folders (`YYYY/MM/DD/`). Default:
    /// `<data_dir>/recordings`.
    pub dir: Option<PathBuf>,
    /// Recordings older than this are deleted, days; 0 keeps them (until
    /// the disk budget). Default 0: how long evidence is kept is the
    /// operator's legal decision, not the gateway's.
    pub retention_days: u32,
    /// The same for emergency (SOS) bursts, days; 0 keeps them. When
    /// `retention_days` is set, this must be 0 or at least as long: SOS
    /// bursts are kept longer. Default 0.
    pub sos_retention_days: u32,
    /// Bytes the recordings may take; over it the oldest are deleted,
    /// normal bursts before SOS ones; 0 sets no budget. Default 32 GiB:
    /// about 4,000 hours of talk at 16 kbit/s (7.5 MB per hour with the
    /// Ogg overhead), so a full disk never stops the store.
    pub disk_budget_bytes: u64,
    /// How often retention and the budget are enforced, seconds, at least
    /// 1. Default 60.
    pub sweep_interval_s: u32,
    /// Ended bursts are made durable (file, folder and index row fsynced,
    /// one transaction) at most this long after they end, ms, at least 1.
    /// Default 1000: one fsync batch a second at most, whatever the number
    /// of bursts.
    pub sync_interval_ms: u32,
    /// Free bytes kept in the recordings' file system: a burst that starts
    /// below it is not recorded (indexed without a file, counted in
    /// `recordings_refused_disk_reserve`), so SOS, alerts and receipts
    /// still store. Default 256 MiB, as `attachments.disk_reserve_bytes`;
    /// 0 keeps no reserve.
    pub disk_reserve_bytes: u64,
}

impl Default for Recording {
    fn default() -> Self {
        Self {
            enabled: true,
            queue: 16_384,
            dir: None,
            retention_days: 0,
            sos_retention_days: 0,
            disk_budget_bytes: 32 * 1024 * 1024 * 1024,
            sweep_interval_s: 60,
            sync_interval_ms: 1_000,
            disk_reserve_bytes: 256 * 1024 * 1024,
        }
    }
}

impl Session {
    /// The join and leave limits of one terminal (kept across its
    /// reconnects), as the core takes them.
    pub fn join_limits(&self) -> ptt_gateway_core::group::churn::Limits {
        ptt_gateway_core::group::churn::Limits {
            per_second: self.join_rate,
            burst: self.join_burst,
            max_refused: self.join_max_refused,
        }
    }
}

impl Auth {
    /// [`Auth::revocation_poll_ms`] as a duration.
    pub fn revocation_poll(&self) -> Duration {
        Duration::from_millis(u64::from(self.revocation_poll_ms))
    }
}

impl Http {
    /// The operator token's file under the data directory `data_dir`.
    pub fn token_path(&self, data_dir: &Path) -> PathBuf {
        self.token_file
            .clone()
            .unwrap_or_else(|| data_dir.join("operator.token"))
    }
}

/// The disk watch (`[disk]`): the data directory's free space, read in the
/// background, and an alarm when it falls under the reserve
/// (`attachments.disk_reserve_bytes` plus one 4 MiB upload, where uploads
/// are refused).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Disk {
    /// How often free space is read, seconds, at least 1. Default 10: a
    /// statvfs call, and uploads fill at most tens of MB in 10 s.
    pub watch_interval_s: u32,
    /// While the alarm is on, the error is logged again this often,
    /// seconds, at least 1. Default 600: the log says it is still low
    /// without flooding.
    pub reminder_interval_s: u32,
}

impl Default for Disk {
    fn default() -> Self {
        Self {
            watch_interval_s: 10,
            reminder_interval_s: 600,
        }
    }
}

/// The command room's browser console (`[console]`): served at
/// `/console/` on the HTTP surface, speaking the protocol over WebTransport
/// on the QUIC port (docs/CONSOLE.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Console {
    /// Whether the console is served and WebTransport (ALPN `h3`) is
    /// accepted. Default true.
    pub enabled: bool,
    /// How long a sign-in lasts, minutes, at least 1. Default 720 (12 h):
    /// one shift; the operator signs in again at the next.
    pub session_minutes: u32,
    /// Failed sign-ins per operator name, and per client address, within
    /// 15 minutes, after which that name or address is refused unchecked
    /// until the window passes. Default 10; at least 1.
    pub max_failures: u32,
    /// Password checks (argon2id, ~20 MiB and tens of ms each) run at once;
    /// more sign-ins wait. Default 2; at least 1.
    pub password_checks: u32,
    /// Days the self-signed console certificate is valid, 1..=14 (browsers
    /// accept a certificate pinned by its hash only for at most 14 days).
    /// Default 13. Unused with a configured certificate (`cert`/`key`).
    pub cert_days: u32,
    /// A new console certificate is made when the current one is this
    /// many days old, at least 1 and under `cert_days`; pages pass both
    /// hashes, so open consoles reconnect across the change. Default 6.
    pub cert_rotate_days: u32,
    /// A map tile URL template (`https://tiles.example/{z}/{x}/{y}.png`)
    /// for deployments with a tile server; by default the map is drawn
    /// offline from the units' and members' positions.
    pub tiles: Option<String>,
}

impl Default for Console {
    fn default() -> Self {
        Self {
            enabled: true,
            session_minutes: 720,
            max_failures: 10,
            password_checks: 2,
            cert_days: 13,
            cert_rotate_days: 6,
            tiles: None,
        }
    }
}

/// Joining a cluster of gateway nodes (`[cluster]`, docs/CLUSTER.md). Without
/// `node`, the gateway runs alone, as it always did, and needs no NATS.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Cluster {
    /// This node's name, unique in the cluster (letters, digits, `-` and
    /// `_`, at most 32). Unset: a single node.
    pub node: Option<String>,
    /// NATS server URLs (`nats://host:port`), several so that the loss of
    /// one is a reconnect. Required with `node`.
    pub nats: Vec<String>,
    /// Gateway nodes the cluster is built with. A node grants the floor only
    /// while it hears a strict majority of them (itself included), so a
    /// node cut off from the others grants nothing. Default 3; at least 1.
    pub size: u32,
    /// How often a node announces itself, ms. Default 500.
    pub heartbeat_ms: u32,
    /// A node not heard from for this long is dead and its groups move,
    /// ms; more than twice `heartbeat_ms`. Default 2000: covers a NATS
    /// client's reconnect to another server (~300 ms measured).
    pub timeout_ms: u32,
    /// A node that takes a group over waits this long before granting its
    /// floor, ms, at least `timeout_ms`: time for the previous owner, if
    /// alive but cut off, to have lost its quorum and stopped. Default 2000.
    pub takeover_ms: u32,
    /// Replicas of the cluster's JetStream streams and buckets (1, 3 or 5;
    /// at most the NATS servers there are). Default 3.
    pub replicas: u32,
    /// Whether the node also connects to NATS servers it learns of from
    /// the ones listed (their cluster's other servers). Default true; false
    /// pins the node to the listed servers (say, its own site's).
    pub discover_servers: bool,
}

impl Default for Cluster {
    fn default() -> Self {
        Self {
            node: None,
            nats: Vec::new(),
            size: 3,
            heartbeat_ms: 500,
            timeout_ms: 2000,
            takeover_ms: 2000,
            replicas: 3,
            discover_servers: true,
        }
    }
}

impl Cluster {
    /// The membership settings of the sans-I/O core.
    pub fn membership(&self) -> ptt_gateway_core::cluster::Config {
        ptt_gateway_core::cluster::Config {
            heartbeat: Duration::from_millis(self.heartbeat_ms.into()),
            timeout: Duration::from_millis(self.timeout_ms.into()),
            takeover: Duration::from_millis(self.takeover_ms.into()),
            size: self.size as usize,
        }
    }

    fn validate(&self) -> Result<(), OutOfBounds> {
        let bad = |field, reason: &str| {
            Err(OutOfBounds {
                field,
                reason: reason.into(),
            })
        };
        if let Some(node) = &self.node {
            let ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
            if node.is_empty() || node.len() > 32 || !node.chars().all(ok) {
                return bad(
                    "cluster.node",
                    "must be 1 to 32 letters, digits, '-' or '_'",
                );
            }
            if self.nats.is_empty() {
                return bad("cluster.nats", "a cluster node needs NATS server URLs");
            }
        }
        if self.size < 1 {
            return bad("cluster.size", "must be at least 1");
        }
        if self.heartbeat_ms < 1 {
            return bad("cluster.heartbeat_ms", "must be at least 1");
        }
        if self.timeout_ms <= 2 * self.heartbeat_ms {
            return bad("cluster.timeout_ms", "must be more than twice heartbeat_ms");
        }
        if self.takeover_ms < self.timeout_ms {
            return bad("cluster.takeover_ms", "must be at least timeout_ms");
        }
        if ![1, 3, 5].contains(&self.replicas) {
            return bad("cluster.replicas", "must be 1, 3 or 5");
        }
        Ok(())
    }
}

impl Recording {
    /// The recordings directory of a gateway whose data directory is
    /// `data_dir`.
    pub fn dir(&self, data_dir: &Path) -> PathBuf {
        self.dir
            .clone()
            .unwrap_or_else(|| data_dir.join("recordings"))
    }
}

/// Attachment settings (`[attachments]`): what one terminal may keep and
/// have in flight, and how long photos are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Attachments {
    /// Bytes one terminal may keep in uploads that no alert uses yet; an
    /// upload over it is refused (OVER_LIMIT). Default 16 MiB: four photos
    /// of the 4 MiB maximum, or a report's worth of ordinary ones, uploaded
    /// before the report that uses them; 0 refuses every upload.
    pub quota_bytes: u64,
    /// Uploads one terminal may keep that no alert uses yet. Default 16:
    /// two alerts' worth of the 8 attachments an alert may carry.
    pub quota_uploads: u32,
    /// An upload that no alert uses this long after it arrived is
    /// deleted, seconds, at least 1. Default 3600: a guard sends the
    /// report minutes after taking the photos.
    pub unused_expiry_s: u32,
    /// Attachments older than this are deleted, used or not (their alerts
    /// stay, without the photos), days; 0 keeps them forever. Default 0:
    /// how long evidence is kept is the operator's legal decision, not
    /// the gateway's.
    pub retention_days: u32,
    /// How often expiry and retention run, seconds, at least 1. Default
    /// 60.
    pub sweep_interval_s: u32,
    /// Photo streams (fetches and pushes) to one terminal at once, at
    /// least 1. Default 2: they share the terminal's link, so more at once
    /// does not finish sooner, and each holds a chunk of memory.
    pub transfers_per_terminal: u32,
    /// Fetches one terminal may have waiting for one of its transfers;
    /// more are refused (OVER_LIMIT). Default 16: every photo of two
    /// alerts fetched at once.
    pub queued_fetches: u32,
    /// Photo streams at once across the gateway, at least 1. Default 256:
    /// each holds one 64 KiB chunk, so 16 MiB at most.
    pub transfers: u32,
    /// A photo stream whose reader takes no chunk (64 KiB) for this long is
    /// reset, ms, at least 1. Default 10 s: 52 kbit/s, slower than any
    /// link a terminal can use; the terminal may fetch it again.
    pub stall_timeout_ms: u32,
    /// Free bytes kept in the data directory's file system: uploads are
    /// refused (OVER_LIMIT) below it, so SOS, alerts and receipts still
    /// store. Default 256 MiB: millions of alerts and receipts; 0 keeps no
    /// reserve.
    pub disk_reserve_bytes: u64,
}

impl Default for Attachments {
    fn default() -> Self {
        Self {
            quota_bytes: 16 * 1024 * 1024,
            quota_uploads: 16,
            unused_expiry_s: 3600,
            retention_days: 0,
            sweep_interval_s: 60,
            transfers_per_terminal: 2,
            queued_fetches: 16,
            transfers: 256,
            stall_timeout_ms: 10_000,
            disk_reserve_bytes: 256 * 1024 * 1024,
        }
    }
}

/// Per-terminal bounds on control frames and the work they start
/// (`[limits]`). A frame over a bound is refused with `BUSY` and counted;
/// a terminal refused more than `strikes` times within
/// `strike_window_ms` is closed with `RATE_LIMITED`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// The rate of each frame kind, `[limits.rates]` with
    /// `<kind> = { per_second = N, burst = M }`, each at least 1; the
    /// defaults and their reasons are in
    /// [`ptt_gateway_core::limits::Rates`].
    pub rates: ptt_gateway_core::limits::Rates,
    /// Operations of one terminal that wait for the store or the network
    /// (alerts, queries, SOS cancels, fetches, receipts) in flight at
    /// once, at least 1; a frame that would start one more is refused with
    /// `BUSY` (a receipt waits instead: it must never be lost). Default 16:
    /// a terminal waits for each answer before its next request but for
    /// receipts, which the store writes in batches within milliseconds.
    pub tasks: u32,
    /// How long a frame waits for one of the `tasks` permits before it is
    /// refused with `BUSY`, ms. Default 200: a burst of queries waits the
    /// milliseconds the store takes for those ahead of it rather than being
    /// refused, while operations stuck longer (deliveries to a slow
    /// reader) get `BUSY` rather than stalling the terminal's other frames
    /// (floor requests wait behind the frame being admitted).
    pub task_wait_ms: u32,
    /// Refusals tolerated within `strike_window_ms` before the connection
    /// is closed with `RATE_LIMITED`. Default 100: a conforming terminal is
    /// never refused, a buggy one that retries at once is refused a few
    /// times a second, and a flood reaches 100 within a second.
    pub strikes: u32,
    /// The window refusals are counted in, ms, at least 1. Default 10,000.
    pub strike_window_ms: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            rates: ptt_gateway_core::limits::Rates::default(),
            tasks: 16,
            task_wait_ms: 200,
            strikes: 100,
            strike_window_ms: 10_000,
        }
    }
}

/// Alert delivery settings (`[delivery]`): how much of the shared delivery
/// capacity one recipient may hold.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Delivery {
    /// Alert deliveries in flight to one terminal at once, at least 1.
    /// Default 4: an alert is one small stream, so a terminal that reads
    /// takes each in a round trip and never has more than a couple open;
    /// more wait their turn (or the write timeout) without taking a shared
    /// slot, so a terminal that never reads holds at most this many.
    pub per_terminal: usize,
    /// How long one delivery may wait for the recipient's stream credit and
    /// write its alert, milliseconds, at least 1. Default 5000: a terminal
    /// reading on a poor cellular link opens a stream in well under a
    /// second; one that has not in 5 s is not reading, and its alert stays
    /// in the store for its next connection (store and forward).
    pub write_timeout_ms: u32,
}

impl Default for Delivery {
    fn default() -> Self {
        Self {
            per_terminal: 4,
            write_timeout_ms: 5000,
        }
    }
}

impl Delivery {
    /// [`Delivery::write_timeout_ms`] as a duration.
    pub fn write_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(u64::from(self.write_timeout_ms))
    }
}

impl Limits {
    /// When a terminal over its limits is closed, as the limiter takes it.
    pub fn abuse(&self) -> ptt_gateway_core::limits::Abuse {
        ptt_gateway_core::limits::Abuse {
            strikes: self.strikes,
            window: Duration::from_millis(u64::from(self.strike_window_ms)),
        }
    }
}

/// SOS settings (`[sos]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Sos {
    /// How long an SOS alert stays deliverable, seconds. Default 3600: long
    /// enough for a terminal that lost coverage during the emergency to get
    /// it on reconnect, short enough that the next shift does not.
    pub ttl_s: u32,
    /// The SOS alert's priority. Default 3, the highest.
    pub priority: u8,
    /// A terminal has one active SOS: pressing again while its alert is
    /// deliverable refreshes it (same alert, expiry pushed to now + `ttl_s`,
    /// the hot mic again). Presses less than this many seconds after the
    /// last stored refresh are only answered with the alert id, so a stuck
    /// key or a flood of presses writes nothing and takes no floor. Default
    /// 10, the length of the hot-mic burst (`floor.sos_hot_mic_s`): a guard
    /// pressing again gets a new burst once the last one ended. 0 stores
    /// every press.
    pub refresh_interval_s: u32,
}

impl Default for Sos {
    fn default() -> Self {
        Self {
            ttl_s: ptt_gateway_core::sos::DEFAULT_TTL_S,
            priority: ptt_gateway_core::sos::DEFAULT_PRIORITY,
            refresh_interval_s: 10,
        }
    }
}

impl Sos {
    /// The settings as the SOS rules take them.
    pub fn rules(&self) -> ptt_gateway_core::sos::Config {
        ptt_gateway_core::sos::Config {
            ttl_s: self.ttl_s,
            priority: self.priority,
        }
    }
}

/// Drill report settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Drill {
    /// The marks each unit's times are compared with, seconds. Default
    /// 60, 180, 480: the field's 1-, 3- and 8-minute drills (first
    /// responder on the line, unit at the scene, police at the scene).
    pub marks_s: Vec<u32>,
}

impl Default for Drill {
    fn default() -> Self {
        Self {
            marks_s: crate::drill::DEFAULT_MARKS_S.to_vec(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 4433)),
            data_dir: PathBuf::from("data"),
            org: None,
            cert: None,
            key: None,
            provisioning_key: None,
            policy: Policy::default(),
            floor: Floor::default(),
            transport: Transport::default(),
            session: Session::default(),
            drill: Drill::default(),
            sos: Sos::default(),
            attachments: Attachments::default(),
            delivery: Delivery::default(),
            limits: Limits::default(),
            http: Http::default(),
            auth: Auth::default(),
            retention: Retention::default(),
            disk: Disk::default(),
            recording: Recording::default(),
            console: Console::default(),
            cluster: Cluster::default(),
        }
    }
}

/// Floor control settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Floor {
    /// Talk-time limit in seconds, at least 1. Default 30 s: TS 24.380 timer
    /// T2 ("stop talking").
    pub talk_limit_s: u32,
    /// Requests that may wait for the floor in one group; 0 denies every
    /// request while someone talks. Default 16: a unit has 3-5 members, a
    /// station group a few dozen.
    pub queue: usize,
    /// Hot-mic burst of an SOS, seconds, at least 1. Default 10: long enough
    /// to shout where and what, short enough not to jam the unit.
    pub sos_hot_mic_s: u32,
    /// Per-group talk-time limits overriding `talk_limit_s`, each group at
    /// most once.
    pub group: Vec<GroupFloor>,
}

impl Default for Floor {
    fn default() -> Self {
        Self {
            talk_limit_s: 30,
            queue: 16,
            sos_hot_mic_s: 10,
            group: Vec::new(),
        }
    }
}

/// A per-group floor setting, `[[floor.group]]` in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupFloor {
    /// The group (node id).
    pub id: u32,
    /// Its talk-time limit in seconds, at least 1.
    pub talk_limit_s: u32,
}

impl Floor {
    /// The talk-time limit of `group`.
    pub fn talk_limit(&self, group: u32) -> Duration {
        let s = self
            .group
            .iter()
            .find(|g| g.id == group)
            .map_or(self.talk_limit_s, |g| g.talk_limit_s);
        Duration::from_secs(u64::from(s))
    }
}

/// QUIC transport settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Transport {
    /// Close a connection after this long without any packet, at least 1
    /// (QUIC reads 0 as "never"). Default 30 s: terminals send keep-alives
    /// every 15 s, and QUIC sends a lost one again within a probe timeout.
    pub idle_timeout_ms: u32,
    /// Bytes of voice datagrams queued per connection before the oldest are
    /// dropped, at least 1. Default 2400 bytes: about 25 frames of 16 kbit/s
    /// Opus, half a second. Anything older is stale and worth less than
    /// silence.
    pub datagram_send_buffer: usize,
    /// Bytes of received datagrams buffered per connection before the
    /// newest are dropped, at least 1. Default 64 KiB: about 50 of the
    /// largest voice datagrams (13-byte header, 1275-byte Opus packet), and
    /// some 1,200 of the 16 kbit/s ones terminals send.
    pub datagram_receive_buffer: usize,
    /// Bidirectional streams a terminal may have open at once, at least 1
    /// (the control stream). Default 4: the control stream plus alert
    /// traffic; each slot costs memory.
    pub max_bidi_streams: u32,
    /// Unidirectional streams a terminal may have open at once: attachment
    /// uploads in progress; 0 refuses uploads. Default 2: uploads are rare
    /// next to voice, and each open stream holds a receive buffer.
    pub max_uni_streams: u32,
    /// QUIC handshakes in progress at once, at least 1; more incoming
    /// connections wait their turn. Default 256: in a reconnect storm of a whole city,
    /// admitting every Initial at once holds tens of thousands of half-open
    /// connections (measured 1.5-2 GiB) and slows every handshake down.
    pub max_handshakes: usize,
    /// A QUIC handshake that has not completed this long after it started
    /// is abandoned and its slot given to the next attempt; at least 1.
    /// Default 5 s: a
    /// handshake takes two round trips, and a terminal that went away would
    /// otherwise hold its slot until the idle timeout.
    pub handshake_timeout_ms: u32,
    /// An attempt that waited this long for a handshake slot is dropped
    /// without an answer, at least 1; the newest attempts are served first
    /// ([`crate::admission`]). Default 5 s: terminals give up after 10 s
    /// and try again.
    pub handshake_queue_ms: u32,
    /// UDP socket send and receive buffer size in bytes, 0 for the kernel
    /// default. Default 4 MiB: a burst of fan-out to many listeners must not
    /// overflow the socket.
    pub socket_buffer: usize,
    /// Ack-eliciting packets (voice frames, mostly) a terminal may receive
    /// per ACK it sends. Default 2, as RFC 9000 has it. More asks terminals,
    /// through the QUIC ACK-frequency extension (quinn terminals support
    /// it; others ignore it), to acknowledge less often, which saves the
    /// gateway receiving and processing about 1 us of ACK per voice frame
    /// (BENCHMARKS.md). Terminals still acknowledge within
    /// `ack_max_delay_ms`, so lost control messages are also detected that
    /// much later.
    pub ack_every_packets: std::num::NonZeroU32,
    /// With `ack_every_packets` above 2: the longest a terminal may hold
    /// back an ACK, ms. quinn asks for no more than one round trip (and at
    /// least 25 ms), so on a 20 ms voice stream the saving needs round trips
    /// longer than about two frames. Default 100.
    pub ack_max_delay_ms: u32,
    /// Bytes a connection may send on all its streams together before its
    /// `Hello` is accepted, at least 1 and at most 64 KiB; it may open only
    /// the control stream until then. Default 16 KiB: a `Hello` is under
    /// 300 bytes, and frames a terminal sends right behind it wait for the
    /// window to open. An unauthenticated connection so costs at most this
    /// (issue 11, item 7).
    pub hello_receive_window: u32,
    /// Bytes a terminal may have in flight on all its streams together once
    /// authenticated, at least 1. Default 2 MiB: more than one stream's
    /// window (quinn's 1.25 MB), so an upload runs at full speed, while a
    /// terminal that opens streams and never finishes them parks at most
    /// this much.
    pub receive_window: u32,
    /// Connection attempts in handshake or waiting for a slot from which an
    /// attempt whose address is not proven is answered with a QUIC Retry
    /// (a token it must come back with, one round trip); 0 retries every
    /// such attempt, 1,000,000 never does ([`crate::admission`]). Default
    /// 256, `max_handshakes`' default: Retry only once every slot is taken,
    /// so a flood of Initials from forged addresses (attack 8) holds the
    /// slots for one handshake timeout at most and real terminals, whose
    /// attempts come back with the token, get the slots as they free; in
    /// ordinary load nobody pays the extra round trip. Measured: the
    /// whole-city reconnect storm (30,865 terminals) all back in 63.6 s with
    /// it (65.4 s without, an earlier run); 128 with the per-address bounds
    /// collapsed the load harness's storm (256 terminals per socket: 2,781
    /// back after 300 s; BENCHMARKS.md).
    pub retry_from: usize,
    /// Connection attempts without a valid Retry token (unproven address)
    /// one source address (IP and port) may have in handshake or waiting,
    /// at least 1; over it, an attempt gets a Retry. 8 suits handsets (one
    /// attempt at a time, two while an abandoned one times out; handsets
    /// behind one carrier-grade NAT address each have a port of their own)
    /// and holds one socket replaying Initials to 8 slots. Default
    /// 1,000,000 (off) until the storm interaction of Retry is fixed (see
    /// `retry_from`).
    pub handshakes_per_address: usize,
    /// Connection attempts with a valid Retry token (proven address) one
    /// source address (IP and port) may have in handshake or waiting, at
    /// least 1, counted apart from the unproven ones (so that Initials
    /// forged with a terminal's address cannot use up its allowance); over
    /// it, an attempt is dropped unanswered. 64 (a quarter of the slots)
    /// suits handsets; the load harness runs 256 terminals on one socket
    /// and loses attempts to it in a storm. Default 1,000,000 (off), with
    /// `retry_from`.
    pub handshakes_per_proven_address: usize,
    /// File of the TLS session-ticket keys every node of a cluster shares
    /// (hex lines of 32 bytes, newest first; `ptt-gateway ticket-key new`
    /// makes one, `ticket-key rotate` rotates it; [`crate::tls::tickets`]).
    /// Tickets are sealed with the newest key and opened with any, so a
    /// terminal whose node died resumes its TLS session on another node
    /// instead of a full handshake (a certificate signature on the node, a
    /// chain verification on the handset), and a city's terminals failing
    /// over at once do not all cost that. The file is reread within 30 s of
    /// a change. Default none: each process seals with random keys of its
    /// own, rotated every 6 hours (rustls's), which suits a single node and
    /// needs no secret to manage; a restart then costs every terminal one
    /// full handshake.
    pub ticket_key_file: Option<PathBuf>,
    /// Answer terminals that offer SRTP in their `Hello` (docs/PROTOCOL.md,
    /// "Media plane: SRTP"): their voice then travels as SRTP beside QUIC
    /// on this port, keyed from their QUIC connection. Default on: a
    /// listener costs the gateway one AES-GCM seal and a slot in a
    /// `sendmmsg` per frame instead of a QUIC packet, and sends no
    /// acknowledgements back (BENCHMARKS.md, "Media plane"). Off, every
    /// terminal gets QUIC DATAGRAM voice, as browsers always do.
    pub srtp: bool,
}

impl Default for Transport {
    fn default() -> Self {
        Self {
            idle_timeout_ms: 30_000,
            datagram_send_buffer: 2400,
            datagram_receive_buffer: 64 * 1024,
            max_bidi_streams: 4,
            max_uni_streams: 2,
            max_handshakes: 256,
            handshake_timeout_ms: 5_000,
            handshake_queue_ms: 5_000,
            socket_buffer: 4 * 1024 * 1024,
            ack_every_packets: std::num::NonZeroU32::new(2).expect("2 is not 0"),
            ack_max_delay_ms: 100,
            hello_receive_window: 16 * 1024,
            receive_window: 2 * 1024 * 1024,
            retry_from: 256,
            handshakes_per_address: 1_000_000,
            handshakes_per_proven_address: 1_000_000,
            ticket_key_file: None,
            srtp: true,
        }
    }
}

/// Per-session settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Session {
    /// Time allowed between handshake and `Hello`, at least 1. Default 5 s:
    /// a terminal sends `Hello` right after the handshake, one round trip,
    /// so this covers a congested cellular link, and an unauthenticated
    /// connection holds the gateway's memory at most this long (issue 11:
    /// at most 5 s and 64 KiB).
    pub hello_timeout_ms: u32,
    /// Groups one terminal may be in, at least 1. Default 64: a console
    /// scanning a police station's units.
    pub max_groups: usize,
    /// Control messages queued for a terminal before it is disconnected as
    /// too slow, at least 1. Default 1024: a burst, a join or an alert
    /// queues a handful; a terminal that far behind is not reading.
    pub outbox: usize,
    /// Malformed control frames tolerated before the connection is closed;
    /// 0 closes on the first. Default 8: a conforming terminal sends none,
    /// and a few are forgiven so one faulty message does not cut a
    /// terminal off.
    pub max_malformed: u32,
    /// Voice datagrams per second one connection may send, at least 1.
    /// Default 150: three groups at 50 frames/s.
    pub voice_rate: u32,
    /// Voice datagrams one connection may send in a burst, at least 1.
    /// Default 50: one second of one group's frames.
    pub voice_burst: u32,
    /// A member's presence changes are told to the others at most once per
    /// this interval (the net change; see PROTOCOL.md), 0 tells every
    /// change at once. Default 1,000: a member list on a handset does not
    /// need sub-second updates, the first change after a quiet second is
    /// still told at once, and a burst of joins and leaves costs each other
    /// member one `Presence` a second instead of one per frame.
    pub presence_interval_ms: u32,
    /// `Join`s and `Leave`s per second one terminal may send, sustained,
    /// at least 1; the bucket is the terminal's, kept across its
    /// reconnects (a reconnect refills nothing). Default 4: a console
    /// operator scanning units by hand. The join an SOS makes to its
    /// unit's group is never limited.
    pub join_rate: u32,
    /// `Join`s and `Leave`s one terminal may send in a burst, at least 1.
    /// Default 128: twice `max_groups`, so a console can join all its
    /// groups at once and leave them again.
    pub join_burst: u32,
    /// `Join`s and `Leave`s refused in a row (BUSY) after which the
    /// connection is closed with RATE_LIMITED, at least 1. Default 256: a
    /// terminal refused that often in a row, sending nothing it is allowed
    /// in between, is looping or attacking; and a burst of `join_burst`
    /// answers plus this many BUSY still fits in half of the default
    /// `outbox`, so such a terminal is closed RATE_LIMITED (which says why)
    /// before its own backlog of answers closes it TOO_SLOW.
    pub join_max_refused: u32,
}

impl Session {
    /// Presence coalescing interval (`presence_interval_ms`).
    pub fn presence_interval(&self) -> Duration {
        Duration::from_millis(u64::from(self.presence_interval_ms))
    }
}

impl Default for Session {
    fn default() -> Self {
        Self {
            hello_timeout_ms: 5_000,
            max_groups: 64,
            outbox: 1024,
            max_malformed: 8,
            voice_rate: 150,
            voice_burst: 50,
            presence_interval_ms: 1_000,
            join_rate: 4,
            join_burst: 128,
            join_max_refused: 256,
        }
    }
}

/// Errors loading the configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: toml::de::Error,
    },
    /// The file sets a value outside its bounds.
    #[error("invalid config file {path}: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Which value, and why.
        source: OutOfBounds,
    },
    /// A command-line flag sets a value outside its bounds.
    #[error("invalid command-line value: {0}")]
    Flag(OutOfBounds),
}

/// A configuration value outside its bounds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}` {reason}")]
pub struct OutOfBounds {
    /// The value's path in the file, e.g. `transport.max_handshakes`.
    pub field: &'static str,
    /// What it must be.
    pub reason: String,
}

/// The command-line layer: one field per flag, `None` when the flag was not
/// given, so that the file's value (or the default) stays.
/// [`Config::apply`] puts it over a [`Config`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--listen`: [`Config::listen`].
    pub listen: Option<SocketAddr>,
    /// `--data-dir`: [`Config::data_dir`].
    pub data_dir: Option<PathBuf>,
    /// `--org`: [`Config::org`].
    pub org: Option<PathBuf>,
    /// `--cert`: [`Config::cert`].
    pub cert: Option<PathBuf>,
    /// `--key`: [`Config::key`].
    pub key: Option<PathBuf>,
    /// `--provisioning-key`: [`Config::provisioning_key`].
    pub provisioning_key: Option<PathBuf>,
    /// `--marks`: [`Drill::marks_s`].
    pub drill_marks_s: Option<Vec<u32>>,
    /// `--http ADDR` (`Some(Some(addr))`) or `--no-http` (`Some(None)`):
    /// [`Http::listen`] and [`Http::enabled`].
    pub http: Option<Option<SocketAddr>>,
    /// `--node`: [`Cluster::node`].
    pub node: Option<String>,
    /// `--nats`: [`Cluster::nats`].
    pub nats: Option<Vec<String>>,
}

impl Config {
    /// The configuration to run with: the defaults, overridden by the file
    /// at `file` if there is one, overridden by the flags that were given;
    /// then checked. Call it once at start-up, with the parsed command line.
    pub fn layered(file: Option<&Path>, flags: Overrides) -> Result<Config, Error> {
        let mut config = match file {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        config.apply(flags);
        config.validate().map_err(Error::Flag)?;
        Ok(config)
    }

    /// Reads a TOML config file over the defaults, and checks it.
    pub fn load(path: &Path) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|source| Error::Parse {
            path: path.to_owned(),
            source,
        })?;
        config.validate().map_err(|source| Error::Invalid {
            path: path.to_owned(),
            source,
        })?;
        Ok(config)
    }

    /// Sets every value a flag was given for and leaves the others. Check
    /// the result with [`Config::validate`] ([`Config::layered`] does).
    pub fn apply(&mut self, flags: Overrides) {
        // Destructured, so that a new flag does not compile until it is
        // applied here.
        let Overrides {
            listen,
            data_dir,
            org,
            cert,
            key,
            provisioning_key,
            drill_marks_s,
            http,
            node,
            nats,
        } = flags;
        if node.is_some() {
            self.cluster.node = node;
        }
        if let Some(nats) = nats {
            self.cluster.nats = nats;
        }
        if let Some(listen) = listen {
            self.listen = listen;
        }
        if let Some(data_dir) = data_dir {
            self.data_dir = data_dir;
        }
        for (field, flag) in [
            (&mut self.org, org),
            (&mut self.cert, cert),
            (&mut self.key, key),
            (&mut self.provisioning_key, provisioning_key),
        ] {
            if flag.is_some() {
                *field = flag;
            }
        }
        if let Some(marks) = drill_marks_s {
            self.drill.marks_s = marks;
        }
        match http {
            Some(Some(addr)) => {
                self.http.enabled = true;
                self.http.listen = addr;
            }
            Some(None) => self.http.enabled = false,
            None => {}
        }
    }

    /// Checks every bounded value against the bounds its doc comment gives.
    /// [`Config::load`] and [`Config::layered`] call it; call it yourself on
    /// a configuration built or changed in code before the gateway uses it.
    pub fn validate(&self) -> Result<(), OutOfBounds> {
        fn at_least_1<T: PartialOrd + From<u8>>(
            field: &'static str,
            value: T,
        ) -> Result<(), OutOfBounds> {
            if value < T::from(1) {
                return Err(OutOfBounds {
                    field,
                    reason: "must be at least 1".into(),
                });
            }
            Ok(())
        }
        let Config {
            floor,
            transport,
            session,
            attachments,
            delivery,
            ..
        } = self;
        at_least_1("delivery.per_terminal", delivery.per_terminal)?;
        at_least_1("delivery.write_timeout_ms", delivery.write_timeout_ms)?;
        at_least_1("floor.talk_limit_s", floor.talk_limit_s)?;
        at_least_1("floor.sos_hot_mic_s", floor.sos_hot_mic_s)?;
        for (i, g) in floor.group.iter().enumerate() {
            at_least_1("floor.group.talk_limit_s", g.talk_limit_s)?;
            if floor.group[..i].iter().any(|earlier| earlier.id == g.id) {
                return Err(OutOfBounds {
                    field: "floor.group.id",
                    reason: format!("lists group {} twice", g.id),
                });
            }
        }
        at_least_1("transport.idle_timeout_ms", transport.idle_timeout_ms)?;
        at_least_1(
            "transport.datagram_send_buffer",
            transport.datagram_send_buffer,
        )?;
        at_least_1(
            "transport.datagram_receive_buffer",
            transport.datagram_receive_buffer,
        )?;
        at_least_1("transport.max_bidi_streams", transport.max_bidi_streams)?;
        at_least_1("transport.max_handshakes", transport.max_handshakes)?;
        at_least_1(
            "transport.handshake_timeout_ms",
            transport.handshake_timeout_ms,
        )?;
        at_least_1("transport.handshake_queue_ms", transport.handshake_queue_ms)?;
        at_least_1("session.hello_timeout_ms", session.hello_timeout_ms)?;
        at_least_1("session.max_groups", session.max_groups)?;
        at_least_1("session.outbox", session.outbox)?;
        at_least_1("session.voice_rate", session.voice_rate)?;
        at_least_1("session.voice_burst", session.voice_burst)?;
        at_least_1("session.join_rate", session.join_rate)?;
        at_least_1("session.join_burst", session.join_burst)?;
        at_least_1("session.join_max_refused", session.join_max_refused)?;
        at_least_1("attachments.unused_expiry_s", attachments.unused_expiry_s)?;
        at_least_1("attachments.sweep_interval_s", attachments.sweep_interval_s)?;
        at_least_1(
            "attachments.transfers_per_terminal",
            attachments.transfers_per_terminal,
        )?;
        at_least_1("attachments.transfers", attachments.transfers)?;
        at_least_1("attachments.stall_timeout_ms", attachments.stall_timeout_ms)?;
        at_least_1(
            "transport.hello_receive_window",
            transport.hello_receive_window,
        )?;
        if transport.hello_receive_window > 64 * 1024 {
            return Err(OutOfBounds {
                field: "transport.hello_receive_window",
                reason: "must be at most 65536".into(),
            });
        }
        at_least_1("transport.receive_window", transport.receive_window)?;
        at_least_1(
            "transport.handshakes_per_address",
            transport.handshakes_per_address,
        )?;
        at_least_1(
            "transport.handshakes_per_proven_address",
            transport.handshakes_per_proven_address,
        )?;
        at_least_1("limits.tasks", self.limits.tasks)?;
        at_least_1("limits.strike_window_ms", self.limits.strike_window_ms)?;
        for (name, rate) in self.limits.rates.all() {
            if rate.per_second < 1 || rate.burst < 1 {
                return Err(OutOfBounds {
                    field: "limits.rates",
                    reason: format!("{name}: per_second and burst must be at least 1"),
                });
            }
        }
        if self.auth.revocation_poll_ms < 100 {
            return Err(OutOfBounds {
                field: "auth.revocation_poll_ms",
                reason: "must be at least 100".into(),
            });
        }
        at_least_1("retention.interval_s", self.retention.interval_s)?;
        at_least_1("retention.batch_rows", self.retention.batch_rows)?;
        at_least_1("disk.watch_interval_s", self.disk.watch_interval_s)?;
        at_least_1("disk.reminder_interval_s", self.disk.reminder_interval_s)?;
        at_least_1("console.session_minutes", self.console.session_minutes)?;
        at_least_1("console.max_failures", self.console.max_failures)?;
        at_least_1("console.password_checks", self.console.password_checks)?;
        if !(1..=14).contains(&self.console.cert_days) {
            return Err(OutOfBounds {
                field: "console.cert_days",
                reason: "must be 1 to 14".into(),
            });
        }
        if self.console.cert_rotate_days < 1
            || self.console.cert_rotate_days >= self.console.cert_days
        {
            return Err(OutOfBounds {
                field: "console.cert_rotate_days",
                reason: "must be at least 1 and under cert_days".into(),
            });
        }
        self.cluster.validate()?;
        let recording = &self.recording;
        at_least_1("recording.queue", recording.queue)?;
        at_least_1("recording.sweep_interval_s", recording.sweep_interval_s)?;
        at_least_1("recording.sync_interval_ms", recording.sync_interval_ms)?;
        if recording.retention_days > 0
            && recording.sos_retention_days != 0
            && recording.sos_retention_days < recording.retention_days
        {
            return Err(OutOfBounds {
                field: "recording.sos_retention_days",
                reason: "must be 0 (keep) or at least retention_days".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn flags_not_given_leave_the_file_and_flags_given_win() {
        let f = file(
            "listen = \"127.0.0.1:9000\"\ndata_dir = \"/var/ptt\"\norg = \"city.toml\"\n\
             cert = \"/etc/ptt/cert.pem\"\n[drill]\nmarks_s = [30]\n",
        );
        // No flags: the file, over the defaults.
        let c = Config::layered(Some(f.path()), Overrides::default()).unwrap();
        assert_eq!(c.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(c.data_dir, PathBuf::from("/var/ptt"));
        assert_eq!(c.org, Some(PathBuf::from("city.toml")));
        assert_eq!(c.cert, Some(PathBuf::from("/etc/ptt/cert.pem")));
        assert_eq!(c.key, None);
        assert_eq!(c.drill.marks_s, [30]);
        assert_eq!(c.floor.talk_limit_s, Floor::default().talk_limit_s);
        // Some flags: those win, the rest of the file stays.
        let flags = Overrides {
            data_dir: Some("/tmp/x".into()),
            key: Some("/tmp/key.pem".into()),
            drill_marks_s: Some(vec![60, 120]),
            ..Overrides::default()
        };
        let c = Config::layered(Some(f.path()), flags).unwrap();
        assert_eq!(c.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.org, Some(PathBuf::from("city.toml")));
        assert_eq!(c.cert, Some(PathBuf::from("/etc/ptt/cert.pem")));
        assert_eq!(c.key, Some(PathBuf::from("/tmp/key.pem")));
        assert_eq!(c.drill.marks_s, [60, 120]);
        // Every flag, and no file: the flags over the defaults.
        let flags = Overrides {
            listen: Some("127.0.0.1:1".parse().unwrap()),
            data_dir: Some("d".into()),
            org: Some("o".into()),
            cert: Some("c".into()),
            key: Some("k".into()),
            provisioning_key: Some("p".into()),
            drill_marks_s: Some(vec![1]),
            http: Some(Some("127.0.0.1:2".parse().unwrap())),
            node: Some("a-1".into()),
            nats: Some(vec!["nats://127.0.0.1:4222".into()]),
        };
        let c = Config::layered(None, flags.clone()).unwrap();
        let seen = Overrides {
            listen: Some(c.listen),
            data_dir: Some(c.data_dir),
            org: c.org,
            cert: c.cert,
            key: c.key,
            provisioning_key: c.provisioning_key,
            drill_marks_s: Some(c.drill.marks_s),
            http: Some(c.http.enabled.then_some(c.http.listen)),
            node: c.cluster.node,
            nats: Some(c.cluster.nats),
        };
        assert_eq!(seen, flags);
    }

    #[test]
    fn zero_handshake_slots_are_refused_on_load() {
        let f = file("[transport]\nmax_handshakes = 0\n");
        let err = Config::load(f.path()).unwrap_err();
        assert!(
            matches!(&err, Error::Invalid { source, .. } if source.field == "transport.max_handshakes"),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.contains("transport.max_handshakes") && text.contains("at least 1"),
            "{text}"
        );
        let err = Config::layered(Some(f.path()), Overrides::default()).unwrap_err();
        assert!(matches!(err, Error::Invalid { .. }), "{err}");
    }

    #[test]
    fn every_bounded_value_is_checked() {
        assert_eq!(Config::default().validate(), Ok(()));
        for (section, field) in [
            ("floor", "talk_limit_s"),
            ("floor", "sos_hot_mic_s"),
            ("transport", "idle_timeout_ms"),
            ("transport", "datagram_send_buffer"),
            ("transport", "datagram_receive_buffer"),
            ("transport", "max_bidi_streams"),
            ("transport", "max_handshakes"),
            ("transport", "handshake_timeout_ms"),
            ("transport", "handshake_queue_ms"),
            ("session", "hello_timeout_ms"),
            ("session", "max_groups"),
            ("session", "outbox"),
            ("session", "voice_rate"),
            ("session", "voice_burst"),
            ("session", "join_rate"),
            ("session", "join_burst"),
            ("session", "join_max_refused"),
            ("attachments", "unused_expiry_s"),
            ("attachments", "sweep_interval_s"),
            ("attachments", "transfers_per_terminal"),
            ("attachments", "transfers"),
            ("attachments", "stall_timeout_ms"),
            ("delivery", "per_terminal"),
            ("delivery", "write_timeout_ms"),
            ("retention", "interval_s"),
            ("retention", "batch_rows"),
            ("disk", "watch_interval_s"),
            ("disk", "reminder_interval_s"),
            ("transport", "handshakes_per_address"),
            ("transport", "handshakes_per_proven_address"),
        ] {
            let c: Config = toml::from_str(&format!("[{section}]\n{field} = 0\n")).unwrap();
            let err = c.validate().unwrap_err();
            assert_eq!(err.field, format!("{section}.{field}"), "{err}");
            let c: Config = toml::from_str(&format!("[{section}]\n{field} = 1\n")).unwrap();
            assert_eq!(c.validate(), Ok(()), "{section}.{field} = 1");
        }
        // Zero where it means something: no queue, no uploads, no tolerance.
        let c: Config = toml::from_str(
            "[floor]\nqueue = 0\n[transport]\nmax_uni_streams = 0\nsocket_buffer = 0\n\
             [session]\nmax_malformed = 0\npresence_interval_ms = 0\n[attachments]\nquota_bytes = 0\nquota_uploads = 0\n\
             retention_days = 0\nqueued_fetches = 0\ndisk_reserve_bytes = 0\n",
        )
        .unwrap();
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn zero_retention_keeps_forever_and_is_valid() {
        let c: Config = toml::from_str(
            "[retention]\nalert_days = 0\nsos_days = 0\naudit_days = 0\nbatch_pause_ms = 0\n",
        )
        .unwrap();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(
            (c.retention.alert_days, c.retention.sos_days),
            (0, 0),
            "0 means keep forever"
        );
    }

    #[test]
    fn per_group_limits_are_checked() {
        let c: Config = toml::from_str("[[floor.group]]\nid = 5\ntalk_limit_s = 0\n").unwrap();
        assert_eq!(c.validate().unwrap_err().field, "floor.group.talk_limit_s");
        let c: Config = toml::from_str(
            "[[floor.group]]\nid = 5\ntalk_limit_s = 10\n[[floor.group]]\nid = 5\ntalk_limit_s = 20\n",
        )
        .unwrap();
        let err = c.validate().unwrap_err();
        assert_eq!(err.field, "floor.group.id");
        assert!(err.reason.contains("group 5 twice"), "{err}");
    }

    #[test]
    fn every_section_rejects_unknown_fields() {
        for section in [
            "[policy]",
            "[policy.priority]",
            "[floor]",
            "[[floor.group]]\nid = 1\ntalk_limit_s = 1",
            "[transport]",
            "[session]",
            "[drill]",
            "[attachments]",
            "[retention]",
            "[disk]",
        ] {
            let err = toml::from_str::<Config>(&format!("{section}\nbogus = 1\n")).unwrap_err();
            assert!(err.to_string().contains("bogus"), "{section}: {err}");
        }
    }

    #[test]
    fn empty_file_is_the_default() {
        let c: Config = toml::from_str("").unwrap();
        assert_eq!(c.listen, Config::default().listen);
        assert_eq!(c.floor.talk_limit(7), Duration::from_secs(30));
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = toml::from_str::<Config>("listn = \"127.0.0.1:1\"").unwrap_err();
        assert!(err.to_string().contains("listn"), "{err}");
        let err = toml::from_str::<Config>("[floor]\ntalk_limit = 3").unwrap_err();
        assert!(err.to_string().contains("talk_limit"), "{err}");
    }

    #[test]
    fn the_example_file_is_the_default() {
        let text = include_str!("../gateway.example.toml");
        let c: Config = toml::from_str(text).unwrap();
        assert_eq!(c.validate(), Ok(()));
        let d = Config::default();
        assert_eq!(c.listen, d.listen);
        assert_eq!(c.cluster.node, d.cluster.node);
        assert_eq!(c.cluster.size, d.cluster.size);
        assert_eq!(c.cluster.heartbeat_ms, d.cluster.heartbeat_ms);
        assert_eq!(c.cluster.timeout_ms, d.cluster.timeout_ms);
        assert_eq!(c.cluster.takeover_ms, d.cluster.takeover_ms);
        assert_eq!(c.cluster.replicas, d.cluster.replicas);
        assert_eq!(c.cluster.discover_servers, d.cluster.discover_servers);
        assert_eq!(c.data_dir, d.data_dir);
        assert_eq!(c.floor.talk_limit_s, d.floor.talk_limit_s);
        assert_eq!(c.floor.queue, d.floor.queue);
        assert_eq!(
            c.transport.datagram_send_buffer,
            d.transport.datagram_send_buffer
        );
        assert_eq!(c.transport.socket_buffer, d.transport.socket_buffer);
        assert_eq!(c.transport.ack_every_packets, d.transport.ack_every_packets);
        assert_eq!(c.transport.ack_max_delay_ms, d.transport.ack_max_delay_ms);
        assert_eq!(c.session.max_groups, d.session.max_groups);
        assert_eq!(c.session.voice_rate, d.session.voice_rate);
        assert_eq!(c.policy.priority.police, d.policy.priority.police);
        assert_eq!(c.policy.police_scope, d.policy.police_scope);
        assert_eq!(c.attachments.quota_bytes, d.attachments.quota_bytes);
        assert_eq!(c.attachments.unused_expiry_s, d.attachments.unused_expiry_s);
        assert_eq!(c.attachments.retention_days, d.attachments.retention_days);
        assert_eq!(
            c.attachments.disk_reserve_bytes,
            d.attachments.disk_reserve_bytes
        );
        let (r, dr) = (&c.retention, &d.retention);
        assert_eq!(
            (r.alert_days, r.sos_days, r.audit_days),
            (dr.alert_days, dr.sos_days, dr.audit_days)
        );
        assert_eq!(
            (r.interval_s, r.batch_rows, r.batch_pause_ms),
            (dr.interval_s, dr.batch_rows, dr.batch_pause_ms)
        );
        assert_eq!(c.disk.watch_interval_s, d.disk.watch_interval_s);
        assert_eq!(c.disk.reminder_interval_s, d.disk.reminder_interval_s);
        assert_eq!(
            (c.http.enabled, c.http.listen, &c.http.token_file),
            (d.http.enabled, d.http.listen, &d.http.token_file)
        );
        assert_eq!(c.auth.revocation_poll_ms, d.auth.revocation_poll_ms);
        assert_eq!(c.recording, d.recording);
    }

    #[test]
    fn a_revocation_poll_under_100_ms_is_refused() {
        let c: Config = toml::from_str("[auth]\nrevocation_poll_ms = 99\n").unwrap();
        assert_eq!(c.validate().unwrap_err().field, "auth.revocation_poll_ms");
        let c: Config = toml::from_str("[auth]\nrevocation_poll_ms = 100\n").unwrap();
        assert_eq!(c.validate(), Ok(()));
        assert!(toml::from_str::<Config>("[auth]\nbogus = 1\n").is_err());
    }

    #[test]
    fn sos_recordings_are_kept_at_least_as_long() {
        let c: Config =
            toml::from_str("[recording]\nretention_days = 30\nsos_retention_days = 7").unwrap();
        assert_eq!(
            c.validate().unwrap_err().field,
            "recording.sos_retention_days"
        );
        for ok in [
            "retention_days = 30\nsos_retention_days = 0",
            "retention_days = 30\nsos_retention_days = 365",
            "retention_days = 0\nsos_retention_days = 7",
        ] {
            let c: Config = toml::from_str(&format!("[recording]\n{ok}")).unwrap();
            assert_eq!(c.validate(), Ok(()), "{ok}");
        }
        let c: Config = toml::from_str("[recording]\nqueue = 0").unwrap();
        assert_eq!(c.validate().unwrap_err().field, "recording.queue");
        assert_eq!(
            Recording::default().dir(Path::new("/d")),
            Path::new("/d/recordings")
        );
    }

    #[test]
    fn zero_packets_per_ack_is_refused() {
        let err = toml::from_str::<Config>("[transport]\nack_every_packets = 0").unwrap_err();
        assert!(err.to_string().contains("ack_every_packets"), "{err}");
        let c: Config = toml::from_str("[transport]\nack_every_packets = 8").unwrap();
        assert_eq!(c.transport.ack_every_packets.get(), 8);
    }

    #[test]
    fn per_group_talk_limits() {
        let c: Config = toml::from_str(
            "[floor]\ntalk_limit_s = 20\n[[floor.group]]\nid = 5\ntalk_limit_s = 60\n",
        )
        .unwrap();
        assert_eq!(c.floor.talk_limit(5), Duration::from_secs(60));
        assert_eq!(c.floor.talk_limit(6), Duration::from_secs(20));
    }
}
