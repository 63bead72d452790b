//! Private package indexes end to end, against a loopback server playing
//! two of them: a PEP 503 simple index behind Basic auth, and one that
//! plays an Artifact Registry Python repository (only the token of the
//! test's Google token endpoint is taken, as `oauth2accesstoken` or
//! Bearer; a token of an account without access gets 403). Packages pinned
//! to them install (one compiled in the builder sandbox), wrong or missing
//! credentials fail naming the index and the fix, a pinned package is
//! never taken from PyPI, and no credential is in any layer, the plan, the
//! `--json` report, the output or the cache.

mod common;
use base64::Engine as _;
use common::*;
use sha2::Digest;
use std::io::{BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

const USER: &str = "alice";
const PASSWORD: &str = "basic-s3cret-7f3a";
const READER_TOKEN: &str = "ya29.reader-token-91c2";
const OTHER_TOKEN: &str = "ya29.no-access-token-5d8e";

/// What the server holds and hands out.
struct Server {
    base: String,
    /// The token the token endpoint gives.
    token: Arc<Mutex<String>>,
}

/// path → (content type, bytes), under `/basic/simple/` and `/ar/simple/`.
type Files = Vec<(String, Vec<u8>)>;

fn wheel(name: &str, version: &str, code: &str, requires: &[&str]) -> (String, Vec<u8>) {
    let dist = name.replace('-', "_");
    let file = format!("{dist}-{version}-py3-none-any.whl");
    let info = format!("{dist}-{version}.dist-info");
    let mut meta = format!("Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n");
    for r in requires {
        meta.push_str(&format!("Requires-Dist: {r}\n"));
    }
    let files = [
        (format!("{dist}/__init__.py"), code.to_string()),
        (format!("{info}/METADATA"), meta),
        (
            format!("{info}/WHEEL"),
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
                .into(),
        ),
    ];
    let mut record = String::new();
    for (p, text) in &files {
        let h = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(text.as_bytes()));
        record.push_str(&format!("{p},sha256={h},{}\n", text.len()));
    }
    record.push_str(&format!("{info}/RECORD,,\n"));
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default();
    for (p, text) in files.iter().chain([&(format!("{info}/RECORD"), record)]) {
        zip.start_file(p.as_str(), opts).unwrap();
        zip.write_all(text.as_bytes()).unwrap();
    }
    (file, zip.finish().unwrap().into_inner())
}

/// A source distribution only (no wheel): the builder compiles it.
fn sdist(name: &str, version: &str, code: &str) -> (String, Vec<u8>) {
    let dist = name.replace('-', "_");
    let top = format!("{dist}-{version}");
    let files = [
        (
            "pyproject.toml".to_string(),
            format!("[build-system]\nrequires = ['hatchling']\nbuild-backend = 'hatchling.build'\n\n[project]\nname = '{name}'\nversion = '{version}'\n"),
        ),
        (
            "PKG-INFO".to_string(),
            format!("Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"),
        ),
        (format!("{dist}/__init__.py"), code.to_string()),
    ];
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    for (p, text) in &files {
        let mut h = tar::Header::new_gnu();
        h.set_size(text.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, format!("{top}/{p}"), text.as_bytes())
            .unwrap();
    }
    (
        format!("{top}.tar.gz"),
        tar.into_inner().unwrap().finish().unwrap(),
    )
}

/// `/{index}/simple/{project}/` pages and their files.
fn index_files(index: &str, packages: &[(&str, (String, Vec<u8>))]) -> Files {
    let mut out = Vec::new();
    for (project, (file, bytes)) in packages {
        let sha = hex::encode(sha2::Sha256::digest(bytes));
        let page = format!(
            "<!DOCTYPE html><html><body><a href=\"{file}#sha256={sha}\">{file}</a></body></html>"
        );
        out.push((format!("/{index}/simple/{project}/"), page.into_bytes()));
        out.push((format!("/{index}/simple/{project}/{file}"), bytes.clone()));
    }
    out
}

