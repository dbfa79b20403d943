//! Capture that stays whole: every housekeeping pass asks the master
//! whether its event triggers and a slice of its capture triggers are all
//! there and enabled (see [`ferry_sql::guard::INTACT`]; a sweep over 2,000
//! tables takes eight passes). The event triggers refuse what a
//! client could do; what they cannot see — a superuser disabling or
//! dropping them first — is found here, logged as an error, shown in
//! `/status` and `/health` (503 until a pass finds capture whole again),
//! and repaired: rows written meanwhile were never captured, so the repair
//! stays in `/status` as a reason to run `ferry verify`.

use super::Batcher;
use crate::status::CaptureRepair;
use crate::BatchError;
use ferry_sql::{capture, ddl, guard};
use tracing::{error, info};

impl Batcher {
    /// Checks capture on the master and repairs what is missing.
    pub(super) async fn keep_capture_intact(
        &self,
        control: &tokio_postgres::Client,
    ) -> Result<(), BatchError> {
        let master = &self.cfg.master.name;
        let after: i64 = *self.intact_after.lock().unwrap_or_else(|p| p.into_inner());
        let slice = guard::INTACT_SLICE;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&after, &slice];
        let (found, end) = tokio::join!(
            control.query(guard::INTACT, &params),
            control.query_one(guard::INTACT_SLICE_END, &params),
        );
        let problems: Vec<String> = found
            .map_err(BatchError::pg(master))?
            .iter()
            .map(|r| format!("{}: {}", r.get::<_, String>(0), r.get::<_, String>(1)))
            .collect();
        let end: Option<i64> = end
            .map_err(BatchError::pg(master))?
            .try_get(0)
            .map_err(BatchError::pg(master))?;
        // The next pass checks the next slice, or starts again.
        *self.intact_after.lock().unwrap_or_else(|p| p.into_inner()) = end.unwrap_or(0);
        let was_broken = self
            .status
            .read()
            .map(|s| !s.capture.problems.is_empty())
            .unwrap_or(false);
        if problems.is_empty() {
            if was_broken {
                info!(node = %master, "capture on the master is whole again");
            }
            if let Ok(mut st) = self.status.write() {
                st.capture.problems.clear();
            }
            return Ok(());
        }
        error!(node = %master, problems = %problems.join("; "),
            "capture on the master is not intact: rows written meanwhile did not reach the replicas; \
             repairing it (then run `ferry verify`)");
        if problems
            .iter()
            .any(|p| p.starts_with("event trigger missing"))
        {
            let script = format!("{}; {}{}", capture::QUIET, ddl::INSTALL, guard::install());
            control
                .batch_execute(&script)
                .await
                .map_err(BatchError::pg(master))?;
        }
        control
            .batch_execute(guard::REPAIR)
            .await
            .map_err(BatchError::pg(master))?;
        let at: String = control
            .query_one(guard::NOW, &[])
            .await
            .map_err(BatchError::pg(master))?
            .get(0);
        if let Ok(mut st) = self.status.write() {
            st.capture.last_repair = Some(CaptureRepair {
                at,
                problems: problems.clone(),
            });
            st.capture.problems = problems;
        }
        Ok(())
    }
}
