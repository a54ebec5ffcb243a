//! Replacing a file so that readers see the old content or the new, never a part of either.
//!
//! The bytes go to a temporary file with a unique name in the target's folder, are fsynced,
//! the temporary file is renamed over the target, and the folder is fsynced so the rename
//! survives a power loss. The unique name matters: several training processes fill the same
//! latent cache at once, and two writers sharing one temporary path would rename each other's
//! file away. A failed write leaves no temporary file behind.

use std::io;
use std::path::Path;

/// Replaces `path` atomically with what `write` puts into the temporary file whose path it is
/// given (`write` may create or truncate that file).
pub fn write_with<E: From<io::Error>>(path: &Path, write: impl FnOnce(&Path) -> Result<(), E>) -> Result<(), E> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = tempfile::Builder::new().prefix(&format!(".{name}.")).suffix(".tmp").tempfile_in(dir)?;
    write(tmp.path())?;
    std::fs::File::open(tmp.path())?.sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// Replaces `path` atomically with `bytes`.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_with(path, |tmp| std::fs::write(tmp, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_writers_of_one_path_all_succeed_and_leave_one_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("latent.safetensors");
        std::thread::scope(|s| {
            for i in 0..8u8 {
                let path = &path;
                s.spawn(move || {
                    for _ in 0..50 {
                        write(path, &[i; 4096]).unwrap();
                    }
                });
            }
        });
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 4096);
        assert!(bytes.iter().all(|&b| b == bytes[0]), "a mix of two writes");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["latent.safetensors"], "temporary files left behind");
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.png");
        write(&path, b"old").unwrap();
        let failed = write_with(&path, |tmp| {
            std::fs::write(tmp, b"half")?;
            Err(io::Error::other("encoder failed"))
        });
        assert_eq!(failed.unwrap_err().to_string(), "encoder failed");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
