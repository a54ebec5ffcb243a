//! The spool: `RUN/wandb-spool/NNNN.jsonl`, one append-only file per attempt holding
//! everything that attempt has for W&B, and `NNNN.state.json`, how much of it the server has.
//!
//! Spool lines are framed like the journal: `<xxh3-64 of the JSON, 16 hex digits> <entry>`.
//! Each entry is written with a single `write` of the whole line (so a reader in another
//! thread sees whole lines or a prefix of the last one) and made durable by [`SpoolWriter::sync`].
//! A reader treats an incomplete or corrupt last line as not yet written; a corrupt line
//! followed by a valid one is an error. No file here holds credentials.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::WandbError;
use super::error::io;
use super::history::Row;

/// The spool folder inside a run folder.
pub const DIR: &str = "wandb-spool";
/// The lock file held by the process delivering a run.
pub(crate) const LOCK: &str = "lock";

/// Who the run is, as `UpsertBucket` needs it (no credentials, no base URL).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct RunInfo {
    /// Run id (the W&B run name, in URLs).
    pub run_id: String,
    /// Project.
    pub project: String,
    /// Entity; `None`: the key's default entity.
    pub entity: Option<String>,
    /// Display name.
    pub display_name: Option<String>,
    /// Group (the sweep id).
    pub group: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// `{"key": {"value": v}}` as a JSON string.
    pub config: String,
    /// `train`.
    pub job_type: String,
    /// Host name, if known.
    pub host: Option<String>,
    /// Attempt number.
    pub attempt: u32,
    /// Resumed after this step.
    pub resume_step: Option<u64>,
}

/// One spooled item, in the order it must reach W&B.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Entry {
    /// The attempt: always the first entry.
    Run(RunInfo),
    /// A history row.
    Row(Row),
    /// A file to upload: `name` under the W&B run, `source` relative to the run folder.
    File {
        /// Upload name, e.g. `media/images/...png`.
        name: String,
        /// Path relative to the run folder.
        source: PathBuf,
    },
    /// The attempt ended.
    End {
        /// 0 for success, 1 otherwise.
        exit_code: i32,
    },
}

/// Spool files of `dir`, oldest first: `(number, path)`.
pub(crate) fn files(dir: &Path) -> Result<Vec<(u32, PathBuf)>, WandbError> {
    let read = match std::fs::read_dir(dir) {
        Ok(read) => read,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(dir)(e)),
    };
    let mut out = Vec::new();
    for entry in read {
        let path = entry.map_err(io(dir))?.path();
        let number = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".jsonl"))
            .and_then(|n| n.parse::<u32>().ok());
        if let Some(n) = number {
            out.push((n, path));
        }
    }
    out.sort();
    Ok(out)
}

/// The delivery state file of spool file `path`.
pub(crate) fn state_path(path: &Path) -> PathBuf {
    path.with_extension("state.json")
}

/// Appends entries to a new spool file.
#[derive(Debug)]
pub(crate) struct SpoolWriter {
    path: PathBuf,
    number: u32,
    file: File,
}

impl SpoolWriter {
    /// Creates the next spool file in `dir` (creating `dir`).
    pub(crate) fn create(dir: &Path) -> Result<Self, WandbError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut number = files(dir)?.last().map_or(1, |(n, _)| n + 1);
        loop {
            let path = dir.join(format!("{number:04}.jsonl"));
            match OpenOptions::new().append(true).create_new(true).open(&path) {
                Ok(file) => {
                    sync_dir(dir)?;
                    return Ok(SpoolWriter { path, number, file });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => number += 1,
                Err(e) => return Err(io(&path)(e)),
            }
        }
    }

    /// The file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The file's number (its place among the run's spool files).
    pub(crate) fn number(&self) -> u32 {
        self.number
    }

    /// Appends `entry` with one write.
    pub(crate) fn append(&mut self, entry: &Entry) -> Result<(), WandbError> {
        let json = serde_json::to_string(entry).expect("spool entries serialize");
        let line = format!("{:016x} {json}\n", xxhash_rust::xxh3::xxh3_64(json.as_bytes()));
        self.file.write_all(line.as_bytes()).map_err(io(&self.path))
    }

    /// Makes everything appended durable.
    pub(crate) fn sync(&mut self) -> Result<(), WandbError> {
        self.file.sync_data().map_err(io(&self.path))
    }
}

/// `fsync`s a folder, so a created or renamed file in it survives a crash.
fn sync_dir(dir: &Path) -> Result<(), WandbError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Reads a spool file's entries as they are appended.
pub(crate) struct SpoolReader {
    path: PathBuf,
    file: File,
    buf: Vec<u8>,
    start: usize,
    line: usize,
}

impl SpoolReader {
    /// Opens `path` at its start.
    pub(crate) fn open(path: &Path) -> Result<Self, WandbError> {
        let file = File::open(path).map_err(io(path))?;
        Ok(SpoolReader { path: path.to_path_buf(), file, buf: Vec::new(), start: 0, line: 0 })
    }

