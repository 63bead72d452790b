//! Lint rules for Dockerfiles: hadolint's core set where it applies (same
//! IDs), Docker's build checks (same names), and rules of our own for
//! Python images on Cloud Run (`SP...`). Each finding says why and how to
//! fix it.

use super::parse::{Args, Dockerfile, Instruction, Source};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub rule: &'static str,
    pub severity: Severity,
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub fix: String,
}

/// What the linter knows beside the Dockerfile.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// The `.dockerignore` next to it, if any.
    pub dockerignore: Option<String>,
    /// Files in the build context that look like secrets (`.env`, private
    /// keys, service-account JSON) and that `.dockerignore` lets through.
    pub context_secrets: Vec<String>,
}

/// The secret-looking files of the build context `dir` that the
/// `.dockerignore` text does not exclude.
pub fn context_secrets(dir: &std::path::Path, dockerignore: Option<&str>) -> Vec<String> {
    let rules = crate::project::ignore::IgnoreRules::from_lines(dockerignore.unwrap_or("").lines());
    crate::project::ignore::collect(dir, &rules)
        .map(|(_, secrets)| secrets)
        .unwrap_or_default()
}

const BUILD_TOOLS: &[&str] = &[
    "gcc",
    "g++",
    "make",
    "build-essential",
    "clang",
    "cmake",
    "python3-dev",
    "musl-dev",
    "cargo",
    "rustc",
];

/// Installers the runtime does not need once the builder has installed.
const INSTALLERS: &[&str] = &["python3-pip", "python3-venv", "python3-setuptools", "pipx"];

const SECRET_WORDS: &[&str] = &[
    "PASSWORD",
    "PASSWD",
    "SECRET",
    "TOKEN",
    "API_KEY",
    "APIKEY",
    "PRIVATE_KEY",
    "CREDENTIAL",
    "ACCESS_KEY",
];

fn find(
    rule: &'static str,
    sev: Severity,
    ins: &Instruction,
    message: String,
    fix: &str,
) -> Finding {
    Finding {
        rule,
        severity: sev,
        line: ins.line,
        column: 1,
        message,
        fix: fix.to_string(),
    }
}

