//! A small tmpfs mounted for one test: a real file system that really runs full, so that
//! writes really fail with `ENOSPC` (no mock of the file system). Mounting needs root (or
//! `CAP_SYS_ADMIN`), which the tests have here and in CI; when it is refused the test fails
//! saying so, it is not skipped.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted tmpfs, unmounted on drop.
pub(crate) struct Tmpfs {
    mount_point: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `kib` KiB on a new temporary directory.
    pub(crate) fn mount(kib: u64) -> Tmpfs {
        let mount_point = tempfile::tempdir().expect("a temporary directory");
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k,mode=0700"), "tarn-test"])
            .arg(mount_point.path())
            .output();
        match output {
            Ok(output) if output.status.success() => Tmpfs { mount_point },
            Ok(output) => panic!(
                "this test needs a small tmpfs to fill up, and mounting one was refused ({}): \
                 run the tests as root (or with CAP_SYS_ADMIN), as CI does: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
            Err(e) => panic!("this test mounts a small tmpfs, and `mount` cannot be run: {e}"),
        }
    }

    /// The mounted file system's root.
    pub(crate) fn path(&self) -> &Path {
        self.mount_point.path()
    }

    /// Fills the file system up to the last byte with a file; returns the file.
    pub(crate) fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut file = OpenOptions::new().create(true).append(true).open(&path).unwrap();
        for chunk in [64 * 1024, 4096, 1] {
            let bytes = vec![0xAB; chunk];
            loop {
                match file.write(&bytes) {
                    Ok(n) if n == chunk => continue,
                    Ok(_) => break,
                    Err(e) if e.raw_os_error() == Some(28) => break,
                    Err(e) => panic!("filling the test file system: {e}"),
                }
            }
        }
        path
    }

    /// Gives the space of [`Tmpfs::fill`] back.
    pub(crate) fn free(&self, filler: &Path) {
        std::fs::remove_file(filler).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let status = Command::new("umount").arg("-l").arg(self.mount_point.path()).status();
        if !status.is_ok_and(|s| s.success()) {
            eprintln!("cannot unmount the test tmpfs at {}", self.mount_point.path().display());
        }
    }
}
