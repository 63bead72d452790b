//! python-build-standalone, end to end, against a loopback server playing
//! the release host: the real release files cannot be reached from the test
//! machine, so an archive laid out as theirs is built from the host's Debian
//! interpreter (tests/fixtures/make-standalone-python) and pinned in a table
//! given through SLIMPACK_PYTHON_DOWNLOADS. What is exercised: download,
//! SHA-256 verification, unpacking into /opt/python, the venv and bytecode
//! for that interpreter, and `run --check` of the image; a wrong hash and an
//! interrupted download are refused with nothing cached.

mod common;
use common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

const BUILD: &str = "20990101";

/// The fixture archive and the version of the interpreter in it.
fn fixture() -> &'static (Vec<u8>, String) {
    static F: OnceLock<(Vec<u8>, String)> = OnceLock::new();
    F.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("standalone-python.tar.gz");
        let script = workspace().join("crates/slimpack/tests/fixtures/make-standalone-python");
        let version = run_ok(Command::new(script).arg(&out)).trim().to_string();
        (std::fs::read(&out).unwrap(), version)
    })
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

fn file_name(version: &str) -> String {
    format!("cpython-{version}%2B{BUILD}-x86_64-unknown-linux-gnu-install_only_stripped.tar.gz")
}

/// How the loopback release host answers.
#[derive(Clone, Copy)]
enum Serve {
    Whole,
    /// Announces the whole length, sends half, closes.
    Truncated,
}

/// Serves the fixture at `/{BUILD}/{file}`; counts the requests.
fn release_host(serve: Serve) -> (u16, Arc<AtomicUsize>) {
    let (bytes, version) = fixture().clone();
    serve_release(bytes, file_name(&version), serve)
}

/// Serves `bytes` at `/{BUILD}/{file}`; counts the requests.
fn serve_release(bytes: Vec<u8>, file: String, serve: Serve) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let path = format!("/{BUILD}/{file}");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut req = [0u8; 4096];
            let n = s.read(&mut req).unwrap_or(0);
            let line = String::from_utf8_lossy(&req[..n]).into_owned();
            counted.fetch_add(1, Ordering::SeqCst);
            if !line.starts_with(&format!("GET {path} ")) {
                let _ = s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
                continue;
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                bytes.len()
            );
            let _ = s.write_all(head.as_bytes());
            let body = match serve {
                Serve::Whole => &bytes[..],
                Serve::Truncated => &bytes[..bytes.len() / 2],
            };
            let _ = s.write_all(body);
        }
    });
    (port, hits)
}

/// A table pinning the fixture's version at `sha`.
fn table(sha: &str) -> tempfile::NamedTempFile {
    let (_, version) = fixture();
    let t = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        t.path(),
        format!(
            r#"{{"downloads": [{{"version": "{version}", "build": "{BUILD}", "sha256": "{sha}"}}]}}"#
        ),
    )
    .unwrap();
    t
}

fn slimpack(args: &[&str], table: &Path, port: u16) -> Output {
    Command::new(env!("CARGO_BIN_EXE_slimpack"))
        .args(args)
        .env("SLIMPACK_CACHE", shared_cache())
        .env("SLIMPACK_PYTHON_DOWNLOADS", table)
        .env(
            "SLIMPACK_PYTHON_INSTALL_MIRROR",
            format!("http://127.0.0.1:{port}"),
        )
        .env("SLIMPACK_HTTP_IDLE_TIMEOUT", "5")
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap()
}

