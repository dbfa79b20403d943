//! Sequences: their positions travel with the batches, so a replica
//! promoted later never hands out a value the master already used.

use ferry_testkit::Cluster;
use std::time::Duration;

/// A replica promoted by hand hands out sequence values above every value
/// the master handed out: serial, identity and explicit sequences, also
/// values taken with nextval() and never stored in a row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_positions_travel_with_the_batches() {
    let c = Cluster::started(
        env!("CARGO_BIN_EXE_ferry"),
        2,
        "CREATE TABLE ser (id serial PRIMARY KEY, v text);
         CREATE TABLE idt (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text);
         CREATE SEQUENCE order_no START 1000;
         CREATE TABLE orders (no bigint PRIMARY KEY DEFAULT nextval('order_no'), v text);
         CREATE SCHEMA other;
         CREATE SEQUENCE other.unrelated;",
    );
    let client = c.proxy_client().await;
    for _ in 0..30 {
        client
            .batch_execute(
                "INSERT INTO ser (v) VALUES ('x'); INSERT INTO idt (v) VALUES ('x'); \
                 INSERT INTO orders (v) VALUES ('x')",
            )
            .await
            .unwrap();
    }
    // Values handed out but never stored (a rolled-back insert, a bare
    // nextval) must not be handed out again either.
    client
        .batch_execute("BEGIN; INSERT INTO ser (v) VALUES ('gone'); ROLLBACK")
        .await
        .unwrap();
    let taken: i64 = client
        .query_one("SELECT nextval('order_no')", &[])
        .await
        .unwrap()
        .get(0);
    client
        .batch_execute("SELECT nextval('other.unrelated')")
        .await
        .unwrap();
    c.wait_equal(Duration::from_secs(10)).await.unwrap();
    // The sequence-only change travels on its own batch, too.
    c.wait_psql(
        1,
        "SELECT last_value FROM order_no",
        &taken.to_string(),
        Duration::from_secs(10),
    )
    .await;
    // Promote by hand: write to the replica directly.
    let replica = c.node_client(1).await;
    let ser: i32 = replica
        .query_one("INSERT INTO ser (v) VALUES ('new') RETURNING id", &[])
        .await
        .unwrap()
        .get(0);
    let idt: i64 = replica
        .query_one("INSERT INTO idt (v) VALUES ('new') RETURNING id", &[])
        .await
        .unwrap()
        .get(0);
    let no: i64 = replica
        .query_one("INSERT INTO orders (v) VALUES ('new') RETURNING no", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(ser, 32, "serial continues after the rolled-back value 31");
    assert_eq!(idt, 31);
    assert_eq!(no, taken + 1);
    // Sequences outside the replicated patterns stay where they were.
    assert_eq!(
        c.psql(1, "SELECT is_called FROM other.unrelated").trim(),
        "f"
    );
    // A sequence created while Ferry runs (replica first) travels too.
    c.psql(1, "SET ROLE app; CREATE SEQUENCE late_seq");
    c.psql(0, "SET ROLE app; CREATE SEQUENCE late_seq");
    client
        .batch_execute("SELECT nextval('late_seq'); SELECT nextval('late_seq')")
        .await
        .unwrap();
    c.wait_psql(
        1,
        "SELECT last_value FROM late_seq",
        "2",
        Duration::from_secs(15),
    )
    .await;
}
