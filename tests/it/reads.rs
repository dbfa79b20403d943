//! Reads on replicas: `proxy.reads = "causal"` never lets a session miss
//! its own write; reads inside transactions and in pinned sessions stay on
//! the master. `SHOW port` tells which server answered.

use ferry_testkit::{Cluster, Options};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, SimpleQueryMessage};

const SCHEMA: &str = "CREATE TABLE mine (id bigint PRIMARY KEY);
                      CREATE TABLE noise (id int PRIMARY KEY, v bigint NOT NULL);
                      INSERT INTO noise SELECT g, 0 FROM generate_series(1, 20) g;";

async fn cluster(reads: &str) -> Cluster {
    let mut c = Cluster::new(
        env!("CARGO_BIN_EXE_ferry"),
        Options {
            nodes: 3,
            schema: SCHEMA.into(),
            env: vec![("FERRY_PROXY_READS".into(), reads.into())],
            ..Default::default()
        },
    );
    c.start_ferry();
    c.wait_replicas_serving(2).await;
    c
}

/// The first column of the first row of a simple query (simple protocol:
/// the kind of statement Ferry may route).
async fn one(client: &Client, sql: &str) -> String {
    for m in client.simple_query(sql).await.unwrap() {
        if let SimpleQueryMessage::Row(r) = m {
            return r.get(0).unwrap_or_default().to_string();
        }
    }
    panic!("no row from {sql}");
}

