//! The first packet of a connection: startup, SSL/GSS negotiation or cancel.

use crate::codec::read_cstr;
use thiserror::Error;

const SSL_REQUEST: i32 = 80_877_103;
const GSSENC_REQUEST: i32 = 80_877_104;
const CANCEL_REQUEST: i32 = 80_877_102;

/// A parsed startup-phase packet.
#[derive(Debug, PartialEq, Eq)]
pub enum StartupPacket {
    /// The client asks for TLS; Ferry answers 'N' and waits for the next packet.
    SslRequest,
    /// The client asks for GSSAPI encryption; answered 'N' as well.
    GssEncRequest,
    /// A request to cancel the query running in the session with this key.
    Cancel { pid: i32, secret: i32 },
    /// A protocol 3.x startup message.
    Startup {
        /// Minor protocol version the client asked for.
        minor: u16,
        /// Parameters in the order sent (user, database, application_name, ...).
        params: Vec<(String, String)>,
    },
}

impl StartupPacket {
    /// The value of a startup parameter, if present.
    pub fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a startup packet was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum StartupError {
    #[error("startup packet too short")]
    TooShort,
    #[error("unsupported frontend protocol {major}.{minor}: server supports 3.0")]
    UnsupportedProtocol { major: u16, minor: u16 },
    #[error("malformed startup packet")]
    Malformed,
}

/// Parses a startup packet body (everything after the length word).
pub fn parse_startup(body: &[u8]) -> Result<StartupPacket, StartupError> {
    if body.len() < 4 {
        return Err(StartupError::TooShort);
    }
    let code = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    let rest = &body[4..];
    match code {
        SSL_REQUEST => Ok(StartupPacket::SslRequest),
        GSSENC_REQUEST => Ok(StartupPacket::GssEncRequest),
        CANCEL_REQUEST => {
            if rest.len() < 8 {
                return Err(StartupError::TooShort);
            }
            Ok(StartupPacket::Cancel {
                pid: i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]),
                secret: i32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]),
            })
        }
        _ => {
            let major = (code >> 16) as u16;
            let minor = (code & 0xffff) as u16;
            if major != 3 {
                return Err(StartupError::UnsupportedProtocol { major, minor });
            }
            let mut params = Vec::new();
            let mut rest = rest;
            loop {
                let (key, after) = read_cstr(rest).ok_or(StartupError::Malformed)?;
                if key.is_empty() {
                    break;
                }
                let (value, after) = read_cstr(after).ok_or(StartupError::Malformed)?;
                params.push((key.to_string(), value.to_string()));
                rest = after;
            }
            Ok(StartupPacket::Startup { minor, params })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_params() {
        let mut body = 196_608i32.to_be_bytes().to_vec();
        body.extend_from_slice(b"user\0app\0database\0db\0\0");
        let p = parse_startup(&body).unwrap();
        match p {
            StartupPacket::Startup { minor, params } => {
                assert_eq!(minor, 0);
                assert_eq!(StartupPacket::param(&params, "user"), Some("app"));
                assert_eq!(StartupPacket::param(&params, "database"), Some("db"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn special_codes() {
        assert_eq!(
            parse_startup(&SSL_REQUEST.to_be_bytes()),
            Ok(StartupPacket::SslRequest)
        );
        let mut c = CANCEL_REQUEST.to_be_bytes().to_vec();
        c.extend_from_slice(&7i32.to_be_bytes());
        c.extend_from_slice(&9i32.to_be_bytes());
        assert_eq!(
            parse_startup(&c),
            Ok(StartupPacket::Cancel { pid: 7, secret: 9 })
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_eq!(
            parse_startup(&[0, 2, 0, 0]),
            Err(StartupError::UnsupportedProtocol { major: 2, minor: 0 })
        );
        let mut body = 196_608i32.to_be_bytes().to_vec();
        body.extend_from_slice(b"user\0no-terminator");
        assert_eq!(parse_startup(&body), Err(StartupError::Malformed));
        assert_eq!(parse_startup(&[1, 2]), Err(StartupError::TooShort));
    }
}
