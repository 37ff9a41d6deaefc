//! An in-process gateway on a loopback port, with real QUIC and TLS, and
//! terminals connected to it through the reference terminal library.

use std::net::SocketAddr;

use ptt_codec::TerminalId;
use ptt_gateway::alert::Store;
use ptt_gateway::org::{auth::ProvisioningKey, Org};
use ptt_gateway::{tls, Config, Gateway};
use ptt_terminal_sim::terminal::{self, Terminal};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running gateway; stops when dropped (or via [`TestGateway::stop`]).
#[derive(Debug)]
pub struct TestGateway {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state, for counters and floor queries.
    pub gateway: Gateway,
    /// Its QUIC endpoint, for the connections it holds
    /// ([`quinn::Endpoint::open_connections`]: handshakes in progress
    /// count, connections the peer closed stop counting once drained).
    pub endpoint: quinn::Endpoint,
    /// The provisioning key terminals' credentials derive from.
    pub key: ProvisioningKey,
    /// A client endpoint trusting the gateway's certificate.
    pub client: quinn::Endpoint,
    /// The gateway's certificate, for client configurations of one's own.
    pub roots: rustls::RootCertStore,
    /// The org it serves.
    pub org: Org,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl TestGateway {
    /// Starts a gateway serving `org_toml` with the default configuration.
    pub async fn start(org_toml: &str) -> TestGateway {
        Self::start_with(org_toml, |_| {}).await
    }

    /// Starts a gateway, letting `tweak` adjust the configuration first.
    pub async fn start_with(org_toml: &str, tweak: impl FnOnce(&mut Config)) -> TestGateway {
        Self::start_with_store(org_toml, tweak, |_| {}).await
    }

    /// Starts a gateway, letting `tweak` adjust the configuration and
    /// `prepare` fill its store (operators, console sessions) first.
    pub async fn start_with_store(
        org_toml: &str,
        tweak: impl FnOnce(&mut Config),
        prepare: impl FnOnce(&Store),
    ) -> TestGateway {
        crate::init_tracing();
        let dir = tempfile::tempdir().expect("temporary directory");
        let org = Org::from_toml(org_toml, dir.path()).expect("test org parses");
        let key = ProvisioningKey::generate();
        let mut config = Config {
            listen: "127.0.0.1:0".parse().expect("address"),
            data_dir: dir.path().join("data"),
            ..Config::default()
        };
        tweak(&mut config);
        config
            .validate()
            .unwrap_or_else(|e| panic!("the test's configuration: {e}"));
        let id = tls::identity(&config).expect("certificate");
        let net = ptt_gateway::net::Thread::start("ptt-net").expect("network thread");
        let store = Store::open(&dir.path().join("gateway.db")).expect("store");
        prepare(&store);
        let listen = config.listen;
        let gateway = Gateway::new(config, org.clone(), key.clone(), store, net);
        let endpoint = gateway.bind(listen, &id).expect("bind");
        let addr = endpoint.local_addr().expect("local address");
        let roots = terminal::load_ca(&id.cert_path).expect("CA");
        let client = terminal::endpoint("127.0.0.1:0".parse().expect("address"), &roots)
            .expect("client endpoint");
        let (stop, stopped) = oneshot::channel();
        let server = endpoint.clone();
        let task = tokio::spawn(gateway.clone().run(endpoint, async {
            let _ = stopped.await;
        }));
        TestGateway {
            addr,
            gateway,
            endpoint: server,
            key,
            client,
            roots,
            org,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }

    /// Connects terminal `id` with its correct credential.
    pub async fn terminal(&self, id: u32) -> Terminal {
        self.try_terminal(id)
            .await
            .unwrap_or_else(|e| panic!("terminal {id}: {e}"))
    }

    /// Connects terminal `id`, returning the error if refused.
    pub async fn try_terminal(&self, id: u32) -> Result<Terminal, terminal::Error> {
        let credential = self.key.credential(TerminalId(id));
        Terminal::connect(
            &self.client,
            self.addr,
            "localhost",
            TerminalId(id),
            &credential,
        )
        .await
    }

    /// Connects terminal `id` from a new client endpoint (a new UDP port), as
    /// a terminal does after losing its connection.
    pub async fn terminal_from_new_port(&self, id: u32) -> Terminal {
        let endpoint = self.new_client_endpoint();
        let credential = self.key.credential(TerminalId(id));
        Terminal::connect(
            &endpoint,
            self.addr,
            "localhost",
            TerminalId(id),
            &credential,
        )
        .await
        .unwrap_or_else(|e| panic!("terminal {id}: {e}"))
    }

    /// Another client endpoint trusting the gateway.
    pub fn new_client_endpoint(&self) -> quinn::Endpoint {
        let mut e = quinn::Endpoint::client("127.0.0.1:0".parse().expect("address"))
            .expect("client endpoint");
        e.set_default_client_config(self.client_config());
        e
    }

    fn client_config(&self) -> quinn::ClientConfig {
        let cert = self._dir.path().join("data").join("cert.pem");
        let roots = terminal::load_ca(&cert).expect("CA");
        terminal::client_config(&roots).expect("client config")
    }

    /// Stops the gateway gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}
