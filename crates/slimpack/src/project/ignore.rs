//! Which files of the project go into the app layer.
//!
//! `.dockerignore` with Docker's semantics (not gitignore's): patterns are
//! anchored at the context root, `*` and `?` do not cross `/`, `**` matches
//! any number of directories, a pattern that matches a directory excludes
//! everything below it, `!` re-includes, and the last matching line wins.
//! On top of that, defaults leave out VCS data, caches, virtualenvs and
//! build outputs; secrets (`.env`, private keys) are always left out.

use anyhow::{Context, Result};
use regex::Regex;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
struct Pattern {
    re: Regex,
    negate: bool,
}

#[derive(Debug, Clone, Default)]
pub struct IgnoreRules {
    patterns: Vec<Pattern>,
}

const DEFAULTS: &[&str] = &[
    ".git",
    ".hg",
    ".svn",
    "**/__pycache__",
    "**/*.pyc",
    "**/*.pyo",
    ".venv",
    "venv",
    ".tox",
    ".nox",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".coverage",
    "htmlcov",
    "build",
    "dist",
    "*.egg-info",
    "target",
    ".idea",
    ".vscode",
    "**/.DS_Store",
    ".slimpack",
    ".terraform",
];

/// Converts one Docker ignore pattern to an anchored regex.
fn compile(pattern: &str) -> Option<Regex> {
    let p = pattern.trim().trim_start_matches('/').trim_end_matches('/');
    let p = p.strip_prefix("./").unwrap_or(p);
    if p.is_empty() {
        return None;
    }
    let mut re = String::from("^");
    let chars: Vec<char> = p.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '*' if chars.get(i + 1) == Some(&'*') => {
                i += 1;
                if chars.get(i + 1) == Some(&'/') {
                    i += 1;
                    re.push_str("(?:.*/)?");
                } else {
                    re.push_str(".*");
                }
            }
            '*' => re.push_str("[^/]*"),
            '?' => re.push_str("[^/]"),
            '[' => {
                let close = chars[i + 1..].iter().position(|&c| c == ']')?;
                let mut class: String = chars[i + 1..i + 1 + close].iter().collect();
                if let Some(rest) = class.strip_prefix('!') {
                    class = format!("^{rest}");
                }
                re.push('[');
                re.push_str(&class.replace('\\', "\\\\"));
                re.push(']');
                i += close + 1;
            }
            '\\' if i + 1 < chars.len() => {
                i += 1;
                re.push_str(&regex::escape(&chars[i].to_string()));
            }
            c => re.push_str(&regex::escape(&c.to_string())),
        }
        i += 1;
    }
    re.push('$');
    Regex::new(&re).ok()
}

impl IgnoreRules {
    pub fn from_lines<'a>(lines: impl IntoIterator<Item = &'a str>) -> Self {
        let mut patterns = Vec::new();
        for line in lines {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (negate, pat) = match line.strip_prefix('!') {
                Some(p) => (true, p),
                None => (false, line),
            };
            if let Some(re) = compile(pat) {
                patterns.push(Pattern { re, negate });
            }
        }
        Self { patterns }
    }

    /// Defaults first, so that the project's `.dockerignore` can re-include.
    pub fn for_project(dir: &Path) -> Result<Self> {
        let mut lines: Vec<String> = DEFAULTS.iter().map(|s| s.to_string()).collect();
        let di = dir.join(".dockerignore");
        if di.is_file() {
            let text = std::fs::read_to_string(&di)
                .with_context(|| format!("reading {}", di.display()))?;
            lines.extend(text.lines().map(str::to_string));
        }
        Ok(Self::from_lines(lines.iter().map(String::as_str)))
    }

    /// Is `rel` (slash-separated, relative to the root) excluded? A path is
    /// excluded when it, or one of its parent directories, is matched by the
    /// last pattern that matches it.
    pub fn is_excluded(&self, rel: &str) -> bool {
        let mut excluded = false;
        for p in &self.patterns {
            let mut hit = p.re.is_match(rel);
            if !hit {
                let mut prefix = rel;
                while let Some((parent, _)) = prefix.rsplit_once('/') {
                    if p.re.is_match(parent) {
                        hit = true;
                        break;
                    }
                    prefix = parent;
                }
            }
            if hit {
                excluded = !p.negate;
            }
        }
        excluded
    }
}

