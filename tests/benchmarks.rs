//! The benchmark scripts are not part of the suite, but they must stay
//! runnable: each starts, explains its options and refuses unknown ones
//! before it builds or starts anything.

use std::path::PathBuf;
use std::process::Command;

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../benchmarks")
        .join(name)
}

fn run(name: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new("bash")
        .arg(script(name))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running benchmarks/{name}: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn benchmark_scripts_explain_their_options() {
    for (name, options) in [
        (
            "run",
            &["--quick", "--rounds", "--seconds", "--no-paper"][..],
        ),
        ("paper", &["--quick", "--seconds", "--out-dir"][..]),
    ] {
        let (code, stdout, stderr) = run(name, &["--help"]);
        assert_eq!(code, 0, "benchmarks/{name} --help: {stderr}");
        for option in options {
            assert!(
                stdout.contains(option),
                "benchmarks/{name} --help does not mention {option}:\n{stdout}"
            );
        }
    }
}

#[test]
fn benchmark_scripts_refuse_unknown_options() {
    for name in ["run", "paper"] {
        let (code, _, stderr) = run(name, &["--no-such-option"]);
        assert_eq!(code, 2, "benchmarks/{name} --no-such-option: {stderr}");
        assert!(
            stderr.contains("unknown option --no-such-option"),
            "{stderr}"
        );
    }
}
