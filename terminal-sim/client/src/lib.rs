//! The reference PTT terminal: the library a handheld, phone app or
//! dispatch console embeds to talk to the gateway, over QUIC with TLS 1.3.
//!
//! It speaks the protocol of `docs/PROTOCOL.md` and nothing more: it
//! frames control messages, sends and receives voice datagrams, receives
//! alerts and answers them. Audio is the vendor's: voice goes in and comes
//! out as Opus packets (`ptt_codec::audio` has an encoder and decoder if
//! you need one), and playing it out smoothly wants a jitter buffer.
//! Everything runs on the caller's tokio runtime; the library installs no
//! logger but emits `tracing` events in a `terminal` span.
//!
//! # Connection lifecycle
//!
//! 1. **Once per device:** [`load_ca`] reads the certificate the gateway
//!    presents (its self-signed `cert.pem`, or a CA), and [`endpoint`] binds
//!    the UDP socket the connections run on. One endpoint can carry many
//!    terminals (a load harness, a console with several seats). To put
//!    something between QUIC and the network, such as an emulated cellular
//!    delay in a test harness, wrap the [`socket`] and pass it to
//!    [`endpoint_with_socket`].
//! 2. **Connect:** [`Terminal::connect`] opens the connection, sends
//!    `Hello` with the terminal's id and its 32-byte provisioned credential
//!    and waits for `Welcome` ([`Terminal::welcome`]). A wrong credential
//!    ends in [`Error::Closed`] with `CloseCode::AuthFailed`. A device
//!    that reconnects should use [`Terminal::connect_with_config`] with a
//!    [`client_config`] it keeps for its lifetime: its TLS session tickets
//!    live there, and resuming saves a full handshake.
//!    A browser-style console connects over WebTransport instead, with a
//!    console session token ([`Terminal::connect_web`], module [`web`]);
//!    everything after the handshake is the same.
//! 3. **Join groups** ([`Terminal::join`]). After a reconnect without
//!    logout the gateway restores the groups itself: `Welcome` says
//!    `resumed` and lists them.
//! 4. **Talk and listen** (below).
//! 5. **End:** [`Terminal::close`] keeps the groups for a reconnect;
//!    [`Terminal::logout`] makes the gateway forget them. The connection
//!    sends keep-alives every 15 s (the gateway closes connections idle for
//!    30 s).
//!
//! # Events
//!
//! Control messages from the gateway arrive in order through
//! [`Terminal::next_event`]: presence, `FloorTaken`/`FloorIdle` of other
//! talkers, receipt updates for a console's alerts, positions. The helpers
//! that send a request and wait for its answer ([`Terminal::join`],
//! [`Terminal::talk`], [`Terminal::send_alert`], [`Terminal::receipt`], ...)
//! keep every other message for `next_event`, so nothing is lost while
//! waiting; each gives up after [`ANSWER_TIMEOUT`]. [`Terminal::wait_for`]
//! waits for any message of one's own choosing the same way.
//!
//! # Voice
//!
//! Talking is a burst: [`Terminal::talk`] presses the talk key and waits
//! for the floor (through the queue if the group is busy), returning the
//! burst id; [`Terminal::request_floor`] returns the first answer instead.
//! Then [`Terminal::send_voice`] sends one Opus frame per datagram, numbered
//! from 0, the last one marked `end`; [`Terminal::release`] lets the floor
//! go, ideally one frame time after the last frame (datagrams and the
//! control stream are separate paths). Frames of other talkers arrive
//! through [`Terminal::recv_voice`] as [`Voice`], stamped by the gateway
//! with the speaker. Every frame `recv_voice` returns is counted
//! ([`link`]: received, lost, late, jitter) and reported to the gateway
//! every 5 s while voice is heard, for the command room's view of who
//! hears badly ([`Terminal::link`] changes the interval or stops it).
//!
//! **The media plane.** On an endpoint made by [`endpoint`] or
//! [`endpoint_with_socket`], a terminal offers SRTP in `Hello` (turn it off
//! per endpoint with [`set_media_offer`], per connection with
//! [`ConnectOptions::srtp`]; a WebTransport console never offers it). When
//! the gateway answers, the terminal keys SRTP from the QUIC connection's
//! TLS exporter, checks the path with SRTCP receiver reports (every 250 ms,
//! up to 3 s; then every 5 s as keep-alive, [`media`]) and, once verified,
//! sends its voice as SRTP on the same UDP port as QUIC; without an answer
//! in 3 s it tells the gateway and stays on QUIC DATAGRAMs. Received SRTP
//! voice comes out of [`Terminal::recv_voice`] (and
//! [`Terminal::voice_receiver`]) exactly as a DATAGRAM frame would.
//! [`Terminal::media`] says which form is in use, [`Terminal::media_stats`]
//! and [`endpoint_stats`] count what went where.
//!
//! # Alerts and receipts
//!
//! Consoles send alerts ([`Terminal::send_alert`]); every recipient gets
//! each alert on a stream of its own. The library answers every alert with
//! a `Delivered` receipt at once, and shows each alert id once, however
//! often the gateway delivers it ([`SeenAlerts`]; keep it across reconnects
//! with [`Terminal::connect_with_seen`]). [`Terminal::next_alert`] returns
//! the next one. The user's progress goes back with [`Terminal::receipt`]:
//! read, accepted, arrived, resolved, or rejected before accepting. Receipts
//! only move forward (the rule is `ptt_codec::receipt::advance`), so a late
//! or repeated receipt is harmless: the gateway answers with the status it
//! stored, which `receipt` returns. Resend a receipt that got no answer.
//! Attachments (photos) of an alert come with [`Terminal::next_attachment`]
//! on screens and consoles, or on request with
//! [`Terminal::fetch_attachment`].
//!
//! # Errors
//!
//! Every call returns the one [`Error`] type. [`Error::Closed`] carries
//! the gateway's close code when it ended the connection (another session
//! of the same terminal replaced it, the gateway shut down);
//! [`Error::Refused`] an `Error` frame's stable code answering a request;
//! [`Error::Denied`] a floor denial; [`Error::Timeout`] a missing answer.
//! Once the connection is gone every call fails: connect again, unless
//! [`Error::is_final`] says it cannot help: [`Error::CredentialRevoked`]
//! (an operator revoked this terminal's credential, e.g. the handset was
//! reported stolen: stop reconnecting and tell the user), a refused
//! credential or an unsupported version.
//!
//! # Example
//!
//! A guard and a colleague join their unit's group; the guard talks, the
//! colleague hears it; the station's console sends a dispatch to the unit,
//! the guard accepts it and the console sees the receipt.
//!
//! ```
//! # // A real gateway on a loopback port, serving a small org: a police
//! # // station with a console (300) and a unit (group 5) of two guards.
//! # use ptt_gateway::alert::Store;
//! # use ptt_gateway::org::{auth::ProvisioningKey, Org};
//! # use ptt_gateway::{tls, Config, Gateway};
//! # const ORG: &str = r#"
//! # [[node]]
//! # id = 1
//! # kind = "city"
//! # name = "City"
//! # [[node]]
//! # id = 2
//! # parent = 1
//! # kind = "district"
//! # name = "District"
//! # [[node]]
//! # id = 3
//! # parent = 2
//! # kind = "police_station"
//! # name = "East station"
//! # [[node]]
//! # id = 4
//! # parent = 3
//! # kind = "station"
//! # name = "Plaza"
//! # [[node]]
//! # id = 5
//! # parent = 4
//! # kind = "unit"
//! # name = "Plaza unit 1"
//! # [[terminal]]
//! # id = 300
//! # name = "East command room"
//! # role = "dispatcher"
//! # kind = "console"
//! # node = 3
//! # [[terminal]]
//! # id = 501
//! # name = "Guard 1"
//! # role = "security_guard"
//! # kind = "handheld"
//! # node = 5
//! # [[terminal]]
//! # id = 502
//! # name = "Guard 2"
//! # role = "security_guard"
//! # kind = "phone_app"
//! # node = 5
//! # "#;
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let org = Org::from_toml(ORG, dir.path())?;
//! # let key = ProvisioningKey::generate();
//! # let config = Config {
//! #     listen: "127.0.0.1:0".parse()?,
//! #     data_dir: dir.path().join("data"),
//! #     ..Config::default()
//! # };
//! # let identity = tls::identity(&config)?;
//! # let net = ptt_gateway::net::Thread::start("ptt-net")?;
//! # let store = Store::open(&dir.path().join("gateway.db"))?;
//! # let listen = config.listen;
//! # let gateway = Gateway::new(config, org, key.clone(), store, net);
//! # let server = gateway.bind(listen, &identity)?;
//! # let gateway_addr = server.local_addr()?;
//! # let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! # let running = tokio::spawn(gateway.run(server, async { let _ = stopped.await; }));
//! # let ca_path = identity.cert_path.clone();
//! # let credential_of = |t: u32| key.credential(ptt_codec::TerminalId(t));
//! # tokio::time::timeout(std::time::Duration::from_secs(20), async {
//! use std::time::Duration;
//!
//! use ptt_codec::{AlertBody, AlertKind, Class, GroupId, ReceiptStatus, Target, TerminalId};
//! use ptt_terminal::{Terminal, ANSWER_TIMEOUT};
//!
//! // Once per device: trust the gateway's certificate, bind an endpoint.
//! let roots = ptt_terminal::load_ca(&ca_path)?;
//! let endpoint = ptt_terminal::endpoint("127.0.0.1:0".parse()?, &roots)?;
//!
//! // Connect and authenticate with the provisioned credential.
//! let connect = |id: u32| {
//!     let credential = credential_of(id);
//!     let endpoint = endpoint.clone();
//!     async move {
//!         Terminal::connect(&endpoint, gateway_addr, "localhost", TerminalId(id), &credential)
//!             .await
//!     }
//! };
//! let mut guard = connect(501).await?;
//! let mut colleague = connect(502).await?;
//! let mut console = connect(300).await?;
//! assert_eq!(guard.welcome().name, "Guard 1");
//!
//! let unit = GroupId(5);
//! assert!(guard.join(unit).await?.talk);
//! colleague.join(unit).await?;
//!
//! // Talk: take the floor, send the encoder's 20 ms Opus frames, release.
//! let burst = guard.talk(unit, Class::Normal).await?;
//! let frames: [&[u8]; 3] = [&[0xf8, 0xff, 0xfe]; 3]; // from the vendor's encoder
//! for (seq, opus) in frames.iter().enumerate() {
//!     let last = seq + 1 == frames.len();
//!     guard.send_voice(unit, burst, seq as u16, opus, last)?;
//!     tokio::time::sleep(Duration::from_millis(20)).await;
//! }
//! guard.release(unit)?;
//!
//! // The colleague hears it, with the speaker stamped by the gateway.
//! let voice = tokio::time::timeout(ANSWER_TIMEOUT, colleague.recv_voice()).await??;
//! assert_eq!((voice.header.speaker, voice.header.burst), (501, burst));
//! assert_eq!(voice.opus(), [0xf8, 0xff, 0xfe]);
//!
//! // The console dispatches the unit; the gateway has stored the alert.
//! let body = AlertBody {
//!     kind: AlertKind::Dispatch,
//!     priority: 3,
//!     ttl_s: 600,
//!     title: "Car break-in".into(),
//!     text: "Two men trying car doors at the north entrance".into(),
//!     location: None,
//!     attachments: Vec::new(),
//! };
//! let (alert, recipients) = console.send_alert(Target::Group(unit), body).await?;
//! assert_eq!(recipients, 2);
//!
//! // The guard receives it (the library already sent "delivered") and
//! // accepts the task; the gateway answers with the status it stored.
//! let received = guard.next_alert().await?;
//! assert_eq!((received.alert, received.body.title.as_str()), (alert, "Car break-in"));
//! let stored = guard.receipt(alert, ReceiptStatus::Accepted, "").await?;
//! assert_eq!(stored, ReceiptStatus::Accepted);
//!
//! // The console follows the receipts as events.
//! console
//!     .wait_for(|m| match m {
//!         ptt_codec::ServerMsg::ReceiptUpdate { alert: a, terminal, status, .. }
//!             if *a == alert && *status == ReceiptStatus::Accepted =>
//!         {
//!             Some(Ok(*terminal))
//!         }
//!         _ => None,
//!     })
//!     .await?;
//!
//! guard.close();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).await??;
//! # let _ = stop.send(());
//! # running.await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Failover between gateway nodes
//!
//! A cluster's nodes all serve every terminal and present the same
//! certificate. Give a terminal every node's address ([`Gateways`], parsed
//! from `"A,B,C"`) and connect it with a [`Failover`], one per terminal for
//! its lifetime:
//!
//! - **Spreading:** each terminal tries the addresses in an order of its
//!   own, by rendezvous hashing of its id ([`Gateways::order_for`]): a
//!   fleet's first connections spread evenly over the nodes, and the
//!   terminals of a lost node spread evenly over the others.
//! - **Backoff:** after a failed attempt, the next address, after a delay
//!   drawn uniformly up to a ceiling that starts at 100 ms and doubles to
//!   5 s (full jitter, at least 10 ms: [`Backoff`]); each attempt is given
//!   10 s ([`ATTEMPT_TIMEOUT`]). The ceiling starts over once a connection
//!   has held 10 s ([`STABLE_AFTER`]).
//! - **Loss:** a node that shuts down closes its connections with a code; a
//!   node that dies is noticed by the idle timeout, 6 s for a failover
//!   terminal ([`FAILOVER_IDLE_TIMEOUT`];
//!   [`Failover::with_idle_timeout`] changes it). On either,
//!   [`Failover::reconnect`] goes to the next address.
//! - **Resumption:** every connection of a `Failover` shares one TLS
//!   client configuration, hence one session-ticket store, under one server
//!   name: a ticket from the lost node resumes the TLS session on the next
//!   one when the nodes share their ticket key (the gateway's
//!   `transport.ticket_key_file`), saving a certificate signature and
//!   verification per terminal in a failover.
//! - **After reconnecting:** `Hello` is sent by the library; join the groups
//!   again ([`Terminal::rejoin`] joins those the node did not restore). The
//!   new node delivers every alert not yet receipted; the `Failover`'s
//!   [`SeenAlerts`] keep an alert already shown from being shown twice.
//!
//! ```
//! # // Two gateway nodes on loopback ports, with the same certificate,
//! # // provisioning key and ticket key file, serving the same org.
//! # use ptt_gateway::alert::Store;
//! # use ptt_gateway::org::{auth::ProvisioningKey, Org};
//! # use ptt_gateway::{tls, Config, Gateway};
//! # const ORG: &str = r#"
//! # [[node]]
//! # id = 1
//! # kind = "city"
//! # name = "City"
//! # [[node]]
//! # id = 2
//! # parent = 1
//! # kind = "district"
//! # name = "District"
//! # [[node]]
//! # id = 3
//! # parent = 2
//! # kind = "police_station"
//! # name = "East station"
//! # [[node]]
//! # id = 4
//! # parent = 3
//! # kind = "station"
//! # name = "Plaza"
//! # [[node]]
//! # id = 5
//! # parent = 4
//! # kind = "unit"
//! # name = "Plaza unit 1"
//! # [[terminal]]
//! # id = 501
//! # name = "Guard 1"
//! # role = "security_guard"
//! # kind = "handheld"
//! # node = 5
//! # "#;
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let key = ProvisioningKey::generate();
//! # let tickets = dir.path().join("ticket.keys");
//! # tls::tickets::write_file(&tickets, &tls::tickets::new_secret_line()?)?;
//! # let mut identity = None;
//! # let mut nodes = Vec::new();
//! # for name in ["a", "b"] {
//! #     let mut config = Config {
//! #         listen: "127.0.0.1:0".parse()?,
//! #         data_dir: dir.path().join(name),
//! #         ..Config::default()
//! #     };
//! #     config.transport.ticket_key_file = Some(tickets.clone());
//! #     std::fs::create_dir_all(&config.data_dir)?;
//! #     let identity = match &identity {
//! #         Some(id) => id,
//! #         None => identity.insert(tls::identity(&config)?),
//! #     };
//! #     let org = Org::from_toml(ORG, dir.path())?;
//! #     let net = ptt_gateway::net::Thread::start("ptt-net")?;
//! #     let store = Store::open(&config.data_dir.join("gateway.db"))?;
//! #     let gateway = Gateway::new(config, org, key.clone(), store, net);
//! #     let server = gateway.bind("127.0.0.1:0".parse()?, identity)?;
//! #     let addr = server.local_addr()?;
//! #     let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! #     let running = tokio::spawn(gateway.clone().run(server, async { let _ = stopped.await; }));
//! #     nodes.push((addr, gateway, Some(stop), running));
//! # }
//! # let (node_a, node_b) = (nodes[0].0, nodes[1].0);
//! # let ca_path = identity.expect("made above").cert_path.clone();
//! # let credential = key.credential(ptt_codec::TerminalId(501));
//! # tokio::time::timeout(std::time::Duration::from_secs(30), async {
//! use ptt_codec::{GroupId, TerminalId};
//! use ptt_terminal::{Failover, Gateways};
//!
//! let roots = ptt_terminal::load_ca(&ca_path)?;
//! let endpoint = ptt_terminal::endpoint("127.0.0.1:0".parse()?, &roots)?;
//! let cluster: Gateways = format!("{node_a},{node_b}").parse()?;
//! let mut failover =
//!     Failover::new(endpoint, &roots, &cluster, "localhost", TerminalId(501), &credential)?;
//!
//! let mut guard = failover.connect().await?;
//! let unit = GroupId(5);
//! guard.join(unit).await?;
//! let home = failover.current().expect("connected");
//! # // The guard's node shuts down (a dead one would be noticed by the
//! # // idle timeout instead).
//! # let lost = nodes.iter_mut().find(|n| n.0 == home).expect("one of them");
//! # let _ = lost.2.take().expect("running").send(());
//!
//! // The node goes away: the connection ends with an error worth a retry.
//! let lost = loop {
//!     if let Err(e) = guard.next_event().await {
//!         break e;
//!     }
//! };
//! assert!(!lost.is_final());
//!
//! // The next node: Hello again (the library), then the groups.
//! let mut guard = failover.reconnect().await?;
//! guard.rejoin(&[unit]).await?;
//! assert_ne!(failover.current(), Some(home));
//! # let other = nodes.iter().find(|n| n.0 != home).expect("the other");
//! # assert_eq!(other.1.metrics().tls_tickets_accepted, 1, "resumed with the first node's ticket");
//! guard.close();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).await??;
//! # for (_, _, stop, running) in nodes {
//! #     if let Some(stop) = stop {
//! #         let _ = stop.send(());
//! #     }
//! #     running.await?;
//! # }
//! # Ok(())
//! # }
//! ```

mod error;
mod event;
mod failover;
pub mod link;
pub mod media;
mod plane;
mod socket;
mod srtp_voice;
mod streams;
mod terminal;
mod tls;
pub mod web;

pub use error::Error;
pub use event::{Download, FloorAnswer, Joined, ReceivedAlert, SeenAlerts, Voice, Welcome};
pub use failover::{
    Backoff, Failover, Gateways, ATTEMPT_TIMEOUT, BACKOFF_CAP, BACKOFF_FIRST, BACKOFF_FLOOR,
    FAILOVER_IDLE_TIMEOUT, STABLE_AFTER,
};
pub use media::MediaForm;
pub use plane::{EndpointStats, MediaStats};
pub use terminal::VoiceReceiver;
pub use terminal::{ConnectOptions, Terminal, ANSWER_TIMEOUT};
pub use tls::{client_config, endpoint, endpoint_with_socket, load_ca, set_idle_timeout, socket};
pub use tls::{endpoint_stats, set_media_offer};
