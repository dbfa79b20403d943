//! Suspending replicas at a chosen instant, and resuming them.
//!
//! A suspension is scheduled for an instant `at` (at least `min_lead`
//! ahead). At `at` the batcher cuts at once — that cut's snapshot is the
//! replica's consistent point — ships the batch, and from then on leaves the
//! replica out of every cut: it is `suspended`, consistent as of `at`. The
//! master's outbox keeps every later change (clean-up never passes a
//! replica's recorded position). `resume` puts the replica back: its next
//! batch is a catch-up from its position, netted per key (the current image
//! of each changed key or its deletion), after which it ships normally.
//!
//! The schedule and the states live in `ferry.suspensions` on the master, so
//! they survive a restart of Ferry. This module holds the in-memory side:
//! the requests from the admin endpoint and their answers, and the states.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::io::AsyncReadExt;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The batcher's answer to a suspend, cancel or resume.
pub type Reply = oneshot::Sender<Result<Answer, SuspendError>>;

/// What a suspend, cancel or resume did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// The replicas of a suspension scheduled (one consistency group).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<String>,
    /// The replica a cancel or resume is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    pub state: Answered,
    /// The suspension's instant, as PostgreSQL normalised it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
}

/// Where a suspension stands after the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Answered {
    Scheduled,
    Cancelled,
    Resuming,
}

impl Answered {
    /// The word the answer carries.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Cancelled => "cancelled",
            Self::Resuming => "resuming",
        }
    }
}

/// What a `ferry repair` rewrote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repaired {
    pub replica: String,
    /// The batch that carried the master's rows.
    pub batch: i64,
    pub rows: u64,
    pub ranges: Vec<RepairedRange>,
}

/// One key range a repair rewrote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairedRange {
    pub table: String,
    pub after: Option<String>,
    pub through: Option<String>,
}

/// What the admin endpoint asks of the batcher.
#[derive(Debug)]
pub enum Command {
    /// Suspend these replicas (one consistency group) at `at`.
    Suspend {
        replicas: Vec<String>,
        at: String,
        reply: Reply,
    },
    /// Cancel a scheduled suspension before its instant.
    Cancel { replica: String, reply: Reply },
    /// Return a suspended replica to normal shipping.
    Resume { replica: String, reply: Reply },
    /// Rewrite, on a replica, the key ranges the background check found
    /// different (in one table, or the whole table when none were) with
    /// the master's rows, in the next batch (`ferry repair`).
    Repair {
        replica: String,
        table: Option<String>,
        reply: oneshot::Sender<Result<Repaired, SuspendError>>,
    },
}

/// Why a request was refused; each has its own code and HTTP status.
#[derive(Debug, Error)]
pub enum SuspendError {
    #[error("no replica named {0:?}")]
    UnknownReplica(String),
    #[error(
        "{0:?} is not a time PostgreSQL understands (use RFC 3339, e.g. 2026-11-22T21:00:00Z)"
    )]
    InvalidTime(String),
    #[error("the instant is {lead_ms} ms away; it must be at least suspend.min_lead_ms = {min_ms} ms in the future")]
    TooSoon { lead_ms: i64, min_ms: u64 },
    #[error("replica {0} is already {1}")]
    AlreadySuspended(String, String),
    #[error("replica {0} cannot be suspended now: {1}")]
    ReplicaUnavailable(String, String),
    #[error("replica {0} is not suspended")]
    NotSuspended(String),
    #[error("replica {0} is still catching up after its resume")]
    Resyncing(String),
    #[error("the suspension of {0} is past its instant; resume it instead")]
    TooLate(String),
    #[error("the master is not reachable: {0}")]
    Master(String),
    #[error("no replicated table named {0:?}")]
    UnknownTable(String),
    #[error("nothing to repair on replica {0}: the background check found no difference there (name a table to copy it whole)")]
    NothingToRepair(String),
    #[error("a repair of replica {0} is already under way")]
    RepairRunning(String),
    #[error("the repair of replica {0} failed: {1}")]
    RepairFailed(String, String),
}

