//! A Bind that runs, in the unnamed portal, a read the session prepared
//! under a name, while the session is idle: its whole cycle may go to the
//! replica, which parses the statement first if it has not yet.

use super::super::reads::choose;
use super::{other, ClientSide, Decision, Routed};
use crate::frontend::read_cycle::{self, Bound};
use ferry_sql::classify::Kind;
use ferry_wire::tag::frontend::BIND;

/// `buf` starts with the Bind (`len` bytes) and holds what follows it.
pub(super) fn decide<'a>(side: &mut ClientSide<'a>, buf: &[u8], len: usize) -> Decision<'a> {
    let bound = match read_cycle::at_bind(buf) {
        Bound::Incomplete => return Decision::Incomplete,
        Bound::Named {
            len: whole,
            statement,
        } => Some((whole, statement.to_string())),
        Bound::Other => None,
    };
    let link = side.link;
    let (seed, replica) = (side.seed, &mut side.replica);
    let chosen = bound.and_then(|(whole, statement)| {
        let mut r = link.route();
        let frame = r.session.prepared(&statement).cloned()?;
        let (routing, slot) = choose(&mut r, link.routing, Kind::Read, seed, replica)?;
        for (tag, body) in read_cycle::frames(&buf[..whole]) {
            r.session.client_message(tag, body);
        }
        r.settle();
        Some(Routed {
            routing,
            slot,
            len: whole,
            named: Some((statement, frame)),
        })
    });
    match chosen {
        Some(routed) => Decision::Replica(routed),
        None => {
            other::to_master(side, BIND, &buf[5..len]);
            Decision::Master
        }
    }
}
