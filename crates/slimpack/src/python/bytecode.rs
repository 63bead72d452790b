//! Bytecode, compiled by the image's own interpreter under bwrap, with
//! `unchecked-hash` invalidation (no mtimes: the same source gives the same
//! `.pyc` bytes anywhere) and a fixed hash seed.
//!
//! The size/start-up trade-off: bytecode is about as large as the source
//! (the stdlib's ~12 MB, a venv with SQLAlchemy ~17 MB), and an app
//! imports a fraction of it. In `imports` mode (the default) the stdlib and
//! the venv get bytecode only for the modules the dependencies import
//! (every top-level module of the venv, all submodules of servers and
//! other packages that load themselves lazily, and a fixed list of stdlib
//! modules web apps commonly use), traced by importing them in the
//! sandbox. The trace never looks at the app's own code, so the venv
//! layer's content depends only on the dependency set and the runtime: an
//! app edit never rebuilds it, and two machines give the same bytes. What
//! the app itself imports is covered by [`compile_packages`]: every module
//! of each package the app's code names, in a layer of its own.

use crate::sandbox::Sandbox;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::settings::BytecodeMode as Mode;

/// Small stdlib modules web apps use all the time, compiled whatever the
/// trace saw. Big subsystems (asyncio, email, xml, multiprocessing) are
/// compiled when a dependency imports them, and only then.
const WEB_STDLIB: &[&str] = &[
    "json",
    "logging.config",
    "logging.handlers",
    "datetime",
    "uuid",
    "decimal",
    "dataclasses",
    "typing",
    "zoneinfo",
    "hashlib",
    "hmac",
    "secrets",
    "base64",
    "urllib.parse",
    "http.cookies",
    "contextvars",
    "enum",
    "functools",
    "collections",
    "random",
    "string",
    "traceback",
    "warnings",
    "weakref",
    "threading",
    "queue",
    "copy",
    "inspect",
    "importlib.metadata",
    "mimetypes",
    "re",
    "math",
    "operator",
    "pathlib",
    "tempfile",
    "shutil",
    "struct",
    "ipaddress",
    "codecs",
    "encodings.idna",
    "csv",
    "textwrap",
    "sqlite3",
    "ssl",
    "socket",
    "selectors",
    "signal",
];

/// Packages whose submodules are all imported in the trace: servers load
/// most of themselves lazily, after start; anyio loads its event-loop
/// backend on the first request.
const WALKED: &[&str] = &[
    "gunicorn",
    "uvicorn",
    "hypercorn",
    "waitress",
    "daphne",
    "anyio",
];

/// Every script starts with the paths of the image's `/`, the venv and
/// the output directory as the interpreter sees them (see [`Interp`]).
/// The trace runs as [`TRACE_SHARDS`] processes, each importing its share
/// of the modules (see `share`); the leading `first` ones (the stdlib's)
/// go to shard 0.
const TRACE: &str = r#"
import sys, os, importlib, pkgutil
shard, shards, walk, first = int(sys.argv[4]), int(sys.argv[5]), sys.argv[6], int(sys.argv[7])
walk = set(filter(None, walk.split(',')))
first, mods = sys.argv[8:8 + first], sys.argv[8 + first:]
# Importing must not start anything: no arguments to parse, no forks.
sys.argv = [sys.argv[0]]
def share(mods):
    # Top-level modules grouped by what their distributions require (by
    # the bytes of their sources), so that a dependency two of them share
    # is imported in one shard, and the largest shard is the smallest.
    try:
        import importlib.metadata as md, re
        owners = md.packages_distributions()
    except Exception:
        return [mods] + [[]] * (shards - 1)
    canon = lambda n: re.sub(r'[-_.]+', '-', n).lower()
    dists = {}
    for d in md.distributions():
        try:
            name = canon(d.metadata['Name'])
            size = sum(f.size or 0 for f in (d.files or []) if f.name.endswith('.py'))
            reqs = [re.match(r'\s*([A-Za-z0-9][A-Za-z0-9._-]*)', r) for r in d.requires or []
                    if 'extra' not in r.partition(';')[2]]
        except Exception:
            continue
        dists.setdefault(name, (size, [canon(r.group(1)) for r in reqs if r]))
    def closure(m):
        # A distribution without a Name owns its modules as None.
        todo, seen = [canon(n) for n in owners.get(m, []) if isinstance(n, str)], set()
        while todo:
            n = todo.pop()
            if n in dists and n not in seen:
                seen.add(n)
                todo.extend(dists[n][1])
        return seen
    cost = lambda names: sum(dists[n][0] for n in names)
    groups, out = [set() for _ in range(shards)], [[] for _ in range(shards)]
    for m, c in sorted(((m, closure(m)) for m in mods), key=lambda mc: (-cost(mc[1]), mc[0])):
        def after(i):
            costs = [cost(g | c if j == i else g) for j, g in enumerate(groups)]
            return (max(costs), costs[i] - cost(groups[i]), i)
        i = min(range(shards), key=after)
        groups[i] |= c
        out[i].append(m)
    return out