/// The credential files of the tools people use, as `.dockerignore`
/// patterns: one list for `build` (never packed, whatever the rules say),
/// the `.dockerignore` that `slimpack dockerfile` writes, and lint's SP009.
pub const SECRET_PATTERNS: &[&str] = &[
    // Environment files (examples and templates are documentation).
    "**/.env",
    "**/.env.*",
    "!**/.env.example",
    "!**/.env.sample",
    "!**/.env.template",
    "**/*.env",
    "**/.envrc",
    // Keys and certificates with their keys.
    "**/*.pem",
    "**/*.key",
    "**/*.p12",
    "**/*.pfx",
    "**/*.jks",
    "**/*.keystore",
    "**/id_rsa*",
    "**/id_dsa*",
    "**/id_ecdsa*",
    "**/id_ed25519*",
    "**/.ssh",
    // git, npm/yarn, pip/poetry/uv.
    "**/.git-credentials",
    "**/.netrc",
    "**/.npmrc",
    "**/.yarnrc",
    "**/.yarnrc.yml",
    "**/.pypirc",
    "**/pypoetry/auth.toml",
    // docker/podman.
    "**/.docker/config.json",
    "**/.dockercfg",
    "**/containers/auth.json",
    // Cloud CLIs: AWS, gcloud, Azure.
    "**/.aws",
    "**/.config/gcloud",
    "**/application_default_credentials.json",
    "**/credentials.db",
    "**/access_tokens.db",
    "**/.azure",
    // Kubernetes.
    "**/kubeconfig",
    "**/*.kubeconfig",
    "**/.kube",
    // Web servers.
    "**/.htpasswd",
    // Terraform state and variables hold every value in clear.
    "**/*.tfstate",
    "**/*.tfstate.backup",
    "**/*.tfvars",
    "**/.terraformrc",
    "**/terraform.rc",
];

fn secret_rules() -> &'static IgnoreRules {
    static RULES: std::sync::OnceLock<IgnoreRules> = std::sync::OnceLock::new();
    RULES.get_or_init(|| IgnoreRules::from_lines(SECRET_PATTERNS.iter().copied()))
}

/// Is this file a secret that never goes into an image, whatever the rules
/// say? By name ([`SECRET_PATTERNS`]), or by what its first bytes hold: a
/// PEM private key, a service-account key, an npm token, an AWS secret.
pub fn is_secret(rel: &str, head: &[u8]) -> bool {
    if secret_rules().is_excluded(rel) {
        return true;
    }
    // Python sources are exempt: they may mention these markers legitimately.
    if rel.to_ascii_lowercase().ends_with(".py") {
        return false;
    }
    let text = String::from_utf8_lossy(head);
    [
        "PRIVATE KEY-----",
        "\"private_key\":",
        "_authToken=",
        "aws_secret_access_key",
    ]
    .iter()
    .any(|m| text.contains(m))
}

/// A file chosen for the app layer.
#[derive(Debug, Clone)]
pub struct AppFile {
    pub rel: String,
    pub path: PathBuf,
    pub executable: bool,
    pub symlink: Option<String>,
}

