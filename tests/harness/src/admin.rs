//! Reading a test cluster's admin endpoint: `/status`, other routes, and
//! `ferry verify`.

use super::*;

impl Cluster {
    /// `ferry status --json` from the running instance.
    pub fn status_json(&self) -> Option<String> {
        let out = self.ferry_admin(&["status", "--json"]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `/status` as JSON (Null when Ferry does not answer).
    pub fn status_doc(&self) -> serde_json::Value {
        serde_json::from_str(&self.status_json().unwrap_or_default()).unwrap_or_default()
    }

    /// Waits until the `/status` document satisfies `ok`; on timeout,
    /// panics with the last one.
    pub async fn wait_status(
        &self,
        timeout: Duration,
        what: &str,
        ok: impl Fn(&serde_json::Value) -> bool,
    ) {
        eventually(timeout, what, || {
            let doc = self.status_doc();
            if ok(&doc) {
                Ok(())
            } else {
                Err(doc)
            }
        })
        .await
    }

    /// Waits until a count of the master's outbox taken after every batch
    /// cut so far finds it empty (`outbox_backlog` is counted once per
    /// housekeeping pass: an older count may predate the latest rows).
    pub async fn wait_outbox_cleaned(&self, timeout: Duration) {
        let cut = self.status_doc()["last_batch"].as_i64().unwrap_or(0);
        self.wait_status(timeout, "the outbox cleaned up", |doc| {
            doc["outbox_backlog"] == 0 && doc["outbox_counted_at_batch"].as_i64() >= Some(cut)
        })
        .await
    }

    /// A sample of `/metrics`: the first line whose name (with its
    /// labels) starts with `name`; 0 when there is none.
    pub fn metric(&self, name: &str) -> f64 {
        let (_, body) = self.admin_get("/metrics");
        body.lines()
            .find(|l| l.starts_with(name) && !l.starts_with('#'))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// Waits until a `/metrics` sample reaches `at_least`; on timeout,
    /// panics with the last value.
    pub async fn wait_metric(&self, name: &str, at_least: f64, timeout: Duration) {
        eventually(timeout, name, || {
            let value = self.metric(name);
            if value >= at_least {
                Ok(())
            } else {
                Err(value)
            }
        })
        .await
    }

    /// One node's entry in `/status` (Null when absent).
    pub fn node_doc(&self, name: &str) -> serde_json::Value {
        self.status_doc()["nodes"]
            .as_array()
            .and_then(|n| n.iter().find(|n| n["name"] == name).cloned())
            .unwrap_or_default()
    }

    /// Waits until `count` replicas are connected and shipping, which is
    /// when the proxy starts sending reads to them (reads go to the master
    /// until then).
    pub async fn wait_replicas_serving(&self, count: usize) {
        eventually(Duration::from_secs(15), "replicas connected", || {
            let doc = self.status_doc();
            let up = doc["nodes"].as_array().map_or(0, |n| {
                n.iter()
                    .filter(|n| n["role"] == "replica" && n["reachable"] == true)
                    .count()
            });
            if up >= count {
                Ok(())
            } else {
                Err(doc)
            }
        })
        .await;
    }

    /// GET a path of the admin endpoint: (status code, body).
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        self.admin_call("GET", path, None)
    }

    /// Any request to the admin endpoint, with an optional JSON body:
    /// (status code, body).
    pub fn admin_call(&self, method: &str, path: &str, json: Option<&str>) -> (u16, String) {
        self.admin_call_as(None, method, path, json)
    }

    /// [`Self::admin_call`] with a bearer token.
    pub fn admin_call_as(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        json: Option<&str>,
    ) -> (u16, String) {
        use std::io::{Read, Write};
        let mut s =
            std::net::TcpStream::connect(("127.0.0.1", self.admin_port)).expect("admin endpoint");
        let body = json.unwrap_or("");
        let mut kind = if json.is_some() {
            "Content-Type: application/json\r\n".to_string()
        } else {
            String::new()
        };
        if let Some(t) = token {
            kind += &format!("Authorization: Bearer {t}\r\n");
        }
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{kind}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .expect("request");
        let mut text = String::new();
        s.read_to_string(&mut text).expect("response");
        let code = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (code, body)
    }

    /// `ferry verify` (exit status and printed table).
    pub fn verify(&self, retry_for: u64) -> (bool, String) {
        let out = self.ferry(&[
            "verify",
            "--config",
            &self.config_path.display().to_string(),
            "--retry-for",
            &retry_for.to_string(),
        ]);
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
}
