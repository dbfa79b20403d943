//! A seeded generator of mixed DDL and DML for the randomised differential
//! test: every form in which PostgreSQL 15 can change a row — INSERT
//! (multi-row, ON CONFLICT, INSERT ... SELECT), UPDATE (of keys too, and
//! of partition keys, which moves rows), DELETE, MERGE, COPY, TRUNCATE
//! (of a partition, RESTART IDENTITY), writable CTEs — through plain,
//! partitioned, inherited, serial and keyless tables, inside and outside
//! transactions, mixed with schema changes (columns added with constant,
//! clock and volatile defaults, retypes, renames, drops, indexes, tables
//! and partitions created, attached, detached and dropped, enum values
//! added). The same seed gives the same statements, so a failure is
//! replayed from the seed in its message.
//!
//! Statements may fail (a duplicate key, a value out of a partition's
//! range, an update of a table without a key): that is part of the test —
//! whatever the master did, the replicas must hold the same.

/// The schema every node starts with.
pub const SCHEMA: &str = "CREATE TYPE mood AS ENUM ('sad', 'ok'); \
    CREATE TABLE kv (id int PRIMARY KEY, v int, s text, m mood); \
    CREATE TABLE parts (id int, region int, v int, PRIMARY KEY (id, region)) PARTITION BY LIST (region); \
    CREATE TABLE parts_1 PARTITION OF parts FOR VALUES IN (1); \
    CREATE TABLE parts_2 PARTITION OF parts FOR VALUES IN (2); \
    CREATE TABLE base (id int PRIMARY KEY, v int); \
    CREATE TABLE child (w int) INHERITS (base); ALTER TABLE child ADD PRIMARY KEY (id); \
    CREATE TABLE events (id bigserial PRIMARY KEY, kind text, v int); \
    CREATE TABLE nokey (a int, b text);";

