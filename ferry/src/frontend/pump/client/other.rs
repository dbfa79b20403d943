//! Every other client message goes to the master, as the session state
//! and the commit tracker see it — after the master has parsed the unnamed
//! statement, if the client last parsed that on a replica and now uses it
//! again.

use super::super::reads::{pin, pins};
use super::super::route::Dest;
use super::{ClientSide, Decision};
use crate::frontend::read_cycle;
use ferry_sql::classify::classify;
use ferry_wire::codec::read_cstr;
use ferry_wire::tag::frontend::{FUNCTION_CALL, PARSE, SYNC};

/// A message (`tag`, `body`) the read routing leaves alone.
pub(super) fn decide<'a>(side: &mut ClientSide<'a>, tag: u8, body: &[u8]) -> Decision<'a> {
    let link = side.link;
    {
        let mut r = link.route();
        let reparse = r
            .unnamed_on_replica
            .take_if(|_| read_cycle::uses_unnamed_statement(tag, body));
        if let Some(parse) = reparse {
            if link.follow {
                r.tracker.client_message(PARSE, &parse[5..]);
            }
            // Its ParseComplete comes after the answers owed now.
            let before = r.queue.iter().filter(|d| **d == Dest::Master).count();
            r.swallow_parse_complete = Some(before);
            return Decision::Reparse(parse);
        }
    }
    to_master(side, tag, body);
    Decision::Master
}

/// Records a client message that goes to the master.
pub(super) fn to_master(side: &mut ClientSide<'_>, tag: u8, body: &[u8]) {
    let link = side.link;
    let mut r = link.route();
    r.session.client_message(tag, body);
    r.settle();
    if link.follow {
        r.tracker.client_message(tag, body);
    }
    if tag == PARSE && read_cycle::parses_unnamed(body) {
        r.unnamed_on_replica = None;
    }
    if tag == PARSE && link.routing.is_some() && !r.pinned {
        // Session state made through the extended protocol pins the
        // session as a Query would.
        let sql = read_cstr(body)
            .and_then(|(_, rest)| read_cstr(rest))
            .map_or("", |(s, _)| s);
        if pins(sql, classify(sql)) {
            pin(&mut r, &mut side.replica);
        }
    }
    if matches!(tag, SYNC | FUNCTION_CALL) {
        r.queue.push_back(Dest::Master);
    }
}
