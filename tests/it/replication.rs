//! Replication correctness against real servers: every change committed
//! through Ferry (or behind its back) reaches every replica, whole
//! transactions only, in any commit order.

use ferry_testkit::{eventually, Cluster};
use futures_util::SinkExt;
use std::time::Duration;

const SCHEMA: &str = r#"
CREATE TABLE accounts (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner text NOT NULL,
    balance numeric(12,2) NOT NULL DEFAULT 0,
    token uuid NOT NULL DEFAULT gen_random_uuid(),
    created_at timestamptz NOT NULL DEFAULT now(),
    score double precision DEFAULT random()
);
CREATE TABLE orders (
    id serial PRIMARY KEY,
    account_id bigint NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    note text
);
CREATE TABLE order_lines (
    order_id int NOT NULL REFERENCES orders(id) ON DELETE CASCADE,
    line int NOT NULL,
    qty int NOT NULL,
    total int GENERATED ALWAYS AS (qty * 10) STORED,
    PRIMARY KEY (order_id, line)
);
CREATE TABLE audit (at timestamptz NOT NULL DEFAULT clock_timestamp(), what text NOT NULL);
CREATE FUNCTION audit_orders() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO audit (what) VALUES (TG_OP || ' order ' || coalesce(NEW.id, OLD.id));
    RETURN NULL;
END $$;
CREATE TRIGGER orders_audit AFTER INSERT OR UPDATE OR DELETE ON orders
    FOR EACH ROW EXECUTE FUNCTION audit_orders();
CREATE FUNCTION bump_balances(pct numeric) RETURNS void LANGUAGE sql AS
    $$ UPDATE accounts SET balance = balance * (1 + pct / 100) $$;
CREATE TABLE kv (k text PRIMARY KEY, v text);
CREATE TABLE "Odd ""Name"" $ferry$ 100%" ("Key Col" int PRIMARY KEY, "it's" text);
"#;

fn cluster(nodes: usize) -> Cluster {
    Cluster::started(env!("CARGO_BIN_EXE_ferry"), nodes, SCHEMA)
}

/// Inserts keys `k0`..`k{n-1}` into `kv`, one transaction each.
async fn insert_kv(client: &tokio_postgres::Client, n: usize) {
    for i in 0..n {
        client
            .execute("INSERT INTO kv VALUES ($1, 'v')", &[&format!("k{i}")])
            .await
            .unwrap();
    }
}

/// A small deterministic generator, so a failing run can be repeated.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

