//! Timing one response's deltas: when each arrived, the gaps between them, and how late each
//! was against the model's schedule (see [`DeltaClock`]).

use std::time::Duration;

use tokio::time::Instant;

/// What one successful request measured.
pub struct Timing {
    pub latency: Duration,
    /// How many deltas the response carried.
    pub deltas: u32,
    pub first_delta: Option<Duration>,
    pub delta_gaps: Vec<Duration>,
    pub delta_lateness: Vec<Duration>,
    /// By the kernel's receive times, when every delta had one.
    pub delta_socket_lateness: Vec<Duration>,
}

/// Times the deltas of one stream as they arrive.
///
/// Lateness is measured against the model's schedule (delta `i` due `i` intervals after delta 0),
/// placed where the stream's least delayed delta puts it: `arrival_i - i * interval`, less the
/// smallest such offset in the stream. Placed by the first delta instead, a late first delta would
/// hide the lateness of the rest behind it: of deltas due every 20 ms that arrive at 5, 20 and
/// 43 ms, the third would look 2 ms early, not 3 ms late.
pub struct DeltaClock {
    scheduled: Instant,
    interval: Option<Duration>,
    /// When each delta was read.
    arrivals: Vec<Instant>,
    /// When each reached the client's socket, while the transport says (see [`crate::stamped`]).
    received: Option<Vec<Instant>>,
    gaps: Vec<Duration>,
}

impl DeltaClock {
    pub fn new(scheduled: Instant, interval: Option<Duration>) -> Self {
        Self {
            scheduled,
            interval,
            arrivals: Vec::new(),
            received: Some(Vec::new()),
            gaps: Vec::new(),
        }
    }

    /// `n` deltas were read now; the transport cannot tell when they reached the socket.
    pub fn arrived(&mut self, n: u32) {
        self.arrived_at(n, None);
    }

    /// `n` deltas, read now, reached the socket at `received` (`None`: the transport cannot tell).
    pub fn arrived_at(&mut self, n: u32, received: Option<Instant>) {
        if n == 0 {
            return;
        }
        match (received, &mut self.received) {
            (Some(at), Some(all)) => all.extend(std::iter::repeat_n(at, n as usize)),
            _ => self.received = None,
        }
        let now = Instant::now();
        if let Some(&prev) = self.arrivals.last() {
            self.gaps.push(now - prev);
        }
        self.arrivals.extend(std::iter::repeat_n(now, n as usize));
    }

    pub fn count(&self) -> u32 {
        self.arrivals.len() as u32
    }

    pub fn finish(self) -> Timing {
        let first_delta = self.arrivals.first().map(|&f| f - self.scheduled);
        let late = |arrivals: &[Instant]| {
            self.interval
                .map(|interval| lateness(self.scheduled, arrivals, interval))
                .unwrap_or_default()
        };
        Timing {
            latency: self.scheduled.elapsed(),
            deltas: self.count(),
            first_delta,
            delta_lateness: late(&self.arrivals),
            delta_socket_lateness: self.received.as_deref().map(late).unwrap_or_default(),
            delta_gaps: self.gaps,
        }
    }
}

/// Each arrival's distance behind its place in the schedule (see [`DeltaClock`]).
fn lateness(scheduled: Instant, arrivals: &[Instant], interval: Duration) -> Vec<Duration> {
    let offsets: Vec<i128> = arrivals
        .iter()
        .enumerate()
        .map(|(i, a)| {
            a.duration_since(scheduled).as_nanos() as i128 - interval.as_nanos() as i128 * i as i128
        })
        .collect();
    let base = offsets.iter().copied().min().unwrap_or(0);
    offsets
        .into_iter()
        .map(|o| Duration::from_nanos(u64::try_from(o - base).unwrap_or(u64::MAX)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lateness_is_placed_by_the_least_delayed_delta() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // Due every 20 ms; the first delta came 5 ms late, the third 3 ms late. Placed by the
        // first delta, the third would look 2 ms early, not 3 ms late.
        let arrivals = [t0 + ms(5), t0 + ms(20), t0 + ms(43), t0 + ms(60)];
        assert_eq!(
            lateness(t0, &arrivals, ms(20)),
            [ms(5), ms(0), ms(3), ms(0)]
        );
        // A stream whose first delta is its least delayed is placed by it, as before.
        let on_time = [t0, t0 + ms(20), t0 + ms(41)];
        assert_eq!(lateness(t0, &on_time, ms(20)), [ms(0), ms(0), ms(1)]);
        assert!(lateness(t0, &[], ms(20)).is_empty());
    }

    #[test]
    fn socket_lateness_needs_a_receive_time_for_every_delta() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut stamped = DeltaClock::new(t0, Some(ms(20)));
        stamped.arrived_at(1, Some(t0));
        stamped.arrived_at(1, Some(t0 + ms(23)));
        let timing = stamped.finish();
        assert_eq!(timing.delta_socket_lateness, [ms(0), ms(3)]);
        assert_eq!(timing.delta_lateness.len(), 2);

        let mut partly = DeltaClock::new(t0, Some(ms(20)));
        partly.arrived_at(1, Some(t0));
        partly.arrived_at(1, None);
        partly.arrived_at(1, Some(t0 + ms(40)));
        let timing = partly.finish();
        assert!(timing.delta_socket_lateness.is_empty());
        assert_eq!(timing.delta_lateness.len(), 3);
    }
}