    fn decode(line: &[u8]) -> Option<Entry> {
        let text = std::str::from_utf8(line).ok()?;
        let (sum, json) = text.split_once(' ')?;
        (sum == format!("{:016x}", xxhash_rust::xxh3::xxh3_64(json.as_bytes())))
            .then(|| serde_json::from_str(json).ok())
            .flatten()
    }

    /// The next complete entry, or `None` if none is complete yet (the writer may add more).
    pub(crate) fn next(&mut self) -> Result<Option<Entry>, WandbError> {
        let newline = |buf: &[u8], from: usize| buf[from..].iter().position(|&b| b == b'\n').map(|p| from + p);
        let end = match newline(&self.buf, self.start) {
            Some(end) => end,
            None => {
                if self.start > 0 {
                    self.buf.drain(..self.start);
                    self.start = 0;
                }
                let scanned = self.buf.len();
                self.file.read_to_end(&mut self.buf).map_err(io(&self.path))?;
                match newline(&self.buf, scanned) {
                    Some(end) => end,
                    None => return Ok(None),
                }
            }
        };
        match Self::decode(&self.buf[self.start..end]) {
            Some(entry) => {
                self.start = end + 1;
                self.line += 1;
                Ok(Some(entry))
            }
            None if self.buf[end + 1..].contains(&b'\n') => Err(WandbError::Corrupt {
                path: self.path.clone(),
                message: format!("line {} is corrupt but later lines are not", self.line + 1),
            }),
            // A torn last line: nothing more can follow it in a finished file.
            None => Ok(None),
        }
    }
}

/// How much of one spool file the server has.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct DeliveryState {
    /// Entries acknowledged, from the file's start.
    pub entries_done: u64,
    /// History rows among them.
    pub rows_done: u64,
    /// The history offset of the attempt's first row, once chosen.
    pub base_offset: Option<u64>,
    /// The entity the server put the run under.
    pub entity: Option<String>,
    /// Whether the server accepted the attempt's `complete`.
    pub complete: bool,
}

impl DeliveryState {
    /// The state stored at `path` (the default if there is none).
    pub(crate) fn load(path: &Path) -> Result<Self, WandbError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| WandbError::Corrupt { path: path.to_path_buf(), message: e.to_string() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(io(path)(e)),
        }
    }

    /// Replaces the state at `path` atomically (see [`crate::atomic_file`]).
    pub(crate) fn store(&self, path: &Path) -> Result<(), WandbError> {
        crate::atomic_file::write(path, &serde_json::to_vec_pretty(self).expect("state serializes")).map_err(io(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(step: u64) -> Entry {
        Entry::Row(Row { step, runtime: 0.0, timestamp: 1.0, values: vec![("loss".into(), "0.5".into())] })
    }

    #[test]
    fn tails_a_growing_file_and_ignores_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SpoolWriter::create(dir.path()).unwrap();
        assert!(w.path().ends_with("0001.jsonl"));
        let mut r = SpoolReader::open(w.path()).unwrap();
        assert_eq!(r.next().unwrap(), None);
        w.append(&row(0)).unwrap();
        assert_eq!(r.next().unwrap(), Some(row(0)));
        assert_eq!(r.next().unwrap(), None);
        w.append(&row(1)).unwrap();
        w.append(&Entry::End { exit_code: 0 }).unwrap();
        assert_eq!(r.next().unwrap(), Some(row(1)));
        assert_eq!(r.next().unwrap(), Some(Entry::End { exit_code: 0 }));
        let path = w.path().to_path_buf();
        drop(w);
        // A crash mid-write.
        OpenOptions::new().append(true).open(&path).unwrap().write_all(b"0123456789abcdef {\"ty").unwrap();
        assert_eq!(r.next().unwrap(), None);
        assert!(SpoolWriter::create(dir.path()).unwrap().path().ends_with("0002.jsonl"));
        assert_eq!(files(dir.path()).unwrap().iter().map(|(n, _)| *n).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn corruption_before_valid_lines_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SpoolWriter::create(dir.path()).unwrap();
        for s in 0..3 {
            w.append(&row(s)).unwrap();
        }
        let mut bytes = std::fs::read(w.path()).unwrap();
        let second = bytes.iter().position(|&b| b == b'\n').unwrap() + 30;
        bytes[second] ^= 1;
        std::fs::write(w.path(), &bytes).unwrap();
        let mut r = SpoolReader::open(w.path()).unwrap();
        assert_eq!(r.next().unwrap(), Some(row(0)));
        assert!(r.next().unwrap_err().to_string().contains("line 2 is corrupt"));
    }

    #[test]
    fn state_round_trips_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = state_path(&dir.path().join("0001.jsonl"));
        assert_eq!(DeliveryState::load(&path).unwrap(), DeliveryState::default());
        let state = DeliveryState {
            entries_done: 5,
            rows_done: 3,
            base_offset: Some(7),
            entity: Some("e".into()),
            complete: true,
        };
        state.store(&path).unwrap();
        assert_eq!(DeliveryState::load(&path).unwrap(), state);
        assert!(path.ends_with("0001.state.json"));
        assert!(!path.with_extension("tmp").exists());
    }
}
