//! Comparing every node's replicated tables, independently of Ferry's own
//! `verify`.

use super::*;

/// How the nodes still differed when the wait ran out.
#[derive(Debug)]
pub struct Differs(pub String);

impl std::fmt::Display for Differs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Differs {}

impl Cluster {
    /// Waits until every replica holds exactly the master's rows in every
    /// user table, compared here by an ordered text digest (not Ferry's own
    /// checksum). Returns the last difference on timeout.
    pub async fn wait_equal(&self, timeout: Duration) -> Result<(), Differs> {
        let deadline = Instant::now() + timeout;
        let mut clients = Vec::new();
        for i in 0..self.servers.len() {
            clients.push(self.node_client(i).await);
        }
        loop {
            let diff = diff_nodes(&clients, &self.names).await;
            match diff {
                None => return Ok(()),
                Some(d) if Instant::now() >= deadline => return Err(Differs(d)),
                Some(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

pub(crate) async fn digest(c: &Client) -> Vec<(String, i64, String)> {
    let tables: Vec<String> = c
        .query(
            "SELECT quote_ident(table_name) FROM information_schema.tables \
             WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1",
            &[],
        )
        .await
        .expect("list tables")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut out = Vec::new();
    for t in tables {
        // A table dropped since it was listed (schema changes replicating
        // while this polls) counts as a difference, not a failure.
        match c
            .query_one(
                // ONLY: an inheritance parent's own rows (its children
                // are compared as tables of their own; a partitioned
                // table's rows are its partitions').
                &format!("SELECT count(*), md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM ONLY public.{t} x"),
                &[],
            )
            .await
        {
            Ok(row) => out.push((t, row.get(0), row.get(1))),
            Err(e) => out.push((t, -1, e.to_string())),
        }
    }
    out
}

pub(crate) async fn diff_nodes(clients: &[Client], names: &[String]) -> Option<String> {
    let master = digest(&clients[0]).await;
    for (c, name) in clients.iter().zip(names).skip(1) {
        let d = digest(c).await;
        if d != master {
            return Some(format!(
                "{name} differs from {}:\n master {master:?}\n {name} {d:?}",
                names[0]
            ));
        }
    }
    None
}