fn start() -> Server {
    let mut files = index_files(
        "basic",
        &[
            (
                "corp-greeting",
                wheel(
                    "corp-greeting",
                    "1.0",
                    "def hello():\n    return 'hello from corp'\n",
                    &["six"],
                ),
            ),
            (
                "corp-fmt",
                sdist("corp-fmt", "0.3", "def fmt(x):\n    return f'<{x}>'\n"),
            ),
            (
                // Unique to this run: its lock and hash are new, so the
                // builder compiles it even where a cache kept an earlier one.
                "corp-netrc",
                sdist(
                    "corp-netrc",
                    "0.1",
                    &format!(
                        "NONCE = '{}-{}'\nSAID = 'credentials from a netrc'\n",
                        std::process::id(),
                        std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap()
                            .as_nanos()
                    ),
                ),
            ),
        ],
    );
    files.extend(index_files(
        "ar",
        &[(
            "ar-tools",
            wheel("ar-tools", "2.0", "VERSION = 'ar-tools 2.0'\n", &[]),
        )],
    ));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let token = Arc::new(Mutex::new(READER_TOKEN.to_string()));
    let (files, t) = (Arc::new(files), token.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let (files, t) = (files.clone(), t.clone());
            std::thread::spawn(move || serve(conn, &files, &t));
        }
    });
    Server { base, token }
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// The status an index gives a request with `auth`.
fn authorize(path: &str, auth: Option<&str>) -> u16 {
    let auth = auth.unwrap_or("");
    if path.starts_with("/basic/") {
        return if auth == basic(USER, PASSWORD) {
            200
        } else {
            401
        };
    }
    // Artifact Registry: the token as a password of oauth2accesstoken, or
    // as a Bearer token; a valid token without access is forbidden.
    let token = auth
        .strip_prefix("Bearer ")
        .map(str::to_string)
        .or_else(|| {
            let b = auth.strip_prefix("Basic ")?;
            let plain = base64::engine::general_purpose::STANDARD.decode(b).ok()?;
            let plain = String::from_utf8(plain).ok()?;
            plain.strip_prefix("oauth2accesstoken:").map(str::to_string)
        });
    match token.as_deref() {
        Some(READER_TOKEN) => 200,
        Some(OTHER_TOKEN) => 403,
        _ => 401,
    }
}

fn serve(conn: std::net::TcpStream, files: &Files, token: &Mutex<String>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    while let Some(Request {
        method,
        url: path,
        authorization: auth,
        ..
    }) = read_request(&mut reader)
    {
        let (status, bytes) = if path == "/token" && method == "POST" {
            let t = token.lock().unwrap().clone();
            (
                200,
                format!("{{\"access_token\": \"{t}\", \"expires_in\": 3600}}").into_bytes(),
            )
        } else {
            match authorize(&path, auth.as_deref()) {
                200 => match files.iter().find(|(p, _)| *p == path) {
                    Some((_, b)) => (200, b.clone()),
                    None => (404, b"not found".to_vec()),
                },
                s => (s, b"denied".to_vec()),
            }
        };
        let reason = match status {
            200 => "OK",
            401 => "Unauthorized",
            403 => "Forbidden",
            _ => "Not Found",
        };
        let mut out = conn.try_clone().unwrap();
        let kind = if path.ends_with('/') {
            "text/html"
        } else if path == "/token" {
            "application/json"
        } else {
            "application/octet-stream"
        };
        let mut head = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n",
            bytes.len()
        );
        if status == 401 {
            head.push_str("WWW-Authenticate: Basic realm=\"index\"\r\n");
        }
        head.push_str("\r\n");
        if out.write_all(head.as_bytes()).is_err() || out.write_all(&bytes).is_err() {
            return;
        }
    }
}

