//! Why an operation was not carried out, typed: the admin endpoint answers
//! it with its HTTP status and `{"error": code, "message": text}`, and the
//! `ferry` command that asked prints the message and exits with the
//! refusal's exit code.

use serde::{Deserialize, Serialize};

/// What kind of refusal: decides the HTTP status and the exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalKind {
    /// The request itself is wrong (a bad name, DSN or instant): 400.
    BadRequest,
    /// The caller did not show the admin token: 401 (answered by the
    /// endpoint before any operation runs).
    Unauthorized,
    /// It names a node, replica or table that does not exist: 404.
    NotFound,
    /// The cluster's state does not allow it now: 409.
    Conflict,
    /// Valid, but it cannot be done as asked (an instant too soon): 422.
    Unprocessable,
    /// The part of Ferry that would carry it out cannot answer now (the
    /// coordinator, the batcher, the master): 503, retry later.
    Unavailable,
}

impl RefusalKind {
    pub fn http_status(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::Unauthorized => 401,
            Self::NotFound => 404,
            Self::Conflict => 409,
            Self::Unprocessable => 422,
            Self::Unavailable => 503,
        }
    }

    /// The kind an HTTP status stands for (any other error status reads as
    /// a conflict).
    pub fn of_http_status(status: u16) -> Self {
        match status {
            400 => Self::BadRequest,
            401 => Self::Unauthorized,
            404 => Self::NotFound,
            422 => Self::Unprocessable,
            503 => Self::Unavailable,
            _ => Self::Conflict,
        }
    }

    /// The exit code of a `ferry` command refused so: 1, 75
    /// (`EX_TEMPFAIL`) when trying again later may succeed, or 77
    /// (`EX_NOPERM`) without the admin token.
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Unavailable => 75,
            Self::Unauthorized => 77,
            _ => 1,
        }
    }
}

/// A refused operation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub kind: RefusalKind,
    /// A stable, machine-readable code (`no_master`, `fenced`, …).
    pub code: String,
    /// What an operator reads.
    pub message: String,
}

/// The JSON body of a refusal.
#[derive(Debug, Serialize, Deserialize)]
pub struct RefusalBody {
    pub error: String,
    pub message: String,
}

impl Refusal {
    pub fn new(kind: RefusalKind, code: &str, message: impl Into<String>) -> Self {
        Self {
            kind,
            code: code.to_string(),
            message: message.into(),
        }
    }

    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(RefusalKind::BadRequest, code, message)
    }

    pub fn not_found(code: &str, message: impl Into<String>) -> Self {
        Self::new(RefusalKind::NotFound, code, message)
    }

    pub fn conflict(code: &str, message: impl Into<String>) -> Self {
        Self::new(RefusalKind::Conflict, code, message)
    }

    /// Code `unavailable`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(RefusalKind::Unavailable, "unavailable", message)
    }

    /// The admin endpoint's answer.
    pub fn answer(&self) -> (u16, serde_json::Value) {
        let body = RefusalBody {
            error: self.code.clone(),
            message: self.message.clone(),
        };
        (
            self.kind.http_status(),
            serde_json::to_value(body).unwrap_or_default(),
        )
    }

    /// The refusal an admin answer (`status`, body `text`) carries, as the
    /// `ferry` commands read it; a body that is not a refusal is the
    /// message itself.
    pub fn of_answer(status: u16, text: &str) -> Self {
        let kind = RefusalKind::of_http_status(status);
        match serde_json::from_str::<RefusalBody>(text) {
            Ok(b) => Self::new(kind, &b.error, b.message),
            Err(_) => Self::new(kind, "error", text.trim()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_survives_the_trip_through_the_admin_endpoint() {
        let r = Refusal::conflict("fenced", "node c is fenced out");
        let (status, body) = r.answer();
        assert_eq!(status, 409);
        assert_eq!(Refusal::of_answer(status, &body.to_string()), r);
        let gone = Refusal::of_answer(503, "upstream went away\n");
        assert_eq!(gone.kind, RefusalKind::Unavailable);
        assert_eq!(gone.message, "upstream went away");
        assert_eq!(gone.kind.exit_code(), 75);
        assert_eq!(r.kind.exit_code(), 1);
    }
}
