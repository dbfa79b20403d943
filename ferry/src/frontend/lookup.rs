//! `proxy.auth_lookup`: a user not listed in `[[users]]` is looked up on
//! the master (as pgbouncer's `auth_query` does), so that the servers'
//! roles are the list. A role found there that may log in, is no
//! superuser and does not bypass row-level security, and has a SCRAM
//! verifier, is accepted with that verifier, and its sessions log in to
//! the servers with the client's own SCRAM keys (pass-through): Ferry never
//! learns a password. Answers are kept for ten seconds, found or not, so a
//! burst of logins asks the master once.

use super::startup::Credential;
use ferry_cluster::Topology;
use ferry_sql::catalog::LOOKUP_ROLE;
use ferry_wire::scram::Verifier;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::{debug, warn};

/// How long an answer is used again.
const FRESH_FOR: Duration = Duration::from_secs(10);
/// Answers kept at most (older ones are dropped first when full).
const MAX_KEPT: usize = 10_000;

/// Looks users up on the master.
pub struct UserLookup {
    roles: watch::Receiver<Topology>,
    kept: Mutex<HashMap<String, (Instant, Option<Credential>)>>,
    /// One session on the master, by its name, for every lookup: a flood
    /// of logins under new names asks one at a time over one connection
    /// instead of opening one each.
    session: tokio::sync::Mutex<Option<(String, tokio_postgres::Client)>>,
}

impl UserLookup {
    pub fn new(roles: watch::Receiver<Topology>) -> Self {
        Self {
            roles,
            kept: Mutex::new(HashMap::new()),
            session: tokio::sync::Mutex::new(None),
        }
    }

    /// The credential of role `user` on the master, if it may log in
    /// through Ferry.
    pub async fn find(&self, user: &str) -> Option<Credential> {
        if let Some(answer) = self.kept(user) {
            return answer;
        }
        let answer = match self.ask(user).await {
            Ok(answer) => answer,
            Err(e) => {
                warn!(user, error = %e, "could not look the user up on the master");
                return None;
            }
        };
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() >= MAX_KEPT {
            kept.retain(|_, (at, _)| at.elapsed() < FRESH_FOR);
        }
        if kept.len() < MAX_KEPT {
            kept.insert(user.to_string(), (Instant::now(), answer.clone()));
        }
        answer
    }

    fn kept(&self, user: &str) -> Option<Option<Credential>> {
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.get(user)
            .filter(|(at, _)| at.elapsed() < FRESH_FOR)
            .map(|(_, answer)| answer.clone())
    }

    async fn ask(&self, user: &str) -> Result<Option<Credential>, tokio_postgres::Error> {
        let master = self.roles.borrow().master.clone();
        let mut session = self.session.lock().await;
        let current = session
            .as_ref()
            .is_some_and(|(name, c)| *name == master.name && !c.is_closed());
        if !current {
            *session = None;
            let client = master.target.connect_control("ferry auth lookup").await?;
            *session = Some((master.name.clone(), client));
        }
        let Some((_, client)) = session.as_ref() else {
            return Ok(None);
        };
        let row = match client.query_opt(LOOKUP_ROLE, &[&user]).await {
            Ok(row) => row,
            Err(e) => {
                *session = None;
                return Err(e);
            }
        };
        drop(session);
        let Some(row) = row else {
            return Ok(None);
        };
        let (secret, privileged, can_login): (String, bool, bool) =
            (row.get(0), row.get(1), row.get(2));
        if privileged || !can_login {
            debug!(
                user,
                privileged, can_login, "role may not log in through Ferry's lookup"
            );
            return Ok(None);
        }
        match Verifier::parse(&secret) {
            Ok(verifier) => Ok(Some(Credential::passed_through(verifier, user))),
            Err(_) => {
                warn!(
                    user,
                    "the role has no SCRAM verifier: it cannot log in through Ferry's lookup"
                );
                Ok(None)
            }
        }
    }
}