mine = share(sorted(set(mods)))[shard]
if shard == 0:
    mine = first + mine
def _nofork(*a, **k):
    raise OSError('no processes while tracing imports')
os.fork = os.forkpty = os.system = _nofork
def imp(m):
    try:
        return importlib.import_module(m)
    except BaseException:
        return None
for m in mine:
    mod = imp(m)
    if m in walk and mod is not None and hasattr(mod, '__path__'):
        for info in pkgutil.walk_packages(mod.__path__, m + '.', onerror=lambda n: None):
            if '.test' not in info.name and not info.name.endswith('__main__'):
                imp(info.name)
files = sorted({f for f in (getattr(x, '__file__', None) for x in list(sys.modules.values())) if isinstance(f, str) and f.endswith('.py')})
sys.stdout.write('\n'.join(files) + '\n')
sys.stdout.flush()
os._exit(0)
"#;

/// How many processes trace imports. Fixed, not the machine's cores: a
/// module that imports differently once another is loaded would otherwise
/// give another trace, and another layer, on another machine.
const TRACE_SHARDS: usize = 2;

/// Without a sandbox (the loader mode), the interpreter starts as itself,
/// not as the venv's: this sets up what the venv's start-up would have
/// (its site-packages and their `.pth` files, no user site), before the
/// script, with the host venv's path as the first argument.
const LOADER_PRELUDE: &str = r#"
import sys, site
_venv, _minor = sys.argv.pop(1), sys.argv.pop(1)
sys.prefix = sys.exec_prefix = _venv
site.ENABLE_USER_SITE = False
site.addsitedir(_venv + '/lib/python' + _minor + '/site-packages')
site.setquit(); site.setcopyright(); site.sethelper()
try:
    import sitecustomize
except ImportError:
    pass
"#;

/// What the compiling scripts share. Every file is compiled under its name
/// in the image.
const COMPILING: &str = r#"
import sys, os, py_compile, importlib.util
root, venv, out, shard, shards = sys.argv[1:6]
shard, shards = int(shard), int(shards)
del sys.argv[1:6]
def walk(root):
    out = []
    for d, dirs, files in os.walk(root):
        dirs.sort()
        out.extend(os.path.join(d, f) for f in sorted(files) if f.endswith('.py'))
    return out
