//! The builder stage: the runtime's Debian packages plus a compiler, the
//! interpreter's headers and `-dev` packages, unpacked into a root file
//! system and run under bwrap. uv inside it installs the lock into the
//! venv's site-packages, taking wheels where they exist and compiling the
//! rest. The interpreter is the runtime's own (`/usr/bin/pythonX.Y` of the
//! same packages), so what it builds runs unchanged in the image.
//!
//! When a build fails on a missing header, program, library or pkg-config
//! module, the package that ships it is looked up in the archive's Contents
//! index, added, and the build retried.

use crate::base::debian::{self, BaseSpec};
use crate::core::cache::Cache;
use crate::core::errors::hinted;
use crate::core::progress::Progress;
use crate::python::{uv, uv::Uv, Lock, Target};
use crate::sandbox::{self, Sandbox};
use anyhow::{Context, Result};
use regex::Regex;
use serde::Serialize;
use slimpack_debian::{ContentsIndex, Need};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

pub mod packages;

/// First guesses for packages everyone builds from source. The Contents
/// search covers what is not here.
const KNOWN_BUILD_NEEDS: &[(&str, &[&str])] = &[
    ("psycopg2", &["libpq-dev"]),
    ("psycopg", &["libpq-dev"]),
    ("psycopg-c", &["libpq-dev"]),
    ("mysqlclient", &["default-libmysqlclient-dev", "pkgconf"]),
    ("python-ldap", &["libldap2-dev", "libsasl2-dev"]),
    ("lxml", &["libxml2-dev", "libxslt1-dev"]),
    ("pillow", &["libjpeg-dev", "zlib1g-dev"]),
    ("cffi", &["libffi-dev"]),
    ("pyodbc", &["unixodbc-dev"]),
    ("pycairo", &["libcairo2-dev", "pkgconf"]),
];

/// How many times a failed build is retried with packages found in the
/// Contents index (each retry can uncover the next missing file).
const MAX_RETRIES: usize = 2;

/// Where things are mounted inside the builder.
const TOOLS: &str = "/run/slimpack";
/// The builder's `sitecustomize`: distutils compiles an extension's C files
/// one per core instead of one at a time, and without debug info.
const SITECUSTOMIZE: &str = include_str!("sitecustomize.py");
const OUT: &str = "/opt/site-packages";

#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Built {
    /// Python packages compiled from source (`name==version`).
    pub compiled: Vec<String>,
    /// The builder's extra Debian packages, as finally used.
    pub build_packages: Vec<String>,
    /// Packages added after a failed build, and why.
    pub added: Vec<String>,
    /// Packages not compiled again: their files kept from an earlier build
    /// (`name==version`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reused: Vec<String>,
}

/// What installing the lock needs, in the builder or on the host (the
/// build pipeline passes the same request to both).
pub struct Request<'a> {
    pub spec: &'a BaseSpec,
    pub lock: &'a Lock,
    pub target: &'a Target,
    pub uv: &'a Uv,
    /// Packages to build from source even where a wheel exists.
    pub no_binary: &'a [String],
    /// `build-packages` from the configuration.
    pub build_packages: &'a [String],
    /// The project itself, when it is a package: its metadata and scripts
    /// go into the venv.
    pub app_package: Option<&'a crate::project::AppPackage>,
    /// The project's own packages the lock names by path, hashed.
    pub local: &'a [crate::python::local::LocalPackage],
    /// The project's directory, where the local packages are.
    pub project_dir: &'a Path,
    pub cache: &'a Cache,
    pub progress: &'a Progress,
    pub refresh: bool,
    /// SOURCE_DATE_EPOCH for the builds (the image's fixed time).
    pub mtime: u64,
}

/// The `-dev` packages to start with: configured ones plus the well-known
/// needs of the locked packages.
pub fn initial_build_packages(lock: &Lock, configured: &[String]) -> Vec<String> {
    let names: Vec<String> = lock.packages.iter().map(|p| p.name.clone()).collect();
    build_packages_for(configured, &names)
}

