//! The start command: exec form, so the server is PID 1 and receives
//! SIGTERM; listening on 0.0.0.0:$PORT, as Cloud Run requires.

use anyhow::{bail, Result};
use regex::Regex;
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::Path;

/// Expands `$VAR` in its arguments and execs them: `$PORT` in an exec-form
/// command without a shell, and the server (not this launcher) ends up as
/// PID 1.
pub const LAUNCHER: &str =
    "import os,sys;a=[os.path.expandvars(x) for x in sys.argv[1:]];os.execvp(a[0],a)";

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StartCommand {
    pub argv: Vec<String>,
    /// How it was found, for the plan and for error messages.
    pub source: String,
    /// A health endpoint seen in the source, for probes.
    pub health_path: Option<String>,
}

/// Wraps `args` in the launcher when they refer to environment variables.
pub fn exec_form(args: Vec<String>) -> Vec<String> {
    if args.iter().any(|a| a.contains('$')) {
        let mut v = vec![
            "/opt/venv/bin/python".to_string(),
            "-c".into(),
            LAUNCHER.into(),
        ];
        v.extend(args);
        v
    } else {
        args
    }
}

/// Splits a command line written by the user (Procfile, config, `--command`).
pub fn split_command(cmd: &str, origin: &str) -> Result<Vec<String>> {
    let words = shell_words::split(cmd)
        .map_err(|e| anyhow::anyhow!("{origin}: cannot split command {cmd:?}: {e}"))?;
    if words.is_empty() {
        bail!("{origin}: the command is empty");
    }
    for w in &words {
        if matches!(w.as_str(), "&&" | "||" | ";" | "|" | ">" | "<" | "&")
            || w.contains("$(")
            || w.contains('`')
        {
            bail!(
                "{origin}: {cmd:?} uses shell syntax ({w}), but the image has no shell; \
                 write a single command (environment variables like $PORT are expanded)"
            );
        }
    }
    Ok(words)
}

fn read(dir: &Path, rel: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(rel)).ok()
}

fn module_of(rel: &str) -> String {
    rel.trim_end_matches(".py")
        .trim_end_matches("/__init__")
        .replace('/', ".")
}