n = 0
seen = 0
def comp(src, dfile, cfile):
    global n, seen
    seen += 1
    if (seen - 1) % shards != shard:
        return
    try:
        py_compile.compile(src, cfile=cfile, dfile=dfile, doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
        n += 1
    except Exception:
        pass
def image(src):
    return '/opt/venv' + src[len(venv):]
"#;

/// The traced (or every) stdlib module into `out`, and the traced (or
/// every) module of the venv in place. The trace is `out/.trace`.
const COMPILE: &str = r#"
mode, minor, stdlib, walked = sys.argv[1:5]
site = venv + '/lib/python' + minor + '/site-packages'
if mode == 'all':
    std = [f[len(root):] for f in walk(root + stdlib) if '/site-packages/' not in f and '/dist-packages/' not in f]
    env = walk(site)
else:
    trace = open(out + '/.trace').read().split('\n')
    std = [l for l in trace if l.startswith(stdlib + '/')]
    env = [venv + l[len('/opt/venv'):] for l in trace if l.startswith('/opt/venv/')]
    # Walked packages whole: a module that failed to import in the trace
    # (an optional dependency missing) is still compiled at every start
    # when the package tries it.
    env = sorted(set(env).union(*(walk(site + '/' + w) for w in filter(None, walked.split(',')))))
for img in std:
    comp(root + img, img, out + importlib.util.cache_from_source(img))
ns = n
seen = 0
for src in env:
    comp(src, image(src), importlib.util.cache_from_source(src))
print(ns, n - ns)
"#;

/// Every module of the named top-level packages that has no bytecode in
/// the venv yet, and what importing them loads (`out/.trace`: venv files
/// without bytecode, stdlib files known to have none), into `out`
/// (mirroring the image).
const COMPILE_PACKAGES: &str = r#"
minor = sys.argv[1]
site = venv + '/lib/python' + minor + '/site-packages'
files = []
for name in sys.argv[2:]:
    d = site + '/' + name
    files += walk(d) if os.path.isdir(d) else [f for f in [d + '.py'] if os.path.isfile(f)]
traced = [l for l in open(out + '/.trace').read().split('\n') if l]
files += [venv + l[len('/opt/venv'):] for l in traced if l.startswith('/opt/venv/')]
for src in sorted(set(files)):
    if not os.path.exists(importlib.util.cache_from_source(src)):
        comp(src, image(src), out + importlib.util.cache_from_source(image(src)))
seen = 0
for img in traced:
    if not img.startswith('/opt/venv/'):
        comp(root + img, img, out + importlib.util.cache_from_source(img))
print(n)
"#;

/// Every module of a standard library compiled where its source was
/// (`json/decoder.py` → `json/decoder.pyc`), the sourceless layout of
/// CPython's embeddable distribution: the interpreter imports it without a
/// source, so the source need not ship. What does not compile (test data in
/// Python 2) keeps its source. The stdlib's image path is the argument.
const COMPILE_STDLIB: &str = r#"
skip = {'__pycache__', 'site-packages', 'dist-packages', 'lib-dynload'}
for d, dirs, files in os.walk(root + sys.argv[1]):
    dirs[:] = sorted(x for x in dirs if x not in skip)
    for f in sorted(files):
        src = os.path.join(d, f)
        if f.endswith('.py') and not os.path.islink(src):
            img = src[len(root):]
            comp(src, img, out + img + 'c')
print(n)
"#;

/// Compiles the standard library at `stdlib` (an image path) of the
/// unpacked root `rootfs` with its interpreter (bare, without column
/// positions: a traceback shows them only under a source line) into `out`,
/// mirroring the image, as sourceless bytecode (see [`COMPILE_STDLIB`]).
/// Returns the image paths of the `.pyc` files, sorted.
pub fn compile_stdlib(
    rootfs: &Path,
    interpreter: &str,
    stdlib: &str,
    out: &Path,
) -> Result<Vec<String>> {
    let interp = Interp::bare(rootfs, interpreter, out)?;
    run_sharded(
        &interp,
        "compiling the standard library",
        &format!("{COMPILING}{COMPILE_STDLIB}"),
        &[stdlib],
        &[],
    )?;
    let mut done: Vec<String> = walkdir::WalkDir::new(out)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| {
            let rel = e.path().strip_prefix(out).ok()?.to_str()?.to_string();
            Some(format!("/{rel}"))
        })
        .filter(|p| p.ends_with(".pyc") && p.starts_with(&format!("{stdlib}/")))
        .collect();
    done.sort();
    Ok(done)
}

/// Top-level importable names in a site-packages directory.
pub fn top_level_modules(site: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(site) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let p = e.path();
        if name.starts_with('_') && name != "_cffi_backend"
            || name.contains('-')
            || name.ends_with(".dist-info")
            || name.ends_with(".libs")
            || name == "bin"
            || name == "tests"
            || name == "test"
        {
            continue;
        }
        if p.is_dir() && p.join("__init__.py").is_file() {
            out.push(name);
        } else if let Some(m) = name.strip_suffix(".py") {
            if m != "setup" && m != "conftest" {
                out.push(m.to_string());
            }
        } else if name.ends_with(".so") {
            out.push(name.split('.').next().unwrap_or("").to_string());
        }
    }
    out.sort();
    out.dedup();
    out
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Compiled {
    pub stdlib_files: usize,
    pub venv_files: usize,
}

