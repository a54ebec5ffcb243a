//! The compute threads of a dbsweep process: candle's, gemm's and the model's own parallel
//! work runs on rayon's global pool (`RAYON_NUM_THREADS` threads), and the thread that trains
//! is one of them.
//!
//! Without that, every parallel op of a training step is handed from the main thread to a
//! pool worker and the main thread sleeps until it ends: two futex wake-ups per op, 15 % of a
//! tiny model's step at one thread (`perf`: `_raw_spin_unlock_irqrestore` in `futex_wake`).
//!
//! candle 0.11 runs its element-wise ops on a second pool of its own (`candle-bp-*` threads,
//! `CANDLE_NUM_THREADS`), whose workers spin for a while after each op. With both pools as
//! large as the machine, those spinning threads took the cores rayon's workers needed, and
//! the thread that trains spun in turn waiting for a candle worker the scheduler had put
//! aside: 21 % of a 64 px step at two threads (`perf`: `BarrierGuard::drop`). So candle's
//! pool gets no workers of its own unless `CANDLE_NUM_THREADS` says otherwise: its
//! element-wise ops run on the calling thread, and everything parallel runs on rayon's pool.

/// Sets the thread counts of a dbsweep process and builds rayon's global pool with the calling
/// thread as its worker 0, so parallel work started on this thread runs on it (and, with one
/// thread, only on it). `RAYON_NUM_THREADS` defaults to the available parallelism (candle 0.11
/// asks for its thread count on every matmul and, when the variable is unset, re-reads
/// `/proc/cpuinfo` each time: a third of a tiny model's training step), `CANDLE_NUM_THREADS`
/// to 1 (see the module documentation); values already set are kept.
///
/// # Safety
///
/// Sets environment variables: call it first thing in `main`, before any other thread
/// exists, from the thread that computes. Only that thread may wait on rayon work: a job
/// another thread starts is not picked up by this one while it does something else.
pub unsafe fn compute_on_this_thread() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        // SAFETY: the caller guarantees that no other thread exists.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", threads.to_string()) };
    }
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: as above.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
    // An error means the pool exists already (a second call): it is kept as it is.
    let _ = rayon::ThreadPoolBuilder::new().use_current_thread().build_global();
}
