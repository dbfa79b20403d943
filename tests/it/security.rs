//! Who a session is: client sessions run as their own database roles,
//! never as Ferry's superuser, so that the servers' permissions and
//! row-level security apply through Ferry exactly as they do directly.

use ferry_testkit::{Cluster, DB, USER};
use std::time::Duration;
use tokio_postgres::NoTls;

const TENANTS: &str = "
CREATE TABLE docs (id int PRIMARY KEY, tenant text NOT NULL, body text);
ALTER TABLE docs ENABLE ROW LEVEL SECURITY;
ALTER TABLE docs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON docs
    USING (tenant = current_setting('app.tenant', true))
    WITH CHECK (tenant = current_setting('app.tenant', true));
CREATE TABLE parents (id int PRIMARY KEY);
CREATE TABLE children (id int PRIMARY KEY, parent int REFERENCES parents ON DELETE CASCADE);
CREATE FUNCTION add_family(p int) RETURNS void LANGUAGE sql SECURITY INVOKER AS $$
    INSERT INTO parents VALUES (p);
    INSERT INTO children VALUES (p * 10, p), (p * 10 + 1, p);
$$;
";

/// A client straight to node `i`'s server as the clients' role (the test
/// servers trust loopback logins).
async fn direct_as_app(c: &Cluster, i: usize) -> tokio_postgres::Client {
    let url = format!("postgresql://{USER}@127.0.0.1:{}/{DB}", c.servers[i].port);
    let (client, conn) = tokio_postgres::connect(&url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    tokio::spawn(conn);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_through_ferry_runs_as_its_own_role_and_is_no_superuser() {
    let c = Cluster::started(env!("CARGO_BIN_EXE_ferry"), 2, TENANTS);
    let client = c.proxy_client().await;
    let row = client
        .query_one(
            "SELECT current_user::text, rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .expect("who am I");
    assert_eq!(row.get::<_, String>(0), USER);
    assert!(
        !row.get::<_, bool>(1),
        "a session through Ferry is a superuser"
    );
    let e = client
        .batch_execute("COPY (SELECT 1) TO PROGRAM 'id'")
        .await
        .expect_err("COPY TO PROGRAM ran a shell command through Ferry");
    assert_eq!(e.code().map(|c| c.code()), Some("42501"), "{e:?}");
}

/// The ids of the rows tenant `acme` sees.
async fn acme_rows(client: &tokio_postgres::Client) -> Vec<i32> {
    client
        .batch_execute("SET app.tenant = 'acme'")
        .await
        .expect("set tenant");
    client
        .query("SELECT id FROM docs ORDER BY id", &[])
        .await
        .expect("select")
        .iter()
        .map(|r| r.get::<_, i32>(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_level_security_filters_through_ferry_as_it_does_directly() {
    let c = Cluster::started(env!("CARGO_BIN_EXE_ferry"), 2, TENANTS);
    let through = c.proxy_client().await;
    for (tenant, ids) in [("acme", [1, 2]), ("globex", [3, 4])] {
        through
            .batch_execute(&format!(
                "BEGIN; SET LOCAL app.tenant = '{tenant}';
                 INSERT INTO docs VALUES ({}, '{tenant}', 'x'), ({}, '{tenant}', 'y'); COMMIT",
                ids[0], ids[1]
            ))
            .await
            .expect("insert as a tenant");
    }
    let e = through
        .batch_execute(
            "BEGIN; SET LOCAL app.tenant = 'acme'; INSERT INTO docs VALUES (9, 'globex', 'z')",
        )
        .await
        .expect_err("a row for another tenant was accepted");
    assert_eq!(e.code().map(|c| c.code()), Some("42501"), "{e:?}");
    through.batch_execute("ROLLBACK").await.expect("rollback");
    let direct = direct_as_app(&c, 0).await;
    let (via_ferry, directly) = (acme_rows(&through).await, acme_rows(&direct).await);
    assert_eq!(directly, vec![1, 2]);
    assert_eq!(via_ferry, directly, "RLS differs through Ferry");
    // Every tenant's rows reached the replica (Ferry's own sessions see
    // them all).
    c.wait_psql(1, "SELECT count(*) FROM docs", "4", Duration::from_secs(20))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_by_an_ordinary_role_through_a_function_and_a_cascade_replicate() {
    let c = Cluster::started(env!("CARGO_BIN_EXE_ferry"), 2, TENANTS);
    let client = c.proxy_client().await;
    for p in 1..=5 {
        client
            .execute("SELECT add_family($1)", &[&p])
            .await
            .expect("write through a SECURITY INVOKER function");
    }
    client
        .batch_execute("DELETE FROM parents WHERE id IN (2, 4)")
        .await
        .expect("cascading delete");
    client
        .batch_execute(
            "CREATE TABLE made_by_app (id int PRIMARY KEY); INSERT INTO made_by_app VALUES (1)",
        )
        .await
        .expect("DDL by the application's role");
    c.wait_psql(
        1,
        "SELECT count(*) FROM children",
        "6",
        Duration::from_secs(20),
    )
    .await;
    c.wait_equal(Duration::from_secs(20))
        .await
        .unwrap_or_else(|d| panic!("{d}\n{}", c.ferry_log()));
    // The replica's copy of the new table belongs to the role that made it
    // on the master, so that the application can change it after a failover.
    assert_eq!(
        c.psql(
            1,
            "SELECT tableowner FROM pg_tables WHERE tablename = 'made_by_app'"
        )
        .trim(),
        USER
    );
    let (ok, out) = c.verify(5);
    assert!(ok, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_only_a_scram_verifier_ferry_passes_the_clients_login_through() {
    let mut c = Cluster::new(
        env!("CARGO_BIN_EXE_ferry"),
        ferry_testkit::Options {
            nodes: 2,
            schema: TENANTS.into(),
            // The servers ask for SCRAM over TCP.
            server_password: Some("pg-secret".into()),
            ..Default::default()
        },
    );
    // One verifier for the role on every node, and in Ferry's
    // configuration: Ferry never sees the password itself.
    let verifier = c
        .psql(0, "SELECT rolpassword FROM pg_authid WHERE rolname = 'app'")
        .trim()
        .to_string();
    assert!(verifier.starts_with("SCRAM-SHA-256$"), "{verifier}");
    c.psql(1, &format!("ALTER ROLE app PASSWORD '{verifier}'"));
    c.set_ferry_env("FERRY_USER_APP_PASSWORD", &verifier);
    c.start_ferry();
    let client = c.proxy_client().await;
    let who: String = client
        .query_one("SELECT current_user::text", &[])
        .await
        .expect("a session logged in with the client's keys")
        .get(0);
    assert_eq!(who, USER);
    client
        .execute("SELECT add_family($1)", &[&1])
        .await
        .expect("write");
    c.wait_psql(
        1,
        "SELECT count(*) FROM children",
        "2",
        Duration::from_secs(20),
    )
    .await;
    let wrong = format!("postgresql://{USER}:guess@127.0.0.1:{}/{DB}", c.proxy_port);
    let e = tokio_postgres::connect(&wrong, NoTls)
        .await
        .err()
        .expect("a wrong password");
    assert_eq!(e.code().map(|c| c.code()), Some("28P01"), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_to_a_role_the_replica_lacks_is_reported_in_status_and_the_log() {
    let c = Cluster::started(env!("CARGO_BIN_EXE_ferry"), 2, TENANTS);
    // Roles are per server: this one exists on the master only.
    c.psql(0, "CREATE ROLE auditor");
    let client = c.proxy_client().await;
    client
        .batch_execute("GRANT SELECT ON parents TO auditor")
        .await
        .expect("GRANT on the master");
    c.wait_status(Duration::from_secs(20), "the replica's warning", |d| {
        ferry_testkit::node(d, "b")["schema_warnings"]
            .as_array()
            .is_some_and(|w| {
                w.iter()
                    .any(|w| w.as_str().is_some_and(|w| w.contains("auditor")))
            })
    })
    .await;
    assert!(c.ferry_log().contains("did not apply on the replica"));
    let (_, health) = c.admin_get("/health");
    assert!(health.contains("auditor"), "{health}");
    // Replication goes on.
    client
        .execute("SELECT add_family($1)", &[&3])
        .await
        .expect("write");
    c.wait_psql(
        1,
        "SELECT count(*) FROM parents",
        "1",
        Duration::from_secs(20),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_lookup_the_masters_roles_log_in_without_being_listed() {
    let mut c = Cluster::new(
        env!("CARGO_BIN_EXE_ferry"),
        ferry_testkit::Options {
            nodes: 2,
            schema: TENANTS.into(),
            server_password: Some("pg-secret".into()),
            env: vec![("FERRY_PROXY_AUTH_LOOKUP".into(), "true".into())],
            ..Default::default()
        },
    );
    c.psql(0, "CREATE ROLE reader LOGIN PASSWORD 'read-pw'");
    let verifier = c
        .psql(
            0,
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'reader'",
        )
        .trim()
        .to_string();
    c.psql(
        1,
        &format!("CREATE ROLE reader LOGIN PASSWORD '{verifier}'"),
    );
    for i in 0..2 {
        c.psql(i, "GRANT SELECT ON parents TO reader");
    }
    c.start_ferry();
    let url =
        |user: &str, pw: &str| format!("postgresql://{user}:{pw}@127.0.0.1:{}/{DB}", c.proxy_port);
    let (reader, conn) = tokio_postgres::connect(&url("reader", "read-pw"), NoTls)
        .await
        .expect("a role of the master's, not listed in [[users]]");
    tokio::spawn(conn);
    let who: String = reader
        .query_one("SELECT current_user::text", &[])
        .await
        .expect("who")
        .get(0);
    assert_eq!(who, "reader");
    reader
        .query_one("SELECT count(*) FROM parents", &[])
        .await
        .expect("its grant");
    let e = reader
        .batch_execute("INSERT INTO parents VALUES (1)")
        .await
        .expect_err("a write it has no grant for");
    assert_eq!(e.code().map(|c| c.code()), Some("42501"), "{e:?}");
    for (user, pw) in [
        ("reader", "wrong"),
        ("postgres", "pg-secret"),
        ("nobody", "x"),
    ] {
        let e = tokio_postgres::connect(&url(user, pw), NoTls)
            .await
            .err()
            .unwrap_or_else(|| panic!("{user} logged in"));
        assert_eq!(e.code().map(|c| c.code()), Some("28P01"), "{user}: {e:?}");
    }
}

/// The capture triggers run with their owner's rights (so any role that
/// may write a table may capture into its outbox): an operator an ordinary
/// role defines in its own schema, ahead of pg_catalog in its search_path,
/// must not be what their bodies call. Before their search_path was fixed,
/// a role that could write a replicated table became a superuser this way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_in_the_callers_search_path_never_runs_with_capture_rights() {
    let c = Cluster::started(
        env!("CARGO_BIN_EXE_ferry"),
        2,
        "CREATE TABLE ledger (id int PRIMARY KEY, v int);
         CREATE EXTENSION citext;
         CREATE TABLE tags (name citext PRIMARY KEY, n int);",
    );
    for node in 0..2 {
        c.psql(
            node,
            "DO $$ BEGIN EXECUTE format('GRANT CREATE ON DATABASE %I TO app', current_database()); END $$",
        );
    }
    let client = c.proxy_client().await;
    // Exact matches for what the trigger bodies compare (row counts with
    // `>`, positions and keys with `=`), each trying to make its caller a
    // superuser before answering as the real operator would.
    client
        .batch_execute(
            "CREATE SCHEMA evil;
             CREATE FUNCTION evil.promote() RETURNS void LANGUAGE plpgsql AS $$
               BEGIN EXECUTE 'ALTER ROLE app SUPERUSER'; EXCEPTION WHEN OTHERS THEN NULL; END $$;
             CREATE FUNCTION evil.gt(bigint, integer) RETURNS boolean LANGUAGE plpgsql AS $$
               BEGIN PERFORM evil.promote(); RETURN $1 OPERATOR(pg_catalog.>) $2; END $$;
             CREATE FUNCTION evil.eq(integer, integer) RETURNS boolean LANGUAGE plpgsql AS $$
               BEGIN PERFORM evil.promote(); RETURN $1 OPERATOR(pg_catalog.=) $2; END $$;
             CREATE OPERATOR evil.> (LEFTARG = bigint, RIGHTARG = integer, FUNCTION = evil.gt);
             CREATE OPERATOR evil.= (LEFTARG = integer, RIGHTARG = integer, FUNCTION = evil.eq);",
        )
        .await
        .expect("an ordinary role defines operators in its own schema");
    client
        .batch_execute(
            "SET search_path = evil, pg_catalog, public;
             INSERT INTO public.ledger VALUES (1, 1), (2, 2);
             UPDATE public.ledger SET v = 3 WHERE id OPERATOR(pg_catalog.=) 1;
             DELETE FROM public.ledger WHERE id OPERATOR(pg_catalog.=) 2;",
        )
        .await
        .expect("writes with that search_path");
    let superuser = c.psql(0, "SELECT rolsuper FROM pg_roles WHERE rolname = 'app'");
    assert_eq!(
        superuser.trim(),
        "f",
        "a capture trigger ran the caller's operator with its owner's rights"
    );
    c.wait_psql(
        1,
        "SELECT string_agg(id || ':' || v, ',' ORDER BY id) FROM ledger",
        "1:3",
        Duration::from_secs(20),
    )
    .await;
    // A key of an extension's type still compares with its own `=`
    // (its schema is on the functions' path): deleting 'A' as 'a' ships.
    client
        .batch_execute(
            "RESET search_path;
             INSERT INTO tags VALUES ('A', 1), ('B', 2);
             DELETE FROM tags WHERE name = 'a';
             UPDATE tags SET n = 3 WHERE name = 'b';",
        )
        .await
        .expect("writes to a table keyed by citext");
    c.wait_psql(
        1,
        "SELECT string_agg(name || ':' || n, ',') FROM tags",
        "B:3",
        Duration::from_secs(20),
    )
    .await;
    // The function that names tables for the triggers runs without a
    // search_path of its own: only its owner may call it, so a session
    // cannot compile it first under a path of its choosing.
    let refused = client
        .batch_execute("SELECT ferry.touch('x', pg_current_xact_id())")
        .await
        .expect_err("ferry.touch is its owner's");
    assert_eq!(
        refused.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
        "{refused:?}"
    );
}

/// Ferry's capture functions write a table's outbox with their owner's
/// rights; an ordinary role that may create triggers (on a table of its
/// own) must not be able to attach one of them: fired from its own table,
/// it would put rows into another table's outbox, and the replicas would
/// take rows the master never had — a write, on the replicas, to a table
/// the role may not even write. (The DDL guard refuses a trigger on a
/// capture function named otherwise than Ferry's, so the sneak is named
/// like one of them.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordinary_role_cannot_fire_ferrys_capture_functions_from_its_own_triggers() {
    let c = Cluster::started(
        env!("CARGO_BIN_EXE_ferry"),
        2,
        "CREATE TABLE ledger (id int PRIMARY KEY, v int);",
    );
    let client = c.proxy_client().await;
    client
        .batch_execute("CREATE TABLE mine (id int PRIMARY KEY, v int)")
        .await
        .expect("the application's role creates a table of its own");
    let ledger_ins = c.psql(
        0,
        "SELECT p.oid::regproc FROM pg_proc p WHERE p.pronamespace = 'ferry'::regnamespace \
         AND p.proname LIKE 'c\\_public\\_ledger\\_%\\_ins'",
    );
    assert!(!ledger_ins.trim().is_empty(), "no capture function found");
    let direct = direct_as_app(&c, 0).await;
    let attached = direct
        .batch_execute(&format!(
            "CREATE TRIGGER ferry_sneak AFTER INSERT ON mine REFERENCING NEW TABLE AS ferry_new \
             FOR EACH STATEMENT EXECUTE FUNCTION {}()",
            ledger_ins.trim()
        ))
        .await;
    let code = attached.as_ref().err().and_then(|e| e.code()).cloned();
    direct
        .batch_execute("INSERT INTO mine VALUES (1, 99)")
        .await
        .expect("an insert into the role's own table");
    c.wait_psql(1, "SELECT count(*) FROM mine", "1", Duration::from_secs(20))
        .await;
    assert_eq!(
        c.psql(1, "SELECT count(*) FROM ledger").trim(),
        "0",
        "the replica's ledger took a row the master never had"
    );
    assert_eq!(
        code,
        Some(tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
        "attaching a capture function: {attached:?}"
    );
}
