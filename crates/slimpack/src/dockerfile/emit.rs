//! `slimpack dockerfile`: the seeds' recipe done right, from the same project
//! detection and plan as `build`. Writes a multi-stage Dockerfile, a
//! `.dockerignore` and a `cloudbuild.yaml`; every choice is commented in the
//! output so a reviewer can see why it is there.

use crate::build::{self, plan::Plan};
use crate::project::{DepSource, Project};
use anyhow::{bail, Result};
use std::fmt::Write as _;
use std::path::Path;

/// Where the runtime stage starts from.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// The builder's own Python image: the venv's interpreter path and ABI
    /// match by construction.
    #[value(alias = "python")]
    Slim,
    /// Google's distroless Python: no shell, no package manager. The builder
    /// is then Debian with Debian's python3, the interpreter distroless has.
    Distroless,
}

/// How the builder installs the dependencies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Install {
    /// requirements.txt (and the files it includes, and group files).
    Requirements {
        /// Every file the install reads, includes too.
        copy: Vec<String>,
        /// The top-level files: requirements.txt and the groups' files.
        install: Vec<String>,
        /// Every requirement pinned with hashes: installed exactly.
        locked: bool,
    },
    UvLock,
    PoetryLock,
    /// `[project].dependencies` with no lock.
    Pyproject,
}

/// Everything the Dockerfile is made from; [`from_plan`] fills it from the
/// build plan.
#[derive(Debug, Clone)]
pub struct Recipe {
    pub name: String,
    pub python_minor: String,
    pub python_why: String,
    /// The Debian release both stages are on (bookworm, trixie).
    pub codename: String,
    /// The image both stages start from (Slim), or the builder's (Distroless).
    pub python_image: String,
    pub uv_image: String,
    pub runtime: Runtime,
    pub install: Install,
    /// `--extra`/`--group`/`--with` names, as the project's tool spells them.
    pub extras: Vec<String>,
    pub groups: Vec<String>,
    pub no_binary: Vec<String>,
    /// Python packages compiled from source, and the Debian packages that
    /// takes (beyond build-essential).
    pub source_builds: Vec<String>,
    pub build_packages: Vec<String>,
    /// Debian packages the venv's compiled code links at run time.
    pub runtime_packages: Vec<String>,
    /// Extra environment from the project's configuration.
    pub env: Vec<(String, String)>,
    pub port: u16,
    pub user: String,
    pub cmd: Vec<String>,
    pub cmd_why: String,
    pub health_path: Option<String>,
    /// Build steps (Django's collectstatic, `build-steps`), run after the
    /// code is copied, before the user changes.
    pub steps: Vec<crate::build::steps::Step>,
    /// Files `build` recognised as secrets, and directories no app module
    /// imports (tests, docs): both go into `.dockerignore`.
    pub secrets: Vec<String>,
    pub optional_dirs: Vec<String>,
    /// The patterns of the project's own `.dockerignore`, kept.
    pub kept_ignores: Vec<String>,
}

/// The three files.
#[derive(Debug, Clone)]
pub struct Emitted {
    pub dockerfile: String,
    pub dockerignore: String,
    pub cloudbuild: String,
}

/// What `slimpack dockerfile` needs beside the build's options.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub build: crate::build::Request,
    pub runtime: Runtime,
    pub python_image: Option<String>,
    pub uv_image: Option<String>,
}

/// Plans the project as `build` does (building the venv, or reusing it, to
/// learn which system libraries its compiled code needs) and writes the
/// recipe for it.
pub fn generate(ctx: &build::Context, opts: &GenerateOptions) -> Result<(Recipe, Emitted)> {
    let planned = build::plan(ctx, build::Inputs::read(&opts.build)?)?;
    let (venv, _) = build::venv(ctx, &planned)?;
    let plan = planned.plan_with_venv(&venv);
    let recipe = from_plan(
        &planned.project,
        &planned.cfg,
        &plan,
        opts.runtime,
        opts.python_image.as_deref(),
        opts.uv_image.as_deref(),
    )?;
    let emitted = emit(&recipe)?;
    Ok((recipe, emitted))
}

pub const POETRY: &str = "poetry==2.5.1";
pub const POETRY_EXPORT: &str = "poetry-plugin-export==1.9.0";

