//! The background check's bookkeeping: which chunk of which table the next
//! cut compares, at what pace, and what the replicas found (how a chunk is
//! compared, at the same point of the batch stream on both sides, is in
//! [`ferry_sql::verify`]).
//!
//! A pass walks every replicated table in key order, `chunk_rows` rows at
//! a time; chunks are spaced so that a pass takes about `interval` (never
//! more than one per cut). A cut's chunk spans several tables when they
//! are small enough to fit together (up to [`PACKED_TABLES`]): a pass over
//! 2,000 mostly empty tables costs about 2,000 / 64 cuts, not 2,000. A key range in which a replica's rows differ
//! from the master's is kept as divergent for that replica until a later
//! pass finds that table equal on it from its first chunk to its last, or
//! `ferry repair` rewrote the table there. Pure: the batcher runs the
//! queries and feeds the answers in.

use ferry_sql::TableName;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// `[verify]` settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifyConfig {
    /// About how long a pass over every table takes; zero turns the check
    /// off.
    pub interval: Duration,
    /// Rows per chunk.
    pub chunk_rows: i64,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(300),
            chunk_rows: 5000,
        }
    }
}

/// Tables a cut's chunk may span at most.
pub const PACKED_TABLES: usize = 64;

/// What the next cut reads on the master, per table of its chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkRequest {
    pub table: TableName,
    /// The key (JSON) the chunk starts after; None for the table's start.
    pub after: Option<String>,
    pub limit: i64,
}

/// A chunk as the master read it at a cut; the batch carries it and each
/// replica compares the same range after the batch's rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkCheck {
    pub table: TableName,
    pub after: Option<String>,
    /// The chunk's last key (JSON); None when it reaches the table's end
    /// (the replica then counts every row after `after`).
    pub through: Option<String>,
    pub rows: i64,
    /// The master's checksum (numeric text).
    pub sum: String,
}

/// A key range `ferry repair` rewrites on a replica with the master's rows
/// (both bounds None: the whole table).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepairRange {
    pub table: TableName,
    pub after: Option<String>,
    pub through: Option<String>,
}

/// A repair range as a batch carries it: the master's rows of the range at
/// the batch's snapshot, in the table's batch-table layout.
#[derive(Clone, Debug)]
pub struct RepairPart {
    /// Index into the batcher's table shapes.
    pub table: usize,
    pub after: Option<String>,
    pub through: Option<String>,
    pub rows: u64,
    pub data: crate::payload::Payload,
}

/// A replica's figures for a chunk, beside the master's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckResult {
    pub batch: i64,
    /// The table, as the batch named it (quoted).
    pub table: String,
    pub after: Option<String>,
    pub through: Option<String>,
    pub master_rows: i64,
    pub master_sum: String,
    pub rows: i64,
    pub sum: String,
}

impl CheckResult {
    pub fn differs(&self) -> bool {
        self.rows != self.master_rows || self.sum != self.master_sum
    }
}

/// A key range in which a replica differs from the master.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Divergence {
    pub table: String,
    /// The range's bounds as JSON keys (`after` exclusive, `through`
    /// inclusive; None: the table's start or end).
    pub after: Option<String>,
    pub through: Option<String>,
    pub master_rows: i64,
    pub replica_rows: i64,
    /// The batch after which the difference was found.
    pub batch: i64,
}

/// What `/status` shows of the check.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct VerifyStatus {
    pub enabled: bool,
    pub interval_seconds: u64,
    /// Passes over every table completed since Ferry started.
    pub passes: u64,
    pub last_pass_seconds: Option<f64>,
    /// Chunks compared, and the master rows in them.
    pub chunks: u64,
    pub rows: u64,
    /// Where the current pass stands.
    pub table: Option<String>,
}

/// One replica's walk through a table in the current pass.
#[derive(Clone, Debug, Default)]
struct Walk {
    /// The last chunk's end it compared (None: at the table's start).
    at: Option<Option<String>>,
    dirty: bool,
}