/// The image's interpreter with the venv as its venv (or bare, for its own
/// stdlib): in the sandbox (the image's `/`, the venv at /opt/venv, `out`
/// at /tmp/out), or without one through the image's own dynamic loader at
/// host paths. Either way a script's first arguments say where `/`, the
/// venv and `out` are, and the bytes it writes are the same.
struct Interp<'a> {
    rootfs: &'a Path,
    /// The venv, canonical; None runs the interpreter bare (`-S`).
    venv: Option<PathBuf>,
    out: &'a Path,
    interpreter: &'a str,
    minor: &'a str,
    /// The host path of the image's root, in the loader mode.
    loader: Option<String>,
    /// Column positions in what it compiles (`positions` strip rule off).
    positions: bool,
    /// The venv is a cached tree the scripts only read.
    venv_read_only: bool,
}

impl<'a> Interp<'a> {
    fn new(
        rootfs: &'a Path,
        venv: &Path,
        out: &'a Path,
        target: &'a super::Target,
        positions: bool,
    ) -> Result<Interp<'a>> {
        let mut i = Interp::bare(rootfs, &target.interpreter, out)?;
        i.venv = Some(std::fs::canonicalize(venv)?);
        i.minor = &target.minor;
        i.positions = positions;
        Ok(i)
    }

    /// The interpreter alone, compiling without column positions.
    fn bare(rootfs: &'a Path, interpreter: &'a str, out: &'a Path) -> Result<Interp<'a>> {
        std::fs::create_dir_all(out)?;
        let loader = match crate::sandbox::mode()? {
            crate::sandbox::Mode::Loader => Some(
                crate::sandbox::loader::host_root(rootfs)?
                    .display()
                    .to_string(),
            ),
            _ => None,
        };
        Ok(Interp {
            rootfs,
            venv: None,
            out,
            interpreter,
            minor: "",
            loader,
            positions: false,
            venv_read_only: false,
        })
    }

    fn run(&self, script: &str, args: &[&str], secs: u64) -> Result<crate::sandbox::Output> {
        let timeout = Duration::from_secs(secs);
        // Any value of PYTHONNODEBUGRANGES turns positions off: the flag it is.
        let flags: &[&str] = if self.positions {
            &[]
        } else {
            &["-X", "no_debug_ranges"]
        };
        let Some(root) = &self.loader else {
            let mut argv = match self.venv {
                Some(_) => vec!["/opt/venv/bin/python"],
                None => vec![self.interpreter, "-S"],
            };
            argv.extend(flags);
            let venv = if self.venv.is_some() { "/opt/venv" } else { "" };
            argv.extend(["-c", script, "", venv, "/tmp/out"]);
            argv.extend(args);
            let mut sb = Sandbox::new(self.rootfs);
            if let Some(v) = &self.venv {
                sb = match self.venv_read_only {
                    true => sb.ro_bind_in(v, "/opt/venv", "/opt"),
                    false => sb.bind(v, "/opt/venv", Some("/opt")),
                };
            }
            return sb
                .bind(self.out, "/tmp/out", None)
                .env("PATH", "/opt/venv/bin:/usr/local/bin:/usr/bin:/bin")
                .env("PYTHONHASHSEED", "0")
                .env("PYTHONDONTWRITEBYTECODE", "1")
                .env("HOME", "/tmp")
                .run(&argv, timeout);
        };
        let mut c = crate::sandbox::loader::command(Path::new(root), self.interpreter)?;
        c.arg("-S").args(flags).arg("-c");
        let venv = match &self.venv {
            Some(v) => {
                let v = v.display().to_string();
                c.arg(format!("{LOADER_PRELUDE}{script}"))
                    .args([v.as_str(), self.minor]);
                v
            }
            None => {
                c.arg(script);
                String::new()
            }
        };
        c.arg(root)
            .arg(venv)
            .arg(self.out)
            .args(args)
            .env("PATH", "/usr/bin:/bin")
            .env("PYTHONHASHSEED", "0")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("HOME", self.out);
        crate::sandbox::wait(c, &[self.interpreter], timeout)
    }

    /// A path the interpreter printed, as a path in the image.
    fn image_path(&self, p: &str) -> Option<String> {
        let Some(root) = &self.loader else {
            return Some(p.to_string());
        };
        if let Some(rest) = self.venv.as_ref().and_then(|v| p.strip_prefix(v.to_str()?)) {
            return Some(format!("/opt/venv{rest}"));
        }
        p.strip_prefix(root.as_str()).map(str::to_string)
    }
}

