//! The corpus: small projects shaped like the ones people bring (scripts
//! and jobs, stdlib-only apps, Pipfile, PDM, setup.py, packaged apps with
//! console scripts, uv workspaces and path dependencies, Python version
//! files, apps that call system tools).
//! Each is built with one shared cache and started the way its kind runs:
//! services pass `run --check` and answer a request, jobs run to their end
//! with their exit code, a worker is called a worker, and what cannot be
//! built is refused with a message that names the file.

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

enum Expect {
    /// Passes `run --check` (startup probe on `probe`) and answers `path`
    /// with a body containing `body`.
    Serves {
        probe: Option<&'static str>,
        path: &'static str,
        body: &'static str,
    },
    /// Runs to its end with `code`, printing `prints`.
    Job { code: i32, prints: &'static str },
    /// Runs and never listens.
    Worker,
    /// The build fails with all of these in its error.
    Refused(&'static [&'static str]),
}

struct Case {
    name: &'static str,
    /// What the plan says chose the start command.
    rule: &'static str,
    expect: Expect,
}

const CASES: &[Case] = &[
    Case {
        name: "script-bot",
        rule: "bot.py, run as a script",
        expect: Expect::Job {
            code: 0,
            prints: "\"bot\": \"ran\"",
        },
    },
    Case {
        name: "stdlib-http",
        rule: "server.py, run as a script",
        expect: Expect::Serves {
            probe: Some("/health"),
            path: "/",
            body: "hello from the standard library",
        },
    },
    Case {
        name: "flask-app-run",
        rule: "runs its WSGI app itself",
        expect: Expect::Serves {
            probe: None,
            path: "/",
            body: "flask dev server",
        },
    },
    Case {
        name: "pipfile-flask",
        rule: "WSGI app app:app in app.py",
        expect: Expect::Serves {
            probe: Some("/health"),
            path: "/health",
            body: "pipfile ok",
        },
    },
    Case {
        name: "pipfile-django",
        rule: "Django",
        expect: Expect::Serves {
            probe: None,
            path: "/",
            body: "django from a Pipfile",
        },
    },
    Case {
        name: "django-whitenoise",
        rule: "Django",
        // collectstatic ran at build time: WhiteNoise serves the file from
        // STATIC_ROOT (it is in no other place it would look).
        expect: Expect::Serves {
            probe: None,
            path: "/static/css/site.css",
            body: "corpus-static-marker",
        },
    },
    Case {
        name: "pipfile-unlocked",
        rule: "main.py, run as a script",
        expect: Expect::Job {
            code: 0,
            prints: "signed: corpus.",
        },
    },
    Case {
        name: "pdm-app",
        rule: "main.py, run as a script",
        expect: Expect::Job {
            code: 0,
            prints: "itsdangerous 2.1.2",
        },
    },
    Case {
        name: "setup-py-app",
        rule: "WSGI app app:app in app.py",
        expect: Expect::Serves {
            probe: Some("/health"),
            path: "/health",
            body: "setup.py ok",
        },
    },
    Case {
        name: "src-layout-cli",
        rule: "console script greeter",
        expect: Expect::Job {
            code: 0,
            prints: "hello from greeter 1.2.0",
        },
    },
    Case {
        name: "packaged-fastapi",
        rule: "Procfile",
        expect: Expect::Serves {
            probe: Some("/health"),
            path: "/health",
            body: "\"shop\":\"open\"",
        },
    },
    Case {
        name: "poetry-scripts",
        rule: "console script reporter ",
        expect: Expect::Job {
            code: 0,
            prints: "report ready",
        },
    },
    Case {
        name: "python-m-job",
        rule: "python -m nightly",
        expect: Expect::Job {
            code: 0,
            prints: "nightly job on 3.13",
        },
    },
    Case {
        name: "python-version-3",
        rule: "main.py",
        expect: Expect::Job {
            code: 0,
            prints: "python 3.13",
        },
    },
    Case {
        name: "runtime-txt",
        rule: "main.py",
        expect: Expect::Job {
            code: 0,
            prints: "python 3.11",
        },
    },
    Case {
        name: "tool-versions",
        rule: "main.py",
        expect: Expect::Job {
            code: 0,
            prints: "python 3.11",
        },
    },
    Case {
        name: "mise-python",
        rule: "main.py",
        expect: Expect::Job {
            code: 0,
            prints: "python 3.13",
        },
    },
    Case {
        name: "python39-flask",
        rule: "WSGI app app:app in app.py",
        expect: Expect::Serves {
            probe: Some("/health"),
            path: "/health",
            body: "python 3.9",
        },
    },
    Case {
        name: "python314-flask",
        rule: "WSGI app app:app in app.py",
        expect: Expect::Serves {
            probe: Some("/health"),
            path: "/health",
            body: "python 3.14",
        },
    },
    Case {
        name: "native-lib-job",
        rule: "main.py",
        expect: Expect::Job {
            code: 0,
            prints: "greenlet 3.1.1 42",
        },
    },
    Case {
        name: "job-exit-code",
        rule: "main.py",
        expect: Expect::Job {
            code: 3,
            prints: "found 3 bad rows",
        },
    },
    Case {
        name: "worker-no-port",
        rule: "worker.py",
        expect: Expect::Worker,
    },
    Case {
        name: "python-too-old",
        rule: "",
        expect: Expect::Refused(&[
            "python-too-old/.python-version",
            "\"3.7\"",
            "available: Python 3.13",
            "Python 3.9 (Debian 11 bullseye)",
        ]),
    },
    Case {
        name: "uv-workspace",
        rule: "main.py",
        expect: Expect::Job {
            code: 0,
            prints: "hello from the greet member",
        },
    },
    Case {
        name: "poetry-path-dep",
        rule: "main.py",
        expect: Expect::Job {
            code: 0,
            prints: "total cents: 1325 money 0.4.0",
        },
    },
    Case {
        name: "requirements-local",
        rule: "main.py",
        expect: Expect::Job {
            code: 0,
            prints: "REPORT! report-job 2.0.0",
        },
    },
    Case {
        name: "uv-sources-path",
        rule: "main.py",
        expect: Expect::Job {
            code: 0,
            prints: "Paris-Berlin km: 877",
        },
    },
    Case {
        name: "pdf-audio",
        rule: "main.py",
        expect: Expect::Job {
            code: 0,
            prints: "ogg bytes: True",
        },
    },
];

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

