//! A client's connection: plain TCP, or TLS once the client asked for it
//! with an SSLRequest and `proxy.tls` allows it (see
//! [`super::startup`]). Plain TCP splits without a lock; TLS with tokio's
//! `split`, whose halves share one.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{tcp, TcpStream};
use tokio_rustls::server::TlsStream;

/// A client's connection.
pub enum ClientStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Between the two during the TLS handshake, and after a failed one:
    /// reads and writes fail.
    Upgrading,
}

/// The reading half of a [`ClientStream`].
pub enum ClientRead<'a> {
    Plain(tcp::ReadHalf<'a>),
    Tls(tokio::io::ReadHalf<&'a mut TlsStream<TcpStream>>),
    /// A stream whose TLS handshake failed: every read fails.
    Gone,
}

/// The writing half of a [`ClientStream`].
pub enum ClientWrite<'a> {
    Plain(tcp::WriteHalf<'a>),
    Tls(tokio::io::WriteHalf<&'a mut TlsStream<TcpStream>>),
    /// A stream whose TLS handshake failed: every write fails.
    Gone,
}

impl ClientStream {
    /// The two halves, for the two directions of the pump.
    pub fn split(&mut self) -> (ClientRead<'_>, ClientWrite<'_>) {
        match self {
            Self::Plain(s) => {
                let (r, w) = s.split();
                (ClientRead::Plain(r), ClientWrite::Plain(w))
            }
            Self::Tls(s) => {
                let (r, w) = tokio::io::split(&mut **s);
                (ClientRead::Tls(r), ClientWrite::Tls(w))
            }
            Self::Upgrading => (ClientRead::Gone, ClientWrite::Gone),
        }
    }

    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, Self::Tls(_))
    }
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "TLS handshake under way")
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
            Self::Upgrading => Poll::Ready(Err(gone())),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
            Self::Upgrading => Poll::Ready(Err(gone())),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
            Self::Upgrading => Poll::Ready(Err(gone())),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
            Self::Upgrading => Poll::Ready(Err(gone())),
        }
    }
}

impl AsyncRead for ClientRead<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s).poll_read(cx, buf),
            Self::Gone => Poll::Ready(Err(gone())),
        }
    }
}

impl AsyncWrite for ClientWrite<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s).poll_write(cx, buf),
            Self::Gone => Poll::Ready(Err(gone())),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s).poll_flush(cx),
            Self::Gone => Poll::Ready(Err(gone())),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s).poll_shutdown(cx),
            Self::Gone => Poll::Ready(Err(gone())),
        }
    }
}

/// Ferry's side of client TLS (`proxy.tls` other than `disable`).
#[derive(Clone)]
pub struct ProxyTls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// `require`: a client that does not ask for TLS is refused.
    pub required: bool,
}

impl ClientStream {
    /// Answers an SSLRequest: 'S' and the handshake when TLS is on and the
    /// connection is not encrypted yet, else 'N'. `pending` bytes (sent
    /// after the SSLRequest, before the handshake) are refused: they would
    /// be taken as sent under TLS (CVE-2021-23214).
    pub async fn answer_ssl_request(
        &mut self,
        tls: Option<&ProxyTls>,
        pending: usize,
    ) -> io::Result<()> {
        use tokio::io::AsyncWriteExt;
        let Some(tls) = tls.filter(|_| matches!(self, Self::Plain(_))) else {
            return self.write_all(b"N").await;
        };
        if pending > 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "data sent after an SSLRequest before the TLS handshake",
            ));
        }
        self.write_all(b"S").await?;
        let Self::Plain(tcp) = std::mem::replace(self, Self::Upgrading) else {
            return Err(gone());
        };
        let encrypted = tls.acceptor.accept(tcp).await?;
        *self = Self::Tls(Box::new(encrypted));
        Ok(())
    }
}