fn project(base: &str, pins: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("pyproject.toml"),
        format!(
            r#"[project]
name = "private-app"
version = "1.0"
requires-python = ">=3.11"
dependencies = ["corp-greeting", "corp-fmt", "ar-tools", "six"]

[tool.uv.sources]
corp-greeting = {{ index = "corp" }}
corp-fmt = {{ index = "corp" }}
ar-tools = {{ index = "ar" }}
{pins}
[[tool.uv.index]]
name = "corp"
url = "{base}/basic/simple"
explicit = true

[[tool.uv.index]]
name = "ar"
url = "{base}/ar/simple/"
explicit = true

[tool.slimpack]
python = "3.11"
# Artifact Registry behind a loopback address: its credentials come from
# the Google chain, as they do for any *-python.pkg.dev index.
index-auth = {{ ar = "google" }}
"#
        ),
    )
    .unwrap();
    std::fs::write(
        d.path().join("main.py"),
        "import corp_greeting, corp_fmt, ar_tools, six\nprint(corp_fmt.fmt(corp_greeting.hello()), ar_tools.VERSION, 'six', six.__version__)\n",
    )
    .unwrap();
    d
}

struct Env {
    cache: PathBuf,
    google: tempfile::TempDir,
}

impl Env {
    /// An ADC file whose token endpoint is the server's.
    fn new(server: &Server) -> Env {
        let google = tempfile::tempdir().unwrap();
        std::fs::write(
            google.path().join("adc.json"),
            format!(
                r#"{{"type": "authorized_user", "client_id": "c", "client_secret": "s", "refresh_token": "r", "token_uri": "{}/token"}}"#,
                server.base
            ),
        )
        .unwrap();
        Env {
            cache: shared_cache(),
            google,
        }
    }

    fn slimpack(&self, args: &[&str], creds: Option<(&str, &str)>, adc: bool) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_slimpack"));
        c.args(args)
            .env("SLIMPACK_CACHE", &self.cache)
            .env("CLOUDSDK_CONFIG", self.google.path())
            .env("GCE_METADATA_HOST", "127.0.0.1:1")
            .env_remove("UV_INDEX_CORP_USERNAME")
            .env_remove("UV_INDEX_CORP_PASSWORD")
            .env_remove("GOOGLE_APPLICATION_CREDENTIALS");
        if let Some((u, p)) = creds {
            c.env("UV_INDEX_CORP_USERNAME", u)
                .env("UV_INDEX_CORP_PASSWORD", p);
        }
        if adc {
            c.env(
                "GOOGLE_APPLICATION_CREDENTIALS",
                self.google.path().join("adc.json"),
            );
        }
        c.output().unwrap()
    }
}