/// Walks `dir` and returns the files for the app layer (sorted), plus the
/// secrets that were left out.
pub fn collect(dir: &Path, rules: &IgnoreRules) -> Result<(Vec<AppFile>, Vec<String>)> {
    let mut files = Vec::new();
    let mut secrets = Vec::new();
    let walker = walkdir::WalkDir::new(dir)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            let rel = e.path().strip_prefix(dir).unwrap_or(e.path());
            let rel = rel.to_string_lossy();
            rel.is_empty() || !(e.file_type().is_dir() && rules.is_excluded(&rel))
        });
    for e in walker {
        let e = e.with_context(|| format!("walking {}", dir.display()))?;
        let rel = e
            .path()
            .strip_prefix(dir)
            .unwrap_or(e.path())
            .to_string_lossy()
            .into_owned();
        if rel.is_empty() || e.file_type().is_dir() || rules.is_excluded(&rel) {
            continue;
        }
        let ft = e.file_type();
        if ft.is_symlink() {
            let target = std::fs::read_link(e.path())?.to_string_lossy().into_owned();
            files.push(AppFile {
                rel,
                path: e.path().to_path_buf(),
                executable: false,
                symlink: Some(target),
            });
            continue;
        }
        if !ft.is_file() {
            continue;
        }
        let mut head = vec![0u8; 4096];
        let n = {
            use std::io::Read;
            let mut f = std::fs::File::open(e.path())
                .with_context(|| format!("reading {}", e.path().display()))?;
            f.read(&mut head).unwrap_or(0)
        };
        if is_secret(&rel, &head[..n]) {
            secrets.push(rel);
            continue;
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = e.metadata()?.permissions().mode();
        files.push(AppFile {
            rel,
            path: e.path().to_path_buf(),
            executable: mode & 0o111 != 0,
            symlink: None,
        });
    }
    Ok((files, secrets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_files_of_every_tool_are_secrets() {
        for f in [
            ".env",
            ".env.local",
            "prod.env",
            ".envrc",
            ".git-credentials",
            ".npmrc",
            ".yarnrc.yml",
            ".pypirc",
            ".netrc",
            ".docker/config.json",
            ".aws/credentials",
            ".aws/config",
            ".config/gcloud/credentials.db",
            "deploy/kubeconfig",
            "ops/cluster.kubeconfig",
            ".kube/config",
            ".azure/msal_token_cache.json",
            ".htpasswd",
            "infra/terraform.tfstate",
            "infra/prod.tfvars",
            "certs/server.key",
            "keys/id_ed25519",
            ".ssh/config",
            "app/application_default_credentials.json",
        ] {
            assert!(is_secret(f, b""), "{f}");
        }
        for f in [
            ".env.example",
            "app.py",
            "README.md",
            "config.json",
            "requirements.txt",
            "environment.py",
        ] {
            assert!(!is_secret(f, b"x = 1"), "{f}");
        }
        assert!(is_secret(
            "npm-settings.txt",
            b"//registry.npmjs.org/:_authToken=abc"
        ));
        assert!(is_secret(
            "sa.json",
            b"{\"type\": \"service_account\", \"private_key\": \"-----BEGIN\"}"
        ));
        assert!(!is_secret("keys.py", b"PRIVATE KEY-----"));
    }

    #[test]
    fn docker_semantics() {
        let r = IgnoreRules::from_lines([
            "*.md",
            "!README.md",
            "docs/",
            "**/*.log",
            "tests/fixtures/*.json",
            "a?c",
        ]);
        assert!(r.is_excluded("CHANGES.md"));
        assert!(!r.is_excluded("README.md"));
        assert!(!r.is_excluded("sub/CHANGES.md"), "* does not cross /");
        assert!(
            r.is_excluded("docs/index.html"),
            "dir pattern excludes children"
        );
        assert!(r.is_excluded("x/y/z.log"));
        assert!(r.is_excluded("z.log"));
        assert!(r.is_excluded("tests/fixtures/a.json"));
        assert!(!r.is_excluded("tests/fixtures/deep/a.json"));
        assert!(r.is_excluded("abc"));
        assert!(!r.is_excluded("abbc"));
    }

    #[test]
    fn last_match_wins() {
        let r = IgnoreRules::from_lines(["!keep.txt", "*.txt"]);
        assert!(r.is_excluded("keep.txt"));
        let r = IgnoreRules::from_lines(["*.txt", "!keep.txt"]);
        assert!(!r.is_excluded("keep.txt"));
    }

    #[test]
    fn defaults_and_secrets() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        for f in [
            "main.py",
            ".env",
            ".env.example",
            "pkg/__pycache__/x.pyc",
            ".git/HEAD",
            "sa.json",
            "deploy/key.pem",
            "infra/terraform.tfstate",
            ".terraform/providers/x",
            "notes.md",
        ] {
            let p = root.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(
                &p,
                if f == "sa.json" {
                    "{\"private_key\": \"x\"}"
                } else {
                    "x"
                },
            )
            .unwrap();
        }
        std::fs::write(root.join(".dockerignore"), "*.md\n").unwrap();
        let rules = IgnoreRules::for_project(root).unwrap();
        let (files, secrets) = collect(root, &rules).unwrap();
        let rels: Vec<_> = files.iter().map(|f| f.rel.as_str()).collect();
        assert_eq!(rels, vec![".dockerignore", ".env.example", "main.py"]);
        assert_eq!(
            secrets,
            vec![
                ".env",
                "deploy/key.pem",
                "infra/terraform.tfstate",
                "sa.json"
            ]
        );
    }
}
