//! The Docker path end to end: `slimpack dockerfile` writes the files for
//! examples/flask, buildah (daemonless, chroot isolation, vfs storage) builds
//! them against a python:3.11-slim stand-in like the peer harness's, and the
//! image passes `slimpack run --check`. `./test.sh` installs buildah,
//! debootstrap, umoci, skopeo and docker-registry.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn slimpack(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_slimpack"));
    c.args(args)
        .env("SLIMPACK_CACHE", shared_cache())
        .env_remove("SOURCE_DATE_EPOCH");
    c
}

/// The stand-in for Docker Hub's python:3.11-slim (unreachable here), as
/// the peer harness (`../shared/peer/run-peer.sh`) makes it: Debian
/// bookworm minbase with python3, pip, venv and `python`, and the host's CA
/// bundle so that pip and apt work behind this machine's TLS-intercepting
/// proxy; an OCI layout with the tag `slim`. The harness's copy is used
/// when it exists; otherwise one is made once per target directory.
fn python_base() -> PathBuf {
    debootstrap_base(
        "python-base",
        "python3,python3-pip,python3-venv,python-is-python3,ca-certificates",
    )
}

fn debootstrap_base(name: &str, include: &str) -> PathBuf {
    // The tests of this file run at once and share the base: one makes it
    // while the others wait (two debootstraps in one directory delete each
    // other's downloads).
    static MAKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = MAKING.lock().unwrap_or_else(|e| e.into_inner());
    let peer = Path::new("/var/tmp/peer-cache/base.oci");
    if peer.join("index.json").is_file() {
        return peer.to_path_buf();
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let layout = dir.join("base.oci");
    if layout.join("index.json").is_file() {
        return layout;
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let rootfs = dir.join("rootfs");
    // A mirror mid-sync fails a debootstrap now and then (an index whose
    // hash is not the Release's): a second and third try, from scratch.
    let debootstrap = || {
        let _ = std::fs::remove_dir_all(&rootfs);
        Command::new("debootstrap")
            .args([
                "--variant=minbase",
                &format!("--include={include}"),
                "bookworm",
            ])
            .arg(&rootfs)
            .arg("http://deb.debian.org/debian")
            .output()
            .unwrap()
    };
    let mut out = debootstrap();
    for _ in 0..2 {
        if out.status.success() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_secs(5));
        out = debootstrap();
    }
    assert!(
        out.status.success(),
        "debootstrap of {name} failed three times:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for junk in [
        "var/cache/apt/archives",
        "var/lib/apt/lists",
        "usr/share/doc",
        "usr/share/man",
        "usr/share/locale",
        "usr/share/info",
    ] {
        let _ = std::fs::remove_dir_all(rootfs.join(junk));
    }
    std::fs::copy(
        "/etc/ssl/certs/ca-certificates.crt",
        rootfs.join("etc/ssl/certs/ca-certificates.crt"),
    )
    .unwrap();
    let tmp = dir.join("base.oci.tmp");
    let image = format!("{}:slim", tmp.display());
    run_ok(Command::new("umoci").args(["init", "--layout"]).arg(&tmp));
    run_ok(Command::new("umoci").args(["new", "--image", &image]));
    run_ok(
        Command::new("umoci")
            .args(["insert", "--image", &image])
            .arg(&rootfs)
            .arg("/"),
    );
    run_ok(Command::new("umoci").args([
        "config",
        "--image",
        &image,
        "--config.env",
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "--config.cmd",
        "python3",
    ]));
    std::fs::rename(&tmp, &layout).unwrap();
    let _ = std::fs::remove_dir_all(&rootfs);
    layout
}

/// An image holding only /uv (as ghcr.io/astral-sh/uv does), from the uv
/// slimpack itself fetched into the cache.
fn uv_image(work: &Path) -> (PathBuf, String) {
    let tools = shared_cache().join("tools");
    let dir = std::fs::read_dir(&tools)
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().starts_with("uv-"))
        .expect("slimpack fetched uv into the cache");
    let version = dir.file_name().to_string_lossy()[3..].to_string();
    let layout = work.join("uv.oci");
    let image = format!("{}:{version}", layout.display());
    run_ok(
        Command::new("umoci")
            .args(["init", "--layout"])
            .arg(&layout),
    );
    run_ok(Command::new("umoci").args(["new", "--image", &image]));
    run_ok(
        Command::new("umoci")
            .args(["insert", "--image", &image])
            .arg(dir.path().join("uv"))
            .arg("/uv"),
    );
    (layout, version)
}

