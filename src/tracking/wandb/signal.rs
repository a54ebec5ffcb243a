//! [`Signal`]: what the training thread tells the delivery thread, without ever waiting for it.
//!
//! It is a one-slot, coalescing channel: `ring` after appending to the spool, `request_flush`,
//! `close` when nothing more will be appended, and `finish_by` a deadline for delivering the
//! rest. The mutex guards a few flags and is never held across I/O, so the training thread
//! waits at most for the delivery thread to flip a flag. The delivery thread's waits
//! (batching, backoff) end early when a finish deadline makes them pointless.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

#[derive(Default)]
struct State {
    rung: bool,
    flush: bool,
    closed: bool,
    finish_by: Option<Instant>,
}

/// Wake-ups and requests from the sink to its delivery thread.
#[derive(Default)]
pub(crate) struct Signal {
    state: Mutex<State>,
    cv: Condvar,
}

impl Signal {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.lock());
        self.cv.notify_all();
    }

    /// New entries are in the spool.
    pub(crate) fn ring(&self) {
        self.update(|s| s.rung = true);
    }

    /// Send what is pending now instead of at the end of the batching interval.
    pub(crate) fn request_flush(&self) {
        self.update(|s| {
            s.flush = true;
            s.rung = true;
        });
    }

    /// Nothing more will be appended to the live spool file.
    pub(crate) fn close(&self) {
        self.update(|s| {
            s.closed = true;
            s.rung = true;
        });
    }

    /// Deliver what is left by `deadline`, then stop.
    pub(crate) fn finish_by(&self, deadline: Instant) {
        self.update(|s| {
            s.closed = true;
            s.rung = true;
            s.finish_by = Some(s.finish_by.map_or(deadline, |d| d.min(deadline)));
        });
    }

    /// Whether a flush was requested since the last call (and clears the request).
    pub(crate) fn take_flush(&self) -> bool {
        std::mem::take(&mut self.lock().flush)
    }

    /// Whether the writer has closed the live spool file.
    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// The finish deadline, once one is set.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.lock().finish_by
    }

    /// Waits until a ring (consumed) or `until`, whichever is first; never past the finish
    /// deadline.
    pub(crate) fn wait_until(&self, until: Instant) {
        let mut state = self.lock();
        loop {
            if std::mem::take(&mut state.rung) {
                return;
            }
            let end = state.finish_by.map_or(until, |d| d.min(until));
            let now = Instant::now();
            if now >= end {
                return;
            }
            state = self.cv.wait_timeout(state, end - now).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// Sleeps for `wait`; `false` (early) as soon as finishing is requested at all. For waits
    /// that only make sense while the run goes on (reconnecting, waiting for a lock).
    pub(crate) fn idle(&self, wait: Duration) -> bool {
        let end = Instant::now() + wait;
        let mut state = self.lock();
        loop {
            let now = Instant::now();
            if state.finish_by.is_some() {
                return false;
            }
            if now >= end {
                return true;
            }
            state = self.cv.wait_timeout(state, end - now).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// Sleeps for `wait`; `false` (early) if the finish deadline falls within it.
    pub(crate) fn sleep(&self, wait: Duration) -> bool {
        let end = Instant::now() + wait;
        let mut state = self.lock();
        loop {
            let now = Instant::now();
            if state.finish_by.is_some_and(|d| d <= end) {
                if state.finish_by.is_some_and(|d| d <= now) {
                    return false;
                }
            } else if now >= end {
                return true;
            }
            let until = state.finish_by.map_or(end, |d| d.min(end));
            state =
                self.cv.wait_timeout(state, until.saturating_duration_since(now)).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn sleep_ends_early_at_a_finish_deadline_and_rings_coalesce() {
        let signal = Arc::new(Signal::default());
        let t = Instant::now();
        assert!(signal.sleep(Duration::from_millis(20)));
        assert!(t.elapsed() >= Duration::from_millis(20));
        let s = Arc::clone(&signal);
        let finisher = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            s.finish_by(Instant::now() + Duration::from_millis(10));
        });
        let t = Instant::now();
        assert!(!signal.sleep(Duration::from_secs(10)));
        assert!(t.elapsed() < Duration::from_secs(5));
        finisher.join().unwrap();
        assert!(signal.is_closed());
        let t = Instant::now();
        assert!(!signal.idle(Duration::from_secs(10)), "idle waits end once finishing");
        assert!(t.elapsed() < Duration::from_secs(1));
        assert!(Signal::default().idle(Duration::from_millis(5)));
        signal.ring();
        signal.ring();
        let t = Instant::now();
        signal.wait_until(Instant::now() + Duration::from_secs(5));
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}
