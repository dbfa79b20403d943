//! Moving a session to a new server after its master was lost or
//! replaced: answering what the lost server owed, then recreating the
//! session's state on the new one.
//!
//! - An answer the lost server owed outside a transaction ends with
//!   SQLSTATE 08007 (the statement may or may not have committed there).
//! - A COMMIT in flight ends with SQLSTATE 08007 too: its outcome is
//!   unknown.
//! - A transaction that was open is gone: its owed answers end with 40001,
//!   and the new server session is put in a failed transaction, so that
//!   the client's next statements fail as in any aborted transaction (the
//!   first with 40001, see [`super::tracked_pump`]) until it rolls back.
//! - Settings, prepared statements and listens are replayed in the order
//!   they were made ([`super::session_state`]).

use super::session_state::Loss;
use super::tracked_pump::LOST_TRANSACTION;
use bytes::{Buf, BytesMut};
use ferry_sql::session_effect::STAND_IN_FAILED_TRANSACTION;
use ferry_wire::{backend, ConnError, FrameScanner, ServerConn, Step};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The message of SQLSTATE 08007 for a statement in flight when its
/// master was lost.
const OUTCOME_UNKNOWN: &str = "the master failed or was switched over while this statement ran: \
     it may or may not have committed there; the session goes on with the new master";

/// The message of SQLSTATE 08007 for a COMMIT in flight when its master
/// was lost.
const COMMIT_UNKNOWN: &str = "the master failed or was switched over while this COMMIT ran: \
     its outcome is unknown (the old master may have committed it, and shipped it or not); \
     if it committed there but is missing from the new master, `ferry resync` of the old \
     master keeps it in that node's ferry.quarantine; the session goes on with the new master";

/// Answers what the lost server owed the client; `cbuf` holds client
/// bytes not sent yet (an unfinished extended-protocol cycle is read and
/// dropped through its Sync, then answered).
pub(crate) async fn answer_loss(
    client: &mut TcpStream,
    cbuf: &mut BytesMut,
    loss: Loss,
    max: usize,
) -> std::io::Result<()> {
    let (code, message, status) = if loss.commit_in_flight {
        ("08007", COMMIT_UNKNOWN, b'I')
    } else if loss.in_transaction {
        ("40001", LOST_TRANSACTION, b'E')
    } else {
        ("08007", OUTCOME_UNKNOWN, b'I')
    };
    let answer = |out: &mut BytesMut| {
        backend::error_response(out, "ERROR", code, message);
        backend::ready_for_query(out, status);
    };
    let mut out = BytesMut::new();
    for _ in 0..loss.owed {
        answer(&mut out);
    }
    client.write_all(&out).await?;
    if loss.open_extended {
        drop_through_sync(client, cbuf, max).await?;
        let mut out = BytesMut::new();
        answer(&mut out);
        client.write_all(&out).await?;
    }
    Ok(())
}

/// Reads and drops client messages through the next Sync (as a server
/// does after an error in an extended-protocol cycle).
async fn drop_through_sync(
    client: &mut TcpStream,
    cbuf: &mut BytesMut,
    max: usize,
) -> std::io::Result<()> {
    let mut scanner = FrameScanner::default();
    loop {
        let mut at = 0;
        loop {
            match scanner
                .step(&cbuf[at..], max, |t| t == b'S')
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?
            {
                Step::Pass(n) => at += n,
                Step::Frame { len, .. } => {
                    cbuf.advance(at + len);
                    return Ok(());
                }
                Step::More => break,
            }
        }
        cbuf.advance(at);
        cbuf.reserve(16 * 1024);
        if client.read_buf(cbuf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// Recreates a session's state on a new server connection: `replay`
/// statements in order, then the Parse messages of its named prepared
/// statements; with `lost_transaction`, leaves it in a failed transaction.
pub(crate) async fn recreate(
    server: &mut ServerConn,
    replay: &[String],
    prepared: &[Vec<u8>],
    lost_transaction: bool,
) -> Result<(), ConnError> {
    let mut out = BytesMut::new();
    let mut answers = 0;
    for sql in replay {
        frontend::query(sql, &mut out)?;
        answers += 1;
    }
    let mut parses = false;
    for frame in prepared {
        out.extend_from_slice(frame);
        parses = true;
    }
    if parses {
        frontend::sync(&mut out);
        answers += 1;
    }
    if answers > 0 {
        server.write_all(&out).await?;
        if let (Some(e), _) = server.read_until_ready(answers).await? {
            return Err(ConnError::Server(e));
        }
    }
    if lost_transaction {
        // Fails by design: the session stands in a failed transaction.
        let _ = server.simple_query(STAND_IN_FAILED_TRANSACTION).await;
    }
    Ok(())
}
