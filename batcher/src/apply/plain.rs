//! A batch without schema changes, to one replica in one flight (see the
//! module [`super`]): the session's prepared statements, the tables' COPY
//! data in their places, repairs and the background check's chunk last.

use super::flight::{run, run_nullable, Flight};
use super::{
    apply_name, copy_name, empty_name, io, truncate_name, Applied, ApplySession, BEGIN, CHECK,
    COMMIT, GUARD, SEQUENCES,
};
use crate::cutter::Batch;
use crate::verify::RepairPart;
use crate::BatchError;
use ferry_sql::apply::Kind;
use ferry_sql::{schema, sequences, verify};
use postgres_protocol::message::frontend;

impl ApplySession {
    /// Ships and applies one batch in one round trip.
    pub async fn apply(
        &mut self,
        origin: &str,
        epoch: i64,
        b: &Batch,
    ) -> Result<Applied, BatchError> {
        if !b.steps.is_empty() {
            return self.apply_steps(origin, epoch, b).await;
        }
        let wanted: Vec<usize> = b
            .parts
            .iter()
            .map(|p| p.table)
            .chain(b.repairs.iter().map(|r| r.table))
            .collect();
        self.make_ready(&wanted).await?;
        let node = self.node.clone();
        // The statements in the order they run, each completing once.
        let mut sent: Vec<&str> = vec![schema::APPLY_BEGIN, schema::BEGIN_APPLY];
        let mut flight = Flight::new();
        let params = [
            origin.to_string(),
            b.from.to_string(),
            b.id.to_string(),
            b.snap.clone(),
            epoch.to_string(),
        ];
        run(BEGIN, &[], flight.out()).map_err(io(&node))?;
        run(GUARD, &params, flight.out()).map_err(io(&node))?;
        for part in &b.parts {
            run(&copy_name(part.table), &[], flight.out()).map_err(io(&node))?;
            sent.push(
                self.tables
                    .get(part.table)
                    .and_then(Option::as_ref)
                    .map_or("COPY", |t| t.copy.as_str()),
            );
            flight.copy(&part.data).map_err(io(&node))?;
        }
        for part in &b.parts {
            for (j, (kind, sql)) in self
                .tables
                .get(part.table)
                .and_then(Option::as_ref)
                .into_iter()
                .flat_map(|t| t.apply.iter())
                .enumerate()
            {
                if kind.has_work(&part.ops) {
                    run(&apply_name(part.table, j), &[], flight.out()).map_err(io(&node))?;
                    sent.push(sql);
                }
            }
        }
        // The batch tables are emptied in the transaction that filled them.
        for part in &b.parts {
            let truncate = self
                .emptying
                .get_mut(part.table)
                .is_some_and(|e| e.truncate_after(part.ops.rows()));
            if truncate {
                run(&truncate_name(part.table), &[], flight.out()).map_err(io(&node))?;
                sent.push("TRUNCATE (batch table)");
            } else {
                run(&empty_name(part.table), &[], flight.out()).map_err(io(&node))?;
                sent.push("DELETE (batch table)");
            }
        }
        if let Some(params) = sequence_params(b) {
            run(SEQUENCES, &params, flight.out()).map_err(io(&node))?;
            sent.push(sequences::ADVANCE);
        }
        for repair in &b.repairs {
            self.rewrite_range(repair, &mut flight, &mut sent)
                .map_err(io(&node))?;
        }
        for check in &b.checks {
            let params = [
                Some(b.id.to_string()),
                Some(check.table.quoted()),
                check.after.clone(),
                check.through.clone(),
                Some(check.rows.to_string()),
                Some(check.sum.clone()),
            ];
            run_nullable(CHECK, &params, flight.out()).map_err(io(&node))?;
            sent.push(verify::CHECK_ON_REPLICA);
        }
        run(COMMIT, &[], flight.out()).map_err(io(&node))?;
        sent.push(schema::APPLY_COMMIT);
        frontend::sync(flight.out());
        let sent: Vec<String> = sent.into_iter().map(str::to_string).collect();
        for repair in &b.repairs {
            if let Some(e) = self.emptying.get_mut(repair.table) {
                e.truncated();
            }
        }
        self.fly(b, flight, &sent).await
    }

    /// Adds to a batch's flight the statements that rewrite a key range with
    /// the master's rows (`ferry repair`): the range's rows go, the
    /// master's come in through the table's batch table.
    fn rewrite_range<'a, 'b>(
        &'a self,
        repair: &'b RepairPart,
        flight: &mut Flight<'b>,
        sent: &mut Vec<&'a str>,
    ) -> Result<(), std::io::Error> {
        let t = repair.table;
        let (Some(shape), Some(sql)) = (self.shapes.get(t), self.sql(t)) else {
            return Ok(());
        };
        let (copy, statements) = (&sql.copy, &sql.apply);
        frontend::parse("", &verify::repair_delete(shape), [], flight.out())?;
        run_nullable(
            "",
            &[repair.after.clone(), repair.through.clone()],
            flight.out(),
        )?;
        sent.push("DELETE (the repaired range)");
        run(&copy_name(t), &[], flight.out())?;
        sent.push(copy);
        flight.copy(&repair.data)?;
        if let Some(j) = statements.iter().position(|(k, _)| *k == Kind::Upsert) {
            run(&apply_name(t, j), &[], flight.out())?;
            sent.push(&statements[j].1);
        }
        run(&truncate_name(t), &[], flight.out())?;
        sent.push("TRUNCATE (batch table)");
        Ok(())
    }
}

/// The parameters of [`sequences::ADVANCE`] for a batch's sequence
/// positions; None when it carries none.
pub(super) fn sequence_params(b: &Batch) -> Option<[String; 2]> {
    if b.sequences.is_empty() {
        return None;
    }
    let names: Vec<&str> = b.sequences.iter().map(|(n, _)| n.as_str()).collect();
    let positions: Vec<Option<i64>> = b.sequences.iter().map(|(_, p)| *p).collect();
    Some([
        sequences::array_literal(&names),
        sequences::positions_literal(&positions),
    ])
}
