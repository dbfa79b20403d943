//! Sending a read's cycle to the session's replica: the connection is
//! opened at the first read (read-only, the client's own parameters), and
//! a named statement the replica connection lacks is made there first,
//! its answers hidden from the client. A replica that cannot be reached
//! leaves the read to the master.

use super::super::end::PumpError;
use super::super::reads::{read_on_master, read_only, ReadRouting};
use super::super::route::Dest;
use super::{ClientSide, Routed};
use crate::frontend::cancel::ServerKey;
use crate::frontend::read_cycle;
use bytes::{Buf, BytesMut};
use ferry_wire::stream::WriteHalf;
use ferry_wire::{ServerConn, Target};
use tokio::io::AsyncWriteExt;
use tracing::{debug, warn};

impl ClientSide<'_> {
    /// Sends the first `at` bytes of `cbuf` to the master, then the routed
    /// cycle that follows them to the replica (or, failing that, marks it
    /// for the master). Returns how many bytes at the front of `cbuf` are
    /// now bound for the master.
    pub(super) async fn send_to_replica(
        &mut self,
        sw: &mut WriteHalf<'_>,
        cbuf: &mut BytesMut,
        at: usize,
        routed: Routed<'_>,
    ) -> Result<usize, PumpError> {
        let Routed {
            routing,
            slot,
            len,
            named,
        } = routed;
        let link = self.link;
        let Some((name, target)) = routing.replica(slot) else {
            // No such slot: the master answers.
            read_on_master(&mut link.route(), routing, &cbuf[at..at + len]);
            return Ok(at + len);
        };
        if self.replica.write.is_none() && !self.open(routing, &name, &target).await {
            read_on_master(&mut link.route(), routing, &cbuf[at..at + len]);
            return Ok(at + len);
        }
        // Everything before this read goes to the master first.
        self.flush(sw, cbuf, at).await?;
        let mut skip = 0;
        let mut out: Vec<u8> = Vec::new();
        if let Some((statement, frame)) = &named {
            if self.replica.parsed.get(statement) != Some(frame) {
                if self.replica.parsed.contains_key(statement) {
                    out.extend(read_cycle::close_statement(statement));
                    skip += 1;
                }
                out.extend_from_slice(frame);
                skip += 1;
            }
        }
        let cycle: &[u8] = if out.is_empty() {
            &cbuf[..len]
        } else {
            out.extend_from_slice(&cbuf[..len]);
            &out
        };
        let sent = match self.replica.write.as_mut() {
            Some(w) => w.write_all(cycle).await.is_ok(),
            None => false,
        };
        if !sent {
            // The replica is gone: this read goes to the master with
            // whatever follows it.
            warn!(node = %name, "replica connection for reads failed; using the master");
            self.replica.fail();
            read_on_master(&mut link.route(), routing, &cbuf[..len]);
            return Ok(len);
        }
        if let Some((statement, frame)) = named {
            self.replica.parsed.insert(statement, frame);
        }
        link.route().queue.push_back(Dest::Replica { skip });
        link.queued.notify_one();
        routing.metrics.replica.inc();
        cbuf.advance(len);
        Ok(0)
    }

    /// Opens the session's read connection to replica `name` and hands its
    /// reading half to the server side; false if it cannot be reached.
    async fn open(&mut self, routing: &ReadRouting, name: &str, target: &Target) -> bool {
        let params = read_only(self.cx.params);
        let target = target.with_login(self.cx.login);
        match ServerConn::connect(&target, &params, routing.connect_timeout).await {
            Ok(conn) => {
                self.cx
                    .cancels
                    .set_reader(self.cx.session_id, ServerKey::of(&target, &conn));
                let (stream, pending) = conn.into_parts();
                let (rr, rw) = stream.into_split();
                *self.link.handover.lock().unwrap_or_else(|p| p.into_inner()) = Some((rr, pending));
                self.replica.write = Some(rw);
                self.replica.parsed.clear();
                debug!(node = %name, "read connection opened");
                true
            }
            Err(e) => {
                warn!(node = %name, error = %e, "replica unavailable for reads; using the master");
                self.replica.fail();
                false
            }
        }
    }
}
