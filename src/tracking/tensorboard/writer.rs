//! The event-file writer: one new file per writer, buffered, flushed on a timer and on demand.
//!
//! File names are `events.out.tfevents.<10-digit secs>.<host>.<pid>.<uid>`. TensorBoard reads
//! the event files of a folder in name order, and a resumed attempt's purge marker only works
//! when its file is read after the earlier attempts' files, so a new file is named to sort after
//! every event file already in the folder: if the clock says otherwise (two processes in the
//! same second, a clock that went back, another host), its seconds field is moved one past the
//! last file's.
//!
//! `uid` is a process-wide counter, zero-padded so that name order is creation order: two
//! writers of one process in the same second get different names. It is the one piece of
//! global state here, and it is safe: an atomic that only ever grows and only feeds names.
//! Files are opened with `create_new`, so an existing file is never truncated; a taken name
//! moves on to the next uid.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prost::Message;

use super::proto::{Event, event};
use super::record::write_record;
use crate::tracking::TrackingError;

/// How often buffered events reach the file when nobody asks, by default.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(2);

/// The `file_version` of the first event, which also enables TensorBoard's purge-on-restart.
const FILE_VERSION: &str = "brain.Event:2";

/// What every event file name starts with (TensorBoard only reads names containing `tfevents`).
const NAME_PREFIX: &str = "events.out.tfevents.";

/// How many taken names to step over before giving up.
const NAME_ATTEMPTS: u32 = 64;

/// The next `uid` of a file name in this process.
static NEXT_UID: AtomicU64 = AtomicU64::new(0);

/// Appends events to one new event file.
///
/// Writes are buffered; the buffer reaches the file when a write finds the flush interval has
/// passed since the last flush, on [`EventFileWriter::flush`] and [`EventFileWriter::sync`],
/// and (best effort) on drop.
#[derive(Debug)]
pub struct EventFileWriter {
    path: PathBuf,
    out: BufWriter<File>,
    flush_interval: Duration,
    last_flush: Instant,
}

impl EventFileWriter {
    /// Creates a new event file in `dir` (created if missing) and writes the file-version
    /// event. Buffered events are flushed at least every `flush_interval`, on the next write.
    pub fn create(dir: &Path, flush_interval: Duration) -> Result<Self, TrackingError> {
        std::fs::create_dir_all(dir).map_err(|source| TrackingError::Io { path: dir.to_owned(), source })?;
        let (path, file) = create_file(dir, unix_secs(), &host_name(), std::process::id())?;
        let mut writer =
            EventFileWriter { path, out: BufWriter::new(file), flush_interval, last_flush: Instant::now() };
        let first = Event {
            wall_time: crate::tracking::now(),
            step: 0,
            what: Some(event::What::FileVersion(FILE_VERSION.to_owned())),
        };
        writer.write_event(&first)?;
        Ok(writer)
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event; flushes when the flush interval has passed.
    pub(crate) fn write_event(&mut self, event: &Event) -> Result<(), TrackingError> {
        write_record(&mut self.out, &event.encode_to_vec()).map_err(|source| self.io_error(source))?;
        if self.last_flush.elapsed() >= self.flush_interval {
            self.flush()?;
        }
        Ok(())
    }

    /// Hands everything buffered to the operating system (readers see it).
    pub fn flush(&mut self) -> Result<(), TrackingError> {
        self.out.flush().map_err(|source| self.io_error(source))?;
        self.last_flush = Instant::now();
        Ok(())
    }

    /// [`flush`](Self::flush), then waits until the file's data is on disk.
    pub fn sync(&mut self) -> Result<(), TrackingError> {
        self.flush()?;
        self.out.get_ref().sync_data().map_err(|source| self.io_error(source))
    }

    fn io_error(&self, source: std::io::Error) -> TrackingError {
        TrackingError::Io { path: self.path.clone(), source }
    }
}

impl Drop for EventFileWriter {
    fn drop(&mut self) {
        // Errors cannot be reported from drop; callers who care call `sync` first.
        let _ = self.out.flush();
    }
}

/// The file name for a writer created at `secs` by process `pid` on `host` with number `uid`.
fn file_name(secs: u64, host: &str, pid: u32, uid: u64) -> String {
    format!("{NAME_PREFIX}{secs:010}.{host}.{pid}.{uid:06}")
}

/// Creates the file with a fresh name that sorts after every event file already in `dir`.
fn create_file(dir: &Path, now_secs: u64, host: &str, pid: u32) -> Result<(PathBuf, File), TrackingError> {
    let last = last_event_file(dir)?;
    let mut secs = now_secs;
    for _ in 0..NAME_ATTEMPTS {
        let uid = NEXT_UID.fetch_add(1, Ordering::Relaxed);
        let mut name = file_name(secs, host, pid, uid);
        if let Some(last) = last.as_deref().filter(|last| name.as_str() <= *last) {
            secs = name_secs(last).unwrap_or(secs).max(secs) + 1;
            name = file_name(secs, host, pid, uid);
        }
        let path = dir.join(&name);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => return Ok((path, file)),
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(source) => return Err(TrackingError::Io { path, source }),
        }
    }
    Err(TrackingError::Io {
        path: dir.to_owned(),
        source: std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("no free event file name after {NAME_ATTEMPTS} tries"),
        ),
    })
}