async fn random_client(url: String, seed: u64, ops: usize) {
    let (mut c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    let mut rng = Lcg(seed);
    for i in 0..ops {
        let account = rng.next(30) as i64 + 1;
        let other = rng.next(30) as i64 + 1;
        // Individual operations may fail (a row deleted concurrently, a
        // foreign key gone): the replicas must match whatever committed.
        let _ = match rng.next(11) {
            0 => c
                .execute("INSERT INTO accounts (owner, balance) VALUES ($1, 100)", &[&format!("o{seed}-{i}")])
                .await
                .map(|_| ()),
            1 | 2 => async {
                let tx = c.transaction().await?;
                let id: i32 = tx
                    .query_one("INSERT INTO orders (account_id, note) VALUES ($1, $2) RETURNING id", &[&account, &"n"])
                    .await?
                    .get(0);
                for line in 1..=(rng.next(4) as i32 + 1) {
                    tx.execute("INSERT INTO order_lines (order_id, line, qty) VALUES ($1, $2, $3)", &[&id, &line, &line])
                        .await?;
                }
                tx.commit().await
            }
            .await,
            3 => c
                .execute("UPDATE order_lines SET qty = qty + 1 WHERE order_id % 7 = $1", &[&(rng.next(7) as i32)])
                .await
                .map(|_| ()),
            4 => async {
                let tx = c.transaction().await?;
                tx.execute("UPDATE accounts SET balance = balance - 5 WHERE id = $1", &[&account]).await?;
                tx.execute("UPDATE accounts SET balance = balance + 5 WHERE id = $1", &[&other]).await?;
                tx.commit().await
            }
            .await,
            5 => c
                .execute("DELETE FROM orders WHERE id = (SELECT min(id) FROM orders WHERE account_id = $1)", &[&account])
                .await
                .map(|_| ()),
            6 => c.execute("DELETE FROM accounts WHERE id = $1", &[&account]).await.map(|_| ()),
            7 => c.execute("SELECT bump_balances(1)", &[]).await.map(|_| ()),
            8 => async {
                let sink = c.copy_in("COPY kv (k, v) FROM STDIN").await?;
                let mut sink = std::pin::pin!(sink);
                let data = format!("c{seed}-{i}\tcopied\nd{seed}-{i}\t\\N\n");
                sink.send(bytes::Bytes::from(data)).await?;
                sink.finish().await.map(|_| ())
            }
            .await,
            9 => async {
                // A key that changes: old key deleted, new key upserted.
                c.execute("UPDATE kv SET k = k || 'x' WHERE k = (SELECT min(k) FROM kv)", &[]).await?;
                let tx = c.transaction().await?;
                tx.execute("INSERT INTO kv VALUES ($1, 'kept')", &[&format!("s{seed}-{i}")]).await?;
                tx.batch_execute("SAVEPOINT sp").await?;
                tx.execute("INSERT INTO kv VALUES ($1, 'dropped')", &[&format!("r{seed}-{i}")]).await?;
                tx.batch_execute("ROLLBACK TO SAVEPOINT sp").await?;
                tx.commit().await
            }
            .await,
            _ => async {
                let tx = c.transaction().await?;
                tx.execute("INSERT INTO kv VALUES ($1, 'rolled back')", &[&format!("x{seed}-{i}")]).await?;
                tx.rollback().await
            }
            .await,
        };
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomised_workload_on_related_tables_reaches_every_replica() {
    let c = cluster(3);
    let url = c.proxy_url();
    let setup = c.proxy_client().await;
    for i in 0..30 {
        setup
            .execute(
                "INSERT INTO accounts (owner, balance) VALUES ($1, 100)",
                &[&format!("seed {i}")],
            )
            .await
            .unwrap();
    }
    let clients: Vec<_> = (0..4)
        .map(|s| tokio::spawn(random_client(url.clone(), s + 1, 150)))
        .collect();
    for h in clients {
        h.await.unwrap();
    }
    // Writes that bypass Ferry are captured by the triggers all the same.
    c.psql(
        0,
        "INSERT INTO kv VALUES ('direct', 'behind ferry''s back'); SELECT bump_balances(2)",
    );
    c.wait_equal(Duration::from_secs(15))
        .await
        .unwrap_or_else(|d| panic!("{d}\n{}", c.ferry_log()));
    let (ok, table) = c.verify(5);
    assert!(ok, "ferry verify failed:\n{table}");
    assert!(
        table.contains("public.order_lines") && table.contains(" ok"),
        "{table}"
    );
    // Values generated on the master travel as produced there.
    let m = c.node_client(0).await;
    let r = c.node_client(2).await;
    let q = "SELECT string_agg(token::text || created_at::text || score::text, ',' ORDER BY id) FROM accounts";
    let a: String = m.query_one(q, &[]).await.unwrap().get(0);
    let b: String = r.query_one(q, &[]).await.unwrap().get(0);
    assert_eq!(a, b);
    // The trigger fired once, on the master: the audit rows are not doubled.
    let audit_m: i64 = m
        .query_one("SELECT count(*) FROM audit", &[])
        .await
        .unwrap()
        .get(0);
    let audit_r: i64 = r
        .query_one("SELECT count(*) FROM audit", &[])
        .await
        .unwrap()
        .get(0);
    assert!(audit_m > 0);
    assert_eq!(audit_m, audit_r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_committing_out_of_order_all_arrive() {
    let c = cluster(2);
    let long = c.proxy_client().await;
    let short = c.proxy_client().await;
    let replica = c.node_client(1).await;
    // The long transaction writes first (its rows get the lower capture
    // sequence numbers), the short one commits first and ships first. A cut
    // by sequence number would then skip the long transaction's rows.
    long.batch_execute("BEGIN; INSERT INTO kv VALUES ('long-1', 'a')")
        .await
        .unwrap();
    short
        .batch_execute("BEGIN; INSERT INTO kv VALUES ('short-1', 'b'); COMMIT")
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let keys: Vec<String> = replica
            .query("SELECT k FROM kv ORDER BY k", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        if keys == ["short-1"] {
            break;
        }
        assert!(
            !keys.iter().any(|k| k.starts_with("long")),
            "uncommitted rows shipped: {keys:?}"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "short transaction never arrived: {keys:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    long.batch_execute("INSERT INTO kv VALUES ('long-2', 'c'); COMMIT")
        .await
        .unwrap();
    c.wait_equal(Duration::from_secs(10)).await.unwrap();
    let n: i64 = replica
        .query_one("SELECT count(*) FROM kv", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_tables_take_inserts_and_refuse_updates_by_name() {
    let c = cluster(2);
    let client = c.proxy_client().await;
    client
        .execute("INSERT INTO audit (what) VALUES ('one'), ('two')", &[])
        .await
        .unwrap();
    let err = client
        .execute("UPDATE audit SET what = 'x'", &[])
        .await
        .unwrap_err();
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "55000");
    assert!(db.message().contains("public.audit"), "{}", db.message());
    let err = client.execute("DELETE FROM audit", &[]).await.unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("55000"));
    c.wait_equal(Duration::from_secs(10)).await.unwrap();
    let n: i64 = c
        .node_client(1)
        .await
        .query_one("SELECT count(*) FROM audit", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_metrics_and_health_report_the_replicas() {
    let mut c = cluster(3);
    let client = c.proxy_client().await;
    insert_kv(&client, 50).await;
    c.wait_equal(Duration::from_secs(10)).await.unwrap();
    // Shipped rows are cleaned up once the replicas' positions are settled
    // (3 s old, see schema::RECORD_POSITION).
    c.wait_outbox_cleaned(Duration::from_secs(15)).await;
    let doc: serde_json::Value = serde_json::from_str(&c.status_json().expect("status")).unwrap();
    let nodes = doc["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    assert_eq!(nodes[0]["role"], "master");
    for n in &nodes[1..] {
        assert_eq!(n["role"], "replica");
        assert_eq!(n["reachable"], true, "{doc}");
        assert!(n["applied_batch"].as_i64().unwrap() > 0);
        assert_eq!(n["lag_batches"], 0);
        assert_eq!(n["lag_rows"], 0);
        for key in ["lag_seconds", "last_error"] {
            assert!(n.get(key).is_some(), "{key} missing");
        }
    }
    assert_eq!(
        doc["outbox_backlog"], 0,
        "shipped rows are cleaned up: {doc}"
    );
    let out = c.ferry_admin(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("replica") && text.contains("applied_batch"),
        "{text}"
    );
    let (code, m) = c.admin_get("/metrics");
    assert_eq!(code, 200);
    assert!(
        m.contains("ferry_batches_applied_total{replica=\"b\"}"),
        "{m}"
    );
    assert!(m.contains("ferry_rows_shipped_total{replica=\"c\"}"), "{m}");
    assert!(m.contains("ferry_apply_seconds_bucket"), "{m}");
    assert!(m.contains("ferry_client_connections"), "{m}");
    assert_eq!(c.admin_get("/health").0, 200);

    // A replica the master records but the configuration lacks (a node
    // added at run time whose entry never reached the file) is named in
    // the log at start, and does not hold back the outbox clean-up.
    c.psql(
        0,
        "INSERT INTO ferry.replicas (name, batch_id, snap) \
         SELECT 'ghost', 1, snap FROM ferry.replicas WHERE name = 'b'",
    );
    c.kill_ferry();
    c.start_ferry();
    eventually(
        Duration::from_secs(10),
        "the unconfigured replica named",
        || {
            let log = c.ferry_log();
            if log.contains("the master records replica ghost, which is not in the configuration") {
                Ok(())
            } else {
                Err(log)
            }
        },
    )
    .await;
    let client = c.proxy_client().await;
    client
        .execute("INSERT INTO kv VALUES ('later', 'v')", &[])
        .await
        .unwrap();
    c.wait_equal(Duration::from_secs(10)).await.unwrap();
    c.wait_outbox_cleaned(Duration::from_secs(20)).await;
}

/// `outbox_backlog` is counted by the housekeeping, every
/// `housekeeping_ms`: a figure counted before rows were written must say
/// so, or a reader takes "0" for "cleaned up" while the rows are still
/// there (the figure went 0 → 50 → 0 in a CI run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_backlog_says_which_batches_it_counted() {
    let mut c = Cluster::new(
        env!("CARGO_BIN_EXE_ferry"),
        ferry_testkit::Options {
            nodes: 2,
            schema: SCHEMA.into(),
            env: vec![("FERRY_REPLICATION_HOUSEKEEPING_MS".into(), "4000".into())],
            ..Default::default()
        },
    );
    c.start_ferry();
    c.wait_status(Duration::from_secs(15), "a first count", |doc| {
        doc["outbox_counted_at_batch"].is_i64()
    })
    .await;
    let first_count = std::time::Instant::now();
    let client = c.proxy_client().await;
    insert_kv(&client, 50).await;
    c.wait_equal(Duration::from_secs(10)).await.unwrap();
    let doc = c.status_doc();
    let written = doc["last_batch"].as_i64().unwrap();
    if first_count.elapsed() < Duration::from_millis(3500) {
        // No pass since the one before the writes: its "0" says it is old.
        assert_eq!(doc["outbox_backlog"], 0, "{doc}");
        assert!(
            doc["outbox_counted_at_batch"].as_i64().unwrap() < written,
            "a count from before the writes names an earlier batch: {doc}"
        );
    }
    c.wait_outbox_cleaned(Duration::from_secs(30)).await;
    // Once a count that covers the writes says 0, it stays 0 while
    // nothing is written (two more passes).
    let until = std::time::Instant::now() + Duration::from_secs(9);
    while std::time::Instant::now() < until {
        let doc = c.status_doc();
        assert_eq!(doc["outbox_backlog"], 0, "the backlog came back: {doc}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let outbox = c.psql(
        0,
        "SELECT 'ferry.' || quote_ident(relname) FROM pg_class \
         WHERE relname LIKE 'o\\_public\\_kv\\_%' AND relkind = 'r'",
    );
    let rows = c.psql(0, &format!("SELECT count(*) FROM {}", outbox.trim()));
    assert_eq!(rows.trim(), "0", "status said the outbox was cleaned up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_identifiers_are_quoted_everywhere() {
    let c = cluster(2);
    let client = c.proxy_client().await;
    let t = r#""Odd ""Name"" $ferry$ 100%""#;
    client
        .batch_execute(&format!(r#"INSERT INTO {t} VALUES (1, 'a'), (2, 'b'); UPDATE {t} SET "it's" = 'c' WHERE "Key Col" = 1; UPDATE {t} SET "Key Col" = 3 WHERE "Key Col" = 2"#))
        .await
        .unwrap();
    c.wait_equal(Duration::from_secs(10)).await.unwrap();
    let rows: Vec<(i32, String)> = c
        .node_client(1)
        .await
        .query(
            &format!(r#"SELECT "Key Col", "it's" FROM {t} ORDER BY 1"#),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(rows, vec![(1, "c".to_string()), (3, "b".to_string())]);
    // TRUNCATE replicates too, whatever the name.
    client
        .batch_execute(&format!("TRUNCATE {t}"))
        .await
        .unwrap();
    c.wait_equal(Duration::from_secs(10)).await.unwrap();
    assert_eq!(c.psql(1, &format!("SELECT count(*) FROM {t}")).trim(), "0");
}

/// A schema change applied on every node while Ferry is stopped: at its
/// next start capture follows the new columns (the outbox gains them
/// first, so writes on the master never fail) and the new column
/// replicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_follows_a_column_added_on_every_node_between_runs() {
    let mut c = Cluster::started(
        env!("CARGO_BIN_EXE_ferry"),
        2,
        "CREATE TABLE items (id int PRIMARY KEY, name text);",
    );
    let client = c.proxy_client().await;
    client
        .batch_execute("INSERT INTO items VALUES (1, 'one')")
        .await
        .unwrap();
    c.wait_equal(Duration::from_secs(10)).await.unwrap();
    c.kill_ferry();
    // Rows written while Ferry is away are captured with the old columns.
    c.psql(0, "INSERT INTO items VALUES (2, 'two')");
    for i in 0..2 {
        c.psql(i, "ALTER TABLE items ADD COLUMN price numeric");
    }
    c.start_ferry();
    let client = c.proxy_client().await;
    client
        .batch_execute(
            "INSERT INTO items VALUES (3, 'three', 9.5); UPDATE items SET price = 1 WHERE id = 1",
        )
        .await
        .unwrap();
    c.wait_equal(Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        c.psql(1, "SELECT string_agg(id || ':' || coalesce(price::text, '-'), ',' ORDER BY id) FROM items").trim(),
        "1:1,2:-,3:9.5"
    );
}

/// TRUNCATE travels in order with the row changes around it: rows written
/// before it (in the same transaction, or committed just before in the
/// same batch window) are gone on the replica, rows written after it stay;
/// tables truncated together with foreign keys between them, and keyless
/// tables, included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncate_is_replicated_in_order_with_the_rows_around_it() {
    let c = Cluster::started(
        env!("CARGO_BIN_EXE_ferry"),
        2,
        "CREATE TABLE parent (id int PRIMARY KEY, v text);
         CREATE TABLE child (id int PRIMARY KEY, p int NOT NULL REFERENCES parent);
         CREATE TABLE notes (v text);",
    );
    let client = c.proxy_client().await;
    client
        .batch_execute(
            "INSERT INTO parent SELECT g, 'old' FROM generate_series(1, 50) g; \
             INSERT INTO child SELECT g, g FROM generate_series(1, 50) g; \
             INSERT INTO notes VALUES ('old')",
        )
        .await
        .unwrap();
    c.wait_equal(Duration::from_secs(10)).await.unwrap();
    // Within one batch window: a committed update, then a transaction that
    // writes, truncates and writes again.
    client
        .batch_execute(
            "UPDATE parent SET v = 'updated' WHERE id = 7; \
             BEGIN; \
             INSERT INTO parent VALUES (100, 'before'); INSERT INTO notes VALUES ('before'); \
             TRUNCATE parent, child; TRUNCATE notes; \
             INSERT INTO parent VALUES (7, 'after'), (8, 'after'); \
             INSERT INTO child VALUES (1, 7); INSERT INTO notes VALUES ('after'); \
             COMMIT; \
             UPDATE parent SET v = 'later' WHERE id = 8",
        )
        .await
        .unwrap();
    c.wait_equal(Duration::from_secs(10)).await.unwrap();
    let rows = |sql: &str| c.psql(1, sql).trim().to_string();
    assert_eq!(
        rows("SELECT string_agg(id || '=' || v, ',' ORDER BY id) FROM parent"),
        "7=after,8=later"
    );
    assert_eq!(
        rows("SELECT string_agg(id || '>' || p, ',') FROM child"),
        "1>7"
    );
    assert_eq!(rows("SELECT string_agg(v, ',') FROM notes"), "after");
    // And across batches: a plain TRUNCATE on its own.
    client.batch_execute("TRUNCATE child").await.unwrap();
    c.wait_equal(Duration::from_secs(10)).await.unwrap();
    assert_eq!(rows("SELECT count(*) FROM child"), "0");
}

/// A batch that fails on one replica stops shipping to that replica only,
/// with the error, the batch id and the failing statement in /status; the
/// other replica goes on, and the paused one catches up once the cause is
/// gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_failing_on_one_replica_pauses_that_replica_only() {
    let c = Cluster::started(
        env!("CARGO_BIN_EXE_ferry"),
        3,
        "CREATE TABLE items (id int PRIMARY KEY, name text);",
    );
    // Only replica b refuses duplicate names.
    c.psql(1, "CREATE UNIQUE INDEX items_name_on_b ON items (name)");
    let client = c.proxy_client().await;
    client
        .batch_execute("INSERT INTO items VALUES (1, 'same'), (2, 'same')")
        .await
        .unwrap();
    let node_b = |c: &Cluster| c.node_doc("b");
    let b = eventually(Duration::from_secs(20), "failure shown", || {
        let b = node_b(&c);
        if b["failed_statement"].is_string() {
            Ok(b)
        } else {
            Err(b)
        }
    })
    .await;
    assert!(
        b["failed_statement"]
            .as_str()
            .is_some_and(|s| s.starts_with("INSERT INTO \"public\".\"items\"")),
        "{b}"
    );
    assert!(b["failed_batch"].as_i64().is_some_and(|id| id > 0), "{b}");
    assert!(
        b["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("items_name_on_b")),
        "{b}"
    );
    // Replica c has everything; later writes keep reaching it.
    client
        .batch_execute("INSERT INTO items VALUES (3, 'other')")
        .await
        .unwrap();
    c.wait_psql(
        2,
        "SELECT count(*) FROM items",
        "3",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(c.psql(1, "SELECT count(*) FROM items").trim(), "0");
    // The cause removed, b catches up and the failure is cleared.
    c.psql(1, "DROP INDEX items_name_on_b");
    c.wait_equal(Duration::from_secs(20)).await.unwrap();
    eventually(Duration::from_secs(10), "failure cleared", || {
        let b = node_b(&c);
        if b["failed_statement"].is_null() {
            Ok(())
        } else {
            Err(b)
        }
    })
    .await;
}
