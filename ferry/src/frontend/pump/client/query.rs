//! A simple Query: a read that arrives while the session is idle may go
//! to the replica; anything else goes to the master. A statement that
//! leaves state in the server session pins the session's reads to the
//! master; `DISCARD ALL` unpins it.

use super::super::reads::{choose, pin, pins};
use super::super::route::Dest;
use super::{ClientSide, Decision, Routed};
use ferry_sql::classify::{classify, Kind};
use ferry_sql::session_effect::discards_all;
use ferry_wire::codec::read_cstr;
use ferry_wire::tag::frontend::QUERY;

/// `body` is the Query's body, `len` the whole message's length.
pub(super) fn decide<'a>(side: &mut ClientSide<'a>, body: &[u8], len: usize) -> Decision<'a> {
    let link = side.link;
    let sql = read_cstr(body).map_or("", |(s, _)| s);
    let mut r = link.route();
    r.session.client_message(QUERY, body);
    r.settle();
    // A Query destroys the unnamed statement, wherever it was parsed.
    r.unnamed_on_replica = None;
    let kind = if link.follow {
        classify(sql)
    } else {
        Kind::Write
    };
    if link.routing.is_some() {
        if discards_all(sql) && r.idle() {
            // What pinned the session is gone once this completes, and the
            // next read cannot go out before it has (nothing may be
            // outstanding).
            r.pinned = false;
        } else if pins(sql, kind) && !r.pinned {
            pin(&mut r, &mut side.replica);
        }
    }
    match choose(&mut r, link.routing, kind, side.seed, &mut side.replica) {
        Some((routing, slot)) => Decision::Replica(Routed {
            routing,
            slot,
            len,
            named: None,
        }),
        None => {
            if link.follow {
                r.tracker.query(kind.may_write());
            }
            r.queue.push_back(Dest::Master);
            Decision::Master
        }
    }
}
