//! Closing of gRPC and metrics connections that send nothing after they are accepted.
//!
//! Neither tonic 0.14 nor `axum::serve` 0.8 has a deadline for the first request bytes: an
//! HTTP/2 server waits for the client preface, and `axum::serve` sets no hyper timer, so its
//! HTTP/1 header read timeout is off. A connection that never sends a byte stays open until
//! the client closes it. [`FirstByteDeadline`] fails the first read once the deadline passes,
//! and hyper then closes the connection. hyper's parsers close most connections that send
//! junk.
//!
//! NOTE: the deadline ends with the first byte, so a client that sends the start of a request
//! and then stalls keeps its connection. Random junk can do that too: in two of four runs of
//! `benches/connection_flood.py`, one of 1,000 random 64-byte payloads on the metrics port
//! parsed as the start of an HTTP/1 request. Bounding that needs a deadline for the whole
//! request head in the HTTP servers.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;
use tokio_stream::wrappers::TcpListenerStream;

/// A stream whose reads fail with `TimedOut` if no byte arrived within a deadline after it
/// was wrapped. The deadline is disarmed by the first byte read.
pub(crate) struct FirstByteDeadline<T> {
    inner: T,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<T> FirstByteDeadline<T> {
    /// Wraps `inner`, which must send its first byte within `timeout`.
    pub(crate) fn new(inner: T, timeout: Duration) -> Self {
        Self {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(timeout))),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for FirstByteDeadline<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    self.deadline = None;
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                let expired = self
                    .deadline
                    .as_mut()
                    .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
                if expired {
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client sent nothing before the first-byte deadline",
                    )))
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for FirstByteDeadline<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for FirstByteDeadline<TcpStream> {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// Returns the connections accepted on `listener` for tonic, with `TCP_NODELAY` set and a
/// first-byte deadline of `timeout`. Accept errors pass through, and tonic skips them.
pub(crate) fn deadline_incoming(
    listener: TcpListener,
    timeout: Duration,
) -> impl Stream<Item = io::Result<FirstByteDeadline<TcpStream>>> {
    TcpListenerStream::new(listener).map(move |accepted| {
        accepted.map(|stream| {
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "failed to set TCP_NODELAY on a gRPC connection");
            }
            FirstByteDeadline::new(stream, timeout)
        })
    })
}

/// A TCP listener for `axum::serve` whose connections get a first-byte deadline.
pub(crate) struct DeadlineListener {
    pub(crate) listener: tokio::net::TcpListener,
    pub(crate) timeout: Duration,
}

impl axum::serve::Listener for DeadlineListener {
    type Io = FirstByteDeadline<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, addr) = axum::serve::Listener::accept(&mut self.listener).await;
        (FirstByteDeadline::new(stream, self.timeout), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn silent_peer_times_out() {
        let (client, server) = tokio::io::duplex(64);
        let mut server = FirstByteDeadline::new(server, Duration::from_secs(5));
        let mut buffer = [0; 8];

        let error = server
            .read(&mut buffer)
            .await
            .expect_err("nothing was sent");

        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn first_byte_disarms_deadline() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut server = FirstByteDeadline::new(server, Duration::from_secs(5));
        let mut buffer = [0; 8];
        client.write_all(b"P").await.expect("write to the duplex");

        assert_eq!(server.read(&mut buffer).await.expect("one byte"), 1);
        tokio::time::advance(Duration::from_secs(60)).await;
        client.write_all(b"RI").await.expect("write to the duplex");

        assert_eq!(server.read(&mut buffer).await.expect("later bytes"), 2);
    }
}
