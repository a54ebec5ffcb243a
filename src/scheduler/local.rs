//! The local backend: each attempt is a child process on one of this machine's slots.
//!
//! Each run is `dbsweep train --run ID --claimed` in its own process group, with
//! `CUDA_VISIBLE_DEVICES` and `RAYON_NUM_THREADS` set from its slot and its output in
//! `runs/ID/attempt-N.log`. A freed slot gets the next run at once. A graceful stop is SIGINT
//! to the process group (the trainer checkpoints and exits), a kill SIGKILL. Children watch
//! their parent, so killing the orchestrator with -9 also makes them checkpoint and exit; the
//! next `dbsweep run`/`resume` marks runs whose process is gone as interrupted and continues
//! them from their checkpoints.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::dispatch::{Active, Backend, Exit, LaunchError, Stop, Verdict, recover_stale};
use super::events::Event;
use super::process;
use super::slots::Slot;
use crate::exit::Kind;
use crate::store::{Claim, Store, StoreError};

/// How training processes are started: this executable on this output root.
#[derive(Clone, Debug)]
pub struct TrainCommand {
    /// The dbsweep executable.
    pub exe: PathBuf,
    /// The output root (absolute for backends whose jobs start elsewhere).
    pub root: PathBuf,
}

impl TrainCommand {
    /// The arguments after the executable: `--root ROOT train --run RUN --claimed`.
    pub fn args(&self, run: &str) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = vec!["--root".into(), self.root.clone().into_os_string()];
        args.extend(["train", "--run", run, "--claimed"].map(Into::into));
        args
    }
}

/// Child processes on slots.
pub struct LocalBackend {
    slots: Vec<Slot>,
    command: TrainCommand,
    host: String,
    /// Running children by pid, with their slot.
    children: HashMap<u64, (usize, Child)>,
}

impl LocalBackend {
    /// A backend running `command` on `slots`; `host` is this machine's name as claims record it.
    pub fn new(slots: Vec<Slot>, command: TrainCommand, host: String) -> Self {
        LocalBackend { slots, command, host, children: HashMap::new() }
    }

    fn spawn(&self, slot: &Slot, run: &str, attempt: u32) -> std::io::Result<(Child, PathBuf)> {
        use std::os::unix::process::CommandExt;
        let dir = self.command.root.join("runs").join(run);
        std::fs::create_dir_all(&dir)?;
        let log = dir.join(format!("attempt-{attempt}.log"));
        let out = File::create(&log)?;
        let mut cmd = Command::new(&self.command.exe);
        cmd.args(self.command.args(run));
        cmd.env("RAYON_NUM_THREADS", slot.threads.to_string());
        if slot.gpus.is_empty() {
            // Empty: no GPU at all (unset would let a `cuda` build take every GPU).
            cmd.env("CUDA_VISIBLE_DEVICES", "");
        } else {
            let gpus: Vec<String> = slot.gpus.iter().map(u32::to_string).collect();
            cmd.env("CUDA_VISIBLE_DEVICES", gpus.join(","));
        }
        cmd.stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out).process_group(0);
        Ok((cmd.spawn()?, log))
    }
}

impl Backend for LocalBackend {
    fn adopt(
        &mut self,
        store: &mut Store,
        sweep_id: &str,
        report: &mut dyn FnMut(Event),
    ) -> Result<Vec<Active>, StoreError> {
        recover_stale(store, sweep_id, &self.host, report)?;
        Ok(Vec::new())
    }

    fn capacity(&self) -> usize {
        self.slots.len()
    }

    fn launch(&mut self, store: &mut Store, claim: &Claim, _active: &[Active]) -> Result<Active, LaunchError> {
        let checkpoint_before = store.latest_checkpoint(&claim.run_id)?;
        let used: Vec<usize> = self.children.values().map(|(slot, _)| *slot).collect();
        let Some(slot) = (0..self.slots.len()).find(|i| !used.contains(i)) else {
            return Err(LaunchError::Backend("no free slot".into()));
        };
        let (child, log) = self
            .spawn(&self.slots[slot], &claim.run_id, claim.attempt)
            .map_err(|e| LaunchError::Backend(format!("cannot start the training process: {e}")))?;
        let pid = u64::from(child.id());
        let mut active = Active::new(claim, pid, self.slots[slot].to_string(), log, checkpoint_before);
        active.running_since = Some(Instant::now());
        self.children.insert(pid, (slot, child));
        Ok(active)
    }

    fn poll(&mut self, store: &mut Store, active: &mut [Active]) -> Result<Result<Vec<Exit>, String>, StoreError> {
        let mut exits = Vec::new();
        for (index, a) in active.iter().enumerate() {
            let Some((_, child)) = self.children.get_mut(&a.handle) else { continue };
            let Some(status) = child.try_wait().ok().flatten() else { continue };
            self.children.remove(&a.handle);
            let code = status
                .code()
                .unwrap_or_else(|| 128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0));
            let verdict = match Kind::of_code(code) {
                Kind::Ok => Verdict::Finished,
                Kind::Interrupted => Verdict::Interrupted,
                Kind::Failed | Kind::BadInput => {
                    Verdict::Failed(store.run(&a.run)?.error.unwrap_or_else(|| format!("exit code {code}")))
                }
            };
            exits.push(Exit { index, verdict, code });
        }
        Ok(Ok(exits))
    }

    fn stop(&mut self, attempt: &Active, how: Stop) {
        let signal = match how {
            Stop::Graceful => libc::SIGINT,
            Stop::Kill => libc::SIGKILL,
        };
        process::signal_group(attempt.handle as u32, signal);
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_millis(20)
    }
}
