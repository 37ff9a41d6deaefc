//! What QUIC itself costs the gateway per relayed voice frame, with no
//! socket, task or timer in the way: a `quinn-proto` server and client
//! connection, made with the gateway's and the terminal library's own TLS and
//! transport settings, exchanging packets in memory.
//!
//! `cargo bench -p ptt-bench --bench quic`
//!
//! Only the server's side is timed, which is what a gateway pays per
//! delivery whatever drives its connections: queue the datagram, build and
//! seal the packet (`poll_transmit`), ask for the next timer, and, for every
//! second frame, take the listener's ACK (`Endpoint::handle`, decrypt,
//! loss detection and congestion control). The client's work (decrypting,
//! sending that ACK) happens between the timed parts. The difference between
//! this figure and `ptt-bench`'s gateway CPU per delivered frame is quinn's
//! async layer plus the kernel; this figure plus the kernel's send cost is
//! the floor for any driver built on `quinn-proto`, the custom one included.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use quinn_proto::{
    ClientConfig, Connection, ConnectionHandle, DatagramEvent, Endpoint, EndpointConfig,
    ServerConfig,
};

const SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 4433);
const CLIENT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 50_000);

/// One side of the pair.
struct Side {
    endpoint: Endpoint,
    conn: Option<(ConnectionHandle, Connection)>,
}

impl Side {
    fn conn(&mut self) -> &mut Connection {
        &mut self.conn.as_mut().expect("connection established").1
    }

    /// Hands one received UDP payload to the endpoint and its connection.
    /// Returns a packet the endpoint answers by itself, if any.
    fn receive(&mut self, now: Instant, from: SocketAddr, data: &[u8]) -> Option<Vec<u8>> {
        let mut buf = Vec::new();
        match self
            .endpoint
            .handle(now, from, None, None, BytesMut::from(data), &mut buf)
        {
            Some(DatagramEvent::NewConnection(incoming)) => {
                let conn = self
                    .endpoint
                    .accept(incoming, now, &mut buf, None)
                    .expect("the server accepts");
                self.conn = Some(conn);
                None
            }
            Some(DatagramEvent::ConnectionEvent(_, event)) => {
                self.conn().handle_event(event);
                None
            }
            Some(DatagramEvent::Response(t)) => Some(buf[..t.size].to_vec()),
            None => None,
        }
    }

    /// Routes the connection's events to its endpoint and back.
    fn settle(&mut self) {
        let Some((ch, conn)) = self.conn.as_mut() else {
            return;
        };
        while let Some(event) = conn.poll_endpoint_events() {
            if let Some(back) = self.endpoint.handle_event(*ch, event) {
                conn.handle_event(back);
            }
        }
        while conn.poll().is_some() {}
    }

    /// Packets the connection wants to send now.
    fn transmits(&mut self, now: Instant) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let Some((_, conn)) = self.conn.as_mut() else {
            return out;
        };
        let mut buf = Vec::new();
        while let Some(t) = conn.poll_transmit(now, 1, &mut buf) {
            out.push(buf[..t.size].to_vec());
            buf.clear();
        }
        out
    }
}

/// A gateway connection and a terminal connection, handshake done.
struct Pair {
    server: Side,
    client: Side,
}

impl Pair {
    fn new(server: ServerConfig, client: ClientConfig) -> Self {
        let mut pair = Self {
            server: Side {
                endpoint: Endpoint::new(
                    Arc::new(EndpointConfig::default()),
                    Some(Arc::new(server)),
                    false,
                    Some([7; 32]),
                ),
                conn: None,
            },
            client: Side {
                endpoint: Endpoint::new(
                    Arc::new(EndpointConfig::default()),
                    None,
                    false,
                    Some([9; 32]),
                ),
                conn: None,
            },
        };
        let conn = pair
            .client
            .endpoint
            .connect(Instant::now(), client, SERVER, "localhost")
            .expect("client connects");
        pair.client.conn = Some(conn);
        for _ in 0..50 {
            pair.exchange(Instant::now());
        }
        assert!(
            !pair.client.conn().is_handshaking() && !pair.server.conn().is_handshaking(),
            "the handshake completes in memory"
        );
        pair
    }

    /// Moves every pending packet both ways once.
    fn exchange(&mut self, now: Instant) {
        for p in self.client.transmits(now) {
            if let Some(r) = self.server.receive(now, CLIENT, &p) {
                self.client.receive(now, SERVER, &r);
            }
        }
        self.server.settle();
        for p in self.server.transmits(now) {
            if let Some(r) = self.client.receive(now, SERVER, &p) {
                self.server.receive(now, CLIENT, &r);
            }
        }
        self.client.settle();
    }
}

fn configs() -> (ServerConfig, ClientConfig) {
    let dir = std::env::temp_dir().join(format!("ptt-bench-quic-{}", std::process::id()));
    let config = ptt_gateway::Config {
        data_dir: dir.clone(),
        ..Default::default()
    };
    let id = ptt_gateway::tls::identity(&config).expect("self-signed certificate");
    let metrics = Arc::new(ptt_gateway::metrics::Metrics::default());
    let server =
        ptt_gateway::tls::server_config(&id, &config.transport, &metrics).expect("server config");
    let roots = ptt_terminal_sim::terminal::load_ca(&id.cert_path).expect("CA");
    let client = ptt_terminal_sim::terminal::client_config(&roots).expect("client config");
    let _ = std::fs::remove_dir_all(dir);
    (server, client)
}

fn datagram_send(c: &mut Criterion) {
    let (server, client) = configs();
    let mut pair = Pair::new(server, client);
    // A 20 ms Opus frame at 16 kbit/s behind the 13-byte voice header.
    let frame = Bytes::from(vec![0x5a; 53]);
    let mut buf = Vec::with_capacity(1500);
    let mut g = c.benchmark_group("quic");
    g.throughput(Throughput::Elements(1));
    g.bench_function("server_cost_per_delivered_frame", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                // The gateway hands the frame to the connection and builds
                // the packet, as its connection driver does.
                let start = Instant::now();
                let conn = pair.server.conn();
                conn.datagrams()
                    .send(frame.clone(), true)
                    .expect("datagrams enabled");
                buf.clear();
                let t = conn
                    .poll_transmit(start, 1, &mut buf)
                    .expect("a packet to send");
                black_box(conn.poll_timeout());
                timed += start.elapsed();
                let packet = buf[..t.size].to_vec();
                // The listener reads it and, every second packet, ACKs.
                let now = Instant::now();
                pair.client.receive(now, SERVER, &packet);
                pair.client.settle();
                let acks = pair.client.transmits(now);
                let start = Instant::now();
                for ack in acks {
                    pair.server.receive(start, CLIENT, &ack);
                }
                pair.server.settle();
                let conn = pair.server.conn();
                buf.clear();
                black_box(conn.poll_transmit(start, 1, &mut buf));
                black_box(conn.poll_timeout());
                timed += start.elapsed();
            }
            timed
        });
    });
    g.finish();
    // The figure must include the ACK work it claims to: one ACK frame per
    // two datagrams, as listeners send at voice rates.
    let stats = pair.server.conn().stats();
    assert!(
        stats.frame_rx.acks * 3 >= stats.frame_tx.datagram,
        "ACKs {} for {} datagrams",
        stats.frame_rx.acks,
        stats.frame_tx.datagram
    );
    println!(
        "quic: {} datagrams sent, {} ACK frames received",
        stats.frame_tx.datagram, stats.frame_rx.acks
    );
}

criterion_group!(benches, datagram_send);
criterion_main!(benches);
