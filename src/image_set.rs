//! Image folders as runs see them: the image files of a folder, sorted, with a fingerprint of
//! their names and contents. The fingerprint is part of a run's identity (changed images are a
//! new run) and of its lineage. Used by every layer that names training data; uses nothing of
//! the crate.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The file extensions that are images (compared without case).
pub const EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "webp"];

/// A training image that cannot be used, named by its file.
#[derive(Clone, Debug, thiserror::Error)]
#[error("`{path}`: {message}")]
pub struct DataError {
    /// The file or folder.
    pub path: PathBuf,
    /// What is wrong and what is expected.
    pub message: String,
}

/// A [`DataError`] about `path`.
pub fn error(path: &Path, message: impl Into<String>) -> DataError {
    DataError { path: path.to_path_buf(), message: message.into() }
}

/// The image files of a folder, sorted by name, with a fingerprint of their contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSet {
    /// The files, sorted.
    pub files: Vec<PathBuf>,
    /// sha256 of each file's contents, in the order of `files`.
    pub hashes: Vec<String>,
    /// sha256 over every file's name and contents, in order: changes when any image does.
    pub fingerprint: String,
}

impl ImageSet {
    /// Lists and fingerprints the PNG/JPEG/WebP files of `dir` (other files are ignored).
    pub fn open(dir: &Path) -> Result<Self, DataError> {
        let entries = std::fs::read_dir(dir).map_err(|e| error(dir, format!("cannot read the image folder: {e}")))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .and_then(|x| x.to_str())
                    .is_some_and(|x| EXTENSIONS.contains(&x.to_ascii_lowercase().as_str()))
            })
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(error(dir, "no images (expected .png, .jpg, .jpeg or .webp files)"));
        }
        Self::from_files(files)
    }

    /// Fingerprints the given files, in the given order.
    pub fn from_files(files: Vec<PathBuf>) -> Result<Self, DataError> {
        let mut hash = Sha256::new();
        let mut hashes = Vec::with_capacity(files.len());
        for file in &files {
            let bytes = std::fs::read(file).map_err(|e| error(file, format!("cannot read: {e}")))?;
            hash.update(file.file_name().map(|n| n.as_encoded_bytes()).unwrap_or_default());
            hash.update((bytes.len() as u64).to_le_bytes());
            hash.update(&bytes);
            hashes.push(hex(&Sha256::digest(&bytes)));
        }
        Ok(Self { files, hashes, fingerprint: hex(&hash.finalize()) })
    }
}

/// Lower-case hexadecimal of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn examples() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/instance")
    }

    #[test]
    fn fingerprint_follows_content() {
        let dir = tempfile::tempdir().unwrap();
        for f in ImageSet::open(&examples()).unwrap().files {
            std::fs::copy(&f, dir.path().join(f.file_name().unwrap())).unwrap();
        }
        let a = ImageSet::open(dir.path()).unwrap();
        assert_eq!(a.fingerprint, ImageSet::open(&examples()).unwrap().fingerprint);
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        assert_eq!(ImageSet::open(dir.path()).unwrap().fingerprint, a.fingerprint);
        std::fs::copy(&a.files[0], dir.path().join("zz-extra.png")).unwrap();
        assert_ne!(ImageSet::open(dir.path()).unwrap().fingerprint, a.fingerprint);
    }

    #[test]
    fn an_empty_or_missing_folder_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = ImageSet::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("no images"), "{err}");
        let err = ImageSet::open(&dir.path().join("nowhere")).unwrap_err().to_string();
        assert!(err.contains("nowhere") && err.contains("cannot read the image folder"), "{err}");
    }
}
