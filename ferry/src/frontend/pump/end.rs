//! How a pump ends: normally ([`End`]) or with an error ([`PumpError`]).
//! The session decides what follows (move to the next master, answer
//! 57P01, close).

/// How a session's pump ended normally.
#[derive(Debug)]
pub(crate) enum End {
    /// The client sent Terminate.
    Terminated,
    /// The client closed its connection.
    ClientGone,
    /// The master connection is lost (closed, broken, or ended by a crash
    /// or a shutdown of the server): the session may move.
    ServerGone,
    /// Ferry is stopping.
    Stopped,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum PumpError {
    /// The client broke the protocol.
    #[error("{0}")]
    Protocol(ferry_wire::FrameError),
    /// The client connection failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The server connection failed: the session may move.
    #[error("server: {0}")]
    Server(std::io::Error),
}

impl PumpError {
    /// A server message that does not parse: the session cannot go on.
    pub(super) fn invalid_data(e: ferry_wire::FrameError) -> Self {
        Self::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }
}