/// The check's state; kept across batcher sessions.
#[derive(Debug)]
pub struct Verifier {
    cfg: VerifyConfig,
    tables: Vec<TableName>,
    /// The table the pass is in, and the key its next chunk starts after.
    at: usize,
    after: Option<String>,
    pass_started: Option<Instant>,
    /// Earliest time of the next chunk.
    next_at: Instant,
    /// Rows the pass is expected to cover, and has covered.
    estimate: i64,
    pass_rows: i64,
    /// Per table, about how many rows it holds (read at the pass's start).
    estimates: Vec<i64>,
    /// Per replica, the ranges where it differs.
    divergent: BTreeMap<String, Vec<Divergence>>,
    /// Per (replica, table): its walk through the table in this pass.
    walks: BTreeMap<(String, TableName), Walk>,
    status: VerifyStatus,
}

impl Verifier {
    pub fn new(cfg: VerifyConfig, now: Instant) -> Self {
        Self {
            cfg,
            tables: Vec::new(),
            at: 0,
            after: None,
            pass_started: None,
            next_at: now,
            estimate: 0,
            pass_rows: 0,
            estimates: Vec::new(),
            divergent: BTreeMap::new(),
            walks: BTreeMap::new(),
            status: VerifyStatus {
                enabled: !cfg.interval.is_zero(),
                interval_seconds: cfg.interval.as_secs(),
                ..VerifyStatus::default()
            },
        }
    }

    /// The replicated tables (a new batcher session, or a schema change):
    /// the pass goes on where it stood if its table is still there.
    pub fn set_tables(&mut self, tables: Vec<TableName>) {
        let current = self.tables.get(self.at).cloned();
        self.tables = tables;
        match current.and_then(|t| self.tables.iter().position(|n| *n == t)) {
            Some(i) => self.at = i,
            None => {
                self.at = self.at.min(self.tables.len());
                self.after = None;
            }
        }
        let known: Vec<TableName> = self.tables.clone();
        for ranges in self.divergent.values_mut() {
            ranges.retain(|d| known.iter().any(|t| t.to_string() == d.table));
        }
    }

    /// Whether a chunk is due and it starts a pass (which wants an
    /// estimate of the rows, see [`Self::due`]).
    pub fn starting(&self, now: Instant) -> bool {
        !self.cfg.interval.is_zero()
            && !self.tables.is_empty()
            && now >= self.next_at
            && self.pass_started.is_none()
    }

    /// The chunk the next cut should read, if one is due: the current
    /// table's next rows and, when that finishes the table, the tables
    /// after it that fit in the rest of the chunk. A pass starts when the
    /// previous one's interval has run out; `estimate` then gives each
    /// table's rows (to pack small tables and space the pass's chunks over
    /// the interval). Empty when none is due.
    pub fn due(&mut self, now: Instant, estimate: impl FnOnce() -> Vec<i64>) -> Vec<ChunkRequest> {
        if self.cfg.interval.is_zero() || self.tables.is_empty() || now < self.next_at {
            return Vec::new();
        }
        if self.pass_started.is_none() {
            self.pass_started = Some(now);
            self.at = 0;
            self.after = None;
            self.estimates = estimate();
            self.estimate = self.estimates.iter().map(|&e| e.max(0)).sum();
            self.pass_rows = 0;
        }
        let Some(table) = self.tables.get(self.at).cloned() else {
            return Vec::new();
        };
        self.status.table = Some(table.to_string());
        let limit = self.cfg.chunk_rows.max(1);
        let mut chunk = vec![ChunkRequest {
            table,
            after: self.after.clone(),
            limit,
        }];
        let rows_of = |i: usize| self.estimates.get(i).copied().unwrap_or(limit).max(0);
        if self.after.is_some() || rows_of(self.at) >= limit {
            return chunk;
        }
        let mut room = limit - rows_of(self.at);
        for i in self.at + 1..self.tables.len() {
            if chunk.len() >= PACKED_TABLES || rows_of(i) >= room {
                break;
            }
            room -= rows_of(i);
            chunk.push(ChunkRequest {
                table: self.tables[i].clone(),
                after: None,
                limit,
            });
        }
        chunk
    }

