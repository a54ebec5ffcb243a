//! The allocator settings of a dbsweep process: the binary, and the benchmarks that stand in
//! for it, call [`keep_freed_memory`] first (each declares mimalloc as its global allocator).

/// mimalloc's `mi_option_purge_delay` (v3 numbering; `libmimalloc-sys` exports no constant).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Tells mimalloc never to hand freed memory back to the kernel: a training step frees and
/// reallocates the same large tensors, and re-faulting zeroed pages cost 2x wall time on the
/// tiny model (4.7 s -> 1.7 s for 60 steps, `cargo bench --bench sweep`). Call it before any
/// allocation-heavy work.
pub fn keep_freed_memory() {
    // SAFETY: sets a process-wide allocator option; mimalloc reads options atomically.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}
