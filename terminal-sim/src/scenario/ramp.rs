//! The ramp: the client side of a run (threads, UDP endpoints, each
//! terminal's TLS configuration) and connecting every terminal the plan
//! needs before anything is measured.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ptt_codec::TerminalId;
use tokio::runtime::Handle;
use tokio::task::JoinSet;

use super::{Plan, RunConfig, LOG};
use crate::report::ConnectionReport;
use crate::shards::Shards;
use crate::terminal::{self, Terminal};

/// Terminals connected at once during the ramp.
const CONNECT_CONCURRENCY: usize = 64;

/// Terminals per client endpoint (UDP socket).
const TERMINALS_PER_ENDPOINT: usize = 256;

/// A connection attempt in flight: the terminal connected with its groups
/// joined, or why not.
type Attempts = JoinSet<Result<Terminal, terminal::Error>>;

/// The client side of a run: where each terminal connects from and runs.
/// Lives until the run's report is built; dropping it stops the shards'
/// threads and whatever still runs on them.
#[derive(Debug)]
pub(super) struct Fleet {
    /// Every terminal the plan needs, in connection order.
    ids: Vec<TerminalId>,
    /// Index into `endpoints` (and the shard) of each terminal.
    endpoint_of: HashMap<TerminalId, usize>,
    /// Each terminal its own TLS client configuration, as each device has:
    /// its session tickets let it resume instead of a full handshake.
    clients: HashMap<TerminalId, quinn::ClientConfig>,
    /// Client endpoints; endpoint i runs on shard i.
    endpoints: Vec<quinn::Endpoint>,
    /// Declared last: dropped after the endpoints, as the threads they run
    /// on.
    shards: Shards,
}