/// Finds the start command of the project in `dir`. `deps` holds the
/// normalised names of the resolved dependencies.
pub fn infer(dir: &Path, app_files: &[String], deps: &BTreeSet<String>) -> Result<StartCommand> {
    let health_path = find_health_path(dir, app_files);
    let has = |n: &str| deps.contains(n);
    let gunicorn = |target: String, source: String| StartCommand {
        // gunicorn binds 0.0.0.0:$PORT by itself when PORT is set (and no
        // bind is configured); one worker with threads is Cloud Run's advice.
        argv: vec![
            "/opt/venv/bin/gunicorn".into(),
            "--workers".into(),
            "1".into(),
            "--threads".into(),
            "8".into(),
            "--timeout".into(),
            "0".into(),
            target,
        ],
        source,
        health_path: health_path.clone(),
    };
    let uvicorn = |target: String, source: String| StartCommand {
        argv: exec_form(vec![
            "uvicorn".into(),
            target,
            "--host".into(),
            "0.0.0.0".into(),
            "--port".into(),
            "$PORT".into(),
        ]),
        source,
        health_path: health_path.clone(),
    };

    // 1. A Procfile's web process wins.
    if let Some(text) = read(dir, "Procfile") {
        for (i, line) in text.lines().enumerate() {
            if let Some(cmd) = line.strip_prefix("web:") {
                let origin = format!("{}:{}", dir.join("Procfile").display(), i + 1);
                return Ok(StartCommand {
                    argv: exec_form(split_command(cmd.trim(), &origin)?),
                    source: format!("{origin} (web process)"),
                    health_path,
                });
            }
        }
    }

    // 2. Django, through manage.py and the settings' WSGI_APPLICATION.
    if let Some(manage) = read(dir, "manage.py") {
        let re = Regex::new(r#"DJANGO_SETTINGS_MODULE["']\s*,\s*["']([\w.]+)["']"#).unwrap();
        let settings = re
            .captures(&manage)
            .map(|c| c[1].to_string())
            .ok_or_else(|| anyhow::anyhow!("{}: found manage.py but no DJANGO_SETTINGS_MODULE default in it; set [tool.slimpack] command", dir.join("manage.py").display()))?;
        let settings_rel = format!("{}.py", settings.replace('.', "/"));
        let text = read(dir, &settings_rel).ok_or_else(|| {
            anyhow::anyhow!(
                "manage.py names settings {settings}, but {settings_rel} does not exist"
            )
        })?;
        let wsgi = Regex::new(r#"(?m)^WSGI_APPLICATION\s*=\s*["']([\w.]+)["']"#).unwrap();
        let app = wsgi
            .captures(&text)
            .map(|c| c[1].to_string())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "{settings_rel}: no WSGI_APPLICATION; set it, or set [tool.slimpack] command"
                )
            })?;
        let (module, object) = app.rsplit_once('.').unwrap_or((&app, "application"));
        if !has("gunicorn") {
            bail!("found a Django project ({settings_rel}: WSGI_APPLICATION = {app}) but no WSGI server among the dependencies: add gunicorn, or set [tool.slimpack] command");
        }
        let mut cmd = gunicorn(
            format!("{module}:{object}"),
            format!("Django: {settings_rel} WSGI_APPLICATION = {app}"),
        );
        if cmd.health_path.is_none() {
            cmd.health_path = Some("/".into());
        }
        return Ok(cmd);
    }

    // 3. FastAPI / Starlette / Flask objects in the usual modules.
    let candidates = [
        "main.py",
        "app.py",
        "wsgi.py",
        "asgi.py",
        "application.py",
        "server.py",
        "api.py",
        "app/main.py",
        "app/__init__.py",
        "src/main.py",
        "src/app.py",
    ];
    let asgi_re =
        Regex::new(r"(?m)^(\w+)\s*(?::\s*\w+\s*)?=\s*(?:fastapi\.)?(FastAPI|Starlette)\(").unwrap();
    let flask_re = Regex::new(r"(?m)^(\w+)\s*(?::\s*\w+\s*)?=\s*(?:flask\.)?Flask\(").unwrap();
    let factory_re = Regex::new(r"(?m)^def (create_app|make_app)\(\s*\)").unwrap();
    let wsgi_re = Regex::new(r"(?m)^(application)\s*=").unwrap();
    for rel in candidates {
        if !app_files.iter().any(|f| f == rel) {
            continue;
        }
        let Some(text) = read(dir, rel) else { continue };
        let module = module_of(rel.trim_start_matches("src/"));
        if let Some(c) = asgi_re.captures(&text) {
            let target = format!("{module}:{}", &c[1]);
            if !has("uvicorn") {
                bail!("found a {} app in {rel} ({target}) but no ASGI server among the dependencies: add uvicorn, or set [tool.slimpack] command", &c[2]);
            }
            return Ok(uvicorn(
                target.clone(),
                format!("{} app {target} in {rel}", &c[2]),
            ));
        }
        let flask = flask_re
            .captures(&text)
            .map(|c| c[1].to_string())
            .or_else(|| factory_re.captures(&text).map(|c| format!("{}()", &c[1])))
            .or_else(|| {
                (rel == "wsgi.py")
                    .then(|| wsgi_re.captures(&text).map(|c| c[1].to_string()))
                    .flatten()
            });
        if let Some(obj) = flask {
            let target = format!("{module}:{obj}");
            if !has("gunicorn") {
                bail!("found a WSGI app in {rel} ({target}) but no WSGI server among the dependencies: add gunicorn, or set [tool.slimpack] command");
            }
            return Ok(gunicorn(
                target.clone(),
                format!("WSGI app {target} in {rel}"),
            ));
        }
    }
    bail!(
        "cannot tell how to start the app in {}: no Procfile `web:` line, no manage.py, and no Flask/FastAPI app object in {}.\n\
         Set it in pyproject.toml:\n  [tool.slimpack]\n  command = \"gunicorn main:app\"\nor pass --command \"...\"",
        dir.display(),
        candidates.join(", ")
    )
}