/// The greatest event file name in `dir`, if any.
fn last_event_file(dir: &Path) -> Result<Option<String>, TrackingError> {
    let io = |source| TrackingError::Io { path: dir.to_owned(), source };
    let mut last: Option<String> = None;
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let name = entry.map_err(io)?.file_name();
        if let Some(name) = name.to_str().filter(|n| n.contains("tfevents"))
            && last.as_deref().is_none_or(|l| name > l)
        {
            last = Some(name.to_owned());
        }
    }
    Ok(last)
}

/// The seconds field of one of our file names.
fn name_secs(name: &str) -> Option<u64> {
    name.strip_prefix(NAME_PREFIX)?.split('.').next()?.parse().ok()
}

/// Seconds since the Unix epoch (0 before it).
fn unix_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// This machine's host name, reduced to characters that are safe in a file name.
fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_default();
    let host: String = raw
        .trim()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' })
        .collect();
    if host.is_empty() { "localhost".to_owned() } else { host }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracking::tensorboard::record::read_records;

    #[test]
    fn two_writers_in_the_same_second_get_distinct_files_in_creation_order() {
        let dir = tempfile::tempdir().unwrap();
        let (first, _) = create_file(dir.path(), 1_700_000_000, "host", 42).unwrap();
        let (second, _) = create_file(dir.path(), 1_700_000_000, "host", 42).unwrap();
        assert_ne!(first, second);
        assert!(first < second, "{first:?} should sort before {second:?}");
        for path in [&first, &second] {
            let name = path.file_name().unwrap().to_str().unwrap();
            assert!(name.starts_with("events.out.tfevents.1700000000.host.42."), "{name}");
        }
    }

    #[test]
    fn real_writers_created_back_to_back_keep_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = EventFileWriter::create(dir.path(), DEFAULT_FLUSH_INTERVAL).unwrap();
        let mut b = EventFileWriter::create(dir.path(), DEFAULT_FLUSH_INTERVAL).unwrap();
        assert_ne!(a.path(), b.path());
        a.sync().unwrap();
        b.sync().unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        for path in [a.path(), b.path()] {
            let records = read_records(path).unwrap();
            assert_eq!(records.len(), 1);
            let event = Event::decode(records[0].as_slice()).unwrap();
            assert_eq!(event.what, Some(event::What::FileVersion("brain.Event:2".to_owned())));
        }
    }

    #[test]
    fn a_new_file_sorts_after_files_from_a_later_clock_or_another_process() {
        let dir = tempfile::tempdir().unwrap();
        let later = "events.out.tfevents.1700000005.zzz-host.99999.000000";
        std::fs::write(dir.path().join(later), b"").unwrap();
        let (path, _) = create_file(dir.path(), 1_700_000_000, "host", 42).unwrap();
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(name > later, "{name} should sort after {later}");
        assert!(name.starts_with("events.out.tfevents.1700000006.host.42."), "{name}");
        // Nothing was truncated.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn host_names_are_file_name_safe() {
        let host = host_name();
        assert!(!host.is_empty());
        assert!(host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')), "{host}");
    }

    #[test]
    fn timed_flush_makes_events_visible_without_an_explicit_flush() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = EventFileWriter::create(dir.path(), Duration::ZERO).unwrap();
        let event = Event { wall_time: 1.0, step: 3, what: None };
        writer.write_event(&event).unwrap();
        assert_eq!(read_records(writer.path()).unwrap().len(), 2);
    }
}
