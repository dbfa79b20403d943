//! The replica side: one long-lived apply session per replica.
//!
//! A batch goes out in one flight, without waiting for any answer:
//!
//! ```text
//! Query  BEGIN
//! Parse/Bind/Execute/Sync  SELECT ferry.begin_apply(origin, from, to, snap)
//! Query  COPY pg_temp.b_x FROM STDIN (FORMAT binary)   CopyData… CopyDone   (per table)
//! Query  <delete; upsert> per table; COMMIT
//! ```
//!
//! If any step fails, the transaction is aborted: the server drops the stray
//! COPY data, every later statement fails with 25P02, and the shipper sends
//! ROLLBACK. A batch applies wholly or not at all, and the ledger check in
//! `begin_apply` makes a batch that already applied fail harmlessly.

use crate::cutter::Batch;
use crate::BatchError;
use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use ferry_sql::{apply, batch, schema, TableShape};
use ferry_wire::{ServerConn, Target};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use postgres_protocol::IsNull;
use std::time::Duration;

/// What happened to a shipped batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// Applied now.
    Now,
    /// The ledger shows it applied earlier (for example before a restart).
    Already,
}

/// A replica's apply session with its temporary tables.
pub struct ApplySession {
    node: String,
    conn: ServerConn,
}

impl ApplySession {
    /// Connects and prepares the session: replica role, temporary tables.
    pub async fn open(
        node: &str,
        target: &Target,
        shapes: &[TableShape],
    ) -> Result<Self, BatchError> {
        let mut conn = ServerConn::connect(target, &[], Duration::from_secs(5))
            .await
            .map_err(BatchError::conn(node))?;
        let mut setup = String::from(schema::APPLY_SESSION_SETUP);
        for s in shapes {
            setup.push(';');
            setup += &batch::create_temp(s);
        }
        conn.simple_query(&setup)
            .await
            .map_err(BatchError::conn(node))?;
        Ok(Self {
            node: node.to_string(),
            conn,
        })
    }

    /// The replica's ledger: the last batch id applied and the master
    /// snapshot it reached.
    pub async fn ledger(&mut self) -> Result<(i64, String), BatchError> {
        let mut out = BytesMut::new();
        frontend::query(schema::READ_LEDGER, &mut out).map_err(io(&self.node))?;
        self.conn
            .write_all(&out)
            .await
            .map_err(BatchError::conn(&self.node))?;
        let mut row = None;
        loop {
            match self
                .conn
                .read_message()
                .await
                .map_err(BatchError::conn(&self.node))?
            {
                Message::DataRow(body) => {
                    let buf = body.buffer();
                    let mut cols = Vec::new();
                    let mut ranges = body.ranges();
                    while let Ok(Some(r)) = ranges.next() {
                        cols.push(r.map(|r| String::from_utf8_lossy(&buf[r]).into_owned()));
                    }
                    row = Some(cols);
                }
                Message::ErrorResponse(e) => {
                    let e = ferry_wire::ServerError::from_fields(&mut e.fields());
                    self.conn
                        .read_until_ready(1)
                        .await
                        .map_err(BatchError::conn(&self.node))?;
                    return Err(BatchError::Conn {
                        node: self.node.clone(),
                        source: ferry_wire::ConnError::Server(e),
                    });
                }
                Message::ReadyForQuery(_) => break,
                _ => {}
            }
        }
        let cols = row.ok_or_else(|| BatchError::Conn {
            node: self.node.clone(),
            source: ferry_wire::ConnError::Protocol(
                "the replica has no ledger row; run ferry init".into(),
            ),
        })?;
        match (
            cols.first().cloned().flatten(),
            cols.get(1).cloned().flatten(),
        ) {
            (Some(id), Some(snap)) => Ok((id.parse().unwrap_or(0), snap)),
            _ => Err(BatchError::Conn {
                node: self.node.clone(),
                source: ferry_wire::ConnError::Protocol("malformed ledger row".into()),
            }),
        }
    }

    /// Ships and applies one batch in one round trip.
    pub async fn apply(
        &mut self,
        origin: &str,
        b: &Batch,
        shapes: &[TableShape],
    ) -> Result<Applied, BatchError> {
        let node = self.node.clone();
        let mut out = BytesMut::with_capacity(b.bytes() as usize + 4096);
        let mut ready = 0;
        frontend::query("BEGIN", &mut out).map_err(io(&node))?;
        ready += 1;
        let params = [
            origin.to_string(),
            b.from.to_string(),
            b.id.to_string(),
            b.snap.clone(),
        ];
        frontend::parse(
            "",
            "SELECT ferry.begin_apply($1, $2::bigint, $3::bigint, $4)",
            [],
            &mut out,
        )
        .map_err(io(&node))?;
        frontend::bind(
            "",
            "",
            [0i16],
            params.iter(),
            |p, buf| {
                buf.extend_from_slice(p.as_bytes());
                Ok(IsNull::No)
            },
            [0i16],
            &mut out,
        )
        .map_err(|_| io(&node)(std::io::Error::other("bind encoding")))?;
        frontend::execute("", 0, &mut out).map_err(io(&node))?;
        frontend::sync(&mut out);
        ready += 1;
        let mut statements = String::new();
        for part in &b.parts {
            let shape = &shapes[part.table];
            frontend::query(&apply::copy_in(shape), &mut out).map_err(io(&node))?;
            for chunk in &part.data {
                frontend::CopyData::new(&chunk[..])
                    .map_err(io(&node))?
                    .write(&mut out);
            }
            frontend::copy_done(&mut out);
            ready += 1;
            statements += &apply::apply(shape);
            statements.push_str("; ");
        }
        statements += "COMMIT";
        frontend::query(&statements, &mut out).map_err(io(&node))?;
        ready += 1;

        self.conn
            .write_all(&out)
            .await
            .map_err(BatchError::conn(&node))?;
        let (error, status) = self
            .conn
            .read_until_ready(ready)
            .await
            .map_err(BatchError::conn(&node))?;
        if status != b'I' {
            self.conn
                .simple_query("ROLLBACK")
                .await
                .map_err(BatchError::conn(&node))?;
        }
        match error {
            None if status == b'I' => Ok(Applied::Now),
            None => Err(BatchError::Conn {
                node,
                source: ferry_wire::ConnError::Protocol("batch transaction did not end".into()),
            }),
            Some(e) if e.code == schema::ALREADY_APPLIED => Ok(Applied::Already),
            Some(error) => Err(BatchError::Apply {
                node,
                batch: b.id,
                error: Box::new(error),
            }),
        }
    }
}

fn io(node: &str) -> impl Fn(std::io::Error) -> BatchError + '_ {
    move |e| BatchError::Conn {
        node: node.to_string(),
        source: ferry_wire::ConnError::Io(e),
    }
}