/// The recipe for `project` from its `plan` (made with the venv, so the
/// runtime libraries are known).
pub fn from_plan(
    project: &Project,
    cfg: &crate::settings::Config,
    plan: &Plan,
    runtime: Runtime,
    python_image: Option<&str>,
    uv_image: Option<&str>,
) -> Result<Recipe> {
    let (extras, groups): (Vec<String>, Vec<String>) = {
        let pp_extras: Vec<String> = project
            .pyproject
            .as_ref()
            .map(|p| p.extras.clone())
            .unwrap_or_default();
        plan.dependencies
            .groups
            .iter()
            .cloned()
            .partition(|g| pp_extras.contains(g))
    };
    let install = install_for(project, plan)?;
    let minor = plan.python.target.minor.clone();
    let codename = crate::base::suite_for_python(&minor).codename().to_string();
    let registry_base = !plan.base.name.starts_with("debian:");
    let python_image = match (python_image, runtime) {
        (Some(i), _) => i.to_string(),
        (None, Runtime::Slim) if registry_base => plan.base.name.clone(),
        (None, Runtime::Slim) => format!("python:{minor}-slim-{codename}"),
        (None, Runtime::Distroless) => format!("debian:{codename}-slim"),
    };
    if runtime == Runtime::Distroless {
        distroless_image(&minor)?;
    }
    let runtime_packages: Vec<String> = {
        let mut v: Vec<String> = plan
            .dependencies
            .runtime_libraries
            .iter()
            .flatten()
            .map(|a| a.package.clone())
            .chain(cfg.packages.iter().cloned())
            .collect();
        v.sort();
        v.dedup();
        v
    };
    if runtime == Runtime::Distroless && !runtime_packages.is_empty() {
        bail!(
            "the venv's compiled code needs {} at run time, and distroless has no package manager to add it: use --runtime slim",
            runtime_packages.join(", ")
        );
    }
    let standard = [
        "PATH",
        "VIRTUAL_ENV",
        "PYTHONUNBUFFERED",
        "PYTHONDONTWRITEBYTECODE",
        "LANG",
        "PORT",
    ];
    let env = cfg
        .env
        .iter()
        .filter(|(k, _)| !standard.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(Recipe {
        name: plan.project.name.clone(),
        python_minor: minor,
        // Relative paths: the file is read in the project, not on this machine.
        python_why: plan
            .python
            .chosen_because
            .replace(&format!("{}/", project.dir.display()), ""),
        codename,
        python_image,
        uv_image: uv_image
            .map(str::to_string)
            .unwrap_or_else(|| format!("ghcr.io/astral-sh/uv:{}", plan.dependencies.uv)),
        runtime,
        install,
        extras,
        groups,
        no_binary: cfg.no_binary.clone(),
        source_builds: plan.dependencies.source_builds.clone(),
        build_packages: plan.dependencies.build_packages.clone(),
        runtime_packages,
        env,
        port: plan.image.port,
        user: plan.image.user.clone(),
        cmd: plan.start.argv.clone(),
        cmd_why: plan.start.source.clone(),
        health_path: plan.start.health_path.clone(),
        steps: plan.build_steps.clone(),
        secrets: plan.project.left_out_secrets.clone(),
        optional_dirs: optional_dirs_of(&project.dir)?,
        kept_ignores: kept_ignores(&project.dir),
    })
}

/// How the builder installs the dependencies, from where the project
/// declares them.
fn install_for(project: &Project, plan: &Plan) -> Result<Install> {
    let rel = |p: &Path| -> Result<String> {
        match p.strip_prefix(&project.dir) {
            Ok(r) => Ok(r.to_string_lossy().into_owned()),
            Err(_) => bail!(
                "{} is outside {}: a Dockerfile can only COPY from its build context; move it into the project",
                p.display(),
                project.dir.display()
            ),
        }
    };
    Ok(match &project.deps {
        DepSource::Requirements { files, .. } => {
            // Included files (-r, -c) are copied; uv follows the includes of
            // the top-level files itself.
            let mut copy = Vec::new();
            for f in files {
                copy.push(rel(f)?);
            }
            let mut install = vec![copy[0].clone()];
            for g in &plan.dependencies.groups {
                let f = rel(&crate::python::group_requirements(&project.dir, g)?)?;
                copy.push(f.clone());
                install.push(f);
            }
            Install::Requirements {
                copy,
                install,
                locked: plan.project.locked,
            }
        }
        DepSource::UvLock { .. } => Install::UvLock,
        DepSource::PoetryLock { .. } => Install::PoetryLock,
        DepSource::PdmLock { .. } | DepSource::Pipfile { .. } | DepSource::SetupPy { .. } | DepSource::None => bail!(
            "{}: `slimpack dockerfile` writes recipes for requirements.txt, pyproject.toml, uv.lock and poetry.lock projects; `slimpack build` takes this one as it is",
            project.describe_deps()
        ),
        DepSource::Pyproject { .. } => {
            if project
                .pyproject
                .as_ref()
                .is_some_and(|p| p.style == crate::project::pyproject::Style::Poetry)
            {
                bail!(
                    "{}: Poetry dependencies without poetry.lock: run `poetry lock` first (the Dockerfile installs from the lock)",
                    project.dir.join("pyproject.toml").display()
                );
            }
            Install::Pyproject
        }
    })
}

/// The project's test and docs directories nothing imports (to ignore).
fn optional_dirs_of(dir: &Path) -> Result<Vec<String>> {
    if !OPTIONAL_DIRS.iter().any(|c| dir.join(c).is_dir()) {
        return Ok(Vec::new());
    }
    let rules = crate::project::ignore::IgnoreRules::for_project(dir)?;
    let (files, _) = crate::project::ignore::collect(dir, &rules)?;
    let rels: Vec<String> = files.into_iter().map(|f| f.rel).collect();
    Ok(optional_dirs(dir, &rels))
}

/// The project's own `.dockerignore` patterns, kept last.
fn kept_ignores(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join(".dockerignore"))
        .map(|t| {
            t.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn distroless_image(minor: &str) -> Result<String> {
    match minor {
        "3.11" => Ok("gcr.io/distroless/python3-debian12:nonroot".into()),
        "3.13" => Ok("gcr.io/distroless/python3-debian13:nonroot".into()),
        _ => bail!(
            "distroless ships Python 3.11 (Debian 12) and 3.13 (Debian 13) only, and this project gets Python {minor}: use --runtime slim, or ask for 3.11 or 3.13 (.python-version)"
        ),
    }
}

pub fn emit(r: &Recipe) -> Result<Emitted> {
    Ok(Emitted {
        dockerfile: dockerfile(r)?,
        dockerignore: dockerignore(&r.secrets, &r.optional_dirs, &r.kept_ignores),
        cloudbuild: cloudbuild(&r.name, r.port),
    })
}

/// A JSON-form argument list, one space after each comma.
fn json_args(argv: &[String]) -> String {
    let items: Vec<String> = argv
        .iter()
        .map(|a| serde_json::to_string(a).expect("strings serialize"))
        .collect();
    format!("[{}]", items.join(", "))
}

/// A value for `ENV K=V`: double-quoted, with `$`, `"` and `\` escaped.
fn env_value(v: &str) -> String {
    let mut out = String::from("\"");
    for c in v.chars() {
        if matches!(c, '"' | '\\' | '$') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// `RUN apt-get install` of `packages`, cleaned up in the same layer.
fn apt_run(out: &mut String, why: &str, packages: &[String]) {
    let _ = writeln!(out, "# {why}");
    out.push_str("# Versions come from the Debian release the image is pinned to; exact\n");
    out.push_str("# pins would break the build when a security update replaces them.\n");
    out.push_str("# hadolint ignore=DL3008\n");
    out.push_str("RUN apt-get update \\\n");
    let _ = writeln!(
        out,
        " && apt-get install -y --no-install-recommends {} \\",
        packages.join(" ")
    );
    out.push_str(" && rm -rf /var/lib/apt/lists/*\n");
}

// The CA comes in as a secret so that a proxy's CA never lands in a layer.
const INSTALL_RUN: &str =
    "# Behind a TLS-intercepting proxy, lend the build its CA bundle (a secret\n\
                 # mount, never stored in a layer):\n\
                 #   docker build --secret id=ca,src=/etc/ssl/certs/ca-certificates.crt .\n\
                 RUN --mount=type=cache,target=/root/.cache/uv \\\n    \
                 --mount=type=secret,id=ca \\\n    \
                 if [ -f /run/secrets/ca ]; then export SSL_CERT_FILE=/run/secrets/ca; fi \\\n";

fn dockerfile(r: &Recipe) -> Result<String> {
    let mut d = String::new();
    header(&mut d, r)?;
    builder_stage(&mut d, r);
    d.push('\n');
    runtime_stage(&mut d, r);
    Ok(d)
}

/// The comments that say how to build, and the stages' images.
fn header(d: &mut String, r: &Recipe) -> Result<()> {
    d.push_str("# syntax=docker/dockerfile:1\n");
    let _ = writeln!(
        d,
        "# Written by `slimpack dockerfile` for {}. Build with BuildKit (the cache",
        r.name
    );
    d.push_str("# mounts need it): docker build -t IMAGE .\n");
    let _ = writeln!(d, "# Python {}: {}.", r.python_minor, r.python_why);
    d.push('\n');
    match r.runtime {
        Runtime::Slim => {
            d.push_str(
                "# One image for both stages: the venv is copied to an interpreter at the\n",
            );
            d.push_str("# same path and version as the one it was built with. Pin a digest\n");
            d.push_str("# (IMAGE@sha256:...) for builds that never change under you.\n");
        }
        Runtime::Distroless => {
            d.push_str(
                "# The builder is Debian with Debian's python3, the interpreter distroless\n",
            );
            d.push_str("# ships at the same path: the venv copied into it works as built.\n");
        }
    }
    let _ = writeln!(d, "ARG PYTHON_IMAGE={}", r.python_image);
    if r.runtime == Runtime::Distroless {
        let _ = writeln!(
            d,
            "ARG RUNTIME_IMAGE={}",
            distroless_image(&r.python_minor)?
        );
    }
    d.push_str("# uv installs the dependencies, pinned to the version slimpack was tested with.\n");
    let _ = writeln!(d, "ARG UV_IMAGE={}", r.uv_image);
    d.push('\n');
    d.push_str("FROM ${UV_IMAGE} AS uv\n\n");

    Ok(())
}

/// The builder: the dependencies into /opt/venv, with what compiling needs.
fn builder_stage(d: &mut String, r: &Recipe) {
    d.push_str("# ---- builder: the dependencies into /opt/venv, with everything that takes\n");
    d.push_str("FROM ${PYTHON_IMAGE} AS builder\n");
    let mut apt: Vec<String> = Vec::new();
    if r.runtime == Runtime::Distroless {
        apt.push("python3".into());
    }
    if !r.source_builds.is_empty() {
        apt.push("build-essential".into());
        if r.runtime == Runtime::Distroless {
            apt.push("python3-dev".into());
        }
        for p in &r.build_packages {
            if !apt.contains(p) {
                apt.push(p.clone());
            }
        }
    }
    if !apt.is_empty() {
        let why = if r.source_builds.is_empty() {
            "Debian's python3: the interpreter the runtime image has.".to_string()
        } else {
            format!(
                "Compilers and headers for what has no wheel ({}); they stay in this stage.",
                r.source_builds.join(", ")
            )
        };
        apt_run(d, &why, &apt);
    }
    d.push_str("# Bytecode compiled once here (faster cold starts); copy mode because the\n");
    d.push_str("# cache mount is another filesystem; never a downloaded Python the runtime\n");
    d.push_str("# stage would not have.\n");
    d.push_str(
        "ENV UV_COMPILE_BYTECODE=1 \\\n    UV_LINK_MODE=copy \\\n    UV_PYTHON_DOWNLOADS=never",
    );
    if r.install == Install::UvLock {
        d.push_str(" \\\n    UV_PROJECT_ENVIRONMENT=/opt/venv");
    }
    d.push('\n');
    d.push_str("COPY --from=uv /uv /usr/local/bin/uv\n");
    d.push_str("WORKDIR /src\n");
    d.push_str("# The dependency files alone: a code edit keeps this layer and the install.\n");
    let no_binary: String = r
        .no_binary
        .iter()
        .map(|p| format!(" --no-binary {p}"))
        .collect();
    let python = if r.runtime == Runtime::Distroless {
        " --python /usr/bin/python3"
    } else {
        ""
    };
    install_step(d, r, python, &no_binary);
}

/// The dependency files alone, then their install: a code edit keeps both.
fn install_step(d: &mut String, r: &Recipe, python: &str, no_binary: &str) {
    match &r.install {
        Install::Requirements {
            copy,
            install,
            locked,
        } => {
            let _ = writeln!(d, "COPY {} ./", copy.join(" "));
            if !locked {
                d.push_str(
                    "# Not every requirement is pinned with a hash: a rebuild may get newer\n",
                );
                d.push_str("# versions. `uv pip compile --generate-hashes` makes a lock.\n");
            }
            d.push_str(INSTALL_RUN);
            let _ = writeln!(d, " && uv venv{python} /opt/venv \\");
            if *locked {
                let _ = writeln!(
                    d,
                    " && uv pip sync --python /opt/venv/bin/python --require-hashes{no_binary} {}",
                    install.join(" ")
                );
            } else {
                let args: Vec<String> = install.iter().map(|f| format!("-r {f}")).collect();
                let _ = writeln!(
                    d,
                    " && uv pip install --python /opt/venv/bin/python{no_binary} {}",
                    args.join(" ")
                );
            }
        }
        Install::UvLock => {
            d.push_str("COPY pyproject.toml uv.lock ./\n");
            d.push_str("# --frozen: exactly uv.lock, which must match pyproject.toml.\n");
            d.push_str(INSTALL_RUN);
            let _ = writeln!(
                d,
                " && uv sync{python} --frozen --no-install-project --no-default-groups{}{no_binary}",
                selection(r)
            );
        }
        Install::PoetryLock => {
            d.push_str("COPY pyproject.toml poetry.lock ./\n");
            d.push_str("# poetry.lock exported with its hashes (Poetry runs here only), then\n");
            d.push_str("# installed exactly.\n");
            d.push_str(INSTALL_RUN);
            let with: String = r
                .extras
                .iter()
                .chain(&r.groups)
                .map(|g| format!(" --with {g}"))
                .collect();
            let _ = writeln!(
                d,
                " && uv tool run --from {POETRY} --with {POETRY_EXPORT} \\\n      poetry export --format requirements.txt --output /tmp/requirements.txt{with} \\"
            );
            let _ = writeln!(d, " && uv venv{python} /opt/venv \\");
            let _ = writeln!(
                d,
                " && uv pip sync --python /opt/venv/bin/python --require-hashes{no_binary} /tmp/requirements.txt"
            );
        }
        Install::Pyproject => {
            d.push_str("COPY pyproject.toml ./\n");
            d.push_str("# No lock: a rebuild may get newer versions. `uv lock` makes one.\n");
            d.push_str(INSTALL_RUN);
            let _ = writeln!(d, " && uv venv{python} /opt/venv \\");
            let _ = writeln!(
                d,
                " && uv pip install --python /opt/venv/bin/python{no_binary} -r pyproject.toml{}",
                selection(r)
            );
        }
    }
}

/// The runtime: the interpreter, the venv and the code; no compilers, no uv.
fn runtime_stage(d: &mut String, r: &Recipe) {
    d.push_str("# ---- runtime: the interpreter, the venv and the code; no compilers, no uv\n");
    match r.runtime {
        Runtime::Slim => d.push_str("FROM ${PYTHON_IMAGE} AS runtime\n"),
        Runtime::Distroless => d.push_str("FROM ${RUNTIME_IMAGE} AS runtime\n"),
    }
    if !r.runtime_packages.is_empty() {
        apt_run(
            d,
            "Only the libraries the venv's compiled code links (found by building it).",
            &r.runtime_packages,
        );
    }
    d.push_str("# Unbuffered output reaches Cloud Run's logs at once; no .pyc written at run\n");
    d.push_str("# time (the venv's are compiled already).\n");
    let mut env = vec![
        ("PATH".to_string(), "/opt/venv/bin:$PATH".to_string()),
        ("VIRTUAL_ENV".into(), "/opt/venv".into()),
        ("PYTHONUNBUFFERED".into(), "1".into()),
        ("PYTHONDONTWRITEBYTECODE".into(), "1".into()),
        ("PORT".into(), r.port.to_string()),
    ];
    env.extend(r.env.iter().cloned());
    let lines: Vec<String> = env
        .iter()
        .map(|(k, v)| {
            if k == "PATH" {
                format!("{k}=\"{v}\"")
            } else if v
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/._-:".contains(c))
                && !v.is_empty()
            {
                format!("{k}={v}")
            } else {
                format!("{k}={}", env_value(v))
            }
        })
        .collect();
    let _ = writeln!(d, "ENV {}", lines.join(" \\\n    "));
    d.push_str("COPY --from=builder /opt/venv /opt/venv\n");
    d.push_str("WORKDIR /app\n");
    d.push_str("# The code last, owned by root and read-only to the app (.dockerignore keeps\n");
    d.push_str("# .git, venvs, caches and secrets out).\n");
    d.push_str("COPY . .\n");
    for step in &r.steps {
        let _ = writeln!(
            d,
            "# {}: its output is part of the image (build-env values are not carried here).",
            step.why.replace(char::is_control, " ")
        );
        let _ = writeln!(d, "RUN {}", json_args(&step.argv));
    }
    d.push_str("# Not root: a numeric user needs no account in the image.\n");
    let _ = writeln!(d, "USER {}", r.user);
    let _ = writeln!(d, "EXPOSE {}", r.port);
    if let Some(h) = &r.health_path {
        let _ = writeln!(
            d,
            "# No HEALTHCHECK: Cloud Run ignores it; probe {h} from the service instead."
        );
    }
    let _ = writeln!(d, "# Start: {}.", r.cmd_why);
    d.push_str("# JSON form: the server is PID 1 and gets Cloud Run's SIGTERM; it listens\n");
    d.push_str("# on $PORT, which Cloud Run sets.\n");
    let _ = writeln!(d, "CMD {}", json_args(&r.cmd));
}

/// uv's ` --extra E --group G` for the recipe's optional dependencies.
fn selection(r: &Recipe) -> String {
    let extras = r.extras.iter().map(|e| format!(" --extra {e}"));
    extras
        .chain(r.groups.iter().map(|g| format!(" --group {g}")))
        .collect()
}

/// `.dockerignore`: what never belongs in the build context. `secrets` are
/// files `build` found and left out; `optional` are directories the app does
/// not import (tests, docs).
pub fn dockerignore(secrets: &[String], optional: &[String], kept: &[String]) -> String {
    let mut d = String::from(
        "# Written by `slimpack dockerfile`: what never goes into the image.\n\
         # Version control and local environments\n\
         .git\n\
         **/.venv\n\
         **/venv\n\
         **/__pycache__\n\
         **/*.py[cod]\n\
         **/.terraform\n\
         # Tool caches and build output\n\
         .pytest_cache\n\
         .mypy_cache\n\
         .ruff_cache\n\
         .tox\n\
         .nox\n\
         .coverage\n\
         htmlcov\n\
         node_modules\n\
         build\n\
         dist\n\
         *.egg-info\n\
         target\n\
         # How the image is built is not part of it\n\
         Dockerfile\n\
         .dockerignore\n\
         cloudbuild.yaml\n\
         .github\n\
         .gitlab-ci.yml\n",
    );
    // The credential files of every tool, as build leaves them out.
    d.push_str("# Secrets: never in a layer (pass them at run time)\n");
    for p in crate::project::ignore::SECRET_PATTERNS {
        d.push_str(p);
        d.push('\n');
    }
    let section = |title: &str, items: &[String], d: &mut String| {
        let have: Vec<String> = d.lines().map(str::to_string).collect();
        let new: Vec<&String> = items.iter().filter(|i| !have.contains(i)).collect();
        if !new.is_empty() {
            d.push_str(title);
            for i in new {
                d.push_str(i);
                d.push('\n');
            }
        }
    };
    section(
        "# Found in this project and recognised as secrets\n",
        secrets,
        &mut d,
    );
    section("# Nothing the app imports\n", optional, &mut d);
    // Order matters to a .dockerignore (a later `!pattern` re-includes), so
    // the project's own patterns come last, as they were.
    section("# Kept from the project's .dockerignore\n", kept, &mut d);
    d
}

/// Directories that may hold tests or docs rather than the app.
const OPTIONAL_DIRS: [&str; 4] = ["tests", "test", "docs", "doc"];

/// Those of [`OPTIONAL_DIRS`] that exist and that no app module imports
/// from: safe to leave out of the context.
pub fn optional_dirs(dir: &Path, app_files: &[String]) -> Vec<String> {
    let present: Vec<&str> = OPTIONAL_DIRS
        .into_iter()
        .filter(|c| dir.join(c).is_dir())
        .collect();
    let mut imported: Vec<&str> = Vec::new();
    let app_modules = app_files.iter().filter(|f| {
        f.ends_with(".py")
            && !OPTIONAL_DIRS
                .iter()
                .any(|c| f.starts_with(&format!("{c}/")))
    });
    for f in app_modules {
        let Ok(text) = std::fs::read_to_string(dir.join(f)) else {
            continue;
        };
        for l in text.lines().map(str::trim) {
            let name = l
                .strip_prefix("from ")
                .or_else(|| l.strip_prefix("import "))
                .map(|rest| {
                    rest.split(|c: char| !c.is_alphanumeric() && c != '_')
                        .next()
                        .unwrap_or("")
                });
            if let Some(c) = present.iter().find(|c| Some(**c) == name) {
                imported.push(c);
            }
        }
    }
    present
        .into_iter()
        .filter(|c| !imported.contains(c))
        .map(str::to_string)
        .collect()
}

/// `cloudbuild.yaml`: build with BuildKit and the last image as cache, push
/// to Artifact Registry, deploy to Cloud Run, with seed 000's substitutions.
pub fn cloudbuild(name: &str, port: u16) -> String {
    let image = "${_REGION}-docker.pkg.dev/$PROJECT_ID/${_REPO}/${_IMAGE}";
    format!(
        "# Written by `slimpack dockerfile`. Build, push to Artifact Registry and\n\
         # deploy to Cloud Run:\n\
         #   gcloud builds submit --config cloudbuild.yaml \\\n\
         #     --substitutions=SHORT_SHA=$(git rev-parse --short HEAD)\n\
         # (a build trigger sets SHORT_SHA itself). Override _REGION, _REPO,\n\
         # _IMAGE and _SERVICE_NAME the same way.\n\
         steps:\n\
         \x20 # BuildKit for the Dockerfile's cache mounts; the inline cache lets the\n\
         \x20 # next build reuse this one's layers from the registry.\n\
         \x20 - id: build\n\
         \x20   name: gcr.io/cloud-builders/docker\n\
         \x20   env:\n\
         \x20     - DOCKER_BUILDKIT=1\n\
         \x20   args:\n\
         \x20     - build\n\
         \x20     - --build-arg\n\
         \x20     - BUILDKIT_INLINE_CACHE=1\n\
         \x20     - --cache-from\n\
         \x20     - '{image}:latest'\n\
         \x20     - -t\n\
         \x20     - '{image}:$SHORT_SHA'\n\
         \x20     - -t\n\
         \x20     - '{image}:latest'\n\
         \x20     - .\n\
         \x20 - id: push\n\
         \x20   name: gcr.io/cloud-builders/docker\n\
         \x20   args: ['push', '--all-tags', '{image}']\n\
         \x20 # The image by its commit tag: what runs is what was just built.\n\
         \x20 - id: deploy\n\
         \x20   name: gcr.io/google.com/cloudsdktool/cloud-sdk:slim\n\
         \x20   entrypoint: gcloud\n\
         \x20   args:\n\
         \x20     - run\n\
         \x20     - deploy\n\
         \x20     - '${{_SERVICE_NAME}}'\n\
         \x20     - --image\n\
         \x20     - '{image}:$SHORT_SHA'\n\
         \x20     - --region\n\
         \x20     - '${{_REGION}}'\n\
         \x20     - --port\n\
         \x20     - '{port}'\n\
         substitutions:\n\
         \x20 _REGION: us-central1\n\
         \x20 _REPO: {repo}\n\
         \x20 _IMAGE: {name}\n\
         \x20 _SERVICE_NAME: {name}\n\
         images:\n\
         \x20 - '{image}'\n",
        repo = "cloud-run",
    )
}

/// What [`write`] did with one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    Created,
    Replaced,
    Unchanged,
}

/// Writes the three files into `dir`. A file that exists with other content
/// is replaced only if `overwrite(path)` says so; when it says no for any,
/// nothing is written. Each file goes to a temporary name first and is
/// renamed into place, so a failure leaves no half-written file.
pub fn write(
    dir: &Path,
    e: &Emitted,
    mut overwrite: impl FnMut(&Path) -> Result<bool>,
) -> Result<Vec<(String, Written)>> {
    let files = [
        ("Dockerfile", &e.dockerfile),
        (".dockerignore", &e.dockerignore),
        ("cloudbuild.yaml", &e.cloudbuild),
    ];
    let mut plan = Vec::new();
    let mut refused = Vec::new();
    for (name, content) in files {
        let path = dir.join(name);
        let what = match std::fs::read(&path) {
            Ok(old) if old == content.as_bytes() => Written::Unchanged,
            Ok(_) => {
                if !overwrite(&path)? {
                    refused.push(path.display().to_string());
                }
                Written::Replaced
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Written::Created,
            Err(e) => bail!("{}: {e}", path.display()),
        };
        plan.push((name, content, path, what));
    }
    if !refused.is_empty() {
        bail!(
            "{} exist{} and would change; nothing was written: pass --force to overwrite, or --stdout to see the Dockerfile",
            refused.join(", "),
            if refused.len() == 1 { "s" } else { "" }
        );
    }
    let mut out = Vec::new();
    for (name, content, path, what) in plan {
        if what != Written::Unchanged {
            let mut tmp = tempfile::NamedTempFile::new_in(dir)
                .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
            std::io::Write::write_all(&mut tmp, content.as_bytes())?;
            tmp.persist(&path)
                .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.error))?;
        }
        out.push((name.to_string(), what));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dockerfile::{lint, parse};

    fn recipe() -> Recipe {
        Recipe {
            name: "app".into(),
            python_minor: "3.11".into(),
            python_why: "Python 3.11 from .python-version".into(),
            codename: "bookworm".into(),
            python_image: "python:3.11-slim-bookworm".into(),
            uv_image: "ghcr.io/astral-sh/uv:0.13.9".into(),
            runtime: Runtime::Slim,
            install: Install::Requirements {
                copy: vec!["requirements.txt".into()],
                install: vec!["requirements.txt".into()],
                locked: false,
            },
            extras: vec![],
            groups: vec![],
            no_binary: vec![],
            source_builds: vec![],
            build_packages: vec![],
            runtime_packages: vec![],
            env: vec![],
            port: 8080,
            user: "65532:65532".into(),
            cmd: vec!["/opt/venv/bin/gunicorn".into(), "main:app".into()],
            cmd_why: "WSGI app main:app in main.py".into(),
            health_path: Some("/health".into()),
            steps: Vec::new(),
            secrets: vec![],
            optional_dirs: vec![],
            kept_ignores: vec![],
        }
    }

    fn variants() -> Vec<Recipe> {
        let mut out = vec![recipe()];
        let mut r = recipe();
        r.install = Install::Requirements {
            copy: vec!["requirements.txt".into(), "requirements-prod.txt".into()],
            install: vec!["requirements.txt".into(), "requirements-prod.txt".into()],
            locked: true,
        };
        r.no_binary = vec!["psycopg2".into()];
        r.source_builds = vec!["psycopg2".into()];
        r.build_packages = vec!["libpq-dev".into()];
        r.runtime_packages = vec!["libpq5".into()];
        r.env = vec![
            ("APP_MODE".into(), "production".into()),
            ("GREETING".into(), "hello \"$USER\" \\o/".into()),
        ];
        out.push(r);
        for install in [Install::UvLock, Install::PoetryLock, Install::Pyproject] {
            let mut r = recipe();
            r.install = install;
            r.extras = vec!["postgres".into()];
            r.groups = vec!["prod".into()];
            out.push(r);
        }
        let mut r = recipe();
        r.runtime = Runtime::Distroless;
        r.python_image = "debian:bookworm-slim".into();
        r.source_builds = vec!["psycopg2".into()];
        r.cmd = vec![
            "/opt/venv/bin/python".into(),
            "-c".into(),
            crate::project::entrypoint::LAUNCHER.into(),
            "uvicorn".into(),
            "main:app".into(),
            "--host".into(),
            "0.0.0.0".into(),
            "--port".into(),
            "$PORT".into(),
        ];
        out.push(r);
        let mut django = recipe();
        django.steps = vec![crate::build::steps::Step::new(
            ["python", "manage.py", "collectstatic", "--noinput"].map(String::from).to_vec(),
            "Django: django.contrib.staticfiles in shop/settings.py,\nSTATIC_ROOT in shop/settings.py",
        )];
        out.push(django);
        out
    }

    #[test]
    fn build_steps_run_after_the_code_and_before_the_user() {
        let r = variants().pop().unwrap();
        let d = emit(&r).unwrap().dockerfile;
        let run = d
            .find("RUN [\"python\", \"manage.py\", \"collectstatic\", \"--noinput\"]")
            .unwrap_or_else(|| panic!("{d}"));
        assert!(
            d.find("COPY . .").unwrap() < run && run < d.find("USER ").unwrap(),
            "{d}"
        );
        assert!(
            d.contains("shop/settings.py, STATIC_ROOT"),
            "a newline from outside: {d}"
        );
    }

    #[test]
    fn every_emitted_dockerfile_lints_without_a_finding() {
        for r in variants() {
            let e = emit(&r).unwrap();
            let df = parse(&e.dockerfile).unwrap_or_else(|err| {
                panic!("line {}: {}\n{}", err.line, err.message, e.dockerfile)
            });
            let findings = lint::lint(
                &df,
                &lint::Context {
                    dockerignore: Some(e.dockerignore.clone()),
                    ..Default::default()
                },
            );
            assert!(
                findings.is_empty(),
                "{:?}\n{findings:#?}\n{}",
                r.install,
                e.dockerfile
            );
            // Two stages plus uv's; the last runs as the plan's user.
            assert_eq!(df.stages.len(), 3, "{}", e.dockerfile);
            assert!(e.dockerfile.contains("USER 65532:65532"));
            assert!(e
                .dockerfile
                .contains("COPY --from=builder /opt/venv /opt/venv"));
        }
    }

    #[test]
    fn what_each_project_kind_installs_with() {
        let v = variants();
        let df = |i: usize| emit(&v[i]).unwrap().dockerfile;
        let plain = df(0);
        assert!(plain.contains("COPY requirements.txt ./"), "{plain}");
        assert!(plain.contains("uv pip install --python /opt/venv/bin/python -r requirements.txt"));
        assert!(plain.contains("Not every requirement is pinned"));
        assert!(
            !plain.contains("apt-get"),
            "no source builds, no apt: {plain}"
        );
        // Dependencies before code: the install RUN comes before COPY . .
        assert!(plain.find("uv pip install").unwrap() < plain.find("COPY . .").unwrap());

        // An included file is copied for uv to read, and not installed twice.
        let mut r = recipe();
        r.install = Install::Requirements {
            copy: vec!["requirements.txt".into(), "constraints.txt".into()],
            install: vec!["requirements.txt".into()],
            locked: false,
        };
        let inc = emit(&r).unwrap().dockerfile;
        assert!(
            inc.contains("COPY requirements.txt constraints.txt ./"),
            "{inc}"
        );
        assert!(
            inc.contains("/opt/venv/bin/python -r requirements.txt\n"),
            "{inc}"
        );

        let locked = df(1);
        assert!(locked.contains("COPY requirements.txt requirements-prod.txt ./"));
        assert!(locked.contains(
            "uv pip sync --python /opt/venv/bin/python --require-hashes --no-binary psycopg2 requirements.txt requirements-prod.txt"
        ), "{locked}");
        let builder = &locked[..locked.find("AS runtime").unwrap()];
        let runtime = &locked[locked.find("AS runtime").unwrap()..];
        assert!(builder.contains("build-essential libpq-dev"), "{locked}");
        assert!(
            runtime.contains("--no-install-recommends libpq5"),
            "{locked}"
        );
        assert!(!runtime.contains("-dev"), "{locked}");
        assert!(
            runtime.contains(r#"GREETING="hello \"\$USER\" \\o/""#),
            "{locked}"
        );

        let uvlock = df(2);
        assert!(uvlock.contains("COPY pyproject.toml uv.lock ./"));
        assert!(uvlock.contains(
            "uv sync --frozen --no-install-project --no-default-groups --extra postgres --group prod"
        ), "{uvlock}");
        assert!(uvlock.contains("UV_PROJECT_ENVIRONMENT=/opt/venv"));
        let poetry = df(3);
        assert!(poetry.contains(&format!("--from {POETRY} --with {POETRY_EXPORT}")));
        assert!(poetry.contains("--with postgres --with prod"), "{poetry}");
        assert!(poetry.contains("--require-hashes /tmp/requirements.txt"));
        let pyproject = df(4);
        assert!(
            pyproject.contains("-r pyproject.toml --extra postgres --group prod"),
            "{pyproject}"
        );

        let distroless = df(5);
        assert!(distroless.contains("ARG RUNTIME_IMAGE=gcr.io/distroless/python3-debian12:nonroot"));
        assert!(distroless.contains("FROM ${RUNTIME_IMAGE} AS runtime"));
        assert!(
            distroless.contains("python3 build-essential python3-dev"),
            "{distroless}"
        );
        assert!(distroless.contains("uv venv --python /usr/bin/python3 /opt/venv"));
    }

    #[test]
    fn distroless_needs_a_python_it_ships_and_no_extra_libraries() {
        assert!(distroless_image("3.12")
            .unwrap_err()
            .to_string()
            .contains("--runtime slim"));
        assert!(distroless_image("3.13").unwrap().contains("debian13"));
    }

    #[test]
    fn dockerignore_keeps_the_projects_own_patterns_after_ours() {
        let d = dockerignore(
            &["config/sa.json".into()],
            &["tests".into()],
            &["*.md".into(), ".git".into(), "!keep.md".into()],
        );
        let lines: Vec<&str> = d.lines().collect();
        for must in [
            ".git",
            "**/.env",
            "**/*.pem",
            "**/__pycache__",
            "config/sa.json",
            "tests",
        ] {
            assert!(lines.contains(&must), "{must} missing:\n{d}");
        }
        // .git is ours already; the re-include stays after what it re-includes.
        assert_eq!(lines.iter().filter(|l| **l == ".git").count(), 1);
        assert!(d.find("*.md").unwrap() < d.find("!keep.md").unwrap());
        assert!(d.find("# Kept").unwrap() < d.find("!keep.md").unwrap());
    }

    #[test]
    fn tests_and_docs_are_left_out_only_when_nothing_imports_them() {
        let d = tempfile::tempdir().unwrap();
        for dir in ["tests", "docs"] {
            std::fs::create_dir(d.path().join(dir)).unwrap();
            std::fs::write(d.path().join(dir).join("x.py"), "").unwrap();
        }
        std::fs::write(d.path().join("main.py"), "import flask\n").unwrap();
        let files: Vec<String> = ["main.py", "tests/x.py", "docs/x.py"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(optional_dirs(d.path(), &files), vec!["tests", "docs"]);
        std::fs::write(d.path().join("main.py"), "from docs import x\n").unwrap();
        assert_eq!(optional_dirs(d.path(), &files), vec!["tests"]);
    }

    #[test]
    fn write_asks_before_replacing_and_writes_nothing_when_refused() {
        let d = tempfile::tempdir().unwrap();
        let e = emit(&recipe()).unwrap();
        let first = write(d.path(), &e, |_| panic!("nothing exists yet")).unwrap();
        assert!(first.iter().all(|(_, w)| *w == Written::Created));
        let again = write(d.path(), &e, |_| panic!("nothing changed")).unwrap();
        assert!(again.iter().all(|(_, w)| *w == Written::Unchanged));

        std::fs::write(d.path().join("Dockerfile"), "FROM mine\n").unwrap();
        std::fs::write(d.path().join("cloudbuild.yaml"), "steps: []\n").unwrap();
        let mut asked = Vec::new();
        let err = write(d.path(), &e, |p| {
            asked.push(p.file_name().unwrap().to_string_lossy().into_owned());
            Ok(p.ends_with("Dockerfile"))
        })
        .unwrap_err()
        .to_string();
        assert_eq!(asked, vec!["Dockerfile", "cloudbuild.yaml"]);
        assert!(
            err.contains("cloudbuild.yaml") && err.contains("--force"),
            "{err}"
        );
        // The refusal of one kept the other from being written, too.
        assert_eq!(
            std::fs::read_to_string(d.path().join("Dockerfile")).unwrap(),
            "FROM mine\n"
        );
        let left: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(left.len(), 3, "no temporary files left behind");

        let replaced = write(d.path(), &e, |_| Ok(true)).unwrap();
        assert_eq!(replaced[0], ("Dockerfile".to_string(), Written::Replaced));
        assert_eq!(
            std::fs::read_to_string(d.path().join("Dockerfile")).unwrap(),
            e.dockerfile
        );
    }

    #[test]
    fn cloudbuild_builds_with_cache_pushes_and_deploys_with_seed_000s_substitutions() {
        let c = cloudbuild("my-app", 8080);
        for must in [
            "DOCKER_BUILDKIT=1",
            "BUILDKIT_INLINE_CACHE=1",
            "--cache-from",
            "'${_REGION}-docker.pkg.dev/$PROJECT_ID/${_REPO}/${_IMAGE}:$SHORT_SHA'",
            "--all-tags",
            "- deploy",
            "'${_SERVICE_NAME}'",
            "_REGION: us-central1",
            "_IMAGE: my-app",
            "_SERVICE_NAME: my-app",
            "images:",
        ] {
            assert!(c.contains(must), "{must} missing:\n{c}");
        }
        // YAML: two-space indents only, no tabs.
        assert!(!c.contains('\t'));
        assert!(c.lines().all(|l| (l.len() - l.trim_start().len()) % 2 == 0));
    }
}