fn skopeo_copy(from: &str, to: &str) {
    run_ok(Command::new("skopeo").args(["copy", "-q", "--dest-tls-verify=false", from, to]));
}

#[test]
fn emitted_dockerfile_builds_with_buildah_and_passes_the_contract_check() {
    let app = copy_example("flask");
    let out = run_ok(slimpack(&["dockerfile", "--force"]).arg(app.path()));
    assert!(out.contains("Dockerfile"), "{out}");
    for f in ["Dockerfile", ".dockerignore", "cloudbuild.yaml"] {
        assert!(app.path().join(f).is_file(), "{f} was not written");
    }
    // A file that exists and would change is not replaced without asking,
    // and with no terminal to ask on, nothing is written.
    std::fs::write(app.path().join("Dockerfile"), "FROM mine:1\n").unwrap();
    let refused = slimpack(&["dockerfile"])
        .arg(app.path())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("Dockerfile") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(app.path().join("Dockerfile")).unwrap(),
        "FROM mine:1\n"
    );
    run_ok(slimpack(&["dockerfile", "--force"]).arg(app.path()));
    // The emitted file lints clean: not even an info finding.
    run_ok(slimpack(&["lint", "--fail-level", "info"]).arg(app.path().join("Dockerfile")));

    let work = tempfile::tempdir().unwrap();
    let registry = Registry::start(None);
    let host = registry.host();
    let base = python_base();
    skopeo_copy(
        &format!("oci:{}:slim", base.display()),
        &format!("docker://{host}/library/python:3.11-slim"),
    );
    let (uv, version) = uv_image(work.path());
    skopeo_copy(
        &format!("oci:{}:{version}", uv.display()),
        &format!("docker://{host}/astral-sh/uv:{version}"),
    );
    let conf = work.path().join("registries.conf");
    std::fs::write(
        &conf,
        format!("[[registry]]\nlocation = \"{host}\"\ninsecure = true\n"),
    )
    .unwrap();
    let buildah = |args: &[&str]| buildah_in(work.path(), &conf, args);
    // The proxy's CA goes in as a build secret, never into a layer.
    run_ok(
        buildah(&[
            "bud",
            "-q",
            "--tls-verify=false",
            "--secret",
            "id=ca,src=/etc/ssl/certs/ca-certificates.crt",
            "--build-arg",
            &format!("PYTHON_IMAGE={host}/library/python:3.11-slim"),
            "--build-arg",
            &format!("UV_IMAGE={host}/astral-sh/uv:{version}"),
            "-t",
            "emitted-flask",
        ])
        .arg(app.path()),
    );
    let layout = work.path().join("emitted.oci");
    run_ok(
        buildah(&["push", "-q", "emitted-flask"]).arg(format!("oci:{}:latest", layout.display())),
    );
    let image = format!("oci:{}:latest", layout.display());

    let config: serde_json::Value = serde_json::from_str(&run_ok(
        Command::new("skopeo").args(["inspect", "--config", &image]),
    ))
    .unwrap();
    assert_eq!(config["config"]["User"], "65532:65532", "{config}");
    assert_eq!(
        config["config"]["ExposedPorts"]["8080/tcp"],
        serde_json::json!({})
    );

    let check = run_ok(&mut slimpack(&["run", "--check", &image]));
    assert!(check.contains("pass request"), "{check}");
    assert!(check.contains("pass SIGTERM"), "{check}");
    // What the builder needed stays there; the proxy's CA was never copied.
    let inside = run_ok(&mut slimpack(&[
        "run",
        &image,
        "--",
        "/bin/sh",
        "-c",
        "command -v uv || echo no-uv; ls /run/secrets 2>/dev/null || echo no-secrets; ls /app",
    ]));
    assert!(inside.contains("no-uv"), "{inside}");
    assert!(inside.contains("no-secrets"), "{inside}");
    assert!(inside.contains("main.py"), "{inside}");
    assert!(
        !inside.contains("Dockerfile"),
        ".dockerignore keeps the build files out: {inside}"
    );
}

