//! One connection's state as its timeouts see it: which protocol it speaks, whether a request
//! is in flight, and since when it has been idle or sending a request head. The socket wrapper
//! [`Tracked`] feeds it what is read; the service wrapper counts requests in and out.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::Timeouts;
use super::cap::Slot;

/// What the connection's HTTP/2 client must send first.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// A frame header's length: the client's SETTINGS frame follows the preface.
const FRAME_HEADER: usize = 9;

/// What is known of a connection's protocol from its first bytes.
#[derive(Debug)]
enum Protocol {
    /// Fewer bytes than it takes to tell, kept here.
    Unknown(Vec<u8>),
    Http1,
    /// `handshake` bytes long (preface and first SETTINGS frame); `read` so far.
    Http2 {
        handshake: usize,
        read: usize,
    },
}

#[derive(Debug)]
struct State {
    protocol: Protocol,
    in_flight: usize,
    /// Since when nothing has been in flight.
    idle_since: Instant,
    /// When the first byte of a request head not yet complete arrived (HTTP/1), or when the
    /// connection was accepted and has not sent a request yet.
    head_since: Option<Instant>,
}

/// What a connection's timeouts say now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Nothing is due; look again at this instant.
    Wait(Instant),
    /// Idle too long: close it gracefully (HTTP/2 GOAWAY, HTTP/1 close).
    Close,
    /// Too slow with its head or handshake: drop it, answering nothing.
    Drop(&'static str),
}

/// A connection's activity, shared by its socket, its service and its watchdog. The watchdog
/// is never woken by activity (that would cost a wake-up per request); it looks again at the
/// instant [`Activity::verdict`] names, at most a head timeout apart while the connection idles.
#[derive(Debug)]
pub struct Activity {
    state: Mutex<State>,
    accepted: Instant,
}

impl Activity {
    pub fn new(accepted: Instant) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                protocol: Protocol::Unknown(Vec::new()),
                in_flight: 0,
                idle_since: accepted,
                head_since: Some(accepted),
            }),
            accepted,
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `bytes` arrived from the client.
    fn read(&self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut state = self.state();
        match &mut state.protocol {
            Protocol::Unknown(seen) => {
                let want = PREFACE.len() + FRAME_HEADER;
                let total = seen.len() + bytes.len();
                seen.extend_from_slice(&bytes[..bytes.len().min(want - seen.len())]);
                let n = seen.len().min(PREFACE.len());
                if seen[..n] != PREFACE[..n] {
                    state.protocol = Protocol::Http1;
                } else if seen.len() == want {
                    let len = &seen[PREFACE.len()..PREFACE.len() + 3];
                    let settings =
                        usize::from(len[0]) << 16 | usize::from(len[1]) << 8 | usize::from(len[2]);
                    state.protocol = Protocol::Http2 {
                        handshake: want + settings,
                        read: total,
                    };
                }
            }
            Protocol::Http2 { read, .. } => *read = read.saturating_add(bytes.len()),
            Protocol::Http1 => {}
        }
        // An HTTP/1 client sends nothing between requests, so bytes while none is in flight
        // are the head of the next one.
        if matches!(state.protocol, Protocol::Http1)
            && state.in_flight == 0
            && state.head_since.is_none()
        {
            state.head_since = Some(Instant::now());
        }
    }

    /// A request's head has arrived and it is being served.
    pub fn request_began(&self) {
        let mut state = self.state();
        state.in_flight += 1;
        state.head_since = None;
    }

    /// A response has been sent (or abandoned).
    pub fn request_ended(&self) {
        let mut state = self.state();
        state.in_flight = state.in_flight.saturating_sub(1);
        if state.in_flight == 0 {
            state.idle_since = Instant::now();
        }
    }

    /// What the timeouts say at `now`.
    pub fn verdict(&self, now: Instant, t: &Timeouts) -> Verdict {
        let state = self.state();
        let handshaken = match &state.protocol {
            Protocol::Unknown(_) => false,
            Protocol::Http1 => true,
            Protocol::Http2 { handshake, read } => read >= handshake,
        };
        let due = |since: Instant, limit| {
            let at = since + limit;
            (now >= at).then_some(()).ok_or(at)
        };
        if !handshaken {
            return match due(self.accepted, t.head) {
                Ok(()) => Verdict::Drop("no request head or HTTP/2 handshake in time"),
                Err(at) => Verdict::Wait(at),
            };
        }
        if state.in_flight > 0 {
            // Requests time their own bodies; look again once they may be done.
            return Verdict::Wait(now + t.idle);
        }
        if let Some(since) = state.head_since
            && matches!(state.protocol, Protocol::Http1)
        {
            return match due(since, t.head) {
                Ok(()) => Verdict::Drop("request head not received in time"),
                Err(at) => Verdict::Wait(at),
            };
        }
        match due(state.idle_since, t.idle) {
            Ok(()) => Verdict::Close,
            // A head may begin meanwhile (nothing wakes the watchdog for it): look again within
            // a head timeout, so a slow head is cut off within two.
            Err(at) => Verdict::Wait(at.min(now + t.head)),
        }
    }
}

