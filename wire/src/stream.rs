//! A connection to a server over TCP, TLS or a Unix-domain socket.
//!
//! libpq treats a host that starts with `/` as the directory of the
//! server's socket (`{dir}/.s.PGSQL.{port}`), and operators write DSNs that
//! way when Ferry runs on the same machine as a node: a Unix socket skips
//! the TCP/IP stack on every message the proxy relays, which on loopback is
//! most of a relayed round trip's cost. Both kinds are `Unpin` and splittable
//! without a lock, so this is a plain enum over tokio's types, and so are
//! its halves; a TLS stream (see [`crate::tls`]) splits with tokio's
//! `split`, whose halves share a lock.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{tcp, unix, TcpStream, UnixStream};
use tokio_rustls::client::TlsStream;

/// Where a server listens: a TCP host and port, or a socket file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    Tcp(String, u16),
    Unix(PathBuf),
}

impl Address {
    /// libpq's rule: a host starting with `/` names a socket directory.
    pub fn new(host: &str, port: u16) -> Self {
        if host.starts_with('/') {
            Address::Unix(PathBuf::from(format!(
                "{}/.s.PGSQL.{port}",
                host.trim_end_matches('/')
            )))
        } else {
            Address::Tcp(host.to_string(), port)
        }
    }
}

/// An open connection of either kind.
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    /// TCP wrapped in TLS (see [`crate::tls`]).
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// Connects; TCP connections get `TCP_NODELAY` (the proxy writes whole
    /// messages and waits for answers: Nagle's delay would add to each).
    pub async fn connect(address: &Address) -> io::Result<Self> {
        match address {
            Address::Tcp(host, port) => {
                let s = TcpStream::connect((host.as_str(), *port)).await?;
                s.set_nodelay(true)?;
                Ok(Stream::Tcp(s))
            }
            Address::Unix(path) => Ok(Stream::Unix(UnixStream::connect(path).await?)),
        }
    }

    /// Reads what has arrived without waiting (`WouldBlock` when nothing).
    pub fn try_read_buf(&mut self, buf: &mut bytes::BytesMut) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.try_read_buf(buf),
            Stream::Unix(s) => s.try_read_buf(buf),
            Stream::Tls(s) => {
                // TLS has no non-blocking read of its own: poll one read
                // once, with a waker nobody waits on.
                let mut cx = Context::from_waker(std::task::Waker::noop());
                let read = std::pin::pin!(tokio::io::AsyncReadExt::read_buf(&mut **s, buf));
                match read.poll(&mut cx) {
                    Poll::Ready(r) => r,
                    Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
                }
            }
        }
    }

    /// Borrowed halves, for reading and writing at once in one task.
    pub fn split(&mut self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        match self {
            Stream::Tcp(s) => {
                let (r, w) = s.split();
                (ReadHalf::Tcp(r), WriteHalf::Tcp(w))
            }
            Stream::Unix(s) => {
                let (r, w) = s.split();
                (ReadHalf::Unix(r), WriteHalf::Unix(w))
            }
            Stream::Tls(s) => {
                let (r, w) = tokio::io::split(&mut **s);
                (ReadHalf::Tls(r), WriteHalf::Tls(w))
            }
        }
    }

    /// Owned halves, for a reader handed to another task.
    pub fn into_split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        match self {
            Stream::Tcp(s) => {
                let (r, w) = s.into_split();
                (OwnedReadHalf::Tcp(r), OwnedWriteHalf::Tcp(w))
            }
            Stream::Unix(s) => {
                let (r, w) = s.into_split();
                (OwnedReadHalf::Unix(r), OwnedWriteHalf::Unix(w))
            }
            Stream::Tls(s) => {
                let (r, w) = tokio::io::split(*s);
                (OwnedReadHalf::Tls(r), OwnedWriteHalf::Tls(w))
            }
        }
    }
}

/// The read half of [`Stream::split`].
pub enum ReadHalf<'a> {
    Tcp(tcp::ReadHalf<'a>),
    Unix(unix::ReadHalf<'a>),
    Tls(io::ReadHalf<&'a mut TlsStream<TcpStream>>),
}

/// The write half of [`Stream::split`].
pub enum WriteHalf<'a> {
    Tcp(tcp::WriteHalf<'a>),
    Unix(unix::WriteHalf<'a>),
    Tls(io::WriteHalf<&'a mut TlsStream<TcpStream>>),
}

/// The read half of [`Stream::into_split`].
pub enum OwnedReadHalf {
    Tcp(tcp::OwnedReadHalf),
    Unix(unix::OwnedReadHalf),
    Tls(io::ReadHalf<TlsStream<TcpStream>>),
}

/// The write half of [`Stream::into_split`].
pub enum OwnedWriteHalf {
    Tcp(tcp::OwnedWriteHalf),
    Unix(unix::OwnedWriteHalf),
    Tls(io::WriteHalf<TlsStream<TcpStream>>),
}

/// Forwards `AsyncRead` to whichever kind the enum holds.
macro_rules! read_either {
    ($t:ty) => {
        impl AsyncRead for $t {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Tcp(s) => Pin::new(s).poll_read(cx, buf),
                    Self::Unix(s) => Pin::new(s).poll_read(cx, buf),
                    Self::Tls(s) => Pin::new(s).poll_read(cx, buf),
                }
            }
        }
    };
}

/// Forwards `AsyncWrite` to whichever kind the enum holds.
macro_rules! write_either {
    ($t:ty) => {
        impl AsyncWrite for $t {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    Self::Tcp(s) => Pin::new(s).poll_write(cx, buf),
                    Self::Unix(s) => Pin::new(s).poll_write(cx, buf),
                    Self::Tls(s) => Pin::new(s).poll_write(cx, buf),
                }
            }
            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Tcp(s) => Pin::new(s).poll_flush(cx),
                    Self::Unix(s) => Pin::new(s).poll_flush(cx),
                    Self::Tls(s) => Pin::new(s).poll_flush(cx),
                }
            }
            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Tcp(s) => Pin::new(s).poll_shutdown(cx),
                    Self::Unix(s) => Pin::new(s).poll_shutdown(cx),
                    Self::Tls(s) => Pin::new(s).poll_shutdown(cx),
                }
            }
        }
    };
}

read_either!(Stream);
write_either!(Stream);
read_either!(ReadHalf<'_>);
write_either!(WriteHalf<'_>);
read_either!(OwnedReadHalf);
write_either!(OwnedWriteHalf);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_with_a_slash_is_a_socket_directory() {
        assert_eq!(
            Address::new("/var/run/postgresql/", 5433),
            Address::Unix(PathBuf::from("/var/run/postgresql/.s.PGSQL.5433"))
        );
        assert_eq!(
            Address::new("db.example", 5432),
            Address::Tcp("db.example".into(), 5432)
        );
    }

    #[tokio::test]
    async fn a_unix_socket_carries_bytes_both_ways() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = std::env::temp_dir().join(format!("ferry-stream-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let address = Address::new(&dir.to_string_lossy(), 7);
        let Address::Unix(path) = &address else {
            panic!("not a socket path")
        };
        let _ = std::fs::remove_file(path);
        let listener = tokio::net::UnixListener::bind(path).unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut b = [0u8; 4];
            s.read_exact(&mut b).await.unwrap();
            s.write_all(&b).await.unwrap();
        });
        let mut s = Stream::connect(&address).await.unwrap();
        let (mut r, mut w) = s.split();
        w.write_all(b"ping").await.unwrap();
        let mut b = [0u8; 4];
        r.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"ping");
        server.await.unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