/// The [`WALKED`] packages among the venv's top-level modules,
/// comma-separated.
fn walked(tops: &[String]) -> String {
    WALKED
        .iter()
        .copied()
        .filter(|w| tops.iter().any(|t| t == w))
        .collect::<Vec<_>>()
        .join(",")
}

/// The image paths of the `.py` files the dependencies import: every
/// top-level module of the venv (`modules`), every submodule of
/// [`WALKED`] packages, and [`WEB_STDLIB`]. `out` is scratch space.
pub fn trace(
    rootfs: &Path,
    venv: &Path,
    out: &Path,
    target: &super::Target,
    modules: &[String],
) -> Result<Vec<String>> {
    let interp = Interp::new(rootfs, venv, out, target, true)?;
    let mods: Vec<&str> = modules.iter().map(String::as_str).collect();
    run_trace(
        &interp,
        "tracing the dependencies' imports",
        &walked(modules),
        WEB_STDLIB,
        &mods,
    )
}

/// The image paths of the `.py` files importing `first` and `mods` loads,
/// with every submodule of the packages in `walk` (comma-separated),
/// sorted: the union of the [`TRACE_SHARDS`] processes' traces.
fn run_trace(
    interp: &Interp,
    what: &str,
    walk: &str,
    first: &[&str],
    mods: &[&str],
) -> Result<Vec<String>> {
    let (count, total) = (first.len().to_string(), TRACE_SHARDS.to_string());
    let shards: Vec<String> = (0..TRACE_SHARDS).map(|i| i.to_string()).collect();
    let trace = |_, shard: &String| {
        let mut args: Vec<&str> = vec![shard, &total, walk, &count];
        args.extend(first);
        args.extend(mods);
        ran(what, interp.run(TRACE, &args, 120)?)
    };
    // A chroot run moves its binds into its own copy of the root (see
    // `run_sharded`): one at a time.
    let workers = match crate::sandbox::mode()? {
        crate::sandbox::Mode::Chroot => 1,
        _ => TRACE_SHARDS,
    };
    let outputs = crate::core::parallel::map(workers, &shards, trace)?;
    let files: std::collections::BTreeSet<String> = outputs
        .iter()
        .flat_map(|o| o.lines())
        .filter_map(|l| interp.image_path(l))
        .filter(|p| plain_absolute(p))
        .collect();
    Ok(files.into_iter().collect())
}

/// Whether `p` is an absolute path of plain names only. The trace is
/// printed by the image's interpreter: a path with `..` in it must not lead
/// a look or a write elsewhere.
fn plain_absolute(p: &str) -> bool {
    p.strip_prefix('/').is_some_and(|rest| {
        rest.split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
    })
}

/// Which bytecode [`compile`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compiling {
    pub mode: Mode,
    /// With column positions (the `positions` strip rule off).
    pub positions: bool,
}

/// Compiles bytecode: in place in `venv` (mounted at /opt/venv), and for
/// the stdlib into `out` (mirroring `/usr/lib/pythonX.Y/.../__pycache__`):
/// in `imports` mode the `traced` files (image paths, from [`trace`]), in
/// `all` mode everything.
pub fn compile(
    rootfs: &Path,
    venv: &Path,
    out: &Path,
    target: &super::Target,
    how: Compiling,
    traced: &[String],
    modules: &[String],
) -> Result<Compiled> {
    let mode = how.mode;
    if mode == Mode::None {
        return Ok(Compiled::default());
    }
    let interp = Interp::new(rootfs, venv, out, target, how.positions)?;
    let outputs = run_sharded(
        &interp,
        "compiling bytecode",
        &format!("{COMPILING}{COMPILE}"),
        &[
            mode.as_str(),
            &target.minor,
            &target.stdlib,
            &walked(modules),
        ],
        traced,
    )?;
    let mut compiled = Compiled::default();
    for o in outputs {
        let mut it = o.split_whitespace().map(|n| n.parse().unwrap_or(0));
        compiled.stdlib_files += it.next().unwrap_or(0);
        compiled.venv_files += it.next().unwrap_or(0);
    }
    Ok(compiled)
}

