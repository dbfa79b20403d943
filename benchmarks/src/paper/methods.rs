//! The five ways of shipping a transaction's row changes to a remote
//! server that the paper compares. Every method upserts the same rows:
//! stream row `k` changes key `k % KEYS` of each of the related tables.
//!
//! The per-row statements are the baselines a replication tool would send;
//! they are benchmark SQL, not Ferry's. The batch path is Ferry's own: its
//! batch table, its binary COPY and its apply statements from `ferry-sql`,
//! sent in one flight as Ferry's apply session does.

use bytes::{BufMut, BytesMut};
use ferry_sql::{apply, batch, schema, Column, TableName, TableShape};
use ferry_wire::ServerConn;
use futures_util::future::try_join_all;
use postgres_protocol::message::frontend;
use postgres_protocol::IsNull;
use std::time::{Duration, Instant};
use tokio_postgres::types::ToSql;

/// Keys per table: stream rows wrap around and update existing rows.
pub const KEYS: i64 = 100_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Autocommit,
    OneTransaction,
    Pipelined,
    MultiRow,
    Batch,
}

impl Method {
    pub const ALL: [Method; 5] = [
        Method::Autocommit,
        Method::OneTransaction,
        Method::Pipelined,
        Method::MultiRow,
        Method::Batch,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Method::Autocommit => "per-row, autocommit",
            Method::OneTransaction => "per-row, one transaction",
            Method::Pipelined => "per-row, pipelined",
            Method::MultiRow => "multi-row INSERT ON CONFLICT",
            Method::Batch => "Ferry batch (temp table, binary COPY, in-server apply)",
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Method::Autocommit => "autocommit",
            Method::OneTransaction => "one_txn",
            Method::Pipelined => "pipelined",
            Method::MultiRow => "multirow",
            Method::Batch => "batch",
        }
    }
}

/// The related tables `p1`, `p2`, `p3`: each references the previous.
pub fn table(t: usize) -> String {
    format!("p{t}")
}

pub fn create_tables(tables: usize) -> String {
    (1..=tables)
        .map(|t| {
            format!(
                "DROP TABLE IF EXISTS {n}; CREATE TABLE {n} (id int PRIMARY KEY, ref int NOT NULL, v bigint NOT NULL, note text NOT NULL);",
                n = table(t)
            )
        })
        .collect()
}

fn shape(t: usize) -> TableShape {
    let col = |attnum: i16, name: &str, type_sql: &str| Column {
        attnum,
        name: name.into(),
        type_sql: type_sql.into(),
        generated: false,
        identity: false,
    };
    TableShape {
        table: TableName::new("public", table(t)),
        columns: vec![
            col(1, "id", "integer"),
            col(2, "ref", "integer"),
            col(3, "v", "bigint"),
            col(4, "note", "text"),
        ],
        key: Some(vec!["id".into()]),
        partitioned: false,
    }
}

fn upsert_one(t: usize) -> String {
    format!(
        "INSERT INTO {} (id, ref, v, note) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (id) DO UPDATE SET ref = EXCLUDED.ref, v = EXCLUDED.v, note = EXCLUDED.note",
        table(t)
    )
}

fn upsert_many(t: usize) -> String {
    format!(
        "INSERT INTO {} (id, ref, v, note) SELECT * FROM unnest($1::int[], $2::int[], $3::bigint[], $4::text[]) \
         ON CONFLICT (id) DO UPDATE SET ref = EXCLUDED.ref, v = EXCLUDED.v, note = EXCLUDED.note",
        table(t)
    )
}

/// One stream row's values.
fn row(k: i64) -> (i32, i32, i64, String) {
    let id = (k % KEYS) as i32;
    (id, id, k, format!("row {k} of the change stream"))
}

