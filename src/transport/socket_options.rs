//! Socket options of cluster connections, set on both dialed and accepted streams.
//!
//! A peer whose packets are dropped leaves the connection open: TCP retransmits for about
//! 15 minutes on Linux before it gives up, and ractor_cluster 0.16 keeps a session whose pings
//! go unanswered. The ack timeout (`TCP_USER_TIMEOUT`) makes the kernel close a connection
//! whose sent data stays unacknowledged for that long. ractor_cluster sends pings on every
//! session, so an unreachable peer's session always has data in flight and ends in time.
//!
//! NOTE: a peer whose kernel acknowledges the data while nothing reads it (a stopped proxy,
//! a wedged process) keeps the connection open, because TCP detects no loss. Only a reply
//! deadline on the application's own pings would end such a session.

use std::time::Duration;

use tokio::net::TcpStream;

/// Turns off Nagle's algorithm and sets the ack timeout on `stream`.
pub(super) fn prepare(stream: &TcpStream, ack_timeout: Duration) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    set_ack_timeout(stream, ack_timeout)
}

#[cfg(any(target_os = "linux", target_os = "android", target_os = "fuchsia"))]
fn set_ack_timeout(stream: &TcpStream, ack_timeout: Duration) -> std::io::Result<()> {
    socket2::SockRef::from(stream).set_tcp_user_timeout(Some(ack_timeout))
}

/// Other systems have no `TCP_USER_TIMEOUT`, so there a session to an unreachable peer ends
/// only when TCP gives up retransmitting.
#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "fuchsia")))]
fn set_ack_timeout(_stream: &TcpStream, _ack_timeout: Duration) -> std::io::Result<()> {
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn prepare_sets_the_ack_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();

        prepare(&stream, Duration::from_millis(4_500)).unwrap();

        let socket = socket2::SockRef::from(&stream);
        assert_eq!(
            socket.tcp_user_timeout().unwrap(),
            Some(Duration::from_millis(4_500))
        );
        assert!(stream.nodelay().unwrap());
    }
}
