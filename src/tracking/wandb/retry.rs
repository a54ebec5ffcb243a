//! W&B's retry policy (wandb-core `internal/clients/retry_policy.go` and `backoff.go`), with
//! every duration configurable so tests run in milliseconds.
//!
//! - Never retried: 400, 401, 403, 404, 409, 410, 413, 422, 501 (for `UpsertBucket`, 409 is
//!   retried, as wandb-core's `UpsertBucketRetryPolicy` does).
//! - Retried: every other 4xx and 5xx (429 included), statuses outside 100..=599, and
//!   connection failures (refused, reset, timed out, DNS); not TLS or URL errors.
//! - Wait before retry `n` (from 0): `Retry-After` if the reply has one (seconds, or an HTTP
//!   date), else `wait_min * 2^n * (1 + 0.25 * U[0, 1))`, at most `wait_max`.
//!
//! W&B retries file_stream for 7 days because its memory holds the only copy; here everything
//! is in the spool already, so the default is wandb-core's GraphQL budget (20 retries, about 17
//! minutes) for every request, after which `dbsweep sync` finishes the job.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::rng::Rng;

/// How often and how patiently requests are retried.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// First wait (wandb-core: 2 s).
    pub wait_min: Duration,
    /// Longest computed wait (wandb-core: 60 s).
    pub wait_max: Duration,
    /// Retries after the first request (wandb-core GraphQL: 20).
    pub max_retries: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { wait_min: Duration::from_secs(2), wait_max: Duration::from_secs(60), max_retries: 20 }
    }
}

/// Whether a reply with `status` is retried. `upsert`: the request is `UpsertBucket`.
pub fn retryable_status(status: u16, upsert: bool) -> bool {
    match status {
        409 => upsert,
        400 | 401 | 403 | 404 | 410 | 413 | 422 | 501 => false,
        400..=599 => true,
        100..=399 => false,
        _ => true,
    }
}

impl RetryPolicy {
    /// The wait before retry `attempt` (0 for the first retry): `retry_after` when the server
    /// gave one, else the jittered exponential backoff. `rng` supplies the jitter.
    pub fn backoff(&self, attempt: u32, retry_after: Option<Duration>, rng: &mut Rng) -> Duration {
        if let Some(wait) = retry_after {
            return wait;
        }
        let jitter = 1.0 + 0.25 * rng.next_f64();
        let secs = self.wait_min.as_secs_f64() * 2f64.powi(attempt.min(32) as i32) * jitter;
        Duration::try_from_secs_f64(secs).unwrap_or(self.wait_max).min(self.wait_max)
    }
}

/// Parses a `Retry-After` value: seconds (`120`, `1.5`) or an IMF-fixdate
/// (`Fri, 31 Dec 1999 23:59:59 GMT`), relative to `now`. `None` if it is neither.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(secs.max(0.0)).ok();
    }
    let at = parse_http_date(value)?;
    let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(at.saturating_sub(now)))
}

/// Seconds since the epoch of an IMF-fixdate such as `Sun, 06 Nov 1994 08:49:37 GMT`.
fn parse_http_date(value: &str) -> Option<u64> {
    let parts: Vec<&str> = value.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else { return None };
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month = MONTHS.iter().position(|m| m == month)? as i64 + 1;
    let (day, year): (i64, i64) = (day.parse().ok()?, year.parse().ok()?);
    let hms: Vec<u64> = time.split(':').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    let [h, m, s] = hms.as_slice() else { return None };
    if !(1..=31).contains(&day) || *h > 23 || *m > 59 || *s > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days).ok().map(|d| d * 86_400 + h * 3600 + m * 60 + s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_wandb_core() {
        for never in [400, 401, 403, 404, 409, 410, 413, 422, 501] {
            assert!(!retryable_status(never, false), "{never}");
        }
        for retried in [408, 425, 429, 499, 500, 502, 503, 504, 599, 0, 600] {
            assert!(retryable_status(retried, false), "{retried}");
        }
        assert!(retryable_status(409, true));
        assert!(!retryable_status(410, true));
        assert!(!retryable_status(302, false));
    }

    #[test]
    fn backoff_doubles_with_up_to_a_quarter_of_jitter_and_is_capped() {
        let policy = RetryPolicy::default();
        let mut rng = Rng::new(7);
        for attempt in 0..8 {
            let base = (2.0 * 2f64.powi(attempt as i32)).min(60.0);
            for _ in 0..50 {
                let wait = policy.backoff(attempt, None, &mut rng).as_secs_f64();
                assert!(wait >= base.min(60.0) - 1e-9 && wait <= (base * 1.25).min(60.0) + 1e-9, "{attempt}: {wait}");
            }
        }
        assert_eq!(policy.backoff(1000, None, &mut rng), Duration::from_secs(60));
        assert_eq!(policy.backoff(0, Some(Duration::from_secs(90)), &mut rng), Duration::from_secs(90));
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("0.5", now), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_http_date("Fri, 31 Dec 1999 23:59:59 GMT"), Some(946_684_799));
    }
}
