//! The run journal: an append-only file of checksummed records in the run folder, the source
//! of truth every other sink can be rebuilt from.
//!
//! Each line is `<xxh3-64 of the JSON, 16 hex digits> <record as JSON>`. Records are buffered
//! and made durable (`fsync`) by [`Journal::flush`], which the trainer calls at every
//! checkpoint and at exit. A process killed mid-write leaves at most one torn last line: on
//! opening, a torn or corrupt tail is cut off, never the records before it. A corrupt line
//! followed by valid ones is reported, not repaired.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::{Record, Sink, TrackingError};

/// File name of the journal inside a run folder.
pub const FILE: &str = "journal.jsonl";

/// An open journal, appending.
pub struct Journal {
    path: PathBuf,
    out: BufWriter<File>,
    line: Vec<u8>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> TrackingError + '_ {
    move |source| TrackingError::Io { path: path.to_path_buf(), source }
}

/// Parses journal text: the valid records, and the byte length of the valid prefix.
fn parse(path: &Path, text: &[u8]) -> Result<(Vec<Record>, usize), TrackingError> {
    let mut records = Vec::new();
    let mut valid = 0;
    let mut bad_line = None;
    for (n, line) in text.split_inclusive(|&b| b == b'\n').enumerate() {
        let decoded = (line.last() == Some(&b'\n'))
            .then(|| std::str::from_utf8(&line[..line.len() - 1]).ok())
            .flatten()
            .and_then(|l| l.split_once(' '))
            .filter(|(sum, json)| *sum == format!("{:016x}", xxhash_rust::xxh3::xxh3_64(json.as_bytes())))
            .and_then(|(_, json)| serde_json::from_str::<Record>(json).ok());
        match (decoded, bad_line) {
            (Some(_), Some(bad)) => {
                return Err(TrackingError::Corrupt {
                    path: path.to_path_buf(),
                    message: format!("line {} is corrupt but later lines are not", bad + 1),
                });
            }
            (Some(record), None) => {
                records.push(record);
                valid += line.len();
            }
            (None, _) => bad_line = bad_line.or(Some(n)),
        }
    }
    Ok((records, valid))
}

/// Every record of the journal at `path` (none if it does not exist).
pub fn read(path: &Path) -> Result<Vec<Record>, TrackingError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(parse(path, &bytes)?.0),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io(path)(e)),
    }
}

impl Journal {
    /// Opens (creating) the journal at `path` for appending, cutting off a torn tail.
    pub fn open(path: &Path) -> Result<Self, TrackingError> {
        Ok(Self::open_with_records(path)?.0)
    }

    /// [`open`](Self::open), also returning the records already in the journal (read once).
    pub fn open_with_records(path: &Path) -> Result<(Self, Vec<Record>), TrackingError> {
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(path).map_err(io(path))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io(path))?;
        let (records, valid) = parse(path, &bytes)?;
        if valid < bytes.len() {
            file.set_len(valid as u64).map_err(io(path))?;
            file.sync_data().map_err(io(path))?;
        }
        file.seek(SeekFrom::End(0)).map_err(io(path))?;
        Ok((Self { path: path.to_path_buf(), out: BufWriter::new(file), line: Vec::new() }, records))
    }
}

impl Sink for Journal {
    fn write(&mut self, record: &Record) -> Result<(), TrackingError> {
        // One reused buffer: no allocation per record on the training thread.
        self.line.clear();
        self.line.extend_from_slice(b"0000000000000000 ");
        serde_json::to_writer(&mut self.line, record)
            .map_err(|e| TrackingError::Corrupt { path: self.path.clone(), message: e.to_string() })?;
        let sum = xxhash_rust::xxh3::xxh3_64(&self.line[17..]);
        for (i, digit) in self.line[..16].iter_mut().enumerate() {
            *digit = b"0123456789abcdef"[(sum >> (60 - 4 * i) & 0xf) as usize];
        }
        self.line.push(b'\n');
        self.out.write_all(&self.line).map_err(io(&self.path))
    }

    fn flush(&mut self) -> Result<(), TrackingError> {
        self.out.flush().map_err(io(&self.path))?;
        self.out.get_ref().sync_data().map_err(io(&self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A journal at `path` holding scalars for steps `0..n`, flushed.
    fn journal_of(path: &Path, n: u64) -> Journal {
        let mut j = Journal::open(path).unwrap();
        for s in 0..n {
            j.write(&scalar(s)).unwrap();
        }
        j.flush().unwrap();
        j
    }

    fn scalar(step: u64) -> Record {
        Record::Scalar { key: "train/loss".into(), step, value: step as f64 / 10.0, wall_time: 1.0 }
    }

    #[test]
    fn round_trip_and_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let j = journal_of(&path, 3);
        drop(j);
        // A crash mid-write: half a line at the end.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"0123456789abcdef {\"type\":\"sca").unwrap();
        drop(f);
        assert_eq!(read(&path).unwrap(), vec![scalar(0), scalar(1), scalar(2)]);
        let mut j = Journal::open(&path).unwrap();
        j.write(&scalar(3)).unwrap();
        j.flush().unwrap();
        assert_eq!(read(&path).unwrap(), (0..4).map(scalar).collect::<Vec<_>>());
    }

    #[test]
    fn non_finite_values_survive_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let mut j = Journal::open(&path).unwrap();
        j.write(&Record::Scalar { key: "train/grad_norm".into(), step: 1, value: f64::NAN, wall_time: 1.0 }).unwrap();
        j.flush().unwrap();
        let back = read(&path).unwrap();
        assert!(matches!(back[0], Record::Scalar { value, .. } if value.is_nan()));
        assert!(Journal::open(&path).is_ok());
    }

    #[test]
    fn every_value_reads_back_bit_for_bit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let mut j = Journal::open(&path).unwrap();
        // Values whose shortest decimal form a fast, inexact parser reads back one bit off.
        let mut rng = crate::rng::Rng::new(7);
        let mut values = vec![2.1701316833496094, 1.8649905920028687, 0.1 + 0.2, 1e-300, f64::MAX, 5e-324];
        values.extend((0..4000).map(|_| f64::from_bits(rng.next_u64())).filter(|v| v.is_finite()));
        let wall_time = |step: usize| 1.7e9 + step as f64 / 3.0;
        for (step, value) in values.iter().enumerate() {
            j.write(&Record::Scalar { key: "k".into(), step: step as u64, value: *value, wall_time: wall_time(step) })
                .unwrap();
        }
        j.flush().unwrap();
        let back: Vec<(u64, u64)> = read(&path)
            .unwrap()
            .iter()
            .map(|r| match r {
                Record::Scalar { value, wall_time, .. } => (value.to_bits(), wall_time.to_bits()),
                other => panic!("{other:?}"),
            })
            .collect();
        let written: Vec<(u64, u64)> =
            values.iter().enumerate().map(|(step, v)| (v.to_bits(), wall_time(step).to_bits())).collect();
        assert_eq!(back, written);
    }

    #[test]
    fn corruption_before_valid_records_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        drop(journal_of(&path, 3));
        let mut bytes = std::fs::read(&path).unwrap();
        let second_line = bytes.iter().position(|&b| b == b'\n').unwrap() + 30;
        bytes[second_line] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let err = read(&path).unwrap_err().to_string();
        assert!(err.contains("line 2 is corrupt"), "{err}");
        assert!(Journal::open(&path).is_err(), "never truncates good records after a bad one");
    }
}
