//! A client that speaks the protocol message by message, for what drivers
//! do not send (hostile bytes, particular message sequences).

use crate::{PASSWORD, USER};
use bytes::BytesMut;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::{backend::Message, frontend};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Logs in with SCRAM over a raw socket, returning it ready for queries.
pub fn login(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    // Generous: on a loaded 2-core machine a login can take seconds.
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut out = BytesMut::new();
    frontend::startup_message([("user", USER), ("database", "app")], &mut out).unwrap();
    s.write_all(&out).unwrap();
    let mut buf = BytesMut::new();
    let mut scram = ScramSha256::new(PASSWORD.as_bytes(), ChannelBinding::unsupported());
    loop {
        let msg = read_msg(&mut s, &mut buf)
            .expect("the connection closed during login without an error message");
        out.clear();
        match msg {
            Message::AuthenticationSasl(_) => {
                frontend::sasl_initial_response("SCRAM-SHA-256", scram.message(), &mut out).unwrap()
            }
            Message::AuthenticationSaslContinue(b) => {
                scram.update(b.data()).unwrap();
                frontend::sasl_response(scram.message(), &mut out).unwrap();
            }
            Message::ReadyForQuery(_) => return s,
            Message::ErrorResponse(e) => {
                use fallible_iterator::FallibleIterator;
                let fields: Vec<String> = e
                    .fields()
                    .map(|f| Ok(String::from_utf8_lossy(f.value_bytes()).into_owned()))
                    .collect()
                    .unwrap_or_default();
                panic!("login refused: {fields:?}");
            }
            _ => continue,
        }
        s.write_all(&out).unwrap();
    }
}

/// The next whole server message, reading as needed; None once the
/// connection closes.
pub fn read_msg(s: &mut TcpStream, buf: &mut BytesMut) -> Option<Message> {
    loop {
        if let Ok(Some(m)) = Message::parse(buf) {
            return Some(m);
        }
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