/// buildah with its own storage under `work`, trusting `conf`'s registries.
fn buildah_in(work: &Path, conf: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("buildah");
    c.arg("--root")
        .arg(work.join("storage"))
        .arg("--runroot")
        .arg(work.join("run"))
        .arg("--registries-conf")
        .arg(conf)
        .args(args)
        .env("STORAGE_DRIVER", "vfs")
        .env("BUILDAH_ISOLATION", "chroot");
    c
}

/// The seed's own Dockerfile for Flask (tests/fixtures/peer-seed000-flask,
/// as the peer harness builds it) against slimpack's image of
/// examples/flask, the same app: `inspect --diff` lists the peer's extra
/// bytes by category, and its table fits 80 columns.
#[test]
fn inspect_diff_shows_the_peers_extra_bytes_by_category() {
    let work = tempfile::tempdir().unwrap();
    let registry = Registry::start(None);
    let host = registry.host();
    skopeo_copy(
        &format!("oci:{}:slim", python_base().display()),
        &format!("docker://{host}/library/python:3.11-slim"),
    );
    let conf = work.path().join("registries.conf");
    std::fs::write(
        &conf,
        format!("[[registry]]\nlocation = \"{host}\"\ninsecure = true\n"),
    )
    .unwrap();
    let ctx = work.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    let fixture = workspace().join("crates/slimpack/tests/fixtures/peer-seed000-flask");
    for f in ["Dockerfile", "main.py", "requirements.txt"] {
        let text = std::fs::read_to_string(fixture.join(f)).unwrap();
        let text = text.replace("PEER_BASE", &format!("{host}/library/python:3.11-slim"));
        std::fs::write(ctx.join(f), text).unwrap();
    }
    run_ok(
        buildah_in(
            work.path(),
            &conf,
            &["bud", "-q", "--tls-verify=false", "-t", "peer-flask"],
        )
        .arg(&ctx),
    );
    let peer = work.path().join("peer.oci");
    run_ok(
        buildah_in(work.path(), &conf, &["push", "-q", "peer-flask"])
            .arg(format!("oci:{}:latest", peer.display())),
    );
    let peer = format!("oci:{}:latest", peer.display());

    let app = copy_example("flask");
    let ours = format!("oci:{}", work.path().join("ours.oci").display());
    run_ok(slimpack(&["build", "-o", &ours]).arg(app.path()));

    let diff: serde_json::Value = serde_json::from_str(&run_ok(&mut slimpack(&[
        "inspect", &peer, "--diff", &ours, "--json",
    ])))
    .unwrap();
    let group = |n: &str| {
        diff["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == n)
            .cloned()
            .unwrap_or_else(|| panic!("no {n} in {diff}"))
    };
    let bytes = |g: &serde_json::Value, side: &str| g[side].as_u64().unwrap();
    // The peer's leftovers: pip and setuptools in its venv, which ours has not.
    let left = group("leftovers");
    assert!(
        bytes(&left, "left") > 1_000_000 && bytes(&left, "right") == 0,
        "{left}"
    );
    let pip = left["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "pip and setuptools");
    assert!(
        pip.is_some_and(|p| p["left"].as_u64().unwrap() > 1_000_000),
        "{left}"
    );
    // A fuller Debian (curl, perl, apt, …) and the whole stdlib.
    for g in ["system packages", "interpreter and stdlib"] {
        let g = group(g);
        assert!(bytes(&g, "left") > bytes(&g, "right"), "{g}");
    }
    let extra = group("system packages")["items"]
        .as_array()
        .unwrap()
        .clone();
    for only_peer in ["curl", "apt", "perl-base"] {
        assert!(
            extra
                .iter()
                .any(|i| i["name"] == only_peer && i["right"] == 0),
            "{only_peer} not listed as the peer's: {extra:?}"
        );
    }
    assert!(diff["left_bytes"].as_u64().unwrap() > 3 * diff["right_bytes"].as_u64().unwrap());

    // For people: every line within 80 columns, no color off a terminal.
    for args in [
        vec!["inspect", &peer, "--diff", &ours],
        vec!["inspect", &peer],
    ] {
        let text = run_ok(&mut slimpack(&args));
        assert!(!text.contains('\x1b'));
        for line in text.lines() {
            assert!(
                line.chars().count() <= 80,
                "{} columns: {line}",
                line.chars().count()
            );
        }
    }
}