/// A build of `project` for `version` that must fail; its stderr.
fn failed_build(project: &Path, version: &str, table: &Path, port: u16) -> String {
    let args = [
        "build",
        project.to_str().unwrap(),
        "--python",
        version,
        "-o",
        "oci:/dev/null/never",
    ];
    let out = slimpack(&args, table, port);
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The image of an OCI layout unpacked by umoci, as anyone would.
fn unpack(layout: &Path, rootfs: &Path) -> PathBuf {
    run_ok(
        Command::new("umoci")
            .args(["raw", "unpack", "--rootless", "--image"])
            .arg(format!("{}:latest", layout.display()))
            .arg(rootfs),
    );
    rootfs.to_path_buf()
}

fn cached_release(sha: &str) -> PathBuf {
    shared_cache().join("python").join(format!("{sha}.tar.gz"))
}

/// Nothing but verified release files in the cache's python/ directory
/// (and the trees a free-threaded build unpacks from one of them).
fn only_verified_files_cached() {
    let Ok(dir) = std::fs::read_dir(shared_cache().join("python")) else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(".tmp") {
            // Another test's verified download, being renamed into place.
            continue;
        }
        if let Some(sha) = name.strip_suffix(".tree") {
            assert!(cached_release(sha).is_file(), "{name} without its release");
            continue;
        }
        let bytes = std::fs::read(e.path()).unwrap();
        assert_eq!(
            name,
            format!("{}.tar.gz", sha256(&bytes)),
            "a file that is not a verified release was left in the cache"
        );
    }
}

#[test]
fn a_standalone_python_is_verified_unpacked_and_runs() {
    let (bytes, version) = fixture();
    let sha = sha256(bytes);
    let (port, _) = release_host(Serve::Whole);
    let t = table(&sha);
    let project = copy_example("flask");
    let out_dir = tempfile::tempdir().unwrap();
    let layout = out_dir.path().join("img.oci");
    let target = format!("oci:{}", layout.display());
    let dir = project.path().to_str().unwrap();
    let python = version.as_str();
    let out = slimpack(
        &["build", dir, "--python", python, "-o", &target, "--json"],
        t.path(),
        port,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(cached_release(&sha).is_file());
    // The plan says where the interpreter came from and what it was checked against.
    let plan = slimpack(
        &["build", dir, "--python", python, "--plan"],
        t.path(),
        port,
    );
    let plan: Value = serde_json::from_slice(&plan.stdout).unwrap();
    let pinned = &plan["base"]["standalone"];
    assert_eq!(pinned["sha256"], sha.as_str());
    assert_eq!(
        pinned["url"],
        format!("http://127.0.0.1:{port}/{BUILD}/{}", file_name(version)).as_str()
    );
    assert_eq!(plan["python"]["interpreter"], "/opt/python/bin/python3.11");
    let why = plan["python"]["chosen_because"].as_str().unwrap();
    assert!(why.contains("python-build-standalone"), "{why}");
    assert!(
        !plan["base"]["roots"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().unwrap().starts_with("python3")),
        "a standalone runtime has no Debian Python: {}",
        plan["base"]["roots"]
    );

    // The image: the release under /opt/python, python3 is it, the app runs.
    let rootfs = unpack(&layout, &out_dir.path().join("rootfs"));
    assert!(rootfs.join("opt/python/bin/python3.11").is_file());
    assert!(!rootfs.join("usr/bin/python3.11").exists());
    assert!(!rootfs.join("opt/python/lib/python3.11/test").exists());
    assert_eq!(
        std::fs::read_link(rootfs.join("usr/bin/python3")).unwrap(),
        Path::new("/opt/python/bin/python3.11")
    );
    let cfg = std::fs::read_to_string(rootfs.join("opt/venv/pyvenv.cfg")).unwrap();
    assert!(cfg.contains("home = /opt/python/bin"), "{cfg}");
    // Its stdlib as bytecode, compiled by that interpreter.
    assert!(rootfs
        .join("opt/python/lib/python3.11/json/__init__.pyc")
        .is_file());
    assert!(!rootfs
        .join("opt/python/lib/python3.11/json/__init__.py")
        .exists());

    let run_port = free_port().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_slimpack"))
        .args(["run", &target, "--check", "--json", "--port", &run_port])
        .env("SLIMPACK_CACHE", shared_cache())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "run --check failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_wrong_hash_is_refused_and_nothing_is_cached() {
    let wrong = "ab".repeat(32);
    let (port, hits) = release_host(Serve::Whole);
    let t = table(&wrong);
    let project = copy_example("flask");
    let (_, version) = fixture();
    let err = failed_build(project.path(), version, t.path(), port);
    assert!(err.contains("SHA-256 is"), "{err}");
    assert!(err.contains(&wrong), "{err}");
    assert!(err.contains("nothing was cached"), "{err}");
    assert!(hits.load(Ordering::SeqCst) >= 1);
    assert!(!cached_release(&wrong).exists());
    only_verified_files_cached();
}

#[test]
fn an_interrupted_download_fails_and_nothing_is_cached() {
    let (bytes, version) = fixture();
    // A table entry of its own, so the verified file of the other test is
    // not what this one finds.
    let mut other = bytes.clone();
    other.extend_from_slice(b"\0");
    let sha = sha256(&other);
    let (port, hits) = release_host(Serve::Truncated);
    let t = table(&sha);
    let project = copy_example("flask");
    let err = failed_build(project.path(), version, t.path(), port);
    assert!(
        err.contains("downloading Python") && err.contains("127.0.0.1"),
        "{err}"
    );
    // Retried like any network fault, then given up.
    assert!(hits.load(Ordering::SeqCst) >= 2, "{err}");
    assert!(!cached_release(&sha).exists());
    only_verified_files_cached();
}

#[test]
fn a_request_nothing_satisfies_fails_before_any_download() {
    let (port, hits) = release_host(Serve::Whole);
    let t = table(&"ab".repeat(32));
    let project = copy_example("flask");
    let dir = project.path().to_str().unwrap();
    let out = slimpack(&["build", dir, "--python", "3.7"], t.path(), port);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Python 3.7 was asked for"), "{err}");
    assert!(err.contains("3.13 (Debian 13 trixie)"), "{err}");
    std::fs::remove_file(project.path().join(".python-version")).unwrap();
    std::fs::write(
        project.path().join("pyproject.toml"),
        "[project]\nname = \"x\"\nversion = \"0\"\nrequires-python = \">=3.20\"\n",
    )
    .unwrap();
    let out = slimpack(&["build", dir], t.path(), port);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pyproject.toml") && err.contains(">=3.20"),
        "{err}"
    );
    assert!(err.contains("python-build-standalone"), "{err}");
    assert_eq!(hits.load(Ordering::SeqCst), 0, "nothing may be downloaded");
}

