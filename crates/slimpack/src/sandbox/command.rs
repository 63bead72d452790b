//! One command run in an unpacked root: with bwrap in its own namespaces
//! where the machine allows it, else (as root in a CI container that
//! forbids new user namespaces) bwrap without a user namespace, else in a
//! `chroot` of a scratch copy of the root. The command sees the same files
//! at the same paths in every mode, so what it writes, and so every digest,
//! is the same; the modes differ in how well the command is kept in.

use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Forces a mode (`namespaces`, `root`, `chroot`) instead of probing.
pub const MODE_ENV: &str = "SLIMPACK_SANDBOX";

/// How build-time commands are isolated on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// bwrap in new user, mount, PID, network, IPC and UTS namespaces.
    Namespaces,
    /// bwrap as root without a user namespace (new user namespaces are
    /// forbidden, mounting is not): the same isolation, root's uid.
    RootNamespaces,
    /// No namespaces at all (a container without CAP_SYS_ADMIN): chroot as
    /// root into a scratch copy of the root. Files are kept apart; the
    /// network, processes and root's privileges are not.
    Chroot,
    /// Neither namespaces nor root: no sandbox. Only the image's
    /// interpreter runs, through the image's own dynamic loader, for
    /// bytecode; what needs more (a source build) is refused.
    Loader,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Namespaces => "namespaces",
            Mode::RootNamespaces => "root-namespaces",
            Mode::Chroot => "chroot",
            Mode::Loader => "loader",
        }
    }
}

pub fn bwrap_path() -> Result<PathBuf> {
    if let Some(p) = crate::core::which("bwrap") {
        return Ok(p);
    }
    bail!("bwrap (bubblewrap) is needed to run the image's interpreter at build time; install it (Debian/Ubuntu: apt-get install bubblewrap), or build with --bytecode none")
}

