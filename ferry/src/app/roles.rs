//! The roles client sessions run as, checked on every reachable node at
//! start: a `[[users]]` entry that maps to a superuser (who bypasses
//! row-level security, can run shell commands and switch capture off) is
//! refused unless the operator says `allow_superuser = true`; one that maps
//! to Ferry's own role is refused always (Ferry tells its own sessions from
//! clients' by their role). Roles are per server, as in PostgreSQL: one
//! missing on a node is logged, and that node's sessions fail to log in;
//! so is a node whose verifier differs from the one a pass-through user
//! is configured with.

use super::AppError;
use crate::config::{Config, UserConfig};
use ferry_batcher::install::connect;
use ferry_cluster::Topology;
use ferry_sql::catalog::{ROLE, ROLE_SECRET};
use tracing::warn;

/// Checks every `[[users]]` entry's server role on every node Ferry can
/// reach now.
pub(super) async fn check_roles(cfg: &Config, topo: &Topology) -> Result<(), AppError> {
    for (node, _) in topo.roles() {
        for (i, user) in cfg.users.iter().enumerate() {
            if user.login().user == node.target.user {
                return Err(AppError::Config(format!(
                    "users[{i}]: sessions of \"{}\" would log in as \"{}\", the role Ferry's own \
                     sessions use on node {}; give them a role of their own (server_user)",
                    user.name, node.target.user, node.name
                )));
            }
        }
        let client = match connect(&node.name, &node.target, "ferry roles").await {
            Ok(c) => c,
            Err(e) => {
                warn!(node = %node.name, error = %e, "roles not checked on an unreachable node");
                continue;
            }
        };
        for (i, user) in cfg.users.iter().enumerate() {
            check_role(&client, &node.name, (i, user)).await?;
        }
        // The same session serves the check of the node's room.
        super::capacity::check_room(cfg, &node.name, &client).await;
    }
    Ok(())
}

/// Checks one user's role on one node.
async fn check_role(
    client: &tokio_postgres::Client,
    node: &str,
    (i, user): (usize, &UserConfig),
) -> Result<(), AppError> {
    let role = user.login().user;
    let row = client
        .query_opt(ROLE, &[&role])
        .await
        .map_err(|e| AppError::Config(format!("node {node}: {e}")))?;
    let Some(row) = row else {
        warn!(node, user = %user.name, role,
              "the role does not exist on this node: its sessions cannot log in there \
               (roles are per server: create it on every node)");
        return Ok(());
    };
    let (superuser, can_login, bypass_rls): (bool, bool, bool) =
        (row.get(0), row.get(1), row.get(2));
    if !can_login {
        warn!(node, role, "the role cannot log in (NOLOGIN)");
    }
    if (superuser || bypass_rls) && !user.allow_superuser {
        let what = if superuser {
            "superuser"
        } else {
            "role with BYPASSRLS"
        };
        return Err(AppError::Config(format!(
            "users[{i}]: sessions of \"{}\" would run as \"{role}\", a {what} on node {node}: \
             such a session bypasses row-level security and can switch capture off; map it to an \
             ordinary role (server_user), or set allow_superuser = true",
            user.name
        )));
    }
    if superuser {
        warn!(node, user = %user.name, role, "sessions run as a superuser (allow_superuser = true)");
    }
    if user.passes_through() {
        let secret: String = client
            .query_opt(ROLE_SECRET, &[&role])
            .await
            .map_err(|e| AppError::Config(format!("node {node}: {e}")))?
            .map(|r| r.get(0))
            .unwrap_or_default();
        if secret != user.password {
            warn!(node, user = %user.name, role,
                  "the role's SCRAM verifier on this node differs from users.password: logins \
                   passed through cannot log in there (set the same verifier on every node)");
        }
    }
    Ok(())
}