fn find_health_path(dir: &Path, app_files: &[String]) -> Option<String> {
    let re = Regex::new(
        r#"["'](/(?:healthz?|health-check|healthcheck|_health|livez|readyz?|ping))["']"#,
    )
    .unwrap();
    app_files
        .iter()
        .filter(|f| f.ends_with(".py"))
        .filter_map(|f| read(dir, f))
        .find_map(|t| re.captures(&t).map(|c| c[1].to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(files: &[(&str, &str)]) -> (tempfile::TempDir, Vec<String>) {
        let d = tempfile::tempdir().unwrap();
        for (f, t) in files {
            let p = d.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, t).unwrap();
        }
        let names = files.iter().map(|(f, _)| f.to_string()).collect();
        (d, names)
    }

    fn deps(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flask_with_gunicorn() {
        let (d, f) = project(&[("main.py", "from flask import Flask\napp = Flask(__name__)\n@app.route(\"/health\")\ndef h(): pass\n")]);
        let c = infer(d.path(), &f, &deps(&["flask", "gunicorn"])).unwrap();
        assert_eq!(c.argv[0], "/opt/venv/bin/gunicorn");
        assert_eq!(c.argv.last().unwrap(), "main:app");
        assert_eq!(c.health_path.as_deref(), Some("/health"));
        let e = infer(d.path(), &f, &deps(&["flask"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("add gunicorn"), "{e}");
    }

    #[test]
    fn fastapi_uses_launcher_for_port() {
        let (d, f) = project(&[("main.py", "from fastapi import FastAPI\napp = FastAPI()\n")]);
        let c = infer(d.path(), &f, &deps(&["fastapi", "uvicorn"])).unwrap();
        assert_eq!(&c.argv[..3], &["/opt/venv/bin/python", "-c", LAUNCHER]);
        assert_eq!(
            c.argv[3..],
            ["uvicorn", "main:app", "--host", "0.0.0.0", "--port", "$PORT"]
        );
    }

    #[test]
    fn django_via_manage_py() {
        let (d, f) = project(&[
            (
                "manage.py",
                "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'blog.settings')\n",
            ),
            (
                "blog/settings.py",
                "WSGI_APPLICATION = 'blog.wsgi.application'\n",
            ),
        ]);
        let c = infer(d.path(), &f, &deps(&["django", "gunicorn"])).unwrap();
        assert_eq!(c.argv.last().unwrap(), "blog.wsgi:application");
        assert_eq!(c.health_path.as_deref(), Some("/"));
    }

    #[test]
    fn procfile_wins_and_shell_syntax_is_refused() {
        let (d, f) = project(&[
            (
                "Procfile",
                "release: x\nweb: gunicorn app:app --bind 0.0.0.0:$PORT\n",
            ),
            ("main.py", "app = Flask(__name__)\n"),
        ]);
        let c = infer(d.path(), &f, &deps(&["gunicorn"])).unwrap();
        assert_eq!(c.argv[1], "-c");
        assert!(c.source.contains("Procfile:2"));
        std::fs::write(
            d.path().join("Procfile"),
            "web: cd app && gunicorn app:app\n",
        )
        .unwrap();
        let e = infer(d.path(), &f, &deps(&["gunicorn"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("shell syntax"), "{e}");
    }

    #[test]
    fn nothing_found_says_how_to_set_it() {
        let (d, f) = project(&[("util.py", "x = 1\n")]);
        let e = infer(d.path(), &f, &deps(&[])).unwrap_err().to_string();
        assert!(
            e.contains("[tool.slimpack]") && e.contains("--command"),
            "{e}"
        );
    }
}