/// Where CPython keeps the bytecode of the image path `py` (a `.py` file).
pub fn cache_path(py: &str, cache_tag: &str) -> String {
    let (dir, file) = py.rsplit_once('/').unwrap_or(("", py));
    let stem = file.strip_suffix(".py").unwrap_or(file);
    format!("{dir}/__pycache__/{stem}.{cache_tag}.pyc")
}

/// Compiles, into `out` (mirroring the image), every module of the
/// top-level packages `names` that has no bytecode in `venv`, and what
/// importing all of them loads (traced like the dependencies: a Django
/// app loads asyncio and email from the stdlib, which Django's own
/// top-level import does not), unless `has_bytecode` says the image has
/// it. Returns how many were compiled.
pub fn compile_packages(
    rootfs: &Path,
    venv: &Path,
    out: &Path,
    target: &super::Target,
    names: &[String],
    has_bytecode: impl Fn(&str) -> bool,
    positions: bool,
) -> Result<usize> {
    if names.is_empty() {
        return Ok(0);
    }
    let mut interp = Interp::new(rootfs, venv, out, target, positions)?;
    interp.venv_read_only = true;
    let mods: Vec<&str> = names.iter().map(String::as_str).collect();
    let what = "tracing the imports of the packages the app names";
    let traced: Vec<String> = run_trace(&interp, what, &names.join(","), &[], &mods)?
        .into_iter()
        .filter(|p| {
            p.starts_with("/opt/venv/")
                || p.starts_with(&format!("{}/", target.stdlib)) && !has_bytecode(p)
        })
        .collect();
    let mut args = vec![target.minor.as_str()];
    args.extend(&mods);
    let outputs = run_sharded(
        &interp,
        "compiling the bytecode of the packages the app names",
        &format!("{COMPILING}{COMPILE_PACKAGES}"),
        &args,
        &traced,
    )?;
    Ok(outputs
        .iter()
        .map(|o| o.trim().parse::<usize>().unwrap_or(0))
        .sum())
}

/// Runs a [`COMPILING`] script as one process per core, each compiling
/// every n-th file, with `trace` in `out/.trace`; their outputs, each
/// checked.
fn run_sharded(
    interp: &Interp,
    what: &str,
    script: &str,
    args: &[&str],
    trace: &[String],
) -> Result<Vec<String>> {
    // A chroot run moves its binds into its own copy of the root: two at
    // once would take the venv from each other.
    let shards = match crate::sandbox::mode()? {
        crate::sandbox::Mode::Chroot => 1,
        _ => std::thread::available_parallelism().map_or(2, |n| n.get().min(4)),
    };
    let file = interp.out.join(".trace");
    std::fs::write(&file, trace.join("\n"))?;
    let total = shards.to_string();
    let shard_ids: Vec<String> = (0..shards).map(|i| i.to_string()).collect();
    let outputs = crate::core::parallel::map(shards, &shard_ids, |_, shard| {
        let mut all = vec![shard.as_str(), total.as_str()];
        all.extend(args);
        ran(what, interp.run(script, &all, 600)?)
    });
    let _ = std::fs::remove_file(&file);
    outputs
}

