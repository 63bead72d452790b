//! `slimpack run`: any image, run locally the way Cloud Run runs it, and
//! checked against Cloud Run's container contract.
//!
//! The image's root is read-only, with in-memory tmpfs at /tmp (and
//! /var/tmp, /run where the image has them); fresh pid, ipc, uts, user and
//! cgroup namespaces; the image's user, workdir, env and command, with the
//! command as PID 1 (no init in between, as on Cloud Run, so an app that
//! ignores SIGTERM is caught).
//!
//! Network: when slimpack runs as root and `slirp4netns` is installed, the
//! container gets its own network namespace with user-mode NAT (outbound
//! works, DNS through slirp) and its `$PORT` (8080, as on Cloud Run) is
//! published on `127.0.0.1:--port` only, like `docker run -p
//! 127.0.0.1:P:8080`. Requests arrive on the container's interface, not its
//! loopback, so an app bound to 127.0.0.1 fails as it would on Cloud Run.
//! Otherwise it shares the host's network (`--network host`).

use crate::core::cache::Cache;
use crate::image::RunConfig;
use crate::sandbox;
use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use serde_json::Value;
use slimpack_oci::{BlobStore, LoadedImage};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How readiness is probed, with Cloud Run's startup probe fields.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    /// An HTTP path, or `None` for a TCP probe (Cloud Run's default).
    pub http_path: Option<String>,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub failure_threshold: u32,
}

impl Probe {
    /// Cloud Run's defaults: TCP 240 s/240 s/1; HTTP 10 s period, 1 s
    /// timeout, 3 failures.
    pub fn cloud_run_default(http_path: Option<String>) -> Probe {
        match http_path {
            None => Probe {
                http_path: None,
                initial_delay: Duration::ZERO,
                period: Duration::from_secs(240),
                timeout: Duration::from_secs(240),
                failure_threshold: 1,
            },
            Some(p) => Probe {
                http_path: Some(p),
                initial_delay: Duration::ZERO,
                period: Duration::from_secs(10),
                timeout: Duration::from_secs(1),
                failure_threshold: 3,
            },
        }
    }