/// The `-dev` packages a build of `from_source` starts with: the configured
/// ones and the well-known needs of those packages alone.
pub fn build_packages_for(configured: &[String], from_source: &[String]) -> Vec<String> {
    let mut out: Vec<String> = configured.to_vec();
    for name in from_source {
        if let Some((_, pkgs)) = KNOWN_BUILD_NEEDS.iter().find(|(n, _)| n == name) {
            for d in *pkgs {
                if !out.iter().any(|o| o == d) {
                    out.push(d.to_string());
                }
            }
        }
    }
    out
}

/// Installs `req.lock` into `site` (the host directory that becomes
/// `/opt/venv/lib/pythonX.Y/site-packages`); `from_source` are the packages
/// with no usable wheel (the rest are installed from wheels as on the host).
pub fn install(req: &Request, site: &Path, from_source: &[String]) -> Result<Built> {
    let initial = initial_build_packages(req.lock, req.build_packages);
    let mut kept = Vec::new();
    let mut to_build = Vec::new();
    for name in from_source {
        match packages::cached(req, name, &initial) {
            Some(b) => kept.push((name.clone(), b)),
            None => to_build.push(name.clone()),
        }
    }
    if kept.is_empty() {
        return compile(req, site, from_source, initial);
    }
    // What was compiled before (here, or by another machine through the
    // build cache) is not compiled again: the rest of the lock is installed
    // as it would be, then its files are put back.
    let names: Vec<String> = kept.iter().map(|(n, _)| n.clone()).collect();
    let lock = req.lock.without(&names);
    let mut built = if to_build.is_empty() {
        clear_dir(site)?;
        crate::python::install_wheels(&lock, req.target, req.uv, site)?;
        Built::default()
    } else {
        let rest = Request {
            lock: &lock,
            ..*req
        };
        compile(&rest, site, &to_build, initial)?
    };
    for (_, b) in &kept {
        packages::restore(req, site, b)?;
        built.reused.push(b.requirement.clone());
    }
    Ok(built)
}