fn slimpack(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_slimpack"))
        .args(args)
        .env("SLIMPACK_CACHE", cache)
        .output()
        .unwrap()
}

fn listing(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap().into_path())
        .collect();
    v.sort();
    v
}

fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// Serves `layout` in the foreground and fetches `path` once it answers.
fn fetch(layout: &str, path: &str, cache: &Path) -> Result<String, String> {
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_slimpack"))
        .args(["run", layout, "--port", &port.to_string()])
        .env("SLIMPACK_CACHE", cache)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let got = loop {
        if let Some((200, body)) = http_get(port, path) {
            break Ok(body);
        }
        if start.elapsed() > Duration::from_secs(30) {
            break Err(format!("GET {path} never answered 200"));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // SAFETY: signalling the child we spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    got
}

/// `slimpack run …` on a port of its own: the tests run side by side, and
/// an image's run publishes its port (8080 by default).
fn run_on_free_port(args: &[&str], cache: &Path) -> Output {
    let port = free_port().to_string();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--port", &port]);
    slimpack(&all, cache)
}

fn run_json(args: &[&str], cache: &Path) -> (bool, Value) {
    let out = run_on_free_port(args, cache);
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.success(), v)
}

fn check<'a>(report: &'a Value, name: &str) -> Option<&'a Value> {
    report["checks"]
        .as_array()?
        .iter()
        .find(|c| c["name"].as_str().is_some_and(|n| n.starts_with(name)))
}

