//! One table's binary COPY stream in a batch: held in memory while the
//! batch is small, written to a spill file beyond that, so that a batch of
//! any size — a 10,000,000-row UPDATE — costs Ferry a bounded amount of
//! memory. The replica reads it back in chunks as it is shipped.
//!
//! A spill file is unlinked as soon as it is made: nothing is left behind
//! by a crash, and the space is freed when the last batch holding it goes.
//! A COPY stream may be cut anywhere into CopyData messages (PostgreSQL
//! does not need them to follow rows), so a file is read back in fixed
//! chunks.

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, TryStreamExt};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Bytes of COPY data a batch keeps in memory before it spills.
pub const MEMORY_PER_BATCH: u64 = 16 << 20;

/// Bytes read from or written to a spill file at a time.
pub const CHUNK: usize = 256 << 10;

/// One table's binary COPY stream.
#[derive(Clone, Debug)]
pub struct Payload {
    kind: Kind,
    bytes: u64,
}

#[derive(Clone, Debug)]
enum Kind {
    Memory(Vec<Bytes>),
    Spilled(Arc<File>),
}

/// The memory a batch may still use for its payloads; shared by its
/// tables (a batch of 600 tables of 10 MB each spills most of them).
#[derive(Debug)]
pub struct Budget {
    left: AtomicU64,
    dir: PathBuf,
}

impl Budget {
    /// A batch's budget, spilling into `dir`.
    pub fn new(bytes: u64, dir: &Path) -> Self {
        Self {
            left: AtomicU64::new(bytes),
            dir: dir.to_path_buf(),
        }
    }

    /// Takes `n` bytes of the budget; false (and nothing taken) when it
    /// has less.
    fn take(&self, n: u64) -> bool {
        self.left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(n)
            })
            .is_ok()
    }

    fn give(&self, n: u64) {
        self.left.fetch_add(n, Ordering::Relaxed);
    }
}

/// Why a payload could not be collected or read.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError<E: std::error::Error + 'static> {
    /// The COPY stream itself failed.
    #[error(transparent)]
    Stream(E),
    /// The spill file could not be made, written or read.
    #[error("batch spill file in {dir}: {source}")]
    Spill {
        dir: String,
        #[source]
        source: std::io::Error,
    },
}

impl Payload {
    /// A payload held in memory.
    pub fn in_memory(chunks: Vec<Bytes>) -> Self {
        let bytes = chunks.iter().map(|c| c.len() as u64).sum();
        Self {
            kind: Kind::Memory(chunks),
            bytes,
        }
    }

    /// Collects a COPY OUT stream: in memory while `budget` lasts, then into
    /// a spill file (the chunks already held move there too).
    pub async fn collect<S, E>(stream: S, budget: &Budget) -> Result<Self, PayloadError<E>>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::error::Error + 'static,
    {
        let mut stream = std::pin::pin!(stream);
        let mut held: Vec<Bytes> = Vec::new();
        let mut bytes = 0u64;
        while let Some(chunk) = stream.try_next().await.map_err(PayloadError::Stream)? {
            let n = chunk.len() as u64;
            bytes += n;
            if budget.take(n) {
                held.push(chunk);
                continue;
            }
            // Over budget: this table goes to a file, with what it held.
            let spill = Spill::create(&budget.dir)?;
            let given: u64 = held.iter().map(|c| c.len() as u64).sum();
            let mut pending = BytesMut::with_capacity(CHUNK);
            for c in held.drain(..).chain(std::iter::once(chunk)) {
                spill.append(&mut pending, &c).await?;
            }
            budget.give(given);
            while let Some(c) = stream.try_next().await.map_err(PayloadError::Stream)? {
                bytes += c.len() as u64;
                spill.append(&mut pending, &c).await?;
            }
            spill.write(pending.freeze()).await?;
            return Ok(Self {
                kind: Kind::Spilled(spill.file),
                bytes,
            });
        }
        Ok(Self {
            kind: Kind::Memory(held),
            bytes,
        })
    }

    /// Bytes of COPY data.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The chunks, when the payload is held in memory.
    pub fn held(&self) -> Option<&[Bytes]> {
        match &self.kind {
            Kind::Memory(chunks) => Some(chunks),
            Kind::Spilled(_) => None,
        }
    }

    /// Whether the payload lives in a spill file.
    pub fn spilled(&self) -> bool {
        matches!(self.kind, Kind::Spilled(_))
    }

    /// Reads the stream back in order, a chunk at a time.
    pub fn reader(&self) -> Reader<'_> {
        Reader {
            payload: self,
            at: 0,
        }
    }
}

/// Reads a payload back, chunk by chunk.
pub struct Reader<'a> {
    payload: &'a Payload,
    /// The next chunk (in memory) or byte offset (in a file).
    at: u64,
}