/// A connection's socket: reports what it reads to the connection's [`Activity`], and holds the
/// connection's [`Slot`] under the cap for as long as the socket lives, upgraded or not.
pub struct Tracked {
    tcp: TcpStream,
    activity: Arc<Activity>,
    _slot: Slot,
}

impl Tracked {
    pub fn new(tcp: TcpStream, activity: Arc<Activity>, slot: Slot) -> Self {
        Self {
            tcp,
            activity,
            _slot: slot,
        }
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.tcp).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.activity.read(&buf.filled()[before..]);
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const T: Timeouts = Timeouts {
        head: Duration::from_secs(10),
        body: Duration::from_secs(30),
        idle: Duration::from_secs(60),
    };

    #[test]
    fn a_silent_connection_is_dropped_after_the_head_timeout() {
        let t0 = Instant::now();
        let a = Activity::new(t0);
        assert_eq!(a.verdict(t0, &T), Verdict::Wait(t0 + T.head));
        assert!(matches!(a.verdict(t0 + T.head, &T), Verdict::Drop(_)));
    }

    #[test]
    fn http1_idles_for_the_idle_timeout_but_a_started_head_has_the_head_timeout() {
        let t0 = Instant::now();
        let a = Activity::new(t0);
        a.read(b"GET / HTTP/1.1\r\n");
        a.request_began();
        assert_eq!(a.verdict(t0, &T), Verdict::Wait(t0 + T.idle));
        a.request_ended();
        let idle = a.state().idle_since;
        assert_eq!(a.verdict(idle, &T), Verdict::Wait(idle + T.head));
        assert_eq!(
            a.verdict(idle + T.idle - T.head / 2, &T),
            Verdict::Wait(idle + T.idle)
        );
        assert_eq!(a.verdict(idle + T.idle, &T), Verdict::Close);
        a.read(b"GET");
        let head = a.state().head_since.unwrap();
        assert!(matches!(a.verdict(head + T.head, &T), Verdict::Drop(_)));
    }

    #[test]
    fn http2_must_finish_its_handshake_then_pings_do_not_count_as_a_head() {
        let t0 = Instant::now();
        let a = Activity::new(t0);
        a.read(&PREFACE[..10]);
        a.read(&PREFACE[10..]);
        // A SETTINGS frame with one 6-byte setting, sent in two pieces.
        a.read(&[0, 0, 6, 4, 0, 0, 0, 0, 0]);
        assert!(matches!(a.verdict(t0 + T.head, &T), Verdict::Drop(_)));
        a.read(&[0, 3, 0, 0, 0, 100]);
        assert_eq!(a.verdict(t0, &T), Verdict::Wait(t0 + T.head));
        // A PING while idle: still idle, not a head.
        a.read(&[0, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(a.verdict(t0 + T.idle, &T), Verdict::Close);
    }
}
