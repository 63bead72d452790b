//! Builds where user namespaces are unavailable (a CI container): the same
//! image, digest for digest, whether the build steps ran in bwrap's
//! namespaces, in bwrap as root without a user namespace, or in a chroot.
//! The containers are simulated as the brief says: an outer bwrap that
//! forbids new user namespaces, and for Docker's default also drops
//! CAP_SYS_ADMIN (no mount namespace either).

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

fn build(cache: &Path, wrap: &[&str], project: &Path) -> Value {
    let _ = std::fs::remove_dir_all(cache.join("records/venv-layer"));
    let exe = env!("CARGO_BIN_EXE_slimpack");
    let mut cmd = match wrap.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    cmd.args([
        "build",
        project.to_str().unwrap(),
        "--no-binary",
        "markupsafe",
        "--json",
    ])
    .env("SLIMPACK_CACHE", cache)
    .env("SOURCE_DATE_EPOCH", "1700000000");
    serde_json::from_str(&run_ok(&mut cmd)).unwrap()
}

#[test]
fn builds_without_user_namespaces_make_the_same_image() {
    let cache = private_cache();
    let project = copy_example("flask");
    let outer = [
        "bwrap",
        "--dev-bind",
        "/",
        "/",
        "--unshare-user",
        "--disable-userns",
    ];
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