    /// The time after which the probe has failed for good.
    pub fn bound(&self) -> Duration {
        self.initial_delay + self.period * self.failure_threshold
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Network {
    /// Isolated when possible, else the host's.
    Auto,
    Isolated,
    Host,
}

impl Network {
    /// What this machine can do: isolated needs root (to create the network
    /// namespace outside bwrap's user namespace) and slirp4netns.
    fn resolve(self) -> Result<(Network, Option<String>)> {
        let why_not = if unsafe { libc::geteuid() } != 0 {
            Some("isolated networking needs root here")
        } else if crate::core::which("slirp4netns").is_none() {
            Some("slirp4netns is not installed (Debian/Ubuntu: apt-get install slirp4netns)")
        } else {
            None
        };
        match (self, why_not) {
            (Network::Host, _) => Ok((Network::Host, None)),
            (_, None) => Ok((Network::Isolated, None)),
            (Network::Isolated, Some(w)) => bail!("--network isolated: {w}"),
            (Network::Auto, Some(w)) => Ok((
                Network::Host,
                Some(format!("the container shares the host's network ({w})")),
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Where the container is reached on the host (127.0.0.1).
    pub port: u16,
    /// Publish `container_port` on `port` (isolated network). A one-off
    /// command publishes nothing unless asked, like `docker run` without -p,
    /// so several can run at once.
    pub publish: bool,
    /// `$PORT` inside the container (the same as `port` on the host network).
    pub container_port: u16,
    pub network: Network,
    pub probe: Probe,
    /// Path for the check's request (default: the probe path, else `/`).
    pub request_path: Option<String>,
    pub grace: Duration,
    pub service: String,
    pub env: Vec<(String, String)>,
    pub check: bool,
    /// Run this instead of the image's Entrypoint and Cmd (no probes), as
    /// `docker run IMAGE COMMAND...` would.
    pub command: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub name: String,
    pub pass: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub image: String,
    pub checks: Vec<CheckResult>,
    /// From process start to the first successful probe.
    pub time_to_ready_ms: Option<u64>,
    pub exit_code: Option<i32>,
    /// The last lines the app printed (for failures).
    pub output_tail: Vec<String>,
    /// How the container was networked.
    pub network: String,
    /// Getting the image ready to start (pull, unpack), when measured by
    /// the caller: with an empty cache, a cold start is this plus
    /// `time_to_ready_ms`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prepare_ms: Option<u64>,
    /// Set when the process ran to its end by itself (a job, a script):
    /// how long it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_ms: Option<u64>,
}

impl RunReport {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.pass)
    }
}

/// The image's root file system, unpacked once per layer chain.
/// `keep_setuid`: keep setuid/setgid bits on disk (they still grant
/// nothing: bwrap runs the app with no_new_privs).
pub fn rootfs(
    store: &BlobStore,
    image: &LoadedImage,
    cache: &Cache,
    keep_setuid: bool,
) -> Result<PathBuf> {
    let (dir, skipped) = sandbox::cached_rootfs(cache, store, &image.layers, keep_setuid)?;
    mount_points(&dir)?;
    // Mount points for the network files a container runtime provides (as
    // Docker creates them): images rarely ship them, and the root is
    // mounted read-only.
    if dir.join("etc").is_dir() && !dir.join("etc").is_symlink() {
        for f in ["resolv.conf", "hosts"] {
            let p = dir.join("etc").join(f);
            if std::fs::symlink_metadata(&p).is_err() {
                std::fs::write(&p, "").with_context(|| format!("creating {}", p.display()))?;
            }
        }
    }
    if let Some(first) = skipped.first() {
        eprintln!(
            "note: {} device node(s)/fifo(s) in the image were not created (e.g. {first}); the sandbox provides /dev",
            skipped.len()
        );
    }
    Ok(dir)
}

/// The directories the sandbox mounts over (/proc, /dev, /tmp, /run), made
/// in the unpacked root when an image lacks them (scratch-style images, or
/// ones that whited them out), as container runtimes do: bwrap cannot
/// create them on a read-only root. Something else by that name (a file, a
/// link) is replaced: the mount would go through it.
fn mount_points(root: &Path) -> Result<()> {
    for d in ["proc", "dev", "tmp", "run"] {
        let p = root.join(d);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => continue,
            Ok(m) if m.file_type().is_symlink() || m.is_file() => std::fs::remove_file(&p)?,
            Ok(_) => continue,
            Err(_) => {}
        }
        std::fs::create_dir(&p).with_context(|| format!("creating {}", p.display()))?;
    }
    Ok(())
}

/// The most of an account file read: real ones are a few kB.
const ACCOUNT_FILE_LIMIT: u64 = 1 << 20;

/// Entries of the image's `/etc/passwd` or `/etc/group`, split on `:`.
/// Read inside the image's root (its links followed there, never to the
/// host's files) and at most [`ACCOUNT_FILE_LIMIT`] bytes of a regular file.
fn entries(root: &Path, file: &str) -> Vec<Vec<String>> {
    use std::io::Read;
    let mut text = String::new();
    if let Some(path) = crate::sandbox::resolve_in_root(root, file).filter(|p| p.is_file()) {
        if let Ok(f) = std::fs::File::open(path) {
            let _ = f.take(ACCOUNT_FILE_LIMIT).read_to_string(&mut text);
        }
    }
    text.lines()
        .map(|l| l.split(':').map(str::to_string).collect::<Vec<_>>())
        .filter(|f| f.len() > 3)
        .collect()
}

fn id(field: &str) -> Option<u32> {
    field.parse().ok()
}

/// `user[:group]` (names or numbers) → uid, gid, through the image's own
/// /etc/passwd and /etc/group.
pub fn resolve_user(root: &Path, user: &str) -> Result<(u32, u32)> {
    let passwd = entries(root, "etc/passwd");
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let u = if u.is_empty() { "0" } else { u };
    let entry = passwd
        .iter()
        .find(|f| f[0] == u || (id(u).is_some() && id(&f[2]) == id(u)));
    let uid = match (id(u), entry) {
        (Some(n), _) => n,
        (None, Some(f)) => id(&f[2]).unwrap_or(0),
        (None, None) => bail!("the image's user {u:?} is not in its /etc/passwd"),
    };
    let gid = match g {
        Some(g) => match id(g) {
            Some(n) => n,
            None => entries(root, "etc/group")
                .iter()
                .find(|f| f[0] == g)
                .and_then(|f| id(&f[2]))
                .ok_or_else(|| anyhow!("the image's group {g:?} is not in its /etc/group"))?,
        },
        None => entry.and_then(|f| id(&f[3])).unwrap_or(uid),
    };
    Ok((uid, gid))
}

fn home_of(root: &Path, uid: u32) -> Option<String> {
    entries(root, "etc/passwd")
        .into_iter()
        .find(|f| id(&f[2]) == Some(uid) && f.len() > 5)
        .map(|f| f[5].clone())
}

/// Listening TCP sockets on `port` in the network namespace of `pid`:
/// their local addresses, e.g. `0.0.0.0` or `127.0.0.1`.
pub fn listeners(pid: u32, port: u16) -> Vec<String> {
    let mut out = Vec::new();
    for (file, v6) in [("tcp", false), ("tcp6", true)] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{file}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 4 || f[3] != "0A" {
                continue;
            }
            let Some((addr, p)) = f[1].split_once(':') else {
                continue;
            };
            if u16::from_str_radix(p, 16).ok() != Some(port) {
                continue;
            }
            out.push(if v6 {
                if addr.chars().all(|c| c == '0') {
                    "[::]".to_string()
                } else if addr == "00000000000000000000000001000000" {
                    "[::1]".to_string()
                } else {
                    format!("[{addr}]")
                }
            } else {
                let n = u32::from_str_radix(addr, 16).unwrap_or(0);
                std::net::Ipv4Addr::from(n.to_le_bytes()).to_string()
            });
        }
    }
    out.sort();
    out.dedup();
    out
}

/// One HTTP/1.1 GET on loopback; the status code.
pub fn http_get(port: u16, path: &str, timeout: Duration) -> Option<u16> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.set_write_timeout(Some(timeout)).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\nUser-Agent: slimpack-probe\r\nConnection: close\r\n\r\n").ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split_whitespace().nth(1)?.parse().ok()
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn catch_signals() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: plain kill(2) on a pid we started.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// The container as a running process.
struct Container {
    child: Child,
    /// Host pid of the image's command (PID 1 in its namespace).
    pid: u32,
    output: Arc<Mutex<Vec<String>>>,
    exit: Option<i32>,
    /// bwrap writes its exit status here; keep reading it open, or bwrap
    /// dies of SIGPIPE at the end.
    _status: BufReader<std::fs::File>,
    /// User-mode networking for the isolated network namespace.
    slirp: Option<Child>,
    /// When the image's command was let go (after the network was up).
    started: Instant,
    /// resolv.conf and hosts mounted into the container.
    _net_files: Option<tempfile::TempDir>,
}

impl Container {
    fn try_exit(&mut self) -> Option<i32> {
        if self.exit.is_none() {
            if let Ok(Some(st)) = self.child.try_wait() {
                use std::os::unix::process::ExitStatusExt;
                self.exit = Some(st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0)));
            }
        }
        self.exit
    }

    /// Waits up to `d` for the process to end.
    fn wait_for(&mut self, d: Duration) -> Option<i32> {
        let end = Instant::now() + d;
        while Instant::now() < end {
            if let Some(c) = self.try_exit() {
                return Some(c);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.try_exit()
    }

    /// Ends everything: SIGKILL to the command (its pid namespace goes with
    /// it) and to bwrap's process group.
    fn kill(&mut self) {
        if let Some(mut s) = self.slirp.take() {
            let _ = s.kill();
            let _ = s.wait();
        }
        if self.try_exit().is_none() {
            signal(self.pid, libc::SIGKILL);
            // SAFETY: the group of the bwrap we spawned (process_group(0)).
            unsafe {
                libc::killpg(self.child.id() as libc::pid_t, libc::SIGKILL);
            }
            let _ = self.child.wait();
            self.exit.get_or_insert(137);
        }
    }

    fn tail(&self, n: usize) -> Vec<String> {
        let out = self.output.lock().unwrap();
        out[out.len().saturating_sub(n)..].to_vec()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What runs in the container: the image's (or the given) command, as its
/// user, in its workdir, with its environment and Cloud Run's variables.
struct Process {
    argv: Vec<String>,
    uid: u32,
    gid: u32,
    workdir: String,
    env: Vec<(String, String)>,
}

fn process(root: &Path, c: &RunConfig, opts: &RunOptions) -> Result<Process> {
    let argv = match &opts.command {
        Some(cmd) => cmd.clone(),
        None => c.argv(),
    };
    if argv.is_empty() {
        bail!("the image has no Entrypoint or Cmd: nothing to run");
    }
    let (uid, gid) = resolve_user(root, c.user.as_deref().unwrap_or(""))?;
    let workdir = c.workdir().to_string();
    if !sandbox::dir_in_root(root, &workdir) {
        bail!("the image's WorkingDir {workdir} does not exist in it");
    }
    let mut env: Vec<(String, String)> = c
        .env()
        .iter()
        .filter_map(|e| {
            e.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let mut set = |k: &str, v: String| {
        env.retain(|(key, _)| key != k);
        env.push((k.to_string(), v));
    };
    // Cloud Run's variables.
    set("PORT", opts.container_port.to_string());
    set("K_SERVICE", opts.service.clone());
    set("K_REVISION", format!("{}-00001-loc", opts.service));
    set("K_CONFIGURATION", opts.service.clone());
    for (k, v) in &opts.env {
        set(k, v.clone());
    }
    if !env.iter().any(|(k, _)| k == "HOME") {
        env.push((
            "HOME".into(),
            home_of(root, uid).unwrap_or_else(|| "/".into()),
        ));
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push((
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ));
    }

    Ok(Process {
        argv,
        uid,
        gid,
        workdir,
        env,
    })
}

/// bwrap for `p`: the read-only root, fresh namespaces, the process as PID 1.
fn bwrap_command(root: &Path, p: &Process) -> Result<Command> {
    let (uid, gid, workdir) = (p.uid, p.gid, p.workdir.as_str());
    let mut cmd = Command::new(sandbox::bwrap_path()?);
    cmd.arg("--ro-bind").arg(root).arg("/");
    cmd.args(["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]);
    for d in ["var/tmp", "run"] {
        if sandbox::dir_in_root(root, d) {
            cmd.args(["--tmpfs", &format!("/{d}")]);
        }
    }
    cmd.args([
        "--unshare-user",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
    ]);
    cmd.args([
        "--as-pid-1",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
    ]);
    cmd.args([
        "--uid",
        &uid.to_string(),
        "--gid",
        &gid.to_string(),
        "--chdir",
        workdir,
    ]);
    for (k, v) in &p.env {
        cmd.args(["--setenv", k, v]);
    }
    Ok(cmd)
}

/// The network files of an isolated container (slirp4netns answers DNS on
/// 10.0.2.3), bound over the image's, and bwrap told to wait for the
/// network. The directory must live as long as the container.
fn isolated_network_files(
    root: &Path,
    opts: &RunOptions,
    cmd: &mut Command,
) -> Result<tempfile::TempDir> {
    let net_files = tempfile::tempdir()?;
    // slirp4netns answers DNS on 10.0.2.3.
    for (name, text) in [
        ("resolv.conf", "nameserver 10.0.2.3\n".to_string()),
        (
            "hosts",
            format!(
                "127.0.0.1\tlocalhost\n::1\tlocalhost\n10.0.2.100\t{}\n",
                opts.service
            ),
        ),
    ] {
        if sandbox::file_in_root(root, &format!("etc/{name}")) {
            let f = net_files.path().join(name);
            std::fs::write(&f, text)?;
            cmd.arg("--ro-bind").arg(&f).arg(format!("/etc/{name}"));
        }
    }
    // The command waits until the network is up.
    cmd.args(["--block-fd", "4"]);
    Ok(net_files)
}

/// The last 200 lines the app printed, collected in the background.
fn capture_output(child: &mut Child) -> Arc<Mutex<Vec<String>>> {
    let output = Arc::new(Mutex::new(Vec::new()));
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let out = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(|l| l.ok()) {
                let mut o = out.lock().unwrap();
                o.push(line);
                if o.len() > 200 {
                    o.remove(0);
                }
            }
        });
    }
    output
}

/// bwrap reports {"child-pid": N} once the command is started; the status
/// pipe stays open with the container.
fn child_pid(status_r: i32, child: &mut Option<Child>) -> Result<(u32, BufReader<std::fs::File>)> {
    // bwrap reports {"child-pid": N} once the command is started.
    // SAFETY: status_r is a pipe fd we own from here on.
    let status = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(status_r) };
    let mut status = BufReader::new(status);
    let mut first = String::new();
    status.read_line(&mut first).ok();
    let pid = serde_json::from_str::<Value>(&first)
        .ok()
        .and_then(|v| v["child-pid"].as_u64())
        .map(|p| p as u32);
    let Some(pid) = pid else {
        let out = child.take().and_then(|c| c.wait_with_output().ok());
        let err = out
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .unwrap_or_default();
        bail!("the sandbox did not start: {}", err.trim());
    };
    Ok((pid, status))
}

fn start(
    root: &Path,
    config: &RunConfig,
    opts: &RunOptions,
    network: Network,
    capture: bool,
) -> Result<Container> {
    let p = process(root, config, opts)?;
    let mut cmd = bwrap_command(root, &p)?;
    let isolated = network == Network::Isolated;
    // bwrap's child mounts these after bwrap has reported its pid: they
    // live as long as the container.
    let net_files = if isolated {
        Some(isolated_network_files(root, opts, &mut cmd)?)
    } else {
        None
    };
    cmd.args(["--json-status-fd", "3", "--"]).args(&p.argv);
    let (status_r, status_w) = pipe()?;
    let (block_r, block_w) = pipe()?;
    // SAFETY: between fork and exec only async-signal-safe calls (dup2,
    // unshare).
    unsafe {
        cmd.pre_exec(move || {
            place_fds(&[(status_w, 3), (block_r, 4)])?;
            // A network namespace owned by the host's user namespace, so
            // slirp4netns can join it; bwrap's own user namespace sits inside.
            if isolated && libc::unshare(libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.process_group(0).stdin(Stdio::null());
    if capture {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    }
    let mut child = cmd.spawn().context("starting bwrap")?;
    // SAFETY: closing our copies of the child's ends, so EOF arrives when
    // bwrap exits.
    unsafe {
        libc::close(status_w);
        libc::close(block_r);
    }
    // SAFETY: block_w is a pipe fd we own from here on.
    let mut block = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(block_w) };
    let output = if capture {
        capture_output(&mut child)
    } else {
        Arc::new(Mutex::new(Vec::new()))
    };
    let mut spawned = Some(child);
    let (pid, status) = child_pid(status_r, &mut spawned)?;
    let Some(child) = spawned else {
        bail!("the sandbox did not start");
    };
    let mut container = Container {
        child,
        pid,
        output,
        exit: None,
        _status: status,
        slirp: None,
        started: Instant::now(),
        _net_files: net_files,
    };
    if isolated {
        let bwrap_pid = container.child.id();
        container.slirp = Some(slirp(bwrap_pid, opts)?);
        block.write_all(b"1")?;
        container.started = Instant::now();
    }
    Ok(container)
}

/// Starts slirp4netns for the network namespace of `pid`, and publishes the
/// container's port on 127.0.0.1. Returns once both are done.
fn slirp(pid: u32, opts: &RunOptions) -> Result<Child> {
    let dir = tempfile::tempdir()?;
    let api = dir.path().join("slirp.sock");
    let (ready_r, ready_w) = pipe()?;
    let mut cmd = Command::new("slirp4netns");
    cmd.args([
        "--configure",
        "--mtu=65520",
        "--disable-host-loopback",
        "--ready-fd=3",
    ])
    .arg(format!("--api-socket={}", api.display()))
    .arg(pid.to_string())
    .arg("tap0")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    // SAFETY: only fcntl and dup2 between fork and exec.
    unsafe {
        cmd.pre_exec(move || place_fds(&[(ready_w, 3)]));
    }
    let mut child = cmd.spawn().context("starting slirp4netns")?;
    // SAFETY: our copy of the write end; ready_r is ours from here on.
    unsafe {
        libc::close(ready_w);
    }
    let mut ready = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(ready_r) };
    let mut byte = [0u8; 1];
    if ready.read(&mut byte).unwrap_or(0) == 0 {
        let _ = child.kill();
        let out = child.wait_with_output().ok();
        let err = out
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .unwrap_or_default();
        bail!("slirp4netns did not bring the network up: {}", err.trim());
    }
    if !opts.publish {
        return Ok(child);
    }
    let request = serde_json::json!({
        "execute": "add_hostfwd",
        "arguments": {"proto": "tcp", "host_addr": "127.0.0.1", "host_port": opts.port, "guest_port": opts.container_port}
    });
    let mut sock =
        std::os::unix::net::UnixStream::connect(&api).context("connecting to slirp4netns")?;
    sock.write_all(request.to_string().as_bytes())?;
    sock.shutdown(std::net::Shutdown::Write)?;
    let mut answer = String::new();
    sock.read_to_string(&mut answer)?;
    if !answer.contains("\"return\"") || answer.contains("error") {
        let _ = child.kill();
        let _ = child.wait();
        bail!(
            "publishing the container's port {} on 127.0.0.1:{} failed (is the port in use?): {}",
            opts.container_port,
            opts.port,
            answer.trim()
        );
    }
    Ok(child)
}

/// In a forked child before exec: puts each `(fd, target)` at `target`,
/// without CLOEXEC. Every source is first copied above the targets, so a
/// source that already sits on another's target is not overwritten, and
/// one already on its own target still loses CLOEXEC. Async-signal-safe.
fn place_fds(pairs: &[(i32, i32)]) -> std::io::Result<()> {
    let mut high = [0i32; 4];
    for (i, (fd, _)) in pairs.iter().enumerate().take(4) {
        // SAFETY: fcntl on an fd we own.
        high[i] = unsafe { libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 100) };
        if high[i] < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    for (i, (_, target)) in pairs.iter().enumerate().take(4) {
        // SAFETY: dup2 onto a small fd number of this child.
        if unsafe { libc::dup2(high[i], *target) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn pipe() -> Result<(i32, i32)> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills two fds; CLOEXEC keeps them out of other children.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        bail!("pipe: {}", std::io::Error::last_os_error());
    }
    Ok((fds[0], fds[1]))
}

/// Probes until ready, the bound passes, or the process exits.
/// How a start ended: ready to serve, or a process that ran to its end
/// (a job, a script; or a server that crashed).
enum Started {
    Ready(u64),
    Exited { code: i32, ms: u64 },
}

fn wait_ready(
    c: &mut Container,
    opts: &RunOptions,
    network: Network,
) -> std::result::Result<Started, String> {
    let t0 = c.started;
    let p = &opts.probe;
    std::thread::sleep(p.initial_delay);
    let deadline = t0 + p.bound();
    let attempt_timeout = p.timeout.min(Duration::from_secs(1));
    loop {
        if let Some(code) = c.try_exit() {
            return Ok(Started::Exited {
                code,
                ms: t0.elapsed().as_millis() as u64,
            });
        }
        // In the container's own network, what listens on its port: requests
        // come in on its interface, so loopback-only never gets them (as on
        // Cloud Run), and slirp4netns accepts on the host side whether or
        // not the app does, so a TCP probe is a socket listening there.
        let inside = (network == Network::Isolated).then(|| listeners(c.pid, opts.container_port));
        if let Some(addrs) = &inside {
            if !addrs.is_empty() && addrs.iter().all(|a| is_loopback(a)) {
                return Err(format!(
                    "the app listens on {}:{} only, which requests from outside the container never reach",
                    addrs.join(", "),
                    opts.container_port
                ));
            }
        }
        let ok = match (&p.http_path, &inside) {
            (Some(path), _) => {
                http_get(opts.port, path, attempt_timeout).is_some_and(|s| (200..400).contains(&s))
            }
            (None, Some(addrs)) => !addrs.is_empty(),
            (None, None) => TcpStream::connect_timeout(
                &std::net::SocketAddr::from(([127, 0, 0, 1], opts.port)),
                attempt_timeout,
            )
            .is_ok(),
        };
        if ok {
            return Ok(Started::Ready(t0.elapsed().as_millis() as u64));
        }
        if Instant::now() >= deadline {
            let what = match &p.http_path {
                Some(path) => format!("HTTP GET {path} never answered 2xx/3xx"),
                None => format!("nothing accepted TCP connections on port {}", opts.port),
            };
            let worker = c.try_exit().is_none()
                && inside.as_ref().is_none_or(|a| a.is_empty())
                && listeners(c.pid, opts.container_port).is_empty();
            let worker = if worker {
                "; the process runs but listens on no port: a worker. Cloud Run services must listen on $PORT; deploy it as a job, or give it an HTTP endpoint"
            } else {
                ""
            };
            return Err(format!(
                "{what} within {:.1}s{worker}",
                p.bound().as_secs_f64()
            ));
        }
        if INTERRUPTED.load(Ordering::SeqCst) {
            return Err("interrupted".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// An address only the container itself can reach.
fn is_loopback(addr: &str) -> bool {
    addr.starts_with("127.") || addr == "[::1]"
}

/// Waits for the container to exit; an interrupt of slimpack is forwarded
/// as SIGTERM, then SIGKILL after the grace period.
fn until_exit(c: &mut Container, opts: &RunOptions) -> Option<i32> {
    loop {
        if let Some(code) = c.try_exit() {
            return Some(code);
        }
        if INTERRUPTED.load(Ordering::SeqCst) {
            signal(c.pid, libc::SIGTERM);
            if c.wait_for(opts.grace).is_none() {
                c.kill();
            }
            return c.exit;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the image. With `check`, goes through the contract and returns the
/// report; otherwise serves until the app exits or slimpack is interrupted
/// (the signal is forwarded to the app, SIGKILL after the grace period).
pub fn run(
    reference: &str,
    image: &LoadedImage,
    root: &Path,
    opts: &RunOptions,
    on_ready: &dyn Fn(u64),
) -> Result<RunReport> {
    catch_signals();
    let mut report = RunReport {
        image: reference.to_string(),
        checks: Vec::new(),
        time_to_ready_ms: None,
        exit_code: None,
        output_tail: Vec::new(),
        network: String::new(),
        prepare_ms: None,
        job_ms: None,
    };
    let (network, note) = opts.network.resolve()?;
    if let Some(n) = &note {
        eprintln!("note: {n}");
    }
    report.network = describe_network(network, opts);
    let mut opts = opts.clone();
    if network == Network::Host {
        opts.container_port = opts.port;
    }
    let opts = &opts;
    let mut c = start(root, &RunConfig::of(image)?, opts, network, opts.check)?;
    if opts.command.is_some() {
        report.exit_code = until_exit(&mut c, opts);
        return Ok(report);
    }
    let started = wait_ready(&mut c, opts, network);
    if started.is_err() && !opts.check && INTERRUPTED.load(Ordering::SeqCst) {
        // Ctrl-C or SIGTERM before the app was ready: forwarded as after,
        // not a failed start (it once became SIGKILL and a failed check).
        report.exit_code = until_exit(&mut c, opts);
        return Ok(report);
    }
    let ready = match started {
        Ok(Started::Exited { code, ms }) => {
            // A job (or a script) ran to its end: its exit code is the result.
            report.exit_code = Some(code);
            report.job_ms = Some(ms);
            if opts.check {
                report.checks.push(CheckResult {
                    name: "job".into(),
                    pass: code == 0,
                    detail: format!("exited {code} in {ms} ms"),
                });
                report.output_tail = c.tail(30);
            }
            return Ok(report);
        }
        Ok(Started::Ready(ms)) => Ok(ms),
        Err(e) => Err(e),
    };
    let mut check = |name: &str, pass: bool, detail: String| {
        report.checks.push(CheckResult {
            name: name.into(),
            pass,
            detail,
        });
    };
    match &ready {
        Ok(ms) => {
            check("startup probe", true, format!("ready after {ms} ms"));
            on_ready(*ms);
        }
        Err(e) => check("startup probe", false, e.clone()),
    }
    report.time_to_ready_ms = ready.as_ref().ok().copied();

    if !opts.check {
        if ready.is_err() {
            c.kill();
            report.exit_code = c.exit;
            return Ok(report);
        }
        report.exit_code = until_exit(&mut c, opts);
        return Ok(report);
    }

    contract_checks(&mut c, opts, ready.is_ok(), &mut check);
    c.kill();
    report.exit_code = c.exit;
    report.output_tail = c.tail(30);
    Ok(report)
}

/// How the container is networked, for the report.
fn describe_network(network: Network, opts: &RunOptions) -> String {
    match network {
        Network::Isolated if !opts.publish => "isolated: nothing published".to_string(),
        Network::Isolated => format!(
            "isolated: 127.0.0.1:{} → container port {}",
            opts.port, opts.container_port
        ),
        _ => format!(
            "host: the app listens on the host's port {}",
            opts.container_port
        ),
    }
}

/// Cloud Run's contract on a started app: it listens on 0.0.0.0:$PORT,
/// answers a request, and exits on SIGTERM within the grace period.
fn contract_checks(
    c: &mut Container,
    opts: &RunOptions,
    ready: bool,
    check: &mut dyn FnMut(&str, bool, String),
) {
    if c.try_exit().is_none() {
        let addrs = listeners(c.pid, opts.container_port);
        let public = addrs.iter().any(|a| a == "0.0.0.0" || a == "[::]");
        let detail = if addrs.is_empty() {
            format!(
                "no listening socket on port {} in the container",
                opts.container_port
            )
        } else if public {
            format!(
                "listens on {}",
                addrs
                    .iter()
                    .map(|a| format!("{a}:{}", opts.container_port))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            format!(
                "listens on {} only; Cloud Run sends requests to the container's interface, so bind 0.0.0.0:$PORT",
                addrs.iter().map(|a| format!("{a}:{}", opts.container_port)).collect::<Vec<_>>().join(", ")
            )
        };
        check("listens on 0.0.0.0:$PORT", public, detail);
    }
    if ready && c.try_exit().is_none() {
        let path = opts
            .request_path
            .clone()
            .or_else(|| opts.probe.http_path.clone())
            .unwrap_or_else(|| "/".into());
        match http_get(opts.port, &path, Duration::from_secs(10)) {
            Some(s) => check(
                "request",
                (200..400).contains(&s),
                format!("GET {path} → {s}"),
            ),
            None => check("request", false, format!("GET {path}: no HTTP response")),
        }
    }
    if c.try_exit().is_none() {
        let t = Instant::now();
        signal(c.pid, libc::SIGTERM);
        match c.wait_for(opts.grace) {
            Some(code) => check(
                "SIGTERM",
                true,
                format!(
                    "exited with code {code} after {} ms",
                    t.elapsed().as_millis()
                ),
            ),
            None => {
                c.kill();
                check(
                    "SIGTERM",
                    false,
                    format!(
                        "still running {} s after SIGTERM; killed (Cloud Run would SIGKILL it too)",
                        opts.grace.as_secs_f64()
                    ),
                );
            }
        }
    } else {
        let code = c.exit.unwrap_or(-1);
        check(
            "SIGTERM",
            false,
            format!("the process had already exited (code {code})"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_made_where_images_lack_them() {
        let d = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc", d.path().join("tmp")).unwrap();
        std::fs::write(d.path().join("run"), "not a dir").unwrap();
        mount_points(d.path()).unwrap();
        for m in ["proc", "dev", "tmp", "run"] {
            let meta = std::fs::symlink_metadata(d.path().join(m)).unwrap();
            assert!(meta.is_dir(), "{m}");
        }
    }

    #[test]
    fn account_files_are_read_inside_the_image() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        // A link to the host's file is followed inside the root, where the
        // file does not exist: nothing of the host's is read.
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("etc/group")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", d.path().join("etc/passwd")).unwrap();
        assert!(entries(d.path(), "etc/passwd").is_empty());
        assert!(entries(d.path(), "etc/group").is_empty());
        assert_eq!(resolve_user(d.path(), "").unwrap(), (0, 0));
    }

    #[test]
    fn users_resolve_through_the_images_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nappuser:x:999:998::/app:/sbin/nologin\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("etc/group"),
            "root:x:0:\nappuser:x:998:\nstaff:x:50:\n",
        )
        .unwrap();
        assert_eq!(resolve_user(d.path(), "").unwrap(), (0, 0));
        assert_eq!(resolve_user(d.path(), "appuser").unwrap(), (999, 998));
        assert_eq!(resolve_user(d.path(), "appuser:staff").unwrap(), (999, 50));
        assert_eq!(
            resolve_user(d.path(), "65532:65532").unwrap(),
            (65532, 65532)
        );
        assert_eq!(resolve_user(d.path(), "999").unwrap(), (999, 998));
        assert!(resolve_user(d.path(), "nobody").is_err());
        assert_eq!(home_of(d.path(), 999).as_deref(), Some("/app"));
    }

    #[test]
    fn probe_bounds_follow_cloud_run() {
        assert_eq!(
            Probe::cloud_run_default(None).bound(),
            Duration::from_secs(240)
        );
        assert_eq!(
            Probe::cloud_run_default(Some("/h".into())).bound(),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn listeners_reads_proc_net() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert_eq!(
            listeners(std::process::id(), port),
            vec!["127.0.0.1".to_string()]
        );
    }
}
