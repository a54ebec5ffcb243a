//! The compute threads of a dbsweep process: candle's, gemm's and the model's own parallel
//! work runs on rayon's global pool (`RAYON_NUM_THREADS` threads), and the thread that trains
//! is one of them.
//!
//! Without that, every parallel op of a training step is handed from the main thread to a
//! pool worker and the main thread sleeps until it ends: two futex wake-ups per op, 15 % of a
//! tiny model's step at one thread (`perf`: `_raw_spin_unlock_irqrestore` in `futex_wake`).

/// Builds the global pool with the calling thread as its worker 0, so parallel work started
/// on this thread runs on it (and, with one thread, only on it). Call it first thing in
/// `main`, from the thread that computes. Only that thread may wait on rayon work: a job
/// another thread starts is not picked up by this one while it does something else.
pub fn compute_on_this_thread() {
    // An error means the pool exists already (a second call): it is kept as it is.
    let _ = rayon::ThreadPoolBuilder::new().use_current_thread().build_global();
}
