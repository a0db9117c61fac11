//! The seed's five distillery outcomes, decided per CDR. A bad CDR is an outcome (data),
//! never an actor crash; `InternalFailure` is what a supervisor records when a distillery dies.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Normalized and committed: `done='y'`.
    Successful,
    /// The call uuid was normalized before: `done='y'`, nothing written twice.
    SuccessfulDuplicate,
    /// The CDR can never succeed (unparseable, no uuid): `done='error'` with this description.
    PermanentFailure(String),
    /// Storage or database trouble: `retry`+1 and try again after a backoff.
    RetriableFailure(String),
    /// The distillery itself failed (panic, hang): restarted, CDR retried soon.
    InternalFailure(String),
}

impl Outcome {
    /// Label for logs and metrics, the seed's names without the `outcome_` prefix.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Successful => "successful",
            Outcome::SuccessfulDuplicate => "successful_duplicate",
            Outcome::PermanentFailure(_) => "permanent_failure",
            Outcome::RetriableFailure(_) => "retriable_failure",
            Outcome::InternalFailure(_) => "internal_failure",
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

/// Exponential backoff: `base * 2^retry`, capped at `max` (seconds). `retry` is the number
/// of failures so far, so the first retry waits `base`.
pub fn backoff_seconds(retry: u32, base: u64, max: u64) -> u64 {
    base.saturating_mul(1u64.checked_shl(retry.min(63)).unwrap_or(u64::MAX)).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff_seconds(0, 10, 3600), 10);
        assert_eq!(backoff_seconds(1, 10, 3600), 20);
        assert_eq!(backoff_seconds(5, 10, 3600), 320);
        assert_eq!(backoff_seconds(9, 10, 3600), 3600);
        assert_eq!(backoff_seconds(200, 10, 3600), 3600);
    }

    #[test]
    fn labels_are_the_seed_names() {
        assert_eq!(Outcome::SuccessfulDuplicate.label(), "successful_duplicate");
        assert_eq!(Outcome::PermanentFailure("x".into()).to_string(), "permanent_failure: x");
    }
}