impl SuspendError {
    /// A stable code for scripts.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownReplica(_) => "unknown_replica",
            Self::InvalidTime(_) => "invalid_time",
            Self::TooSoon { .. } => "too_soon",
            Self::AlreadySuspended(..) => "already_suspended",
            Self::ReplicaUnavailable(..) => "replica_unavailable",
            Self::NotSuspended(_) => "not_suspended",
            Self::Resyncing(_) => "resyncing",
            Self::TooLate(_) => "too_late",
            Self::Master(_) => "master_unavailable",
            Self::UnknownTable(_) => "unknown_table",
            Self::NothingToRepair(_) => "nothing_to_repair",
            Self::RepairRunning(_) => "repair_running",
            Self::RepairFailed(..) => "repair_failed",
        }
    }

    /// The HTTP status the admin endpoint answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::UnknownReplica(_) | Self::UnknownTable(_) => 404,
            Self::InvalidTime(_) => 400,
            Self::TooSoon { .. } => 422,
            Self::Master(_) => 503,
            _ => 409,
        }
    }
}

/// Where a suspension stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Scheduled,
    Suspending,
    Suspended,
    Failed,
    /// Resumed, receiving what changed meanwhile (in memory only).
    Resyncing,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Scheduled => "scheduled",
            State::Suspending => "suspending",
            State::Suspended => "suspended",
            State::Failed => "failed",
            State::Resyncing => "resyncing",
        }
    }

    pub fn parse(s: &str) -> State {
        match s {
            "scheduled" => State::Scheduled,
            "suspending" => State::Suspending,
            "suspended" => State::Suspended,
            _ => State::Failed,
        }
    }
}

/// The hook run once a replica is suspended and consistent.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HookStatus {
    pub running: bool,
    pub exit_code: Option<i32>,
    /// The last 4 KiB of its standard output and error.
    pub output_tail: String,
}

/// A suspension as `/status` shows it (under the replica).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SuspensionStatus {
    pub state: State,
    pub at: String,
    /// Set once the replica has applied everything up to the cut at `at`.
    pub consistent_as_of: Option<String>,
    /// The batch that brought it there.
    pub batch: Option<i64>,
    /// Changes and distinct keys the master keeps for it meanwhile.
    pub pending_changes: i64,
    pub pending_keys: i64,
    pub hook: Option<HookStatus>,
    pub error: Option<String>,
}

/// One replica's suspension in memory.
#[derive(Debug)]
pub struct Suspension {
    pub grp: i64,
    pub at: String,
    pub due: Instant,
    pub state: State,
    pub batch: Option<i64>,
    pub error: Option<String>,
    pub pending_keys: i64,
    pub hook: Option<Hook>,
    /// Resume requests waiting for the hook to finish.
    pub resume_waiting: Vec<Reply>,
}

impl Suspension {
    pub fn new(grp: i64, at: String, seconds_from_now: f64, state: State) -> Self {
        let due = if seconds_from_now > 0.0 {
            Instant::now() + Duration::from_secs_f64(seconds_from_now)
        } else {
            Instant::now()
        };
        Self {
            grp,
            at,
            due,
            state,
            batch: None,
            error: None,
            pending_keys: 0,
            hook: None,
            resume_waiting: Vec::new(),
        }
    }

    pub fn status(&self, pending_changes: i64) -> SuspensionStatus {
        SuspensionStatus {
            state: self.state,
            at: self.at.clone(),
            consistent_as_of: (self.state == State::Suspended).then(|| self.at.clone()),
            batch: self.batch,
            pending_changes,
            pending_keys: self.pending_keys,
            hook: self.hook.as_ref().map(Hook::status),
            error: self.error.clone(),
        }
    }

