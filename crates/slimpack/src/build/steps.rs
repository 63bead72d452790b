//! Build steps: commands run at build time in /app with the image's own
//! interpreter and venv, in a sandbox without network, whose new and
//! changed files join the app layer. Django's `collectstatic` is one when
//! the app installs `django.contrib.staticfiles` and sets `STATIC_ROOT`;
//! `build-steps` adds others (translations, asset manifests).
//!
//! Their output is cached by everything it can depend on: the app's files,
//! the venv (dependencies, interpreter, target), the steps and their
//! environment. A code edit runs them again; nothing else does.

use super::app::AppInput;
use crate::builder;
use crate::core::cache::KeyHasher;
use crate::core::errors::hinted;
use crate::project::ignore::AppFile;
use crate::project::{entrypoint, Project};
use crate::python::Lock;
use crate::settings::{Command as CfgCommand, Config};
use anyhow::{Context as _, Result};
use regex::Regex;
use serde::Serialize;
use slimpack_oci::Layer;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

const STEPS_POLICY: &str = "steps-v1";

/// How long one step may run.
const STEP_TIMEOUT: Duration = Duration::from_secs(900);

/// Runs a step in /app: the sandbox starts in `/`, and the image may have
/// no shell to `cd` with.
const IN_APP: &str = "import os, sys; os.chdir('/app'); os.execvp(sys.argv[1], sys.argv[1:])";

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub argv: Vec<String>,
    /// Why it runs: what detected it, or where it is configured.
    pub why: String,
    #[serde(skip)]
    django: bool,
}

impl Step {
    /// A step that is not Django's (its failures get the general hint).
    pub fn new(argv: Vec<String>, why: &str) -> Step {
        Step {
            argv,
            why: why.to_string(),
            django: false,
        }
    }
}

/// The steps this build runs: Django's collectstatic (unless turned off),
/// then the configured ones.
pub fn plan(project: &Project, cfg: &Config, app: &AppInput, lock: &Lock) -> Result<Vec<Step>> {
    let mut out = Vec::new();
    if cfg.collectstatic != Some(false) {
        if let Some(why) = django_static(app, lock) {
            out.push(Step {
                argv: ["python", "manage.py", "collectstatic", "--noinput"]
                    .map(String::from)
                    .to_vec(),
                why,
                django: true,
            });
        }
    }
    let origin = project
        .config_origin
        .clone()
        .unwrap_or_else(|| "build-steps".into());
    for (n, c) in cfg.build_steps.iter().enumerate() {
        let at = format!("{origin}: build-steps[{n}]");
        let argv = match c {
            CfgCommand::Line(l) => entrypoint::split_command(l, &at)?,
            CfgCommand::Argv(v) => v.clone(),
        };
        if argv.is_empty() {
            anyhow::bail!("{at} is empty");
        }
        out.push(Step {
            argv,
            why: format!("build-steps in {origin}"),
            django: false,
        });
    }
    Ok(out)
}

/// Django with `django.contrib.staticfiles` and a `STATIC_ROOT`: where
/// each is said, for the plan.
fn django_static(app: &AppInput, lock: &Lock) -> Option<String> {
    // The words the app layer's input read from its Python files rule out
    // most projects without reading a file again.
    let words = ["STATIC_ROOT", "staticfiles"];
    if !lock.packages.iter().any(|p| p.name == "django")
        || !app.files.iter().any(|f| f.rel == "manage.py")
        || !words.iter().all(|w| app.words.contains(*w))
    {
        return None;
    }
    let files = &app.files;
    let root = Regex::new(r"(?m)^\s*STATIC_ROOT\s*=").expect("valid pattern");
    let (mut app, mut static_root) = (None, None);
    for f in files
        .iter()
        .filter(|f| f.rel.ends_with(".py") && f.symlink.is_none())
    {
        let Ok(text) = std::fs::read_to_string(&f.path) else {
            continue;
        };
        if app.is_none() && text.contains("django.contrib.staticfiles") {
            app = Some(f.rel.clone());
        }
        if static_root.is_none() && root.is_match(&text) {
            static_root = Some(f.rel.clone());
        }
    }
    Some(format!(
        "Django: django.contrib.staticfiles in {}, STATIC_ROOT in {}",
        app?, static_root?
    ))
}