/// Compiles `from_source` in the builder (installing the rest of the lock
/// from wheels there), starting with the `initial` build packages and
/// adding what a failed build shows it missed; keeps each compiled
/// package's files for later builds.
fn compile(
    req: &Request,
    site: &Path,
    from_source: &[String],
    initial: Vec<String>,
) -> Result<Built> {
    if crate::sandbox::mode()? == crate::sandbox::Mode::Loader {
        anyhow::bail!(
            "{} must be compiled from source, which runs its build in a sandbox, and none can be made here: this machine forbids new user namespaces and slimpack is not root. Run slimpack as root in this container, allow user namespaces, or pin versions that have wheels",
            if from_source.is_empty() {
                "a dependency".to_string()
            } else {
                from_source.join(", ")
            }
        );
    }
    let mut packages = initial.clone();
    let mut added: Vec<String> = Vec::new();
    let mut contents: Option<ContentsIndex> = None;
    for attempt in 0..=MAX_RETRIES {
        let spec = req.spec.builder(&packages);
        let resolved = debian::resolve(&spec, req.cache, req.refresh, req.progress)?;
        let root = debian::builder_rootfs(&spec, &resolved, req.cache, req.progress)?;
        clear_dir(site)?;
        let sp = req.progress.spinner(format!(
            "Building Python packages from source in the builder ({})",
            spec.suite.codename()
        ));
        let out = run_uv(req, &root, site, from_source)?;
        sp.finish_and_clear();
        if out.status == 0 {
            for name in from_source {
                // Only an optimisation for later builds: never a failure.
                if let Err(e) = packages::keep(req, site, name, &initial) {
                    eprintln!(
                        "warning: the build of {name} was not kept for later builds: {}",
                        crate::core::text::escape_controls(&format!("{e:#}"))
                    );
                }
            }
            return Ok(Built {
                compiled: pinned(req.lock, from_source),
                build_packages: packages,
                added,
                reused: Vec::new(),
            });
        }
        let needs = diagnose(&out.stderr);
        let log_tail = tail(&out.stderr, 40);
        if needs.is_empty() || attempt == MAX_RETRIES {
            // An index that refused the builder is no missing -dev package.
            let hint = req.uv.indexes().explain(&out.stderr).unwrap_or_else(|| {
                "name the Debian -dev packages the build needs in `build-packages` (pyproject.toml [tool.slimpack] or slimpack.toml), or pin a version that ships a wheel".into()
            });
            return Err(hinted(
                format!(
                    "building the dependencies from source failed in the builder (Debian {}, build packages: {}):\n{log_tail}",
                    spec.suite.codename(),
                    if packages.is_empty() { "none".to_string() } else { packages.join(", ") }
                ),
                hint,
            ));
        }
        if contents.is_none() {
            contents = Some(debian::contents(req.spec, req.cache, req.progress)?);
        }
        let idx = contents.as_ref().expect("just loaded");
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for need in &needs {
            match idx.package_for(need, "x86_64-linux-gnu") {
                Some(p)
                    if !packages.contains(&p) && !resolved.packages.iter().any(|r| r.name == p) =>
                {
                    found.push((p, need.clone()))
                }
                Some(_) => {}
                None => missing.push(need.to_string()),
            }
        }
        if found.is_empty() {
            return Err(hinted(
                format!(
                    "building the dependencies from source failed in the builder:\n{log_tail}\nThe build looked for {}; {}.",
                    needs.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", "),
                    if missing.is_empty() {
                        "the packages that ship them are already in the builder".to_string()
                    } else {
                        format!("no package of Debian {} ships {}", req.spec.suite.codename(), missing.join(", "))
                    }
                ),
                "add the Debian packages that provide them to `build-packages`",
            ));
        }
        for (p, need) in found {
            let why = format!("{p} (ships the {need} a build was missing)");
            eprintln!("builder: adding {why}; retrying");
            added.push(why);
            packages.push(p);
        }
    }
    unreachable!("the loop returns or fails on its last attempt")
}

fn clear_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir)?;
    Ok(())
}

