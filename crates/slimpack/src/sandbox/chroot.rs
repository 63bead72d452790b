//! The last resort where no namespace can be made (a container without
//! CAP_SYS_ADMIN, Docker's default): as root, a scratch copy of the root,
//! the binds moved into it for the run and back after, and `chroot` into
//! it. The command sees the same paths as under bwrap, so it writes the
//! same bytes; the cached root is never written, since only a copy is used.

use super::command::{wait, Output};
use anyhow::{bail, Context, Result};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// What bwrap would have mounted, done on the scratch copy instead.
#[derive(Debug, Clone)]
pub enum Op {
    /// A host directory moved in for the run (writes land in it).
    Bind(PathBuf, String),
    /// A host file or directory copied in.
    Copy(PathBuf, String),
    /// An empty directory, replacing what is there.
    Empty(String),
    Symlink(String, String),
}

/// Copies `src` (a tree of the unpacked root, or a host path slimpack
/// chose) to `dst`, links as links, modes and owners kept.
fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let meta = std::fs::symlink_metadata(src).with_context(|| format!("{}", src.display()))?;
    let ft = meta.file_type();
    if ft.is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(src)?, dst)?;
    } else if ft.is_dir() {
        std::fs::create_dir_all(dst)?;
        let mut entries: Vec<_> = std::fs::read_dir(src)?.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            copy_tree(&e.path(), &dst.join(e.file_name()))?;
        }
        std::fs::set_permissions(dst, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    } else if ft.is_file() {
        std::fs::copy(src, dst).with_context(|| format!("copying {}", src.display()))?;
    } else {
        // Devices and fifos are never in an unpacked root.
        return Ok(());
    }
    let _ = std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid()));
    Ok(())
}

fn inside(scratch: &Path, dest: &str) -> PathBuf {
    scratch.join(dest.trim_start_matches('/'))
}

fn clear(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path)?,
        Ok(_) => std::fs::remove_file(path)?,
        Err(_) => {}
    }
    Ok(())
}

/// Binds moved into the scratch root; moved back when dropped, whatever
/// happened in between.
struct Moved(Vec<(PathBuf, PathBuf)>);

impl Drop for Moved {
    fn drop(&mut self) {
        for (host, there) in self.0.iter().rev() {
            if std::fs::rename(there, host).is_err() {
                let _ = clear(host);
                let _ = copy_tree(there, host);
            }
        }
    }
}

fn apply(scratch: &Path, ops: &[Op], moved: &mut Moved) -> Result<()> {
    for op in ops {
        match op {
            Op::Empty(d) => {
                let p = inside(scratch, d);
                clear(&p)?;
                std::fs::create_dir_all(&p)?;
                if d == "/tmp" {
                    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o1777))?;
                }
            }
            Op::Copy(src, d) => {
                let p = inside(scratch, d);
                clear(&p)?;
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                // The host path itself, followed: it is one slimpack chose.
                let src = std::fs::canonicalize(src).unwrap_or_else(|_| src.clone());
                copy_tree(&src, &p)?;
            }
            Op::Symlink(target, d) => {
                let p = inside(scratch, d);
                clear(&p)?;
                std::os::unix::fs::symlink(target, &p)?;
            }
            Op::Bind(src, d) => {
                let p = inside(scratch, d);
                clear(&p)?;
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                if std::fs::rename(src, &p).is_err() {
                    // Another file system: copied in, copied back after.
                    copy_tree(src, &p)?;
                    clear(src)?;
                }
                moved.0.push((src.clone(), p));
            }
        }
    }
    Ok(())
}

/// The few devices a build step uses; where the container forbids device
/// nodes, /dev/null is an empty file (reads end at once, writes are kept
/// until the scratch root goes).
fn make_dev(scratch: &Path) -> Result<()> {
    let dev = scratch.join("dev");
    clear(&dev)?;
    std::fs::create_dir_all(&dev)?;
    for (name, minor) in [("null", 3), ("zero", 5), ("random", 8), ("urandom", 9)] {
        let p = dev.join(name);
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes())?;
        // SAFETY: a valid NUL-terminated path; mknod only creates a node.
        let made =
            unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, minor)) };
        if made != 0 && name == "null" {
            std::fs::write(&p, b"")?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666))?;
        }
    }
    let proc_dir = scratch.join("proc");
    clear(&proc_dir)?;
    std::fs::create_dir_all(proc_dir)?;
    Ok(())
}

pub fn run(
    root: &Path,
    ops: &[Op],
    env: &[(String, String)],
    argv: &[&str],
    timeout: Duration,
) -> Result<Output> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the chroot sandbox needs root");
    }
    let Some(first) = argv.first() else {
        bail!("nothing to run");
    };
    // Beside the cached roots, so that a killed build's copy is swept as
    // any stale temporary of the cache is.
    let parent = root.parent().unwrap_or(root);
    let scratch = tempfile::Builder::new()
        .prefix(".tmp-chroot-")
        .tempdir_in(parent)
        .context("making a scratch root for the chroot sandbox")?;
    copy_tree(root, scratch.path()).context("copying the root for the chroot sandbox")?;
    make_dev(scratch.path())?;
    let mut moved = Moved(Vec::new());
    apply(scratch.path(), ops, &mut moved)?;
    let mut cmd = Command::new(first);
    cmd.args(&argv[1..]).env_clear();
    for (k, v) in env {
        cmd.env(k, v);
    }
    let dir = std::ffi::CString::new(scratch.path().as_os_str().as_encoded_bytes())?;
    // SAFETY: only async-signal-safe calls (setsid, chroot, chdir) between
    // fork and exec, on memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            if libc::chroot(dir.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = wait(cmd, argv, timeout);
    drop(moved);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_come_back_and_the_root_is_untouched() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(root.join("opt/python")).unwrap();
        std::fs::write(root.join("opt/python/x"), "root's").unwrap();
        let venv = d.path().join("venv");
        std::fs::create_dir_all(&venv).unwrap();
        std::fs::write(venv.join("mine"), "venv's").unwrap();
        let scratch = d.path().join("scratch");
        copy_tree(&root, &scratch).unwrap();
        let mut moved = Moved(Vec::new());
        apply(
            &scratch,
            &[
                Op::Empty("/opt".into()),
                Op::Copy(root.join("opt/python"), "/opt/python".into()),
                Op::Bind(venv.clone(), "/opt/venv".into()),
                Op::Symlink("python".into(), "/opt/py".into()),
            ],
            &mut moved,
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(scratch.join("opt/venv/mine")).unwrap(),
            "venv's"
        );
        assert_eq!(
            std::fs::read_to_string(scratch.join("opt/py/x")).unwrap(),
            "root's"
        );
        // What the command writes into a bind is kept.
        std::fs::write(scratch.join("opt/venv/new"), "written").unwrap();
        std::fs::write(scratch.join("opt/python/x"), "changed").unwrap();
        drop(moved);
        assert_eq!(
            std::fs::read_to_string(venv.join("new")).unwrap(),
            "written"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("opt/python/x")).unwrap(),
            "root's"
        );
    }
}
