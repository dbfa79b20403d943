//! The batcher's side of suspensions (see [`crate::suspend`]): requests
//! from the admin endpoint, the transitions at the instant and after the
//! cut, hooks, and the record on the master.

use super::{Batcher, Replica};
use crate::cutter::Batch;
use crate::suspend::{
    Answer, Answered, Command, Hook, State, SuspendError, Suspension, Suspensions,
};
use crate::BatchError;
use std::time::Instant;
use tracing::{info, warn};

impl Batcher {
    /// Loads the suspensions recorded on the master (at start, and after a
    /// restart of the session). A schedule whose instant passed while no
    /// batcher ran cannot be honoured: it is marked failed, and so is one
    /// caught half way.
    pub(super) async fn load_suspensions(
        &self,
        control: &tokio_postgres::Client,
        susp: &mut Suspensions,
    ) -> Result<(), BatchError> {
        let node = &self.cfg.master.name;
        let rows = control
            .query(ferry_sql::suspend::LIST, &[])
            .await
            .map_err(BatchError::pg(node))?;
        let mut loaded = Suspensions::new();
        for r in rows {
            let name: String = r.get(0);
            let grp: i64 = r.get(1);
            let at: String = r.get(2);
            let secs: f64 = r.get(3);
            let state = State::parse(&r.get::<_, String>(4));
            let mut s = match susp.remove(&name) {
                // Same suspension as before the restart: keep its hook.
                Some(old) if old.grp == grp => old,
                _ => Suspension::new(grp, at, secs, state),
            };
            s.state = state;
            s.batch = r.get(5);
            s.error = r.get(6);
            let missed = match state {
                State::Scheduled if secs < 0.0 => Some("Ferry was not running at the instant"),
                State::Suspending => Some("Ferry restarted while the replica was being suspended"),
                _ => None,
            };
            if let Some(why) = missed {
                self.fail(control, &name, &mut s, why.to_string()).await?;
            }
            loaded.insert(name, s);
        }
        *susp = loaded;
        Ok(())
    }

    async fn set_state(
        &self,
        control: &tokio_postgres::Client,
        nodes: &[String],
        state: State,
        batch: Option<i64>,
        error: Option<&str>,
    ) -> Result<(), BatchError> {
        control
            .execute(
                ferry_sql::suspend::SET_STATE,
                &[&nodes, &state.as_str(), &batch, &error],
            )
            .await
            .map_err(BatchError::pg(&self.cfg.master.name))?;
        Ok(())
    }

    /// A suspension that cannot go on: logged, recorded, shown.
    async fn fail(
        &self,
        control: &tokio_postgres::Client,
        name: &str,
        s: &mut Suspension,
        why: String,
    ) -> Result<(), BatchError> {
        warn!(node = %name, at = %s.at, "suspension failed: {why}");
        self.set_state(
            control,
            &[name.to_string()],
            State::Failed,
            None,
            Some(&why),
        )
        .await?;
        s.state = State::Failed;
        s.error = Some(why);
        Ok(())
    }