impl Reader<'_> {
    /// The next chunk; None at the end.
    pub async fn next(&mut self) -> std::io::Result<Option<Bytes>> {
        match &self.payload.kind {
            Kind::Memory(chunks) => {
                let chunk = chunks.get(self.at as usize).cloned();
                self.at += 1;
                Ok(chunk)
            }
            Kind::Spilled(file) => {
                let left = self.payload.bytes.saturating_sub(self.at);
                if left == 0 {
                    return Ok(None);
                }
                let (file, at) = (file.clone(), self.at);
                let len = left.min(CHUNK as u64) as usize;
                let chunk = tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0u8; len];
                    std::os::unix::fs::FileExt::read_exact_at(&*file, &mut buf, at)?;
                    Ok::<_, std::io::Error>(buf)
                })
                .await
                .map_err(std::io::Error::other)??;
                self.at += len as u64;
                Ok(Some(Bytes::from(chunk)))
            }
        }
    }
}

/// A spill file being written.
struct Spill {
    file: Arc<File>,
    dir: String,
}

impl Spill {
    /// Makes a new file in `dir` and unlinks it at once (the open handle
    /// keeps it).
    fn create<E: std::error::Error + 'static>(dir: &Path) -> Result<Self, PayloadError<E>> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let failed = |source| PayloadError::Spill {
            dir: dir.display().to_string(),
            source,
        };
        let path = dir.join(format!(
            "ferry-batch-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(failed)?;
        std::fs::remove_file(&path).map_err(failed)?;
        Ok(Self {
            file: Arc::new(file),
            dir: dir.display().to_string(),
        })
    }

    /// Adds `c` to `pending`, written out once it holds a chunk's worth.
    async fn append<E: std::error::Error + 'static>(
        &self,
        pending: &mut BytesMut,
        c: &[u8],
    ) -> Result<(), PayloadError<E>> {
        pending.extend_from_slice(c);
        if pending.len() >= CHUNK {
            self.write(pending.split().freeze()).await?;
        }
        Ok(())
    }

    /// Appends a chunk, off the runtime's threads.
    async fn write<E: std::error::Error + 'static>(
        &self,
        chunk: Bytes,
    ) -> Result<(), PayloadError<E>> {
        let file = self.file.clone();
        let written =
            tokio::task::spawn_blocking(move || std::io::Write::write_all(&mut &*file, &chunk))
                .await
                .map_err(std::io::Error::other)
                .and_then(|r| r);
        written.map_err(|source| PayloadError::Spill {
            dir: self.dir.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(chunks: Vec<&'static [u8]>) -> impl Stream<Item = Result<Bytes, std::io::Error>> {
        futures_util::stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from_static(c))))
    }

    async fn read_all(p: &Payload) -> Vec<u8> {
        let mut out = Vec::new();
        let mut r = p.reader();
        while let Some(c) = r.next().await.unwrap() {
            out.extend_from_slice(&c);
        }
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_payload_past_the_budget_spills_and_reads_back_whole() {
        let dir = std::env::temp_dir();
        let budget = Budget::new(8, &dir);
        let small = Payload::collect(stream(vec![b"abc", b"de"]), &budget)
            .await
            .unwrap();
        assert!(!small.spilled());
        assert_eq!(read_all(&small).await, b"abcde");
        // 3 bytes of budget left: this one spills, with what it held.
        let big = Payload::collect(stream(vec![b"12", b"3456", b"789"]), &budget)
            .await
            .unwrap();
        assert!(big.spilled());
        assert_eq!(big.bytes(), 9);
        assert_eq!(read_all(&big).await, b"123456789");
        // What the spilled one held went back to the budget.
        assert!(budget.take(3));
        assert!(!budget.take(1));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_spilled_payload_larger_than_a_chunk_reads_back_in_chunks() {
        let dir = std::env::temp_dir();
        let budget = Budget::new(0, &dir);
        let data: Vec<u8> = (0..(CHUNK * 2 + 17)).map(|i| (i % 251) as u8).collect();
        let leaked: &'static [u8] = Box::leak(data.clone().into_boxed_slice());
        let p = Payload::collect(stream(vec![leaked]), &budget)
            .await
            .unwrap();
        let mut r = p.reader();
        let mut sizes = Vec::new();
        let mut out = Vec::new();
        while let Some(c) = r.next().await.unwrap() {
            sizes.push(c.len());
            out.extend_from_slice(&c);
        }
        assert_eq!(sizes, vec![CHUNK, CHUNK, 17]);
        assert_eq!(out, data);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_spill_directory_that_cannot_be_written_is_an_error_not_a_panic() {
        let budget = Budget::new(0, Path::new("/nonexistent/ferry-spill"));
        let got = Payload::collect(stream(vec![b"x"]), &budget).await;
        assert!(matches!(got, Err(PayloadError::Spill { .. })));
    }
}
