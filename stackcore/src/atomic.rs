//! Output files that appear whole or not at all: written to a temporary file beside the
//! destination ([`tempfile`]), flushed to disk, then renamed over it. Dropped uncommitted
//! (an error, a panic), the temporary file is removed.
//!
//! This is the one way the tools write output files outside a store. Inside a store, blobs
//! and `index.json` go through the store's own temporary files
//! ([`temp_file`](crate::oci::store::temp_file)), whose names carry the writer's pid so that
//! a later writer or `stash --gc` can tell a killed run's leftovers from a live run's.

use std::fs::{File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// A file being written in place of `dest`; see the module documentation.
#[derive(Debug)]
pub struct AtomicFile {
    tmp: tempfile::NamedTempFile,
    dest: PathBuf,
}

impl AtomicFile {
    /// Starts writing `dest`: a new temporary file `.NAME.XXXXXX.tmp` in its directory,
    /// created with mode 0666 less the umask, as a plain `create` would.
    pub fn create(dest: &Path) -> Result<Self> {
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let name = dest
            .file_name()
            .ok_or_else(|| Error::Usage(format!("{}: not a file name", dest.display())))?;
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{}.", name.to_string_lossy()))
            .suffix(".tmp")
            .permissions(Permissions::from_mode(0o666))
            .tempfile_in(dir)
            .at(dir)?;
        Ok(AtomicFile {
            tmp,
            dest: dest.to_path_buf(),
        })
    }

    /// The temporary file's path (for messages).
    pub fn temp_path(&self) -> &Path {
        self.tmp.path()
    }

    /// The open temporary file.
    pub fn file(&self) -> &File {
        self.tmp.as_file()
    }

    /// Flushes the data to disk and renames the file over `dest`.
    pub fn commit(self) -> Result<()> {
        self.tmp.as_file().sync_all().at(self.tmp.path())?;
        let dest = self.dest;
        self.tmp
            .persist(&dest)
            .map_err(|e| Error::io(&dest, e.error))?;
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tmp.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.tmp.flush()
    }
}

/// Writes `bytes` to `dest` through an [`AtomicFile`].
pub fn write(dest: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = AtomicFile::create(dest)?;
    f.write_all(bytes).at(f.temp_path().to_path_buf())?;
    f.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_or_nothing() -> Result<()> {
        let dir = tempfile::tempdir().at("tempdir")?;
        let dest = dir.path().join("out.xml");
        write(&dest, b"one")?;
        assert_eq!(std::fs::read(&dest).at(&dest)?, b"one");
        {
            let mut f = AtomicFile::create(&dest)?;
            f.write_all(b"partial").at(&dest)?;
            // dropped without commit
        }
        assert_eq!(std::fs::read(&dest).at(&dest)?, b"one", "untouched");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .at(dir.path())?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()
            .at(dir.path())?;
        assert_eq!(left, ["out.xml"], "no temporary file left");
        write(&dest, b"two")?;
        assert_eq!(std::fs::read(&dest).at(&dest)?, b"two");
        let mode = std::fs::metadata(&dest).at(&dest)?.permissions().mode() & 0o777;
        // The umask as the kernel reports it (setting it to read it would race other tests).
        let status = std::fs::read_to_string("/proc/self/status").at("/proc/self/status")?;
        let umask = status
            .lines()
            .find_map(|l| l.strip_prefix("Umask:"))
            .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            .expect("Umask in /proc/self/status");
        assert_eq!(mode, 0o666 & !umask, "as a plain create makes it");
        Ok(())
    }
}
