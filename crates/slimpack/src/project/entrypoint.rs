//! The start command: exec form, so the server is PID 1 and receives
//! SIGTERM; listening on 0.0.0.0:$PORT, as Cloud Run requires.

use super::normalize_name;
use anyhow::{bail, Result};
use regex::Regex;
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::Path;

/// Expands `$VAR` in its arguments (`$PORT` in an exec-form command, with
/// no shell in the image) and starts them as PID 1. A console script of
/// this very interpreter (uv writes `#!/opt/venv/bin/python`: uvicorn,
/// hypercorn, ...) runs in this process, as `python SCRIPT` would run it,
/// instead of being exec'd: a second interpreter start for nothing (time
/// to ready of fastapi-psycopg2, median of 15: 468 → 417 ms). Anything else is
/// exec'd. The script's globals are those of a script: the launcher's names
/// are gone before it runs.
pub const LAUNCHER: &str = r#"def l():
 import os,sys
 a=[os.path.expandvars(x) for x in sys.argv[1:]]
 p=a[0]
 if '/' not in p:
  for d in os.environ.get('PATH','').split(os.pathsep):
   q=os.path.join(d or '.',p)
   if os.path.isfile(q) and os.access(q,os.X_OK):p=q;break
 try:
  with open(p,'rb') as f:s=f.read()
 except OSError:s=b''
 if not s.startswith(b'#!'+os.fsencode(sys.executable)+b'\n'):os.execvp(a[0],a)
 sys.argv=[p]+a[1:]
 if sys.path[:1]==['']:sys.path[0]=os.path.dirname(p)
 g=globals();g['__file__']=p;del g['l']
 return compile(s,p,'exec')
exec(l())"#;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StartCommand {
    pub argv: Vec<String>,
    /// How it was found, for the plan and for error messages.
    pub source: String,
    /// A health endpoint seen in the source, for probes.
    pub health_path: Option<String>,
    /// Something the user should know about the choice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// What the project declares that can start it.
#[derive(Debug, Clone, Copy)]
pub struct Declared<'a> {
    /// The project's normalised name.
    pub name: &'a str,
    /// `[project.scripts]` of an installed package: name → `module:func`.
    pub scripts: &'a std::collections::BTreeMap<String, String>,
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

/// A file of the project, or None; one that leads outside the project is
/// never read (a Procfile linked to a host file would be quoted in errors).
fn read(dir: &Path, rel: &str) -> Option<String> {
    crate::core::fs::read_project_file(dir, &dir.join(rel)).ok()
}

fn module_of(rel: &str) -> String {
    rel.trim_end_matches(".py")
        .trim_end_matches("/__init__")
        .replace('/', ".")
}

/// Finds the start command of the project in `dir`, first match wins:
/// a Procfile's web process, Django, a framework's app object, the
/// project's console script, a script run with `python`. `deps` holds the
/// normalised names of the resolved dependencies.
pub fn infer(
    dir: &Path,
    app_files: &[String],
    deps: &BTreeSet<String>,
    declared: Declared,
) -> Result<StartCommand> {
    let health_path = find_health_path(dir, app_files);
    if let Some(text) = read(dir, "Procfile") {
        for (i, line) in text.lines().enumerate() {
            if let Some(cmd) = line.strip_prefix("web:") {
                let origin = format!("{}:{}", dir.join("Procfile").display(), i + 1);
                return Ok(StartCommand {
                    argv: exec_form(split_command(cmd.trim(), &origin)?),
                    source: format!("{origin} (web process)"),
                    health_path,
                    warning: None,
                });
            }
        }
    }

    if let Some(manage) = read(dir, "manage.py") {
        return django(dir, &manage, deps, health_path);
    }
    if let Some(cmd) = framework_app(dir, app_files, deps, &health_path)? {
        return Ok(cmd);
    }
    if let Some(cmd) = console_script(declared, &health_path) {
        return Ok(cmd);
    }

    if let Some((argv, source)) = script_command(dir, app_files) {
        return Ok(StartCommand {
            argv,
            source,
            health_path,
            warning: None,
        });
    }
    bail!(
        "cannot tell how to start the app in {}: no Procfile `web:` line, no manage.py, no Flask/FastAPI app object in {}, no console script in [project.scripts], and no {} or __main__.py.\n\
         Set it in pyproject.toml:\n  [tool.slimpack]\n  command = \"gunicorn main:app\"\nor pass --command \"...\"",
        dir.display(),
        APP_MODULES.join(", "),
        SCRIPTS.join(", ")
    )
}

