//! Restart policy: ractor has none built in, so each supervisor keeps a `RestartTracker`.
//! Restarts back off exponentially (capped); more than `max_restarts` within `window`
//! escalates to the parent, which is how a crash loop stops being hidden.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    pub max_restarts: usize,
    pub window: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl RestartPolicy {
    /// Distilleries and pollers: a poison CDR may kill a few in a row; ten in a minute
    /// means something is broken beyond one CDR.
    pub const WORKERS: RestartPolicy = RestartPolicy {
        max_restarts: 10,
        window: Duration::from_secs(60),
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_secs(5),
    };
    /// Subtrees under the root: a few restarts, then the process exits non-zero so the
    /// service manager (systemd, ECS) takes over.
    pub const SUBTREES: RestartPolicy = RestartPolicy {
        max_restarts: 3,
        window: Duration::from_secs(60),
        backoff_initial: Duration::from_millis(200),
        backoff_max: Duration::from_secs(5),
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    RestartAfter(Duration),
    Escalate,
}

#[derive(Debug, Clone)]
pub struct RestartTracker {
    policy: RestartPolicy,
    recent: VecDeque<Instant>,
}

impl RestartTracker {
    pub fn new(policy: RestartPolicy) -> Self {
        Self { policy, recent: VecDeque::new() }
    }

    /// Records a failure at `now` and says what to do. The delay doubles with each failure
    /// still inside the window, so an isolated crash restarts almost at once.
    pub fn on_failure(&mut self, now: Instant) -> Decision {
        while self.recent.front().is_some_and(|&t| now.duration_since(t) > self.policy.window) {
            self.recent.pop_front();
        }
        if self.recent.len() >= self.policy.max_restarts {
            return Decision::Escalate;
        }
        let exp = self.recent.len().min(20) as u32;
        self.recent.push_back(now);
        let delay = self.policy.backoff_initial.saturating_mul(1 << exp);
        Decision::RestartAfter(delay.min(self.policy.backoff_max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: RestartPolicy = RestartPolicy {
        max_restarts: 3,
        window: Duration::from_secs(10),
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_millis(300),
    };

    #[test]
    fn backs_off_then_escalates_within_the_window() {
        let mut t = RestartTracker::new(P);
        let t0 = Instant::now();
        assert_eq!(t.on_failure(t0), Decision::RestartAfter(Duration::from_millis(100)));
        assert_eq!(t.on_failure(t0), Decision::RestartAfter(Duration::from_millis(200)));
        assert_eq!(t.on_failure(t0), Decision::RestartAfter(Duration::from_millis(300)));
        assert_eq!(t.on_failure(t0 + Duration::from_secs(1)), Decision::Escalate);
    }

    #[test]
    fn failures_outside_the_window_are_forgotten() {
        let mut t = RestartTracker::new(P);
        let t0 = Instant::now();
        for _ in 0..3 {
            t.on_failure(t0);
        }
        let later = t0 + Duration::from_secs(11);
        assert_eq!(t.on_failure(later), Decision::RestartAfter(Duration::from_millis(100)));
    }
}