fn run_uv(
    req: &Request,
    root: &Path,
    site: &Path,
    from_source: &[String],
) -> Result<sandbox::Output> {
    let work = tempfile::tempdir()?;
    let lock_file = work.path().join("lock.txt");
    std::fs::write(&lock_file, &req.lock.text)?;
    let hooks = work.path().join("hooks");
    std::fs::create_dir(&hooks)?;
    std::fs::write(hooks.join("sitecustomize.py"), SITECUSTOMIZE)?;
    let interp = req.target.interpreter.clone();
    let mut sb = Sandbox::new(root)
        .share_net()
        .tmpfs("/run")
        .ro_bind(req.uv.path()?, &format!("{TOOLS}/uv"))
        .ro_bind(&lock_file, &format!("{TOOLS}/lock.txt"))
        .ro_bind(&hooks, &format!("{TOOLS}/hooks"))
        .bind(req.uv.cache_dir(), &format!("{TOOLS}/uv-cache"), None)
        .bind(site, OUT, Some("/opt"))
        .env("PATH", "/usr/bin")
        .env("HOME", "/tmp")
        .env("LANG", "C.UTF-8")
        .env("UV_CACHE_DIR", &format!("{TOOLS}/uv-cache"))
        // An extension's C files compiled in parallel and without debug
        // info (see sitecustomize.py for why not CFLAGS).
        .env("PYTHONPATH", &format!("{TOOLS}/hooks"))
        .env("SOURCE_DATE_EPOCH", &req.mtime.to_string());
    for (k, v) in uv::SETTINGS {
        sb = sb.env(k, v);
    }
    // Name resolution and the host's trust store and proxy, for fetching
    // only: they live on mounts and in the environment of this one run,
    // never in a layer.
    for f in ["/etc/resolv.conf", "/etc/hosts"] {
        if Path::new(f).is_file() {
            sb = sb.ro_bind(Path::new(f), f);
        }
    }
    if let Some(ca) = crate::core::http::host_ca_bundle() {
        sb = sb
            .ro_bind(&ca, &format!("{TOOLS}/ca.crt"))
            .env("SSL_CERT_FILE", &format!("{TOOLS}/ca.crt"));
    }
    for var in PROXY_VARS {
        if let Ok(v) = std::env::var(var) {
            sb = sb.env(var, &v);
        }
    }
    // The indexes' credentials for this one run, in its environment (never
    // an argument anyone on the machine could read).
    let indexes = req.uv.indexes();
    for (k, v) in indexes.credentials()? {
        sb = sb.env(&k, &v);
    }
    // uv on the host reads ~/.netrc; the builder's home is not the user's.
    if let Some(netrc) = crate::python::index::netrc().filter(|_| !indexes.indexes().is_empty()) {
        sb = sb
            .ro_bind(&netrc, &format!("{TOOLS}/netrc"))
            .env("NETRC", &format!("{TOOLS}/netrc"));
    }
    let mut argv: Vec<String> = vec![
        format!("{TOOLS}/uv"),
        "pip".into(),
        "install".into(),
        "--no-deps".into(),
        "--require-hashes".into(),
        "--link-mode".into(),
        "copy".into(),
        "--no-compile".into(),
        "--python".into(),
        interp,
        "--target".into(),
        OUT.into(),
        "-r".into(),
        format!("{TOOLS}/lock.txt"),
    ];
    argv.extend(
        indexes
            .args(crate::python::index::Purpose::Install)
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned()),
    );
    for p in req.no_binary {
        argv.push("--no-binary".into());
        argv.push(p.clone());
    }
    // Compile for real, in this builder: a wheel uv built earlier, in
    // another builder (other -dev packages) or another run, is not reused.
    // Our own venv cache already avoids compiling twice for the same inputs.
    for p in from_source {
        argv.push("--refresh-package".into());
        argv.push(p.clone());
    }
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    sb.run(&argv, Duration::from_secs(1800))
}

/// The host's proxy settings, which uv in the builder must honour too.
const PROXY_VARS: &[&str] = &[
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `name==version` of each of `names` in the lock.
fn pinned(lock: &Lock, names: &[String]) -> Vec<String> {
    lock.packages
        .iter()
        .filter(|p| names.contains(&p.name))
        .map(|p| format!("{}=={}", p.name, p.version))
        .collect()
}

/// A log pattern whose first group names the missing thing, and its kind.
type Pattern = (Regex, fn(&str) -> Need);

fn patterns() -> &'static [Pattern] {
    static P: OnceLock<Vec<Pattern>> = OnceLock::new();
    P.get_or_init(|| {
        let r = |s: &str| Regex::new(s).expect("valid pattern");
        vec![
            (
                r(r"fatal error: ([^\s:]+\.h[hp]*): No such file or directory"),
                |m| Need::Header(m.into()),
            ),
            (r(r"([A-Za-z0-9_.+-]+) executable not found"), |m| {
                Need::Program(m.into())
            }),
            (r(r"\b([A-Za-z0-9_.+-]+): (?:command )?not found"), |m| {
                Need::Program(m.into())
            }),
            (
                r(r"command '(?:[^']*/)?([^'/]+)' failed: No such file or directory"),
                |m| Need::Program(m.into()),
            ),
            (
                r(r"No such file or directory: '([A-Za-z0-9_.+-]+)'"),
                |m| Need::Program(m.into()),
            ),
            (r(r"cannot find -l([A-Za-z0-9_.+-]+)"), |m| {
                Need::Library(m.into())
            }),
            (
                r(r"Package '?([A-Za-z0-9_.+-]+)'?,? (?:was not found in the pkg-config search path|required by)"),
                |m| Need::PkgConfig(m.into()),
            ),
            (r(r"No package '([A-Za-z0-9_.+-]+)' found"), |m| {
                Need::PkgConfig(m.into())
            }),
        ]
    })
}