/// Builds and starts one project; what went wrong, if anything.
fn try_case(case: &Case, out: &Path, cache: &Path) -> Result<(), String> {
    let dir = corpus().join(case.name);
    let before = listing(&dir);
    let layout = out.join(format!("{}.oci", case.name));
    let oci = format!("oci:{}", layout.display());
    let dir_s = dir.to_str().unwrap();
    let built = slimpack(&["build", dir_s, "-o", &oci, "--json"], cache);
    if listing(&dir) != before {
        return Err("the build wrote into the project".into());
    }
    let stderr = String::from_utf8_lossy(&built.stderr).into_owned();
    if let Expect::Refused(needles) = &case.expect {
        if built.status.success() {
            return Err("built, but should have been refused".into());
        }
        if layout.exists() {
            return Err("a refused build left an output".into());
        }
        return match needles.iter().find(|n| !stderr.contains(*n)) {
            Some(n) => Err(format!("the error lacks {n:?}: {stderr}")),
            None => Ok(()),
        };
    }
    if !built.status.success() {
        return Err(format!("build failed: {stderr}"));
    }
    let plan = slimpack(&["build", dir_s, "--plan"], cache);
    let plan: Value = serde_json::from_slice(&plan.stdout).map_err(|e| format!("plan: {e}"))?;
    let source = plan["start"]["source"].as_str().unwrap_or("");
    if !source.contains(case.rule) {
        return Err(format!(
            "start chosen by {source:?}, expected {:?}",
            case.rule
        ));
    }
    match &case.expect {
        Expect::Serves { probe, path, body } => {
            let mut args = vec!["run", &oci, "--check", "--json"];
            if let Some(p) = probe {
                args.extend(["--probe", p]);
            }
            let (ok, report) = run_json(&args, cache);
            if !ok {
                return Err(format!("run --check failed: {report}"));
            }
            let got = fetch(&oci, path, cache)?;
            if !got.contains(body) {
                return Err(format!("GET {path} gave {got:?}, expected {body:?}"));
            }
        }
        Expect::Job { code, prints } => {
            let run = run_on_free_port(&["run", &oci], cache);
            let stdout = String::from_utf8_lossy(&run.stdout);
            if run.status.code() != Some(*code) || !stdout.contains(prints) {
                return Err(format!(
                    "run exited {:?} printing {stdout:?} ({}), expected {code} and {prints:?}",
                    run.status.code(),
                    String::from_utf8_lossy(&run.stderr)
                ));
            }
            let (ok, report) = run_json(&["run", &oci, "--check", "--json"], cache);
            let job = check(&report, "job").ok_or(format!("no job check: {report}"))?;
            let detail = job["detail"].as_str().unwrap_or("");
            if ok != (*code == 0) || !detail.starts_with(&format!("exited {code} in ")) {
                return Err(format!("run --check: {report}"));
            }
        }
        Expect::Worker => {
            let (ok, report) = run_json(
                &["run", &oci, "--check", "--json", "--startup-timeout", "2"],
                cache,
            );
            let probe = check(&report, "startup probe").map(|c| c["detail"].to_string());
            if ok || !probe.as_deref().unwrap_or("").contains("a worker") {
                return Err(format!("not reported as a worker: {report}"));
            }
        }
        Expect::Refused(_) => unreachable!("handled above"),
    }
    Ok(())
}

#[test]
fn corpus_projects_build_and_start() {
    if which("bwrap").is_none() {
        panic!("bwrap is needed (./test.sh installs it)");
    }
    let cache = shared_cache();
    let out = tempfile::tempdir().unwrap();
    let mut failed = Vec::new();
    for case in CASES {
        let t = Instant::now();
        let result = try_case(case, out.path(), &cache);
        eprintln!(
            "corpus {:<18} {} in {:.1}s",
            case.name,
            if result.is_ok() { "ok" } else { "FAILED" },
            t.elapsed().as_secs_f64()
        );
        if let Err(e) = result {
            failed.push(format!("{}: {e}", case.name));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} corpus projects failed:\n{}",
        failed.len(),
        CASES.len(),
        failed.join("\n")
    );
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// A git dependency (here a repository on disk, `git+file://`: no git host
/// is reachable from the test machines): resolved to the tag's commit,
/// which the plan records, cloned and built into the venv. A URL with
/// credentials in it is refused before anything is fetched.
#[test]
fn git_dependencies_are_pinned_to_a_commit() {
    let cache = shared_cache();
    let repo = tempfile::tempdir().unwrap();
    let r = repo.path();
    std::fs::create_dir_all(r.join("src/colors")).unwrap();
    std::fs::write(
        r.join("pyproject.toml"),
        "[build-system]\nrequires = ['hatchling']\nbuild-backend = 'hatchling.build'\n\n[project]\nname = 'colors'\nversion = '0.5.0'\n",
    )
    .unwrap();
    std::fs::write(r.join("src/colors/__init__.py"), "RED = '#ff0000'\n").unwrap();
    let git = |args: &[&str]| {
        let st = Command::new("git")
            .args([
                "-c",
                "user.email=corpus@example.com",
                "-c",
                "user.name=corpus",
            ])
            .args(args)
            .current_dir(r)
            .status()
            .unwrap();
        assert!(st.success(), "git {args:?}");
    };
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&["commit", "-qm", "colors 0.5.0"]);
    git(&["tag", "v0.5.0"]);
    let head = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(r)
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&head.stdout).trim().to_string();

    let app = tempfile::tempdir().unwrap();
    std::fs::write(
        app.path().join("requirements.txt"),
        format!("colors @ git+file://{}@v0.5.0\n", r.display()),
    )
    .unwrap();
    std::fs::write(
        app.path().join("main.py"),
        "import colors\nprint('red is', colors.RED)\n",
    )
    .unwrap();
    let dir = app.path().to_str().unwrap();
    let plan = slimpack(&["build", dir, "--plan"], &cache);
    assert!(
        plan.status.success(),
        "{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    let plan: Value = serde_json::from_slice(&plan.stdout).unwrap();
    let pinned = plan["dependencies"]["git"][0].as_str().unwrap().to_string();
    assert!(pinned.ends_with(&format!("@{head}")), "{pinned}");
    let out = tempfile::tempdir().unwrap();
    let oci = format!("oci:{}", out.path().join("git.oci").display());
    let built = slimpack(&["build", dir, "-o", &oci], &cache);
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let run = run_on_free_port(&["run", &oci], &cache);
    assert_eq!(
        String::from_utf8_lossy(&run.stdout).trim(),
        "red is #ff0000",
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );

    std::fs::write(
        app.path().join("requirements.txt"),
        "colors @ git+https://ghp_notreal@example.com/o/colors.git@v1\n",
    )
    .unwrap();
    let refused = slimpack(&["build", dir, "--plan"], &cache);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        err.contains("requirements.txt:1")
            && err.contains("credentials")
            && !err.contains("ghp_notreal"),
        "{err}"
    );
}

