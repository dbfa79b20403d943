//! A Parse, with reads routed: only a read of the unnamed statement,
//! parsed while the session is idle, is looked at further — its cycle
//! (Parse … Sync) waits until it is all here and may go to the replica.
//! Anything else goes on to the master at once.

use super::super::reads::{choose, pins};
use super::{other, ClientSide, Decision, Routed};
use crate::frontend::read_cycle::{self, Cycle};
use ferry_sql::classify::{classify, Kind};
use ferry_wire::codec::read_cstr;
use ferry_wire::tag::frontend::PARSE;

/// `buf` starts with the Parse (`len` bytes) and holds what follows it.
pub(super) fn decide<'a>(side: &mut ClientSide<'a>, buf: &[u8], len: usize) -> Decision<'a> {
    let link = side.link;
    let unnamed_read = read_cstr(&buf[5..len])
        .filter(|(name, _)| name.is_empty())
        .and_then(|(_, rest)| read_cstr(rest))
        .is_some_and(|(sql, _)| {
            let r = link.route();
            r.idle() && !r.pinned && classify(sql) == Kind::Read
        });
    let cycle = if unnamed_read {
        read_cycle::at_parse(buf)
    } else {
        Cycle::Other
    };
    let chosen = match cycle {
        // The rest is on its way, and the client waits for no answer
        // before it is sent.
        Cycle::Incomplete => return Decision::Incomplete,
        Cycle::Unnamed {
            len: whole,
            parse,
            sql,
        } => {
            // A read, as the look above found.
            let mut r = link.route();
            let chosen = if pins(sql, Kind::Read) {
                None
            } else {
                choose(
                    &mut r,
                    link.routing,
                    Kind::Read,
                    side.seed,
                    &mut side.replica,
                )
            };
            chosen.map(|c| (c, whole, buf[..parse].to_vec()))
        }
        Cycle::Other => None,
    };
    match chosen {
        Some(((routing, slot), whole, parse)) => {
            let mut r = link.route();
            for (tag, body) in read_cycle::frames(&buf[..whole]) {
                r.session.client_message(tag, body);
            }
            r.settle();
            r.unnamed_on_replica = Some(parse.into());
            Decision::Replica(Routed {
                routing,
                slot,
                len: whole,
                named: None,
            })
        }
        None => {
            other::to_master(side, PARSE, &buf[5..len]);
            Decision::Master
        }
    }
}
