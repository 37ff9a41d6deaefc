//! Mumble's TLS control channel: each message is a 2-byte type and a
//! 4-byte length (big endian) before a protobuf body (`Mumble.proto`).
//! Only the messages this bench sends or reads are declared, as
//! hand-written prost structs with Mumble.proto's field numbers.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Header bytes before each body.
pub const HEADER: usize = 6;
/// Longest body accepted: Mumble's own bound (`Connection.cpp` closes a
/// connection announcing more than 0x7fffff bytes).
pub const MAX_BODY: usize = 0x7F_FFFF;

/// Message types used here (Mumble.proto's order, as the protocol numbers
/// them).
pub mod kind {
    /// Version.
    pub const VERSION: u16 = 0;
    /// Voice over TCP: what murmur sends a client it cannot reach by UDP.
    pub const UDP_TUNNEL: u16 = 1;
    /// Authenticate.
    pub const AUTHENTICATE: u16 = 2;
    /// Ping (keepalive).
    pub const PING: u16 = 3;
    /// Reject (authentication refused).
    pub const REJECT: u16 = 4;
    /// ServerSync (login done: the client's session).
    pub const SERVER_SYNC: u16 = 5;
    /// ChannelState.
    pub const CHANNEL_STATE: u16 = 7;
    /// UserState.
    pub const USER_STATE: u16 = 9;
    /// PermissionDenied.
    pub const PERMISSION_DENIED: u16 = 12;
    /// CryptSetup (the UDP key and nonces).
    pub const CRYPT_SETUP: u16 = 15;
}

/// Why a control message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The announced body is longer than [`MAX_BODY`].
    #[error("message of {0} bytes exceeds the {MAX_BODY}-byte bound")]
    TooLong(usize),
    /// The body is not the message its type says.
    #[error("undecodable body: {0}")]
    Body(#[from] prost::DecodeError),
    /// The connection failed or closed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads a message header: its type and body length, refused past
/// [`MAX_BODY`] before anything is allocated.
pub fn header(h: &[u8; HEADER]) -> Result<(u16, usize), Error> {
    let kind = u16::from_be_bytes([h[0], h[1]]);
    let len = u32::from_be_bytes([h[2], h[3], h[4], h[5]]) as usize;
    if len > MAX_BODY {
        return Err(Error::TooLong(len));
    }
    Ok((kind, len))
}

/// Appends one framed message to `out`.
pub fn frame(kind: u16, msg: &impl prost::Message, out: &mut Vec<u8>) {
    let len = msg.encoded_len();
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(len as u32).to_be_bytes());
    msg.encode(out).expect("a Vec grows to take any message");
}

/// Sends one message.
pub async fn send(
    w: &mut (impl AsyncWrite + Unpin),
    kind: u16,
    msg: &impl prost::Message,
) -> Result<(), Error> {
    let mut out = Vec::with_capacity(HEADER + msg.encoded_len());
    frame(kind, msg, &mut out);
    w.write_all(&out).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one message into `body` (reused between calls); returns its type.
pub async fn recv(r: &mut (impl AsyncRead + Unpin), body: &mut Vec<u8>) -> Result<u16, Error> {
    let mut h = [0u8; HEADER];
    r.read_exact(&mut h).await?;
    let (kind, len) = header(&h)?;
    body.clear();
    body.resize(len, 0);
    r.read_exact(body).await?;
    Ok(kind)
}

/// Version (type 0).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Version {
    /// `major << 16 | minor << 8 | patch`.
    #[prost(uint32, optional, tag = "1")]
    pub version_v1: Option<u32>,
    /// Release name.
    #[prost(string, optional, tag = "2")]
    pub release: Option<String>,
    /// Operating system.
    #[prost(string, optional, tag = "3")]
    pub os: Option<String>,
    /// Its version.
    #[prost(string, optional, tag = "4")]
    pub os_version: Option<String>,
}

/// Authenticate (type 2).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Authenticate {
    /// User name (unique on the server).
    #[prost(string, optional, tag = "1")]
    pub username: Option<String>,
    /// Password (SuperUser's, for the admin connection).
    #[prost(string, optional, tag = "2")]
    pub password: Option<String>,
    /// Whether the client speaks Opus.
    #[prost(bool, optional, tag = "5")]
    pub opus: Option<bool>,
}

/// Ping (type 3), the TCP keepalive.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Ping {
    /// Sender's timestamp.
    #[prost(uint64, optional, tag = "1")]
    pub timestamp: Option<u64>,
    /// UDP packets decrypted.
    #[prost(uint32, optional, tag = "2")]
    pub good: Option<u32>,
    /// Late.
    #[prost(uint32, optional, tag = "3")]
    pub late: Option<u32>,
    /// Lost.
    #[prost(uint32, optional, tag = "4")]
    pub lost: Option<u32>,
}

/// Reject (type 4).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Reject {
    /// Mumble's RejectType.
    #[prost(int32, optional, tag = "1")]
    pub kind: Option<i32>,
    /// Reason text.
    #[prost(string, optional, tag = "2")]
    pub reason: Option<String>,
}

/// ServerSync (type 5).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ServerSync {
    /// This client's session.
    #[prost(uint32, optional, tag = "1")]
    pub session: Option<u32>,
    /// Bandwidth allowed per user, bits per second.
    #[prost(uint32, optional, tag = "2")]
    pub max_bandwidth: Option<u32>,
}

/// ChannelState (type 7): announces a channel, or asks to create one.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ChannelState {
    /// Channel id (absent in a creation request).
    #[prost(uint32, optional, tag = "1")]
    pub channel_id: Option<u32>,
    /// Parent channel (0 is the root).
    #[prost(uint32, optional, tag = "2")]
    pub parent: Option<u32>,
    /// Name.
    #[prost(string, optional, tag = "3")]
    pub name: Option<String>,
    /// Removed when empty.
    #[prost(bool, optional, tag = "8")]
    pub temporary: Option<bool>,
}

