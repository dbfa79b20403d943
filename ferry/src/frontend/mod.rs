//! The PostgreSQL-protocol front end that applications connect to.
//!
//! - [`listener`]: the accept loop; [`shared`]: what every session shares.
//! - [`startup`]: the startup phase — TLS (`proxy.tls`, [`client_stream`]),
//!   GSS refusal, cancel requests, client authentication against `[[users]]`
//!   (and the master's roles, [`lookup`]).
//! - [`session`]: one client session, from its startup to its end: a
//!   server connection on the master, the pump, moves to a new master.
//! - [`pump`]: the session's messages, both ways, one handler per message
//!   kind: sync-mode commit holds, reads on replicas (`proxy.reads`).
//!   [`commit_tracker`]: which commits wait for sync replicas;
//!   [`read_balance`]: which replica a session reads from;
//!   [`read_cycle`]: which extended-protocol cycles may go to a replica.
//! - [`hold`]: where statements wait while the master changes (the
//!   switchover gate, the wait for a master).
//! - [`session_state`]: what a session holds and where it stands, to move
//!   it to another server; [`moving`]: the move itself.
//! - [`cancel`]: the keys clients cancel with, mapped to server keys.

pub mod cancel;
pub mod client_stream;
pub mod commit_tracker;
pub mod hold;
pub mod listener;
pub mod lookup;
pub mod moving;
pub mod pump;
pub mod read_balance;
pub mod read_cycle;
pub mod session;
pub mod session_state;
pub mod shared;
pub mod startup;

use bytes::BytesMut;
use ferry_wire::backend;
use tokio::io::AsyncWriteExt;

/// Sends a FATAL error to a client that is about to be disconnected; a
/// failure to deliver it changes nothing.
pub(crate) async fn fatal<W: AsyncWriteExt + Unpin>(w: &mut W, code: &str, message: &str) {
    let mut out = BytesMut::new();
    backend::error_response(&mut out, "FATAL", code, message);
    let _ = w.write_all(&out).await;
    let _ = w.flush().await;
}
