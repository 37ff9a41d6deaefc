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
    /// Make the running gateway reload its org file (SIGHUP to the pid in
    /// <data_dir>/gateway.pid) and print the result; exits non-zero when
    /// the new org is refused (the old one keeps serving).
    Reload(ReloadArgs),
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

/// Reloads the org file on every SIGHUP, for the gateway's life, and
/// writes each result to `<data_dir>/reload.status` for `ptt-gateway
/// reload`. Install `hup` before the pid file is written, so a SIGHUP never
/// finds the default action (which ends the process).
async fn reload_org_on_sighup(
    gateway: Gateway,
    mut hup: tokio::signal::unix::Signal,
    data_dir: PathBuf,
) {
    let mut attempt = 0;
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP received: reloading the org file");
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
        Command::Reload(args) => reload(args),
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
                let gateway = Gateway::new(config, org, key, store, net);
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
                let org_hup =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                        .context("installing a SIGHUP handler")?;
                let org_reload = tokio::spawn(reload_org_on_sighup(
                    gateway.clone(),
                    org_hup,
                    data_dir.clone(),
                ));
                ptt_gateway::reload::write_pid(&data_dir).context("writing the pid file")?;
                gateway.run(endpoint, shutdown_signal()).await;
                org_reload.abort();
                ptt_gateway::reload::remove_pid(&data_dir);
                if let Some(http) = http {
                    http.abort();
                }
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