    /// Scheduled suspensions whose instant has come become `suspending`
    /// (this tick's cut is their snapshot); a replica that cannot receive
    /// that cut now fails its suspension.
    pub(super) async fn start_due(
        &self,
        control: &tokio_postgres::Client,
        replicas: &[Replica],
        susp: &mut Suspensions,
    ) -> Result<(), BatchError> {
        let now = Instant::now();
        let due: Vec<String> = susp
            .iter()
            .filter(|(_, s)| s.state == State::Scheduled && s.due <= now)
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            let reachable = replicas
                .iter()
                .any(|r| r.node.name == name && r.session.is_some());
            let Some(s) = susp.get_mut(&name) else {
                continue;
            };
            if reachable {
                info!(node = %name, at = %s.at, "suspending: cutting at the requested instant");
                self.set_state(
                    control,
                    std::slice::from_ref(&name),
                    State::Suspending,
                    None,
                    None,
                )
                .await?;
                s.state = State::Suspending;
            } else {
                let why = "the replica was not reachable at the instant";
                self.fail(control, &name, s, why.to_string()).await?;
            }
        }
        Ok(())
    }

    /// After a tick: replicas being suspended that now hold everything up
    /// to the tick's cut are suspended (consistent as of their instant), and
    /// their hook starts; one that did not get there fails its suspension.
    pub(super) async fn finish_suspending(
        &self,
        control: &tokio_postgres::Client,
        replicas: &[Replica],
        susp: &mut Suspensions,
        batches: &[Batch],
    ) -> Result<(), BatchError> {
        let cut_id = batches.first().map(|b| b.id);
        for r in replicas {
            let name = &r.node.name;
            let Some(s) = susp.get_mut(name) else {
                continue;
            };
            if s.state == State::Resyncing {
                // Caught up: this tick's cut brought it level (or nothing
                // had changed for it).
                let position = r.position.as_ref().map(|p| p.0);
                if r.session.is_some() && (cut_id.is_none() || position == cut_id) {
                    info!(node = %name, batch = ?position, "resumed replica caught up; shipping normally");
                    susp.remove(name);
                }
                continue;
            }
            if s.state != State::Suspending {
                continue;
            }
            let position = r.position.as_ref().map(|p| p.0);
            let arrived = r.session.is_some() && (cut_id.is_none() || position == cut_id);
            if arrived {
                info!(node = %name, at = %s.at, batch = ?position, "replica suspended, consistent as of the instant");
                self.set_state(
                    control,
                    std::slice::from_ref(name),
                    State::Suspended,
                    position,
                    None,
                )
                .await?;
                s.state = State::Suspended;
                s.batch = position;
                if let Some(hook) = &self.cfg.suspend.hook {
                    let dsn = self.cfg.suspend.dsns.get(name).cloned().unwrap_or_default();
                    s.hook = Some(Hook::start(hook, name, &dsn, &s.at));
                }
            } else {
                let why = format!(
                    "the replica did not apply the cut at the instant: {}",
                    r.last_error.as_deref().unwrap_or("disconnected")
                );
                self.fail(control, name, s, why.to_string()).await?;
            }
        }
        Ok(())
    }

    /// Collects finished hooks; resumes that waited for one go ahead.
    pub(super) async fn poll_hooks(
        &self,
        control: &tokio_postgres::Client,
        susp: &mut Suspensions,
    ) -> Result<(), BatchError> {
        let mut ready = Vec::new();
        for (name, s) in susp.iter_mut() {
            if let Some(hook) = s.hook.as_mut() {
                if !hook.poll().await && !s.resume_waiting.is_empty() {
                    ready.push(name.clone());
                }
            }
        }
        for name in ready {
            let answer = self.resume_now(control, &name).await;
            if let Some(s) = susp.get_mut(&name) {
                if answer.is_ok() {
                    s.state = State::Resyncing;
                }
                for reply in s.resume_waiting.drain(..) {
                    let _ = reply.send(match &answer {
                        Ok(v) => Ok(v.clone()),
                        Err(e) => Err(SuspendError::Master(e.to_string())),
                    });
                }
            }
        }
        Ok(())
    }

    async fn resume_now(
        &self,
        control: &tokio_postgres::Client,
        name: &str,
    ) -> Result<Answer, BatchError> {
        control
            .execute(ferry_sql::suspend::REMOVE, &[&name])
            .await
            .map_err(BatchError::pg(&self.cfg.master.name))?;
        info!(node = %name, "resuming: the replica catches up with what changed, netted per key");
        Ok(Answer {
            replicas: Vec::new(),
            replica: Some(name.to_string()),
            state: Answered::Resuming,
            at: None,
        })
    }

    /// Answers a request from the admin endpoint.
    pub(super) async fn handle(
        &self,
        cmd: Command,
        control: &tokio_postgres::Client,
        replicas: &[Replica],
        susp: &mut Suspensions,
    ) {
        let known = |n: &str| replicas.iter().any(|r| r.node.name == n);
        match cmd {
            Command::Repair {
                replica,
                table,
                reply,
            } => self.request_repair(replica, table, reply, replicas),
            Command::Suspend {
                replicas: names,
                at,
                reply,
            } => {
                let answer = self.schedule(control, replicas, susp, names, at).await;
                let _ = reply.send(answer);
            }
            Command::Cancel { replica, reply } => {
                let answer = match susp.get(&replica) {
                    _ if !known(&replica) => Err(SuspendError::UnknownReplica(replica)),
                    Some(s) if s.state == State::Scheduled && s.due > Instant::now() => {
                        match control
                            .execute(ferry_sql::suspend::REMOVE, &[&replica])
                            .await
                        {
                            Ok(_) => {
                                info!(node = %replica, "scheduled suspension cancelled");
                                susp.remove(&replica);
                                Ok(Answer {
                                    replicas: Vec::new(),
                                    replica: Some(replica),
                                    state: Answered::Cancelled,
                                    at: None,
                                })
                            }
                            Err(e) => Err(SuspendError::Master(e.to_string())),
                        }
                    }
                    Some(s) if s.state != State::Failed => Err(SuspendError::TooLate(replica)),
                    _ => Err(SuspendError::NotSuspended(replica)),
                };
                let _ = reply.send(answer);
            }
            Command::Resume { replica, reply } => {
                if !known(&replica) {
                    let _ = reply.send(Err(SuspendError::UnknownReplica(replica)));
                    return;
                }
                match susp.get_mut(&replica) {
                    Some(s) if matches!(s.state, State::Suspended | State::Failed) => {
                        if s.hook.as_ref().is_some_and(|h| h.status().running) {
                            info!(node = %replica, "resume waits for the suspend hook to finish");
                            s.resume_waiting.push(reply);
                            return;
                        }
                        let answer = self
                            .resume_now(control, &replica)
                            .await
                            .map_err(|e| SuspendError::Master(e.to_string()));
                        if answer.is_ok() {
                            s.state = State::Resyncing;
                        }
                        let _ = reply.send(answer);
                    }
                    _ => {
                        let _ = reply.send(Err(SuspendError::NotSuspended(replica)));
                    }
                }
            }
        }
    }

    /// Validates and records a suspension request (one consistency group).
    async fn schedule(
        &self,
        control: &tokio_postgres::Client,
        replicas: &[Replica],
        susp: &mut Suspensions,
        names: Vec<String>,
        at: String,
    ) -> Result<Answer, SuspendError> {
        if names.is_empty() {
            return Err(SuspendError::UnknownReplica(String::new()));
        }
        for name in &names {
            let Some(r) = replicas.iter().find(|r| &r.node.name == name) else {
                return Err(SuspendError::UnknownReplica(name.clone()));
            };
            if susp.get(name).is_some_and(|s| s.state == State::Resyncing) {
                return Err(SuspendError::Resyncing(name.clone()));
            }
            if let Some(s) = susp.get(name).filter(|s| s.state != State::Failed) {
                return Err(SuspendError::AlreadySuspended(
                    name.clone(),
                    s.state.as_str().into(),
                ));
            }
            // A replica that is failing (a batch that does not apply, or a
            // server that refuses connections) cannot reach a consistent
            // point; one merely (re)connecting can.
            let failing = r.failed.is_some() || (r.session.is_none() && r.last_error.is_some());
            if failing {
                return Err(SuspendError::ReplicaUnavailable(
                    name.clone(),
                    r.last_error
                        .clone()
                        .unwrap_or_else(|| "it is failing".into()),
                ));
            }
        }
        let row = control
            .query_one(ferry_sql::suspend::PARSE_TIME, &[&at])
            .await
            .map_err(|e| match e.code() {
                Some(c) if c.code().starts_with("22") => SuspendError::InvalidTime(at.clone()),
                _ => SuspendError::Master(e.to_string()),
            })?;
        let normalised: String = row.get(0);
        let secs: f64 = row.get(1);
        let min = self.cfg.suspend.min_lead;
        if secs < min.as_secs_f64() {
            return Err(SuspendError::TooSoon {
                lead_ms: (secs * 1000.0) as i64,
                min_ms: min.as_millis() as u64,
            });
        }
        let grp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        let master = |e: tokio_postgres::Error| SuspendError::Master(e.to_string());
        control
            .execute(ferry_sql::suspend::REMOVE_MANY, &[&names])
            .await
            .map_err(master)?;
        control
            .execute(ferry_sql::suspend::SCHEDULE, &[&names, &grp, &normalised])
            .await
            .map_err(master)?;
        for name in &names {
            susp.insert(
                name.clone(),
                Suspension::new(grp, normalised.clone(), secs, State::Scheduled),
            );
        }
        info!(replicas = ?names, at = %normalised, "suspension scheduled");
        Ok(Answer {
            replicas: names,
            replica: None,
            state: Answered::Scheduled,
            at: Some(normalised),
        })
    }
}