/// UserState (type 9): announces a user, or asks to move one.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UserState {
    /// The user's session.
    #[prost(uint32, optional, tag = "1")]
    pub session: Option<u32>,
    /// Who did it.
    #[prost(uint32, optional, tag = "2")]
    pub actor: Option<u32>,
    /// Name.
    #[prost(string, optional, tag = "3")]
    pub name: Option<String>,
    /// The channel the user is in.
    #[prost(uint32, optional, tag = "5")]
    pub channel_id: Option<u32>,
}

/// PermissionDenied (type 12): a request refused.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PermissionDenied {
    /// Permission bit refused.
    #[prost(uint32, optional, tag = "1")]
    pub permission: Option<u32>,
    /// Channel concerned.
    #[prost(uint32, optional, tag = "2")]
    pub channel_id: Option<u32>,
    /// Reason text.
    #[prost(string, optional, tag = "4")]
    pub reason: Option<String>,
    /// DenyType.
    #[prost(int32, optional, tag = "6")]
    pub kind: Option<i32>,
}

/// CryptSetup (type 15): the UDP key and both nonces.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CryptSetup {
    /// AES-128 key.
    #[prost(bytes = "vec", optional, tag = "1")]
    pub key: Option<Vec<u8>>,
    /// The client's encrypt nonce.
    #[prost(bytes = "vec", optional, tag = "2")]
    pub client_nonce: Option<Vec<u8>>,
    /// The server's encrypt nonce (the client's decrypt nonce).
    #[prost(bytes = "vec", optional, tag = "3")]
    pub server_nonce: Option<Vec<u8>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[tokio::test]
    async fn frames_round_trip() {
        let msg = UserState {
            session: Some(5),
            channel_id: Some(9),
            ..Default::default()
        };
        let mut buf = Vec::new();
        frame(kind::USER_STATE, &msg, &mut buf);
        frame(kind::PING, &Ping::default(), &mut buf);
        let (mut r, mut body) = (&buf[..], Vec::new());
        assert_eq!(
            recv(&mut r, &mut body).await.expect("first"),
            kind::USER_STATE
        );
        assert_eq!(UserState::decode(&body[..]).expect("decodes"), msg);
        assert_eq!(recv(&mut r, &mut body).await.expect("second"), kind::PING);
        assert!(body.is_empty());
        assert!(r.is_empty());
        assert!(matches!(recv(&mut r, &mut body).await, Err(Error::Io(_))));
    }

    /// Field numbers as Mumble.proto's: a hand-encoded UserState with
    /// session 1 (field 1) and channel 3 (field 5).
    #[test]
    fn field_numbers_are_mumbles() {
        let msg = UserState::decode(&[0x08, 0x01, 0x28, 0x03][..]).expect("decodes");
        assert_eq!((msg.session, msg.channel_id), (Some(1), Some(3)));
        let setup = CryptSetup::decode(&[0x0a, 0x01, 0xAA, 0x12, 0x01, 0xBB, 0x1a, 0x01, 0xCC][..])
            .expect("decodes");
        assert_eq!(setup.key, Some(vec![0xAA]));
        assert_eq!(setup.client_nonce, Some(vec![0xBB]));
        assert_eq!(setup.server_nonce, Some(vec![0xCC]));
    }

    #[tokio::test]
    async fn truncated_and_oversized() {
        let mut buf = Vec::new();
        let c = ChannelState {
            name: Some("g1".into()),
            ..Default::default()
        };
        frame(kind::CHANNEL_STATE, &c, &mut buf);
        for cut in 0..buf.len() {
            let mut body = Vec::new();
            assert!(
                matches!(recv(&mut &buf[..cut], &mut body).await, Err(Error::Io(_))),
                "cut {cut}"
            );
        }
        let mut h = [0, 1, 0, 0, 0, 0];
        h[2..].copy_from_slice(&(MAX_BODY as u32).to_be_bytes());
        assert_eq!(header(&h).expect("at the bound"), (1, MAX_BODY));
        h[2..].copy_from_slice(&(MAX_BODY as u32 + 1).to_be_bytes());
        assert!(matches!(header(&h), Err(Error::TooLong(_))));
        h[2..].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(header(&h), Err(Error::TooLong(_))));
    }

    #[tokio::test]
    async fn recv_bounds_and_truncation() {
        let mut huge = vec![0, 1];
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        let mut body = Vec::new();
        assert!(matches!(
            recv(&mut &huge[..], &mut body).await,
            Err(Error::TooLong(_))
        ));
        assert!(body.is_empty(), "nothing allocated for a refused length");
        let mut buf = Vec::new();
        frame(
            kind::PING,
            &Ping {
                timestamp: Some(1),
                ..Default::default()
            },
            &mut buf,
        );
        assert!(matches!(
            recv(&mut &buf[..buf.len() - 1], &mut body).await,
            Err(Error::Io(_))
        ));
        assert_eq!(
            recv(&mut &buf[..], &mut body).await.expect("whole"),
            kind::PING
        );
    }

    #[test]
    fn hostile_bodies_never_panic() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut buf = [0u8; 32];
        for _ in 0..20_000 {
            for b in &mut buf {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            let body = &buf[..(x % 33) as usize];
            let _ = UserState::decode(body);
            let _ = ChannelState::decode(body);
            let _ = CryptSetup::decode(body);
            let _ = ServerSync::decode(body);
            if let Ok(h) = <&[u8; HEADER]>::try_from(&body[..body.len().min(HEADER)]) {
                let _ = header(h);
            }
        }
    }
}