/// The files a failed build says it was missing.
pub fn diagnose(log: &str) -> Vec<Need> {
    let mut out = BTreeSet::new();
    for (re, make) in patterns() {
        for c in re.captures_iter(log) {
            let m = &c[1];
            // `sh: 1: x: not found` style lines name a line number first.
            if m.chars().all(|ch| ch.is_ascii_digit()) {
                continue;
            }
            out.insert(make(m));
        }
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::python::LockedPackage;

    #[test]
    fn reads_what_builds_miss() {
        let psycopg2 = "      running egg_info\n      Error: pg_config executable not found.\n      pg_config is required to build psycopg2 from source.";
        assert_eq!(diagnose(psycopg2), vec![Need::Program("pg_config".into())]);
        let gcc = "psycopg/psycopgmodule.c:28:10: fatal error: libpq-fe.h: No such file or directory\n   28 | #include <libpq-fe.h>";
        assert_eq!(diagnose(gcc), vec![Need::Header("libpq-fe.h".into())]);
        let nested = "src/lxml/includes/etree_defs.h:14:10: fatal error: libxml/xmlversion.h: No such file or directory";
        assert_eq!(
            diagnose(nested),
            vec![Need::Header("libxml/xmlversion.h".into())]
        );
        let ld = "/usr/bin/ld: cannot find -lpq: No such file or directory";
        assert_eq!(diagnose(ld), vec![Need::Library("pq".into())]);
        let sh = "/bin/sh: 1: mysql_config: not found";
        assert_eq!(diagnose(sh), vec![Need::Program("mysql_config".into())]);
        let cc = "error: command 'x86_64-linux-gnu-g++' failed: No such file or directory";
        assert_eq!(
            diagnose(cc),
            vec![Need::Program("x86_64-linux-gnu-g++".into())]
        );
        let pc = "Package libffi was not found in the pkg-config search path.\nPerhaps you should add the directory containing `libffi.pc'";
        assert_eq!(diagnose(pc), vec![Need::PkgConfig("libffi".into())]);
        let sub = "FileNotFoundError: [Errno 2] No such file or directory: 'pkg-config'";
        assert_eq!(diagnose(sub), vec![Need::Program("pkg-config".into())]);
        assert!(diagnose("error: Microsoft Visual C++ 14.0 is required").is_empty());
    }

    #[test]
    fn first_guesses_and_pinned_names() {
        let lock = Lock {
            text: String::new(),
            packages: vec![
                LockedPackage {
                    name: "psycopg2".into(),
                    version: "2.9.9".into(),
                },
                LockedPackage {
                    name: "flask".into(),
                    version: "3.0.0".into(),
                },
            ],
            how: String::new(),
            key: String::new(),
            source_builds: vec![],
            local: Vec::new(),
            vcs: Vec::new(),
            origins: Default::default(),
        };
        assert_eq!(
            initial_build_packages(&lock, &["libfoo-dev".into()]),
            vec!["libfoo-dev", "libpq-dev"]
        );
        assert_eq!(pinned(&lock, &["psycopg2".into()]), vec!["psycopg2==2.9.9"]);
    }

    /// The builder's sitecustomize, on compilers shaped like distutils'
    /// (module and class names as the hook checks them): the stock
    /// compiler and a wrapper that only counts (psycopg2's) compile in
    /// parallel with objects in order; a wrapper that swaps the compiler
    /// per file, an instance's own `spawn` and a subclass's own per-file
    /// step stay serial. The parallel ones compile without debug info
    /// unless the build asks for it.
    #[test]
    fn builder_compiles_an_extensions_files_in_parallel_only_where_safe() {
        let dir = tempfile::tempdir().unwrap();
        let hook = dir.path().join("sitecustomize.py");
        std::fs::write(&hook, SITECUSTOMIZE).unwrap();
        let script = r#"
import json, os, runpy, sys, types
hook = runpy.run_path(sys.argv[1])
cc = types.ModuleType("fake.ccompiler")
exec('''
class CCompiler:
    postargs = []
    def spawn(self, cmd):
        pass
    def compile(self, sources, output_dir=None, macros=None, include_dirs=None, debug=False,
                extra_preargs=None, extra_postargs=None, depends=None):
        CCompiler.postargs.append(extra_postargs)
        for s in sources:
            self._compile(s + ".o", s)
        return [s + ".o" for s in sources]
''', cc.__dict__)
unix = types.ModuleType("fake.unixccompiler")
unix.CCompiler = cc.CCompiler
exec('''
import threading, time
class UnixCCompiler(CCompiler):
    threads = set()
    def _compile(self, obj, src):
        UnixCCompiler.threads.add(threading.get_ident())
        time.sleep(0.05)
''', unix.__dict__)
hook["_patch"](cc)
hook["_patch"](cc)
Unix = unix.UnixCCompiler
out = {"objects": Unix().compile(["a.c", "b.c", "c.c", "d.c"]), "threads": len(Unix.threads),
       "jobs": len(os.sched_getaffinity(0))}
safe = hook["_parallel_safe"]
out["stock"] = safe(Unix())

class psycopg_build_ext:
    built_files = 0
def count_files(compiler):
    orig = compiler._compile
    def _compile(*args, **kwargs):
        rv = orig(*args, **kwargs)
        psycopg_build_ext.built_files += 1
        return rv
    compiler._compile = _compile
    return compiler
out["counting"] = safe(count_files(Unix()))

def customize_for_nvcc(compiler):
    default = compiler.compiler_so = ["gcc"]
    before = compiler._compile
    def _compile(obj, src):
        if src.endswith(".cu"):
            compiler.set_executable("compiler_so", "nvcc")
        before(obj, src)
        compiler.compiler_so = default
    compiler._compile = _compile
    return compiler
out["swapping"] = safe(customize_for_nvcc(Unix()))

spawning = Unix()
spawning.spawn = lambda cmd: None
out["own_spawn"] = safe(spawning)

class Cuda(Unix):
    def _compile(self, obj, src):
        pass
out["subclass"] = safe(Cuda())

# -g0 last, for the compilers run in parallel, unless the build asks for debug info.
cc.CCompiler.postargs = []
Unix().compile(["a.c"])
Unix().compile(["a.c"], "build", None, None, False, None, ["-Wextra"])
Unix().compile(["a.c"], extra_postargs=("-Wall",))
Unix().compile(["a.c"], debug=True)
Unix().compile(["a.c"], "build", None, None, 1)
Cuda().compile(["a.c"])
out["postargs"] = cc.CCompiler.postargs
print(json.dumps(out))
"#;
        let out = std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(&hook)
            .output()
            .expect("python3 runs (test.sh installs it)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            v["objects"],
            serde_json::json!(["a.c.o", "b.c.o", "c.c.o", "d.c.o"])
        );
        if v["jobs"].as_u64().unwrap() > 1 {
            assert!(v["threads"].as_u64().unwrap() > 1, "{v}");
        }
        assert_eq!(v["stock"], true, "{v}");
        assert_eq!(v["counting"], true, "{v}");
        assert_eq!(v["swapping"], false, "{v}");
        assert_eq!(v["own_spawn"], false, "{v}");
        assert_eq!(v["subclass"], false, "{v}");
        assert_eq!(
            v["postargs"],
            serde_json::json!([
                ["-g0"],
                ["-Wextra", "-g0"],
                ["-Wall", "-g0"],
                null,
                null,
                null
            ]),
            "{v}"
        );
    }
}
