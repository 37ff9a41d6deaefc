//! `ptt-gateway`: parse configuration, install logging, run the library.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use ptt_codec::TerminalId;
use ptt_gateway::alert::Store;
use ptt_gateway::config::Overrides;
use ptt_gateway::org::{auth::ProvisioningKey, Org};
use ptt_gateway::{net, tls, Config, Gateway};

#[derive(Debug, Parser)]
#[command(version, about = "QUIC push-to-talk and alert gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines as text (for people) or JSON (one object per line, for
    /// log shippers).
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve terminals until SIGINT or SIGTERM.
    Serve(ServeArgs),
    /// Print the credential to provision into one terminal (hex).
    Credential {
        /// The org file (its key_file holds the provisioning key).
        #[arg(long)]
        org: PathBuf,
        /// Provisioning key file, overriding the org file's key_file.
        #[arg(long)]
        provisioning_key: Option<PathBuf>,
        /// Terminal id.
        #[arg(long)]
        terminal: u32,
    },
    /// Export a drill's report (JSON or CSV) from the gateway's database,
    /// or list the drills with --list. Safe while the gateway runs.
    DrillReport(DrillArgs),
    /// Revoke one terminal's credential (a stolen or lost handset). A
    /// running gateway closes its session and refuses its Hello with
    /// REVOKED within auth.revocation_poll_ms (at once on SIGHUP).
    Revoke(RevokeArgs),
    /// Lift a terminal's revocation: it may connect again.
    Unrevoke(RevokeArgs),
    /// List the revoked terminals.
    Revoked(RevokedArgs),
    /// List recorded talk bursts, or export one (`recordings export`).
    /// Safe while the gateway runs.
    Recordings(RecordingsArgs),
    /// Make the running gateway reload its org file and revocation list
    /// (SIGHUP to the pid in <data_dir>/gateway.pid) and print the org
    /// reload's result; exits non-zero when the new org is refused (the
    /// old one keeps serving).
    Reload(ReloadArgs),
    /// Manage the browser console's operator accounts (safe while the
    /// gateway runs: it picks changes up within 30 s).
    Operator(OperatorArgs),
    /// Make or rotate the TLS session-ticket key file a cluster's nodes
    /// share (transport.ticket_key_file). Running nodes reread it within
    /// 30 s of a change.
    #[command(subcommand)]
    TicketKey(TicketKeyAction),
}

/// `ptt-gateway ticket-key ...`.
#[derive(Debug, Subcommand)]
enum TicketKeyAction {
    /// Write a new key file with one random key (mode 0600); refuses to
    /// replace an existing file.
    New {
        /// The key file.
        file: PathBuf,
    },
    /// Put a new random key on top of the file and keep the previous one
    /// (the oldest beyond --keep are dropped). Rotate at most every 12 h,
    /// the tickets' lifetime, and copy the file to every node.
    Rotate {
        /// The key file.
        file: PathBuf,
        /// Keys kept in all, the new one included (1 to 4).
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=4))]
        keep: u8,
    },
}

/// Writes or rotates a ticket key file.
fn ticket_key(action: TicketKeyAction) -> anyhow::Result<()> {
    use ptt_gateway::tls::tickets;
    match action {
        TicketKeyAction::New { file } => {
            anyhow::ensure!(
                !file.exists(),
                "{} exists: rotate it (ticket-key rotate) rather than replace it",
                file.display()
            );
            tickets::write_file(&file, &(tickets::new_secret_line()? + "\n"))?;
            println!("wrote a new ticket key to {}", file.display());
        }
        TicketKeyAction::Rotate { file, keep } => {
            let old = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let text = tickets::rotated(&old, usize::from(keep))?;
            tickets::write_file(&file, &text)?;
            println!(
                "rotated {}: {} keys, the new one first; copy it to every node",
                file.display(),
                text.lines().count()
            );
        }
    }
    Ok(())
}

/// `ptt-gateway operator ...`.
#[derive(Debug, Args)]
struct OperatorArgs {
    /// TOML config file (for data_dir and org).
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Data directory holding gateway.db [default: data].
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Org file: when given (or in the config), the terminal must be one
    /// of its consoles.
    #[arg(long, global = true)]
    org: Option<PathBuf>,
    #[command(subcommand)]
    action: OperatorAction,
}