/// One server's connections for every method.
pub struct Target {
    client: tokio_postgres::Client,
    one: Vec<tokio_postgres::Statement>,
    many: Vec<tokio_postgres::Statement>,
    raw: ServerConn,
    tables: usize,
    /// Per table, the kinds of its prepared apply statements, in order (the
    /// SQL is built once, at open, as in Ferry's apply session).
    kinds: Vec<Vec<apply::Kind>>,
    /// Per table, how its batch table is emptied (as Ferry's apply session).
    emptying: Vec<batch::Emptying>,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

impl Target {
    /// Connects both sessions to `addr` (the relay), creates fresh tables
    /// and prepares the sessions.
    pub async fn open(addr: std::net::SocketAddr, db: &str, tables: usize) -> Result<Self, Error> {
        let dsn = format!("postgresql://postgres@{}:{}/{db}", addr.ip(), addr.port());
        let (client, conn) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        client.batch_execute(&create_tables(tables)).await?;
        let mut one = Vec::new();
        let mut many = Vec::new();
        for t in 1..=tables {
            one.push(client.prepare(&upsert_one(t)).await?);
            many.push(client.prepare(&upsert_many(t)).await?);
        }
        let target = ferry_wire::Target::from_dsn(&dsn)?;
        let mut raw = ServerConn::connect(&target, &[], Duration::from_secs(10)).await?;
        // Ferry's apply session: its settings, batch tables and prepared
        // statements.
        let mut setup = format!("{};", schema::APPLY_SESSION_SETUP);
        for t in 1..=tables {
            setup += &batch::create_temp(&shape(t));
            setup.push(';');
        }
        raw.simple_query(&setup).await?;
        let mut out = BytesMut::new();
        let mut kinds = Vec::new();
        frontend::parse("b_begin", "BEGIN", [], &mut out)?;
        frontend::parse("b_commit", "COMMIT", [], &mut out)?;
        for t in 1..=tables {
            frontend::parse(
                &format!("b_copy_{t}"),
                &apply::copy_in(&shape(t)),
                [],
                &mut out,
            )?;
            let statements = apply::apply(&shape(t));
            for (j, (_, sql)) in statements.iter().enumerate() {
                frontend::parse(&format!("b_apply_{t}_{j}"), sql, [], &mut out)?;
            }
            kinds.push(statements.into_iter().map(|(kind, _)| kind).collect());
            frontend::parse(
                &format!("b_empty_{t}"),
                &batch::empty(&shape(t)),
                [],
                &mut out,
            )?;
            frontend::parse(
                &format!("b_truncate_{t}"),
                &batch::truncate_temp(&shape(t)),
                [],
                &mut out,
            )?;
        }
        frontend::sync(&mut out);
        raw.write_all(&out).await?;
        if let (Some(e), _) = raw.read_until_ready(1).await? {
            return Err(format!("preparing the batch session: {}", e.message).into());
        }
        Ok(Self {
            client,
            one,
            many,
            raw,
            tables,
            kinds,
            emptying: vec![batch::Emptying::default(); tables],
        })
    }

