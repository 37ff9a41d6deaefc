//! The gateway's rules, without I/O.
//!
//! Like `quinn-proto`, nothing in this crate opens a socket, spawns a task,
//! reads the clock or touches the database: callers pass the time in as
//! `now`, hand in what arrived, and drain what should be sent or done. The
//! crate's `Cargo.toml` has no tokio, quinn or rusqlite, so the build keeps it
//! that way. The `ptt-gateway` crate is the driver that does the I/O.
//!
//! - [`floor`]: floor control per talk group (3GPP TS 24.380).
//! - [`group`]: a talk group's membership and floor, emitting addressed
//!   control messages, snapshot republishes and ended bursts.
//! - [`admission`]: which waiting connection attempt gets the next
//!   handshake slot.
//! - [`fanout`]: whether a voice frame is relayed, and the per-connection
//!   rate limit.
//! - [`alert`]: the receipt lifecycle and alert limits; [`recipients`]: who
//!   an alert reaches and whether its sender may send it.
//! - [`limits`]: per-terminal rates of control frames by kind, and when
//!   a terminal over them is closed.
//! - [`location`]: last known positions and the nearest-member index.
//! - [`audit`]: the floor audit log's rows.
//! - [`drill`]: drill report arithmetic and its CSV/JSON output.
//! - [`session`]: the first frame, authentication, join rights and the
//!   group limit.
//! - [`sos`]: who an SOS reaches and what its alert says.
//! - [`recording`]: a relayed burst as Ogg Opus packets (granules, gaps).
//! - [`reload`]: what an org reload adds, removes and takes away.

pub mod admission;
pub mod alert;
pub mod audit;
pub mod cluster;
pub mod drill;
pub mod fanout;
pub mod floor;
pub mod group;
pub mod limits;
pub mod location;
pub mod recipients;
pub mod recording;
pub mod reload;
pub mod session;
pub mod sos;