/// The output of a script that must have succeeded.
fn ran(what: &str, o: crate::sandbox::Output) -> Result<String> {
    if o.status != 0 {
        bail!(
            "{what} failed (exit {}):\n{}",
            o.status,
            o.stderr.trim_end()
        );
    }
    Ok(o.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytecode_paths_are_cpythons() {
        assert_eq!(
            cache_path("/usr/lib/python3.13/asyncio/events.py", "cpython-313"),
            "/usr/lib/python3.13/asyncio/__pycache__/events.cpython-313.pyc"
        );
        assert_eq!(
            cache_path("/opt/python/lib/python3.12/json/__init__.py", "cpython-312"),
            "/opt/python/lib/python3.12/json/__pycache__/__init__.cpython-312.pyc"
        );
    }

    /// The trace's shards: modules whose distributions require the same
    /// one are imported by one process (the shared one once), the largest
    /// shard is as small as it can be, and together the shards trace what
    /// one process does.
    #[test]
    fn trace_shards_keep_a_shared_dependency_together() {
        let site = tempfile::tempdir().unwrap();
        // Name, requirements, the size its RECORD gives its source.
        let dists: [(&str, &[&str], u32); 5] = [
            ("alpha", &["gamma", "absent; extra == 'x'"], 1000),
            ("beta", &["gamma"], 100),
            ("gamma", &[], 5000),
            ("delta", &[], 5500),
            // A broken RECORD: a size that is no number, no Name.
            ("epsilon", &[], 0),
        ];
        for (name, requires, size) in dists {
            let imports: String = requires
                .iter()
                .filter(|r| !r.contains(';'))
                .map(|r| format!("import {r}\n"))
                .collect();
            std::fs::write(site.path().join(format!("{name}.py")), imports).unwrap();
            let info = site.path().join(format!("{name}-1.0.dist-info"));
            std::fs::create_dir(&info).unwrap();
            let mut metadata = format!("Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n");
            for r in requires {
                metadata.push_str(&format!("Requires-Dist: {r}\n"));
            }
            std::fs::write(info.join("METADATA"), metadata).unwrap();
            std::fs::write(info.join("top_level.txt"), format!("{name}\n")).unwrap();
            let record = format!("{name}.py,,{size}\n{name}-1.0.dist-info/METADATA,,\n");
            std::fs::write(info.join("RECORD"), record).unwrap();
        }
        let broken = site.path().join("epsilon-1.0.dist-info");
        std::fs::write(broken.join("RECORD"), "epsilon.py,,many\n").unwrap();
        std::fs::write(broken.join("METADATA"), "Version: 1.0\n").unwrap();
        let trace = |shard: &str, shards: &str| -> Vec<String> {
            let out = std::process::Command::new("python3")
                .args([
                    "-S", "-c", TRACE, "/", "", "/tmp/out", shard, shards, "", "0",
                ])
                .args(["delta", "beta", "alpha", "gamma", "epsilon"])
                .env("PYTHONPATH", site.path())
                .env("PYTHONDONTWRITEBYTECODE", "1")
                .output()
                .expect("python3 runs (test.sh installs it)");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let mut names: Vec<String> = String::from_utf8(out.stdout)
                .unwrap()
                .lines()
                .filter_map(|l| l.strip_prefix(site.path().to_str()?)?.strip_prefix('/'))
                .map(str::to_string)
                .collect();
            names.sort();
            names
        };
        // The broken distribution weighs nothing: it goes where it adds least.
        assert_eq!(
            trace("0", "2"),
            ["alpha.py", "beta.py", "epsilon.py", "gamma.py"]
        );
        assert_eq!(trace("1", "2"), ["delta.py"]);
        assert_eq!(
            trace("0", "1"),
            ["alpha.py", "beta.py", "delta.py", "epsilon.py", "gamma.py"]
        );
    }

    #[test]
    fn traced_paths_with_dots_are_dropped() {
        assert!(plain_absolute("/usr/lib/python3.11/json/__init__.py"));
        for bad in [
            "usr/lib/x.py",
            "/usr/lib/../../etc/x.py",
            "/usr/./lib/x.py",
            "/usr//lib/x.py",
            "/usr/lib/.",
            "",
        ] {
            assert!(!plain_absolute(bad), "{bad}");
        }
    }

    #[test]
    fn walked_packages_are_those_installed() {
        let tops: Vec<String> = ["anyio", "flask", "uvicorn"].map(String::from).to_vec();
        assert_eq!(walked(&tops), "uvicorn,anyio");
        assert_eq!(walked(&[]), "");
    }
}