    /// The master read the chunk and a batch carries it: the pass moves
    /// on past each table the chunk finished, up to the first it did not.
    pub fn sent(&mut self, checks: &[ChunkCheck], now: Instant) {
        let mut pass_done = false;
        for check in checks {
            self.status.chunks += 1;
            self.status.rows += check.rows.max(0) as u64;
            self.pass_rows += check.rows.max(0);
            if self.tables.get(self.at) != Some(&check.table) {
                break;
            }
            if let Some(key) = &check.through {
                self.after = Some(key.clone());
                break;
            }
            self.after = None;
            self.at += 1;
            if self.at >= self.tables.len() {
                pass_done = true;
                break;
            }
        }
        self.next_at = now + self.spacing(now);
        if pass_done {
            self.status.passes += 1;
            self.status.table = None;
            if let Some(started) = self.pass_started.take() {
                self.status.last_pass_seconds = Some(now.duration_since(started).as_secs_f64());
                self.next_at = (started + self.cfg.interval).max(now);
            }
        }
    }

    /// The pause before the next chunk: what is left of the interval,
    /// shared among the chunks the pass still expects — its rows left,
    /// a chunk's worth at a time, and its tables left, a packed chunk's
    /// worth at a time (an estimate that proves short doubles).
    fn spacing(&mut self, now: Instant) -> Duration {
        if self.pass_rows > self.estimate {
            self.estimate = self.pass_rows.saturating_mul(2);
        }
        let chunk = self.cfg.chunk_rows.max(1);
        let tables_left = self.tables.len().saturating_sub(self.at) as i64;
        let chunks_left = (self.estimate - self.pass_rows).max(0) / chunk
            + (tables_left + PACKED_TABLES as i64 - 1) / PACKED_TABLES as i64;
        let elapsed = self
            .pass_started
            .map_or(Duration::ZERO, |s| now.duration_since(s));
        let left = self.cfg.interval.saturating_sub(elapsed);
        left / (chunks_left.clamp(1, i64::from(u32::MAX)) as u32)
    }

    /// A replica's figures for the chunk a batch carried; returns the
    /// range when it is a new difference.
    pub fn record(
        &mut self,
        replica: &str,
        check: &ChunkCheck,
        got: &CheckResult,
    ) -> Option<Divergence> {
        let key = (replica.to_string(), check.table.clone());
        let walk = self.walks.entry(key.clone()).or_default();
        if check.after.is_none() {
            *walk = Walk {
                at: Some(None),
                dirty: false,
            };
        }
        // The replica compared every chunk of the table in this pass so
        // far, in order (it may have missed some while it was away).
        let contiguous = walk.at.as_ref() == Some(&check.after);
        walk.at = contiguous.then(|| check.through.clone());
        let mut new = None;
        if got.differs() {
            walk.dirty = true;
            let d = Divergence {
                table: check.table.to_string(),
                after: check.after.clone(),
                through: check.through.clone(),
                master_rows: got.master_rows,
                replica_rows: got.rows,
                batch: got.batch,
            };
            let ranges = self.divergent.entry(replica.to_string()).or_default();
            if !ranges
                .iter()
                .any(|r| r.table == d.table && r.after == d.after && r.through == d.through)
            {
                ranges.push(d.clone());
                new = Some(d);
            }
        } else if contiguous && check.through.is_none() && !walk.dirty {
            self.clear(replica, Some(&check.table));
        }
        new
    }