/// A free-threaded interpreter laid out as a release, and its version:
/// CPython built from source with --disable-gil (once per target
/// directory), since neither the releases nor a Debian package of one can
/// be had here.
fn freethreaded_fixture() -> &'static (Vec<u8>, String) {
    static F: OnceLock<(Vec<u8>, String)> = OnceLock::new();
    F.get_or_init(|| {
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let prefix = tmp.join("freethreaded-python");
        let fixtures = workspace().join("crates/slimpack/tests/fixtures");
        run_ok(Command::new(fixtures.join("make-freethreaded-python")).arg(&prefix));
        let out = tmp.join("standalone-python-freethreaded.tar.gz");
        let version = run_ok(
            Command::new(fixtures.join("make-standalone-python"))
                .arg(&out)
                .env("PYTHON", prefix.join("bin/python3.13t")),
        )
        .trim()
        .to_string();
        (std::fs::read(&out).unwrap(), version)
    })
}

#[test]
fn a_free_threaded_python_gets_free_threaded_wheels_and_runs() {
    let (bytes, version) = freethreaded_fixture().clone();
    let sha = sha256(&bytes);
    let file = format!(
        "cpython-{version}%2B{BUILD}-x86_64-unknown-linux-gnu-freethreaded-install_only_stripped.tar.gz"
    );
    let (port, _) = serve_release(bytes, file, Serve::Whole);
    let t = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        t.path(),
        format!(
            r#"{{"downloads": [{{"version": "{version}", "build": "{BUILD}", "freethreaded": true, "sha256": "{sha}"}}]}}"#
        ),
    )
    .unwrap();
    // markupsafe has cp313t wheels; psycopg2-binary 2.9.10 has none, so the
    // builder compiles it with the free-threaded interpreter's headers.
    let project = copy_example("flask");
    std::fs::remove_file(project.path().join(".python-version")).unwrap();
    std::fs::write(
        project.path().join("requirements.txt"),
        "flask==3.0.0\ngunicorn==21.2.0\npsycopg2-binary==2.9.10\n",
    )
    .unwrap();
    // Named, so that no Contents index is needed (the test mirror's can be
    // inconsistent; the e2e tests cover finding it there).
    std::fs::write(
        project.path().join("slimpack.toml"),
        "build-packages = [\"libpq-dev\"]\n",
    )
    .unwrap();
    let dir = project.path().to_str().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let layout = out_dir.path().join("img.oci");
    let target = format!("oci:{}", layout.display());
    let out = slimpack(
        &["build", dir, "--python", "3.13t", "-o", &target],
        t.path(),
        port,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan = slimpack(
        &["build", dir, "--python", "3.13t", "--plan"],
        t.path(),
        port,
    );
    let plan: Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(plan["python"]["minor"], "3.13t");
    assert_eq!(plan["python"]["freethreaded"], true);
    assert_eq!(plan["python"]["interpreter"], "/opt/python/bin/python3.13t");
    assert_eq!(plan["base"]["standalone"]["freethreaded"], true);
    assert_eq!(plan["base"]["standalone"]["sha256"], sha.as_str());
    let built_from_source = plan["dependencies"]["source_builds"].to_string();
    assert!(
        built_from_source.contains("psycopg2-binary"),
        "{built_from_source}"
    );

    let rootfs = unpack(&layout, &out_dir.path().join("rootfs"));
    let site = rootfs.join("opt/venv/lib/python3.13t/site-packages");
    // Extensions for the free-threaded ABI: a wheel and a source build.
    for so in [
        "markupsafe/_speedups.cpython-313t-x86_64-linux-gnu.so",
        "psycopg2/_psycopg.cpython-313t-x86_64-linux-gnu.so",
    ] {
        assert!(site.join(so).is_file(), "{so} missing");
    }
    assert_eq!(
        std::fs::read_link(rootfs.join("usr/bin/python3")).unwrap(),
        Path::new("/opt/python/bin/python3.13t")
    );
    // Its stdlib ships as bytecode, compiled by the free-threaded interpreter.
    let json = rootfs.join("opt/python/lib/python3.13t/json");
    assert!(json.join("__init__.pyc").is_file() && !json.join("__init__.py").exists());

    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_slimpack"))
            .arg("run")
            .arg(&target)
            .args(args)
            .env("SLIMPACK_CACHE", shared_cache())
            .output()
            .unwrap()
    };
    let out = run(&[
        "--",
        "python",
        "-c",
        "import sys, markupsafe._speedups; print(sys._is_gil_enabled())",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "False",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run_port = free_port().to_string();
    let out = run(&["--check", "--port", &run_port]);
    assert!(
        out.status.success(),
        "run --check failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_refresh_script_writes_a_table_slimpack_reads() {
    let out = tempfile::NamedTempFile::new().unwrap();
    let fixtures = workspace().join("crates/slimpack/tests/fixtures/python-downloads");
    run_ok(
        Command::new(workspace().join("scripts/refresh-python-downloads"))
            .arg(fixtures.join("uv-download-metadata.json"))
            .arg("--out")
            .arg(out.path()),
    );
    let table: Value = serde_json::from_slice(&std::fs::read(out.path()).unwrap()).unwrap();
    let versions: Vec<String> = table["downloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            format!(
                "{}{}",
                d["version"].as_str().unwrap(),
                if d["freethreaded"].as_bool().unwrap() {
                    "t"
                } else {
                    ""
                }
            )
        })
        .collect();
    // Pre-releases, musl, CPU-variant and non-install_only files left out.
    assert_eq!(versions, ["3.14.5t", "3.14.5", "3.10.15"]);
    let project = copy_example("flask");
    let plan = slimpack(
        &[
            "build",
            project.path().to_str().unwrap(),
            "--python",
            "3.10",
            "--plan",
        ],
        out.path(),
        9,
    );
    assert!(
        plan.status.success(),
        "{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    let plan: Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(
        plan["base"]["standalone"]["sha256"],
        "25fb8e23cd3b82b748075a04fd18f3183cc7316c11d6f59eb4b0326843892600"
    );
}
