//! The `ferry` process of a test cluster: started, signalled, killed,
//! its log read, and `ferry` commands run against it.

use super::*;

impl Cluster {
    /// Starts `ferry run` and waits until its admin endpoint is healthy.
    pub fn start_ferry(&mut self) {
        self.ferry_starts += 1;
        let log = std::fs::File::create(self.dir.join(format!("ferry-{}.log", self.ferry_starts)))
            .expect("log");
        let child = Command::new(&self.ferry_bin)
            .args(["run", "--config"])
            .arg(&self.config_path)
            .env("FERRY_LOG", "info,ferry=debug")
            // Six missed health checks (3 s) before a failover: tests share
            // two cores with many servers, and only the failover tests mean
            // to fail a master over (a test's own env wins).
            .env("FERRY_HEALTH_FAILURES", "6")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn ferry");
        self.ferry = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self
                .status_json()
                .map(|s| {
                    s.contains("\"role\":\"replica\"")
                        || s.contains("\"role\":\"fenced\"")
                        || self.names.len() == 1
                })
                .unwrap_or(false)
                && std::net::TcpStream::connect(("127.0.0.1", self.proxy_port)).is_ok()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("ferry did not come up; log:\n{}", self.ferry_log());
    }

    /// Sets an environment variable for the next `start_ferry` (a later
    /// value of the same key wins).
    pub fn set_ferry_env(&mut self, key: &str, value: &str) {
        self.env.push((key.to_string(), value.to_string()));
    }

    /// The current ferry process's log.
    pub fn ferry_log(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("ferry-{}.log", self.ferry_starts)))
            .unwrap_or_default()
    }

    /// Sends a signal (`STOP`, `CONT`, `TERM`, ...) to the ferry process.
    pub fn signal_ferry(&self, sig: &str) {
        if let Some(c) = &self.ferry {
            let _ = Command::new("kill")
                .args([format!("-{sig}"), c.id().to_string()])
                .status();
        }
    }

    /// Waits up to `timeout` for the ferry process to exit by itself;
    /// returns whether it did (with success).
    pub fn wait_ferry_exit(&mut self, timeout: Duration) -> Option<bool> {
        let deadline = Instant::now() + timeout;
        let child = self.ferry.as_mut()?;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.ferry = None;
                return Some(status.success());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// kill -9 of the ferry process.
    pub fn kill_ferry(&mut self) {
        if let Some(mut c) = self.ferry.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs `ferry <args>` and returns its output, with the environment
    /// the running instance has (as an operator's shell would).
    pub fn ferry(&self, args: &[&str]) -> Output {
        Command::new(&self.ferry_bin)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("run ferry")
    }

    /// Runs a `ferry` command against the running instance's admin
    /// endpoint (`--admin` appended).
    pub fn ferry_admin(&self, args: &[&str]) -> Output {
        let https = self
            .env
            .iter()
            .any(|(k, v)| k == "FERRY_ADMIN_TLS" && v == "true");
        let scheme = if https { "https" } else { "http" };
        let admin = format!("{scheme}://127.0.0.1:{}", self.admin_port);
        let mut all = args.to_vec();
        all.extend(["--admin", admin.as_str()]);
        self.ferry(&all)
    }
}
