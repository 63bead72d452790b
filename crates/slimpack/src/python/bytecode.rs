//! Bytecode, compiled by the image's own interpreter under bwrap, with
//! `unchecked-hash` invalidation (no mtimes: the same source gives the same
//! `.pyc` bytes anywhere) and a fixed hash seed.
//!
//! The size/start-up trade-off: the stdlib's bytecode costs ~12 MB but an
//! app imports a fraction of it. In `imports` mode (the default) the stdlib
//! gets bytecode only for the modules its dependencies import (every
//! top-level module of the venv, all submodules of the server, and a fixed
//! list of modules web apps commonly use), traced by importing them in the
//! sandbox. The trace never looks at the app's own code, so the layer's
//! content depends only on the dependency set and the runtime: an app edit
//! never rebuilds it, and two machines give the same bytes.

use crate::sandbox::Sandbox;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
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

/// Servers whose submodules are all imported in the trace: they load most
/// of themselves lazily, after start.
const SERVERS: &[&str] = &["gunicorn", "uvicorn", "hypercorn", "waitress", "daphne"];

const TRACE: &str = r#"
import sys, os, importlib, pkgutil
walk = set(filter(None, sys.argv[1].split(',')))
mods = sys.argv[2:]
# Importing must not start anything: no arguments to parse, no forks.
sys.argv = [sys.argv[0]]
def _nofork(*a, **k):
    raise OSError('no processes while tracing imports')
os.fork = os.forkpty = os.system = _nofork
def imp(m):
    try:
        return importlib.import_module(m)
    except BaseException:
        return None
for m in mods:
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

/// Compiles the traced (or every) stdlib module into `out` and the whole
/// venv in place. `root`, `venv` and `out` are where the image's `/`,
/// `/opt/venv` and the output directory are as the interpreter sees them:
/// `""`, `/opt/venv` and `/tmp/out` in a sandbox, host paths without one.
/// Every file is compiled under its name in the image.
const COMPILE: &str = r#"
import sys, os, py_compile, importlib.util
mode, minor, stdlib, root, venv, out = sys.argv[1:7]
site = venv + '/lib/python' + minor + '/site-packages'
def walk(root):
    out = []
    for d, dirs, files in os.walk(root):
        dirs.sort()
        out.extend(os.path.join(d, f) for f in sorted(files) if f.endswith('.py'))
    return out
if mode == 'all':
    std = [f[len(root):] for f in walk(root + stdlib) if '/site-packages/' not in f and '/dist-packages/' not in f]
else:
    std = [l for l in open(out + '/.trace').read().split('\n') if l.startswith(stdlib + '/')]
