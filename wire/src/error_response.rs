//! Reading the fields of an ErrorResponse (or NoticeResponse) body a
//! server sent: its SQLSTATE, its message, its severity.

use crate::codec::read_cstr;

/// Field codes of an ErrorResponse.
pub mod field {
    /// Severity, localized (`S`).
    pub const SEVERITY_LOCALIZED: u8 = b'S';
    /// Severity, never localized (`V`, PostgreSQL 9.6 and later).
    pub const SEVERITY: u8 = b'V';
    /// SQLSTATE (`C`).
    pub const CODE: u8 = b'C';
    /// Primary message (`M`).
    pub const MESSAGE: u8 = b'M';
}

/// One field of an ErrorResponse body, or None when it is absent or the
/// body is malformed.
pub fn error_field(body: &[u8], wanted: u8) -> Option<&str> {
    let mut rest = body;
    while let Some((&code, tail)) = rest.split_first() {
        if code == 0 {
            break;
        }
        let (value, after) = read_cstr(tail)?;
        if code == wanted {
            return Some(value);
        }
        rest = after;
    }
    None
}

/// Whether an ErrorResponse body has severity FATAL or PANIC: the server
/// ends the connection after it.
pub fn is_fatal(body: &[u8]) -> bool {
    let mut rest = body;
    while let Some((&code, tail)) = rest.split_first() {
        if code == 0 {
            break;
        }
        let Some((value, after)) = read_cstr(tail) else {
            break;
        };
        if code == field::SEVERITY || code == field::SEVERITY_LOCALIZED {
            return matches!(value, "FATAL" | "PANIC");
        }
        rest = after;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend;
    use bytes::BytesMut;

    #[test]
    fn fatal_errors_are_told_from_others() {
        let mut fatal = BytesMut::new();
        backend::error_response(&mut fatal, "FATAL", "57P01", "terminating connection");
        let mut plain = BytesMut::new();
        backend::error_response(&mut plain, "ERROR", "42P01", "no such table");
        assert!(is_fatal(&fatal[5..]));
        assert!(!is_fatal(&plain[5..]));
        assert!(!is_fatal(b""));
        assert!(!is_fatal(b"S"));
    }

    #[test]
    fn fields_are_found_by_code() {
        let mut e = BytesMut::new();
        backend::error_response(&mut e, "ERROR", "42P01", "no such table");
        assert_eq!(error_field(&e[5..], field::CODE), Some("42P01"));
        assert_eq!(error_field(&e[5..], field::MESSAGE), Some("no such table"));
        assert_eq!(error_field(&e[5..], b'D'), None);
        assert_eq!(error_field(b"C42", field::CODE), None, "no terminator");
    }
}
