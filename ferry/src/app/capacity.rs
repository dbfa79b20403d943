//! Room on each node for the client sessions `proxy.max_client_conn`
//! allows. Each client session holds one server session on the master
//! (and one on a replica when its reads go there), as its own, ordinary
//! role: those fit in `max_connections - superuser_reserved_connections`,
//! and the reserved slots stay for Ferry's own sessions (superuser) and a
//! DBA. A limit larger than that room is logged at start: the clients
//! beyond it would get 53300 from the server rather than from Ferry.

use crate::config::Config;
use ferry_batcher::install::connect;
use ferry_cluster::Topology;
use ferry_sql::catalog::CONNECTION_ROOM;
use tracing::warn;

/// Sessions Ferry itself may hold on a node beside the clients' (control,
/// cut, apply, health checks, a resync): kept free of client sessions.
const FERRYS_OWN: i32 = 10;

/// Warns about each reachable node without room for the client limit.
pub(super) async fn check_room(cfg: &Config, topo: &Topology) {
    let limit = i32::try_from(cfg.proxy.max_client_conn).unwrap_or(i32::MAX);
    for (node, _) in topo.roles() {
        let Ok(client) = connect(&node.name, &node.target, "ferry room").await else {
            continue;
        };
        let Ok(row) = client.query_one(CONNECTION_ROOM, &[]).await else {
            continue;
        };
        let (max, reserved): (i32, i32) = (row.get(0), row.get(1));
        let room = max - reserved - FERRYS_OWN;
        if limit > room {
            warn!(node = %node.name, max_connections = max, superuser_reserved_connections = reserved,
                max_client_conn = limit,
                "proxy.max_client_conn is larger than this node's room for client sessions ({room}, \
                 keeping {FERRYS_OWN} for Ferry's own): clients beyond it get 53300 from the server; \
                 lower max_client_conn or raise max_connections");
        }
    }
}