    /// Forgets a replica's differences (in one table, or all): the table
    /// was rewritten there, or the replica left.
    pub fn clear(&mut self, replica: &str, table: Option<&TableName>) {
        if let Some(ranges) = self.divergent.get_mut(replica) {
            ranges.retain(|d| table.is_some_and(|t| d.table != t.to_string()));
            if ranges.is_empty() {
                self.divergent.remove(replica);
            }
        }
    }

    /// What `ferry repair` rewrites on a replica: the ranges found
    /// different there (in one table, when named), or the whole named
    /// table when none were.
    pub fn repair_ranges(&self, replica: &str, table: Option<&TableName>) -> Vec<RepairRange> {
        let found: Vec<RepairRange> = self
            .divergent(replica)
            .iter()
            .filter(|d| table.is_none_or(|t| d.table == t.to_string()))
            .filter_map(|d| {
                let t = self.tables.iter().find(|t| t.to_string() == d.table)?;
                Some(RepairRange {
                    table: t.clone(),
                    after: d.after.clone(),
                    through: d.through.clone(),
                })
            })
            .collect();
        match table {
            Some(t) if found.is_empty() => vec![RepairRange {
                table: t.clone(),
                after: None,
                through: None,
            }],
            _ => found,
        }
    }

    /// The tables a pass walks.
    pub fn tables(&self) -> &[TableName] {
        &self.tables
    }

    /// The ranges where a replica differs.
    pub fn divergent(&self, replica: &str) -> &[Divergence] {
        self.divergent.get(replica).map_or(&[], Vec::as_slice)
    }

    /// Tables in which a replica differs.
    pub fn divergent_tables(&self, replica: &str) -> Vec<String> {
        let tables: std::collections::BTreeSet<String> = self
            .divergent(replica)
            .iter()
            .map(|d| d.table.clone())
            .collect();
        tables.into_iter().collect()
    }

    pub fn status(&self) -> VerifyStatus {
        self.status.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str) -> TableName {
        TableName::new("public", name)
    }

    fn check(table: &str, after: Option<&str>, through: Option<&str>) -> ChunkCheck {
        ChunkCheck {
            table: t(table),
            after: after.map(str::to_string),
            through: through.map(str::to_string),
            rows: 2,
            sum: "5".into(),
        }
    }

    fn result(c: &ChunkCheck, rows: i64) -> CheckResult {
        CheckResult {
            batch: 1,
            table: c.table.quoted(),
            after: c.after.clone(),
            through: c.through.clone(),
            master_rows: c.rows,
            master_sum: c.sum.clone(),
            rows,
            sum: if rows == c.rows {
                c.sum.clone()
            } else {
                "9".into()
            },
        }
    }

    fn verifier(interval: u64) -> (Verifier, Instant) {
        let now = Instant::now();
        let mut v = Verifier::new(
            VerifyConfig {
                interval: Duration::from_secs(interval),
                chunk_rows: 2,
            },
            now,
        );
        v.set_tables(vec![t("a"), t("b")]);
        (v, now)
    }

