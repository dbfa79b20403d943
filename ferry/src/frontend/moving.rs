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
//!   first with 40001, see [`super::pump`]) until it rolls back.
//! - Settings, prepared statements and listens are replayed in the order
//!   they were made ([`super::session_state`]).
//!
//! [`move_session`] takes a session to the master there is now (waiting
//! for one as [`super::hold`] does); [`answer_held_commit`] answers a sync
//! commit that was held when its master was lost.

use super::client_stream::ClientStream;
use super::fatal;
use super::hold;
use super::pump::{Route, LOST_TRANSACTION};
use super::session_state::Loss;
use super::shared::Shared;
use bytes::{Buf, BytesMut};
use ferry_cluster::Node;
use ferry_sql::session_effect::STAND_IN_FAILED_TRANSACTION;
use ferry_wire::tag::frontend::SYNC;
use ferry_wire::{backend, ConnError, FrameScanner, ServerConn, Step};
use ferry_wire::{Login, TransactionStatus};
use postgres_protocol::message::frontend;
use std::sync::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{info, warn};

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
    client: &mut ClientStream,
    cbuf: &mut BytesMut,
    loss: Loss,
    max: usize,
) -> std::io::Result<()> {
    let (code, message, status) = if loss.commit_in_flight {
        ("08007", COMMIT_UNKNOWN, TransactionStatus::Idle)
    } else if loss.in_transaction {
        ("40001", LOST_TRANSACTION, TransactionStatus::Failed)
    } else {
        ("08007", OUTCOME_UNKNOWN, TransactionStatus::Idle)
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
    client: &mut ClientStream,
    cbuf: &mut BytesMut,
    max: usize,
) -> std::io::Result<()> {
    let mut scanner = FrameScanner::default();
    loop {
        let mut at = 0;
        loop {
            match scanner
                .step(&cbuf[at..], max, |t| t == SYNC)
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
/// Answers a commit that completed on master `old` and was held for the
/// sync replicas when that master was lost, once the session stands on
/// `new`: committed if `new` holds it — the same node back (after a crash
/// PostgreSQL recovers its commits), or a replica that had applied it —
/// else SQLSTATE 08007 saying where it stands.
pub(crate) async fn answer_held_commit(
    shared: &Shared,
    client: &mut ClientStream,
    old: &str,
    new: &str,
    need: u64,
) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    let kept = match &shared.sync {
        Some(sync) if new == old => {
            // As if nothing had happened: the replicas confirm it as they
            // would have (or the configured fallback answers).
            sync.wait_for(need).await;
            true
        }
        Some(sync) => sync.has_reached(new, need),
        None => false,
    };
    if kept {
        info!(node = %new, "a commit held when the master was lost is on the new master; acknowledged");
    } else {
        warn!(lost = %old, node = %new, "a commit held when the master was lost is not on the new master; \
            answered with 08007");
        backend::error_response(
            &mut out,
            "ERROR",
            "08007",
            &format!(
                "the master {old} was lost after this COMMIT completed there and before a replica \
                 confirmed it: the new master {new} does not have it, so it is not part of the \
                 cluster's data; its outcome on {old} is unknown (if {old} kept it, `ferry resync \
                 {old}` moves it into that node's ferry.quarantine)"
            ),
        );
    }
    backend::ready_for_query(&mut out, TransactionStatus::Idle);
    client.write_all(&out).await
}

/// Connects a session whose master was lost to the master there is now
/// (waiting for one as a new session would) and recreates its state
/// there; on failure tells the client why and returns None.
pub(crate) async fn move_session(
    shared: &Shared,
    (params, login): (&[(String, String)], &Login),
    client: &mut ClientStream,
    route: &Mutex<Route>,
) -> Option<(Node, ServerConn)> {
    let (master, mut server) = hold::master(shared, params, login, client).await?;
    let recreated = {
        let (state, lost) = {
            let r = route.lock().unwrap_or_else(|p| p.into_inner());
            // The replay runs without the lock; the state does not change
            // while the session is between servers.
            (
                (
                    r.session.replay_statements().to_vec(),
                    r.session
                        .prepared_statements()
                        .map(<[u8]>::to_vec)
                        .collect::<Vec<_>>(),
                ),
                r.lost_transaction,
            )
        };
        recreate(&mut server, &state.0, &state.1, lost).await
    };
    if let Err(e) = recreated {
        warn!(node = %master.name, error = %e, "could not recreate a moved session");
        fatal(
            client,
            "08006",
            &format!(
                "the session could not be recreated on the new master {}: {e}; reconnect",
                master.name
            ),
        )
        .await;
        return None;
    }
    route.lock().unwrap_or_else(|p| p.into_inner()).restart();
    info!(node = %master.name, "session moved");
    Some((master, server))
}