    /// The median round trip of `SELECT 1` over the link, in ms.
    pub async fn round_trip_ms(&self) -> Result<f64, Error> {
        let mut times = Vec::new();
        for _ in 0..21 {
            let t = Instant::now();
            self.client.simple_query("SELECT 1").await?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        Ok(times[times.len() / 2])
    }

    /// Ships stream rows `first..first + n` by `method`; sequential methods
    /// stop early once `deadline` passes. Returns the rows shipped.
    pub async fn ship(
        &mut self,
        method: Method,
        first: i64,
        n: i64,
        deadline: Instant,
    ) -> Result<i64, Error> {
        match method {
            Method::Autocommit => {
                for k in first..first + n {
                    let (id, r, v, note) = row(k);
                    for s in &self.one {
                        self.client.execute(s, &[&id, &r, &v, &note]).await?;
                    }
                    if Instant::now() >= deadline {
                        return Ok(k - first + 1);
                    }
                }
                Ok(n)
            }
            Method::OneTransaction => {
                self.client.batch_execute("BEGIN").await?;
                let mut done = n;
                for k in first..first + n {
                    let (id, r, v, note) = row(k);
                    for s in &self.one {
                        self.client.execute(s, &[&id, &r, &v, &note]).await?;
                    }
                    if Instant::now() >= deadline {
                        done = k - first + 1;
                        break;
                    }
                }
                self.client.batch_execute("COMMIT").await?;
                Ok(done)
            }
            Method::Pipelined => {
                let rows: Vec<(i32, i32, i64, String)> = (first..first + n).map(row).collect();
                let params: Vec<[&(dyn ToSql + Sync); 4]> = rows
                    .iter()
                    .map(|(id, r, v, note)| [id as &(dyn ToSql + Sync), r, v, note])
                    .collect();
                let (client, one) = (&self.client, &self.one);
                in_one_flight(
                    client,
                    try_join_all(
                        params
                            .iter()
                            .flat_map(|p| one.iter().map(move |s| client.execute(s, &p[..]))),
                    ),
                )
                .await?;
                Ok(n)
            }
            Method::MultiRow => {
                let rows: Vec<(i32, i32, i64, String)> = (first..first + n).map(row).collect();
                let ids: Vec<i32> = rows.iter().map(|r| r.0).collect();
                let refs: Vec<i32> = rows.iter().map(|r| r.1).collect();
                let vs: Vec<i64> = rows.iter().map(|r| r.2).collect();
                let notes: Vec<&str> = rows.iter().map(|r| r.3.as_str()).collect();
                let p: [&(dyn ToSql + Sync); 4] = [&ids, &refs, &vs, &notes];
                let client = &self.client;
                in_one_flight(
                    client,
                    try_join_all(self.many.iter().map(|s| client.execute(s, &p[..]))),
                )
                .await?;
                Ok(n)
            }
            Method::Batch => {
                let data = copy_binary(first, n);
                let mut out = BytesMut::with_capacity(data.len() * self.tables + 1024);
                run("b_begin", &mut out)?;
                for t in 1..=self.tables {
                    run(&format!("b_copy_{t}"), &mut out)?;
                    frontend::CopyData::new(&data[..])?.write(&mut out);
                    frontend::copy_done(&mut out);
                    // Every stream row is an upsert: as in Ferry's apply
                    // session, only the statements with work run.
                    let ops = batch::Ops {
                        upserts: n as u64,
                        ..batch::Ops::default()
                    };
                    for (j, kind) in self.kinds[t - 1].iter().enumerate() {
                        if kind.has_work(&ops) {
                            run(&format!("b_apply_{t}_{j}"), &mut out)?;
                        }
                    }
                    if self.emptying[t - 1].truncate_after(ops.rows()) {
                        run(&format!("b_truncate_{t}"), &mut out)?;
                    } else {
                        run(&format!("b_empty_{t}"), &mut out)?;
                    }
                }
                run("b_commit", &mut out)?;
                frontend::sync(&mut out);
                self.raw.write_all(&out).await?;
                let (error, status) = self.raw.read_pipeline().await?;
                if let Some((e, at)) = error {
                    return Err(format!("batch statement {at}: {}", e.message).into());
                }
                if status != b'I' {
                    return Err("batch transaction did not end".into());
                }
                Ok(n)
            }
        }
    }
}

/// BEGIN, the writes and COMMIT, pipelined into one round trip (join!
/// polls, and so sends, in argument order).
async fn in_one_flight<W>(client: &tokio_postgres::Client, writes: W) -> Result<(), Error>
where
    W: std::future::Future<Output = Result<Vec<u64>, tokio_postgres::Error>>,
{
    let (begun, written, committed) = tokio::join!(
        client.batch_execute("BEGIN"),
        writes,
        client.batch_execute("COMMIT")
    );
    begun?;
    written?;
    committed?;
    Ok(())
}

/// Bind and Execute of a prepared statement without parameters.
fn run(statement: &str, out: &mut BytesMut) -> std::io::Result<()> {
    frontend::bind(
        "",
        statement,
        [0i16; 0],
        std::iter::empty::<&[u8]>(),
        |_, _| Ok(IsNull::No),
        [0i16; 0],
        out,
    )
    .map_err(|_| std::io::Error::other("bind encoding"))?;
    frontend::execute("", 0, out)
}

/// Stream rows `first..first + n` as a binary COPY of Ferry's batch table
/// (`_op "char"` first, then the shipped columns).
fn copy_binary(first: i64, n: i64) -> BytesMut {
    let mut b = BytesMut::with_capacity(32 + n as usize * 64);
    b.put_slice(b"PGCOPY\n\xff\r\n\0");
    b.put_i32(0);
    b.put_i32(0);
    for k in first..first + n {
        let (id, r, v, note) = row(k);
        b.put_i16(5);
        b.put_i32(1);
        b.put_u8(b'U');
        b.put_i32(4);
        b.put_i32(id);
        b.put_i32(4);
        b.put_i32(r);
        b.put_i32(8);
        b.put_i64(v);
        b.put_i32(note.len() as i32);
        b.put_slice(note.as_bytes());
    }
    b.put_i16(-1);
    b
}