/// The port of the server that answered a query sent through the
/// extended protocol with the unnamed statement (`query_typed`: Parse,
/// Bind, Describe, Execute, Sync, all unnamed).
async fn unnamed(client: &Client) -> String {
    let rows = client
        .query_typed(
            "SELECT current_setting('port'), $1::int",
            &[(&7i32, Type::INT4)],
        )
        .await
        .unwrap();
    rows[0].get::<_, String>(0)
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn causal_reads_never_miss_the_session_s_own_writes() {
    let c = cluster("causal").await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut noise = Vec::new();
    for w in 0..2 {
        let client = c.proxy_client().await;
        let stop = stop.clone();
        noise.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                client
                    .batch_execute(&format!(
                        "UPDATE noise SET v = v + 1 WHERE id = {}",
                        (n * 2 + w) % 20 + 1
                    ))
                    .await
                    .unwrap();
                n += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    let client = c.proxy_client().await;
    let (_, before) = c.admin_get("/metrics");
    for id in 1..=10_000i64 {
        client
            .batch_execute(&format!("INSERT INTO mine VALUES ({id})"))
            .await
            .unwrap();
        if id % 50 == 0 {
            // Give the replicas time to apply it: this read may go there.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let seen = one(
            &client,
            &format!("SELECT count(*) FROM mine WHERE id = {id}"),
        )
        .await;
        assert_eq!(seen, "1", "read {id} missed the session's own write");
    }
    stop.store(true, Ordering::Relaxed);
    for n in noise {
        n.await.unwrap();
    }
    let (_, after) = c.admin_get("/metrics");
    let on_replicas =
        metric(&after, "ferry_reads_replica_total") - metric(&before, "ferry_reads_replica_total");
    let on_master =
        metric(&after, "ferry_reads_master_total") - metric(&before, "ferry_reads_master_total");
    assert!(on_replicas >= 100, "replicas served {on_replicas} reads");
    assert!(on_master > 0, "reads right after a write go to the master");
    assert_eq!(on_replicas + on_master, 10_000);
    c.wait_equal(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_and_pinned_sessions_read_on_the_master() {
    let c = cluster("replicas").await;
    let master_port = c.servers[0].port.to_string();
    let replica_ports: Vec<String> = c.servers[1..].iter().map(|s| s.port.to_string()).collect();
    let client = c.proxy_client().await;
    // A plain read outside a transaction: a replica.
    let port = one(&client, "SHOW port").await;
    assert!(replica_ports.contains(&port), "served by {port}");
    // Inside a transaction: the master, for every statement.
    client.batch_execute("BEGIN").await.unwrap();
    assert_eq!(one(&client, "SHOW port").await, master_port);
    client.batch_execute("COMMIT").await.unwrap();
    assert!(replica_ports.contains(&one(&client, "SHOW port").await));
    // Writes and statements that may write: the master.
    assert_eq!(
        one(
            &client,
            "INSERT INTO mine VALUES (1) RETURNING current_setting('port')"
        )
        .await,
        master_port
    );
    // Extended protocol: a cycle that uses only the unnamed statement and
    // portal (what JDBC, psycopg and libpq's PQexecParams send) is a read
    // like a Query, and so is one that runs a statement the session
    // prepared under a name (JDBC and psycopg once a statement has run a
    // few times, tokio-postgres always): the replica connection parses it
    // once. Inside a transaction, both go to the master.
    assert!(replica_ports.contains(&unnamed(&client).await));
    let prepared = client
        .prepare("SELECT current_setting('port')")
        .await
        .unwrap();
    for _ in 0..3 {
        let row = client.query_one(&prepared, &[]).await.unwrap();
        assert!(replica_ports.contains(&row.get::<_, String>(0)));
    }
    client.batch_execute("BEGIN").await.unwrap();
    assert_eq!(unnamed(&client).await, master_port);
    let row = client.query_one(&prepared, &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), master_port);
    client.batch_execute("COMMIT").await.unwrap();
    // A named statement that writes runs on the master.
    let insert = client
        .prepare("INSERT INTO mine VALUES (3) RETURNING current_setting('port')")
        .await
        .unwrap();
    let row = client.query_one(&insert, &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), master_port);
    // A session that sets something is pinned to the master from then on.
    let pinned = c.proxy_client().await;
    assert!(replica_ports.contains(&one(&pinned, "SHOW port").await));
    pinned
        .batch_execute("SET application_name = 'pinned'")
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(one(&pinned, "SHOW port").await, master_port);
    }
    // So is one that sets something among other statements of one query
    // string (the whole string counts as a write).
    let mixed = c.proxy_client().await;
    assert!(replica_ports.contains(&one(&mixed, "SHOW port").await));
    mixed
        .batch_execute("SET search_path = nowhere, public; INSERT INTO mine VALUES (2)")
        .await
        .unwrap();
    assert_eq!(one(&mixed, "SHOW search_path").await, "nowhere, public");
    assert_eq!(one(&mixed, "SHOW port").await, master_port);
    drop(mixed);
    // It gave its replica place back: only the first session reads from
    // a replica now.
    let (_, metrics) = c.admin_get("/metrics");
    let reading: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("ferry_read_sessions{"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum();
    assert_eq!(reading, 1, "{metrics}");
    // So is one that sets a session setting with set_config() (row-level
    // security commonly reads such settings), by simple query or by the
    // extended protocol: a replica session would not have it.
    for by_parameter in [false, true] {
        let tenant = c.proxy_client().await;
        assert!(replica_ports.contains(&one(&tenant, "SHOW port").await));
        if by_parameter {
            tenant
                .query("SELECT set_config('app.tenant', $1, false)", &[&"42"])
                .await
                .unwrap();
        } else {
            one(&tenant, "SELECT set_config('app.tenant', '42', false)").await;
        }
        assert_eq!(one(&tenant, "SHOW app.tenant").await, "42");
        assert_eq!(one(&tenant, "SHOW port").await, master_port);
    }
    // So is one with a temporary table, which exists only there.
    let temp = c.proxy_client().await;
    temp.batch_execute("CREATE TEMP TABLE scratch (a int); INSERT INTO scratch VALUES (7)")
        .await
        .unwrap();
    assert_eq!(one(&temp, "SELECT a FROM scratch").await, "7");
    // DISCARD ALL (what a connection pool sends when it takes a connection
    // back) leaves the session holding nothing of its own: its reads go to
    // a replica again. Inside a transaction the server refuses it, and the
    // session stays pinned.
    temp.batch_execute("BEGIN").await.unwrap();
    assert!(temp.batch_execute("DISCARD ALL").await.is_err());
    temp.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(one(&temp, "SHOW port").await, master_port);
    temp.batch_execute("DISCARD ALL").await.unwrap();
    assert!(replica_ports.contains(&one(&temp, "SHOW port").await));
    assert_eq!(one(&pinned, "SHOW port").await, master_port);
    pinned.batch_execute("DISCARD ALL").await.unwrap();
    assert!(replica_ports.contains(&one(&pinned, "SHOW port").await));
    assert_eq!(one(&pinned, "SHOW application_name").await, "");
    let (_, metrics) = c.admin_get("/metrics");
    assert!(
        metric(&metrics, "ferry_reads_replica_total") >= 3,
        "{metrics}"
    );
}

/// Sessions spread over the replicas by load: eight sessions over two
/// replicas read four and four (a choice by chance would leave six or more
/// on one about a third of the time), and `/metrics` shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_sessions_spread_evenly_over_the_replicas() {
    let c = cluster("replicas").await;
    let mut clients = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..8 {
        let client = c.proxy_client().await;
        ports.push(one(&client, "SHOW port").await);
        clients.push(client);
    }
    for i in 1..3 {
        let port = c.servers[i].port.to_string();
        let on = ports.iter().filter(|p| **p == port).count();
        assert_eq!(on, 4, "node {i} serves {on} of the sessions: {ports:?}");
    }
    let (_, metrics) = c.admin_get("/metrics");
    for node in ["b", "c"] {
        let line = format!("ferry_read_sessions{{replica=\"{node}\"}} 4");
        assert!(metrics.contains(&line), "no `{line}` in {metrics}");
    }
    // Sessions that end give their place back.
    drop(clients);
    ferry_testkit::eventually(Duration::from_secs(5), "read sessions released", || {
        let (_, metrics) = c.admin_get("/metrics");
        if metrics.contains("ferry_read_sessions{replica=\"b\"} 0")
            && metrics.contains("ferry_read_sessions{replica=\"c\"} 0")
        {
            Ok(())
        } else {
            Err(metrics)
        }
    })
    .await;
}

/// A replica that fails mid-session costs at most one read (SQLSTATE 08006,
/// retriable); the session's reads go to the master meanwhile and, once
/// Ferry sees that replica no longer serves, to the other replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_fails_costs_one_read_not_the_session() {
    let c = cluster("replicas").await;
    let master_port = c.servers[0].port.to_string();
    let client = c.proxy_client().await;
    let port = one(&client, "SHOW port").await;
    let i = c
        .servers
        .iter()
        .position(|s| s.port.to_string() == port)
        .expect("a replica answered");
    assert!(i > 0);
    let other_port = c.servers[3 - i].port.to_string();
    c.servers[i].stop().unwrap();
    let mut errors = 0;
    let mut on_other = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !on_other && std::time::Instant::now() < deadline {
        match client.simple_query("SHOW port").await {
            Ok(messages) => {
                let answered = messages.iter().find_map(|m| match m {
                    SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                    _ => None,
                });
                let answered = answered.unwrap_or_default();
                assert!(
                    answered == master_port || answered == other_port,
                    "answered by {answered}, the stopped replica is {port}"
                );
                on_other = answered == other_port;
            }
            Err(e) => {
                assert_eq!(e.code().map(|c| c.code()), Some("08006"), "{e}");
                errors += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(errors <= 1, "{errors} reads failed");
    assert!(on_other, "reads never moved to the other replica");
    client
        .batch_execute("INSERT INTO mine VALUES (42)")
        .await
        .unwrap();
    c.servers[i].start().unwrap();
}

/// A statement that looks like a read but writes (a view over a volatile
/// function) fails on the replica, read-only there, instead of changing it
/// behind the master's back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_writes_after_all_cannot_change_a_replica() {
    let mut c = Cluster::new(
        env!("CARGO_BIN_EXE_ferry"),
        Options {
            nodes: 2,
            schema: format!(
                "{SCHEMA}
                 CREATE FUNCTION sneaky() RETURNS bigint LANGUAGE sql VOLATILE
                   AS 'INSERT INTO mine VALUES (999) RETURNING id';
                 CREATE VIEW looks_harmless AS SELECT sneaky() AS id;"
            ),
            env: vec![("FERRY_PROXY_READS".into(), "replicas".into())],
            ..Default::default()
        },
    );
    c.start_ferry();
    c.wait_replicas_serving(1).await;
    let client = c.proxy_client().await;
    let err = client
        .simple_query("SELECT id FROM looks_harmless")
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("25006"), "{err}");
    assert_eq!(c.psql(1, "SELECT count(*) FROM mine").trim(), "0");
    assert_eq!(c.psql(0, "SELECT count(*) FROM mine").trim(), "0");
    // The session goes on.
    assert_eq!(one(&client, "SELECT count(*) FROM mine").await, "0");
}

/// A client may bind the unnamed statement again without parsing it anew
/// (libpq's `PQprepare(conn, "", …)` then `PQexecPrepared(conn, "", …)`).
/// Parsed in a cycle that ran on a replica, it is parsed on the master too
/// before such a bind, and the client sees only the answers it asked for.
/// Named statements run on the replica, which makes them first as the
/// master has them, unseen by the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_parsed_on_one_server_run_on_the_other_unseen() {
    use bytes::BytesMut;
    use ferry_testkit::raw::{login, read_msg};
    use postgres_protocol::message::backend::Message;
    use postgres_protocol::message::frontend;
    use std::io::Write;

    let c = cluster("replicas").await;
    let master_port = c.servers[0].port.to_string();
    let mut s = login(c.proxy_port);
    let mut buf = BytesMut::new();
    // Reads every message up to ReadyForQuery: their tags, and the first
    // column of the rows.
    let mut answer = |s: &mut std::net::TcpStream| {
        let mut tags = String::new();
        let mut values = Vec::new();
        loop {
            let m = read_msg(s, &mut buf).expect("the connection closed");
            tags.push(match &m {
                Message::ParseComplete => '1',
                Message::BindComplete => '2',
                Message::RowDescription(_) => 'T',
                Message::DataRow(row) => {
                    let body = row.buffer();
                    let len = i32::from_be_bytes([body[0], body[1], body[2], body[3]]) as usize;
                    values.push(String::from_utf8_lossy(&body[4..4 + len]).into_owned());
                    'D'
                }
                Message::CommandComplete(_) => 'C',
                Message::CloseComplete => '3',
                Message::ErrorResponse(_) => 'E',
                Message::ReadyForQuery(_) => 'Z',
                _ => '?',
            });
            if tags.ends_with('Z') {
                return (tags, values);
            }
        }
    };
    let mut out = BytesMut::new();
    for round in 0..3 {
        // Parse the unnamed statement alone: a read cycle, on a replica.
        out.clear();
        frontend::parse("", "SELECT current_setting('port')", [], &mut out).unwrap();
        frontend::sync(&mut out);
        s.write_all(&out).unwrap();
        assert_eq!(answer(&mut s).0, "1Z", "round {round}");
        // Bind and run it without parsing it: the master, which parses it
        // first; its ParseComplete does not reach the client.
        out.clear();
        frontend::bind(
            "",
            "",
            [],
            [] as [Option<&[u8]>; 0],
            |_, _| Ok(postgres_protocol::IsNull::No),
            [],
            &mut out,
        )
        .map_err(|_| ())
        .unwrap();
        frontend::describe(b'P', "", &mut out).unwrap();
        frontend::execute("", 0, &mut out).unwrap();
        frontend::sync(&mut out);
        s.write_all(&out).unwrap();
        let (tags, values) = answer(&mut s);
        assert_eq!(tags, "2TDCZ", "round {round}");
        assert_eq!(values, std::slice::from_ref(&master_port), "round {round}");
    }
    // A named statement: parsed on the master, run on the replica, which
    // parses it first (the client sees no ParseComplete for that) ...
    let parse = |name: &str, sql: &str, out: &mut BytesMut| {
        frontend::parse(name, sql, [], out).unwrap();
        frontend::sync(out);
    };
    let run = |name: &str, out: &mut BytesMut| {
        frontend::bind(
            "",
            name,
            [],
            [] as [Option<&[u8]>; 0],
            |_, _| Ok(postgres_protocol::IsNull::No),
            [],
            out,
        )
        .map_err(|_| ())
        .unwrap();
        frontend::execute("", 0, out).unwrap();
        frontend::sync(out);
    };
    out.clear();
    parse("s1", "SELECT current_setting('port') || '/1'", &mut out);
    s.write_all(&out).unwrap();
    assert_eq!(answer(&mut s).0, "1Z");
    for _ in 0..2 {
        out.clear();
        run("s1", &mut out);
        s.write_all(&out).unwrap();
        let (tags, values) = answer(&mut s);
        assert_eq!(tags, "2DCZ");
        assert_ne!(values[0], format!("{master_port}/1"));
        assert!(values[0].ends_with("/1"), "{values:?}");
    }
    // ... and, closed and made again under the same name with another
    // text, it is made anew there (Close and Parse, unseen by the client).
    out.clear();
    frontend::close(b'S', "s1", &mut out).unwrap();
    frontend::sync(&mut out);
    s.write_all(&out).unwrap();
    assert_eq!(answer(&mut s).0, "3Z");
    out.clear();
    parse("s1", "SELECT current_setting('port') || '/2'", &mut out);
    s.write_all(&out).unwrap();
    assert_eq!(answer(&mut s).0, "1Z");
    out.clear();
    run("s1", &mut out);
    s.write_all(&out).unwrap();
    let (tags, values) = answer(&mut s);
    assert_eq!(tags, "2DCZ");
    assert!(values[0].ends_with("/2"), "{values:?}");
    assert_ne!(values[0], format!("{master_port}/2"));
    // A simple Query still works after it, on a replica.
    out.clear();
    frontend::query("SHOW port", &mut out).unwrap();
    s.write_all(&out).unwrap();
    let (tags, values) = answer(&mut s);
    assert_eq!(tags, "TDCZ");
    assert_ne!(values, [master_port]);
}
