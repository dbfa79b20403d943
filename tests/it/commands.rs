//! The `ferry` commands as a user runs them: demo, init, run with a bad
//! configuration, and the shipped docker-compose setup.

use ferry::config::Config;
use ferry_testkit::{Cluster, Options};
use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn demo_creates_a_cluster_replicates_a_workload_and_stops_cleanly() {
    let dir = std::env::temp_dir().join(format!("ferry-demo-test-{}", std::process::id()));
    // The demo's three servers listen on base, base+1, base+2: take them
    // from the harness's port counter in order.
    let base = ferry_localpg::free_port().unwrap();
    assert_eq!(ferry_localpg::free_port(), Some(base + 1));
    assert_eq!(ferry_localpg::free_port(), Some(base + 2));
    let proxy = ferry_localpg::free_port().unwrap();
    let admin = ferry_localpg::free_port().unwrap();
    let args = |d: &Path| {
        vec![
            "demo".to_string(),
            "--no-wait".into(),
            "--dir".into(),
            d.display().to_string(),
            "--base-port".into(),
            base.to_string(),
            "--listen".into(),
            format!("127.0.0.1:{proxy}"),
            "--admin".into(),
            format!("127.0.0.1:{admin}"),
        ]
    };
    for round in 0..2 {
        // The second run finds the directory and recreates it cleanly.
        let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(args(&dir))
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "round {round}:\n{text}");
        assert!(text.contains("all replicas equal the master"), "{text}");
        assert!(
            text.contains("replica") && text.contains("applied_batch"),
            "{text}"
        );
        if round == 1 {
            assert!(text.contains("recreating"), "{text}");
        }
        // Everything it started is stopped again.
        for n in ["a", "b", "c"] {
            assert!(
                !dir.join(n).join("postmaster.pid").exists(),
                "node {n} still running"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn compose_file_parses_and_its_configuration_is_accepted() {
    let compose = root().join("docker-compose.yml");
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, yaml; d = yaml.safe_load(open(sys.argv[1])); s = d['services']; \
             assert set(s) == {'pg-a', 'pg-b', 'pg-c', 'ferry'}, s; \
             f = s['ferry']; assert f['build'] == '.'; \
             assert '6432:6432' in f['ports'] and '9930:9930' in f['ports']; \
             print(f['volumes'][0].split(':')[0])",
        ])
        .arg(&compose)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mounted = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let config = root().join(mounted);
    let text = std::fs::read_to_string(&config).unwrap();
    let cfg = Config::parse(&text, &[]).unwrap();
    assert_eq!(cfg.nodes.len(), 3);
    assert!(root().join("Dockerfile").exists());
    assert!(root().join("docker/schema.sql").exists());
}

#[test]
fn run_refuses_an_invalid_configuration_naming_the_key() {
    let dir = std::env::temp_dir().join(format!("ferry-badcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(&path, "[proxy]\nlisten = \"127.0.0.1:6432\"\n[[nodes]]\nname = \"a\"\ndsn = \"postgresql://postgres@127.0.0.1:1/app\"\n[replication]\ntick_ms = 0\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("replication"), "{err}");
    assert!(err.contains("tick_ms"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn init_is_idempotent_and_names_what_differs_between_nodes() {
    let c = Cluster::new(
        env!("CARGO_BIN_EXE_ferry"),
        Options {
            nodes: 2,
            schema: "CREATE TABLE t (id int PRIMARY KEY, v text);".into(),
            ..Default::default()
        },
    );
    let config = c.config_path.display().to_string();
    // Differences made before Ferry was ever installed are refused.
    c.psql(1, "ALTER TABLE t ADD COLUMN extra int");
    c.psql(0, "CREATE TABLE only_on_master (id int PRIMARY KEY)");
    let out = c.ferry(&["init", "--config", &config]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("public.t: columns differ on b"), "{err}");
    assert!(err.contains("public.only_on_master: missing on b"), "{err}");
    // `run` refuses the same way.
    let out = c.ferry(&["run", "--config", &config]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing on b"));
    c.psql(
        1,
        "ALTER TABLE t DROP COLUMN extra; CREATE TABLE only_on_master (id int PRIMARY KEY)",
    );
    for _ in 0..2 {
        let out = c.ferry(&["init", "--config", &config]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("2 replicated tables"));
    }
    // Once installed, a table created on the master is on its way to the
    // replicas in the batch stream: not a difference.
    c.psql(0, "CREATE TABLE later (id int PRIMARY KEY)");
    let out = c.ferry(&["init", "--config", &config]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn benchmark_scripts_start_and_parse_their_options() {
    for (script, option) in [
        ("benchmarks/run", "--quick"),
        ("benchmarks/capture-cost", "--rounds"),
        ("benchmarks/sync-cost", "--rounds"),
        ("benchmarks/verify-cost", "--interval"),
        ("benchmarks/resume-cost", "--updates"),
        ("benchmarks/failover-time", "--trials"),
        ("benchmarks/compare-builds", "--before"),
        ("benchmarks/tls-cost", "--rounds"),
        ("benchmarks/paper", "--quick"),
        ("benchmarks/tables-scaling", "--tables"),
        ("benchmarks/big-transaction", "--rows"),
        ("benchmarks/switchover-time", "--switchovers"),
        ("benchmarks/retention-cost", "--compact-after"),
        ("benchmarks/init-cost", "--before"),
        ("benchmarks/run", "--no-paper"),
        ("benchmarks/run", "--no-scaling"),
    ] {
        let script = root().join(script);
        let out = Command::new("bash")
            .arg(&script)
            .arg("--help")
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains(option));
        let out = Command::new("bash")
            .arg(&script)
            .arg("--no-such-option")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
    }
}
