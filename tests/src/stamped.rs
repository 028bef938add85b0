//! A TCP stream that keeps the kernel's receive time of the bytes of its latest read
//! (`SO_TIMESTAMPNS`), so the load generator can tell when a frame reached the client's socket,
//! apart from when the client got round to reading it.
//!
//! On a machine whose cores the client shares with the server, the client's own wake-up delay
//! would otherwise count as the server's lateness. The stamp is that of the last segment a read
//! took, so frames that arrived together, or waited unread, carry the latest one's time: late,
//! never early. The kernel turns stamping on a moment after the first socket on the machine asks
//! for it, so the very first reads may carry no stamp.

use std::io;
use std::io::IoSliceMut;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime};

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg, setsockopt, sockopt};
use nix::sys::time::TimeSpec;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

pub struct Stamped {
    inner: TcpStream,
    /// When the kernel received the bytes of the latest read that returned any, if it said.
    received: Option<Instant>,
    /// Room for one timestamp control message, reused by every read.
    control: Vec<u8>,
}

impl Stamped {
    /// Asks the kernel to timestamp what `stream` receives.
    pub fn new(stream: TcpStream) -> io::Result<Self> {
        setsockopt(&stream, sockopt::ReceiveTimestampns, &true)?;
        Ok(Self {
            inner: stream,
            received: None,
            control: nix::cmsg_space!(TimeSpec),
        })
    }

    /// When the bytes of the latest read reached this socket.
    pub fn received(&self) -> Option<Instant> {
        self.received
    }
}

/// One `recvmsg` into `buf`: the byte count, and the kernel's receive time if it gave one.
fn recv(
    stream: &TcpStream,
    control: &mut [u8],
    buf: &mut [u8],
) -> io::Result<(usize, Option<Instant>)> {
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(control),
        MsgFlags::empty(),
    )?;
    let mut received = None;
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmTimestampns(at) = cmsg {
            received = Some(instant_of(at));
        }
    }
    Ok((msg.bytes, received))
}

/// The monotonic instant of a wall-clock kernel timestamp, by how long ago it was. A wall clock
/// stepped in between gives now rather than a panic.
fn instant_of(at: TimeSpec) -> Instant {
    let at = SystemTime::UNIX_EPOCH + Duration::from(at);
    let ago = SystemTime::now().duration_since(at).unwrap_or_default();
    let now = Instant::now();
    now.checked_sub(ago).unwrap_or(now)
}

impl AsyncRead for Stamped {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            ready!(this.inner.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let (inner, control) = (&this.inner, &mut this.control);
            let read = inner.try_io(Interest::READABLE, || recv(inner, control, unfilled));
            match read {
                Ok((n, received)) => {
                    if n > 0 {
                        // Never a stale stamp: that would make these bytes look early.
                        this.received = received;
                    }
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for Stamped {
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
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    #[tokio::test]
    async fn a_read_carries_the_time_its_bytes_arrived_not_the_time_it_ran() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client =
            tokio::spawn(
                async move { Stamped::new(TcpStream::connect(addr).await.unwrap()).unwrap() },
            );
        let (mut server, _) = listener.accept().await.unwrap();
        let mut client = client.await.unwrap();
        assert_eq!(client.received(), None);
        // The kernel turns stamping on a moment after the first socket asks for it.
        let mut buf = [0u8; 16];
        for _ in 0..500 {
            server.write_all(b".").await.unwrap();
            client.read_exact(&mut buf[..1]).await.unwrap();
            if client.received().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        let sent = Instant::now();
        server.write_all(b"delta").await.unwrap();
        // The bytes wait unread for a while; their stamp is still from before the wait.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let reading = Instant::now();
        let n = client.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"delta");
        let received = client.received().expect("the kernel stamped the read");
        assert!(sent <= received, "stamped before it was sent");
        assert!(received < reading, "stamped when read, not when received");

        // Writes still go through.
        client.write_all(b"ok").await.unwrap();
        let n = server.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"ok");
    }
}