fn euid_is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether bwrap starts with `args` (and `true` inside); its complaint if not.
fn bwrap_starts(args: &[&str]) -> std::result::Result<(), String> {
    let bwrap = bwrap_path().map_err(|e| e.to_string())?;
    let t = crate::core::which("true").unwrap_or_else(|| PathBuf::from("/bin/true"));
    let out = Command::new(bwrap)
        .args(["--ro-bind", "/", "/"])
        .args(args)
        .arg("--")
        .arg(t)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

fn detect() -> std::result::Result<Mode, String> {
    match std::env::var(MODE_ENV).as_deref() {
        Ok("namespaces") => return Ok(Mode::Namespaces),
        Ok("root") => return Ok(Mode::RootNamespaces),
        Ok("chroot") => return Ok(Mode::Chroot),
        Ok("loader") => return Ok(Mode::Loader),
        Ok(other) if !other.is_empty() => {
            return Err(format!(
                "{MODE_ENV}={other:?} is not a sandbox mode: use namespaces, root, chroot or loader"
            ))
        }
        _ => {}
    }
    // Without bwrap, the message says to install it: the fallbacks are for
    // machines that forbid namespaces, not a reason to run unsandboxed.
    bwrap_path().map_err(|e| e.to_string())?;
    if bwrap_starts(&["--unshare-all"]).is_ok() {
        return Ok(Mode::Namespaces);
    }
    if !euid_is_root() {
        return Ok(Mode::Loader);
    }
    if bwrap_starts(&[
        "--unshare-ipc",
        "--unshare-pid",
        "--unshare-uts",
        "--unshare-net",
        "--unshare-cgroup-try",
    ])
    .is_ok()
    {
        return Ok(Mode::RootNamespaces);
    }
    Ok(Mode::Chroot)
}

/// The mode for this machine, probed once.
pub fn mode() -> Result<Mode> {
    static MODE: OnceLock<std::result::Result<Mode, String>> = OnceLock::new();
    MODE.get_or_init(detect)
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

/// What the command sees, beyond the root itself.
#[derive(Debug, Clone)]
enum Op {
    /// A host directory, writable, at a path.
    Bind(PathBuf, String),
    /// A host path, read-only.
    RoBind(PathBuf, String),
    /// An empty directory hiding what the root has there.
    Tmpfs(String),
    /// A symbolic link made inside.
    Symlink(String, String),
}

/// One sandboxed command: the image's root read-only, no network, a fresh
/// /tmp, and only the binds given.
pub struct Sandbox {
    root: PathBuf,
    ops: Vec<Op>,
    env: Vec<(String, String)>,
    share_net: bool,
}

pub struct Output {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Sandbox {
    pub fn new(rootfs: &Path) -> Self {
        Self {
            root: rootfs.to_path_buf(),
            ops: vec![Op::Tmpfs("/tmp".into())],
            env: Vec::new(),
            share_net: false,
        }
    }

    /// A writable directory of the host at `dest` (created on a tmpfs at
    /// `tmpfs_parent` when the read-only root has no such directory; what
    /// the root has there stays visible, e.g. a standalone Python in /opt).
    pub fn bind(self, src: &Path, dest: &str, tmpfs_parent: Option<&str>) -> Self {
        self.mount(Op::Bind(src.to_path_buf(), dest.into()), dest, tmpfs_parent)
    }

    /// [`Sandbox::bind`], read-only: a cached tree the command must not
    /// change.
    pub fn ro_bind_in(self, src: &Path, dest: &str, tmpfs_parent: &str) -> Self {
        self.mount(
            Op::RoBind(src.to_path_buf(), dest.into()),
            dest,
            Some(tmpfs_parent),
        )
    }

    /// `op`, a bind at `dest`, on a tmpfs at `tmpfs_parent` where the root
    /// has no place for it.
    fn mount(mut self, op: Op, dest: &str, tmpfs_parent: Option<&str>) -> Self {
        if let Some(t) = tmpfs_parent {
            self.ops.push(Op::Tmpfs(t.into()));
            self.keep_root_entries(t, dest);
        }
        self.ops.push(op);
        self
    }

    /// The root's own entries of `dir` (hidden by a tmpfs over it) put
    /// back, except `except`: directories bound read-only, links made again
    /// inside the sandbox. Nothing is followed on the host: the root may be
    /// an image's, and a link in it must not expose a host path.
    fn keep_root_entries(&mut self, dir: &str, except: &str) {
        // Resolved inside the root: an image whose /opt is a link to a
        // host path must not make the host's entries visible.
        let Some(resolved) = super::resolve_in_root(&self.root, dir) else {
            return;
        };
        let Ok(entries) = std::fs::read_dir(resolved) else {
            return;
        };
        let mut entries: Vec<_> = entries.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let dest = format!("{}/{name}", dir.trim_end_matches('/'));
            let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
                continue;
            };
            if dest == except {
                continue;
            }
            if meta.file_type().is_symlink() {
                if let Ok(target) = std::fs::read_link(e.path()) {
                    self.ops
                        .push(Op::Symlink(target.display().to_string(), dest));
                }
            } else if meta.is_dir() {
                self.ops.push(Op::RoBind(e.path(), dest));
            }
        }
    }

    /// A host path at `dest`, read-only.
    pub fn ro_bind(mut self, src: &Path, dest: &str) -> Self {
        self.ops.push(Op::RoBind(src.to_path_buf(), dest.into()));
        self
    }

    /// An empty in-memory directory at `dest` (a place for binds).
    pub fn tmpfs(mut self, dest: &str) -> Self {
        self.ops.push(Op::Tmpfs(dest.into()));
        self
    }

    /// The host's network (the builder fetches source distributions).
    pub fn share_net(mut self) -> Self {
        self.share_net = true;
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    pub fn run(&self, argv: &[&str], timeout: Duration) -> Result<Output> {
        match mode()? {
            Mode::Loader => bail!(
                "{} would have to run in a sandbox, and none can be made here: this machine forbids new user namespaces and slimpack is not root. Run slimpack as root in this container (it then uses mount namespaces, or chroot), or allow user namespaces (sysctl kernel.unprivileged_userns_clone=1, or a seccomp profile that permits clone/unshare); only bytecode compilation works without (through the image's own dynamic loader)",
                crate::core::text::escape_controls(argv.first().copied().unwrap_or(""))
            ),
            Mode::Namespaces => self.run_bwrap(argv, timeout, true),
            Mode::RootNamespaces => self.run_bwrap(argv, timeout, false),
            Mode::Chroot => {
                super::chroot::run(&self.root, &self.chroot_ops(), &self.env, argv, timeout)
            }
        }
    }

    fn chroot_ops(&self) -> Vec<super::chroot::Op> {
        use super::chroot::Op as C;
        self.ops
            .iter()
            .map(|op| match op {
                Op::Bind(s, d) => C::Bind(s.clone(), d.clone()),
                Op::RoBind(s, d) => C::Copy(s.clone(), d.clone()),
                Op::Tmpfs(d) => C::Empty(d.clone()),
                Op::Symlink(t, d) => C::Symlink(t.clone(), d.clone()),
            })
            .collect()
    }

    fn bwrap_args(&self, user_namespace: bool) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "--ro-bind".into(),
            self.root.display().to_string(),
            "/".into(),
            "--proc".into(),
            "/proc".into(),
            "--dev".into(),
            "/dev".into(),
        ];
        for op in &self.ops {
            let (flag, x, y) = match op {
                Op::Bind(s, d) => ("--bind", s.display().to_string(), d.clone()),
                Op::RoBind(s, d) => ("--ro-bind", s.display().to_string(), d.clone()),
                Op::Tmpfs(d) => {
                    a.extend(["--tmpfs".into(), d.clone()]);
                    continue;
                }
                Op::Symlink(t, d) => ("--symlink", t.clone(), d.clone()),
            };
            a.extend([flag.into(), x, y]);
        }
        if user_namespace {
            a.push("--unshare-all".into());
            if self.share_net {
                a.push("--share-net".into());
            }
        } else {
            a.extend(
                [
                    "--unshare-ipc",
                    "--unshare-pid",
                    "--unshare-uts",
                    "--unshare-cgroup-try",
                ]
                .map(String::from),
            );
            if !self.share_net {
                a.push("--unshare-net".into());
            }
        }
        a.extend(["--die-with-parent", "--new-session"].map(String::from));
        a
    }

    fn run_bwrap(&self, argv: &[&str], timeout: Duration, user_namespace: bool) -> Result<Output> {
        let mut cmd = Command::new(bwrap_path()?);
        // The environment is the process's, not `--setenv` arguments: what
        // it holds (an index's credentials) is then no argument that any
        // user of the machine can read in /proc.
        cmd.env_clear().envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.args(self.bwrap_args(user_namespace))
            .arg("--")
            .args(argv);
        wait(cmd, argv, timeout)
    }
}

/// Runs `cmd` to the end or the timeout, its output captured.
pub fn wait(mut cmd: Command, argv: &[&str], timeout: Duration) -> Result<Output> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().context("starting the sandbox")?;
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{} did not finish within {}s in the sandbox",
                argv.join(" "),
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Ok(Output {
        status: status.code().unwrap_or(-1),
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    })
}