fn failed(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "expected a failure: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn succeeded(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A run of an image that printed `expected` (and what it said on stderr
/// when it did not).
fn printed(run: &Output, expected: &str) {
    assert_eq!(
        String::from_utf8_lossy(&run.stdout).trim(),
        expected,
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

/// Every file under `dir` (gzip streams read decompressed) that holds any
/// of `needles`. The search is the regex crate's (built optimised), as the
/// cache holds gigabytes.
fn holding(dir: &Path, needles: &[&str]) -> Vec<String> {
    let pattern: Vec<String> = needles.iter().map(|n| regex::escape(n)).collect();
    let re = regex::bytes::Regex::new(&pattern.join("|")).unwrap();
    let mut found = Vec::new();
    for e in walkdir::WalkDir::new(dir).into_iter().flatten() {
        if !e.file_type().is_file() {
            continue;
        }
        let Ok(mut bytes) = std::fs::read(e.path()) else {
            continue;
        };
        if bytes.starts_with(&[0x1f, 0x8b]) {
            let mut plain = Vec::new();
            if flate2::read::MultiGzDecoder::new(&bytes[..])
                .read_to_end(&mut plain)
                .is_ok()
            {
                bytes = plain;
            }
        }
        if let Some(m) = re.find(&bytes) {
            found.push(format!(
                "{} holds {}",
                e.path().display(),
                String::from_utf8_lossy(m.as_bytes())
            ));
        }
    }
    found
}

#[test]
fn private_indexes_install_with_credentials_that_go_nowhere() {
    let server = start();
    let env = Env::new(&server);
    let app = project(&server.base, "");
    let dir = app.path().to_str().unwrap();
    let plan = ["build", dir, "--plan", "--refresh"];
    let mut outputs: Vec<Output> = Vec::new();

    // Each way credentials go wrong: the error names the index, the
    // status and the fix.
    type Refusal<'a> = (
        &'a str,
        Option<(&'a str, &'a str)>,
        bool,
        &'a str,
        &'a [&'a str],
    );
    let refusals: [Refusal; 4] = [
        (
            "no credentials for corp",
            None,
            true,
            READER_TOKEN,
            &["the index corp (", "401", "UV_INDEX_CORP_USERNAME"],
        ),
        (
            "wrong ones",
            Some((USER, "wrong-password")),
            true,
            READER_TOKEN,
            &["the index corp (", "were not accepted"],
        ),
        (
            // Or a gcloud with no account, where one is installed.
            "no Google credentials for the Artifact Registry index",
            Some((USER, PASSWORD)),
            false,
            READER_TOKEN,
            &["the index ar (", "is an Artifact Registry repository, and"],
        ),
        (
            "a token of an account that may not read the repository",
            Some((USER, PASSWORD)),
            true,
            OTHER_TOKEN,
            &["the index ar (", "403", "roles/artifactregistry.reader"],
        ),
    ];
    for (why, creds, adc, token, needles) in refusals {
        *server.token.lock().unwrap() = token.into();
        let out = env.slimpack(&plan, creds, adc);
        let e = failed(&out);
        assert!(needles.iter().all(|n| e.contains(n)), "{why}: {e}");
        outputs.push(out);
    }
    *server.token.lock().unwrap() = READER_TOKEN.into();

    // A pinned package the index does not serve is never taken from PyPI
    // (which has a `six`).
    let confused = project(&server.base, "six = { index = \"corp\" }\n");
    let cdir = confused.path().to_str().unwrap();
    let out = env.slimpack(
        &["build", cdir, "--plan", "--refresh"],
        Some((USER, PASSWORD)),
        true,
    );
    let e = failed(&out);
    assert!(
        e.contains("six is pinned to the index corp") && e.contains("dependency confusion"),
        "{e}"
    );
    outputs.push(out);

    // With both: the plan lists each index and what comes from it.
    let out = env.slimpack(&plan, Some((USER, PASSWORD)), true);
    succeeded(&out);
    let p: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let indexes = p["dependencies"]["indexes"].as_array().unwrap();
    let names: Vec<&str> = indexes
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["corp", "ar", "pypi"], "{indexes:?}");
    assert_eq!(
        indexes[0]["packages"],
        serde_json::json!(["corp-fmt", "corp-greeting"])
    );
    assert_eq!(
        indexes[0]["pinned"],
        serde_json::json!(["corp-fmt", "corp-greeting"])
    );
    assert!(indexes[0]["guard"]
        .as_str()
        .unwrap()
        .contains("never taken"));
    assert_eq!(indexes[1]["packages"], serde_json::json!(["ar-tools"]));
    assert!(indexes[1]["credentials"]
        .as_str()
        .unwrap()
        .contains("Google"));
    assert_eq!(indexes[2]["packages"], serde_json::json!(["six"]));
    assert!(p["dependencies"]["source_builds"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("corp-fmt")));
    outputs.push(out);

    // The build: corp-fmt compiled in the builder sandbox, from the index,
    // with the credentials in its environment only.
    let out_dir = tempfile::tempdir().unwrap();
    let layout = out_dir.path().join("private.oci");
    let oci = format!("oci:{}", layout.display());
    let out = env.slimpack(
        &["build", dir, "-o", &oci, "--json"],
        Some((USER, PASSWORD)),
        true,
    );
    succeeded(&out);
    outputs.push(out);
    printed(
        &env.slimpack(
            &["run", &oci, "--port", &free_port().to_string()],
            None,
            false,
        ),
        "<hello from corp> ar-tools 2.0 six 1.17.0",
    );

    let basic_b64 = basic(USER, PASSWORD);
    let basic_b64 = basic_b64.trim_start_matches("Basic ");
    let secrets = [PASSWORD, READER_TOKEN, OTHER_TOKEN, basic_b64];
    for o in &outputs {
        for s in secrets {
            for (what, text) in [("stdout", &o.stdout), ("stderr", &o.stderr)] {
                assert!(
                    !String::from_utf8_lossy(text).contains(s),
                    "a credential in the {what} of a run"
                );
            }
        }
    }
    let leaks = holding(&layout, &secrets);
    assert!(leaks.is_empty(), "{leaks:?}");
    let leaks = holding(&env.cache, &secrets);
    assert!(leaks.is_empty(), "{leaks:?}");
}

