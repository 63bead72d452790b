//! End to end: real builds of the examples (Debian archive and PyPI over the
//! network), checked by independent tools (skopeo, umoci, dpkg-query) and
//! run under bwrap for a real HTTP request. One shared cache keeps them fast;
//! `./test.sh` installs the tools they need.

mod common;
use common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn require(tool: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{tool} is not installed: run ./test.sh, which installs what the tests need"
    );
}

fn slimpack(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_slimpack"))
        .args(args)
        .env("SLIMPACK_CACHE", cache)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap()
}

fn build_json(dir: &Path, extra: &[&str], cache: &Path) -> Value {
    let mut args = vec!["build", dir.to_str().unwrap(), "--json"];
    args.extend_from_slice(extra);
    let out = slimpack(&args, cache);
    assert!(
        out.status.success(),
        "build of {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn layer_digests(report: &Value) -> Vec<String> {
    report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

/// The image config of the single image in an OCI layout.
fn image_config(layout: &Path) -> Value {
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    serde_json::from_slice(
        &std::fs::read(blob(manifest["config"]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap()
}

fn unpack(layout: &Path, dest: &Path) -> PathBuf {
    run_ok(
        Command::new("umoci")
            .args(["unpack", "--rootless", "--image"])
            .arg(format!("{}:latest", layout.display()))
            .arg(dest),
    );
    dest.join("rootfs")
}

fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, buf))
}

/// Runs `code` with the venv's interpreter in the image (its files only,
/// as its user) and returns its output; it must succeed.
fn python_in(rootfs: &Path, code: &str) -> String {
    let out = Command::new("bwrap")
        .arg("--ro-bind")
        .arg(rootfs)
        .arg("/")
        .args(["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"])
        .args([
            "--unshare-all",
            "--die-with-parent",
            "--uid",
            "65532",
            "--gid",
            "65532",
        ])
        .args(["--clearenv", "--chdir", "/app", "--"])
        .args(["/opt/venv/bin/python", "-c", code])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    text
}

/// Runs the image's command as its user under bwrap, with only the image's
/// files, and GETs `path` once it listens.
fn serve_and_get(rootfs: &Path, config: &Value, path: &str) -> (u16, String) {
    let c = &config["config"];
    let user = c["User"].as_str().unwrap();
    let uid = user.split(':').next().unwrap();
    assert_eq!(uid, "65532", "the image must run as the non-root user");
    let port = free_port();
    let mut cmd = Command::new("bwrap");
    cmd.arg("--ro-bind").arg(rootfs).arg("/");
    cmd.args([
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--tmpfs",
        "/tmp",
        "--unshare-user",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--die-with-parent",
        "--uid",
        uid,
        "--gid",
        uid,
        "--clearenv",
    ]);
    cmd.args(["--chdir", c["WorkingDir"].as_str().unwrap()]);
    for e in c["Env"].as_array().unwrap() {
        let (k, v) = e.as_str().unwrap().split_once('=').unwrap();
        let v = if k == "PORT" {
            port.to_string()
        } else {
            v.to_string()
        };
        cmd.args(["--setenv", k, &v]);
    }
    cmd.arg("--");
    for a in c["Cmd"].as_array().unwrap() {
        cmd.arg(a.as_str().unwrap());
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut result = None;
    while start.elapsed() < Duration::from_secs(30) {
        if let Some(r) = http_get(port, path) {
            result = Some(r);
            break;
        }
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    result.unwrap_or_else(|| {
        panic!(
            "the app never answered on port {port}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// No compiler, header, pip, package manager or shell in the image.
fn assert_slim(rootfs: &Path) {
    let mut bad = Vec::new();
    for e in walkdir::WalkDir::new(rootfs)
        .follow_links(false)
        .into_iter()
        .filter_map(|e| e.ok())
    {
        let name = e.file_name().to_string_lossy().into_owned();
        let rel = e
            .path()
            .strip_prefix(rootfs)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let is_bin_dir = rel.starts_with("usr/bin/")
            || rel.starts_with("usr/sbin/")
            || rel.starts_with("opt/venv/bin/");
        if name.ends_with(".h")
            || name.starts_with("gcc")
            || name == "cc"
            || (is_bin_dir
                && matches!(
                    name.as_str(),
                    "pip" | "pip3" | "apt" | "apt-get" | "dpkg" | "sh" | "bash" | "dash"
                ))
            || (rel.contains("site-packages/pip") && e.file_type().is_dir())
        {
            bad.push(rel);
        }
    }
    assert!(bad.is_empty(), "the image holds what it must not: {bad:?}");
}

#[test]
fn flask_example_builds_runs_reproduces_and_rebuilds_one_layer() {
    for t in ["bwrap", "skopeo", "umoci", "dpkg-query"] {
        require(t);
    }
    let cache = shared_cache();
    let src = copy_example("flask");
    // Secrets in the source must stay out of the image.
    std::fs::write(
        src.path().join(".env"),
        "DATABASE_URL=postgres://u:secret@db/x\n",
    )
    .unwrap();
    std::fs::write(
        src.path().join("id_rsa"),
        "-----BEGIN OPENSSH PRIVATE KEY-----\n",
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let layout = out.path().join("flask.oci");
    let archive = out.path().join("flask.tar");
    let first = build_json(
        src.path(),
        &[
            "-o",
            &format!("oci:{}", layout.display()),
            "-o",
            &format!("docker-archive:{}", archive.display()),
        ],
        &cache,
    );
    let digest = first["digest"].as_str().unwrap().to_string();
    // MarkupSafe's wheel ships its extension with debug information; the
    // image does not (and the app, which loads it, still serves below).
    let debug = first["stripped"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["rule"] == "debug");
    assert!(
        debug.is_some_and(|d| d["files"].as_u64().unwrap() >= 1),
        "{}",
        first["stripped"]
    );
    // The app names flask: what of it the dependencies' trace did not
    // import gets bytecode in a layer of its own.
    let names: Vec<&str> = first["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["runtime", "venv", "bytecode", "app"], "{first}");
    assert_eq!(
        first["named_bytecode"]["packages"],
        serde_json::json!(["flask"])
    );
    let warnings = first["warnings"].to_string();
    assert!(
        warnings.contains(".env") && warnings.contains("id_rsa"),
        "{warnings}"
    );
    assert_eq!(
        first["python"].as_str().unwrap().get(..5),
        Some("3.11."),
        "flask pins Python 3.11 (.python-version)"
    );

    // Independent tools accept both outputs, and agree on the digest.
    let inspect: Value = serde_json::from_str(&run_ok(
        Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci:{}", layout.display())),
    ))
    .unwrap();
    assert_eq!(inspect["Digest"], digest.as_str());
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 4);
    let from_archive: Value = serde_json::from_str(&run_ok(
        Command::new("skopeo")
            .arg("inspect")
            .arg(format!("docker-archive:{}", archive.display())),
    ))
    .unwrap();
    assert_eq!(from_archive["Layers"].as_array().unwrap().len(), 4);
    // The docker-archive runs too (its layers are imported, not re-read from the layout).
    let (ok, report) = run_check_ref(
        &format!("docker-archive:{}", archive.display()),
        &["--probe", "/health"],
    );
    assert!(ok, "{report}");

    let unpacked = tempfile::tempdir().unwrap();
    let rootfs = unpack(&layout, &unpacked.path().join("b"));
    assert_slim(&rootfs);
    assert!(!rootfs.join("app/.env").exists() && !rootfs.join("app/id_rsa").exists());
    assert!(rootfs.join("app/main.py").is_file());
    let pkgs = run_ok(
        Command::new("dpkg-query")
            .arg(format!(
                "--admindir={}",
                rootfs.join("var/lib/dpkg").display()
            ))
            .args(["-W", "-f", "${Package} ${Status}\\n"]),
    );
    assert!(
        pkgs.contains("python3.11-minimal install ok installed"),
        "{pkgs}"
    );
    assert!(pkgs.contains("libc6 install ok installed"), "{pkgs}");
    for banned in ["perl-base ", "dpkg ", "bash ", "debconf "] {
        assert!(!pkgs.contains(banned), "{banned} must stay out:\n{pkgs}");
    }
    // The stdlib ships as bytecode only, each module's where its source was.
    let stdlib = rootfs.join("usr/lib/python3.11");
    let json_pyc = stdlib.join("json/__init__.pyc");
    assert!(json_pyc.is_file() && !stdlib.join("json/__init__.py").exists());
    assert!(!stdlib.join("json/__pycache__").exists());
    let pyc = std::fs::read(&json_pyc).unwrap();
    assert_eq!(
        u32::from_le_bytes(pyc[4..8].try_into().unwrap()),
        0b01,
        "unchecked-hash pyc (flags=1)"
    );
    // The venv's bytecode is what py_compile writes for each module
    // (unchecked-hash, no positions, the build's hash seed).
    let same = python_in(
        &rootfs,
        "import importlib.util, subprocess, sys\n\
         site = '/opt/venv/lib/python3.11/site-packages/'\n\
         for s in [site + 'flask/app.py', site + 'werkzeug/routing/map.py']:\n    \
             subprocess.run([sys.executable, '-X', 'no_debug_ranges', '-c', 'import py_compile, sys; py_compile.compile(sys.argv[1], cfile=\"/tmp/x.pyc\", dfile=sys.argv[1], doraise=True, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)', s], check=True, env={'PYTHONHASHSEED': '0'})\n    \
             print(s, open(importlib.util.cache_from_source(s), 'rb').read() == open('/tmp/x.pyc', 'rb').read())\n",
    );
    assert!(
        same.matches(" True").count() == 2 && !same.contains("False"),
        "{same}"
    );
    // Every module stays importable: what the app never imported, each
    // extension module (so no library it links was left out), a link to a
    // source (Debian's `_sysconfigdata`), and a traceback names the line.
    let imported = python_in(
        &rootfs,
        "import importlib, os, sys, traceback\n\
         d = '/usr/lib/python3.11/lib-dynload'\n\
         for f in sorted(os.listdir(d)): importlib.import_module(f.split('.')[0])\n\
         import email.mime.text, sqlite3, sysconfig, zoneinfo, ctypes, lzma, uuid\n\
         assert sysconfig.get_config_var('EXT_SUFFIX')\n\
         zoneinfo.ZoneInfo('Europe/Paris')\n\
         try:\n    import json; json.loads('{')\n\
         except ValueError: traceback.print_exc(file=sys.stdout)\n",
    );
    assert!(
        imported.contains("File \"/usr/lib/python3.11/json/decoder.py\", line"),
        "{imported}"
    );

    let config = image_config(&layout);
    assert_eq!(config["config"]["WorkingDir"], "/app");
    let env = config["config"]["Env"].to_string();
    for e in [
        "PATH=/opt/venv/bin",
        "PYTHONUNBUFFERED=1",
        "PYTHONDONTWRITEBYTECODE=1",
        "PORT=8080",
    ] {
        assert!(env.contains(e), "{e} missing from {env}");
    }
    let (code, body) = serve_and_get(&rootfs, &config, "/health");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("healthy"));

    // Same inputs from another copy, other mtimes, an empty cache: same digest.
    let again = copy_example("flask");
    std::fs::write(again.path().join(".env"), "OTHER=1\n").unwrap();
    run_ok(
        Command::new("touch")
            .args(["-d", "2001-02-03 04:05:06"])
            .arg(again.path().join("main.py"))
            .arg(again.path().join("requirements.txt")),
    );
    let fresh_cache = tempfile::tempdir().unwrap();
    let second = build_json(
        again.path(),
        &[
            "-o",
            &format!("oci:{}", out.path().join("again.oci").display()),
        ],
        fresh_cache.path(),
    );
    assert_eq!(
        second["digest"].as_str().unwrap(),
        digest,
        "two builds of the same inputs must give the same digest"
    );

    // A one-line edit rebuilds only the app layer.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(src.path().join("main.py"))
        .unwrap();
    // New to the shared cache, which outlives test runs.
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    writeln!(f, "# an edit {stamp} {}", std::process::id()).unwrap();
    let edited = build_json(
        src.path(),
        &["-o", &format!("oci:{}", layout.display())],
        &cache,
    );
    let (a, b) = (layer_digests(&first), layer_digests(&edited));
    assert_eq!(a[0], b[0], "runtime layer unchanged");
    assert_eq!(a[1], b[1], "venv layer unchanged");
    assert_eq!(a[2], b[2], "bytecode layer unchanged");
    assert_ne!(a[3], b[3], "app layer changed");
    assert_ne!(edited["digest"], first["digest"]);
    let cached: Vec<bool> = edited["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["cached"].as_bool().unwrap())
        .collect();
    assert_eq!(
        cached,
        vec![true, true, true, false],
        "only the app layer is rebuilt: {edited}"
    );

    // Code that starts using another package of the venv: the venv stays,
    // the bytecode layer now covers that package too (werkzeug.debug is
    // nothing flask imports by itself).
    writeln!(f, "import werkzeug.debug  # {stamp}").unwrap();
    let named = build_json(
        src.path(),
        &["-o", &format!("oci:{}", layout.display())],
        &cache,
    );
    let c = layer_digests(&named);
    assert_eq!(c[1], a[1], "venv layer unchanged");
    assert_ne!(c[2], a[2], "bytecode layer extended");
    assert_eq!(named["layers"][1]["cached"], true);
    assert_eq!(
        named["named_bytecode"]["packages"],
        serde_json::json!(["flask", "werkzeug"])
    );
    assert!(
        named["named_bytecode"]["files"].as_u64() > first["named_bytecode"]["files"].as_u64(),
        "{named}"
    );
    // The plan shows the layer, once the venv it depends on is known.
    let out = slimpack(&["build", src.path().to_str().unwrap(), "--plan"], &cache);
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let layers = plan["layers"].as_array().unwrap();
    let names: Vec<&str> = layers.iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["runtime", "venv", "bytecode", "app"], "{plan}");
    assert!(layers[2]["contents"]
        .as_str()
        .unwrap()
        .contains("flask, werkzeug"));
}

#[test]
fn fastapi_and_django_examples_run() {
    for t in ["bwrap", "umoci"] {
        require(t);
    }
    let cache = shared_cache();
    for (example, path, expect) in [
        ("fastapi", "/health", "healthy"),
        ("django-poetry", "/", "Hello from Django"),
    ] {
        let src = copy_example(example);
        let out = tempfile::tempdir().unwrap();
        let layout = out.path().join("img.oci");
        let report = build_json(
            src.path(),
            &["-o", &format!("oci:{}", layout.display())],
            &cache,
        );
        assert!(
            report["python"].as_str().unwrap().starts_with("3.13."),
            "default base is trixie"
        );
        let rootfs = unpack(&layout, &out.path().join("u"));
        assert_slim(&rootfs);
        let (code, body) = serve_and_get(&rootfs, &image_config(&layout), path);
        assert_eq!(code, 200, "{example}: {body}");
        assert!(body.contains(expect), "{example}: {body}");
    }
}

#[test]
fn dependency_groups_and_plan() {
    let cache = shared_cache();
    let src = copy_example("django-poetry");
    let out = slimpack(
        &[
            "build",
            src.path().to_str().unwrap(),
            "--plan",
            "--with",
            "dev",
        ],
        &cache,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = plan["dependencies"]["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"django") && names.contains(&"pytest"),
        "{names:?}"
    );
    assert!(
        plan["project"]["locked"].as_bool().unwrap(),
        "poetry.lock makes it locked"
    );
    assert!(plan["base"]["packages"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "libpython3.13-stdlib"));
    assert_eq!(
        plan["start"]["argv"].as_array().unwrap().last().unwrap(),
        "blog.wsgi:application"
    );
    assert!(plan["dependencies"]["lock"]
        .as_str()
        .unwrap()
        .contains("--hash=sha256:"));
    assert!(!src.path().join("target").exists(), "--plan builds nothing");
    assert!(
        !Path::new("target/slimpack/blog.oci").exists(),
        "--plan writes no image"
    );
    // Without the group, pytest stays out; the dependency pins come from poetry.lock.
    let out = slimpack(&["build", src.path().to_str().unwrap(), "--plan"], &cache);
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let pkgs = plan["dependencies"]["packages"].as_array().unwrap();
    assert!(!pkgs.iter().any(|p| p["name"] == "pytest"));
    // Every strip rule is listed; one turned off is not, and the venv is
    // another (its key changes).
    let rules = |plan: &Value| -> Vec<String> {
        plan["python"]["strip"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().split(':').next().unwrap().to_string())
            .collect()
    };
    let all = [
        "debug",
        "tests",
        "stubs",
        "stdlib-sources",
        "libraries",
        "positions",
    ];
    assert_eq!(rules(&plan), all, "{plan}");
    let out = slimpack(
        &[
            "build",
            src.path().to_str().unwrap(),
            "--plan",
            "--no-strip",
            "tests",
        ],
        &cache,
    );
    let kept: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        rules(&kept),
        ["debug", "stubs", "stdlib-sources", "libraries", "positions"]
    );
    assert_ne!(kept["layers"][1]["key"], plan["layers"][1]["key"]);
    let lock = std::fs::read_to_string(src.path().join("poetry.lock")).unwrap();
    let django = pkgs.iter().find(|p| p["name"] == "django").unwrap()["version"]
        .as_str()
        .unwrap();
    assert!(
        lock.contains(&format!("name = \"django\"\nversion = \"{django}\"")),
        "django {django} must be the locked version"
    );
}

fn assert_fails(dir: &Path, extra: &[&str], needles: &[&str]) {
    let out_dir = tempfile::tempdir().unwrap();
    let target = out_dir.path().join("img.oci");
    let mut args = vec!["build", dir.to_str().unwrap(), "-o"];
    let o = format!("oci:{}", target.display());
    args.push(&o);
    args.extend_from_slice(extra);
    let out = slimpack(&args, &shared_cache());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure for {args:?}");
    for n in needles {
        assert!(
            stderr.contains(n),
            "error for {args:?} should mention {n:?}:\n{stderr}"
        );
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!target.exists(), "a failed build must leave no output");
    let leftovers: Vec<_> = std::fs::read_dir(out_dir.path()).unwrap().collect();
    assert!(
        leftovers.is_empty(),
        "no temporary files left: {leftovers:?}"
    );
}

#[test]
fn bad_input_fails_clearly_and_writes_nothing() {
    let empty = tempfile::tempdir().unwrap();
    assert_fails(empty.path(), &[], &["no Python project found"]);

    let bad_req = copy_example("flask");
    std::fs::write(
        bad_req.path().join("requirements.txt"),
        "flask==3.0.0\ngunicorn==>21\n",
    )
    .unwrap();
    assert_fails(bad_req.path(), &[], &["requirements.txt:2", "gunicorn"]);

    let bad_toml = tempfile::tempdir().unwrap();
    std::fs::write(
        bad_toml.path().join("pyproject.toml"),
        "[project]\nname = 'x'\ndependencies = ['flask'\n",
    )
    .unwrap();
    assert_fails(bad_toml.path(), &[], &["pyproject.toml:", "TOML"]);

    let ok = copy_example("flask");
    assert_fails(
        ok.path(),
        &["--python", "3.7"],
        &[
            "Python 3.7 was asked for",
            "3.11",
            "3.13",
            "python-build-standalone",
        ],
    );
    assert_fails(ok.path(), &["--locked"], &["--locked", "requirements.txt"]);

    let unknown = copy_example("flask");
    std::fs::write(
        unknown.path().join("requirements.txt"),
        "flask==3.0.0\nslimpack-no-such-package-e2e==1.0\n",
    )
    .unwrap();
    assert_fails(unknown.path(), &[], &["slimpack-no-such-package-e2e"]);

    let no_app = copy_example("flask");
    std::fs::remove_file(no_app.path().join("main.py")).unwrap();
    assert_fails(
        no_app.path(),
        &[],
        &["cannot tell how to start", "[tool.slimpack]"],
    );
}

/// An unreadable project says so, not "no Python project found". Root
/// reads anything, so the build runs as another user (an outer bwrap).
#[test]
fn an_unreadable_project_says_permission_denied() {
    require("bwrap");
    let d = tempfile::tempdir().unwrap();
    let project = d.path().join("p");
    std::fs::create_dir(&project).unwrap();
    std::fs::write(project.join("main.py"), "print(1)\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&project, std::fs::Permissions::from_mode(0o000)).unwrap();
    let out = Command::new("bwrap")
        .args([
            "--dev-bind",
            "/",
            "/",
            "--unshare-user",
            "--uid",
            "1000",
            "--gid",
            "1000",
            "--",
        ])
        .arg(env!("CARGO_BIN_EXE_slimpack"))
        .args(["build", project.to_str().unwrap(), "--plan"])
        .env("SLIMPACK_CACHE", shared_cache())
        .output()
        .unwrap();
    std::fs::set_permissions(&project, std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("Permission denied"), "{err}");
    assert!(!err.contains("no Python project found"), "{err}");
}

#[test]
fn uv_lock_projects_install_exactly_the_lock() {
    let cache = shared_cache();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pyproject.toml"),
        "[project]\nname = 'uvapp'\nversion = '0.1.0'\nrequires-python = '>=3.11'\ndependencies = ['itsdangerous>=2']\n\n[dependency-groups]\ndev = ['iniconfig']\n\n[tool.slimpack]\ncommand = 'python -m http.server $PORT'\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("app.py"), "print('hi')\n").unwrap();
    // slimpack fetches its pinned uv into the cache when none is on PATH;
    // a plan of any project makes sure it is there.
    let warm = slimpack(
        &[
            "build",
            workspace().join("examples/flask").to_str().unwrap(),
            "--plan",
        ],
        &cache,
    );
    assert!(
        warm.status.success(),
        "{}",
        String::from_utf8_lossy(&warm.stderr)
    );
    let uv = std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("uv"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| cache.join("tools/uv-0.13.9/uv"));
    run_ok(
        Command::new(&uv)
            .arg("lock")
            .arg("--quiet")
            .current_dir(dir.path())
            .env("UV_CACHE_DIR", cache.join("uv-cache")),
    );
    let lock = std::fs::read_to_string(dir.path().join("uv.lock")).unwrap();
    let locked_version = lock
        .split("name = \"itsdangerous\"\nversion = \"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();

    let plan = |extra: &[&str]| -> Value {
        let mut args = vec!["build", dir.path().to_str().unwrap(), "--plan"];
        args.extend_from_slice(extra);
        let out = slimpack(&args, &cache);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let p = plan(&[]);
    assert!(p["project"]["locked"].as_bool().unwrap());
    assert!(p["dependencies"]["how"]
        .as_str()
        .unwrap()
        .contains("uv.lock"));
    let pkgs = p["dependencies"]["packages"].as_array().unwrap();
    assert_eq!(pkgs.len(), 1, "only the main dependencies: {pkgs:?}");
    assert_eq!(pkgs[0]["version"].as_str().unwrap(), locked_version);
    assert_eq!(
        p["start"]["argv"][1], "-c",
        "$PORT goes through the launcher"
    );
    let p = plan(&["--with", "dev"]);
    let names: Vec<&str> = p["dependencies"]["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"iniconfig"), "{names:?}");
}

/// Processes whose command line holds `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(marker) && !cmd.contains("--command") {
                found.push(format!("{}: {cmd}", e.file_name().to_string_lossy()));
            }
        }
    }
    found
}

fn assert_no_process(marker: &str) {
    let left = processes_with(marker);
    assert!(left.is_empty(), "processes left behind: {left:?}");
}

fn run_check(layout: &Path, extra: &[&str]) -> (bool, Value) {
    run_check_ref(&format!("oci:{}", layout.display()), extra)
}

fn run_check_ref(image: &str, extra: &[&str]) -> (bool, Value) {
    let port = free_port().to_string();
    let mut args = vec!["run", image, "--check", "--json", "--port", &port];
    args.extend_from_slice(extra);
    let out = slimpack(&args, &shared_cache());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "no report from run: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), report)
}

fn check(report: &Value, name: &str) -> (bool, String) {
    let c = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str().unwrap().starts_with(name))
        .unwrap_or_else(|| panic!("no {name} check in {report}"));
    (
        c["pass"].as_bool().unwrap(),
        c["detail"].as_str().unwrap().to_string(),
    )
}

#[test]
fn examples_pass_the_cloud_run_contract() {
    require("bwrap");
    let cache = shared_cache();
    for (example, probe) in [
        ("flask", "/health"),
        ("fastapi", "/health"),
        ("fastapi-psycopg2", "/health"),
        ("django-poetry", "/"),
    ] {
        let src = copy_example(example);
        let out = tempfile::tempdir().unwrap();
        let layout = out.path().join("img.oci");
        build_json(
            src.path(),
            &["-o", &format!("oci:{}", layout.display())],
            &cache,
        );
        let (ok, report) = run_check(&layout, &["--probe", probe]);
        assert!(ok, "{example}: {report}");
        // test.sh installs slirp4netns and CI runs as root: the container
        // has its own network, published on the test's port.
        assert!(
            report["network"].as_str().unwrap().starts_with("isolated"),
            "{report}"
        );
        assert!(report["time_to_ready_ms"].as_u64().unwrap() > 0);
        for name in ["startup probe", "listens", "request", "SIGTERM"] {
            assert!(check(&report, name).0, "{example}: {name}: {report}");
        }
    }
}

#[test]
fn contract_breakers_are_reported_and_leave_no_process() {
    require("bwrap");
    let cache = shared_cache();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/contract-app");
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let out = tempfile::tempdir().unwrap();
    let image = |mode: &str| -> (PathBuf, String) {
        let marker = format!("slimpack-marker-{mode}-{stamp}");
        let layout = out.path().join(format!("{mode}.oci"));
        build_json(
            &fixture,
            &[
                "--command",
                &format!("python app.py {mode} {marker}"),
                "-o",
                &format!("oci:{}", layout.display()),
            ],
            &cache,
        );
        (layout, marker)
    };

    let (layout, marker) = image("local");
    let (ok, report) = run_check(&layout, &[]);
    assert!(!ok, "binding 127.0.0.1 must fail: {report}");
    let (pass, detail) = check(&report, "listens");
    assert!(!pass && detail.contains("127.0.0.1"), "{detail}");
    assert_no_process(&marker);

    let (layout, marker) = image("ignore");
    let t = Instant::now();
    let (ok, report) = run_check(&layout, &["--grace", "1"]);
    assert!(!ok, "ignoring SIGTERM must fail: {report}");
    let (pass, detail) = check(&report, "SIGTERM");
    assert!(!pass && detail.contains("killed"), "{detail}");
    assert!(check(&report, "startup probe").0 && check(&report, "listens").0);
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "the grace period bounds the run"
    );
    assert_no_process(&marker);

    let (layout, marker) = image("sleep");
    let t = Instant::now();
    let (ok, report) = run_check(&layout, &["--startup-timeout", "2"]);
    assert!(!ok, "never listening must fail: {report}");
    let (pass, detail) = check(&report, "startup probe");
    assert!(!pass && detail.contains("within 2.0s"), "{detail}");
    assert!(report["time_to_ready_ms"].is_null());
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "the startup bound is kept"
    );
    assert_no_process(&marker);

    // The isolated network still reaches out (NAT and DNS through slirp4netns).
    let (layout, _) = image("good");
    let got = run_in_image(
        &layout,
        &[
            "/usr/bin/python3",
            "-c",
            "import urllib.request as u; print(u.urlopen('http://deb.debian.org/debian/dists/bookworm/Release', timeout=20).status)",
        ],
    );
    assert_eq!(got.trim(), "200");

    // A foreground run: SIGTERM to slimpack reaches the app, which exits.
    let (layout, marker) = image("good");
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_slimpack"))
        .args([
            "run",
            &format!("oci:{}", layout.display()),
            "--port",
            &port.to_string(),
        ])
        .env("SLIMPACK_CACHE", &cache)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while http_get(port, "/").is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the app never came up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!processes_with(&marker).is_empty(), "the app runs");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "the app exited cleanly on the forwarded SIGTERM: {status:?}"
    );
    assert_no_process(&marker);
}

fn run_in_image(layout: &Path, argv: &[&str]) -> String {
    let image = format!("oci:{}", layout.display());
    let mut args = vec!["run", image.as_str(), "--"];
    args.extend_from_slice(argv);
    let out = slimpack(&args, &shared_cache());
    assert!(
        out.status.success(),
        "{argv:?} in {image} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn dpkg_packages(rootfs: &Path) -> String {
    run_ok(
        Command::new("dpkg-query")
            .arg(format!(
                "--admindir={}",
                rootfs.join("var/lib/dpkg").display()
            ))
            .args(["-W", "-f", "${Package}\\n"]),
    )
}

/// The SPDX document of the build: valid for an independent validator
/// (the `spdx-tools` package ./test.sh installs), naming libpq5 (from
/// Debian, with its purl and license) and psycopg2 (from PyPI, with the
/// lock's hash), and the same bytes as `inspect --sbom` would not be (the
/// build adds the lock's hashes) but the same packages.
fn assert_sbom_names_libpq_and_psycopg2(sbom: &Path, report: &Value) {
    let validator = std::env::var("SLIMPACK_SPDX_VALIDATOR").unwrap_or_else(|_| {
        workspace()
            .join("target/spdx-tools/bin/pyspdxtools")
            .display()
            .to_string()
    });
    assert!(
        Path::new(&validator).is_file(),
        "{validator} is missing: ./test.sh installs spdx-tools there"
    );
    let v = Command::new(&validator)
        .arg("-i")
        .arg(sbom)
        .output()
        .unwrap();
    assert!(
        v.status.success(),
        "the SBOM is not valid SPDX: {}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );
    let doc: Value = serde_json::from_slice(&std::fs::read(sbom).unwrap()).unwrap();
    assert_eq!(doc["spdxVersion"], "SPDX-2.3");
    let packages = doc["packages"].as_array().unwrap();
    let find = |name: &str| {
        packages
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in the SBOM"))
    };
    let libpq = find("libpq5");
    let purl = libpq["externalRefs"][0]["referenceLocator"]
        .as_str()
        .unwrap();
    assert!(
        purl.starts_with("pkg:deb/debian/libpq5@") && purl.contains("distro=debian-12"),
        "{purl}"
    );
    assert_eq!(libpq["licenseDeclared"], "PostgreSQL", "{libpq}");
    let psycopg2 = find("psycopg2");
    assert_eq!(
        psycopg2["externalRefs"][0]["referenceLocator"],
        "pkg:pypi/psycopg2@2.9.9"
    );
    assert!(
        psycopg2["comment"].as_str().unwrap().contains("SHA-256"),
        "{psycopg2}"
    );
    assert_eq!(find("CPython")["versionInfo"], "3.11.2");
    assert_eq!(packages[0]["versionInfo"], report["digest"]);
    assert_eq!(report["sbom"]["file"], sbom.to_str().unwrap());
    let described = doc["relationships"].as_array().unwrap().iter().any(|r| {
        r["relationshipType"] == "DESCRIBES" && r["relatedSpdxElement"] == "SPDXRef-Image"
    });
    assert!(described);
}

/// `inspect` of the same image: libpq5 among the system packages,
/// psycopg2 among the Python ones, nothing the seeds' recipe would leave.
fn assert_inspect_sees_what_the_build_put(image: &str) {
    let out =
        run_ok(Command::new(env!("CARGO_BIN_EXE_slimpack")).args(["inspect", image, "--json"]));
    let i: Value = serde_json::from_str(&out).unwrap();
    let group = |n: &str| {
        i["categories"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == n)
            .cloned()
            .unwrap_or(Value::Null)
    };
    let has = |g: &Value, item: &str| {
        g["items"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["name"] == item))
    };
    assert!(
        has(&group("system packages"), "libpq5"),
        "{}",
        group("system packages")
    );
    assert!(
        has(&group("python packages"), "psycopg2"),
        "{}",
        group("python packages")
    );
    assert_eq!(group("leftovers"), Value::Null, "{}", group("leftovers"));
    assert_eq!(i["waste"]["overwritten_bytes"], 0);
    assert_eq!(i["waste"]["deleted_bytes"], 0);
    assert_eq!(i["contents"]["interpreter"]["origin"], "debian");
}

/// psycopg2's extension, compiled in the builder, got the interpreter's
/// flags: `-DNDEBUG` leaves its `assert()`s out (with `CFLAGS=-g0` in the
/// builder, setuptools dropped them and compiled at -O0 with assertions).
/// No debug info either way.
fn assert_compiled_like_the_interpreter(rootfs: &Path) {
    use object::{Object, ObjectSymbol};
    let so = walkdir::WalkDir::new(rootfs.join("opt/venv"))
        .into_iter()
        .filter_map(|e| e.ok())
        .find(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("_psycopg.cpython")
        })
        .expect("psycopg2's extension in the venv");
    let bytes = std::fs::read(so.path()).unwrap();
    let elf = object::File::parse(&*bytes).unwrap();
    let imports: Vec<String> = elf
        .dynamic_symbols()
        .filter(|s| s.is_undefined())
        .filter_map(|s| s.name().ok().map(str::to_string))
        .collect();
    assert!(imports.iter().any(|s| s == "PQconnectdb"), "{imports:?}");
    assert!(
        !imports.iter().any(|s| s == "__assert_fail"),
        "compiled without -DNDEBUG: {}",
        so.path().display()
    );
    assert!(elf.section_by_name(".debug_info").is_none());
}

#[test]
fn builder_compiles_source_packages_and_adds_only_the_libraries_they_link() {
    for t in ["bwrap", "umoci", "dpkg-query"] {
        require(t);
    }
    let cache = shared_cache();

    // Seed 003: psycopg2 has no wheel. It is compiled in the builder, and
    // libpq5 (not libpq-dev) joins the runtime because its extension links it.
    let src = copy_example("fastapi-psycopg2");
    let out = tempfile::tempdir().unwrap();
    let layout = out.path().join("img.oci");
    let dest = format!("oci:{}", layout.display());
    let sbom = out.path().join("sbom.spdx.json");
    let report = build_json(
        src.path(),
        &["-o", &dest, "--sbom", sbom.to_str().unwrap()],
        &cache,
    );
    assert_sbom_names_libpq_and_psycopg2(&sbom, &report);
    assert_inspect_sees_what_the_build_put(&dest);
    let compiled = report["builder"]["compiled"].to_string();
    assert!(compiled.contains("psycopg2==2.9.9"), "{report}");
    let additions = report["runtime_additions"].as_array().unwrap();
    let libpq = additions
        .iter()
        .find(|a| a["soname"] == "libpq.so.5")
        .unwrap_or_else(|| panic!("libpq.so.5 not added: {report}"));
    assert_eq!(libpq["package"], "libpq5");
    assert!(libpq["needed_by"]
        .as_str()
        .unwrap()
        .starts_with("psycopg2/_psycopg"));
    let rootfs = unpack(&layout, &out.path().join("u"));
    assert_slim(&rootfs);
    assert_compiled_like_the_interpreter(&rootfs);
    let pkgs = dpkg_packages(&rootfs);
    assert!(pkgs.lines().any(|l| l == "libpq5"), "{pkgs}");
    for banned in [
        "libpq-dev",
        "gcc",
        "libc6-dev",
        "python3.11-dev",
        "perl-base",
        "make",
    ] {
        assert!(
            !pkgs.lines().any(|l| l == banned),
            "{banned} in the runtime:\n{pkgs}"
        );
    }
    // The host's CA bundle (with this machine's proxy CA) was used to fetch
    // and is in no layer.
    if let Ok(host_ca) = std::fs::read("/etc/ssl/certs/ca-certificates.crt") {
        for e in walkdir::WalkDir::new(&rootfs)
            .into_iter()
            .filter_map(|e| e.ok())
        {
            if e.file_type().is_file() && e.metadata().unwrap().len() == host_ca.len() as u64 {
                assert_ne!(
                    std::fs::read(e.path()).unwrap(),
                    host_ca,
                    "{}",
                    e.path().display()
                );
            }
        }
    }
    let v = run_in_image(
        &layout,
        &[
            "python",
            "-c",
            "import psycopg2; print(psycopg2.__libpq_version__)",
        ],
    );
    assert!(v.trim().parse::<u32>().unwrap() >= 150000, "{v}");

    // Built once: the same inputs reuse the venv and compile nothing.
    let again = build_json(src.path(), &["-o", &dest], &cache);
    assert_eq!(again["digest"], report["digest"]);
    assert_eq!(again["layers"][1]["cached"], true, "{again}");

    // A C extension that links nothing beyond libc, forced from source:
    // compiled, and the runtime is exactly the one of the wheel build.
    let flask = copy_example("flask");
    let wheels = build_json(
        flask.path(),
        &["-o", &format!("oci:{}", out.path().join("w.oci").display())],
        &cache,
    );
    let mk = out.path().join("mk.oci");
    let source = build_json(
        flask.path(),
        &[
            "--no-binary",
            "markupsafe",
            "-o",
            &format!("oci:{}", mk.display()),
        ],
        &cache,
    );
    assert!(
        source["builder"]["compiled"]
            .to_string()
            .contains("markupsafe=="),
        "{source}"
    );
    assert_eq!(
        source["runtime_additions"].as_array().unwrap().len(),
        0,
        "{source}"
    );
    assert_eq!(source["layers"][0]["digest"], wheels["layers"][0]["digest"]);
    assert_ne!(source["layers"][1]["digest"], wheels["layers"][1]["digest"]);
    let f = run_in_image(
        &mk,
        &[
            "python",
            "-c",
            "import markupsafe._speedups as s; print(s.__file__)",
        ],
    );
    assert!(
        f.contains("/opt/venv/lib/python3.11/site-packages/markupsafe/_speedups"),
        "{f}"
    );

    // No first guess for psycopg2-binary's source: its build stops on the
    // missing pg_config, the Contents index names libpq-dev, and the retry
    // succeeds.
    let pg = out.path().join("pg.oci");
    let sys = build_json(
        flask.path(),
        &[
            "--no-binary",
            "psycopg2-binary",
            "-o",
            &format!("oci:{}", pg.display()),
        ],
        &cache,
    );
    let added = sys["builder"]["added"].to_string();
    assert!(
        added.contains("libpq-dev") && added.contains("pg_config"),
        "{sys}"
    );
    assert!(
        sys["runtime_additions"].to_string().contains("libpq5"),
        "{sys}"
    );
    let v = run_in_image(
        &pg,
        &[
            "python",
            "-c",
            "import psycopg2; print(psycopg2.__libpq_version__)",
        ],
    );
    assert!(v.trim().parse::<u32>().unwrap() >= 150000, "{v}");
}
