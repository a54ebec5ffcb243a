//! Processes and their logs as the scheduler sees them: whether a pid still runs, signalling a
//! training process's group, and reading its log (the last progress line, the last lines).

use std::fs::File;
use std::path::Path;

use super::events::PROGRESS_PREFIX;

/// Whether process `pid` is alive on this machine: it exists (or exists under another user)
/// and is not a zombie, a dead process whose parent has not collected it yet (what a child of
/// a killed orchestrator is until init reaps it).
pub fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists; it sends nothing.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    let exists = r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    exists && !zombie(pid)
}

/// Whether `/proc` says process `pid` is a zombie (or dead): its state letter `Z` or `X`.
fn zombie(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // `pid (command) S ...`: the command may hold spaces and parentheses, the state follows
    // the last `)`.
    let state = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next());
    matches!(state, Some("Z" | "X"))
}

/// Sends `signal` to the process group led by `pid` (a training process and what it started).
pub fn signal_group(pid: u32, signal: libc::c_int) {
    // SAFETY: training processes are started as leaders of their own process group
    // (pgid = pid), so this signals exactly that process and its children.
    unsafe {
        libc::kill(-(pid as libc::pid_t), signal);
    }
}

/// The last progress line of a run's log: (step, total, loss).
pub fn last_progress(log: &Path) -> Option<(u64, u64, f64)> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = File::open(log).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(4096))).ok()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let line = text.lines().rev().find_map(|l| l.strip_prefix(PROGRESS_PREFIX))?;
    let mut parts = line.split_whitespace();
    let (step, total) = parts.next()?.split_once('/')?;
    let loss = parts.nth(1)?.parse().ok()?;
    Some((step.parse().ok()?, total.parse().ok()?, loss))
}

/// The last `lines` lines of the file at `path` (empty if it cannot be read).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The warnings a training process printed in its log (`warning: ...` lines), e.g. corrupt
/// checkpoints it skipped.
pub fn warnings(path: &Path) -> Vec<String> {
    let text = std::fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    text.lines().filter_map(|l| l.strip_prefix("warning: ")).map(String::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zombie_is_not_alive() {
        let child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Not waited for: once it exits it is a zombie until collected.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while alive(pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!alive(pid), "an exited, uncollected child counts as dead");
        assert!(alive(std::process::id()));
        drop(child);
    }

    #[test]
    fn progress_and_warnings_are_read_from_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("attempt-1.log");
        std::fs::write(
            &log,
            "warning: skipping unusable checkpoint: x\nprogress step 3/10 loss 0.5\nprogress step 4/10 loss 0.25\n",
        )
        .unwrap();
        assert_eq!(last_progress(&log), Some((4, 10, 0.25)));
        assert_eq!(warnings(&log), ["skipping unusable checkpoint: x"]);
        assert_eq!(tail(&log, 1), "progress step 4/10 loss 0.25");
    }
}