/// A small, fast, seeded generator (xorshift64*): the tests need
/// reproducible streams, not cryptographic ones.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// What the generator knows of the schema it changed.
#[derive(Debug, Default)]
struct Model {
    /// Columns added to `kv` (name, type), which later statements use.
    kv_columns: Vec<(String, &'static str)>,
    /// Partitions of `parts` besides parts_1 and parts_2 (region), and
    /// those detached (tables of their own).
    partitions: Vec<i64>,
    detached: Vec<i64>,
    /// Tables the generator created (name).
    tables: Vec<String>,
    moods: Vec<String>,
    next_name: u64,
}

/// One unit of work: statements sent one after another on one session
/// (a transaction block, or a single statement); `copy` rows go to `kv`
/// through COPY FROM STDIN after them.
#[derive(Clone, Debug, Default)]
pub struct Unit {
    pub statements: Vec<String>,
    pub copy: Option<String>,
}

/// The generator.
pub struct Generator {
    rng: Rng,
    model: Model,
}

impl Generator {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: Rng::new(seed),
            model: Model {
                moods: vec!["sad".into(), "ok".into()],
                ..Model::default()
            },
        }
    }

    /// The next unit.
    pub fn next_unit(&mut self) -> Unit {
        let roll = self.rng.below(100);
        if roll < 10 {
            return Unit {
                statements: vec![self.ddl()],
                copy: None,
            };
        }
        if roll < 14 {
            return Unit {
                statements: Vec::new(),
                copy: Some(self.copy_rows()),
            };
        }
        if roll < 30 {
            let n = 2 + self.rng.below(4);
            let mut statements = vec!["BEGIN".to_string()];
            for _ in 0..n {
                statements.push(self.dml());
            }
            statements.push(if self.rng.chance(85) {
                "COMMIT".into()
            } else {
                "ROLLBACK".into()
            });
            return Unit {
                statements,
                copy: None,
            };
        }
        Unit {
            statements: vec![self.dml()],
            copy: None,
        }
    }

    fn key(&mut self) -> u64 {
        1 + self.rng.below(300)
    }

    fn mood(&mut self) -> String {
        let m = self.rng.pick(&self.model.moods).clone();
        format!("'{m}'")
    }

    fn region(&mut self) -> i64 {
        let mut regions = vec![1, 2];
        regions.extend(self.model.partitions.iter().copied());
        // Now and then a region no partition takes: the statement fails.
        if self.rng.chance(5) {
            return 9;
        }
        *self.rng.pick(&regions)
    }

    fn kv_extra_assignment(&mut self) -> String {
        match self.model.kv_columns.is_empty() {
            true => String::new(),
            false => {
                let (name, ty) = self.rng.pick(&self.model.kv_columns).clone();
                let value = match ty {
                    "int" | "bigint" => format!("{}", self.rng.below(1000)),
                    _ => format!("'x{}'", self.rng.below(1000)),
                };
                format!(", \"{name}\" = {value}")
            }
        }
    }

    /// A statement that changes rows.
    fn dml(&mut self) -> String {
        let k = self.key();
        let v = self.rng.below(1000);
        match self.rng.below(26) {
            0 => format!(
                "INSERT INTO kv (id, v, s, m) VALUES ({k}, {v}, 's{v}', {})",
                self.mood()
            ),
            1 => format!(
                "INSERT INTO kv (id, v, s) SELECT g, g * {v}, 'g' || g FROM generate_series({k}, {}) g \
                 ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v, s = kv.s || '+'",
                k + self.rng.below(20)
            ),
            2 => format!("INSERT INTO kv (id, v) VALUES ({k}, {v}) ON CONFLICT DO NOTHING"),
            3 => {
                let extra = self.kv_extra_assignment();
                format!("UPDATE kv SET v = v + 1{extra} WHERE id BETWEEN {k} AND {}", k + 10)
            }
            4 => format!("UPDATE kv SET id = id + 1000 WHERE id = {k}"),
            5 => format!("DELETE FROM kv WHERE id BETWEEN {k} AND {}", k + self.rng.below(5)),
            6 => format!(
                "MERGE INTO kv USING (SELECT g AS id FROM generate_series({k}, {}) g) src ON kv.id = src.id \
                 WHEN MATCHED AND kv.v % 3 = 0 THEN DELETE \
                 WHEN MATCHED THEN UPDATE SET v = kv.v * 2 \
                 WHEN NOT MATCHED THEN INSERT (id, v, s) VALUES (src.id, {v}, 'merged')",
                k + self.rng.below(10)
            ),
            7 => format!(
                "WITH d AS (DELETE FROM kv WHERE id BETWEEN {k} AND {} RETURNING *) \
                 INSERT INTO kv (id, v, s, m) SELECT id, v + 1, s, m FROM d LIMIT {}",
                k + 5,
                self.rng.below(4)
            ),
            8 => format!(
                "WITH u AS (UPDATE kv SET v = v - 1 WHERE id BETWEEN {k} AND {} RETURNING id, v) \
                 INSERT INTO events (kind, v) SELECT 'cte', v FROM u",
                k + 3
            ),
            9 | 10 => format!(
                "INSERT INTO parts VALUES ({k}, {}, {v}) ON CONFLICT (id, region) DO UPDATE SET v = EXCLUDED.v",
                self.region()
            ),
            11 => format!(
                "UPDATE parts SET region = {} WHERE id BETWEEN {k} AND {}",
                self.region(),
                k + 5
            ),
            12 => format!(
                "MERGE INTO parts p USING (SELECT g AS id FROM generate_series({k}, {}) g) s ON p.id = s.id \
                 WHEN MATCHED THEN UPDATE SET region = {}",
                k + 5,
                self.region()
            ),
            13 => format!("UPDATE parts_1 SET v = {v} WHERE id BETWEEN {k} AND {}", k + 20),
            14 => format!("INSERT INTO parts_2 VALUES ({k}, 2, {v}) ON CONFLICT DO NOTHING"),
            15 => format!("DELETE FROM parts WHERE id BETWEEN {k} AND {}", k + 3),
            16 => format!("INSERT INTO base VALUES ({k}, {v}) ON CONFLICT DO NOTHING"),
            17 => format!("INSERT INTO child VALUES ({k}, {v}, {}) ON CONFLICT DO NOTHING", v % 7),
            18 => format!("UPDATE base SET v = v + 1 WHERE id BETWEEN {k} AND {}", k + 30),
            19 => format!("DELETE FROM base WHERE id = {k}"),
            20 => format!("INSERT INTO events (kind, v) SELECT 'k', g FROM generate_series(1, {}) g", 1 + v % 5),
            21 => "SELECT nextval('events_id_seq')".into(),
            22 => format!("INSERT INTO nokey VALUES ({k}, 'n{v}')"),
            23 => format!("UPDATE nokey SET b = 'refused' WHERE a = {k}"),
            24 => match self.rng.below(4) {
                0 => "TRUNCATE events RESTART IDENTITY".into(),
                1 => "TRUNCATE parts_1".into(),
                2 => "TRUNCATE nokey".into(),
                _ => "TRUNCATE ONLY base".into(),
            },
            _ => match self.model.tables.first() {
                Some(t) => format!("INSERT INTO \"{t}\" (id, v) VALUES ({k}, {v}) ON CONFLICT DO NOTHING"),
                None => format!("INSERT INTO kv (id, v) VALUES ({}, {v}) ON CONFLICT DO NOTHING", k + 500),
            },
        }
    }

    /// Rows for COPY kv (id, v, s) FROM STDIN, text format.
    fn copy_rows(&mut self) -> String {
        let start = 2000 + self.rng.below(3000);
        let n = 1 + self.rng.below(20);
        (start..start + n)
            .map(|i| format!("{i}\t{}\tcopied\n", i % 97))
            .collect()
    }

    fn fresh(&mut self, prefix: &str) -> String {
        self.model.next_name += 1;
        format!("{prefix}_{}", self.model.next_name)
    }

    /// A schema change.
    fn ddl(&mut self) -> String {
        match self.rng.below(12) {
            0 => {
                let name = self.fresh("c");
                let (ty, default) = *self.rng.pick(&[
                    ("int", " DEFAULT 7"),
                    ("text", " DEFAULT 'd'"),
                    ("text", " DEFAULT now()::text"),
                    ("text", " DEFAULT md5(random()::text)"),
                    ("int", ""),
                ]);
                self.model.kv_columns.push((name.clone(), ty));
                format!("ALTER TABLE kv ADD COLUMN \"{name}\" {ty}{default}")
            }
            1 => match self.model.kv_columns.pop() {
                Some((name, _)) => format!("ALTER TABLE kv DROP COLUMN \"{name}\""),
                None => "ALTER TABLE kv ADD COLUMN IF NOT EXISTS spare int".into(),
            },
            2 => {
                let i = self.model.kv_columns.iter().position(|(_, t)| *t == "int");
                match i {
                    Some(i) => {
                        self.model.kv_columns[i].1 = "bigint";
                        format!(
                            "ALTER TABLE kv ALTER COLUMN \"{}\" TYPE bigint",
                            self.model.kv_columns[i].0
                        )
                    }
                    None => "ALTER TABLE kv ALTER COLUMN v TYPE bigint".into(),
                }
            }
            3 => format!(
                "CREATE INDEX IF NOT EXISTS kv_v_{} ON kv (v)",
                self.rng.below(3)
            ),
            4 => {
                let region =
                    3 + self.model.partitions.len() as i64 + self.model.detached.len() as i64;
                self.model.partitions.push(region);
                format!("CREATE TABLE parts_{region} PARTITION OF parts FOR VALUES IN ({region})")
            }
            5 => match self.model.partitions.pop() {
                Some(r) => {
                    self.model.detached.push(r);
                    format!("ALTER TABLE parts DETACH PARTITION parts_{r}")
                }
                None => "CREATE INDEX IF NOT EXISTS parts_v ON parts (v)".into(),
            },
            6 => match self.model.detached.pop() {
                Some(r) => {
                    self.model.partitions.push(r);
                    format!("ALTER TABLE parts ATTACH PARTITION parts_{r} FOR VALUES IN ({r})")
                }
                None => "ALTER TABLE base ADD COLUMN IF NOT EXISTS note text DEFAULT 'b'".into(),
            },
            7 => {
                let m = self.fresh("m");
                self.model.moods.push(m.clone());
                format!("ALTER TYPE mood ADD VALUE '{m}'")
            }
            8 => {
                let t = self.fresh("t");
                self.model.tables.push(t.clone());
                format!("CREATE TABLE \"{t}\" (id int PRIMARY KEY, v int, at timestamptz DEFAULT clock_timestamp())")
            }
            9 => match self.model.tables.pop() {
                Some(t) => format!("DROP TABLE \"{t}\""),
                None => "ALTER TABLE events ADD COLUMN IF NOT EXISTS tag text".into(),
            },
            10 => format!(
                "CREATE TABLE IF NOT EXISTS grandchild_{} () INHERITS (child)",
                self.rng.below(2)
            ),
            _ => "ALTER TABLE kv ADD COLUMN IF NOT EXISTS flagged boolean DEFAULT random() < 0.5"
                .into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_statements() {
        let run = |seed| {
            let mut g = Generator::new(seed);
            (0..200)
                .map(|_| format!("{:?}", g.next_unit()))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn every_kind_of_statement_comes_up() {
        let mut g = Generator::new(1);
        let text: String = (0..2000).map(|_| format!("{:?}", g.next_unit())).collect();
        for kind in [
            "MERGE",
            "WITH d AS (DELETE",
            "UPDATE parts SET region",
            "TRUNCATE",
            "ALTER TYPE mood ADD VALUE",
            "PARTITION OF",
            "DETACH",
            "ATTACH",
            "INHERITS",
            "random()",
            "COMMIT",
            "ROLLBACK",
            "copied",
        ] {
            assert!(text.contains(kind), "{kind}");
        }
    }
}
