//! A batch's flight to one replica: protocol messages up to one Sync, each
//! table's COPY data in its place — copied into the messages when it is
//! held in memory, read back from its spill file a chunk at a time as it
//! is sent otherwise (see [`crate::payload`]) — then the answers.

use super::{io, Applied, ApplySession};
use crate::cutter::Batch;
use crate::payload::Payload;
use crate::BatchError;
use bytes::BytesMut;
use ferry_sql::schema;
use postgres_protocol::message::frontend;
use postgres_protocol::IsNull;

/// The messages of a flight, in order.
pub(super) struct Flight<'a> {
    /// Messages, and spilled COPY data, before `current`.
    pieces: Vec<Piece<'a>>,
    current: BytesMut,
}

enum Piece<'a> {
    Messages(BytesMut),
    /// A spilled table's COPY data, sent as CopyData messages.
    Copy(&'a Payload),
}

impl<'a> Flight<'a> {
    pub fn new() -> Self {
        Self {
            pieces: Vec::new(),
            current: BytesMut::with_capacity(4096),
        }
    }

    /// Where the next messages go.
    pub fn out(&mut self) -> &mut BytesMut {
        &mut self.current
    }

    /// A table's COPY data, then CopyDone.
    pub fn copy(&mut self, data: &'a Payload) -> Result<(), std::io::Error> {
        match data.held() {
            Some(chunks) => {
                for chunk in chunks {
                    frontend::CopyData::new(&chunk[..])?.write(&mut self.current);
                }
            }
            None => {
                let before = self.current.split();
                self.pieces.push(Piece::Messages(before));
                self.pieces.push(Piece::Copy(data));
            }
        }
        frontend::copy_done(&mut self.current);
        Ok(())
    }
}

impl ApplySession {
    /// Writes a flight: its messages, and spilled COPY data a chunk at a
    /// time (the replica's pace holds the reading back).
    async fn send(&mut self, flight: Flight<'_>) -> Result<(), BatchError> {
        let node = self.node.clone();
        let mut framed = BytesMut::new();
        for piece in flight.pieces {
            match piece {
                Piece::Messages(m) => self
                    .conn
                    .write_all(&m)
                    .await
                    .map_err(BatchError::conn(&node))?,
                Piece::Copy(data) => {
                    let mut reader = data.reader();
                    while let Some(chunk) = reader.next().await.map_err(io(&node))? {
                        framed.clear();
                        frontend::CopyData::new(&chunk[..])
                            .map_err(io(&node))?
                            .write(&mut framed);
                        self.conn
                            .write_all(&framed)
                            .await
                            .map_err(BatchError::conn(&node))?;
                    }
                }
            }
        }
        self.conn
            .write_all(&flight.current)
            .await
            .map_err(BatchError::conn(&node))
    }

    /// Sends a batch's flight (ending in Sync) and reads the answers; rolls
    /// back an aborted transaction and tells what happened. `names[i]` is
    /// the i-th statement of the flight, to name the one that failed.
    pub(super) async fn fly(
        &mut self,
        b: &Batch,
        flight: Flight<'_>,
        names: &[String],
    ) -> Result<Applied, BatchError> {
        let node = self.node.clone();
        self.send(flight).await?;
        let (error, status) = self
            .conn
            .read_pipeline()
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
            Some((e, _)) if e.code == schema::ALREADY_APPLIED => Ok(Applied::Already),
            Some((error, at)) => Err(BatchError::Apply {
                node,
                batch: b.id,
                error: Box::new(error),
                statement: names.get(at).cloned().unwrap_or_else(|| "COMMIT".into()),
            }),
        }
    }
}

/// Bind and Execute of a prepared statement with text parameters.
pub(super) fn run(
    statement: &str,
    params: &[String],
    out: &mut BytesMut,
) -> Result<(), std::io::Error> {
    bind_execute(statement, params.iter().map(|p| Some(p.as_str())), out)
}

/// [`run`] with parameters that may be NULL.
pub(super) fn run_nullable(
    statement: &str,
    params: &[Option<String>],
    out: &mut BytesMut,
) -> Result<(), std::io::Error> {
    bind_execute(statement, params.iter().map(Option::as_deref), out)
}

/// Bind (text parameters, None for NULL) and Execute, unnamed portal.
fn bind_execute<'a>(
    statement: &str,
    params: impl Iterator<Item = Option<&'a str>>,
    out: &mut BytesMut,
) -> Result<(), std::io::Error> {
    frontend::bind(
        "",
        statement,
        [0i16],
        params,
        |p, buf| match p {
            Some(p) => {
                buf.extend_from_slice(p.as_bytes());
                Ok(IsNull::No)
            }
            None => Ok(IsNull::Yes),
        },
        [0i16],
        out,
    )
    .map_err(|_| std::io::Error::other("bind encoding"))?;
    frontend::execute("", 0, out)
}
