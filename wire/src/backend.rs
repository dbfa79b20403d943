//! Encoding of the backend messages Ferry itself originates (authentication,
//! errors, key data). Everything else the server sends is forwarded as is.

use crate::error_response::field;
use crate::tag::backend::{
    AUTHENTICATION, BACKEND_KEY_DATA, ERROR_RESPONSE, NEGOTIATE_PROTOCOL_VERSION, PARAMETER_STATUS,
    READY_FOR_QUERY,
};
use crate::TransactionStatus;
use bytes::{BufMut, BytesMut};

fn frame(buf: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    buf.put_u8(tag);
    let at = buf.len();
    buf.put_i32(0);
    body(buf);
    let len = (buf.len() - at) as i32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn cstr(buf: &mut BytesMut, s: &str) {
    buf.put_slice(s.as_bytes());
    buf.put_u8(0);
}

/// AuthenticationOk.
pub fn auth_ok(buf: &mut BytesMut) {
    frame(buf, AUTHENTICATION, |b| b.put_i32(0));
}

/// AuthenticationMD5Password with its salt.
pub fn auth_md5(buf: &mut BytesMut, salt: [u8; 4]) {
    frame(buf, AUTHENTICATION, |b| {
        b.put_i32(5);
        b.put_slice(&salt);
    });
}

/// AuthenticationSASL offering SCRAM-SHA-256.
pub fn auth_sasl(buf: &mut BytesMut) {
    frame(buf, AUTHENTICATION, |b| {
        b.put_i32(10);
        cstr(b, "SCRAM-SHA-256");
        b.put_u8(0);
    });
}

/// AuthenticationSASLContinue.
pub fn auth_sasl_continue(buf: &mut BytesMut, data: &[u8]) {
    frame(buf, AUTHENTICATION, |b| {
        b.put_i32(11);
        b.put_slice(data);
    });
}

/// AuthenticationSASLFinal.
pub fn auth_sasl_final(buf: &mut BytesMut, data: &[u8]) {
    frame(buf, AUTHENTICATION, |b| {
        b.put_i32(12);
        b.put_slice(data);
    });
}

/// ParameterStatus.
pub fn parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    frame(buf, PARAMETER_STATUS, |b| {
        cstr(b, name);
        cstr(b, value);
    });
}

/// BackendKeyData: the key a client uses to cancel its query through Ferry.
pub fn backend_key_data(buf: &mut BytesMut, pid: i32, secret: i32) {
    frame(buf, BACKEND_KEY_DATA, |b| {
        b.put_i32(pid);
        b.put_i32(secret);
    });
}

/// ReadyForQuery with the session's transaction status.
pub fn ready_for_query(buf: &mut BytesMut, status: TransactionStatus) {
    frame(buf, READY_FOR_QUERY, |b| b.put_u8(status.byte()));
}

/// NegotiateProtocolVersion: Ferry speaks 3.0 and none of the `_pq_` options.
pub fn negotiate_protocol_version(buf: &mut BytesMut, unrecognised: &[&str]) {
    frame(buf, NEGOTIATE_PROTOCOL_VERSION, |b| {
        b.put_i32(0x0003_0000);
        b.put_i32(unrecognised.len() as i32);
        for o in unrecognised {
            cstr(b, o);
        }
    });
}

/// ErrorResponse (or NoticeResponse with `tag = b'N'`) with the fields
/// clients show: severity, SQLSTATE and message.
pub fn error_response(buf: &mut BytesMut, severity: &str, code: &str, message: &str) {
    frame(buf, ERROR_RESPONSE, |b| {
        b.put_u8(field::SEVERITY_LOCALIZED);
        cstr(b, severity);
        b.put_u8(field::SEVERITY);
        cstr(b, severity);
        b.put_u8(field::CODE);
        cstr(b, code);
        b.put_u8(field::MESSAGE);
        cstr(b, message);
        b.put_u8(0);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::message::backend::Message;

    #[test]
    fn round_trip_through_the_rust_postgres_parser() {
        let mut buf = BytesMut::new();
        error_response(&mut buf, "FATAL", "28P01", "password authentication failed");
        backend_key_data(&mut buf, 1, 2);
        ready_for_query(&mut buf, TransactionStatus::Idle);
        match Message::parse(&mut buf).unwrap().unwrap() {
            Message::ErrorResponse(body) => {
                use fallible_iterator::FallibleIterator;
                let fields: Vec<(u8, String)> = body
                    .fields()
                    .map(|f| {
                        Ok((
                            f.type_(),
                            String::from_utf8_lossy(f.value_bytes()).into_owned(),
                        ))
                    })
                    .collect()
                    .unwrap();
                assert!(fields.contains(&(b'C', "28P01".into())));
            }
            _ => panic!("not an error"),
        }
        match Message::parse(&mut buf).unwrap().unwrap() {
            Message::BackendKeyData(k) => assert_eq!((k.process_id(), k.secret_key()), (1, 2)),
            _ => panic!("not key data"),
        }
        assert!(matches!(
            Message::parse(&mut buf).unwrap().unwrap(),
            Message::ReadyForQuery(_)
        ));
    }
}
