//! A test cluster's PostgreSQL servers: signals, restarts, connections,
//! background writes, psql.

use super::*;

impl Cluster {
    /// Signals every process of node `i`'s server (the postmaster's
    /// children first: running backends go on serving when only the
    /// postmaster is hit). `KILL` returns once they are all gone: a
    /// statement sent after it finds no backend that still reads it (a
    /// killed process lives on until it is next scheduled, on a busy
    /// machine long enough to take a statement that then never answers).
    pub fn signal_server(&self, i: usize, sig: &str) {
        let mut pids: Vec<i32> = Vec::new();
        if let Some(pid) = self.servers[i].pid() {
            let children = Command::new("pgrep")
                .args(["-P", &pid.to_string()])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            pids.extend(
                children
                    .lines()
                    .filter_map(|l| l.trim().parse::<i32>().ok()),
            );
            pids.push(pid);
            let _ = Command::new("pkill")
                .args([&format!("-{sig}"), "-P", &pid.to_string()])
                .status();
            // The postmaster by the pid read above: once its children die it
            // rewrites postmaster.pid to restart them, and a second read of
            // the file at that moment can find nothing (the server then
            // lived on, its children restarted).
            let _ = Command::new("kill")
                .args([format!("-{sig}"), pid.to_string()])
                .status();
        } else {
            let _ = self.servers[i].signal(sig);
        }
        if sig == "KILL" {
            // Gone, or a zombie (its sockets are closed by then).
            let alive = |pid: &i32| {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim().to_string()))
                    .is_some_and(|rest| !rest.starts_with('Z'))
            };
            let deadline = Instant::now() + Duration::from_secs(5);
            while pids.iter().any(alive) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    /// Starts node `i`'s server again after a kill -9. Its postmaster.pid
    /// is left behind, naming a process that is gone or a zombie (a
    /// container's init may not reap it), which the new postmaster would
    /// take for a server still running: such a file is removed first.
    pub fn restart_server(&self, i: usize) -> Result<(), ferry_localpg::LocalPgError> {
        let server = &self.servers[i];
        let running = |pid: &str| {
            std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
                .ok()
                .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim().to_string()))
                .is_some_and(|rest| !rest.starts_with('Z'))
        };
        // postmaster.pid, and the Unix socket's lock file beside it: each
        // names the postmaster on its first line.
        let socket_dir = PathBuf::from(server.socket_dir());
        let locks = std::iter::once(server.datadir.join("postmaster.pid")).chain(
            std::fs::read_dir(&socket_dir)
                .into_iter()
                .flatten()
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(".s.PGSQL.") && n.ends_with(".lock"))
                }),
        );
        for lock in locks {
            let first = std::fs::read_to_string(&lock)
                .ok()
                .and_then(|t| t.lines().next().map(str::to_string));
            if first.is_some_and(|pid| !running(&pid)) {
                let _ = std::fs::remove_file(&lock);
            }
        }
        // A backend the postmaster forked after the kill listed its children
        // (Ferry reconnecting meanwhile) outlives it, attached to the old
        // shared memory: the new postmaster refuses to start beside it.
        // Backends work in the data directory; those left are killed.
        kill_leftovers(&server.datadir);
        server.start()
    }

    /// Runs `sql` (with one int parameter) through Ferry for every value
    /// of `values`, in a task of its own: writes that go on while the
    /// test does something else. Each must succeed.
    pub fn spawn_writes(
        &self,
        sql: &'static str,
        values: std::ops::Range<i32>,
    ) -> tokio::task::JoinHandle<()> {
        let url = self.proxy_url();
        tokio::spawn(async move {
            let (w, conn) = tokio_postgres::connect(&url, NoTls).await.expect("connect");
            tokio::spawn(conn);
            for i in values {
                w.execute(sql, &[&i])
                    .await
                    .unwrap_or_else(|e| panic!("write {i} meanwhile: {e:?}"));
            }
        })
    }

    /// URL for clients of the proxy.
    pub fn proxy_url(&self) -> String {
        format!(
            "postgresql://{USER}:{PASSWORD}@127.0.0.1:{}/{DB}",
            self.proxy_port
        )
    }

    /// URL of a node's server, bypassing Ferry.
    pub fn node_url(&self, i: usize) -> String {
        self.servers[i].dsn(DB, self.server_password.as_deref())
    }

    /// A client through the proxy.
    pub async fn proxy_client(&self) -> Client {
        connect(&self.proxy_url()).await
    }

    /// A client straight to node `i`.
    pub async fn node_client(&self, i: usize) -> Client {
        connect(&self.node_url(i)).await
    }

    /// Waits until `sql` on node `i` prints `want` (trimmed); an error
    /// (a table not there yet) counts as not yet. Panics with the last
    /// answer after `timeout`.
    pub async fn wait_psql(&self, i: usize, sql: &str, want: &str, timeout: Duration) {
        eventually(timeout, sql, || match self.servers[i].psql(DB, sql) {
            Ok(got) if got.trim() == want => Ok(()),
            Ok(got) => Err(got),
            Err(e) => Err(e.to_string()),
        })
        .await
    }

    /// Runs SQL on one node with psql.
    pub fn psql(&self, i: usize, sql: &str) -> String {
        self.servers[i].psql(DB, sql).expect("psql")
    }
}

/// Kills the processes whose working directory is `datadir` (backends of a
/// postmaster killed before them) and waits up to 5 s for them to go.
fn kill_leftovers(datadir: &std::path::Path) {
    let Ok(dir) = datadir.canonicalize() else {
        return;
    };
    let leftovers: Vec<String> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| std::fs::read_link(e.path().join("cwd")).is_ok_and(|cwd| cwd == dir))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if leftovers.is_empty() {
        return;
    }
    let _ = Command::new("kill").arg("-KILL").args(&leftovers).status();
    let deadline = Instant::now() + Duration::from_secs(5);
    let alive = |pid: &String| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim().to_string()))
            .is_some_and(|rest| !rest.starts_with('Z'))
    };
    while leftovers.iter().any(alive) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}
