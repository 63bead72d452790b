//! Where no sandbox can be made at all (no user namespaces, not root): the
//! image's own interpreter started through the image's own dynamic loader,
//! with the image's library path, so nothing of the host's C library or
//! libraries is used and the interpreter behaves as in the image. It is not
//! isolated: only programs slimpack wrote are run this way (bytecode
//! compilation, whose tracing imports the dependencies).

use anyhow::{anyhow, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the x86-64 dynamic loader lives in a Debian-style root.
const LOADER: &str = "lib64/ld-linux-x86-64.so.2";
/// The image's library directories, in the order its loader searches them.
const LIBRARY_DIRS: &[&str] = &[
    "usr/local/lib",
    "lib/x86_64-linux-gnu",
    "usr/lib/x86_64-linux-gnu",
    "lib",
    "usr/lib",
];

/// The root as the interpreter will report its paths: links resolved, so
/// its module paths start with exactly this.
pub fn host_root(root: &Path) -> Result<PathBuf> {
    std::fs::canonicalize(root).map_err(|e| anyhow!("{}: {e}", root.display()))
}

/// A command running `program` (a path in the image) of `root`; the caller
/// adds the arguments and the environment (cleared here).
pub fn command(root: &Path, program: &str) -> Result<Command> {
    let root = host_root(root)?;
    let in_root = |rel: &str| super::resolve_in_root(&root, rel).filter(|p| p.is_file());
    let loader = in_root(LOADER).ok_or_else(|| {
        anyhow!("the image has no x86-64 dynamic loader (/{LOADER}) to start its interpreter without a sandbox")
    })?;
    let prog = in_root(program.trim_start_matches('/'))
        .ok_or_else(|| anyhow!("the image has no {program}"))?;
    let dirs: Vec<String> = LIBRARY_DIRS
        .iter()
        .filter_map(|d| super::resolve_in_root(&root, d).filter(|p| p.is_dir()))
        .map(|p| p.display().to_string())
        .collect();
    let mut c = Command::new(loader);
    c.arg("--library-path")
        .arg(dirs.join(":"))
        .arg(prog)
        .env_clear();
    Ok(c)
}