/// The shell commands of a RUN: its text and its heredoc bodies, split on
/// `&&`, `||`, `;`, `|` and newlines.
fn commands(ins: &Instruction) -> Vec<Vec<String>> {
    let mut text = ins.text();
    for h in &ins.heredocs {
        text.push('\n');
        text.push_str(&h.body);
    }
    text.split(['\n', ';', '|', '&'])
        .map(|c| {
            shell_words::split(c)
                .unwrap_or_else(|_| c.split_whitespace().map(str::to_string).collect())
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// `apt-get install` flags and packages in a RUN's [`commands`].
fn apt_installs(cmds: &[Vec<String>]) -> Vec<(Vec<String>, Vec<String>)> {
    cmds.iter()
        .filter_map(|w| {
            let pos = w.iter().position(|x| x == "apt-get" || x == "apt")?;
            let sub = w.iter().skip(pos + 1).position(|x| x == "install")?;
            let rest: Vec<String> = w[pos + 2 + sub..].to_vec();
            let (flags, pkgs): (Vec<String>, Vec<String>) =
                rest.into_iter().partition(|x| x.starts_with('-'));
            Some((flags, pkgs))
        })
        .collect()
}

/// The arguments of each `pip install` in a RUN's [`commands`].
fn pip_installs(cmds: &[Vec<String>]) -> Vec<Vec<String>> {
    cmds.iter()
        .filter_map(|w| {
            let pos = w.iter().position(|x| {
                x == "pip" || x == "pip3" || x.ends_with("/pip") || x.ends_with("/pip3")
            });
            let pos = match pos {
                Some(p) if w.get(p + 1).map(String::as_str) == Some("install") => p + 2,
                _ => {
                    // python -m pip install
                    let m = w
                        .windows(3)
                        .position(|x| x[0] == "-m" && x[1] == "pip" && x[2] == "install")?;
                    m + 3
                }
            };
            Some(w[pos..].to_vec())
        })
        .collect()
}

fn installs_dependencies(cmds: &[Vec<String>]) -> bool {
    !pip_installs(cmds).is_empty()
        || cmds.iter().any(|w| {
            w.windows(2).any(|x| {
                matches!(
                    (x[0].as_str(), x[1].as_str()),
                    ("uv", "sync")
                        | ("poetry", "install")
                        | ("pipenv", "install")
                        | ("pdm", "install")
                ) || (x[0] == "uv" && x[1] == "pip")
            })
        })
}

fn image_name_and_tag(base: &str) -> (String, Option<String>, bool) {
    let (name, digest) = match base.split_once('@') {
        Some((n, _)) => (n, true),
        None => (base, false),
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.split_once(':') {
        Some((_, t)) => (
            name[..name.len() - t.len() - 1].to_string(),
            Some(t.to_string()),
            digest,
        ),
        None => (name.to_string(), None, digest),
    }
}

pub fn lint(df: &Dockerfile, ctx: &Context) -> Vec<Finding> {
    let mut out = Vec::new();
    stage_checks(df, &mut out);
    instruction_checks(df, &mut out);
    final_stage_checks(df, &mut out);
    dockerignore_checks(df, ctx, &mut out);
    // Suppressions.
    out.retain(|f| {
        !df.ignores
            .get(&f.line)
            .is_some_and(|rules| rules.iter().any(|r| r == f.rule))
    });
    out.sort_by(|a, b| (a.line, a.rule).cmp(&(b.line, b.rule)));
    out
}

/// What the walk over the instructions remembers, per stage.
struct Walk {
    workdir_set: Vec<bool>,
    /// The stage of the instruction before, when it was a RUN.
    prev_run: Option<usize>,
    /// The line of a `COPY . .` not yet followed by a dependency install.
    copied_all: Vec<Option<usize>>,
    pipefail: Vec<bool>,
}

/// Each stage's FROM: aliases, tags, bases.
fn stage_checks(df: &Dockerfile, out: &mut Vec<Finding>) {
    use Severity::*;
    let last_stage = df.stages.len() - 1;
    let mut aliases: Vec<String> = Vec::new();
    for st in &df.stages {
        let from = &df.instructions[st.first];
        if let Some(n) = &st.name {
            if aliases.iter().any(|a| a.eq_ignore_ascii_case(n)) {
                out.push(find(
                    "DL3024",
                    Error,
                    from,
                    format!("FROM alias {n:?} is used twice"),
                    "give each stage its own name",
                ));
            }
            aliases.push(n.clone());
        }
        if let Source::Image(img) = &st.from {
            if img != "scratch" && !img.contains('$') {
                let (name, tag, digest) = image_name_and_tag(img);
                match tag.as_deref() {
                    _ if digest => {}
                    None => out.push(find(
                        "DL3006",
                        Warning,
                        from,
                        format!("{img} has no tag: the build gets whatever `latest` is that day"),
                        "pin a version tag (python:3.12-slim-bookworm), or better a digest",
                    )),
                    Some("latest") => out.push(find(
                        "DL3007",
                        Warning,
                        from,
                        format!("{img} uses the `latest` tag"),
                        "pin a version tag, e.g. python:3.12-slim-bookworm",
                    )),
                    _ => {}
                }
                let full_python = name.ends_with("python")
                    && tag.as_deref().is_some_and(|t| {
                        !t.contains("slim") && !t.contains("alpine") && !t.contains("windows")
                    });
                if full_python && st.index == last_stage {
                    let (rule, what) = if df.stages.len() == 1 {
                        ("SP002", "single-stage build")
                    } else {
                        ("SP001", "final stage")
                    };
                    out.push(find(rule, Warning, from, format!("{what} on {img}, the full image: gcc, headers and the Debian toolchain (about 1 GB) ship with the app"), "build in a stage on the full or slim image and start the final stage from python:X.Y-slim, copying the venv over"));
                }
                if let Some(why) = end_of_life(&name, tag.as_deref()) {
                    out.push(find(
                        "SP005",
                        Warning,
                        from,
                        format!("{img}: {why} gets no security fixes any more"),
                        "move to a supported release (python:3.13-slim-trixie, python:3.12-slim-bookworm)",
                    ));
                }
                if name.contains("alpine") || tag.as_deref().is_some_and(|t| t.contains("alpine")) {
                    let pip = df
                        .stage_instructions(st.index)
                        .any(|i| !pip_installs(&commands(i)).is_empty());
                    if pip {
                        out.push(find("SP011", Warning, from, format!("{img} is musl-based: PyPI's manylinux wheels do not install, so numpy, psycopg2, pydantic-core and friends compile from source (slow builds, bigger images)"), "use a Debian-based slim image (python:3.12-slim-bookworm)"));
                    }
                }
            }
        }
    }
}

/// Each instruction in order, with what came before it in its stage.
fn instruction_checks(df: &Dockerfile, out: &mut Vec<Finding>) {
    use Severity::*;
    // Where each stage installed Python packages, read once.
    let envs: Vec<Vec<EnvDir>> = (0..df.stages.len()).map(|s| env_dirs(df, s)).collect();
    let mut w = Walk {
        workdir_set: vec![false; df.stages.len()],
        prev_run: None,
        copied_all: vec![None; df.stages.len()],
        pipefail: vec![false; df.stages.len()],
    };
    for ins in &df.instructions {
        let Some(si) = ins.stage else { continue };
        let text = ins.text();
        match ins.keyword.as_str() {
            "WORKDIR" => {
                w.workdir_set[si] = true;
                let w = text.trim().trim_matches('"');
                // Absolute, a variable, or a Windows drive (C:\app).
                let absolute = w.starts_with('/')
                    || w.starts_with('$')
                    || (w.len() > 1 && w.as_bytes()[1] == b':');
                if !absolute {
                    out.push(find(
                        "DL3000",
                        Error,
                        ins,
                        format!("WORKDIR {w:?} is relative"),
                        "use an absolute path (WORKDIR /app)",
                    ));
                }
            }
            "SHELL" => w.pipefail[si] = text.contains("pipefail"),
            "RUN" => {
                run_checks(df, ins, si, &mut w, out);
                w.prev_run = Some(si);
                continue;
            }
            "ADD" => {
                let srcs = src_args(ins);
                if srcs.iter().all(|s| !s.contains("://") && !is_archive(s)) && !srcs.is_empty() {
                    out.push(find("DL3020", Error, ins, "ADD for local files".into(), "use COPY: ADD also fetches URLs and unpacks archives, which COPY makes explicit"));
                }
                copy_checks(df, ins, si, &envs, &w.workdir_set, &mut w.copied_all, out);
            }
            "COPY" => copy_checks(df, ins, si, &envs, &w.workdir_set, &mut w.copied_all, out),
            "CMD" | "ENTRYPOINT" => {
                if matches!(ins.args, Args::Shell(_)) && !text.is_empty() {
                    out.push(find("DL3025", Warning, ins, format!("{} in shell form: /bin/sh -c becomes PID 1 and SIGTERM never reaches the app (Cloud Run stops it the hard way after 10 s); Docker's check JSONArgsRecommended", ins.keyword), "use the JSON form: CMD [\"gunicorn\", \"--bind\", \"0.0.0.0:8080\", \"main:app\"]"));
                }
                server_binding(ins, out);
            }
            "ARG" | "ENV" => {
                if ins.keyword == "ENV" && !text.contains('=') && !text.trim().is_empty() {
                    out.push(find("LegacyKeyValueFormat", Info, ins, "ENV KEY value (no =) is the legacy form, and reads wrong with several variables".into(), "write ENV KEY=value"));
                }
                for name in declared_names(ins) {
                    let up = name.to_ascii_uppercase();
                    if SECRET_WORDS.iter().any(|w| up.contains(w)) {
                        out.push(find("SecretsUsedInArgOrEnv", Warning, ins, format!("{} {name} looks like a secret: it stays in the image's config and history", ins.keyword), "pass secrets at run time (Cloud Run: Secret Manager references) or with RUN --mount=type=secret"));
                    }
                }
            }
            _ => {}
        }
        w.prev_run = None;
    }
}

fn run_checks(df: &Dockerfile, ins: &Instruction, si: usize, w: &mut Walk, out: &mut Vec<Finding>) {
    use Severity::*;
    let last_stage = df.stages.len() - 1;
    let text = ins.text();
    let cmds = commands(ins);
    if w.prev_run == Some(si) {
        out.push(find(
            "DL3059",
            Info,
            ins,
            "consecutive RUN instructions: each is a layer".into(),
            "join them with && where they belong together",
        ));
    }
    let installs = apt_installs(&cmds);
    apt_checks(df, ins, si, &installs, out);
    if !installs.is_empty() && !text.contains("/var/lib/apt/lists") && ins.flag("mount").is_none() {
        out.push(find(
            "DL3009",
            Info,
            ins,
            "apt lists are left in the layer".into(),
            "end the RUN with && rm -rf /var/lib/apt/lists/*",
        ));
    }
    pip_checks(ins, &cmds, out);
    if si == last_stage || df.stages.len() == 1 || stage_feeds_final(df, si) {
        if let Some(how) = dev_install(&cmds) {
            out.push(find("SP015", Warning, ins, format!("{how} installs the dev dependencies too: test and lint tools ship in the image"), "poetry install --only main (or --without dev); uv sync --no-dev; pipenv install --deploy without --dev"));
        }
    }
    if !w.pipefail[si]
        && ins.heredocs.is_empty()
        && matches!(ins.args, Args::Shell(_))
        && has_pipe(&text)
    {
        out.push(find(
            "DL4006",
            Warning,
            ins,
            "a pipe in RUN hides a failing command on its left".into(),
            "SHELL [\"/bin/bash\", \"-o\", \"pipefail\", \"-c\"] before it",
        ));
    }
    if let Some(c) = w.copied_all[si] {
        if installs_dependencies(&cmds) {
            out.push(Finding {
                    rule: "SP003",
                    severity: Warning,
                    line: c,
                    column: 1,
                    message: format!("the whole context is copied (line {c}) before dependencies are installed (line {}): every code edit reinstalls them", ins.line),
                    fix: "copy only the dependency files (requirements.txt, pyproject.toml, uv.lock) first, install, then COPY . .".into(),
                });
            w.copied_all[si] = None;
        }
    }
}

/// apt-get installs: pinned, without recommends, no installers or build
/// tools in the final stage.
fn apt_checks(
    df: &Dockerfile,
    ins: &Instruction,
    si: usize,
    installs: &[(Vec<String>, Vec<String>)],
    out: &mut Vec<Finding>,
) {
    use Severity::*;
    let last_stage = df.stages.len() - 1;
    for (flags, pkgs) in installs {
        let unpinned: Vec<&String> = pkgs
            .iter()
            .filter(|p| !p.contains('=') && !p.starts_with('$'))
            .collect();
        if !unpinned.is_empty() {
            out.push(find(
                "DL3008",
                Warning,
                ins,
                format!(
                    "apt-get install without versions: {}",
                    unpinned
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
                "pin versions (pkg=1.2.3-1), or accept that rebuilds differ",
            ));
        }
        if !flags.iter().any(|f| f == "--no-install-recommends") {
            out.push(find("DL3015", Info, ins, "apt-get install without --no-install-recommends pulls in packages nothing asked for".into(), "add --no-install-recommends"));
        }
        if si == last_stage && df.stages.len() > 1 {
            let installers: Vec<&String> = pkgs
                .iter()
                .filter(|p| INSTALLERS.contains(&p.split('=').next().unwrap_or(p)))
                .collect();
            if !installers.is_empty() {
                out.push(find("SP013", Warning, ins, format!("the final stage installs {}: the dependencies were installed in the builder, and an installer in the runtime only adds size and attack surface", installers.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")), "drop it from the final stage"));
            }
        }
        if si == last_stage || df.stages.len() == 1 {
            let tools: Vec<&String> = pkgs
                .iter()
                .filter(|p| {
                    let n = p.split('=').next().unwrap_or(p);
                    BUILD_TOOLS.contains(&n) || n.ends_with("-dev")
                })
                .collect();
            if !tools.is_empty() {
                let (rule, msg) = if df.stages.len() == 1 {
                    ("SP002", format!("single-stage build installs {}: compilers and headers ship in the image", tools.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")))
                } else {
                    ("SP001", format!("the final stage installs build tools or headers ({}): they ship in the image", tools.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")))
                };
                out.push(find(rule, Warning, ins, msg, "compile in a builder stage, copy the venv over, and install only runtime libraries (libpq5, not libpq-dev) in the final stage"));
            }
        }
    }
}

/// pip installs: pinned, no download cache in the layer.
fn pip_checks(ins: &Instruction, cmds: &[Vec<String>], out: &mut Vec<Finding>) {
    use Severity::*;
    let cache_mount = ins
        .flags
        .iter()
        .any(|f| f.name == "mount" && f.value.as_deref().is_some_and(|v| v.contains("type=cache")));
    for args in pip_installs(cmds) {
        let pkgs: Vec<&String> = args
            .iter()
            .filter(|a| !a.starts_with('-') && !a.starts_with('.') && !a.contains('/'))
            .collect();
        let from_file = args
            .iter()
            .any(|a| a == "-r" || a.starts_with("--requirement") || a == "-e");
        let unpinned: Vec<&&String> = pkgs
            .iter()
            .filter(|p| !p.contains("==") && !p.contains('@'))
            .collect();
        if !from_file && !unpinned.is_empty() {
            out.push(find(
                "DL3013",
                Warning,
                ins,
                format!(
                    "pip install without versions: {}",
                    unpinned
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
                "pin versions (pkg==1.2.3), or install from a locked requirements file",
            ));
        }
        if !args.iter().any(|a| a == "--no-cache-dir") && !cache_mount {
            out.push(find(
                "DL3042",
                Warning,
                ins,
                "pip keeps its download cache in the layer".into(),
                "add --no-cache-dir, or use RUN --mount=type=cache,target=/root/.cache/pip",
            ));
        }
    }
}

/// Per stage: repeated CMD/ENTRYPOINT; the final stage's user, console
/// scripts and HEALTHCHECK.
fn final_stage_checks(df: &Dockerfile, out: &mut Vec<Finding>) {
    use Severity::*;
    let last_stage = df.stages.len() - 1;
    // Per stage: repeated CMD/ENTRYPOINT.
    for st in &df.stages {
        for kw in ["CMD", "ENTRYPOINT"] {
            let all: Vec<&Instruction> = df
                .stage_instructions(st.index)
                .filter(|i| i.keyword == kw)
                .collect();
            if all.len() > 1 {
                let rule = if kw == "CMD" { "DL4003" } else { "DL4004" };
                out.push(find(
                    rule,
                    Warning,
                    all[all.len() - 1],
                    format!(
                        "{} {kw} instructions in one stage: only the last counts",
                        all.len()
                    ),
                    "keep one",
                ));
            }
        }
    }

    // The final stage's user.
    let last_user = df
        .stage_instructions(last_stage)
        .filter(|i| i.keyword == "USER")
        .last();
    match last_user {
        Some(u) => {
            let who = u.text();
            let who = who.trim();
            if who == "root" || who == "0" || who.starts_with("root:") || who.starts_with("0:") {
                out.push(find(
                    "DL3002",
                    Warning,
                    u,
                    "the last USER is root".into(),
                    "switch to a non-root user (USER 65532:65532) after the steps that need root",
                ));
            }
        }
        None => {
            let from = &df.instructions[df.stages[last_stage].first];
            out.push(find("SP007", Warning, from, "no USER in the final stage: the app runs as root".into(), "create a user and switch to it (RUN useradd -r -u 10001 app … USER app), or USER 65532:65532"));
        }
    }

    scripts_left_behind(df, last_stage, out);

    // HEALTHCHECK with curl installed for it (seed 000): Cloud Run ignores it.
    for h in df
        .instructions
        .iter()
        .filter(|i| i.keyword == "HEALTHCHECK" && i.stage == Some(last_stage))
    {
        let text = h.text();
        if text.contains("curl") {
            out.push(find("SP014", Info, h, "HEALTHCHECK with curl: Cloud Run ignores HEALTHCHECK, and curl (with its libraries) is in the image only for it".into(), "drop it and configure a startup probe on the service (slimpack deploy sets one on the detected health path)"));
        }
    }
}

/// A whole-context COPY needs a .dockerignore that keeps secrets out.
fn dockerignore_checks(df: &Dockerfile, ctx: &Context, out: &mut Vec<Finding>) {
    use Severity::*;
    let copies_all = df.instructions.iter().any(|i| {
        (i.keyword == "COPY" || i.keyword == "ADD")
            && i.flag("from").is_none()
            && src_args(i).iter().any(|s| s == "." || s == "./")
    });
    if copies_all {
        let first = &df.instructions[0];
        match &ctx.dockerignore {
            None => out.push(find("SP010", Warning, first, "no .dockerignore while the whole context is copied: .git, .venv, __pycache__ and .env go into the image".into(), "add a .dockerignore (slimpack dockerfile writes one)")),
            Some(text) => {
                let pats: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
                let covers = |p: &str| pats.iter().any(|x| x.trim_start_matches("**/").trim_start_matches('/') == p || *x == format!("{p}*") || *x == "*");
                let missing: Vec<&str> = [".env", ".git"].into_iter().filter(|p| !covers(p)).collect();
                if !missing.is_empty() {
                    out.push(find("SP009", Warning, first, format!(".dockerignore does not exclude {}: secrets and history can end up in a layer", missing.join(", ")), "add them to .dockerignore"));
                }
            }
        }
        if !ctx.context_secrets.is_empty() {
            let shown: Vec<&str> = ctx
                .context_secrets
                .iter()
                .take(5)
                .map(String::as_str)
                .collect();
            out.push(find("SP009", Error, first, format!("the build context holds {}{}, which .dockerignore does not exclude: the whole-context COPY puts it in a layer", shown.join(", "), if ctx.context_secrets.len() > 5 { " and more" } else { "" }), "add them to .dockerignore (and rotate anything already pushed in an image)"));
        }
    }
}

/// A shell pipe `|` in `text`: not `||`, not inside quotes.
fn has_pipe(text: &str) -> bool {
    let chars: Vec<char> = text.chars().collect();
    let mut quote: Option<char> = None;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) if c == '\\' => i += 1,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == '\\' => i += 1,
            None if c == '|' => {
                if chars.get(i + 1) == Some(&'|') {
                    i += 2;
                    continue;
                }
                return true;
            }
            None => {}
        }
        i += 1;
    }
    false
}

fn declared_names(ins: &Instruction) -> Vec<String> {
    let text = ins.text();
    if ins.keyword == "ENV" && !text.contains('=') {
        // Legacy `ENV KEY value`.
        return text
            .split_whitespace()
            .next()
            .map(|k| vec![k.to_string()])
            .unwrap_or_default();
    }
    shell_words::split(&text)
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.split('=').next().unwrap_or("").to_string())
        .filter(|n| !n.is_empty())
        .collect()
}

/// The words of a CMD/ENTRYPOINT/RUN as the shell would split them.
fn words(ins: &Instruction) -> Vec<String> {
    match &ins.args {
        Args::Exec(v) => v.clone(),
        Args::Shell(s) => shell_words::split(s).unwrap_or_default(),
    }
}

/// `(major, minor)` of a `python:` image's tag (`3.12-slim` → 3, 12).
fn python_version(name: &str, tag: Option<&str>) -> Option<(u32, u32)> {
    if !name.ends_with("python") {
        return None;
    }
    let mut parts = tag?.split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

fn src_args(ins: &Instruction) -> Vec<String> {
    let words: Vec<String> = match &ins.args {
        Args::Exec(v) => v.clone(),
        Args::Shell(s) => s.split_whitespace().map(str::to_string).collect(),
    };
    if words.len() < 2 {
        return Vec::new();
    }
    words[..words.len() - 1]
        .iter()
        .filter(|w| !w.starts_with("<<"))
        .cloned()
        .collect()
}

fn dest_arg(ins: &Instruction) -> Option<String> {
    match &ins.args {
        Args::Exec(v) => v.last().cloned(),
        Args::Shell(s) => s.split_whitespace().last().map(str::to_string),
    }
}

fn is_archive(s: &str) -> bool {
    [".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".txz"]
        .iter()
        .any(|e| s.ends_with(e))
}

fn copy_checks(
    df: &Dockerfile,
    ins: &Instruction,
    si: usize,
    envs: &[Vec<EnvDir>],
    workdir_set: &[bool],
    copied_all: &mut [Option<usize>],
    out: &mut Vec<Finding>,
) {
    use Severity::*;
    if let Some(from) = ins.flag("from").and_then(|f| f.value.as_deref()) {
        match df.resolve_from(from, si + 1) {
            Source::Stage(s) if s == si => out.push(find(
                "DL3023",
                Error,
                ins,
                format!("COPY --from={from} names its own stage"),
                "copy from an earlier stage",
            )),
            Source::Stage(s) => {
                venv_across_pythons(df, ins, s, si, out);
                env_moved(ins, &envs[s], out);
            }
            Source::Image(img) => {
                if !img.contains(':') && !img.contains('/') && !img.contains('$') {
                    out.push(find("DL3022", Warning, ins, format!("COPY --from={img}: no earlier stage has that name, so it is pulled as an image"), "name the stage (FROM ... AS {img}) before this COPY, or write the image in full"));
                }
            }
        }
    } else {
        let srcs = src_args(ins);
        if srcs.iter().any(|s| s == "." || s == "./") && copied_all[si].is_none() {
            copied_all[si] = Some(ins.line);
        }
        let built: Vec<&String> = envs[..si]
            .iter()
            .flatten()
            .map(|d| match d {
                EnvDir::Venv(p) | EnvDir::Prefix(p) => p,
            })
            .collect();
        for src in srcs.iter().map(|s| s.trim_end_matches('/')) {
            let from_stage = built.iter().any(|b| *b == src)
                || (src.starts_with('/')
                    && (src.contains("venv") || src.contains("site-packages")));
            if from_stage {
                out.push(find(
                    "SP016",
                    Error,
                    ins,
                    format!("COPY {src} has no --from: it copies from the build context, not from the stage that built {src}"),
                    &format!("COPY --from=builder {src} {src}"),
                ));
            }
        }
    }
    if let Some(dest) = dest_arg(ins) {
        if !dest.starts_with('/') && !dest.starts_with('$') && !workdir_set[si] {
            out.push(find(
                "DL3045",
                Warning,
                ins,
                format!("COPY to the relative path {dest:?} with no WORKDIR set in this stage"),
                "set WORKDIR first, or copy to an absolute path",
            ));
        }
    }
}

/// Seed 004's warning: a venv or site-packages built for one Python copied
/// into an image with another.
fn venv_across_pythons(
    df: &Dockerfile,
    ins: &Instruction,
    from: usize,
    to: usize,
    out: &mut Vec<Finding>,
) {
    let srcs = src_args(ins);
    let is_env = srcs
        .iter()
        .any(|s| s.contains("venv") || s.contains("site-packages") || s.contains("/install"));
    if !is_env {
        return;
    }
    let py = |base: &str| {
        let (name, tag, _) = image_name_and_tag(base);
        python_version(&name, tag.as_deref())
    };
    let (a, b) = (&df.stages[from].base, &df.stages[to].base);
    let differs = match (py(a), py(b)) {
        (Some(x), Some(y)) => x != y,
        _ => {
            let alpine = |s: &str| s.contains("alpine");
            alpine(a) != alpine(b)
        }
    };
    if differs {
        out.push(find(
            "SP004",
            Severity::Error,
            ins,
            format!("{} is copied from a stage on {a} into one on {b}: compiled extensions and the venv's interpreter path are for the other Python", srcs.join(" ")),
            "build both stages on the same Python image and version (one ARG for the tag)",
        ));
    }
}

/// A stage whose files the final stage copies (`COPY --from`).
fn stage_feeds_final(df: &Dockerfile, stage: usize) -> bool {
    let last = df.stages.len() - 1;
    df.stage_instructions(last).any(|i| {
        i.flag("from")
            .and_then(|f| f.value.as_deref())
            .is_some_and(|v| df.resolve_from(v, last + 1) == Source::Stage(stage))
    })
}

/// An install that takes the dev dependencies along, described.
fn dev_install(cmds: &[Vec<String>]) -> Option<String> {
    for w in cmds {
        if w.iter().any(|a| a.contains('$')) {
            // Options in a variable: cannot tell.
            continue;
        }
        let has = |f: &[&str]| {
            w.iter()
                .any(|a| f.iter().any(|x| a == x || a.starts_with(&format!("{x}="))))
        };
        let after = |a: &str, b: &str| w.windows(2).any(|x| x[0] == a && x[1] == b);
        if after("poetry", "install") && !has(&["--only", "--without", "--no-dev", "--only-root"]) {
            return Some("poetry install".into());
        }
        if after("uv", "sync") && !has(&["--no-dev", "--only-group", "--no-default-groups"]) {
            return Some("uv sync".into());
        }
        if after("pipenv", "install") && has(&["--dev", "-d"]) {
            return Some("pipenv install --dev".into());
        }
    }
    None
}

/// Why a base image is past its end of life, if it is: CPython 3.9 and
/// older (3.9 ended in October 2025), Debian 10 (buster) and older.
fn end_of_life(name: &str, tag: Option<&str>) -> Option<String> {
    let mut why = Vec::new();
    match python_version(name, tag) {
        Some((2, _)) => why.push("Python 2".to_string()),
        Some((3, m)) if m <= 9 => why.push(format!("Python 3.{m}")),
        _ => {}
    }
    let tag = tag?;
    for (codename, number) in [("buster", 10), ("stretch", 9), ("jessie", 8)] {
        if tag.split('-').any(|t| t == codename) {
            why.push(format!("Debian {number} ({codename})"));
        }
    }
    (!why.is_empty()).then(|| why.join(" on "))
}

/// The venv or `--prefix` directory a stage installed into, for [`env_moved`].
enum EnvDir {
    Venv(String),
    Prefix(String),
}

fn env_dirs(df: &Dockerfile, stage: usize) -> Vec<EnvDir> {
    let mut out = Vec::new();
    for ins in df.stage_instructions(stage).filter(|i| i.keyword == "RUN") {
        for w in commands(ins) {
            let venv_at = w
                .windows(2)
                .position(|x| (x[0] == "uv" || x[0] == "-m") && x[1] == "venv");
            let start = match venv_at {
                Some(p) => Some(p + 2),
                None => w.iter().position(|x| x == "virtualenv").map(|p| p + 1),
            };
            if let Some(start) = start {
                if let Some(dir) = w[start..].iter().find(|a| !a.starts_with('-')) {
                    out.push(EnvDir::Venv(dir.trim_end_matches('/').to_string()));
                }
            }
            for args in pip_installs(std::slice::from_ref(&w)) {
                for (i, a) in args.iter().enumerate() {
                    let p = if let Some(v) = a.strip_prefix("--prefix=") {
                        Some(v.to_string())
                    } else if a == "--prefix" {
                        args.get(i + 1).cloned()
                    } else {
                        None
                    };
                    if let Some(p) = p {
                        out.push(EnvDir::Prefix(p.trim_end_matches('/').to_string()));
                    }
                }
            }
        }
    }
    out
}

/// A venv copied to another path (its scripts and pyvenv.cfg name the old
/// one), or a `--prefix` tree copied anywhere but the interpreter's prefix.
fn env_moved(ins: &Instruction, dirs: &[EnvDir], out: &mut Vec<Finding>) {
    let (srcs, Some(dest)) = (src_args(ins), dest_arg(ins)) else {
        return;
    };
    let dest = dest.trim_end_matches('/').to_string();
    for src in srcs.iter().map(|s| s.trim_end_matches('/')) {
        for dir in dirs {
            match dir {
                EnvDir::Venv(v) if v == src && dest != *v => out.push(find(
                    "SP004",
                    Severity::Error,
                    ins,
                    format!("the venv built at {v} is copied to {dest}: its scripts' #! lines and pyvenv.cfg still point at {v}"),
                    &format!("copy it to the same path (COPY --from=... {v} {v}), or create it at {dest} in the builder"),
                )),
                EnvDir::Prefix(p) if p == src && dest != *p && dest != "/usr/local" && dest != "/usr" => out.push(find(
                    "SP004",
                    Severity::Error,
                    ins,
                    format!("packages installed with --prefix={p} are copied to {dest}: they land in {dest}/lib/pythonX.Y/site-packages, which the interpreter does not search"),
                    "copy the prefix onto the interpreter's (COPY --from=... /install /usr/local), or use a venv",
                )),
                _ => {}
            }
        }
    }
}

/// Seed 002: site-packages copied from the builder, but the command is a
/// console script (gunicorn) that pip wrote to the builder's bin directory.
fn scripts_left_behind(df: &Dockerfile, last: usize, out: &mut Vec<Finding>) {
    let copies: Vec<&Instruction> = df
        .stage_instructions(last)
        .filter(|i| i.keyword == "COPY" && i.flag("from").is_some())
        .collect();
    let site_only = copies
        .iter()
        .any(|i| src_args(i).iter().any(|s| s.contains("site-packages")))
        && !copies.iter().any(|i| {
            src_args(i)
                .iter()
                .any(|s| s.ends_with("/bin") || s.ends_with("/bin/") || s.contains("venv"))
        });
    if !site_only {
        return;
    }
    let installs_here = df
        .stage_instructions(last)
        .any(|i| i.keyword == "RUN" && installs_dependencies(&commands(i)));
    let Some(cmd) = df
        .stage_instructions(last)
        .filter(|i| i.keyword == "CMD" || i.keyword == "ENTRYPOINT")
        .last()
    else {
        return;
    };
    let words = words(cmd);
    let Some(first) = words.first() else { return };
    let is_script = !first.contains('/')
        && !first.starts_with("python")
        && !["sh", "bash", "exec"].contains(&first.as_str());
    if is_script && !installs_here {
        out.push(find(
            "SP012",
            Severity::Error,
            cmd,
            format!("{first} is run, but only site-packages came from the builder: the {first} script pip wrote to the builder's bin directory is not in this image"),
            "install into a venv and copy the whole venv (COPY --from=builder /opt/venv /opt/venv), or run it as a module (python -m gunicorn)",
        ));
    }
}

fn server_binding(ins: &Instruction, out: &mut Vec<Finding>) {
    use Severity::*;
    let words = words(ins);
    let joined = words.join(" ");
    let loopback = ["127.0.0.1", "localhost"].iter().any(|h| {
        words
            .windows(2)
            .any(|w| (w[0] == "--host" || w[0] == "-b" || w[0] == "--bind") && w[1].starts_with(h))
            || words.iter().any(|w| {
                w.starts_with(&format!("--bind={h}")) || w.starts_with(&format!("--host={h}"))
            })
    });
    if loopback {
        out.push(find("SP006", Error, ins, "the server binds to loopback: Cloud Run's requests arrive on the container's interface and never reach it".into(), "bind 0.0.0.0 (--host 0.0.0.0, --bind 0.0.0.0:$PORT)"));
        return;
    }
    let fixed_port = words
        .windows(2)
        .any(|w| (w[0] == "--port" || w[0] == "-p") && w[1].chars().all(|c| c.is_ascii_digit()))
        || words.iter().any(|w| {
            w.rsplit_once(':').is_some_and(|(h, p)| {
                (h == "0.0.0.0"
                    || h.is_empty()
                    || h.ends_with("=0.0.0.0")
                    || h.ends_with(" 0.0.0.0"))
                    && !p.is_empty()
                    && p.chars().all(|c| c.is_ascii_digit())
            })
        });
    if fixed_port && !joined.contains("PORT") {
        out.push(find("SP008", Warning, ins, "the server's port is fixed: Cloud Run tells the container which port to listen on in $PORT".into(), "listen on $PORT (JSON form has no shell: [\"sh\", \"-c\", \"exec uvicorn main:app --host 0.0.0.0 --port $PORT\"], or a server that reads PORT, like gunicorn)"));
    }
}

/// `{"findings": [{"rule", "severity", "line", "column", "message", "fix"}]}`.
pub fn to_json(findings: &[Finding]) -> serde_json::Value {
    serde_json::json!({ "findings": findings })
}

/// SARIF 2.1.0, for code-scanning upload.
pub fn to_sarif(findings: &[Finding], uri: &str) -> serde_json::Value {
    let mut rules: Vec<&str> = findings.iter().map(|f| f.rule).collect();
    rules.sort();
    rules.dedup();
    let level = |s: Severity| match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Info => "note",
    };
    serde_json::json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "slimpack",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules.iter().map(|r| {
                    let help = if r.starts_with("DL") {
                        format!("https://github.com/hadolint/hadolint/wiki/{r}")
                    } else if r.starts_with("SP") {
                        "slimpack lint rule".to_string()
                    } else {
                        format!("https://docs.docker.com/reference/build-checks/{}/", kebab(r))
                    };
                    serde_json::json!({"id": r, "helpUri": help})
                }).collect::<Vec<_>>(),
            }},
            "results": findings.iter().map(|f| serde_json::json!({
                "ruleId": f.rule,
                "level": level(f.severity),
                "message": {"text": format!("{} Fix: {}", f.message, f.fix)},
                "locations": [{"physicalLocation": {
                    "artifactLocation": {"uri": uri},
                    "region": {"startLine": f.line, "startColumn": f.column},
                }}],
            })).collect::<Vec<_>>(),
        }],
    })
}

fn kebab(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('-');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// For people: grouped by line, colored when `color`.
pub fn to_human(findings: &[Finding], path: &str, color: bool) -> String {
    let paint = |code: &str, s: &str| {
        if color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    };
    let mut out = String::new();
    let mut last_line = 0;
    for f in findings {
        if f.line != last_line {
            out.push_str(&paint("1", &format!("{path}:{}\n", f.line)));
            last_line = f.line;
        }
        let sev = match f.severity {
            Severity::Error => paint("31", "error"),
            Severity::Warning => paint("33", "warning"),
            Severity::Info => paint("36", "info"),
        };
        out.push_str(&format!(
            "  {sev} {}: {}\n      fix: {}\n",
            f.rule, f.message, f.fix
        ));
    }
    if findings.is_empty() {
        out.push_str(&format!("{path}: no findings\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipes_inside_quotes_and_or_lists_are_no_pipes() {
        assert!(has_pipe("curl -s x | sh"));
        assert!(!has_pipe("test -f a || exit 1"));
        assert!(!has_pipe("grep -E 'a|b' file"));
        assert!(!has_pipe("echo \"x | y\""));
        assert!(has_pipe("echo 'a|b' | tr a b"));
        assert!(!has_pipe("echo a \\| b"));
    }
    use crate::dockerfile::parse;

    fn rules(src: &str, ctx: &Context) -> Vec<(&'static str, usize)> {
        lint(&parse(src).unwrap(), ctx)
            .into_iter()
            .map(|f| (f.rule, f.line))
            .collect()
    }

    fn has(src: &str, rule: &str) -> bool {
        rules(
            src,
            &Context {
                dockerignore: Some(".git\n.env\n".into()),
                ..Default::default()
            },
        )
        .iter()
        .any(|r| r.0 == rule)
    }

    #[test]
    fn each_rule_fires_and_stays_quiet() {
        let clean = "FROM python:3.12-slim AS b\nWORKDIR /app\nCOPY requirements.txt .\nRUN pip install --no-cache-dir -r requirements.txt\nFROM python:3.12-slim\nWORKDIR /app\nCOPY --from=b /opt/venv /opt/venv\nCOPY . .\nUSER 65532\nCMD [\"gunicorn\", \"main:app\"]\n";
        assert_eq!(
            rules(
                clean,
                &Context {
                    dockerignore: Some(".git\n.env\n".into()),
                    ..Default::default()
                }
            ),
            vec![]
        );
        for (src, rule) in [
            ("FROM python\nUSER 1\n", "DL3006"),
            ("FROM python:latest\nUSER 1\n", "DL3007"),
            ("FROM a:1\nWORKDIR app\nUSER 1\n", "DL3000"),
            ("FROM a:1\nUSER root\n", "DL3002"),
            ("FROM a:1\n", "SP007"),
            ("FROM a:1\nRUN apt-get update && apt-get install -y curl\nUSER 1\n", "DL3008"),
            ("FROM a:1\nRUN apt-get update && apt-get install -y curl\nUSER 1\n", "DL3009"),
            ("FROM a:1\nRUN apt-get update && apt-get install -y curl\nUSER 1\n", "DL3015"),
            ("FROM a:1\nRUN pip install --no-cache-dir flask\nUSER 1\n", "DL3013"),
            ("FROM a:1\nRUN pip install flask==3.0\nUSER 1\n", "DL3042"),
            ("FROM a:1\nADD app.py /app/\nUSER 1\n", "DL3020"),
            ("FROM a:1\nCOPY --from=builder /x /y\nUSER 1\n", "DL3022"),
            ("FROM a:1 AS x\nCOPY --from=x /x /y\nUSER 1\n", "DL3023"),
            ("FROM a:1 AS x\nFROM a:1 AS x\nUSER 1\n", "DL3024"),
            ("FROM a:1\nUSER 1\nCMD gunicorn main:app\n", "DL3025"),
            ("FROM a:1\nCOPY x y\nUSER 1\n", "DL3045"),
            ("FROM a:1\nRUN a\nRUN b\nUSER 1\n", "DL3059"),
            ("FROM a:1\nUSER 1\nCMD [\"a\"]\nCMD [\"b\"]\n", "DL4003"),
            ("FROM a:1\nUSER 1\nENTRYPOINT [\"a\"]\nENTRYPOINT [\"b\"]\n", "DL4004"),
            ("FROM a:1\nRUN curl x | sh\nUSER 1\n", "DL4006"),
            ("FROM a:1\nENV DB_PASSWORD=x\nUSER 1\n", "SecretsUsedInArgOrEnv"),
            ("FROM a:1 AS b\nFROM a:1\nRUN apt-get install -y --no-install-recommends libpq-dev gcc && rm -rf /var/lib/apt/lists/*\nUSER 1\n", "SP001"),
            ("FROM a:1\nRUN apt-get install -y --no-install-recommends gcc && rm -rf /var/lib/apt/lists/*\nUSER 1\n", "SP002"),
            ("FROM a:1\nWORKDIR /app\nCOPY . .\nRUN pip install --no-cache-dir -r requirements.txt\nUSER 1\n", "SP003"),
            ("FROM python:3.12-slim AS b\nFROM python:3.11-slim\nCOPY --from=b /opt/venv /opt/venv\nUSER 1\n", "SP004"),
            ("FROM a:1\nUSER 1\nCMD [\"uvicorn\", \"main:app\", \"--host\", \"127.0.0.1\"]\n", "SP006"),
            ("FROM a:1\nUSER 1\nCMD [\"uvicorn\", \"main:app\", \"--host\", \"0.0.0.0\", \"--port\", \"8000\"]\n", "SP008"),
            ("FROM python:3.12-alpine\nRUN pip install --no-cache-dir -r r.txt\nUSER 1\n", "SP011"),
            ("FROM a:1\nUSER 1\nHEALTHCHECK CMD curl -f http://localhost:8080/ || exit 1\n", "SP014"),
            ("FROM python:3.12\nUSER 1\n", "SP002"),
            ("FROM a:1 AS b\nFROM python:3.12-bookworm\nUSER 1\n", "SP001"),
            ("FROM a:1 AS b\nRUN python -m venv /venv\nFROM a:1\nCOPY --from=b /venv /opt/venv\nUSER 1\n", "SP004"),
            ("FROM a:1 AS b\nRUN pip install --no-cache-dir --prefix /install -r r.txt\nFROM a:1\nCOPY --from=b /install /deps\nUSER 1\n", "SP004"),
            ("FROM python:3.9-slim\nUSER 1\n", "SP005"),
            ("FROM python:3.12-slim-buster\nUSER 1\n", "SP005"),
            ("FROM a:1 AS b\nFROM a:1\nCOPY --from=b /usr/local/lib/python3.12/site-packages /usr/local/lib/python3.12/site-packages\nUSER 1\nCMD [\"uvicorn\", \"main:app\"]\n", "SP012"),
            ("FROM a:1 AS b\nFROM a:1\nRUN apt-get install -y --no-install-recommends python3-pip && rm -rf /var/lib/apt/lists/*\nUSER 1\n", "SP013"),
            ("FROM a:1\nRUN uv sync --frozen\nUSER 1\n", "SP015"),
            ("FROM a:1\nRUN poetry install --no-root\nUSER 1\n", "SP015"),
            ("FROM a:1 AS b\nRUN uv venv /opt/venv\nFROM a:1\nCOPY /opt/venv /opt/venv\nUSER 1\n", "SP016"),
            ("FROM a:1\nUSER 1\nCMD [\"gunicorn\", \"app\", \"-b 0.0.0.0:8000\"]\n", "SP008"),
            ("FROM a:1\nENV A 1\nUSER 1\n", "LegacyKeyValueFormat"),
        ] {
            assert!(has(src, rule), "{rule} should fire on:\n{src}\ngot {:?}", rules(src, &Context::default()));
        }
        // Not fired where the fix is in place.
        assert!(!has("FROM a:1\nRUN --mount=type=cache,target=/root/.cache/pip pip install -r r.txt\nUSER 1\n", "DL3042"));
        // The quiet side of the new rules.
        for (src, rule) in [
            ("FROM a:1 AS b\nRUN python -m venv /opt/venv\nFROM a:1\nCOPY --from=b /opt/venv /opt/venv/\nUSER 1\n", "SP004"),
            ("FROM a:1 AS b\nRUN pip install --no-cache-dir --prefix=/install -r r.txt\nFROM a:1\nCOPY --from=b /install /usr/local\nUSER 1\n", "SP004"),
            ("FROM python:3.10-slim-bookworm\nUSER 1\n", "SP005"),
            ("FROM python:3.12-slim\nUSER 1\n", "SP002"),
            ("FROM a:1 AS b\nFROM a:1\nCOPY --from=b /usr/local/lib/python3.12/site-packages /usr/local/lib/python3.12/site-packages\nCOPY --from=b /usr/local/bin /usr/local/bin\nUSER 1\nCMD [\"uvicorn\", \"main:app\"]\n", "SP012"),
            ("FROM a:1 AS b\nFROM a:1\nCOPY --from=b /usr/local/lib/python3.12/site-packages /usr/local/lib/python3.12/site-packages\nUSER 1\nCMD [\"python\", \"-m\", \"gunicorn\"]\n", "SP012"),
            ("FROM a:1\nRUN apt-get install -y --no-install-recommends python3-pip && rm -rf /var/lib/apt/lists/*\nUSER 1\n", "SP013"),
            ("FROM a:1\nRUN uv sync --frozen --no-dev\nUSER 1\n", "SP015"),
            ("FROM a:1\nRUN poetry install --only main\nUSER 1\n", "SP015"),
            ("FROM a:1\nRUN poetry install $OPTS\nUSER 1\n", "SP015"),
            ("FROM a:1 AS b\nRUN uv venv /opt/venv\nFROM a:1\nCOPY --from=b /opt/venv /opt/venv\nUSER 1\n", "SP016"),
            ("FROM a:1\nENV A=1\nUSER 1\n", "LegacyKeyValueFormat"),
        ] {
            assert!(!has(src, rule), "{rule} should stay quiet on:\n{src}");
        }
        assert!(!has("FROM a:1\nSHELL [\"/bin/bash\", \"-o\", \"pipefail\", \"-c\"]\nRUN curl x | sh\nUSER 1\n", "DL4006"));
        assert!(!has("FROM a:1\nUSER 1\nCMD [\"sh\", \"-c\", \"exec uvicorn main:app --host 0.0.0.0 --port $PORT\"]\n", "SP008"));
        assert!(!has("FROM python:3.12-slim AS b\nFROM python:3.12-slim\nCOPY --from=b /opt/venv /opt/venv\nUSER 1\n", "SP004"));
    }

    #[test]
    fn dockerignore_and_suppressions() {
        let src = "FROM a:1\nWORKDIR /app\nCOPY . .\nRUN a\n# hadolint ignore=DL3059\nRUN b\nRUN c\nUSER 1\n";
        let none = rules(src, &Context::default());
        assert!(none.contains(&("SP010", 1)), "{none:?}");
        assert!(!none.contains(&("DL3059", 6)), "suppressed: {none:?}");
        assert!(none.contains(&("DL3059", 7)), "not suppressed: {none:?}");
        let partial = rules(
            src,
            &Context {
                dockerignore: Some(".git\n".into()),
                ..Default::default()
            },
        );
        assert!(partial.contains(&("SP009", 1)), "{partial:?}");
        let full = rules(
            src,
            &Context {
                dockerignore: Some("**/.git\n.env*\n".into()),
                ..Default::default()
            },
        );
        assert!(
            !full.iter().any(|r| r.0 == "SP009" || r.0 == "SP010"),
            "{full:?}"
        );
        // Keys in the context that the .dockerignore lets through.
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("deploy")).unwrap();
        std::fs::write(
            d.path().join("deploy/server.key"),
            "-----BEGIN PRIVATE KEY-----\n",
        )
        .unwrap();
        std::fs::write(d.path().join("main.py"), "print()\n").unwrap();
        let found = context_secrets(d.path(), Some("**/.git\n.env*\n"));
        assert_eq!(found, vec!["deploy/server.key"]);
        let leaky = lint(
            &parse(src).unwrap(),
            &Context {
                dockerignore: Some("**/.git\n.env*\n".into()),
                context_secrets: found,
            },
        );
        let sp009 = leaky.iter().find(|f| f.rule == "SP009").expect("SP009");
        assert!(
            sp009.message.contains("deploy/server.key"),
            "{}",
            sp009.message
        );
        assert_eq!(sp009.severity, Severity::Error);
        assert!(context_secrets(d.path(), Some("**/.git\n.env*\n*.key\n**/*.key\n")).is_empty());
        let src = "FROM a:1\nRUN a\n# slimpack-ignore DL3059\nRUN b\nUSER 1\n";
        assert!(!rules(src, &Context::default())
            .iter()
            .any(|r| r.0 == "DL3059"));
    }

    /// Every Dockerfile of the seed articles, verbatim, with the findings a
    /// reader of the articles would agree with, line by line.
    #[test]
    fn the_seeds_dockerfiles() {
        macro_rules! seed {
            ($f:literal) => {
                (
                    $f,
                    include_str!(concat!("../../tests/fixtures/dockerfiles/", $f)),
                )
            };
        }
        type Case = ((&'static str, &'static str), Vec<(usize, &'static str)>);
        let cases: Vec<Case> = vec![
            // 000, the single stage it warns against: the ~1.2 GB full
            // image, pip's cache kept, root, no .dockerignore.
            (
                seed!("seed000-naive.Dockerfile"),
                vec![(2, "SP002"), (2, "SP007"), (2, "SP010"), (6, "DL3042")],
            ),
            // 000, its recipe: curl installed only for a HEALTHCHECK Cloud Run
            // ignores, the port fixed in --bind, a relative COPY before any
            // WORKDIR, `pip install --upgrade pip` unpinned.
            (
                seed!("seed000-flask.Dockerfile"),
                vec![
                    (2, "SP010"),
                    (6, "DL3008"),
                    (12, "DL3059"),
                    (17, "DL3045"),
                    (18, "DL3013"),
                    (26, "DL3008"),
                    (32, "DL3059"),
                    (52, "SP014"),
                    (56, "SP008"),
                ],
            ),
            // 001, naive: `COPY . /app` before the install.
            (
                seed!("seed001-naive.Dockerfile"),
                vec![(1, "SP007"), (1, "SP010"), (3, "SP003")],
            ),
            // 001, optimised: pip re-added to the runtime; the --prefix
            // tree copied onto /usr/local is right (no SP004).
            (
                seed!("seed001-prefix.Dockerfile"),
                vec![(2, "SP010"), (8, "SP007"), (10, "DL3008"), (10, "SP013")],
            ),
            // 002: Python 3.9 on buster, both past their end of life.
            (
                seed!("seed002-single.Dockerfile"),
                vec![
                    (3, "SP005"),
                    (3, "SP007"),
                    (3, "SP010"),
                    (6, "LegacyKeyValueFormat"),
                    (21, "SP008"),
                ],
            ),
            // 002, multi-stage: only site-packages is copied, so the
            // gunicorn script the CMD runs is not in the image.
            (
                seed!("seed002-multi.Dockerfile"),
                vec![
                    (5, "SP005"),
                    (5, "SP010"),
                    (8, "LegacyKeyValueFormat"),
                    (19, "DL3013"),
                    (19, "DL3042"),
                    (25, "SP005"),
                    (25, "SP007"),
                    (28, "LegacyKeyValueFormat"),
                    (40, "SP008"),
                    (40, "SP012"),
                ],
            ),
            // 002, native extensions: build tools in the builder only, libpq5
            // in the final stage (no SP001); `python app.py` needs no script.
            (
                seed!("seed002-native.Dockerfile"),
                vec![
                    (1, "SP005"),
                    (1, "SP010"),
                    (5, "DL3008"),
                    (12, "SP005"),
                    (12, "SP007"),
                    (16, "DL3008"),
                ],
            ),
            // 003, single stage: gcc and libpq-dev in the 1.1 GB image.
            (
                seed!("seed003-naive.Dockerfile"),
                vec![
                    (1, "SP002"),
                    (1, "SP007"),
                    (1, "SP010"),
                    (3, "DL3008"),
                    (3, "DL3015"),
                    (3, "SP002"),
                    (9, "SP008"),
                ],
            ),
            // 003, multi-stage: the runtime copies /opt/venv without --from.
            (
                seed!("seed003-fastapi.Dockerfile"),
                vec![
                    (2, "SP010"),
                    (4, "DL3008"),
                    (4, "DL3015"),
                    (7, "DL3059"),
                    (12, "SP007"),
                    (14, "DL3008"),
                    (14, "DL3015"),
                    (17, "SP016"),
                    (20, "SP008"),
                ],
            ),
            // 004: curl | python without pipefail, `poetry install` with the
            // dev group, `-b 0.0.0.0:8000`; the venv keeps its path and
            // Python (no SP004).
            (
                seed!("seed004-poetry.Dockerfile"),
                vec![
                    (3, "SP005"),
                    (3, "SP010"),
                    (6, "DL4006"),
                    (7, "LegacyKeyValueFormat"),
                    (16, "DL3059"),
                    (16, "SP015"),
                    (22, "SP005"),
                    (22, "SP007"),
                    (25, "LegacyKeyValueFormat"),
                    (32, "SP008"),
                ],
            ),
            // 004, final: SECRET_KEY baked into ENV, ADD for local files.
            (
                seed!("seed004-final.Dockerfile"),
                vec![
                    (3, "SP005"),
                    (3, "SP010"),
                    (6, "DL4006"),
                    (7, "LegacyKeyValueFormat"),
                    (22, "DL3020"),
                    (27, "DL4006"),
                    (31, "SP005"),
                    (31, "SP007"),
                    (37, "LegacyKeyValueFormat"),
                    (48, "LegacyKeyValueFormat"),
                    (48, "SecretsUsedInArgOrEnv"),
                    (49, "LegacyKeyValueFormat"),
                    (50, "LegacyKeyValueFormat"),
                    (51, "LegacyKeyValueFormat"),
                ],
            ),
        ];
        for ((name, text), expected) in cases {
            let got: Vec<(usize, &str)> = rules(text, &Context::default())
                .into_iter()
                .map(|(r, l)| (l, r))
                .collect();
            assert_eq!(got, expected, "{name}");
        }
    }

    #[test]
    fn outputs() {
        let f = lint(&parse("FROM a\nUSER 1\n").unwrap(), &Context::default());
        let j = to_json(&f);
        assert_eq!(j["findings"][0]["rule"], "DL3006");
        assert_eq!(j["findings"][0]["severity"], "warning");
        assert_eq!(j["findings"][0]["line"], 1);
        let s = to_sarif(&f, "Dockerfile");
        assert_eq!(s["version"], "2.1.0");
        assert_eq!(s["runs"][0]["results"][0]["ruleId"], "DL3006");
        assert_eq!(
            s["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["region"]["startLine"],
            1
        );
        assert_eq!(kebab("SecretsUsedInArgOrEnv"), "secrets-used-in-arg-or-env");
        let h = to_human(&f, "Dockerfile", false);
        assert!(h.starts_with("Dockerfile:1\n  warning DL3006"), "{h}");
    }
}