    #[test]
    fn a_pass_walks_every_table_in_chunks_spread_over_the_interval() {
        let (mut v, now) = verifier(60);
        let at = |s: u64| now + Duration::from_secs(s);
        // 4 rows in two tables (3 and 1), 2 a chunk: the rest of the
        // interval is shared among the chunks still expected (one more
        // for a's rows, one for the tables left: 30 s each).
        let r = v.due(now, || vec![3, 1]);
        assert_eq!(r.len(), 1, "a does not fit in a chunk with b: {r:?}");
        assert_eq!(
            (r[0].table.clone(), r[0].after.clone(), r[0].limit),
            (t("a"), None, 2)
        );
        v.sent(&[check("a", None, Some("{\"id\": 2}"))], now);
        assert!(v.due(at(1), Vec::new).is_empty());
        let r = v.due(at(30), Vec::new);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].after.as_deref(), Some("{\"id\": 2}"));
        v.sent(&[check("a", Some("{\"id\": 2}"), None)], at(30));
        // One chunk expected in the 30 s left.
        assert!(v.due(at(59), Vec::new).is_empty());
        let r = v.due(at(60), Vec::new);
        assert_eq!((r[0].table.clone(), r[0].after.clone()), (t("b"), None));
        v.sent(&[check("b", None, None)], at(60));
        assert_eq!(v.status().passes, 1);
        // The next pass starts when the interval since the last began ran
        // out (here at once).
        assert!(!v.due(at(60), || vec![3, 1]).is_empty());
    }

    #[test]
    fn small_tables_share_a_chunk_and_the_pass_stops_at_one_that_did_not_end() {
        let now = Instant::now();
        let mut v = Verifier::new(
            VerifyConfig {
                interval: Duration::from_secs(60),
                chunk_rows: 10,
            },
            now,
        );
        v.set_tables(["a", "b", "c", "d", "e"].map(t).to_vec());
        let r = v.due(now, || vec![0, 3, 4, 5, 0]);
        let names: Vec<TableName> = r.iter().map(|c| c.table.clone()).collect();
        assert_eq!(
            names,
            ["a", "b", "c"].map(t).to_vec(),
            "d's 5 rows do not fit"
        );
        // b turned out longer than its estimate: the pass goes on in b.
        v.sent(
            &[
                check("a", None, None),
                check("b", None, Some("{\"id\": 10}")),
                check("c", None, None),
            ],
            now,
        );
        let r = v.due(now + Duration::from_secs(60), Vec::new);
        assert_eq!(r.len(), 1);
        assert_eq!(
            (r[0].table.clone(), r[0].after.as_deref()),
            (t("b"), Some("{\"id\": 10}"))
        );
        // Many empty tables: a chunk spans at most PACKED_TABLES of them.
        let mut v = Verifier::new(VerifyConfig::default(), now);
        v.set_tables((0..100).map(|i| t(&format!("t{i}"))).collect());
        assert_eq!(v.due(now, || vec![0; 100]).len(), PACKED_TABLES);
    }

    #[test]
    fn an_estimate_that_proves_short_speeds_the_pass_up() {
        let (mut v, now) = verifier(60);
        assert_eq!(v.due(now, || vec![0, 0]).len(), 2);
        v.sent(&[check("a", None, Some("{\"id\": 2}"))], now);
        // 2 rows seen of an estimate of 0: doubled to 4, 1 more chunk
        // expected besides the tables left: 30 s, not the interval.
        assert!(!v.due(now + Duration::from_secs(31), Vec::new).is_empty());
    }

    #[test]
    fn a_difference_stays_until_a_whole_pass_finds_the_table_equal() {
        let (mut v, _) = verifier(60);
        let first = check("a", None, Some("{\"id\": 2}"));
        let last = check("a", Some("{\"id\": 2}"), None);
        let found = v.record("r1", &first, &result(&first, 3));
        assert_eq!(found.map(|d| d.replica_rows), Some(3));
        // Reported once.
        assert!(v.record("r1", &first, &result(&first, 3)).is_none());
        assert!(v.record("r1", &last, &result(&last, 2)).is_none());
        assert_eq!(v.divergent_tables("r1"), vec!["public.a".to_string()]);
        assert!(v.divergent("r2").is_empty());
        // A pass that misses a chunk does not clear it.
        v.record("r1", &last, &result(&last, 2));
        assert_eq!(v.divergent("r1").len(), 1);
        // A clean pass from the first chunk to the last does.
        v.record("r1", &first, &result(&first, 2));
        v.record("r1", &last, &result(&last, 2));
        assert!(v.divergent("r1").is_empty());
    }

    #[test]
    fn an_interval_of_zero_turns_the_check_off() {
        let (mut v, now) = verifier(0);
        assert!(v.due(now, || vec![4]).is_empty());
        assert!(!v.status().enabled);
    }
}