#[test]
fn a_password_written_into_a_project_is_refused_before_anything_runs() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("requirements.txt"),
        "--extra-index-url https://bob:hunter2-literal@pkgs.corp.example/simple\nsix\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_slimpack"))
        .args(["build", d.path().to_str().unwrap(), "--plan"])
        .env("SLIMPACK_CACHE", shared_cache())
        .output()
        .unwrap();
    let e = failed(&out);
    assert!(
        e.contains("requirements.txt:1")
            && e.contains("credentials written in it")
            && !e.contains("hunter2"),
        "{e}"
    );
}

/// The other places an index is declared reach uv the same way: a
/// requirements line with `${VAR}` credentials, Poetry's explicit source,
/// a Pipfile's second source, and a uv.lock (installed by its hashes from
/// the indexes, origins read from the lock).
#[test]
fn every_way_of_declaring_an_index_reaches_uv() {
    let server = start();
    let env = Env::new(&server);
    let base = &server.base;
    let plan = |dir: &Path, creds: Option<(&str, &str)>, extra: &[(&str, &str)]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_slimpack"));
        c.args(["build", dir.to_str().unwrap(), "--plan", "--refresh"])
            .env("SLIMPACK_CACHE", &env.cache)
            .env_remove("UV_INDEX_CORP_USERNAME")
            .env_remove("UV_INDEX_CORP_PASSWORD");
        if let Some((u, p)) = creds {
            c.env("UV_INDEX_CORP_USERNAME", u)
                .env("UV_INDEX_CORP_PASSWORD", p);
        }
        c.envs(extra.iter().copied());
        c.output().unwrap()
    };
    let origins = |out: &Output| -> Vec<(String, Vec<String>)> {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let p: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        p["dependencies"]["indexes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                let pk = i["packages"].as_array().unwrap();
                (
                    i["name"].as_str().unwrap().to_string(),
                    pk.iter().map(|x| x.as_str().unwrap().to_string()).collect(),
                )
            })
            .collect()
    };

    // requirements.txt: an extra index whose user part is two variables.
    let req = tempfile::tempdir().unwrap();
    let host = base.trim_start_matches("http://");
    std::fs::write(
        req.path().join("requirements.txt"),
        format!("--extra-index-url http://${{CORP_USER}}:${{CORP_PASSWORD}}@{host}/basic/simple\ncorp-greeting\n"),
    )
    .unwrap();
    std::fs::write(req.path().join("main.py"), "import corp_greeting\n").unwrap();
    let e = failed(&plan(req.path(), None, &[]));
    assert!(e.contains("${CORP_USER}, which is not set"), "{e}");
    let got = origins(&plan(
        req.path(),
        None,
        &[("CORP_USER", USER), ("CORP_PASSWORD", PASSWORD)],
    ));
    assert_eq!(
        got,
        [
            ("127-0-0-1".to_string(), vec!["corp-greeting".to_string()]),
            ("pypi".to_string(), vec!["six".to_string()])
        ]
    );

    // A package no index serves: each declared index is asked, and says so.
    std::fs::write(
        req.path().join("requirements.txt"),
        format!("--extra-index-url http://${{CORP_USER}}:${{CORP_PASSWORD}}@{host}/basic/simple\nslimpack-test-no-such-package-4d1\n"),
    )
    .unwrap();
    let e = failed(&plan(
        req.path(),
        None,
        &[("CORP_USER", USER), ("CORP_PASSWORD", PASSWORD)],
    ));
    assert!(
        e.contains("no index serves slimpack-test-no-such-package-4d1: 127-0-0-1 (")
            && e.contains("answered 404"),
        "{e}"
    );

    // Poetry's explicit source, and a Pipfile's second source: each
    // serves the package pinned to it.
    let one_file = |file: &str, text: String| {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(file), text).unwrap();
        std::fs::write(d.path().join("main.py"), "import corp_greeting\n").unwrap();
        let got = origins(&plan(d.path(), Some((USER, PASSWORD)), &[]));
        assert_eq!(
            got[0],
            ("corp".to_string(), vec!["corp-greeting".to_string()]),
            "{file}"
        );
    };
    one_file(
        "pyproject.toml",
        format!("[tool.poetry]\nname = 'p'\nversion = '1'\npackage-mode = false\n\n[tool.poetry.dependencies]\npython = '^3.11'\ncorp-greeting = {{ version = '*', source = 'corp' }}\n\n[[tool.poetry.source]]\nname = 'corp'\nurl = '{base}/basic/simple'\npriority = 'explicit'\n\n[tool.slimpack]\npython = '3.11'\n"),
    );
    one_file(
        "Pipfile",
        format!("[[source]]\nname = 'pypi'\nurl = 'https://pypi.org/simple'\nverify_ssl = true\n\n[[source]]\nname = 'corp'\nurl = '{base}/basic/simple'\nverify_ssl = false\n\n[packages]\ncorp-greeting = {{ version = '*', index = 'corp' }}\n\n[requires]\npython_version = '3.11'\n"),
    );

    // uv.lock, made by uv against the same indexes: exported, installed by
    // hash from the indexes, and run.
    let locked = project(base, "");
    let pp = locked.path().join("pyproject.toml");
    let text = std::fs::read_to_string(&pp).unwrap();
    std::fs::write(
        &pp,
        text.replace("\"corp-fmt\", ", "")
            .replace("corp-fmt = { index = \"corp\" }\n", ""),
    )
    .unwrap();
    std::fs::write(
        locked.path().join("main.py"),
        "import corp_greeting, ar_tools\nprint(corp_greeting.hello(), ar_tools.VERSION)\n",
    )
    .unwrap();
    // The uv slimpack ran: SLIMPACK_UV, one on PATH, or the one it fetched.
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("uv"))
            .find(|p| p.is_file())
    });
    let uv = std::env::var_os("SLIMPACK_UV")
        .map(PathBuf::from)
        .or(on_path)
        .or_else(|| {
            walkdir::WalkDir::new(env.cache.join("tools"))
                .into_iter()
                .flatten()
                .find(|e| e.file_name() == "uv" && e.file_type().is_file())
                .map(|e| e.into_path())
        })
        .expect("uv: slimpack fetched one into the cache");
    let lock = Command::new(uv)
        .args(["lock", "--python", "3.11", "--no-config"])
        .current_dir(locked.path())
        .env("UV_INDEX_CORP_USERNAME", USER)
        .env("UV_INDEX_CORP_PASSWORD", PASSWORD)
        .env("UV_INDEX_AR_USERNAME", "oauth2accesstoken")
        .env("UV_INDEX_AR_PASSWORD", READER_TOKEN)
        .env("UV_CACHE_DIR", locked.path().join(".uv-cache"))
        .env("UV_PYTHON_DOWNLOADS", "never")
        .output()
        .unwrap();
    // uv lock asks a Python 3.11 of this machine (Debian 12's python3,
    // which ./test.sh installs).
    assert!(
        lock.status.success(),
        "uv lock: {}",
        String::from_utf8_lossy(&lock.stderr)
    );
    std::fs::remove_dir_all(locked.path().join(".uv-cache")).unwrap();
    let lock_text = std::fs::read_to_string(locked.path().join("uv.lock")).unwrap();
    assert!(!lock_text.contains(PASSWORD) && !lock_text.contains(READER_TOKEN));
    let out_dir = tempfile::tempdir().unwrap();
    let oci = format!("oci:{}", out_dir.path().join("locked.oci").display());
    let dir = locked.path().to_str().unwrap();
    let built = env.slimpack(
        &["build", dir, "-o", &oci, "--json"],
        Some((USER, PASSWORD)),
        true,
    );
    succeeded(&built);
    printed(
        &env.slimpack(
            &["run", &oci, "--port", &free_port().to_string()],
            None,
            false,
        ),
        "hello from corp ar-tools 2.0",
    );
    let got = origins(&env.slimpack(&["build", dir, "--plan"], Some((USER, PASSWORD)), true));
    assert_eq!(
        got[0],
        ("corp".to_string(), vec!["corp-greeting".to_string()])
    );
    assert_eq!(got[1], ("ar".to_string(), vec!["ar-tools".to_string()]));
}

