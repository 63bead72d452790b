//! Registries, against real servers on loopback: Debian's `docker-registry`
//! (the CNCF distribution registry), with and without htpasswd auth, and a
//! fault-injecting TCP proxy in front of it. skopeo checks what we pushed.
//! `./test.sh` installs docker-registry, skopeo and htpasswd.

mod common;
use common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn slimpack_env(args: &[&str], cache: &Path, env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_slimpack"));
    c.args(args)
        .env("SLIMPACK_CACHE", cache)
        .env("DOCKER_CONFIG", "/nonexistent")
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("SOURCE_DATE_EPOCH");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn ok_json(out: Output, what: &str) -> Value {
    assert!(
        out.status.success(),
        "{what} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `slimpack push DIR TARGET --json`, which must succeed; its report.
fn push_json(dir: &str, target: &str, cache: &Path, env: &[(&str, &str)], what: &str) -> Value {
    ok_json(
        slimpack_env(&["push", dir, target, "--json"], cache, env),
        what,
    )
}

fn skopeo_digest(image: &str, extra: &[&str]) -> String {
    let out = Command::new("skopeo")
        .arg("inspect")
        .args(extra)
        .arg(image)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo inspect {image}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["Digest"].as_str().unwrap().to_string()
}

fn blobs_by_action(push: &Value, action: &str) -> Vec<String> {
    push["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["action"] == action)
        .map(|b| b["digest"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn push_skips_what_exists_mounts_across_repositories_and_pulls_back() {
    let reg = Registry::start(None);
    let cache = shared_cache();
    let app = copy_example("flask");
    let dir = app.path().to_str().unwrap();
    std::fs::write(app.path().join("only_in_base.py"), "X = 1\n").unwrap();
    let target = format!("{}/demo/flask:v1", reg.host());

    // First push: everything goes up; skopeo sees the digest we built.
    let r = ok_json(
        slimpack_env(&["build", dir, "--json", "--push", &target], &cache, &[]),
        "build --push",
    );
    let digest = r["digest"].as_str().unwrap().to_string();
    let push = &r["push"];
    assert_eq!(push["digest"], digest.as_str());
    assert_eq!(
        push["reference"],
        format!("{}/demo/flask@{digest}", reg.host()).as_str()
    );
    // runtime, venv, bytecode (of flask, which the app names), app, config
    assert_eq!(blobs_by_action(push, "uploaded").len(), 5, "{push}");
    let total: u64 = r["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["size"].as_u64().unwrap())
        .sum();
    assert!(push["uploaded_bytes"].as_u64().unwrap() > total);
    let tls = ["--tls-verify=false"];
    assert_eq!(skopeo_digest(&format!("docker://{target}"), &tls), digest);
    let copied = tempfile::tempdir().unwrap();
    let layout = copied.path().join("copy");
    run_ok(
        Command::new("skopeo")
            .args(["copy", "--src-tls-verify=false"])
            .arg(format!("docker://{target}"))
            .arg(format!("oci:{}:x", layout.display())),
    );
    assert_eq!(
        skopeo_digest(&format!("oci:{}:x", layout.display()), &[]),
        digest
    );

    // Nothing changed: no blob bytes move.
    let again = push_json(dir, &target, &cache, &[], "second push");
    assert_eq!(again["uploaded_bytes"], 0, "{again}");
    assert_eq!(blobs_by_action(&again, "skipped").len(), 5);

    // A one-line edit: only the app layer and the config go up.
    let main = app.path().join("main.py");
    let mut text = std::fs::read_to_string(&main).unwrap();
    text.push_str("\n# edited\n");
    std::fs::write(&main, text).unwrap();
    let edited = ok_json(
        slimpack_env(&["build", dir, "--json", "--push", &target], &cache, &[]),
        "push after an edit",
    );
    let layers = edited["layers"].as_array().unwrap();
    let app_layer = layers[3]["digest"].as_str().unwrap().to_string();
    assert_eq!(layers[3]["name"], "app");
    let mut uploaded = blobs_by_action(&edited["push"], "uploaded");
    uploaded.sort();
    let config = edited["push"]["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["kind"] == "config")
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let mut expected = vec![app_layer.clone(), config];
    expected.sort();
    assert_eq!(uploaded, expected, "{}", edited["push"]);
    assert!(edited["push"]["uploaded_bytes"].as_u64().unwrap() < 10_000);

    // Same layers to a second repository: mounted, not uploaded.
    let second = format!("{}/other/flask:v1", reg.host());
    let moved = ok_json(
        slimpack_env(
            &["push", dir, &second, "--json", "--tag", "extra"],
            &cache,
            &[],
        ),
        "push to a second repository",
    );
    assert_eq!(moved["uploaded_bytes"], 0, "{moved}");
    assert_eq!(blobs_by_action(&moved, "mounted").len(), 5, "{moved}");
    assert_eq!(moved["tags"], serde_json::json!(["v1", "extra"]));
    let edited_digest = edited["digest"].as_str().unwrap();
    assert_eq!(
        skopeo_digest(&format!("docker://{}/other/flask:extra", reg.host()), &tls),
        edited_digest
    );

    // The pushed image as the base of another build: its layers reused as
    // they are, its /app and venv replaced (opaque whiteouts, not merged),
    // its blobs mounted when the result is pushed to the same registry.
    let next = copy_example("flask");
    // A build step runs on a registry base too, with its interpreter.
    std::fs::write(
        next.path().join("slimpack.toml"),
        "build-steps = [\"python -c \\\"import sys; open('stamp.txt', 'w').write(sys.version[:4])\\\"\"]\n",
    )
    .unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let layout = out_dir.path().join("on-base.oci");
    let on_base = ok_json(
        slimpack_env(
            &[
                "build",
                next.path().to_str().unwrap(),
                "--json",
                "--base",
                &second,
                "-o",
                &format!("oci:{}", layout.display()),
                "--push",
                &format!("{}/built-on/flask:v1", reg.host()),
            ],
            &cache,
            &[],
        ),
        "build on a registry base",
    );
    let base_layers: Vec<&Value> = edited["layers"].as_array().unwrap().iter().collect();
    let new_layers = on_base["layers"].as_array().unwrap();
    assert_eq!(new_layers.len(), 7, "{on_base}");
    for (b, n) in base_layers.iter().zip(new_layers) {
        assert_eq!(
            b["digest"], n["digest"],
            "base layers are reused byte for byte"
        );
        assert_eq!(n["name"], "base");
    }
    assert!(on_base["python"].as_str().unwrap().starts_with("3.11"));
    let mounted = blobs_by_action(&on_base["push"], "mounted");
    for b in &base_layers {
        let d = b["digest"].as_str().unwrap().to_string();
        assert!(
            mounted.contains(&d),
            "base layer {d} should be mounted: {}",
            on_base["push"]
        );
    }
    let unpacked = out_dir.path().join("unpacked");
    run_ok(
        Command::new("umoci")
            .args(["unpack", "--rootless", "--image"])
            .arg(format!("{}:latest", layout.display()))
            .arg(&unpacked),
    );
    let rootfs = unpacked.join("rootfs");
    assert!(rootfs.join("app/main.py").is_file());
    assert_eq!(
        std::fs::read_to_string(rootfs.join("app/stamp.txt")).unwrap(),
        "3.11"
    );
    assert!(
        !rootfs.join("app/only_in_base.py").exists(),
        "the base's /app shows through"
    );
    assert!(rootfs.join("opt/venv/bin/gunicorn").exists());
    let out = slimpack_env(
        &[
            "run",
            layout.to_str().unwrap(),
            "--check",
            "--json",
            "--port",
            &free_port().to_string(),
        ],
        &cache,
        &[],
    );
    ok_json(out, "run --check of the image built on a registry base");
    let out = slimpack_env(
        &[
            "build",
            next.path().to_str().unwrap(),
            "--base",
            &second,
            "--python",
            "3.13",
        ],
        &cache,
        &[],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("3.13") && err.contains("3.11"), "{err}");

    // Pulled into an empty cache and run from the registry reference.
    let fresh = tempfile::tempdir().unwrap();
    let pulled = fresh.path().join("pulled.oci");
    let p = ok_json(
        slimpack_env(
            &[
                "pull",
                &second,
                "--json",
                "-o",
                &format!("oci:{}:v1", pulled.display()),
            ],
            fresh.path(),
            &[],
        ),
        "pull",
    );
    assert_eq!(p["digest"], edited_digest);
    assert!(p["downloaded_bytes"].as_u64().unwrap() > 1_000_000);
    assert_eq!(
        skopeo_digest(&format!("oci:{}:v1", pulled.display()), &[]),
        edited_digest
    );
    let out = slimpack_env(
        &[
            "run",
            &target,
            "--check",
            "--json",
            "--port",
            &free_port().to_string(),
        ],
        fresh.path(),
        &[],
    );
    let report = ok_json(out, "run --check of a registry reference");
    assert!(report["time_to_ready_ms"].as_u64().is_some(), "{report}");

    // A blob the registry serves corrupted is refused and never cached.
    let hex = app_layer.trim_start_matches("sha256:");
    let stored = reg.blob_path(&app_layer);
    let mut bytes = std::fs::read(&stored).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&stored, bytes).unwrap();
    let empty = tempfile::tempdir().unwrap();
    let out = slimpack_env(&["pull", &second], empty.path(), &[]);
    assert!(!out.status.success(), "a corrupted blob must fail the pull");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does not match its digest") && err.contains(hex),
        "{err}"
    );
    let blobs = empty.path().join("oci/blobs/sha256");
    assert!(
        blobs.is_dir(),
        "the pull stored the manifest in {}",
        blobs.display()
    );
    assert!(!blobs.join(hex).exists());

    // A tag that does not exist is a clear error.
    let out = slimpack_env(
        &["pull", &format!("{}/demo/flask:nope", reg.host())],
        fresh.path(),
        &[],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not found") && err.contains("demo/flask"),
        "{err}"
    );
}

#[test]
fn basic_auth_from_config_json_and_credential_helpers_never_prints_secrets() {
    let password = "s3cret-pw-7f1c";
    let reg = Registry::start(Some(("alice", password)));
    let cache = shared_cache();
    let app = copy_example("flask");
    let dir = app.path().to_str().unwrap();
    let b64 = |s: &str| {
        let out = Command::new("base64")
            .arg("-w0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                c.stdin.take().unwrap().write_all(s.as_bytes())?;
                c.wait_with_output()
            })
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let conf = tempfile::tempdir().unwrap();
    let write_conf = |name: &str, json: String| -> String {
        let d = conf.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("config.json"), json).unwrap();
        d.to_str().unwrap().to_string()
    };
    let good = write_conf(
        "good",
        format!(
            r#"{{"auths": {{"{}": {{"auth": "{}"}}}}}}"#,
            reg.host(),
            b64(&format!("alice:{password}"))
        ),
    );
    let bad = write_conf(
        "bad",
        format!(
            r#"{{"auths": {{"{}": {{"auth": "{}"}}}}}}"#,
            reg.host(),
            b64("alice:wrong-pw-0a9b")
        ),
    );
    let target = format!("{}/private/flask:v1", reg.host());

    let r = push_json(
        dir,
        &target,
        &cache,
        &[("DOCKER_CONFIG", &good)],
        "push with config.json credentials",
    );
    let digest = r["digest"].as_str().unwrap().to_string();
    let creds = format!("--creds=alice:{password}");
    assert_eq!(
        skopeo_digest(
            &format!("docker://{target}"),
            &["--tls-verify=false", &creds]
        ),
        digest
    );

    // A credential helper on PATH, named by credHelpers.
    let helper_dir = conf.path().join("bin");
    std::fs::create_dir_all(&helper_dir).unwrap();
    let helper = helper_dir.join("docker-credential-slimtest");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\nread server\necho \"$1 $server\" >> {0}/asked\necho '{{\"ServerURL\":\"'$server'\",\"Username\":\"alice\",\"Secret\":\"{password}\"}}'\n",
            helper_dir.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let helped = write_conf(
        "helper",
        format!(r#"{{"credHelpers": {{"{}": "slimtest"}}}}"#, reg.host()),
    );
    let path = format!(
        "{}:{}",
        helper_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let r = push_json(
        dir,
        &format!("{}/helped/flask:v1", reg.host()),
        &cache,
        &[("DOCKER_CONFIG", &helped), ("PATH", &path)],
        "push with a credential helper",
    );
    assert_eq!(r["digest"], digest.as_str());
    let asked = std::fs::read_to_string(helper_dir.join("asked")).unwrap();
    assert!(asked.contains(&format!("get {}", reg.host())), "{asked}");

    // Wrong and missing credentials: a clear error, no secret shown.
    let out = slimpack_env(&["push", dir, &target], &cache, &[("DOCKER_CONFIG", &bad)]);
    assert!(!out.status.success());
    let err =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        err.contains("refused") && err.contains("docker login"),
        "{err}"
    );
    assert!(
        !err.contains("wrong-pw-0a9b") && !err.contains(password),
        "{err}"
    );
    assert!(!err.contains(&b64("alice:wrong-pw-0a9b")), "{err}");
    let out = slimpack_env(&["push", dir, &target], &cache, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no credentials were found"), "{err}");
}

/// A TCP proxy in front of the registry that misbehaves: it drops or
/// answers 500 to the connections numbered in `faults`; and once one
/// connection has sent `cut` bytes upstream it cuts it, and answers every
/// later connection with 400 (a registry gone wrong: no retry helps).
/// Uploads are throttled to ~20 MB/s, so that small requests finish while a
/// large one is still under way, as on a real network.
struct FaultProxy {
    port: u16,
    stop: Arc<AtomicBool>,
    broken: Arc<AtomicBool>,
}

#[derive(Clone, Copy)]
enum Fault {
    Drop,
    Http500,
}

impl FaultProxy {
    fn start(upstream: u16, faults: Vec<(usize, Fault)>, cut: u64) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let broken = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicUsize::new(0));
        let (s, b) = (stop.clone(), broken.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = conn else { continue };
                let n = count.fetch_add(1, Ordering::SeqCst);
                let fault = if b.load(Ordering::SeqCst) {
                    Some(None)
                } else {
                    faults.iter().find(|f| f.0 == n).map(|f| Some(f.1))
                };
                match fault {
                    Some(Some(Fault::Drop)) => drop(client),
                    Some(f) => {
                        let mut c = client;
                        let mut head = [0u8; 1024];
                        let _ = c.read(&mut head);
                        let status = if f.is_some() {
                            "500 Internal Server Error"
                        } else {
                            "400 Bad Request"
                        };
                        let _ = c.write_all(
                            format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                                .as_bytes(),
                        );
                        let _ = c.shutdown(Shutdown::Both);
                    }
                    None => {
                        let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                            continue;
                        };
                        let b = b.clone();
                        let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                        std::thread::spawn(move || pipe(client, server, Some((cut, b))));
                        std::thread::spawn(move || pipe(s2, c2, None));
                    }
                }
            }
        });
        FaultProxy { port, stop, broken }
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream, cut: Option<(u64, Arc<AtomicBool>)>) {
    let mut buf = [0u8; 64 * 1024];
    let mut sent = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some((limit, broken)) = &cut {
            sent += n as u64;
            if sent > *limit {
                broken.store(true, Ordering::SeqCst);
                break;
            }
            std::thread::sleep(Duration::from_micros(n as u64 / 20));
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

#[test]
fn faults_are_retried_and_an_interrupted_push_resumes() {
    let reg = Registry::start(None);
    let cache = shared_cache();
    let app = copy_example("flask");
    let dir = app.path().to_str().unwrap();

    // Dropped connections and 500s on the first requests: the push still
    // completes, and the registry holds exactly our image.
    let proxy = FaultProxy::start(
        reg.port,
        vec![
            (0, Fault::Drop),
            (1, Fault::Http500),
            (3, Fault::Http500),
            (4, Fault::Drop),
            (6, Fault::Http500),
        ],
        u64::MAX,
    );
    let via = format!("127.0.0.1:{}/faults/flask:v1", proxy.port);
    let r = push_json(dir, &via, &cache, &[], "push through faults");
    let digest = r["digest"].as_str().unwrap().to_string();
    assert_eq!(
        skopeo_digest(
            &format!("docker://{}/faults/flask:v1", reg.host()),
            &["--tls-verify=false"]
        ),
        digest
    );
    drop(proxy);

    // Cut after 3 MB: the push fails; run again, it sends only what is missing.
    let proxy = FaultProxy::start(reg.port, vec![], 3_000_000);
    let via = format!("127.0.0.1:{}/cut/flask:v1", proxy.port);
    let out = slimpack_env(&["push", dir, &via, "--json"], &cache, &[]);
    assert!(!out.status.success(), "the cut push should fail");
    assert!(
        proxy.broken.load(Ordering::SeqCst),
        "the proxy cut an upload"
    );
    drop(proxy);
    let r = push_json(
        dir,
        &format!("{}/cut/flask:v1", reg.host()),
        &cache,
        &[],
        "resumed push",
    );
    let skipped = r["skipped_bytes"].as_u64().unwrap();
    let uploaded = r["uploaded_bytes"].as_u64().unwrap();
    assert!(
        skipped > 0,
        "the blobs sent before the cut are not sent again: {r}"
    );
    assert!(uploaded > 0, "{r}");
    assert_eq!(r["digest"], digest.as_str());

    // Chunked upload (PATCH with Content-Range, then PUT ?digest=), for
    // registries that cap a request's size.
    let fresh = Registry::start(None);
    let chunked = format!("{}/chunked/flask:v1", fresh.host());
    let r = push_json(
        dir,
        &chunked,
        &cache,
        &[("SLIMPACK_CHUNK_SIZE", "1048576")],
        "chunked push",
    );
    // Many chunks of 1 MiB each.
    assert!(r["uploaded_bytes"].as_u64().unwrap() > 10 << 20, "{r}");
    assert_eq!(
        skopeo_digest(&format!("docker://{chunked}"), &["--tls-verify=false"]),
        digest
    );
}

fn b64url(bytes: &[u8]) -> String {
    let out = Command::new("base64")
        .arg("-w0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(bytes)?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

/// A token service as Docker Hub and Artifact Registry run one: Basic
/// credentials in, a JWT (RS256, x5c chain to the registry's root bundle)
/// granting the asked scopes out. Signs with the openssl command line.
fn token_service(dir: &Path, user: &str, pass: &str) -> (u16, Arc<AtomicUsize>) {
    let key = dir.join("key.pem");
    let cert = dir.join("cert.pem");
    run_ok(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=token",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
    );
    let der = Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(&cert)
        .output()
        .unwrap()
        .stdout;
    let x5c = b64url(&der).replace('-', "+").replace('_', "/");
    let x5c = format!("{x5c}{}", "=".repeat((4 - x5c.len() % 4) % 4));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let issued = Arc::new(AtomicUsize::new(0));
    let count = issued.clone();
    let good = format!("Basic {}", {
        let s = b64url(format!("{user}:{pass}").as_bytes())
            .replace('-', "+")
            .replace('_', "/");
        format!("{s}{}", "=".repeat((4 - s.len() % 4) % 4))
    });
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { continue };
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match c.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let text = String::from_utf8_lossy(&head).to_string();
            let authorized = text.lines().any(|l| {
                l.to_ascii_lowercase().starts_with("authorization:") && l[14..].trim() == good
            });
            if !authorized {
                let _ = c.write_all(
                    b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                continue;
            }
            let target = text.split_whitespace().nth(1).unwrap_or("");
            let query = target.split_once('?').map(|q| q.1).unwrap_or("");
            let access: Vec<Value> = query
                .split('&')
                .filter_map(|kv| kv.strip_prefix("scope="))
                .map(|s| s.replace("%3A", ":").replace("%2F", "/").replace("%2C", ","))
                .filter_map(|s| {
                    let mut p = s.splitn(3, ':');
                    let (t, n, a) = (p.next()?, p.next()?, p.next()?);
                    Some(serde_json::json!({"type": t, "name": n, "actions": a.split(',').collect::<Vec<_>>()}))
                })
                .collect();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [x5c]});
            let claims = serde_json::json!({
                "iss": "test-issuer", "sub": "alice", "aud": "test-registry",
                "exp": now + 300, "nbf": now - 10, "iat": now,
                "jti": format!("t{}", count.load(Ordering::SeqCst)), "access": access,
            });
            let input = format!(
                "{}.{}",
                b64url(header.to_string().as_bytes()),
                b64url(claims.to_string().as_bytes())
            );
            let msg = dir.join(format!("msg{}", count.load(Ordering::SeqCst)));
            std::fs::write(&msg, &input).unwrap();
            let sig = Command::new("openssl")
                .args(["dgst", "-sha256", "-sign"])
                .arg(dir.join("key.pem"))
                .arg(&msg)
                .output()
                .unwrap()
                .stdout;
            count.fetch_add(1, Ordering::SeqCst);
            let body = serde_json::json!({"token": format!("{input}.{}", b64url(&sig)), "expires_in": 300}).to_string();
            let _ = c.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
    });
    (port, issued)
}

#[test]
fn bearer_tokens_from_the_registrys_token_service() {
    let dir = tempfile::tempdir().unwrap();
    let (token_port, issued) = token_service(dir.path(), "alice", "tok-pw-31d");
    let reg = Registry::start_with(&format!(
        "auth:\n  token:\n    realm: http://127.0.0.1:{token_port}/token\n    service: test-registry\n    issuer: test-issuer\n    rootcertbundle: {}\n",
        dir.path().join("cert.pem").display()
    ));
    let conf = dir.path().join("docker");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(
        conf.join("config.json"),
        format!(
            r#"{{"auths": {{"{}": {{"username": "alice", "password": "tok-pw-31d"}}}}}}"#,
            reg.host()
        ),
    )
    .unwrap();
    let cache = shared_cache();
    let app = copy_example("flask");
    let dir_s = app.path().to_str().unwrap();
    let conf_s = conf.to_str().unwrap();
    let target = format!("{}/tokens/flask:v1", reg.host());
    let r = push_json(
        dir_s,
        &target,
        &cache,
        &[("DOCKER_CONFIG", conf_s)],
        "push with a Bearer token",
    );
    assert!(issued.load(Ordering::SeqCst) >= 1);
    // Mounting from the first repository needs pull access to it: asked in
    // the same token.
    let r2 = push_json(
        dir_s,
        &format!("{}/tokens2/flask:v1", reg.host()),
        &cache,
        &[("DOCKER_CONFIG", conf_s)],
        "second repository with a Bearer token",
    );
    assert_eq!(r2["digest"], r["digest"]);
    assert_eq!(blobs_by_action(&r2, "mounted").len(), 5, "{r2}");
    let out = slimpack_env(&["push", dir_s, &target], &cache, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("token service") && err.contains("docker login"),
        "{err}"
    );
}

/// `build --push` attaches the build's SBOM to the image as an OCI
/// referrer; docker-registry has no referrers API, so it is listed under
/// the fallback tag `sha256-<hex>`. Reading it back gives the document
/// `--sbom` wrote, byte for byte; pushing the same image again attaches
/// nothing twice; `push LAYOUT` attaches one made from the image's contents.
#[test]
fn a_pushed_image_carries_its_sbom_and_it_reads_back() {
    let reg = Registry::start(None);
    let cache = shared_cache();
    let app = copy_example("flask");
    let dir = app.path().to_str().unwrap();
    let out = tempfile::tempdir().unwrap();
    let sbom = out.path().join("sbom.json");
    let target = format!("{}/demo/sbom:v1", reg.host());
    let r = ok_json(
        slimpack_env(
            &[
                "build",
                dir,
                "--json",
                "--push",
                &target,
                "--sbom",
                sbom.to_str().unwrap(),
            ],
            &cache,
            &[],
        ),
        "build --push --sbom",
    );
    let digest = r["digest"].as_str().unwrap();
    let fallback = digest.replacen(':', "-", 1);
    let attached = &r["sbom"]["attached"][0];
    assert_eq!(attached["fallback_tag"], fallback.as_str(), "{r}");
    assert_eq!(attached["artifact_type"], "application/spdx+json");

    // The fallback tag holds an index naming the SBOM's manifest, whose
    // subject is the image: what any OCI 1.1 client (oras, cosign) reads.
    let fallback_index = || {
        let raw = format!("docker://{}/demo/sbom:{fallback}", reg.host());
        let raw =
            run_ok(Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false", &raw]));
        serde_json::from_str::<Value>(&raw).unwrap()
    };
    let index = fallback_index();
    let listed = index["manifests"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{index}");
    assert_eq!(listed[0]["digest"], attached["digest"]);
    assert_eq!(listed[0]["artifactType"], "application/spdx+json");

    let back = out.path().join("back.json");
    let by_digest = format!("{}/demo/sbom@{digest}", reg.host());
    let o = slimpack_env(
        &[
            "inspect",
            &by_digest,
            "--attached-sbom",
            back.to_str().unwrap(),
        ],
        &cache,
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(&back).unwrap(), std::fs::read(&sbom).unwrap());
    let pulled = out.path().join("pulled.json");
    let o = slimpack_env(
        &[
            "pull",
            &by_digest,
            "--sbom",
            pulled.to_str().unwrap(),
            "--json",
        ],
        &cache,
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read(&pulled).unwrap(),
        std::fs::read(&sbom).unwrap()
    );

    // The same image again: the index still names one SBOM.
    ok_json(
        slimpack_env(&["build", dir, "--json", "--push", &target], &cache, &[]),
        "second build --push",
    );
    let index = fallback_index();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1, "{index}");

    // An image with nothing attached says so, and names what to do.
    let layout = out.path().join("img.oci");
    ok_json(
        slimpack_env(
            &[
                "build",
                dir,
                "--json",
                "-o",
                &format!("oci:{}", layout.display()),
            ],
            &cache,
            &[],
        ),
        "build -o",
    );
    let bare = format!("{}/demo/bare:v1", reg.host());
    let pushed = ok_json(
        slimpack_env(
            &[
                "push",
                &format!("oci:{}", layout.display()),
                &bare,
                "--json",
            ],
            &cache,
            &[],
        ),
        "push a layout",
    );
    assert_eq!(
        pushed["sbom"]["fallback_tag"],
        fallback.as_str(),
        "{pushed}"
    );
    let o = slimpack_env(&["inspect", &bare, "--attached-sbom", "-"], &cache, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["packages"][0]["versionInfo"], digest);
    let plain = format!("{}/demo/plain:v1", reg.host());
    run_ok(
        Command::new("skopeo")
            .args(["copy", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:latest", layout.display()))
            .arg(format!("docker://{plain}")),
    );
    let none = slimpack_env(&["inspect", &plain, "--attached-sbom", "-"], &cache, &[]);
    assert!(!none.status.success());
    let err = String::from_utf8_lossy(&none.stderr);
    assert!(err.contains("no SPDX document is attached"), "{err}");
    assert!(none.stdout.is_empty());
}