n = 0
def comp(src, dfile, cfile):
    global n
    try:
        py_compile.compile(src, cfile=cfile, dfile=dfile, doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
        n += 1
    except Exception:
        pass
for img in std:
    comp(root + img, img, out + importlib.util.cache_from_source(img))
ns = n
for src in walk(site):
    comp(src, '/opt/venv' + src[len(venv):], importlib.util.cache_from_source(src))
print(ns, n - ns)
"#;

/// Top-level importable names in a site-packages directory.
fn top_level_modules(site: &Path) -> Vec<String> {
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

/// Compiles bytecode: in place in `venv` (mounted at /opt/venv), and for the
/// stdlib into `out` (mirroring `/usr/lib/pythonX.Y/.../__pycache__`).
pub fn compile(
    rootfs: &Path,
    venv: &Path,
    out: &Path,
    target: &super::Target,
    mode: Mode,
) -> Result<Compiled> {
    let minor = target.minor.as_str();
    if mode == Mode::None {
        return Ok(Compiled::default());
    }
    std::fs::create_dir_all(out)?;
    if crate::sandbox::mode()? == crate::sandbox::Mode::Loader {
        return compile_with_loader(rootfs, venv, out, target, mode);
    }
    let base = || {
        Sandbox::new(rootfs)
            .bind(venv, "/opt/venv", Some("/opt"))
            .bind(out, "/tmp/out", None)
            .env("PATH", "/opt/venv/bin:/usr/local/bin:/usr/bin:/bin")
            .env("PYTHONHASHSEED", "0")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("HOME", "/tmp")
    };
    if mode == Mode::Imports {
        let (walk, tops) = trace_targets(venv, minor);
        let mut argv: Vec<&str> = vec!["/opt/venv/bin/python", "-c", TRACE, &walk];
        argv.extend(WEB_STDLIB);
        argv.extend(tops.iter().map(String::as_str));
        let o = base().run(&argv, Duration::from_secs(120))?;
        traced(&o)?;
        std::fs::write(out.join(".trace"), &o.stdout)?;
    }
    let o = base().run(
        &[
            "/opt/venv/bin/python",
            "-c",
            COMPILE,
            mode.as_str(),
            minor,
            &target.stdlib,
            "",
            "/opt/venv",
            "/tmp/out",
        ],
        Duration::from_secs(600),
    )?;
    let _ = std::fs::remove_file(out.join(".trace"));
    compiled(&o)
}

/// The servers whose submodules are all traced (comma-separated), and the
/// venv's top-level modules.
fn trace_targets(venv: &Path, minor: &str) -> (String, Vec<String>) {
    let site = venv.join(format!("lib/python{minor}/site-packages"));
    let tops = top_level_modules(&site);
    let walk: Vec<&str> = SERVERS
        .iter()
        .copied()
        .filter(|s| tops.iter().any(|t| t == s))
        .collect();
    (walk.join(","), tops)
}

fn traced(o: &crate::sandbox::Output) -> Result<()> {
    if o.status != 0 {
        bail!(
            "tracing the dependencies' imports failed (exit {}):\n{}",
            o.status,
            o.stderr.trim_end()
        );
    }
    Ok(())
}

fn compiled(o: &crate::sandbox::Output) -> Result<Compiled> {
    if o.status != 0 {
        bail!(
            "compiling bytecode failed (exit {}):\n{}",
            o.status,
            o.stderr.trim_end()
        );
    }
    let mut it = o.stdout.split_whitespace().map(|n| n.parse().unwrap_or(0));
    Ok(Compiled {
        stdlib_files: it.next().unwrap_or(0),
        venv_files: it.next().unwrap_or(0),
    })
}

/// [`compile`] without a sandbox: the image's interpreter through its own
/// dynamic loader, at host paths, every path it reports mapped back to
/// the image's, so the same bytes come out.
fn compile_with_loader(
    rootfs: &Path,
    venv: &Path,
    out: &Path,
    target: &super::Target,
    mode: Mode,
) -> Result<Compiled> {
    use crate::sandbox::loader;
    let minor = target.minor.as_str();
    let root = loader::host_root(rootfs)?;
    let venv = std::fs::canonicalize(venv)?;
    let (root_s, venv_s) = (root.display().to_string(), venv.display().to_string());
    let run = |script: &str, args: &[&str], secs: u64| {
        let mut c = loader::command(&root, &target.interpreter)?;
        c.args(["-S", "-c"])
            .arg(format!("{LOADER_PRELUDE}{script}"))
            .args([venv_s.as_str(), minor])
            .args(args)
            .env("PATH", "/usr/bin:/bin")
            .env("PYTHONHASHSEED", "0")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("HOME", out);
        crate::sandbox::wait(c, &[target.interpreter.as_str()], Duration::from_secs(secs))
    };
    if mode == Mode::Imports {
        let (walk, tops) = trace_targets(&venv, minor);
        let mut args: Vec<&str> = vec![&walk];
        args.extend(WEB_STDLIB);
        args.extend(tops.iter().map(String::as_str));
        let o = run(TRACE, &args, 120)?;
        traced(&o)?;
        // Host paths back to the image's: only the stdlib's are used.
        let mapped: String = o
            .stdout
            .lines()
            .filter_map(|l| l.strip_prefix(root_s.as_str()))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(out.join(".trace"), mapped)?;
    }
    let out_s = out.display().to_string();
    let o = run(
        COMPILE,
        &[
            mode.as_str(),
            minor,
            &target.stdlib,
            &root_s,
            &venv_s,
            &out_s,
        ],
        600,
    )?;
    let _ = std::fs::remove_file(out.join(".trace"));
    compiled(&o)
}