/// Credentials from a netrc file (uv reads it on the host; the builder gets
/// it mounted read-only, as its home is not the user's): a source-only
/// package on the private index is fetched by the builder with them, and
/// the file's password is in no layer.
#[test]
fn a_netrc_reaches_the_builder() {
    let server = start();
    let home = tempfile::tempdir().unwrap();
    let netrc = home.path().join(".netrc");
    std::fs::write(
        &netrc,
        format!("machine 127.0.0.1\nlogin {USER}\npassword {PASSWORD}\n"),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&netrc, std::fs::Permissions::from_mode(0o600)).unwrap();
    let app = tempfile::tempdir().unwrap();
    std::fs::write(
        app.path().join("pyproject.toml"),
        format!(
            "[project]\nname = 'netrc-app'\nversion = '1'\ndependencies = ['corp-netrc']\n\n[tool.uv.sources]\ncorp-netrc = {{ index = 'corp' }}\n\n[[tool.uv.index]]\nname = 'corp'\nurl = '{}/basic/simple'\nexplicit = true\n\n[tool.slimpack]\npython = '3.11'\n",
            server.base
        ),
    )
    .unwrap();
    std::fs::write(
        app.path().join("main.py"),
        "import corp_netrc\nprint(corp_netrc.SAID)\n",
    )
    .unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let layout = out_dir.path().join("netrc.oci");
    let oci = format!("oci:{}", layout.display());
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_slimpack"))
            .args(args)
            .env("SLIMPACK_CACHE", shared_cache())
            .env("HOME", home.path())
            .env_remove("NETRC")
            .env_remove("UV_INDEX_CORP_USERNAME")
            .env_remove("UV_INDEX_CORP_PASSWORD")
            .output()
            .unwrap()
    };
    let built = run(&["build", app.path().to_str().unwrap(), "-o", &oci, "--json"]);
    succeeded(&built);
    let report: serde_json::Value = serde_json::from_slice(&built.stdout).unwrap();
    let compiled = report["builder"]["compiled"].to_string();
    assert!(compiled.contains("corp-netrc==0.1"), "{report}");
    printed(
        &run(&["run", &oci, "--port", &free_port().to_string()]),
        "credentials from a netrc",
    );
    let leaks = holding(&layout, &[PASSWORD]);
    assert!(leaks.is_empty(), "{leaks:?}");
}