/// The app layer's key when steps run: the app's files, the venv, the
/// steps and their environment.
pub fn key(
    app_key: &str,
    venv_key: &str,
    steps: &[Step],
    env: &BTreeMap<String, String>,
) -> String {
    let mut h = KeyHasher::new(crate::core::cache::RecordKind::AppLayer.as_str());
    h.part("policy", STEPS_POLICY)
        .part("app", app_key)
        .part("venv", venv_key);
    for s in steps {
        h.part("step", s.argv.join("\0"));
    }
    for (k, v) in env {
        h.part("env", k).part("value", v);
    }
    h.finish()
}

/// The files steps wrote in /app (new, or changed from the app's).
pub struct Outputs {
    _dir: tempfile::TempDir,
    /// Path in /app, file on the host, executable.
    pub files: Vec<(String, PathBuf, bool)>,
}

/// Runs `steps` over a copy of the app in the image's root with the venv;
/// what they wrote.
pub fn run(
    req: &builder::Request,
    root: &Path,
    venv: &Layer,
    app: &[AppFile],
    steps: &[Step],
    env: &[(String, String)],
) -> Result<Outputs> {
    let work = tempfile::tempdir_in(req.cache.dir(crate::core::cache::CacheDir::Work)?)?;
    // The venv unpacked once per venv layer (a code edit runs the steps
    // again, with the same venv), mounted read-only.
    let (venv_root, _) = crate::sandbox::cached_rootfs(
        req.cache,
        &req.cache.blobs,
        std::slice::from_ref(venv),
        false,
    )?;
    let scratch = work.path().join("app");
    let copied = copy_app(app, &scratch)?;
    for step in steps {
        let sp = req
            .progress
            .spinner(format!("Running {} ({})", step.argv.join(" "), step.why));
        let mut sb = crate::sandbox::Sandbox::new(root)
            .ro_bind_in(&venv_root.join("opt/venv"), "/opt/venv", "/opt")
            .bind(&scratch, "/app", None);
        for (k, v) in env {
            sb = sb.env(k, v);
        }
        let mut argv = vec!["/opt/venv/bin/python", "-c", IN_APP];
        argv.extend(step.argv.iter().map(String::as_str));
        let out = sb.run(&argv, STEP_TIMEOUT)?;
        sp.finish_and_clear();
        if out.status != 0 {
            return Err(failure(step, &out));
        }
    }
    let files = changed(&copied, &scratch)?;
    Ok(Outputs { _dir: work, files })
}

/// The runtime's root with an empty /app, for a base that has none.
pub fn root_with_app(
    cache: &crate::core::cache::Cache,
    runtime: &[Layer],
    mtime: u64,
) -> Result<PathBuf> {
    let mut b = slimpack_oci::LayerBuilder::new();
    b.add("app", slimpack_oci::Entry::dir(0o755))?;
    let mut layers = runtime.to_vec();
    layers.push(b.write(&cache.blobs, mtime)?);
    Ok(crate::sandbox::cached_rootfs(cache, &cache.blobs, &layers, false)?.0)
}

/// The time copies of the app's files are given: any write by a step
/// sets a file's time to now, so a file that still has this one is as
/// copied, and is not read again to compare.
const COPIED_AT: std::time::SystemTime = std::time::UNIX_EPOCH;

/// The app's files copied under `to`; the size of each regular file.
fn copy_app(app: &[AppFile], to: &Path) -> Result<BTreeMap<String, u64>> {
    let mut copied = BTreeMap::new();
    std::fs::create_dir_all(to)?;
    for f in app {
        let dest = to.join(&f.rel);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        match &f.symlink {
            Some(t) => std::os::unix::fs::symlink(t, &dest)?,
            None => {
                let len = std::fs::copy(&f.path, &dest)
                    .with_context(|| format!("copying {}", f.path.display()))?;
                std::fs::File::options()
                    .write(true)
                    .open(&dest)?
                    .set_modified(COPIED_AT)?;
                copied.insert(f.rel.clone(), len);
            }
        }
    }
    Ok(copied)
}

