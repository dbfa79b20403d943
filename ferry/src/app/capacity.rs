//! Room on each node for the client sessions `proxy.max_client_conn`
//! allows. Each client session holds one server session on the master
//! (and one on a replica when its reads go there), as its own, ordinary
//! role: those fit in `max_connections - superuser_reserved_connections`,
//! and the reserved slots stay for Ferry's own sessions (superuser) and a
//! DBA. A limit larger than that room is logged at start: the clients
//! beyond it would get 53300 from the server rather than from Ferry.

use crate::config::Config;
use ferry_sql::catalog::CONNECTION_ROOM;
use tracing::warn;

/// Sessions Ferry itself may hold on a node beside the clients' (control,
/// cut, apply, health checks, a resync): kept free of client sessions.
const FERRYS_OWN: i32 = 10;

/// Warns when `node` (reached through `client`, the start-up check's
/// session) lacks room for the client limit.
pub(super) async fn check_room(cfg: &Config, node: &str, client: &tokio_postgres::Client) {
    let limit = i32::try_from(cfg.proxy.max_client_conn).unwrap_or(i32::MAX);
    let Ok(row) = client.query_one(CONNECTION_ROOM, &[]).await else {
        return;
    };
    let (max, reserved): (i32, i32) = (row.get(0), row.get(1));
    let room = max - reserved - FERRYS_OWN;
    if limit > room {
        warn!(
            node,
            max_connections = max,
            superuser_reserved_connections = reserved,
            max_client_conn = limit,
            "proxy.max_client_conn is larger than this node's room for client sessions ({room}, \
             keeping {FERRYS_OWN} for Ferry's own): clients beyond it get 53300 from the server; \
             lower max_client_conn or raise max_connections"
        );
    }
}
