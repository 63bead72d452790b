//! Builds where user namespaces are unavailable (a CI container): the same
//! image, digest for digest, whether the build steps ran in bwrap's
//! namespaces, in bwrap as root without a user namespace, or in a chroot.
//! The containers are simulated as the brief says: an outer bwrap that
//! forbids new user namespaces, and for Docker's default also drops
//! CAP_SYS_ADMIN (no mount namespace either), or runs as a user other
//! than root (no sandbox at all: the image's own dynamic loader).

mod common;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// A cache of its own that shares the shared cache's downloads (hard
/// links: nothing is fetched twice) but none of its venv records, so the
/// build steps really run.
fn private_cache() -> tempfile::TempDir {
    let d = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let shared = shared_cache();
    for sub in [
        "debs", "indexes", "oci", "tools", "uv-cache", "contents", "records",
    ] {
        if shared.join(sub).exists() {
            run_ok(
                Command::new("cp")
                    .arg("-al")
                    .arg(shared.join(sub))
                    .arg(d.path()),
            );
        }
    }
    d
}

/// `slimpack build --json` of `project`, its venv built afresh, run under
/// `wrap` (an outer sandbox playing a container).
fn command(cache: &Path, wrap: &[&str], project: &Path, extra: &[&str]) -> Command {
    let _ = std::fs::remove_dir_all(cache.join("records/venv-layer"));
    // The runtime too: its stdlib is compiled in each mode, to the same bytes.
    let _ = std::fs::remove_dir_all(cache.join("records/runtime-layer"));
    let _ = std::fs::remove_dir_all(cache.join("records/stdlib-bytecode"));
    // And compiled afresh: no package kept from an earlier build; build
    // steps run again.
    let _ = std::fs::remove_dir_all(cache.join("records/built-package"));
    let _ = std::fs::remove_dir_all(cache.join("records/app-layer"));
    let exe = env!("CARGO_BIN_EXE_slimpack");
    let mut cmd = match wrap.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    cmd.args(["build", project.to_str().unwrap(), "--json"])
        .args(extra)
        .env("SLIMPACK_CACHE", cache)
        .env("SOURCE_DATE_EPOCH", "1700000000");
    cmd
}

/// A container that forbids new user namespaces, as the brief simulates it.
const CONTAINER: [&str; 6] = [
    "bwrap",
    "--dev-bind",
    "/",
    "/",
    "--unshare-user",
    "--disable-userns",
];

/// A build with a source compile, its venv built afresh.
fn build(cache: &Path, wrap: &[&str], project: &Path) -> Value {
    let mut cmd = command(cache, wrap, project, &["--no-binary", "markupsafe"]);
    serde_json::from_str(&run_ok(&mut cmd)).unwrap()
}

#[test]
fn builds_without_user_namespaces_make_the_same_image() {
    let cache = private_cache();
    let project = copy_example("flask");
    // A build step too: it runs in each sandbox mode, to the same bytes.
    std::fs::write(
        project.path().join("slimpack.toml"),
        "build-steps = [\"python -c \\\"import sys; open('step.txt', 'w').write(sys.prefix)\\\"\"]\n",
    )
    .unwrap();
    let outer = CONTAINER;
    let normal = build(cache.path(), &[], project.path());
    assert_eq!(normal["sandbox"], "namespaces");
    // Root in a container that forbids user namespaces but lets root mount.
    let mut w = outer.to_vec();
    w.push("--");
    let root = build(cache.path(), &w, project.path());
    assert_eq!(root["sandbox"], "root-namespaces");
    // Docker's default: no CAP_SYS_ADMIN, so no namespace at all.
    let mut w = outer.to_vec();
    w.extend(["--cap-drop", "CAP_SYS_ADMIN", "--"]);
    let chroot = build(cache.path(), &w, project.path());
    assert_eq!(chroot["sandbox"], "chroot");
    for r in [&normal, &root, &chroot] {
        let app = r["layers"].as_array().unwrap().last().unwrap();
        assert_eq!(app["cached"], false, "the steps ran: {app}");
        // markupsafe was compiled in the builder each time.
        assert!(
            r["builder"]["compiled"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p.as_str().unwrap().starts_with("markupsafe==")),
            "{}",
            r["builder"]
        );
    }
    assert_eq!(normal["digest"], root["digest"]);
    assert_eq!(normal["digest"], chroot["digest"]);
    // Nothing of the chroot's scratch copies is left behind.
    let left: Vec<_> = std::fs::read_dir(cache.path().join("rootfs"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn without_namespaces_or_root_bytecode_comes_from_the_images_own_loader() {
    let cache = private_cache();
    let project = copy_example("flask");
    // Not root, and no user namespaces: no sandbox at all.
    let mut outer = CONTAINER.to_vec();
    outer.extend(["--uid", "1000", "--gid", "1000", "--"]);
    let wheels = ["--bytecode", "imports"];
    let normal: Value = serde_json::from_str(&run_ok(&mut command(
        cache.path(),
        &[],
        project.path(),
        &wheels,
    )))
    .unwrap();
    let loader: Value = serde_json::from_str(&run_ok(&mut command(
        cache.path(),
        &outer,
        project.path(),
        &wheels,
    )))
    .unwrap();
    assert_eq!(loader["sandbox"], "loader");
    assert_eq!(normal["bytecode"], loader["bytecode"]);
    let stdlib = |r: &Value| {
        r["stripped"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["rule"] == "stdlib-sources")
            .cloned()
            .unwrap()
    };
    assert_eq!(stdlib(&normal), stdlib(&loader));
    assert!(stdlib(&loader)["files"].as_u64().unwrap() > 400);
    assert_eq!(normal["digest"], loader["digest"]);
    // What needs a real sandbox is refused, saying why.
    let out = command(
        cache.path(),
        &outer,
        project.path(),
        &["--no-binary", "markupsafe"],
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("markupsafe") && err.contains("user namespaces") && err.contains("root"),
        "{err}"
    );
}
