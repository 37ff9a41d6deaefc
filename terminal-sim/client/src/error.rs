//! The one error type of the library.

use std::time::Duration;

use ptt_codec::{CloseCode, DenyCause, ErrorCode, Malformed, RevokeCause};

/// Errors of the terminal library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The gateway closed the connection with a protocol close code.
    #[error("closed by the gateway: {code:?} ({reason})")]
    Closed {
        /// The close code, if it is one the protocol defines.
        code: Option<CloseCode>,
        /// The gateway's reason text.
        reason: String,
    },
    /// The connection failed otherwise (timeout, reset, local close).
    #[error("connection: {0}")]
    Connection(quinn::ConnectionError),
    /// Connecting failed before a connection existed.
    #[error("connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The gateway answered with an `Error` frame.
    #[error("gateway error {code:?}: {message}")]
    Refused {
        /// Stable code.
        code: ErrorCode,
        /// Detail.
        message: String,
    },
    /// A floor request was denied.
    #[error("floor denied: {0:?}")]
    Denied(DenyCause),
    /// The floor was revoked while waiting for it.
    #[error("floor revoked: {0:?}")]
    Revoked(RevokeCause),
    /// The gateway sent something undecodable.
    #[error("malformed frame from the gateway: {0}")]
    Malformed(#[from] Malformed),
    /// No answer in time.
    #[error("no answer from the gateway within {0:?}")]
    Timeout(Duration),
    /// The control stream ended.
    #[error("control stream closed")]
    StreamClosed,
    /// TLS configuration.
    #[error("TLS: {0}")]
    Tls(String),
    /// A local I/O error (certificate file, socket).
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The voice datagram could not be sent (too large, or datagrams off).
    #[error("sending voice: {0}")]
    SendDatagram(#[from] quinn::SendDatagramError),
    /// The gateway closed the connection, or refused `Hello`, with
    /// `CloseCode::Revoked`: this terminal's credential was revoked by an
    /// operator (a handset reported stolen or lost). Reconnecting cannot
    /// help until the revocation is lifted: stop retrying and tell the
    /// user to contact the control room.
    #[error("credential revoked by the gateway ({reason}): do not reconnect")]
    CredentialRevoked {
        /// The gateway's reason text.
        reason: String,
    },
    /// The gateway answered a WebTransport CONNECT with this HTTP status
    /// (404: not the console's path).
    #[error("WebTransport session refused with HTTP status {0}")]
    SessionRefused(u16),
    /// The WebTransport handshake broke the protocol (an undecodable
    /// answer, the CONNECT stream ended).
    #[error("WebTransport: {0}")]
    WebTransport(String),
    /// A list of gateway addresses ([`crate::Gateways`]) does not parse:
    /// empty, an item that is no `host:port`, or an address twice.
    #[error("gateway addresses: {0}")]
    Gateways(String),
    /// A voice frame or report could not be protected for the SRTP media
    /// plane (an Opus packet too long, the stream's index space spent).
    #[error("media plane: {0}")]
    Media(ptt_codec::srtp::Error),
}

impl Error {
    /// Whether connecting again with the same credential cannot succeed:
    /// the credential was revoked ([`Error::CredentialRevoked`]) or refused
    /// (`CloseCode::AuthFailed`), the terminal was removed from the org
    /// (`CloseCode::OrgRemoved`), or the protocol version is not spoken
    /// (`CloseCode::UnsupportedVersion`). A reconnect loop stops on these
    /// and tells the user; on any other error it retries with backoff.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Error::CredentialRevoked { .. }
                | Error::Closed {
                    code: Some(
                        CloseCode::AuthFailed
                            | CloseCode::UnsupportedVersion
                            | CloseCode::OrgRemoved
                    ),
                    ..
                }
        )
    }
}

impl From<quinn::ConnectionError> for Error {
    fn from(e: quinn::ConnectionError) -> Self {
        match e {
            quinn::ConnectionError::ApplicationClosed(c) => {
                let code = u32::try_from(c.error_code.into_inner())
                    .ok()
                    .and_then(CloseCode::from_code);
                let reason = String::from_utf8_lossy(&c.reason).into_owned();
                if code == Some(CloseCode::Revoked) {
                    Error::CredentialRevoked { reason }
                } else {
                    Error::Closed { code, reason }
                }
            }
            other => Error::Connection(other),
        }
    }
}

/// The error a failed stream write stands for: the connection's, if it was
/// lost (with the gateway's close code), else the stream's end.
pub(crate) fn write_error(e: quinn::WriteError) -> Error {
    match e {
        quinn::WriteError::ConnectionLost(c) => c.into(),
        _ => Error::StreamClosed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed(code: u32) -> Error {
        quinn::ConnectionError::ApplicationClosed(quinn::ApplicationClose {
            error_code: quinn::VarInt::from_u32(code),
            reason: b"why".to_vec().into(),
        })
        .into()
    }

    #[test]
    fn a_revoked_credential_is_its_own_final_error() {
        let e = closed(CloseCode::Revoked.code());
        assert!(
            matches!(&e, Error::CredentialRevoked { reason } if reason == "why"),
            "{e:?}"
        );
        assert!(e.is_final());
        assert!(closed(CloseCode::AuthFailed.code()).is_final());
        assert!(closed(CloseCode::UnsupportedVersion.code()).is_final());
        assert!(closed(CloseCode::OrgRemoved.code()).is_final());
        // Worth retrying: replaced, shutting down, too slow, rate limited,
        // unknown codes.
        for code in [3, 4, 7, 8, 99] {
            let e = closed(code);
            assert!(matches!(e, Error::Closed { .. }) && !e.is_final(), "{code}");
        }
    }
}