/// Build steps get the environment given for them (never the image's),
/// say which variable they missed when they fail, and write into the app
/// layer: a `build-steps` command's file is served beside collectstatic's.
#[test]
fn build_steps_run_with_their_own_environment_into_the_app_layer() {
    let cache = shared_cache();
    let app = copy_dir(&corpus().join("django-whitenoise"));
    let settings = app.path().join("shop/settings.py");
    let text = std::fs::read_to_string(&settings).unwrap();
    std::fs::write(
        &settings,
        text.replace(
            "DEBUG = False",
            "DEBUG = False\nBUILD_FLAG = os.environ.get('SHOP_BUILD_FLAG') or os.environ['SHOP_RUNTIME_FLAG']",
        ),
    )
    .unwrap();
    std::fs::write(
        app.path().join("slimpack.toml"),
        "env = { SHOP_RUNTIME_FLAG = \"in-the-image\" }\nbuild-steps = [\"python -c \\\"import os; open('staticfiles/build-info.txt', 'w').write('written by a step: ' + os.environ['SHOP_BUILD_FLAG'])\\\"\"]\n",
    )
    .unwrap();
    let dir = app.path().to_str().unwrap();
    let out = tempfile::tempdir().unwrap();
    let oci = format!("oci:{}", out.path().join("steps.oci").display());

    // The image's environment reaches the steps: collectstatic passes; the
    // step that reads SHOP_BUILD_FLAG fails and names it.
    let failed = slimpack(&["build", dir, "-o", &oci], &cache);
    let e = String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success(), "built without SHOP_BUILD_FLAG");
    assert!(
        e.contains("build-steps") && e.contains("--build-env SHOP_BUILD_FLAG=VALUE"),
        "{e}"
    );
    assert!(
        !out.path().join("steps.oci").exists(),
        "a failed build left an output"
    );

    let built = slimpack(
        &[
            "build",
            dir,
            "-o",
            &oci,
            "--build-env",
            "SHOP_BUILD_FLAG=only-at-build",
        ],
        &cache,
    );
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let got = fetch(&oci, "/static/build-info.txt", &cache).unwrap();
    assert_eq!(got, "written by a step: only-at-build");
    let css = fetch(&oci, "/static/css/site.css", &cache).unwrap();
    assert!(css.contains("corpus-static-marker"), "{css}");
    // The build's variable is in no layer and not in the configuration.
    for e in walkdir::WalkDir::new(out.path()).into_iter().flatten() {
        if e.file_type().is_file() {
            let bytes = std::fs::read(e.path()).unwrap();
            let mut plain = Vec::new();
            let text = if bytes.starts_with(&[0x1f, 0x8b]) {
                std::io::Read::read_to_end(
                    &mut flate2::read::GzDecoder::new(&bytes[..]),
                    &mut plain,
                )
                .unwrap();
                &plain
            } else {
                &bytes
            };
            let needle = b"SHOP_BUILD_FLAG=";
            assert!(
                !text.windows(needle.len()).any(|w| w == needle),
                "{} holds the build's environment",
                e.path().display()
            );
        }
    }

    // Same inputs: the steps' output comes from the cache, same digest.
    let again = slimpack(
        &[
            "build",
            dir,
            "-o",
            &oci,
            "--build-env",
            "SHOP_BUILD_FLAG=only-at-build",
            "--json",
        ],
        &cache,
    );
    let report: Value = serde_json::from_slice(&again.stdout).unwrap();
    let app_layer = report["layers"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(app_layer["cached"], true, "{app_layer}");
}
