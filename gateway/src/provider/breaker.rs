//! Circuit breakers, one per model id: after repeated upstream failures a model is skipped (its
//! fallbacks serve) until a cool-down passes; then one probe call decides whether it is back.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

/// `[upstream.breaker]` settings.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerSettings {
    /// Consecutive failed calls that open the circuit; 0 turns breakers off.
    pub consecutive_failures: u32,
    /// Or: at least this share of the last `window` calls failed (0 to 1; 0 turns it off).
    pub failure_rate: f64,
    pub window: usize,
    /// How long an open circuit refuses calls before one probe is let through.
    pub open_ms: u64,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_rate: 0.5,
            window: 20,
            open_ms: 30_000,
        }
    }
}

/// What a circuit lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    /// Refusing calls until the cool-down ends.
    Open,
    /// One probe call is out; others are refused until it returns.
    HalfOpen,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    /// The `circuit_state` gauge's value: 0 closed, 1 half-open, 2 open.
    pub fn level(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::HalfOpen => 1,
            Self::Open => 2,
        }
    }
}

#[derive(Debug)]
struct Circuit {
    state: CircuitState,
    consecutive: u32,
    recent: VecDeque<bool>,
    opened_at: Option<Instant>,
}

impl Circuit {
    fn new() -> Self {
        Self {
            state: CircuitState::Closed,
            consecutive: 0,
            recent: VecDeque::new(),
            opened_at: None,
        }
    }
}

/// The breakers of every model this gateway has called.
pub struct Breakers {
    settings: BreakerSettings,
    circuits: Mutex<HashMap<String, Circuit>>,
}

impl Breakers {
    pub fn new(settings: BreakerSettings) -> Self {
        Self {
            settings,
            circuits: Mutex::default(),
        }
    }

    /// Breakers that never open.
    pub fn off() -> Self {
        Self::new(BreakerSettings {
            consecutive_failures: 0,
            failure_rate: 0.0,
            ..BreakerSettings::default()
        })
    }

    fn enabled(&self) -> bool {
        self.settings.consecutive_failures > 0 || self.settings.failure_rate > 0.0
    }

    /// Whether a call to `model` may go out now. An open circuit past its cool-down lets this
    /// one call through as the probe.
    pub fn allow(&self, model: &str) -> bool {
        if !self.enabled() {
            return true;
        }
        let mut circuits = self.circuits.lock().unwrap_or_else(|p| p.into_inner());
        let Some(c) = circuits.get_mut(model) else {
            return true;
        };
        match c.state {
            CircuitState::Closed => true,
            CircuitState::HalfOpen => false,
            CircuitState::Open => {
                let cooled = c
                    .opened_at
                    .is_some_and(|t| t.elapsed() >= Duration::from_millis(self.settings.open_ms));
                if cooled {
                    c.state = CircuitState::HalfOpen;
                }
                cooled
            }
        }
    }

    /// Records the outcome of a call that [`Breakers::allow`] let out.
    pub fn record(&self, model: &str, ok: bool) {
        if !self.enabled() {
            return;
        }
        let s = &self.settings;
        let mut circuits = self.circuits.lock().unwrap_or_else(|p| p.into_inner());
        let c = circuits
            .entry(model.to_owned())
            .or_insert_with(Circuit::new);
        c.recent.push_back(ok);
        while c.recent.len() > s.window.max(1) {
            c.recent.pop_front();
        }
        if ok {
            c.consecutive = 0;
            if c.state != CircuitState::Closed {
                tracing::info!(model, "circuit closed: the model answered again");
                c.recent.clear();
            }
            c.state = CircuitState::Closed;
            return;
        }
        c.consecutive += 1;
        let failures = c.recent.iter().filter(|ok| !**ok).count();
        let by_count = s.consecutive_failures > 0 && c.consecutive >= s.consecutive_failures;
        let by_rate = s.failure_rate > 0.0
            && c.recent.len() >= s.window.max(1)
            && failures as f64 >= s.failure_rate * c.recent.len() as f64;
        if c.state == CircuitState::HalfOpen || by_count || by_rate {
            if c.state != CircuitState::Open {
                tracing::warn!(
                    model,
                    open_ms = s.open_ms,
                    "circuit open: skipping the model"
                );
            }
            c.state = CircuitState::Open;
            c.opened_at = Some(Instant::now());
        }
    }

    /// Every known circuit's state, for `/readyz`.
    pub fn states(&self) -> BTreeMap<String, CircuitState> {
        let circuits = self.circuits.lock().unwrap_or_else(|p| p.into_inner());
        circuits
            .iter()
            .map(|(model, c)| (model.clone(), c.state))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breakers(consecutive: u32, rate: f64) -> Breakers {
        Breakers::new(BreakerSettings {
            consecutive_failures: consecutive,
            failure_rate: rate,
            window: 4,
            open_ms: 1_000,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_then_probes_once_and_closes() {
        let b = breakers(3, 0.0);
        for _ in 0..2 {
            assert!(b.allow("m"));
            b.record("m", false);
        }
        assert!(b.allow("m"));
        b.record("m", false);
        assert!(!b.allow("m"), "three failures open it");
        assert_eq!(b.states()["m"], CircuitState::Open);
        tokio::time::advance(Duration::from_millis(1_000)).await;
        assert!(b.allow("m"), "the probe");
        assert!(!b.allow("m"), "only one probe at a time");
        b.record("m", true);
        assert_eq!(b.states()["m"], CircuitState::Closed);
        assert!(b.allow("m"));
        assert!(b.allow("other"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_for_another_cool_down() {
        let b = breakers(1, 0.0);
        b.record("m", false);
        tokio::time::advance(Duration::from_millis(1_000)).await;
        assert!(b.allow("m"));
        b.record("m", false);
        assert!(!b.allow("m"));
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(!b.allow("m"));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(b.allow("m"));
    }

    #[tokio::test(start_paused = true)]
    async fn opens_on_the_failure_rate_of_a_full_window() {
        let b = breakers(0, 0.5);
        for ok in [false, true, true] {
            b.record("m", ok);
        }
        assert!(b.allow("m"), "the window is not full yet");
        b.record("m", false);
        assert!(!b.allow("m"), "2 of the last 4 failed, not in a row");
        let off = breakers(0, 0.0);
        for _ in 0..10 {
            off.record("m", false);
        }
        assert!(off.allow("m"));
    }
}
