//! The answer a client gets for a transaction lost with its master.
//!
//! A session whose transaction was open on a master that failed (or was
//! switched over) moves into a failed transaction on the new master (see
//! [`crate::frontend::moving`]). The first error the new server gives in
//! that stand-in transaction, or the ROLLBACK that answers a COMMIT there,
//! is replaced by SQLSTATE 40001, so the client learns once, in the
//! standard way, that it must retry.

use super::route::Route;
use bytes::BytesMut;
use ferry_wire::backend;
use ferry_wire::error_response::{error_field, field};
use ferry_wire::tag::backend::{COMMAND_COMPLETE, ERROR_RESPONSE};

/// The message of SQLSTATE 40001 for a transaction lost with its master.
pub(crate) const LOST_TRANSACTION: &str = "the transaction was open on a master that failed \
     or was switched over before its COMMIT was sent: it did not commit; roll back and retry it";

/// What replaces server message `tag` (with `body`) after the session's
/// transaction was lost: None to pass the message on.
pub(super) fn answer(tag: u8, body: &[u8], r: &Route) -> Option<BytesMut> {
    if !r.lost_transaction {
        return None;
    }
    let replace = match tag {
        ERROR_RESPONSE => error_field(body, field::CODE) == Some("25P02"),
        COMMAND_COMPLETE => body.starts_with(b"ROLLBACK") && r.session.next_commits(),
        _ => false,
    };
    replace.then(|| {
        let mut out = BytesMut::new();
        backend::error_response(&mut out, "ERROR", "40001", LOST_TRANSACTION);
        out
    })
}