#[derive(Debug, Subcommand)]
enum OperatorAction {
    /// Create an operator at a console terminal (or move an existing one
    /// there with a new password). Prints a generated password unless
    /// --password-stdin.
    Add {
        /// Sign-in name.
        name: String,
        /// The console terminal of the org the operator sits at: they see
        /// and command its node and everything under it.
        #[arg(long)]
        terminal: u32,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Give an operator a new password; their sessions end.
    Passwd {
        /// Sign-in name.
        name: String,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove an operator; their sessions end.
    Remove {
        /// Sign-in name.
        name: String,
    },
    /// List the operators.
    List,
}

/// Where the running gateway's data directory is.
#[derive(Debug, Args)]
struct ReloadArgs {
    /// TOML config file (for data_dir).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The gateway's data directory [default: data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Seconds to wait for the gateway's answer.
    #[arg(long, default_value_t = 10)]
    wait_s: u64,
}

/// Signals the gateway and prints the outcome of the reload.
fn reload(args: ReloadArgs) -> anyhow::Result<()> {
    let overrides = Overrides {
        data_dir: args.data_dir.clone(),
        ..Overrides::default()
    };
    let config = Config::layered(args.config.as_deref(), overrides)?;
    let wait = std::time::Duration::from_secs(args.wait_s);
    let status = ptt_gateway::reload::signal(&config.data_dir, wait)?;
    if status.ok {
        println!("reloaded: {}", status.message);
        Ok(())
    } else {
        bail!(
            "reload refused, org generation {} keeps serving: {}",
            status.generation,
            status.message
        )
    }
}

/// Which database, and which terminal.
#[derive(Debug, Args)]
struct RevokeArgs {
    /// TOML config file (for data_dir and org).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Data directory holding gateway.db [default: data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Org file: when given (or in the config), the terminal must be in it.
    #[arg(long)]
    org: Option<PathBuf>,
    /// The terminal.
    #[arg(long)]
    terminal: u32,
    /// Why (revoke only), e.g. "handset stolen, report 2026-118".
    #[arg(long, default_value = "")]
    reason: String,
    /// Who revokes it (revoke only) [default: cli:$USER].
    #[arg(long)]
    by: Option<String>,
}

/// Which database, and how to print.
#[derive(Debug, Args)]
struct RevokedArgs {
    /// TOML config file (for data_dir).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Data directory holding gateway.db [default: data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: ListFormat,
}

/// Which recordings to list, or what to export.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
struct RecordingsArgs {
    #[command(subcommand)]
    export: Option<RecordingsCommand>,
    #[command(flatten)]
    at: RecordingsAt,
    /// Only this group.
    #[arg(long)]
    group: Option<u32>,
    /// Only this talker (terminal id).
    #[arg(long)]
    speaker: Option<u32>,
    /// Granted at or after: Unix ms or a UTC date YYYY-MM-DD[THH:MM[:SS]].
    #[arg(long, value_parser = ptt_gateway::recorder::parse_time)]
    since: Option<u64>,
    /// Granted at or before, as --since.
    #[arg(long, value_parser = ptt_gateway::recorder::parse_time)]
    until: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: ListFormat,
}

/// Where the gateway keeps its database and recordings.
#[derive(Debug, Args)]
struct RecordingsAt {
    /// TOML config file (for data_dir and recording.dir).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Data directory holding gateway.db [default: data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum RecordingsCommand {
    /// Copy one recording out as Ogg Opus, or decode it to WAV.
    Export {
        #[command(flatten)]
        at: RecordingsAt,
        /// The recording's id (the `id` column of the list).
        #[arg(long)]
        burst: u64,
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
        /// Decode to a 16 kHz mono WAV file instead of copying the Opus.
        #[arg(long)]
        wav: bool,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ListFormat {
    Table,
    Json,
}

/// The gateway's database under `config`'s data directory, which must
/// exist already (the gateway created it).
fn existing_store(config: &Config) -> anyhow::Result<Store> {
    let db = config.data_dir.join("gateway.db");
    if !db.is_file() {
        bail!(
            "no database at {}: pass --data-dir (the gateway's data directory)",
            db.display()
        );
    }
    Store::open(&db).with_context(|| format!("opening {}", db.display()))
}

/// Shortest password accepted from stdin.
const MIN_PASSWORD_CHARS: usize = 8;

/// A password from stdin, or a generated one (printed), for operator
/// `name`.
fn new_password(name: &str, from_stdin: bool) -> anyhow::Result<String> {
    if !from_stdin {
        let password: String = {
            use rand::Rng;
            let alphabet = b"abcdefghijkmnpqrstuvwxyzACDEFGHJKLMNPQRTUVWXY345679";
            let mut rng = rand::thread_rng();
            (0..16)
                .map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char)
                .collect()
        };
        println!("operator {name}: password {password}");
        return Ok(password);
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    if password.chars().count() < MIN_PASSWORD_CHARS {
        bail!("the password must have at least {MIN_PASSWORD_CHARS} characters");
    }
    Ok(password)
}

fn operator(args: OperatorArgs) -> anyhow::Result<()> {
    let overrides = Overrides {
        data_dir: args.data_dir.clone(),
        org: args.org.clone(),
        ..Overrides::default()
    };
    let config = Config::layered(args.config.as_deref(), overrides)?;
    ptt_gateway::store::create_data_dir(&config.data_dir)
        .context("preparing the data directory")?;
    let db = config.data_dir.join("gateway.db");
    let store = Store::open(&db).with_context(|| format!("opening {}", db.display()))?;
    let now = ptt_gateway::alert::now_ms();
    match args.action {
        OperatorAction::Add {
            name,
            terminal,
            password_stdin,
        } => {
            let terminal = TerminalId(terminal);
            if name.is_empty() || name.len() > 64 || name.chars().any(char::is_whitespace) {
                bail!("an operator name is 1 to 64 bytes without spaces");
            }
            if let Some(path) = &config.org {
                let org = Org::load(path)
                    .with_context(|| format!("loading org file {}", path.display()))?;
                match org.terminal(terminal) {
                    Some(t) if t.is_console() => {}
                    Some(_) => bail!("terminal {terminal} is not a console in {}", path.display()),
                    None => bail!(
                        "terminal {terminal} is not in the org file {}",
                        path.display()
                    ),
                }
            }
            let password = new_password(&name, password_stdin)?;
            let hash = ptt_gateway::http::hash_password(&password)
                .map_err(|e| anyhow::anyhow!("hashing the password: {e}"))?;
            let new = store.put_operator(&name, terminal, &hash, now)?;
            let what = if new {
                "created"
            } else {
                "updated; their sessions ended"
            };
            println!("operator {name} at console {terminal}: {what}");
        }
        OperatorAction::Passwd {
            name,
            password_stdin,
        } => {
            let Some((op, _)) = store.operator_password(&name)? else {
                bail!("no operator {name}");
            };
            let password = new_password(&name, password_stdin)?;
            let hash = ptt_gateway::http::hash_password(&password)
                .map_err(|e| anyhow::anyhow!("hashing the password: {e}"))?;
            store.put_operator(&name, op.terminal, &hash, now)?;
            println!("operator {name}: new password set; their sessions ended");
        }
        OperatorAction::Remove { name } => {
            if store.remove_operator(&name)? {
                println!("operator {name} removed; their sessions ended");
            } else {
                bail!("no operator {name}");
            }
        }
        OperatorAction::List => {
            println!("name\tterminal\tcreated_ms");
            for op in store.operators()? {
                println!("{}\t{}\t{}", op.name, op.terminal.0, op.created_ms);
            }
        }
    }
    Ok(())
}

fn revoke(args: RevokeArgs, lift: bool) -> anyhow::Result<()> {
    let overrides = Overrides {
        data_dir: args.data_dir.clone(),
        org: args.org.clone(),
        ..Overrides::default()
    };
    let config = Config::layered(args.config.as_deref(), overrides)?;
    let terminal = TerminalId(args.terminal);
    if let Some(path) = &config.org {
        let org =
            Org::load(path).with_context(|| format!("loading org file {}", path.display()))?;
        if !lift && org.terminal(terminal).is_none() {
            bail!(
                "terminal {terminal} is not in the org file {}",
                path.display()
            );
        }
    }
    let store = existing_store(&config)?;
    if lift {
        if store.unrevoke(terminal)? {
            println!("terminal {terminal}: revocation lifted; it may connect again");
        } else {
            println!("terminal {terminal} was not revoked");
        }
        return Ok(());
    }
    let by = args.by.unwrap_or_else(|| {
        format!(
            "cli:{}",
            std::env::var("USER").unwrap_or_else(|_| "?".into())
        )
    });
    let now = ptt_gateway::alert::now_ms();
    match store.revoke(terminal, &args.reason, &by, now)? {
        None => println!(
            "terminal {terminal} revoked; a running gateway closes its session within \
             auth.revocation_poll_ms (at once on SIGHUP)"
        ),
        Some(r) => println!(
            "terminal {terminal} was already revoked at {} ms by {} ({})",
            r.revoked_ms, r.revoked_by, r.reason
        ),
    }
    Ok(())
}

fn list_revoked(args: RevokedArgs) -> anyhow::Result<()> {
    let overrides = Overrides {
        data_dir: args.data_dir.clone(),
        ..Overrides::default()
    };
    let config = Config::layered(args.config.as_deref(), overrides)?;
    let list = existing_store(&config)?.revocations()?;
    match args.format {
        ListFormat::Json => {
            let rows: Vec<_> = list.iter().map(|r| r.to_json()).collect();
            println!("{}", serde_json::Value::Array(rows));
        }
        ListFormat::Table => {
            println!("terminal\trevoked_ms\trevoked_by\treason");
            for r in &list {
                println!(
                    "{}\t{}\t{}\t{}",
                    r.terminal.0, r.revoked_ms, r.revoked_by, r.reason
                );
            }
        }
    }
    Ok(())
}

impl RecordingsAt {
    /// The store and the recordings directory.
    fn open(&self) -> anyhow::Result<(Store, PathBuf)> {
        let flags = Overrides {
            data_dir: self.data_dir.clone(),
            ..Overrides::default()
        };
        let config = Config::layered(self.config.as_deref(), flags)?;
        let db = config.data_dir.join("gateway.db");
        if !db.is_file() {
            bail!(
                "no database at {}: pass --data-dir (the gateway's data directory)",
                db.display()
            );
        }
        let store = Store::open(&db).with_context(|| format!("opening {}", db.display()))?;
        Ok((store, config.recording.dir(&config.data_dir)))
    }
}

fn recordings(args: RecordingsArgs) -> anyhow::Result<()> {
    use ptt_gateway::recorder::utc;
    if let Some(RecordingsCommand::Export {
        at,
        burst,
        out,
        wav,
    }) = args.export
    {
        let (store, dir) = at.open()?;
        let Some(r) = store.recording(burst)? else {
            bail!("no recording {burst}: see `ptt-gateway recordings` for the ids");
        };
        let Some(rel) = r.path else {
            bail!("recording {burst} has no audio: nobody spoke in the burst");
        };
        let file = dir.join(rel);
        if wav {
            #[cfg(feature = "wav-export")]
            {
                let n = ptt_gateway::recorder::export::to_wav(&file, &out)
                    .with_context(|| format!("decoding {}", file.display()))?;
                eprintln!("{}: {n} samples at 16 kHz", out.display());
            }
            #[cfg(not(feature = "wav-export"))]
            bail!("this gateway was built without the wav-export feature");
        } else {
            std::fs::copy(&file, &out)
                .with_context(|| format!("copying {} to {}", file.display(), out.display()))?;
        }
        return Ok(());
    }
    let (store, _) = args.at.open()?;
    let query = ptt_gateway::store::RecordingQuery {
        group: args.group,
        terminal: args.speaker.map(TerminalId),
        since_ms: args.since,
        until_ms: args.until,
        limit: None,
    };
    let rows = store.recordings(&query)?;
    match args.format {
        ListFormat::Json => {
            for r in rows {
                let line = serde_json::json!({
                    "id": r.id,
                    "group": r.group,
                    "speaker": r.terminal.0,
                    "burst": r.burst,
                    "class": r.class,
                    "started_ms": r.started_ms,
                    "ended_ms": r.ended_ms,
                    "started": utc(r.started_ms),
                    "ended_by": r.ended_by.as_str(),
                    "path": r.path,
                    "frames": r.frames,
                    "filled": r.filled,
                    "dropped": r.dropped,
                    "bytes": r.bytes,
                });
                println!("{line}");
            }
        }
        ListFormat::Table => {
            println!(
                "{:>6}  {:<24}  {:>6}  {:>7}  {:>5}  {:>5}  {:>7}  {:<14}  {:>6}  {:>6}  {:>7}  {:>8}  path",
                "id", "started (UTC)", "group", "speaker", "burst", "class", "secs", "ended_by",
                "frames", "filled", "dropped", "bytes"
            );
            for r in rows {
                let secs = r.ended_ms.saturating_sub(r.started_ms) as f64 / 1000.0;
                println!(
                    "{:>6}  {:<24}  {:>6}  {:>7}  {:>5}  {:>5}  {:>7.1}  {:<14}  {:>6}  {:>6}  {:>7}  {:>8}  {}",
                    r.id,
                    utc(r.started_ms),
                    r.group,
                    r.terminal.0,
                    r.burst,
                    r.class,
                    secs,
                    r.ended_by.as_str(),
                    r.frames,
                    r.filled,
                    r.dropped,
                    r.bytes,
                    r.path.as_deref().unwrap_or("-")
                );
            }
        }
    }
    Ok(())
}

/// Where the database and org are, and which drill.
#[derive(Debug, Args)]
struct DrillArgs {
    /// TOML config file (for data_dir, org and drill.marks_s).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Data directory holding gateway.db [default: data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Org file: units and stations to group by.
    #[arg(long)]
    org: Option<PathBuf>,
    /// The drill (its alert id).
    #[arg(long, required_unless_present = "list")]
    alert: Option<u64>,
    /// List drills instead.
    #[arg(long)]
    list: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "json")]
    format: Format,
    /// Marks in seconds, comma-separated, overriding the config [default: 60,180,480].
    #[arg(long, value_delimiter = ',')]
    marks: Option<Vec<u32>>,
    /// Write to this file instead of standard output.
    #[arg(long, short)]
    out: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    Json,
    Csv,
}

impl DrillArgs {
    /// The flags of the configuration's command-line layer.
    fn overrides(&self) -> Overrides {
        Overrides {
            data_dir: self.data_dir.clone(),
            org: self.org.clone(),
            drill_marks_s: self.marks.clone(),
            ..Overrides::default()
        }
    }
}

fn drill_report(args: DrillArgs) -> anyhow::Result<()> {
    let config = Config::layered(args.config.as_deref(), args.overrides())?;
    let db = config.data_dir.join("gateway.db");
    if !db.is_file() {
        bail!(
            "no database at {}: pass --data-dir (the gateway's data directory)",
            db.display()
        );
    }
    let store = Store::open(&db).with_context(|| format!("opening {}", db.display()))?;
    let text = if args.list {
        let mut out = String::from("alert\tstarted_ms\tissuer\ttitle\n");
        for (id, title, issuer, created_ms) in store.drills(0)? {
            out.push_str(&format!("{id}\t{created_ms}\t{}\t{title}\n", issuer.0));
        }
        out
    } else {
        let Some(path) = &config.org else {
            bail!("no org file: pass --org FILE (the one the gateway serves)");
        };
        let org =
            Org::load(path).with_context(|| format!("loading org file {}", path.display()))?;
        let alert = args.alert.expect("clap requires --alert without --list");
        let now = ptt_gateway::alert::now_ms();
        let report =
            ptt_gateway::drill::from_store(&store, &org, &config.drill.marks_s, alert, now)?;
        match args.format {
            Format::Json => report.to_json() + "\n",
            Format::Csv => report.to_csv(),
        }
    };
    match args.out {
        Some(path) => {
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?
        }
        None => print!("{text}"),
    }
    Ok(())
}

/// Flags override the config file; a flag not given leaves the file's value.
#[derive(Debug, Args)]
struct ServeArgs {
    /// TOML config file.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// UDP address to listen on [default: 0.0.0.0:4433].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Data directory (generated certificate, database) [default: data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Org file: governance tree and terminals.
    #[arg(long)]
    org: Option<PathBuf>,
    /// PEM certificate chain (with --key); default: self-signed in the data dir.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// PEM private key.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Provisioning key file, overriding the org file's key_file.
    #[arg(long)]
    provisioning_key: Option<PathBuf>,
    /// TCP address of the operations surface (metrics, health, admin API)
    /// [default: 127.0.0.1:9090; HTTPS when beyond loopback].
    #[arg(long, value_name = "ADDR", conflicts_with = "no_http")]
    http: Option<SocketAddr>,
    /// Serve no operations surface.
    #[arg(long)]
    no_http: bool,
    /// Join a cluster as this node (docs/CLUSTER.md); needs --nats.
    #[arg(long, requires = "nats")]
    node: Option<String>,
    /// NATS server URLs of the cluster, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "URLS")]
    nats: Option<Vec<String>>,
}

impl ServeArgs {
    /// The flags of the configuration's command-line layer.
    fn overrides(&self) -> Overrides {
        Overrides {
            listen: self.listen,
            data_dir: self.data_dir.clone(),
            org: self.org.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            provisioning_key: self.provisioning_key.clone(),
            drill_marks_s: None,
            http: if self.no_http {
                Some(None)
            } else {
                self.http.map(Some)
            },
            node: self.node.clone(),
            nats: self.nats.clone(),
        }
    }

    /// Defaults, then the config file, then the flags given.
    fn config(&self) -> anyhow::Result<Config> {
        Ok(Config::layered(self.config.as_deref(), self.overrides())?)
    }
}

fn load_org(
    org: Option<&PathBuf>,
    key: Option<&PathBuf>,
) -> anyhow::Result<(Org, ProvisioningKey)> {
    let Some(path) = org else {
        bail!("no org file: pass --org FILE or set `org` in the config file (terminal-sim gen-city writes one)");
    };
    let org = Org::load(path).with_context(|| format!("loading org file {}", path.display()))?;
    let key_path = match (key, org.key_file()) {
        (Some(k), _) => k.clone(),
        (None, Some(k)) => k.to_path_buf(),
        (None, None) => {
            bail!("no provisioning key: set key_file in the org file or pass --provisioning-key")
        }
    };
    let key = ProvisioningKey::load(&key_path)
        .with_context(|| format!("loading provisioning key {}", key_path.display()))?;
    Ok((org, key))
}

/// On every SIGHUP, for the gateway's life: reads the revocation list at
/// once, then reloads the org file and writes the result to
/// `<data_dir>/reload.status` for `ptt-gateway reload`.
/// Install `hup` before the gateway listens and before the pid file is
/// written, so that a SIGHUP never finds the default action (which ends
/// the process).
async fn reload_on_sighup(
    gateway: Gateway,
    mut hup: tokio::signal::unix::Signal,
    data_dir: PathBuf,
) {
    let mut attempt = 0;
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP received: reading revoked credentials, reloading the org file");
        gateway.refresh_revocations().await;
        attempt += 1;
        // Reads one small file: not worth a blocking thread.
        let status = match gateway.reload_org() {
            Ok(outcome) => ptt_gateway::reload::Status {
                pid: std::process::id(),
                attempt,
                generation: outcome.generation,
                ok: true,
                message: outcome.summary(),
            },
            Err(e) => ptt_gateway::reload::Status {
                pid: std::process::id(),
                attempt,
                generation: gateway.org_generation(),
                ok: false,
                message: e.to_string(),
            },
        };
        if let Err(e) = ptt_gateway::reload::write_status(&data_dir, &status) {
            tracing::error!("writing the reload status failed: {e}");
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = term.recv() => tracing::info!("SIGTERM received"),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,quinn=warn,rustls=warn".into()),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // Span fields (terminal, remote address) on every line.
        LogFormat::Json => logs.json().with_current_span(true).init(),
    }
    match cli.command {
        Command::Credential {
            org,
            provisioning_key,
            terminal,
        } => {
            let (org, key) = load_org(Some(&org), provisioning_key.as_ref())?;
            if org.terminal(TerminalId(terminal)).is_none() {
                bail!("terminal {terminal} is not in the org file");
            }
            println!("{}", hex::encode(key.credential(TerminalId(terminal))));
            Ok(())
        }
        Command::DrillReport(args) => drill_report(args),
        Command::Revoke(args) => revoke(args, false),
        Command::Unrevoke(args) => revoke(args, true),
        Command::Revoked(args) => list_revoked(args),
        Command::Recordings(args) => recordings(args),
        Command::Reload(args) => reload(args),
        Command::Operator(args) => operator(args),
        Command::TicketKey(action) => ticket_key(action),
        Command::Serve(args) => {
            let config = args.config()?;
            let (org, key) = load_org(config.org.as_ref(), config.provisioning_key.as_ref())?;
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(async move {
                // Private (0700) before the certificate and database go in.
                ptt_gateway::store::create_data_dir(&config.data_dir)
                    .context("preparing the data directory")?;
                let id = tls::identity(&config)?;
                let db = config.data_dir.join("gateway.db");
                let store =
                    Store::open(&db).with_context(|| format!("opening {}", db.display()))?;
                let listen = config.listen;
                let (config_http, data_dir) = (config.http.clone(), config.data_dir.clone());
                let terminals = org.terminals().count();
                let net = net::Thread::start("ptt-net")?;
                let node = config.cluster.node.clone();
                let gateway = Gateway::new(config, org, key, store, net);
                if let Some(node) = node {
                    gateway
                        .join_cluster()
                        .await
                        .with_context(|| format!("joining the cluster as node {node}"))?;
                }
                let endpoint = gateway.bind(listen, &id)?;
                // The operations surface is for watching the node: if it
                // cannot start, say so loudly and serve voice anyway.
                let http = if config_http.enabled {
                    match ptt_gateway::http::Listener::bind(&config_http, &data_dir, &id).await {
                        Ok(listener) => {
                            tracing::info!(
                                addr = %listener.local_addr()?,
                                https = listener.is_https(),
                                token_file = %config_http.token_path(&data_dir).display(),
                                "operations surface: /metrics /healthz /readyz /api/v1"
                            );
                            Some(tokio::spawn(gateway.serve_http(listener)))
                        }
                        Err(e) => {
                            tracing::error!("operations surface not started: {e}");
                            None
                        }
                    }
                } else {
                    None
                };
                tracing::info!(
                    listen = %endpoint.local_addr()?,
                    cert = %id.cert_path.display(),
                    terminals,
                    "starting"
                );
                let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                    .context("installing a SIGHUP handler")?;
                let reload = tokio::spawn(reload_on_sighup(gateway.clone(), hup, data_dir.clone()));
                ptt_gateway::reload::write_pid(&data_dir).context("writing the pid file")?;
                gateway.run(endpoint, shutdown_signal()).await;
                if let Some(http) = http {
                    http.abort();
                }
                reload.abort();
                ptt_gateway::reload::remove_pid(&data_dir);
                Ok(())
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(args: &[&str]) -> ServeArgs {
        let cli = Cli::parse_from(["ptt-gateway", "serve"].iter().chain(args));
        let Command::Serve(args) = cli.command else {
            unreachable!("parsed a serve command line")
        };
        args
    }

    fn drill(args: &[&str]) -> DrillArgs {
        let cli = Cli::parse_from(["ptt-gateway", "drill-report", "--list"].iter().chain(args));
        let Command::DrillReport(args) = cli.command else {
            unreachable!("parsed a drill-report command line")
        };
        args
    }

    #[test]
    fn revocation_commands_parse() {
        let cli = Cli::parse_from([
            "ptt-gateway",
            "revoke",
            "--data-dir",
            "d",
            "--terminal",
            "501",
            "--reason",
            "stolen",
        ]);
        let Command::Revoke(args) = cli.command else {
            unreachable!("parsed a revoke command line")
        };
        assert_eq!((args.terminal, args.reason.as_str()), (501, "stolen"));
        assert_eq!(args.data_dir, Some(PathBuf::from("d")));
        assert!(args.by.is_none());
        let cli = Cli::parse_from(["ptt-gateway", "unrevoke", "--terminal", "501"]);
        assert!(matches!(cli.command, Command::Unrevoke(a) if a.terminal == 501));
        let cli = Cli::parse_from(["ptt-gateway", "revoked", "--format", "json"]);
        assert!(matches!(
            cli.command,
            Command::Revoked(RevokedArgs {
                format: ListFormat::Json,
                ..
            })
        ));
        assert!(Cli::try_parse_from(["ptt-gateway", "revoke", "--data-dir", "d"]).is_err());
    }

    #[test]
    fn config_flags_not_given_are_none() {
        assert_eq!(serve(&[]).overrides(), Overrides::default());
        assert_eq!(drill(&[]).overrides(), Overrides::default());
    }

    #[test]
    fn config_flags_given_reach_their_fields() {
        let flags = serve(&[
            "--listen",
            "127.0.0.1:1",
            "--data-dir",
            "d",
            "--org",
            "o",
            "--cert",
            "c",
            "--key",
            "k",
            "--provisioning-key",
            "p",
        ])
        .overrides();
        assert_eq!(
            flags,
            Overrides {
                listen: Some("127.0.0.1:1".parse().unwrap()),
                data_dir: Some("d".into()),
                org: Some("o".into()),
                cert: Some("c".into()),
                key: Some("k".into()),
                provisioning_key: Some("p".into()),
                drill_marks_s: None,
                http: None,
                node: None,
                nats: None,
            }
        );
        let flags = drill(&["--data-dir", "d", "--org", "o", "--marks", "30,90"]).overrides();
        assert_eq!(
            flags,
            Overrides {
                data_dir: Some("d".into()),
                org: Some("o".into()),
                drill_marks_s: Some(vec![30, 90]),
                ..Overrides::default()
            }
        );
    }

    #[test]
    fn recordings_lists_with_filters_and_exports_by_id() {
        let cli = Cli::parse_from([
            "ptt-gateway",
            "recordings",
            "--data-dir",
            "d",
            "--group",
            "7",
            "--speaker",
            "501",
            "--since",
            "2026-11-29",
            "--until",
            "1764460800001",
            "--format",
            "json",
        ]);
        let Command::Recordings(args) = cli.command else {
            unreachable!("parsed a recordings command line")
        };
        assert!(args.export.is_none());
        assert_eq!(args.at.data_dir, Some(PathBuf::from("d")));
        assert_eq!((args.group, args.speaker), (Some(7), Some(501)));
        assert_eq!(args.since, Some(1_795_910_400_000));
        assert_eq!(args.until, Some(1_764_460_800_001));
        assert!(matches!(args.format, ListFormat::Json));
        let cli = Cli::parse_from([
            "ptt-gateway",
            "recordings",
            "export",
            "--data-dir",
            "d",
            "--burst",
            "3",
            "--out",
            "x.wav",
            "--wav",
        ]);
        let Command::Recordings(RecordingsArgs {
            export:
                Some(RecordingsCommand::Export {
                    at,
                    burst,
                    out,
                    wav,
                }),
            ..
        }) = cli.command
        else {
            unreachable!("parsed a recordings export command line")
        };
        assert_eq!(
            (at.data_dir, burst, out, wav),
            (Some("d".into()), 3, "x.wav".into(), true)
        );
        assert!(Cli::try_parse_from(["ptt-gateway", "recordings", "--since", "soon"]).is_err());
    }

    #[test]
    fn config_flags_do_not_clobber_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gateway.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\ndata_dir = \"/var/ptt\"\norg = \"city.toml\"\n",
        )
        .unwrap();
        let config = serve(&["--config", file.to_str().unwrap(), "--data-dir", "/tmp/x"])
            .config()
            .unwrap();
        assert_eq!(config.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(config.org, Some(PathBuf::from("city.toml")));
    }
}
