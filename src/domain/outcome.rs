//! How work ends and what happens next: the seed's five outcomes (for a CDR and for a task
//! attempt alike), the one classification every dependency's errors go through, and the one
//! backoff function every retry waits by.

use std::fmt;
use std::time::Duration;

/// How one distillery job or one task attempt ended. A bad CDR is an outcome (data), never
/// an actor crash; `InternalFailure` is what the pool records when the worker running the
/// job died (a panic, or a hang the dead-man's switch cut off).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Normalized and committed (`done='y'`), or the task's effect happened.
    Successful,
    /// The call uuid was normalized before: `done='y'`, nothing written twice.
    SuccessfulDuplicate,
    /// Can never succeed as it is (unparseable CDR, rejected request): `done='error'`.
    PermanentFailure(String),
    /// A dependency was unavailable: `retry`+1, tried again after a backoff.
    RetriableFailure(String),
    /// The worker itself failed (panic, hang): restarted, the job retried soon.
    InternalFailure(String),
}

impl Outcome {
    /// The seed's names without the `outcome_` prefix, for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Successful => "successful",
            Outcome::SuccessfulDuplicate => "successful_duplicate",
            Outcome::PermanentFailure(_) => "permanent_failure",
            Outcome::RetriableFailure(_) => "retriable_failure",
            Outcome::InternalFailure(_) => "internal_failure",
        }
    }

    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Successful | Outcome::SuccessfulDuplicate)
    }

    /// A failure of `doing` as its dependency classifies it.
    pub fn failed(doing: &str, e: &impl Classify) -> Outcome {
        match e.retry() {
            Retry::Later => Outcome::RetriableFailure(format!("{doing}: {e}")),
            Retry::Never => Outcome::PermanentFailure(format!("{doing}: {e}")),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::PermanentFailure(d) | Outcome::RetriableFailure(d) | Outcome::InternalFailure(d) => {
                write!(f, "{}: {d}", self.label())
            }
            _ => f.write_str(self.label()),
        }
    }
}

/// Whether repeating an operation later can succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Connection lost, timeout, throttled, disk full: it may clear.
    Later,
    /// The request itself is wrong (bad data, missing object, rejected): it never will.
    Never,
}

/// Each dependency kind (database, storage, HTTP peer, SMTP server) answers this in one place
/// for its own error type; everything that decides about retrying asks it.
pub trait Classify: fmt::Display {
    fn retry(&self) -> Retry;

    fn is_retriable(&self) -> bool {
        self.retry() == Retry::Later
    }
}

/// The one backoff: `base × 2^failures` (or `base` when not exponential), capped at `max`.
/// `failures` counts the failures so far, so the first retry waits `base`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
    pub exponential: bool,
}

impl Backoff {
    pub const fn exponential(base: Duration, max: Duration) -> Backoff {
        Backoff { base, max, exponential: true }
    }

    pub fn delay(&self, failures: u32) -> Duration {
        if !self.exponential {
            return self.base.min(self.max);
        }
        let factor = 1u32.checked_shl(failures.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// `delay` scaled by `fraction` in [0, 1]: spreads retries that fail together (a
    /// deadlock's two victims) over the interval instead of repeating the collision.
    pub fn jittered(&self, failures: u32, fraction: f64) -> Duration {
        self.delay(failures).mul_f64(fraction.clamp(0.0, 1.0))
    }
}

/// The tasks' retry rule: the backoff until `max_retries` failures, then give up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub backoff: Backoff,
}

impl RetryPolicy {
    /// After the failure of an attempt that had failed `failures` times before: the delay
    /// before the next attempt, or `None` when the retries are used up.
    pub fn next_delay(&self, failures: u32) -> Option<Duration> {
        (failures < self.max_retries).then(|| self.backoff.delay(failures))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Backoff::exponential(S(10), S(3600));
        assert_eq!([0, 1, 5, 9, 200].map(|n| b.delay(n)), [S(10), S(20), S(320), S(3600), S(3600)]);
        let fixed = Backoff { exponential: false, ..b };
        assert_eq!(fixed.delay(7), S(10));
        assert_eq!(b.jittered(1, 0.5), S(10));
        assert_eq!(b.jittered(1, 7.0), S(20), "the fraction is clamped");
    }

    #[test]
    fn a_retry_policy_gives_up_after_max_retries() {
        let p = RetryPolicy { max_retries: 3, backoff: Backoff::exponential(S(60), S(86_400)) };
        assert_eq!([0, 1, 2].map(|r| p.next_delay(r)), [Some(S(60)), Some(S(120)), Some(S(240))]);
        assert_eq!(p.next_delay(3), None);
        let fixed = RetryPolicy { backoff: Backoff { exponential: false, ..p.backoff }, ..p };
        assert_eq!(fixed.next_delay(2), Some(S(60)));
        let huge = RetryPolicy { max_retries: 100, ..p };
        assert_eq!(huge.next_delay(60), Some(S(86_400)));
    }

    #[test]
    fn labels_are_the_seed_names() {
        assert_eq!(Outcome::SuccessfulDuplicate.label(), "successful_duplicate");
        assert_eq!(Outcome::PermanentFailure("x".into()).to_string(), "permanent_failure: x");
    }
}