    /// Whether the replica is left out of cuts.
    pub fn holds(&self) -> bool {
        self.state == State::Suspended
    }
}

/// The suspensions of every replica, by name.
pub type Suspensions = BTreeMap<String, Suspension>;

/// A running or finished hook.
#[derive(Debug)]
pub struct Hook {
    task: Option<JoinHandle<(Option<i32>, String)>>,
    done: Option<(Option<i32>, String)>,
}

impl Hook {
    /// Starts `sh -c command` with the node, its DSN and the instant in the
    /// environment (`FERRY_NODE`, `FERRY_NODE_DSN`, `FERRY_CONSISTENT_AS_OF`).
    pub fn start(command: &str, node: &str, dsn: &str, at: &str) -> Hook {
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c")
            .arg(command)
            .env("FERRY_NODE", node)
            .env("FERRY_NODE_DSN", dsn)
            .env("FERRY_CONSISTENT_AS_OF", at)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(false);
        let task = tokio::spawn(async move {
            let mut child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) => return (None, format!("could not start the hook: {e}")),
            };
            let mut out = Vec::new();
            let mut err = Vec::new();
            let (mut o, mut e) = (child.stdout.take(), child.stderr.take());
            let read_out = async {
                if let Some(o) = o.as_mut() {
                    let _ = o.read_to_end(&mut out).await;
                }
            };
            let read_err = async {
                if let Some(e) = e.as_mut() {
                    let _ = e.read_to_end(&mut err).await;
                }
            };
            tokio::join!(read_out, read_err);
            let code = child.wait().await.ok().and_then(|s| s.code());
            out.extend_from_slice(&err);
            let start = out.len().saturating_sub(4096);
            (code, String::from_utf8_lossy(&out[start..]).into_owned())
        });
        Hook {
            task: Some(task),
            done: None,
        }
    }

    /// Collects the result if the hook has finished; true while it runs.
    pub async fn poll(&mut self) -> bool {
        if let Some(task) = &self.task {
            if !task.is_finished() {
                return true;
            }
        }
        if let Some(task) = self.task.take() {
            self.done = Some(
                task.await
                    .unwrap_or_else(|e| (None, format!("hook task failed: {e}"))),
            );
        }
        false
    }

    pub fn status(&self) -> HookStatus {
        match &self.done {
            Some((code, tail)) => HookStatus {
                running: false,
                exit_code: *code,
                output_tail: tail.clone(),
            },
            None => HookStatus {
                running: self.task.is_some(),
                exit_code: None,
                output_tail: String::new(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_has_its_own_code() {
        let errors = [
            SuspendError::UnknownReplica("x".into()),
            SuspendError::InvalidTime("x".into()),
            SuspendError::TooSoon {
                lead_ms: 10,
                min_ms: 1000,
            },
            SuspendError::AlreadySuspended("b".into(), "suspended".into()),
            SuspendError::ReplicaUnavailable("b".into(), "down".into()),
            SuspendError::NotSuspended("b".into()),
            SuspendError::Resyncing("b".into()),
            SuspendError::TooLate("b".into()),
            SuspendError::Master("down".into()),
        ];
        let mut codes: Vec<&str> = errors.iter().map(SuspendError::code).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), errors.len());
        assert_eq!(errors[2].http_status(), 422);
        assert!(errors[2].to_string().contains("min_lead_ms"));
    }

    #[tokio::test]
    async fn a_hook_reports_its_exit_status_and_output() {
        let mut hook = Hook::start(
            "echo \"$FERRY_NODE $FERRY_CONSISTENT_AS_OF\"; echo oops >&2; exit 3",
            "b",
            "postgresql://x",
            "T",
        );
        while hook.poll().await {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let s = hook.status();
        assert_eq!(s.exit_code, Some(3));
        assert!(s.output_tail.contains("b T"), "{}", s.output_tail);
        assert!(s.output_tail.contains("oops"), "{}", s.output_tail);
    }
}