/// Regular files under `scratch` that were not copied there, or were
/// written since. (A step that rewrites a file with the same bytes adds
/// it again, unchanged.)
fn changed(copied: &BTreeMap<String, u64>, scratch: &Path) -> Result<Vec<(String, PathBuf, bool)>> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(scratch).sort_by_file_name() {
        let e = e?;
        if !e.file_type().is_file() {
            continue;
        }
        let rel = e
            .path()
            .strip_prefix(scratch)
            .expect("under scratch")
            .to_string_lossy()
            .into_owned();
        let m = e.metadata()?;
        if copied.get(&rel) == Some(&m.len()) && m.modified()? == COPIED_AT {
            continue;
        }
        let exec = m.permissions().mode() & 0o111 != 0;
        out.push((rel, e.path().to_path_buf(), exec));
    }
    Ok(out)
}

/// A failed step: its last lines, and what to do.
fn failure(step: &Step, out: &crate::sandbox::Output) -> anyhow::Error {
    let text = format!("{}\n{}", out.stdout, out.stderr);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(15)..].join("\n");
    let message = format!(
        "the build step `{}` ({}) exited with {}:\n{}",
        step.argv.join(" "),
        step.why,
        out.status,
        crate::core::text::escape_controls(&tail)
    );
    hinted(message, hint(step, &text))
}

