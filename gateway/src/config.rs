//! Gateway configuration: a TOML file, overridden by command-line flags.
//!
//! Every default says where it comes from. Units are in the field names.

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
    /// Directory for the generated certificate and, later, the database.
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
}

impl Default for Sos {
    fn default() -> Self {
        Self {
            ttl_s: ptt_gateway_core::sos::DEFAULT_TTL_S,
            priority: ptt_gateway_core::sos::DEFAULT_PRIORITY,
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
        }
    }
}

/// Floor control settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Floor {
    /// Talk-time limit in seconds. Default 30 s: TS 24.380 timer T2
    /// ("stop talking").
    pub talk_limit_s: u32,
    /// Requests that may wait for the floor in one group. Default 16: a unit
    /// has 3-5 members, a station group a few dozen.
    pub queue: usize,
    /// Hot-mic burst of an SOS, seconds. Default 10: long enough to shout
    /// where and what, short enough not to jam the unit.
    pub sos_hot_mic_s: u32,
    /// Per-group talk-time limits overriding `talk_limit_s`.
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
    /// Its talk-time limit in seconds.
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
    /// Close a connection after this long without any packet. Default 30 s:
    /// terminals send keep-alives every 10 s, so three can be lost.
    pub idle_timeout_ms: u32,
    /// Bytes of voice datagrams queued per connection before the oldest are
    /// dropped. Default 2400 bytes: about 25 frames of 16 kbit/s Opus, half
    /// a second. Anything older is stale and worth less than silence.
    pub datagram_send_buffer: usize,
    /// Bytes of received datagrams buffered per connection before the
    /// newest are dropped. Default 64 KiB.
    pub datagram_receive_buffer: usize,
    /// Bidirectional streams a terminal may have open at once. Default 4:
    /// the control stream plus alert traffic; each slot costs memory.
    pub max_bidi_streams: u32,
    /// Unidirectional streams a terminal may have open at once: attachment
    /// uploads in progress. Default 2.
    pub max_uni_streams: u32,
    /// QUIC handshakes in progress at once; more incoming connections wait
    /// their turn. Default 256: in a reconnect storm of a whole city,
    /// admitting every Initial at once holds tens of thousands of half-open
    /// connections (measured 1.5-2 GiB) and slows every handshake down.
    pub max_handshakes: usize,
    /// A QUIC handshake that has not completed this long after it started
    /// is abandoned and its slot given to the next attempt. Default 5 s: a
    /// handshake takes two round trips, and a terminal that went away would
    /// otherwise hold its slot until the idle timeout.
    pub handshake_timeout_ms: u32,
    /// An attempt that waited this long for a handshake slot is dropped
    /// without an answer; the newest attempts are served first
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
        }
    }
}

/// Per-session settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Session {
    /// Time allowed between handshake and `Hello`. Default 10 s.
    pub hello_timeout_ms: u32,
    /// Groups one terminal may be in. Default 64: a console scanning a
    /// police station's units.
    pub max_groups: usize,
    /// Control messages queued for a terminal before it is disconnected as
    /// too slow. Default 1024.
    pub outbox: usize,
    /// Malformed control frames tolerated before the connection is closed.
    /// Default 8.
    pub max_malformed: u32,
    /// Voice datagrams per second one connection may send. Default 150:
    /// three groups at 50 frames/s.
    pub voice_rate: u32,
    /// Voice datagrams one connection may send in a burst. Default 50.
    pub voice_burst: u32,
}

impl Default for Session {
    fn default() -> Self {
        Self {
            hello_timeout_ms: 10_000,
            max_groups: 64,
            outbox: 1024,
            max_malformed: 8,
            voice_rate: 150,
            voice_burst: 50,
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
}

impl Config {
    /// Reads a TOML config file.
    pub fn load(path: &Path) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| Error::Parse {
            path: path.to_owned(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let d = Config::default();
        assert_eq!(c.listen, d.listen);
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
