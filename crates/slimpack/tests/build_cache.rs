//! The build cache in a registry (`--cache`), with a real `docker-registry`
//! on loopback and two "machines": two caches that start empty. What must
//! hold: a runner that finds everything in the cache repository gets the
//! same digest as the machine that built it, compiles and downloads
//! nothing but records, and uploads only its own app layer, config and
//! manifest; a poisoned record is refused and rebuilt, same digest.

mod common;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn slimpack(args: &[&str], cache: &Path) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_slimpack"))
        .args(args)
        .arg("--json")
        .env("SLIMPACK_CACHE", cache)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .env_remove("SLIMPACK_CACHE_REPO")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "slimpack {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `build DIR --cache REPO --push TARGET` on the machine whose cache is
/// `machine`.
fn build_pushed(dir: &str, cache_repo: &str, target: &str, machine: &Path) -> Value {
    slimpack(
        &["build", dir, "--cache", cache_repo, "--push", target],
        machine,
    )
}

fn layer<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == name)
        .unwrap_or_else(|| panic!("no {name} layer: {report}"))
}

/// What the push did with each blob: (kind, action).
fn pushed(report: &Value) -> Vec<(String, String)> {
    report["push"]["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["kind"].as_str().unwrap().to_string(),
                b["action"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn dir_bytes(d: &Path) -> u64 {
    walk(d).iter().map(|p| p.metadata().unwrap().len()).sum()
}

fn walk(d: &Path) -> Vec<std::path::PathBuf> {
    let Ok(rd) = std::fs::read_dir(d) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let t = e.file_type().unwrap();
        if t.is_dir() {
            out.extend(walk(&e.path()));
        } else if t.is_file() {
            out.push(e.path());
        }
    }
    out
}

#[test]
fn a_fresh_runner_ships_a_code_edit_from_the_registry_cache() {
    let registry = Registry::start(None);
    let host = registry.host();
    let cache_repo = format!("{host}/cache");
    let machine_a = tempfile::tempdir().unwrap();
    let machine_b = tempfile::tempdir().unwrap();
    let src = copy_example("fastapi-psycopg2");
    let dir = src.path().to_str().unwrap();

    // A: a cold build, pushed; what it made goes to the cache repository.
    let first = build_pushed(
        dir,
        &cache_repo,
        &format!("{host}/app:v1"),
        machine_a.path(),
    );
    assert!(
        first["build_cache"]["published"]["records"]
            .as_u64()
            .unwrap()
            >= 5
    );
    assert!(first["builder"]["compiled"]
        .to_string()
        .contains("psycopg2"));

    // A one-line edit, built by A...
    let main = src.path().join("main.py");
    let mut code = std::fs::read_to_string(&main).unwrap();
    code.push_str("\n# a one-line edit\n");
    std::fs::write(&main, code).unwrap();
    let on_a = build_pushed(
        dir,
        &cache_repo,
        &format!("{host}/app:v2"),
        machine_a.path(),
    );
    // ...and by B, whose cache is empty, to another repository.
    let on_b = build_pushed(
        dir,
        &cache_repo,
        &format!("{host}/app-b:v2"),
        machine_b.path(),
    );
    assert_eq!(on_b["digest"], on_a["digest"]);
    for name in ["runtime", "venv", "bytecode"] {
        assert_eq!(
            layer(&on_b, name)["from_build_cache"],
            true,
            "{name}: {on_b}"
        );
    }
    assert_eq!(layer(&on_b, "app")["cached"], false);
    // B compiled nothing, resolved nothing, fetched no .deb and no layer:
    // records only, at most 1 % of the image.
    // (The report's `builder` says how the venv was made, wherever.)
    assert!(
        on_b["sandbox"].is_null(),
        "nothing ran: {}",
        on_b["sandbox"]
    );
    assert!(on_b["resolved"].is_null(), "{}", on_b["resolved"]);
    assert!(walk(&machine_b.path().join("debs")).is_empty());
    assert!(walk(&machine_b.path().join("rootfs")).is_empty());
    let downloaded = on_b["build_cache"]["downloaded_bytes"].as_u64().unwrap();
    let image = on_b["size"].as_u64().unwrap();
    assert!(
        downloaded * 100 <= image,
        "downloaded {downloaded} of a {image}-byte image"
    );
    // What B made itself (the SBOM it attached, ~90 kB) was not downloaded.
    let made = on_b["sbom"]["bytes"].as_u64().unwrap();
    assert!((dir_bytes(&machine_b.path().join("oci")) - made) * 100 <= image);
    // Uploaded: the config and the app layer; the rest mounted.
    let mut actions = pushed(&on_b);
    actions.sort();
    assert_eq!(
        actions,
        [
            ("config".to_string(), "uploaded".to_string()),
            ("layer".to_string(), "mounted".to_string()),
            ("layer".to_string(), "mounted".to_string()),
            ("layer".to_string(), "mounted".to_string()),
            ("layer".to_string(), "uploaded".to_string()),
        ]
    );
    assert_eq!(
        on_b["push"]["uploaded_bytes"].as_u64().unwrap(),
        layer(&on_b, "app")["size"].as_u64().unwrap()
            + on_b["push"]["blobs"][0]["size"].as_u64().unwrap()
    );
    // B used only what was there: nothing to add.
    assert_eq!(on_b["build_cache"]["published"]["records"], 0);

    // Poison: the venv's tag now holds another record (a wrong key), and
    // the bytecode record's JSON is corrupted in the registry's storage.
    let plan = slimpack(&["build", dir, "--plan"], machine_a.path());
    let key = |name: &str| -> String {
        plan["layers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == name)
            .and_then(|l| l["key"].as_str())
            .unwrap()
            .to_string()
    };
    let url = |tag: &str| format!("http://{host}/v2/cache/manifests/{tag}");
    let accept = "Accept: application/vnd.oci.image.manifest.v1+json";
    let runtime_tags =
        run_ok(Command::new("curl").args(["-sf", &format!("http://{host}/v2/cache/tags/list")]));
    let tags: Value = serde_json::from_str(&runtime_tags).unwrap();
    let other = tags["tags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t.as_str())
        .find(|t| t.starts_with("runtime-layer-"))
        .unwrap()
        .to_string();
    let manifest_text =
        |tag: &str| run_ok(Command::new("curl").args(["-sf", "-H", accept, &url(tag)]));
    let foreign = manifest_text(&other);
    let venv_tag = format!("venv-layer-{}", key("venv"));
    run_ok(Command::new("curl").args([
        "-sf",
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/vnd.oci.image.manifest.v1+json",
        "--data-binary",
        &foreign,
        &url(&venv_tag),
    ]));
    let bytecode_tag = format!("bytecode-layer-{}", key("bytecode"));
    let manifest: Value = serde_json::from_str(&manifest_text(&bytecode_tag)).unwrap();
    let data = registry.blob_path(manifest["layers"][0]["digest"].as_str().unwrap());
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[0] ^= 0x20;
    std::fs::write(&data, bytes).unwrap();

    let machine_c = tempfile::tempdir().unwrap();
    let on_c = build_pushed(
        dir,
        &cache_repo,
        &format!("{host}/app-c:v2"),
        machine_c.path(),
    );
    assert_eq!(on_c["digest"], on_a["digest"]);
    let warnings = on_c["build_cache"]["warnings"].to_string();
    assert!(warnings.contains("was ignored"), "{warnings}");
    assert!(warnings.contains("does not match its digest"), "{warnings}");
    // Rebuilt, not taken: the venv was made here (psycopg2's compiled
    // files, kept by A under their own key, were sound and reused).
    assert_eq!(layer(&on_c, "venv")["from_build_cache"], Value::Null);
    assert!(!on_c["sandbox"].is_null());
    assert!(on_c["builder"]["reused"]
        .to_string()
        .contains("psycopg2==2.9.9"));
    // The foreign manifest under the venv's tag was replaced by the record.
    let now: Value = serde_json::from_str(&manifest_text(&venv_tag)).unwrap();
    assert_eq!(
        now["annotations"]["dev.slimpack.cache.key"],
        key("venv").as_str()
    );

    // The lock changes elsewhere (a new pure-Python dependency): the venv
    // is built again on an empty runner, but psycopg2, unchanged, is not
    // compiled again: its files come from the build cache. The digest is
    // the one an empty machine without the cache compiles to.
    let reqs = src.path().join("requirements.txt");
    let mut text = std::fs::read_to_string(&reqs).unwrap();
    text.push_str("six==1.16.0\n");
    std::fs::write(&reqs, text).unwrap();
    let machine_d = tempfile::tempdir().unwrap();
    let on_d = build_pushed(
        dir,
        &cache_repo,
        &format!("{host}/app-d:v3"),
        machine_d.path(),
    );
    let builder = &on_d["builder"];
    assert!(
        builder["reused"].to_string().contains("psycopg2==2.9.9"),
        "{builder}"
    );
    assert_eq!(builder["compiled"], serde_json::json!([]), "{builder}");
    assert!(walk(&machine_d.path().join("debs")).is_empty());
    let machine_e = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let on_e = slimpack(
        &[
            "build",
            dir,
            "-o",
            &format!("oci:{}", out.path().join("img.oci").display()),
        ],
        machine_e.path(),
    );
    assert!(on_e["builder"]["compiled"].to_string().contains("psycopg2"));
    assert_eq!(on_d["digest"], on_e["digest"]);
}