fn hint(step: &Step, text: &str) -> String {
    let off = if step.django {
        "or turn it off with `collectstatic = false` in [tool.slimpack] (--no-collectstatic)"
    } else {
        "or remove it from build-steps"
    };
    let missing = Regex::new(r#"KeyError: '([A-Za-z_][A-Za-z0-9_]*)'"#)
        .expect("valid pattern")
        .captures(text)
        .map(|c| c[1].to_string())
        .or_else(|| {
            Regex::new(r"(?:Set the|set the) ([A-Z][A-Z0-9_]+) environment variable")
                .expect("valid pattern")
                .captures(text)
                .map(|c| c[1].to_string())
        });
    if let Some(var) = missing {
        return format!("the settings read {var} from the environment, which build steps do not get from the image: pass it with --build-env {var}=VALUE or `build-env = {{ {var} = \"…\" }}` (a placeholder will do when the step does not use it; it never reaches the image), {off}");
    }
    if text.contains("Read-only file system") {
        return format!("build steps may write only inside the app: set STATIC_ROOT (or the step's output) under the project, e.g. BASE_DIR / \"staticfiles\", {off}");
    }
    if text.contains("could not connect")
        || text.contains("Connection refused")
        || text.contains("Temporary failure in name resolution")
    {
        return format!("build steps run without network: settings must not connect to a database or service at import, {off}");
    }
    if let Some(setting) = Regex::new(r"ImproperlyConfigured: .*?\b([A-Z][A-Z0-9_]{3,})\b")
        .expect("valid pattern")
        .captures(text)
    {
        return format!("Django says the setting {} is wrong or missing at build time: set it (or read it with a default), pass what it reads with --build-env KEY=VALUE, {off}", &setting[1]);
    }
    format!("pass what the app reads from the environment with --build-env KEY=VALUE, {off}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app_file(dir: &Path, rel: &str, text: &str) -> AppFile {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        AppFile {
            rel: rel.into(),
            path,
            executable: false,
            symlink: None,
        }
    }

    #[test]
    fn collectstatic_runs_for_staticfiles_with_a_static_root() {
        let d = tempfile::tempdir().unwrap();
        let lock = Lock::of(&[("django", "5.1.4")]);
        let static_of = |files: &[AppFile], lock: &Lock| {
            django_static(
                &super::super::app::input(files.to_vec(), 0, false).unwrap(),
                lock,
            )
        };
        let mut files = vec![
            app_file(d.path(), "manage.py", "import os\n"),
            app_file(
                d.path(),
                "site/base.py",
                "INSTALLED_APPS = ['django.contrib.staticfiles']\n",
            ),
        ];
        assert_eq!(static_of(&files, &lock), None, "no STATIC_ROOT");
        files.push(app_file(
            d.path(),
            "site/views.py",
            "x = settings.STATIC_ROOT\n",
        ));
        assert_eq!(
            static_of(&files, &lock),
            None,
            "STATIC_ROOT read, never set"
        );
        files.push(app_file(
            d.path(),
            "site/prod.py",
            "from .base import *\nSTATIC_ROOT = BASE_DIR / 'staticfiles'\n",
        ));
        assert_eq!(
            static_of(&files, &lock).unwrap(),
            "Django: django.contrib.staticfiles in site/base.py, STATIC_ROOT in site/prod.py"
        );
        let no_django = Lock {
            packages: Vec::new(),
            ..lock
        };
        assert_eq!(static_of(&files, &no_django), None);
    }

    #[test]
    fn only_new_and_written_files_are_outputs() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        let files = vec![
            app_file(&src, "manage.py", "a\n"),
            app_file(&src, "static/site.css", "body {}\n"),
            app_file(&src, "static/same-size.css", "p {}\n"),
        ];
        let scratch = d.path().join("scratch");
        let copied = copy_app(&files, &scratch).unwrap();
        std::fs::create_dir_all(scratch.join("staticfiles/css")).unwrap();
        std::fs::write(scratch.join("staticfiles/css/site.css"), "body {}\n").unwrap();
        std::fs::write(scratch.join("manage.py"), "changed\n").unwrap();
        // Rewritten at once, to the same size: its time tells.
        std::fs::write(scratch.join("static/same-size.css"), "a {}\n").unwrap();
        // A link a step made (to a host file, say) is no file of the app.
        std::os::unix::fs::symlink("/etc/passwd", scratch.join("static/passwd")).unwrap();
        let got: Vec<String> = changed(&copied, &scratch)
            .unwrap()
            .into_iter()
            .map(|(r, _, _)| r)
            .collect();
        assert_eq!(
            got,
            [
                "manage.py",
                "static/same-size.css",
                "staticfiles/css/site.css"
            ]
        );
    }

    #[test]
    fn a_base_without_app_gets_a_mount_point_for_the_steps() {
        let d = tempfile::tempdir().unwrap();
        let cache = crate::core::cache::Cache::open(d.path()).unwrap();
        let mut b = slimpack_oci::LayerBuilder::new();
        b.add("etc", slimpack_oci::Entry::dir(0o755)).unwrap();
        let base = b.write(&cache.blobs, 0).unwrap();
        let root = root_with_app(&cache, std::slice::from_ref(&base), 0).unwrap();
        assert!(crate::sandbox::dir_in_root(&root, "app"));
        assert!(crate::sandbox::dir_in_root(&root, "etc"));
    }

    #[test]
    fn failures_say_what_to_pass() {
        let step = Step {
            argv: vec!["python".into(), "manage.py".into(), "collectstatic".into()],
            why: "Django".into(),
            django: true,
        };
        let h = hint(
            &step,
            "Traceback...\n    raise KeyError(key) from None\nKeyError: 'SECRET_KEY'\n",
        );
        assert!(
            h.contains("--build-env SECRET_KEY=VALUE") && h.contains("collectstatic = false"),
            "{h}"
        );
        let h = hint(
            &step,
            "OSError: [Errno 30] Read-only file system: '/var/www'",
        );
        assert!(h.contains("STATIC_ROOT"), "{h}");
        let h = hint(&step, "django.core.exceptions.ImproperlyConfigured: You're using the staticfiles app without having set the STATIC_ROOT setting to a filesystem path.");
        assert!(h.contains("the setting STATIC_ROOT"), "{h}");
        let e = failure(
            &step,
            &crate::sandbox::Output {
                status: 1,
                stdout: String::new(),
                stderr: "boom \u{1b}[31m\n".into(),
            },
        );
        let msg = format!("{e:#}");
        assert!(
            msg.contains("exited with 1") && !msg.contains('\u{1b}'),
            "{msg}"
        );
    }
}
