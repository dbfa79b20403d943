//! The PostgreSQL-protocol front end that applications connect to.
//!
//! - [`startup`]: the startup phase — SSL/GSS refusal, cancel requests,
//!   client authentication against `[[users]]`.
//! - [`session`]: one client session: a server connection on the master
//!   and the frame pump between them.
//! - [`commit_tracker`]: which commits wait for sync replicas.
//! - [`tracked_pump`]: sessions followed message by message: sync-mode
//!   commit holds and reads on replicas (`proxy.reads`);
//!   [`read_balance`]: which replica a session reads from;
//!   [`read_cycle`]: which extended-protocol cycles may go to a replica.
//! - [`session_state`]: what a session holds and where it stands, to move
//!   it to another server; [`moving`]: the move itself.
//! - [`gate`]: where sessions hold new statements during a switchover.
//! - [`cancel`]: the keys clients cancel with, mapped to server keys.
//! - [`listener`]: the accept loop.

pub mod cancel;
pub mod commit_tracker;
pub mod gate;
pub mod listener;
pub mod moving;
pub mod read_balance;
pub mod read_cycle;
pub mod session;
pub mod session_state;
pub mod startup;
pub mod tracked_pump;

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
