//! An in-process TCP relay that delays every chunk by half the link's round
//! trip in each direction (`tc netem` is not available here), and counts
//! bytes and round trips: a round trip begins each time the client sends
//! after the server last spoke.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// What crossed the relay, summed over its connections.
#[derive(Default)]
pub struct Stats {
    pub bytes: AtomicU64,
    pub round_trips: AtomicU64,
}

impl Stats {
    pub fn snapshot(&self) -> (u64, u64) {
        (
            self.bytes.load(Ordering::Relaxed),
            self.round_trips.load(Ordering::Relaxed),
        )
    }
}

/// Listens on an ephemeral local port and relays to `upstream`.
pub async fn start(
    upstream: SocketAddr,
    rtt: Duration,
) -> std::io::Result<(SocketAddr, Arc<Stats>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let local = listener.local_addr()?;
    let stats = Arc::new(Stats::default());
    let shared = stats.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let stats = shared.clone();
            tokio::spawn(async move {
                if let Ok(server) = TcpStream::connect(upstream).await {
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    relay(client, server, rtt / 2, stats).await;
                }
            });
        }
    });
    Ok((local, stats))
}

async fn relay(client: TcpStream, server: TcpStream, one_way: Duration, stats: Arc<Stats>) {
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    // True when the server has sent something since the client last did.
    let server_spoke = Arc::new(AtomicBool::new(true));
    let up = pump(
        cr,
        sw,
        one_way,
        stats.clone(),
        Some(server_spoke.clone()),
        None,
    );
    let down = pump(sr, cw, one_way, stats, None, Some(server_spoke));
    tokio::join!(up, down);
}

/// Copies one direction; each chunk leaves `delay` after it arrived, in order.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
    stats: Arc<Stats>,
    starts_round_trip: Option<Arc<AtomicBool>>,
    marks_reply: Option<Arc<AtomicBool>>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((due, chunk)) = rx.recv().await {
            wait_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
        if let Some(flag) = &starts_round_trip {
            if flag.swap(false, Ordering::Relaxed) {
                stats.round_trips.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Some(flag) = &marks_reply {
            flag.store(true, Ordering::Relaxed);
        }
        if tx
            .send((Instant::now() + delay, buf[..n].to_vec()))
            .is_err()
        {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// Waits until `due` more precisely than the timer alone, whose
/// millisecond ticks would add up to a millisecond to every hop (a "0 ms"
/// link would then cost about 2 ms a round trip): it sleeps to within a
/// millisecond, then yields until the instant.
async fn wait_until(due: Instant) {
    let coarse = due.checked_sub(Duration::from_millis(1));
    if let Some(at) = coarse.filter(|at| *at > Instant::now()) {
        tokio::time::sleep_until(at).await;
    }
    while Instant::now() < due {
        tokio::task::yield_now().await;
    }
}
