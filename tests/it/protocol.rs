//! The PostgreSQL wire protocol through Ferry: clients, authentication,
//! cancel, and hostile input that must never take Ferry down.

use bytes::BytesMut;
use ferry_testkit::raw::{login as raw_login, read_msg};
use ferry_testkit::{Cluster, Options, PASSWORD, USER};
use futures_util::{SinkExt, StreamExt, TryStreamExt};
use postgres_protocol::message::backend::Message;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use tokio_postgres::{AsyncMessage, NoTls};

const SCHEMA: &str = "CREATE TABLE items (id int PRIMARY KEY, name text, data bytea, price numeric(8,2), seen timestamptz);";

fn cluster(opts: Options) -> Cluster {
    let mut c = Cluster::new(
        env!("CARGO_BIN_EXE_ferry"),
        Options {
            schema: SCHEMA.into(),
            nodes: 2,
            ..opts
        },
    );
    c.start_ferry();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_simple_extended_copy_notices_and_notifications() {
    let c = cluster(Options::default());
    let (client, mut conn) = tokio_postgres::connect(&c.proxy_url(), NoTls)
        .await
        .unwrap();
    let (tx, mut messages) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(m)) = stream.next().await {
            let _ = tx.send(m);
        }
    });
    // Simple protocol, several statements in one query.
    client
        .batch_execute("INSERT INTO items (id, name) VALUES (1, 'one'); INSERT INTO items (id, name) VALUES (2, 'two')")
        .await
        .unwrap();
    // Extended protocol with binary parameters and results.
    let stmt = client
        .prepare("INSERT INTO items (id, name, data, seen) VALUES ($1, $2, $3, now()) RETURNING id + 1000")
        .await
        .unwrap();
    let payload: Vec<u8> = (0..=255u8).collect();
    let back: i32 = client
        .query_one(&stmt, &[&3i32, &"three", &payload])
        .await
        .unwrap()
        .get(0);
    assert_eq!(back, 1003);
    let data: Vec<u8> = client
        .query_one("SELECT data FROM items WHERE id = $1", &[&3i32])
        .await
        .unwrap()
        .get(0);
    assert_eq!(data, payload);
    // Pipelining: many queries in flight at once.
    let numbers: Vec<i32> = (0..20).collect();
    let futures: Vec<_> = numbers
        .iter()
        .map(|i| async { client.query_one("SELECT $1::int4 * 2", &[i]).await })
        .collect();
    let results = futures_util::future::try_join_all(futures).await.unwrap();
    assert_eq!(results.iter().map(|r| r.get::<_, i32>(0)).sum::<i32>(), 380);
    // Transactions: a rolled-back one leaves nothing.
    client
        .batch_execute("BEGIN; INSERT INTO items (id) VALUES (99); ROLLBACK")
        .await
        .unwrap();
    // COPY in and out.
    let sink = client
        .copy_in("COPY items (id, name) FROM STDIN")
        .await
        .unwrap();
    let mut sink = std::pin::pin!(sink);
    sink.send(bytes::Bytes::from_static(b"10\tten\n11\televen\n"))
        .await
        .unwrap();
    assert_eq!(sink.finish().await.unwrap(), 2);
    let out: Vec<bytes::Bytes> = client
        .copy_out("COPY (SELECT id FROM items ORDER BY id) TO STDOUT")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(out.concat(), b"1\n2\n3\n10\n11\n");
    // Errors pass through unchanged.
    let err = client.query_one("SELECT 1 / 0", &[]).await.unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("22012"));
    // Notices and notifications pass through.
    client
        .batch_execute("DO $$ BEGIN RAISE NOTICE 'hello from the server'; END $$")
        .await
        .unwrap();
    client
        .batch_execute("LISTEN ch; NOTIFY ch, 'payload'")
        .await
        .unwrap();
    let mut notice = false;
    let mut notification = false;
    while !(notice && notification) {
        match tokio::time::timeout(Duration::from_secs(5), messages.recv()).await {
            Ok(Some(AsyncMessage::Notice(n))) => notice |= n.message() == "hello from the server",
            Ok(Some(AsyncMessage::Notification(n))) => notification |= n.payload() == "payload",
            Ok(Some(_)) => {}
            _ => panic!("notice {notice} notification {notification}"),
        }
    }
    c.wait_equal(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_runs_statements_copy_and_prepared_queries() {
    let c = cluster(Options::default());
    let script = "INSERT INTO items (id, name) VALUES (1, 'a');\n\
                  BEGIN; UPDATE items SET name = 'b' WHERE id = 1; COMMIT;\n\
                  PREPARE p(int) AS SELECT name FROM items WHERE id = $1;\n\
                  EXECUTE p(1);\n\
                  \\copy items (id, name) from stdin\n5\tfive\n\\.\n\
                  SELECT count(*) FROM items;\n";
    let mut child = std::process::Command::new("psql")
        .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", &c.proxy_url()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("psql");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.lines().collect::<Vec<_>>(), ["b", "2"]);
    c.wait_equal(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_unknown_user_and_database_are_refused_with_sqlstates() {
    let c = cluster(Options::default());
    let url = |user: &str, pw: &str, db: &str| {
        format!("postgresql://{user}:{pw}@127.0.0.1:{}/{db}", c.proxy_port)
    };
    let code = |r: Result<_, tokio_postgres::Error>| {
        r.err().and_then(|e| e.code().map(|c| c.code().to_string()))
    };
    let r = tokio_postgres::connect(&url(USER, "wrong", "app"), NoTls)
        .await
        .map(|_| ());
    assert_eq!(code(r).as_deref(), Some("28P01"));
    let r = tokio_postgres::connect(&url("nobody", PASSWORD, "app"), NoTls)
        .await
        .map(|_| ());
    assert_eq!(code(r).as_deref(), Some("28P01"));
    let r = tokio_postgres::connect(&url(USER, PASSWORD, "other"), NoTls)
        .await
        .map(|_| ());
    assert_eq!(code(r).as_deref(), Some("3D000"));
    // sslmode=prefer falls back to plain text when Ferry answers 'N'.
    let out = std::process::Command::new("psql")
        .args([
            "-X",
            "-At",
            "-c",
            "SELECT 1",
            &format!("{}?sslmode=prefer", c.proxy_url()),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_clients_and_scram_servers() {
    // Clients authenticate to Ferry with md5 (set through the environment);
    // Ferry authenticates to servers that demand SCRAM.
    let c = cluster(Options {
        server_password: Some("server-secret".into()),
        env: vec![("FERRY_PROXY_AUTH".into(), "md5".into())],
        ..Default::default()
    });
    let client = c.proxy_client().await;
    client
        .execute("INSERT INTO items (id, name) VALUES (7, 'seven')", &[])
        .await
        .unwrap();
    let wrong = format!("postgresql://{USER}:bad@127.0.0.1:{}/app", c.proxy_port);
    let err = tokio_postgres::connect(&wrong, NoTls).await.err().unwrap();
    assert_eq!(err.code().map(|c| c.code()), Some("28P01"));
    c.wait_equal(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_requests_reach_the_right_server_session() {
    let c = cluster(Options::default());
    let client = c.proxy_client().await;
    let token = client.cancel_token();
    let started = std::time::Instant::now();
    let sleeper = tokio::spawn(async move {
        client
            .query_one("SELECT pg_sleep(30)", &[])
            .await
            .map(|_| ())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    token.cancel_query(NoTls).await.unwrap();
    let err = sleeper.await.unwrap().unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("57014"));
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// Nodes named by their Unix-socket directory (`host=/dir port=N`, as
/// libpq reads it) are reached that way by every part of Ferry: client
/// sessions on the master, the batcher's shipping, reads on a replica,
/// cancel requests (here of a read running on the replica) and `ferry
/// verify`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_named_by_their_unix_socket_serve_every_path() {
    let c = cluster(Options {
        unix_sockets: true,
        env: vec![("FERRY_PROXY_READS".into(), "replicas".into())],
        ..Default::default()
    });
    let config = std::fs::read_to_string(&c.config_path).unwrap();
    assert!(config.contains("dsn = \"host=/"), "{config}");
    c.wait_replicas_serving(1).await;
    let client = c.proxy_client().await;
    client
        .execute("INSERT INTO items (id, name) VALUES (1, 'one')", &[])
        .await
        .unwrap();
    c.wait_equal(Duration::from_secs(10)).await.unwrap();
    // A read outside a transaction is served by the replica, b.
    let port: String = client
        .query_one("SELECT current_setting('port')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(port, c.servers[1].port.to_string());
    // A long read runs on the replica: the client's cancel must reach it
    // there, not (only) the idle master session.
    let token = client.cancel_token();
    let reader = tokio::spawn(async move {
        client
            .query_one("SELECT count(*) FROM generate_series(1, 2000000000)", &[])
            .await
            .map(|_| ())
    });
    // Cancel once it runs there: a cancel that arrives before the query
    // executes is ignored (PostgreSQL shows a statement active from its
    // Parse on, and ignores a cancel while it reads the Bind that follows).
    c.wait_psql(
        1,
        "SELECT count(*) FROM pg_stat_activity \
         WHERE state = 'active' AND query LIKE '%generate_series(1, 2000000000)%' \
         AND clock_timestamp() - query_start > interval '300 ms' AND pid <> pg_backend_pid()",
        "1",
        Duration::from_secs(20),
    )
    .await;
    token.cancel_query(NoTls).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the cancel reached the replica")
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("57014"));
    let (ok, table) = c.verify(5);
    assert!(ok, "{table}");
}

/// Reads until the connection closes; returns the SQLSTATE of an error seen.
fn error_then_close(s: &mut TcpStream) -> Option<String> {
    let mut buf = BytesMut::new();
    let mut code = None;
    while let Some(m) = read_msg(s, &mut buf) {
        if let Message::ErrorResponse(e) = m {
            use fallible_iterator::FallibleIterator;
            let mut f = e.fields();
            while let Ok(Some(field)) = f.next() {
                if field.type_() == b'C' {
                    code = Some(String::from_utf8_lossy(field.value_bytes()).into_owned());
                }
            }
        }
    }
    code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_gets_an_error_or_a_close_and_others_keep_working() {
    let c = cluster(Options::default());
    let port = c.proxy_port;
    let healthy = c.proxy_client().await;
    let pre_startup: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        vec![0x7f, 0xff, 0xff, 0xff],
        vec![0, 0, 0, 3],
        vec![0, 0, 0, 8, 0, 2, 0, 0],
        vec![0, 0, 0, 12, 0, 3, 0, 0, b'u', b's', b'e', b'r'],
    ];
    for bytes in pre_startup {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(&bytes).unwrap();
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    }
    // After login: a length of 2^31-1, an unknown type, a negative length.
    for bytes in [
        vec![b'Q', 0x7f, 0xff, 0xff, 0xff],
        vec![b'!', 0, 0, 0, 4],
        vec![b'Q', 0xff, 0xff, 0xff, 0xf0],
    ] {
        let mut s = raw_login(port);
        s.write_all(&bytes).unwrap();
        assert_eq!(
            error_then_close(&mut s).as_deref(),
            Some("08P01"),
            "{bytes:?}"
        );
    }
    // A truncated message and then a closed socket.
    let mut s = raw_login(port);
    s.write_all(&[b'Q', 0, 0, 0, 100, b'S', b'E']).unwrap();
    drop(s);
    // Random garbage, before and after login (deterministic seed).
    let mut x: u64 = 42;
    for round in 0..100 {
        let len = 1 + (round * 7) % 64;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                (x >> 56) as u8
            })
            .collect();
        let mut s = if round % 2 == 0 {
            TcpStream::connect(("127.0.0.1", port)).unwrap()
        } else {
            raw_login(port)
        };
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(&bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    }
    // Ferry is still up and the existing session still works.
    let v: i32 = healthy
        .query_one("SELECT 41 + 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, 42);
    let fresh = c.proxy_client().await;
    fresh
        .execute("INSERT INTO items (id) VALUES (1)", &[])
        .await
        .unwrap();
    c.wait_equal(Duration::from_secs(10)).await.unwrap();
}
