//! The `dbsweep` binary: parse arguments, run the command, map the outcome to an exit code.

use clap::Parser;
use dbsweep::{cli, exit};

/// mimalloc instead of glibc malloc: training allocates and frees many large tensors per step,
/// and glibc returns those to the kernel (mmap/munmap), so every step paid for fresh zeroed
/// pages; mimalloc cut the tiny model's 64 px training step from 1.04 s to 0.76 s
/// (`cargo bench --bench train_step`, 1 thread).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (v3 numbering; `libmimalloc-sys` exports no constant).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() {
    // Never hand freed memory back to the kernel: a training step frees and reallocates the
    // same large tensors, and re-faulting zeroed pages cost 2x wall time on the tiny model
    // (4.7 s -> 1.7 s for 60 steps, `cargo bench --bench sweep`).
    // SAFETY: sets a process-wide allocator option before any allocation-heavy work.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        // candle 0.11 asks for its thread count on every matmul and, when RAYON_NUM_THREADS is
        // unset, re-reads /proc/cpuinfo each time: a third of a tiny model's training step.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        // SAFETY: the first statement of main, before any other thread exists.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", threads.to_string()) };
    }
    let args = match cli::Cli::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            std::process::exit(if e.use_stderr() { exit::BAD_INPUT } else { exit::OK });
        }
    };
    let env: Vec<(String, String)> = std::env::vars().collect();
    let mut stdout = std::io::stdout().lock();
    match cli::run(args, &env, &mut stdout) {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            eprintln!("error: {err}");
            std::process::exit(exit::code(&err));
        }
    }
}