/// gunicorn binds 0.0.0.0:$PORT by itself when PORT is set (and no bind is
/// configured); one worker with threads is Cloud Run's advice.
fn gunicorn(health_path: Option<String>, target: String, source: String) -> StartCommand {
    StartCommand {
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
        health_path,
        warning: None,
    }
}

fn uvicorn(health_path: Option<String>, target: String, source: String) -> StartCommand {
    StartCommand {
        argv: exec_form(vec![
            "uvicorn".into(),
            target,
            "--host".into(),
            "0.0.0.0".into(),
            "--port".into(),
            "$PORT".into(),
        ]),
        source,
        health_path,
        warning: None,
    }
}

/// Django, through manage.py and the settings' WSGI_APPLICATION.
fn django(
    dir: &Path,
    manage: &str,
    deps: &BTreeSet<String>,
    health_path: Option<String>,
) -> Result<StartCommand> {
    let re = Regex::new(r#"DJANGO_SETTINGS_MODULE["']\s*,\s*["']([\w.]+)["']"#).unwrap();
    let settings = re
        .captures(manage)
        .map(|c| c[1].to_string())
        .ok_or_else(|| anyhow::anyhow!("{}: found manage.py but no DJANGO_SETTINGS_MODULE default in it; set [tool.slimpack] command", dir.join("manage.py").display()))?;
    let settings_rel = format!("{}.py", settings.replace('.', "/"));
    let text = read(dir, &settings_rel).ok_or_else(|| {
        anyhow::anyhow!("manage.py names settings {settings}, but {settings_rel} does not exist")
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
    if !deps.contains("gunicorn") {
        bail!("found a Django project ({settings_rel}: WSGI_APPLICATION = {app}) but no WSGI server among the dependencies: add gunicorn, or set [tool.slimpack] command");
    }
    let mut cmd = gunicorn(
        health_path,
        format!("{module}:{object}"),
        format!("Django: {settings_rel} WSGI_APPLICATION = {app}"),
    );
    if cmd.health_path.is_none() {
        cmd.health_path = Some("/".into());
    }
    Ok(cmd)
}

/// Modules where apps keep their FastAPI / Starlette / Flask object.
const APP_MODULES: &[&str] = &[
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

/// A FastAPI / Starlette / Flask object in the usual modules, started by
/// its server (or by itself, Flask's `app.run`, when it has none).
fn framework_app(
    dir: &Path,
    app_files: &[String],
    deps: &BTreeSet<String>,
    health_path: &Option<String>,
) -> Result<Option<StartCommand>> {
    let health_path = health_path.clone();
    let asgi_re =
        Regex::new(r"(?m)^(\w+)\s*(?::\s*\w+\s*)?=\s*(?:fastapi\.)?(FastAPI|Starlette)\(").unwrap();
    let flask_re = Regex::new(r"(?m)^(\w+)\s*(?::\s*\w+\s*)?=\s*(?:flask\.)?Flask\(").unwrap();
    let factory_re = Regex::new(r"(?m)^def (create_app|make_app)\(\s*\)").unwrap();
    let wsgi_re = Regex::new(r"(?m)^(application)\s*=").unwrap();
    for rel in APP_MODULES {
        if !app_files.iter().any(|f| f == rel) {
            continue;
        }
        let Some(text) = read(dir, rel) else { continue };
        let module = module_of(rel.trim_start_matches("src/"));
        if let Some(c) = asgi_re.captures(&text) {
            let target = format!("{module}:{}", &c[1]);
            if !deps.contains("uvicorn") {
                bail!("found a {} app in {rel} ({target}) but no ASGI server among the dependencies: add uvicorn, or set [tool.slimpack] command", &c[2]);
            }
            return Ok(Some(uvicorn(
                health_path.clone(),
                target.clone(),
                format!("{} app {target} in {rel}", &c[2]),
            )));
        }
        let flask = flask_re
            .captures(&text)
            .map(|c| c[1].to_string())
            .or_else(|| factory_re.captures(&text).map(|c| format!("{}()", &c[1])))
            .or_else(|| {
                (*rel == "wsgi.py")
                    .then(|| wsgi_re.captures(&text).map(|c| c[1].to_string()))
                    .flatten()
            });
        if let Some(obj) = flask {
            let target = format!("{module}:{obj}");
            if !deps.contains("gunicorn") && runs_itself(&text) {
                return Ok(Some(StartCommand {
                    argv: script_argv(&[rel]),
                    source: format!("{rel} runs its WSGI app itself (app.run under __main__)"),
                    health_path: health_path.clone(),
                    warning: Some(format!("{rel} starts Flask's development server, which is not made for production traffic: add gunicorn to the dependencies (slimpack then runs `gunicorn {target}`)")),
                }));
            }
            if !deps.contains("gunicorn") {
                bail!("found a WSGI app in {rel} ({target}) but no WSGI server among the dependencies: add gunicorn, or set [tool.slimpack] command");
            }
            return Ok(Some(gunicorn(
                health_path.clone(),
                target.clone(),
                format!("WSGI app {target} in {rel}"),
            )));
        }
    }
    Ok(None)
}

/// The project's own console script: the only one, or the one named like
/// the project.
fn console_script(declared: Declared, health_path: &Option<String>) -> Option<StartCommand> {
    let script = match declared.scripts.len() {
        1 => declared.scripts.keys().next(),
        _ => declared
            .scripts
            .keys()
            .find(|k| normalize_name(k) == declared.name),
    };
    script.map(|name| StartCommand {
        argv: vec![format!("/opt/venv/bin/{name}")],
        source: format!(
            "console script {name} = {:?} from [project.scripts]",
            declared.scripts[name]
        ),
        health_path: health_path.clone(),
        warning: None,
    })
}

/// The venv's interpreter, which runs scripts in the image.
const VENV_PYTHON: &str = "/opt/venv/bin/python";

/// Runs a script (`FILE`, or `-m MODULE`) as `python` would, after making
/// SIGTERM end it: as PID 1 a process ignores the signals it does not
/// handle, so a plain script would sit out Cloud Run's SIGTERM until the
/// SIGKILL. A handler the script installs itself still wins.
pub const SCRIPT_LAUNCHER: &str = "import runpy,signal,sys;signal.signal(signal.SIGTERM,lambda*a:sys.exit(143));m=sys.argv[1]=='-m';sys.argv=sys.argv[2:] if m else sys.argv[1:];runpy.run_module(sys.argv[0],run_name='__main__',alter_sys=True) if m else runpy.run_path(sys.argv[0],run_name='__main__')";

/// Files a project runs as `python FILE`, in the order they are looked for.
const SCRIPTS: &[&str] = &[
    "main.py",
    "app.py",
    "bot.py",
    "server.py",
    "run.py",
    "worker.py",
];

/// `python FILE` or `python -m MODULE` through [`SCRIPT_LAUNCHER`].
fn script_argv(args: &[&str]) -> Vec<String> {
    [VENV_PYTHON, "-c", SCRIPT_LAUNCHER]
        .iter()
        .chain(args)
        .map(|s| s.to_string())
        .collect()
}

/// Where the module's `if __name__ == "__main__":` block starts.
fn main_block(text: &str) -> Option<usize> {
    let main = Regex::new(r#"(?m)^if\s+__name__\s*==\s*["']__main__["']\s*:"#).unwrap();
    main.find(text).map(|m| m.end())
}

/// Does the module start its app itself when run as a script?
fn runs_itself(text: &str) -> bool {
    main_block(text).is_some_and(|end| text[end..].contains(".run("))
}

/// `python main.py` (and the other usual names), `python -m PKG` for a
/// package with `__main__.py`, or the only Python file at the top when it
/// has a `__main__` block.
fn script_command(dir: &Path, app_files: &[String]) -> Option<(Vec<String>, String)> {
    let python = script_argv;
    if let Some(f) = SCRIPTS.iter().find(|f| app_files.iter().any(|a| a == *f)) {
        return Some((python(&[f]), format!("{f}, run as a script")));
    }
    if app_files.iter().any(|a| a == "__main__.py") {
        return Some((python(&["__main__.py"]), "__main__.py".into()));
    }
    let packages: Vec<&str> = app_files
        .iter()
        .filter_map(|a| a.strip_suffix("/__main__.py"))
        .filter(|p| !p.contains('/') || p.starts_with("src/") && p.matches('/').count() == 1)
        .collect();
    if let [pkg] = packages.as_slice() {
        let module = pkg.trim_start_matches("src/");
        return Some((
            python(&["-m", module]),
            format!("{pkg}/__main__.py, run as `python -m {module}`"),
        ));
    }
    let top: Vec<&String> = app_files
        .iter()
        .filter(|a| a.ends_with(".py") && !a.contains('/') && !a.starts_with("test"))
        .filter(|a| !matches!(a.as_str(), "setup.py" | "conftest.py" | "noxfile.py"))
        .collect();
    if let [only] = top.as_slice() {
        if read(dir, only).is_some_and(|t| main_block(&t).is_some()) {
            return Some((
                python(&[only]),
                format!("{only}, the only Python file at the top, with a __main__ block"),
            ));
        }
    }
    None
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

    static NO_SCRIPTS: std::collections::BTreeMap<String, String> =
        std::collections::BTreeMap::new();
    const NONE: Declared = Declared {
        name: "app",
        scripts: &NO_SCRIPTS,
    };

    fn deps(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flask_with_gunicorn() {
        let (d, f) = project(&[("main.py", "from flask import Flask\napp = Flask(__name__)\n@app.route(\"/health\")\ndef h(): pass\n")]);
        let c = infer(d.path(), &f, &deps(&["flask", "gunicorn"]), NONE).unwrap();
        assert_eq!(c.argv[0], "/opt/venv/bin/gunicorn");
        assert_eq!(c.argv.last().unwrap(), "main:app");
        assert_eq!(c.health_path.as_deref(), Some("/health"));
        let e = infer(d.path(), &f, &deps(&["flask"]), NONE)
            .unwrap_err()
            .to_string();
        assert!(e.contains("add gunicorn"), "{e}");
    }

    #[test]
    fn fastapi_uses_launcher_for_port() {
        let (d, f) = project(&[("main.py", "from fastapi import FastAPI\napp = FastAPI()\n")]);
        let c = infer(d.path(), &f, &deps(&["fastapi", "uvicorn"]), NONE).unwrap();
        assert_eq!(&c.argv[..3], &["/opt/venv/bin/python", "-c", LAUNCHER]);
        assert_eq!(
            c.argv[3..],
            ["uvicorn", "main:app", "--host", "0.0.0.0", "--port", "$PORT"]
        );
    }

    /// Runs [`LAUNCHER`] with the host's python3 on `args`, PATH = `dir`.
    fn launch(dir: &Path, args: &[&str]) -> std::process::Output {
        std::process::Command::new("/usr/bin/python3")
            .arg("-c")
            .arg(LAUNCHER)
            .args(args)
            .env("PATH", dir)
            .env("WHERE", "0.0.0.0:8080")
            .output()
            .unwrap()
    }

    #[test]
    fn the_launcher_runs_this_interpreters_scripts_in_process_and_execs_the_rest() {
        let d = tempfile::tempdir().unwrap();
        let script = |name: &str, text: &str| {
            use std::os::unix::fs::PermissionsExt;
            let p = d.path().join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        // What a script sees: -c in orig_argv only when it ran in process.
        script(
            "serve",
            "#!/usr/bin/python3\nimport sys\nprint(sys.orig_argv[1] == '-c', sys.argv, __name__, __file__ == sys.argv[0], sys.path[0] == sys.argv[0].rsplit('/', 1)[0], sorted(k for k in globals() if not k.startswith('__')))\nsys.exit(3)\n",
        );
        let out = launch(d.path(), &["serve", "--bind", "$WHERE", "$NOPE"]);
        let said = String::from_utf8_lossy(&out.stdout);
        let serve = d.path().join("serve").display().to_string();
        assert_eq!(
            said.trim(),
            format!(
                "True ['{serve}', '--bind', '0.0.0.0:8080', '$NOPE'] __main__ True True ['sys']"
            ),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(3), "the script's exit code");
        // A script with interpreter options, or a program: exec'd, arguments expanded.
        script(
            "other",
            "#!/usr/bin/python3 -I\nimport sys\nprint(sys.orig_argv[1] == '-c', sys.argv[1:])\n",
        );
        let out = launch(d.path(), &["other", "$WHERE"]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "False ['0.0.0.0:8080']"
        );
        let out = launch(Path::new("/usr/bin"), &["echo", "port=$WHERE"]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "port=0.0.0.0:8080"
        );
        assert!(!launch(d.path(), &["missing"]).status.success());
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
        let c = infer(d.path(), &f, &deps(&["django", "gunicorn"]), NONE).unwrap();
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
        let c = infer(d.path(), &f, &deps(&["gunicorn"]), NONE).unwrap();
        assert_eq!(c.argv[1], "-c");
        assert!(c.source.contains("Procfile:2"));
        std::fs::write(
            d.path().join("Procfile"),
            "web: cd app && gunicorn app:app\n",
        )
        .unwrap();
        let e = infer(d.path(), &f, &deps(&["gunicorn"]), NONE)
            .unwrap_err()
            .to_string();
        assert!(e.contains("shell syntax"), "{e}");
    }

    #[test]
    fn nothing_found_says_how_to_set_it() {
        let (d, f) = project(&[("util.py", "x = 1\n")]);
        let e = infer(d.path(), &f, &deps(&[]), NONE)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("[tool.slimpack]") && e.contains("--command"),
            "{e}"
        );
    }

    #[test]
    fn a_procfile_linked_outside_the_project_is_not_read() {
        let outer = tempfile::tempdir().unwrap();
        let d = outer.path().join("app");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(outer.path().join("secret"), "web: secret-command\n").unwrap();
        std::os::unix::fs::symlink("../secret", d.join("Procfile")).unwrap();
        std::fs::write(d.join("bot.py"), "print('hi')\n").unwrap();
        let c = infer(&d, &["bot.py".into()], &deps(&[]), NONE).unwrap();
        assert!(c.argv.iter().all(|a| !a.contains("secret")), "{c:?}");
    }

    #[test]
    fn flask_running_itself_without_a_server() {
        let (d, f) = project(&[(
            "main.py",
            "from flask import Flask\napp = Flask(__name__)\nif __name__ == '__main__':\n    app.run(host='0.0.0.0', port=8080)\n",
        )]);
        let c = infer(d.path(), &f, &deps(&["flask"]), NONE).unwrap();
        assert_eq!(c.argv[3..], ["main.py"]);
        assert_eq!(c.argv[..3], ["/opt/venv/bin/python", "-c", SCRIPT_LAUNCHER]);
        assert!(c.warning.unwrap().contains("add gunicorn"));
    }

    #[test]
    fn console_scripts_and_plain_scripts() {
        let scripts: std::collections::BTreeMap<String, String> =
            [("tool".to_string(), "tool.cli:main".to_string())].into();
        let (d, f) = project(&[("src/tool/cli.py", "def main(): pass\n")]);
        let c = infer(
            d.path(),
            &f,
            &deps(&[]),
            Declared {
                name: "tool",
                scripts: &scripts,
            },
        )
        .unwrap();
        assert_eq!(c.argv, ["/opt/venv/bin/tool"]);
        assert!(c.source.contains("[project.scripts]"));
        let (d, f) = project(&[("bot.py", "print('hi')\n"), ("util.py", "")]);
        let c = infer(d.path(), &f, &deps(&[]), NONE).unwrap();
        assert_eq!(c.argv[3..], ["bot.py"]);
        let (d, f) = project(&[
            ("job/__main__.py", "print('hi')\n"),
            ("job/__init__.py", ""),
        ]);
        let c = infer(d.path(), &f, &deps(&[]), NONE).unwrap();
        assert_eq!(c.argv[3..], ["-m", "job"]);
        let (d, f) = project(&[(
            "convert.py",
            "if __name__ == '__main__':\n    print('hi')\n",
        )]);
        let c = infer(d.path(), &f, &deps(&[]), NONE).unwrap();
        assert_eq!(c.argv[3..], ["convert.py"]);
        let (d, f) = project(&[("a.py", ""), ("b.py", "")]);
        let e = infer(d.path(), &f, &deps(&[]), NONE)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cannot tell how to start") && e.contains("main.py"),
            "{e}"
        );
    }
}
