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
}

impl From<quinn::ConnectionError> for Error {
    fn from(e: quinn::ConnectionError) -> Self {
        match e {
            quinn::ConnectionError::ApplicationClosed(c) => Error::Closed {
                code: u32::try_from(c.error_code.into_inner())
                    .ok()
                    .and_then(CloseCode::from_code),
                reason: String::from_utf8_lossy(&c.reason).into_owned(),
            },
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