impl Fleet {
    /// Starts the shards and opens the endpoints for every terminal of the
    /// plan. Call once per run, before [`Fleet::connect`]. `senders` (alert
    /// consoles) are put last in the connection order, so a long ramp
    /// cannot age their sessions.
    pub(super) fn open(
        config: &RunConfig,
        plan: &Plan,
        senders: &[(TerminalId, u32)],
        roots: &rustls::RootCertStore,
    ) -> anyhow::Result<Fleet> {
        let mut ids: Vec<TerminalId> = plan.terminals.keys().copied().collect();
        ids.sort_by_key(|t| senders.iter().any(|(s, _)| s == t));
        // Endpoint i, and every task of the terminals on it, runs on shard i.
        let shards = Shards::start(config.threads)?;
        let endpoints = (0..ids.len().div_ceil(TERMINALS_PER_ENDPOINT).max(shards.len()))
            .map(|i| {
                let _on = shards.of(i).enter();
                let endpoint =
                    crate::wan::endpoint(SocketAddr::from(([0, 0, 0, 0], 0)), roots, config.delay)?;
                terminal::set_media_offer(&endpoint, config.media == super::MediaChoice::Srtp);
                Ok::<_, terminal::Error>(endpoint)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let clients = ids
            .iter()
            .map(|t| {
                let mut client = terminal::client_config(roots)?;
                // Terminals that know several nodes notice a dead one as
                // the library's failover terminals do.
                let several = config.gateways.len() > 1;
                let idle = config
                    .idle_timeout
                    .or(several.then_some(terminal::FAILOVER_IDLE_TIMEOUT));
                if let Some(idle) = idle {
                    terminal::set_idle_timeout(&mut client, idle);
                }
                Ok((*t, client))
            })
            .collect::<Result<_, terminal::Error>>()?;
        let endpoint_of = ids
            .iter()
            .enumerate()
            .map(|(i, t)| (*t, i % endpoints.len()))
            .collect();
        Ok(Fleet {
            ids,
            endpoint_of,
            clients,
            endpoints,
            shards,
        })
    }

    /// The runtime `id`'s tasks run on: the one that drives its endpoint.
    /// `id` must be one of the plan's terminals.
    pub(super) fn shard(&self, id: TerminalId) -> &Handle {
        self.shards.of(self.endpoint_of[&id])
    }

    /// Every endpoint's media-plane figures so far, summed: datagrams sent
    /// (QUIC and media), media received, media of an unknown SSRC.
    pub(super) fn endpoint_stats(&self) -> terminal::EndpointStats {
        let mut sum = terminal::EndpointStats::default();
        for s in self.endpoints.iter().filter_map(terminal::endpoint_stats) {
            sum.sent_packets += s.sent_packets;
            sum.media_received += s.media_received;
            sum.unknown_ssrc += s.unknown_ssrc;
        }
        sum
    }

    /// The endpoint `id` connects from. `id` must be one of the plan's
    /// terminals.
    pub(super) fn endpoint(&self, id: TerminalId) -> &quinn::Endpoint {
        &self.endpoints[self.endpoint_of[&id]]
    }

    /// `id`'s own TLS client configuration. `id` must be one of the plan's
    /// terminals.
    pub(super) fn client(&self, id: TerminalId) -> &quinn::ClientConfig {
        &self.clients[&id]
    }

    /// Connects every terminal of the plan, [`CONNECT_CONCURRENCY`] at a
    /// time, and joins its groups. Call once, after [`Fleet::open`]; returns
    /// the terminals online and the ramp's figures (the reconnect counters
    /// are left for the actors to fill in).
    pub(super) async fn connect(
        &self,
        config: &RunConfig,
        plan: &Plan,
    ) -> (HashMap<TerminalId, Terminal>, ConnectionReport) {
        let ramp = Instant::now();
        let mut attempts = Attempts::new();
        let mut connected: HashMap<TerminalId, Terminal> = HashMap::new();
        let mut failed = 0u64;
        let mut next = 0;
        let progress = progress_bar(self.ids.len());
        while next < self.ids.len() || !attempts.is_empty() {
            while next < self.ids.len() && attempts.len() < CONNECT_CONCURRENCY {
                self.spawn_attempt(&mut attempts, config, plan, self.ids[next]);
                next += 1;
            }
            let joined = attempts.join_next().await;
            progress.inc(u64::from(joined.is_some()));
            match joined {
                Some(Ok(Ok(t))) => {
                    connected.insert(t.id(), t);
                }
                Some(Ok(Err(e))) => {
                    failed += 1;
                    tracing::warn!(target: LOG, "terminal failed to connect: {e}");
                }
                Some(Err(e)) => {
                    failed += 1;
                    tracing::warn!(target: LOG, "connect task failed: {e}");
                }
                None => {}
            }
            progress.set_message(failed.to_string());
        }
        progress.finish_and_clear();
        let ramp_s = ramp.elapsed().as_secs_f64();
        let connections = ConnectionReport {
            target: self.ids.len() as u64,
            established: connected.len() as u64,
            failed,
            handshakes_per_s: connected.len() as f64 / ramp_s.max(1e-9),
            ..ConnectionReport::default()
        };
        tracing::info!(
            target: LOG,
            online = connected.len(),
            failed,
            "terminals connected in {ramp_s:.1} s"
        );
        (connected, connections)
    }

    /// Starts connecting `id` on its shard: connect, then join its groups.
    /// With several gateway addresses: its home node (the first of its own
    /// order) first, and the next ones in turn if an attempt fails (one
    /// attempt each; an address that does not answer fails at the idle
    /// timeout).
    fn spawn_attempt(
        &self,
        attempts: &mut Attempts,
        config: &RunConfig,
        plan: &Plan,
        id: TerminalId,
    ) {
        let endpoint = self.endpoint(id).clone();
        let credential = plan.credential(id);
        let groups = plan.terminals[&id].clone();
        let order = config.gateways.order_for(id);
        let name = config.server_name.clone();
        let client = self.client(id).clone();
        attempts.spawn_on(
            async move {
                let mut failed = None;
                for addr in order {
                    let attempt = async {
                        let mut t = Terminal::connect_with_config(
                            &endpoint,
                            client.clone(),
                            addr,
                            &name,
                            id,
                            &credential,
                            terminal::SeenAlerts::default(),
                        )
                        .await?;
                        for g in &groups {
                            t.join(*g).await?;
                        }
                        Ok::<_, terminal::Error>(t)
                    };
                    match attempt.await {
                        Ok(t) => return Ok(t),
                        Err(e) if e.is_final() => return Err(e),
                        Err(e) => failed = Some(e),
                    }
                }
                Err(failed.expect("a gateway list has at least one address"))
            },
            self.shard(id),
        );
    }

    /// Closes every endpoint and waits up to 2 s for the close frames to go
    /// out. Call once every actor and listener has ended, before the report's
    /// plotting holds the thread: the gateway then ends these sessions now,
    /// not at its idle timeout, and a following run does not replace them.
    pub(super) async fn close(&self) {
        for e in &self.endpoints {
            e.close(quinn::VarInt::from_u32(0), b"run over");
        }
        let closing = tokio::time::Instant::now() + Duration::from_secs(2);
        for e in &self.endpoints {
            let _ = tokio::time::timeout_at(closing, e.wait_idle()).await;
        }
    }
}

/// The ramp's progress, drawn on a terminal only (hidden when stderr is a
/// file or a pipe).
fn progress_bar(terminals: usize) -> indicatif::ProgressBar {
    let progress = indicatif::ProgressBar::new(terminals as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "connecting {bar:40} {pos}/{len} {per_sec} ({msg} failed) eta {eta}",
        )
        .expect("valid template"),
    );
    progress.set_message("0");
    progress
}
