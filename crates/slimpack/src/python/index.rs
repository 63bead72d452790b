//! The project's package indexes as uv is told them, with their
//! credentials.
//!
//! Credentials reach uv only through the environment of the one process
//! that fetches (as uv's own `UV_INDEX_<NAME>_USERNAME` / `_PASSWORD`):
//! never an argument, a file of the image, a cache key, the plan or a log
//! line. They come from, in order: `${VAR}`s in the index's URL, uv's
//! per-index variables, and for Artifact Registry Python repositories
//! (`*-python.pkg.dev`, or any index configured `index-auth = { NAME =
//! "google" }`) a short-lived token from the Google credential chain as
//! `oauth2accesstoken`. uv reads `~/.netrc` and a keyring itself.

use crate::project::indexes::{Index, Indexes, Kind};
use crate::registry::auth::{Credential, Secret};
use anyhow::{anyhow, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::process::Command;
use std::sync::Mutex;

/// Variables by which uv and pip learn indexes: [`Access`] passes every
/// index as an argument instead, so that uv sees exactly the list the plan
/// shows.
const INDEX_VARS: [&str; 7] = [
    "UV_DEFAULT_INDEX",
    "UV_INDEX",
    "UV_INDEX_URL",
    "UV_EXTRA_INDEX_URL",
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "UV_INDEX_STRATEGY",
];

/// The username Artifact Registry takes with an access token as password.
pub const GOOGLE_USER: &str = "oauth2accesstoken";

/// What a uv run does with the indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Choosing versions: the indexes in their order, the first that has a
    /// package the only one asked; explicit ones through the pins only.
    Resolve,
    /// Fetching locked files: any index may serve them, as every file is
    /// pinned by its hash (`--require-hashes`), so no index can substitute
    /// another file.
    Install,
}

#[derive(Debug, Default)]
pub struct Access {
    indexes: Indexes,
    google: BTreeSet<String>,
    /// Each index's credential, found the first time uv needs them (a
    /// fully cached build asks no one for a token). A `Credential` never
    /// shows its secret in `Debug`.
    credentials: Mutex<Option<Vec<(String, Credential)>>>,
}

/// Where an index's credentials come from, decided without fetching
/// anything: what the plan says, and what a refusal's hint is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// `${VAR}`s in its URL.
    Url,
    /// uv's `UV_INDEX_<NAME>_USERNAME` / `_PASSWORD`.
    UvVariables,
    /// A token from Google's credential chain.
    Google,
    /// Whatever uv finds itself (netrc, a keyring), or none.
    Ambient,
}

fn env_set(k: &str) -> bool {
    std::env::var_os(k).is_some_and(|v| !v.is_empty())
}

/// The netrc file uv reads on this machine (`$NETRC`, else `~/.netrc`).
pub fn netrc() -> Option<std::path::PathBuf> {
    std::env::var_os("NETRC")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".netrc")))
        .filter(|p| p.is_file())
}

impl Access {
    /// `google` names indexes whose credentials come from Google's chain
    /// (besides every Artifact Registry Python repository).
    pub fn new(indexes: Indexes, google: &[String]) -> Access {
        let google = indexes
            .indexes
            .iter()
            .filter(|i| {
                google.contains(&i.name) || crate::registry::google::is_python_repository(i.host())
            })
            .map(|i| i.name.clone())
            .collect();
        Access {
            indexes,
            google,
            credentials: Mutex::new(None),
        }
    }

    pub fn indexes(&self) -> &Indexes {
        &self.indexes
    }

    fn source(&self, i: &Index) -> Source {
        let p = i.env_prefix();
        if i.userinfo.is_some() {
            Source::Url
        } else if env_set(&format!("{p}_USERNAME")) || env_set(&format!("{p}_PASSWORD")) {
            Source::UvVariables
        } else if self.google.contains(&i.name) {
            Source::Google
        } else {
            Source::Ambient
        }
    }

    /// How `i`'s credentials are found, for the plan (never the values).
    pub fn describe(&self, i: &Index) -> String {
        let p = i.env_prefix();
        match self.source(i) {
            Source::Url => "the ${…} variables in its URL".into(),
            Source::UvVariables => format!("{p}_USERNAME / {p}_PASSWORD"),
            Source::Google => {
                "Google credentials (ADC, metadata server or gcloud), as oauth2accesstoken".into()
            }
            Source::Ambient => {
                format!("{p}_USERNAME / {p}_PASSWORD, ~/.netrc or a keyring (none set: anonymous)")
            }
        }
    }

    /// The arguments for `purpose`.
    pub fn args(&self, purpose: Purpose) -> Vec<OsString> {
        let mut out: Vec<OsString> = Vec::new();
        for i in &self.indexes.indexes {
            let flag = match (i.kind, purpose) {
                (Kind::Default, _) => "--default-index",
                (Kind::Explicit, Purpose::Resolve) => continue,
                _ => "--index",
            };
            out.push(flag.into());
            out.push(format!("{}={}", i.name, i.url).into());
        }
        if purpose == Purpose::Install && !self.indexes.indexes.is_empty() {
            out.extend(["--index-strategy".into(), "unsafe-best-match".into()]);
        }
        out
    }

    /// The indexes and credentials on a uv command run on this machine.
    pub fn apply(&self, cmd: &mut Command, purpose: Purpose) -> Result<()> {
        for v in INDEX_VARS {
            cmd.env_remove(v);
        }
        cmd.args(self.args(purpose));
        cmd.envs(self.credentials()?);
        Ok(())
    }

    /// `UV_INDEX_<NAME>_USERNAME` / `_PASSWORD` for every index that has
    /// credentials this machine can give.
    pub fn credentials(&self) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for (i, c) in self.indexes.indexes.iter().zip(self.found()?) {
            if let Some(Secret::Password { username, password }) = c.secret {
                let p = i.env_prefix();
                out.push((format!("{p}_USERNAME"), username));
                out.push((format!("{p}_PASSWORD"), password));
            }
        }
        Ok(out)
    }

    /// Each index's credential (in the indexes' order), found once.
    fn found(&self) -> Result<Vec<Credential>> {
        let mut cached = self.credentials.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cached.as_ref() {
            return Ok(c.iter().map(|(_, c)| c.clone()).collect());
        }
        let found: Vec<(String, Credential)> = self
            .indexes
            .indexes
            .iter()
            .map(|i| Ok((i.name.clone(), self.credential(i)?)))
            .collect::<Result<_>>()?;
        let out = found.iter().map(|(_, c)| c.clone()).collect();
        *cached = Some(found);
        Ok(out)
    }

    fn credential(&self, i: &Index) -> Result<Credential> {
        let p = i.env_prefix();
        let password = |username: String, password: String, source: String| Credential {
            secret: Some(Secret::Password { username, password }),
            source,
        };
        Ok(match self.source(i) {
            Source::Url => {
                let filled = fill(i.userinfo.as_deref().unwrap_or(""), &i.origin)?;
                let (u, pw) = filled.split_once(':').unwrap_or((&filled, ""));
                password(u.into(), pw.into(), format!("the URL of {}", i.origin))
            }
            Source::UvVariables => password(
                std::env::var(format!("{p}_USERNAME")).unwrap_or_default(),
                std::env::var(format!("{p}_PASSWORD")).unwrap_or_default(),
                format!("{p}_USERNAME / {p}_PASSWORD"),
            ),
            Source::Google => {
                let (token, source) = crate::registry::google::access_token().map_err(|e| {
                    crate::core::errors::hinted(
                        format!(
                            "the index {} ({}) is an Artifact Registry repository, and {e}",
                            i.name, i.url
                        ),
                        format!("or set {p}_USERNAME and {p}_PASSWORD"),
                    )
                })?;
                password(GOOGLE_USER.into(), token, source)
            }
            Source::Ambient => Credential::anonymous(),
        })
    }

    /// What to do about uv's failure, when an index caused it: which index
    /// refused which package and why. uv names the index only sometimes;
    /// otherwise the index the package is pinned to, or each declared one,
    /// is asked for the package's page with the same credentials, and its
    /// answer says why.
    pub fn explain(&self, stderr: &str) -> Option<String> {
        let package = stderr
            .split("Because ")
            .nth(1)
            .and_then(|r| r.split(" was not found in the package registry").next())
            .filter(|p| !p.contains(' '))
            .map(crate::project::normalize_name);
        let pinned = package
            .as_ref()
            .and_then(|p| self.indexes.pins.get(p))
            .and_then(|n| self.indexes.by_name(n));
        let named = refused(stderr);
        let candidates: Vec<&Index> = match (&named, pinned) {
            (Some((url, _)), _) => self
                .indexes
                .indexes
                .iter()
                .filter(|i| i.url == url.trim_end_matches('/'))
                .collect(),
            (None, Some(i)) => vec![i],
            (None, None) if package.is_some() => self
                .indexes
                .indexes
                .iter()
                .filter(|i| i.kind != Kind::Explicit)
                .collect(),
            _ => Vec::new(),
        };
        let who = package
            .as_ref()
            .map(|p| format!(" for {p}"))
            .unwrap_or_default();
        let mut answers = Vec::new();
        for i in candidates {
            let status = match &named {
                Some((_, status)) => status.clone(),
                None => match self.probe(i, package.as_deref()?) {
                    Some(s) => s,
                    None => continue,
                },
            };
            answers.push(format!("{} ({}) answered {status}", i.name, i.url));
            if status.starts_with("401") || status.starts_with("403") {
                return Some(format!(
                    "the index {} ({}) refused the request{who} ({status}): {}",
                    i.name,
                    i.url,
                    self.fix(i, &status)
                ));
            }
        }
        if let Some((url, status)) = named {
            return Some(format!("the index {url} refused the request{who} ({status}): give uv credentials for it (UV_INDEX_<NAME>_USERNAME / _PASSWORD, ~/.netrc)"));
        }
        let package = package?;
        let Some(index) = pinned else {
            // Not pinned, asked of each declared index: none has it.
            return (!answers.is_empty()).then(|| {
                format!(
                    "no index serves {package}: {}{}; check its name, or the index it is published to",
                    answers.join(", "),
                    if self.indexes.indexes.iter().any(|i| i.kind == Kind::Default) { "" } else { ", and PyPI has no such package" }
                )
            });
        };
        Some(format!(
            "{package} is pinned to the index {} ({}), which does not serve it. slimpack never takes a pinned package from another index, so a package of that name on PyPI cannot stand in for it (dependency confusion); publish {package} there or change the pin in {}",
            index.name, index.url, index.origin
        ))
    }

    /// The status `index` answers for `package`'s page, with the
    /// credentials uv was given: `401 Unauthorized`, `404 Not Found`.
    fn probe(&self, index: &Index, package: &str) -> Option<String> {
        let url = format!("{}/{package}/", index.url);
        let mut req = crate::core::http::agent_for(&url).get(&url);
        if let Some(basic) = self.credential_of(index)?.basic_header() {
            req = req.header("Authorization", basic);
        }
        let status = req.call().ok()?.status();
        Some(
            format!(
                "{} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            )
            .trim_end()
            .to_string(),
        )
    }

    /// The credential found for `index`, if finding them worked.
    fn credential_of(&self, index: &Index) -> Option<Credential> {
        let found = self.found().ok()?;
        let at = self
            .indexes
            .indexes
            .iter()
            .position(|i| i.name == index.name)?;
        found.into_iter().nth(at)
    }

    fn fix(&self, i: &Index, status: &str) -> String {
        let p = i.env_prefix();
        let forbidden = status.starts_with("403");
        match (self.source(i), forbidden) {
            (Source::Google, _) => {
                let source = self
                    .credential_of(i)
                    .map(|c| c.source)
                    .unwrap_or_else(|| "Google's credential chain".into());
                if forbidden {
                    format!("the account of {source} may not read this repository: grant it roles/artifactregistry.reader on the repository (gcloud artifacts repositories add-iam-policy-binding REPO --location=REGION --member=ACCOUNT --role=roles/artifactregistry.reader)")
                } else {
                    format!("the token from {source} was not accepted: log in again (gcloud auth application-default login), or check that the URL names an existing Python repository")
                }
            }
            (_, true) => format!(
                "the credentials ({}) may not read this index; ask its owner for read access",
                self.describe(i)
            ),
            (Source::Url | Source::UvVariables, false) => format!(
                "the credentials ({}) were not accepted; check them",
                self.describe(i)
            ),
            (Source::Ambient, false) => format!(
                "set {p}_USERNAME and {p}_PASSWORD (or add a ~/.netrc entry for {})",
                i.host()
            ),
        }
    }
}

/// `${VAR}`s of a URL's user part, from the environment.
fn fill(info: &str, origin: &str) -> Result<String> {
    let mut out = String::new();
    let mut rest = info;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find('}')
            .ok_or_else(|| anyhow!("{origin}: an unclosed ${{ in the index URL"))?;
        let var = &rest[start + 2..start + end];
        let v = std::env::var(var).map_err(|_| {
            crate::core::errors::hinted(
                format!("{origin}: the index URL uses ${{{var}}}, which is not set"),
                format!("export {var} before building (it is read when uv runs, never stored)"),
            )
        })?;
        out.push_str(&v);
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The index URL and status of uv's "could not be queried" hint.
fn refused(stderr: &str) -> Option<(String, String)> {
    let rest = stderr.split("An index URL (").nth(1)?;
    let (url, rest) = rest.split_once(')')?;
    let status = rest.split('(').nth(1)?.split(')').next()?;
    Some((url.to_string(), status.to_string()))
}

/// The `# from URL` annotations of uv's output: which index each package
/// came from; the text without them (the lock's text stays what it was).
pub fn take_origins(text: &str) -> (String, BTreeMap<String, String>) {
    let mut out = String::with_capacity(text.len());
    let mut origins = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(name) = super::requirement_name(line) {
            current = Some(name);
        }
        if let Some(url) = line.trim_start().strip_prefix("# from ") {
            if let Some(p) = &current {
                origins.insert(p.clone(), url.trim().trim_end_matches('/').to_string());
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    (out, origins)
}

/// A pinned package that came from anywhere but its index: uv enforces
/// pins itself; this is the check that it did.
pub fn check_pins(indexes: &Indexes, origins: &BTreeMap<String, String>) -> Result<()> {
    for (package, name) in &indexes.pins {
        let (Some(index), Some(from)) = (indexes.by_name(name), origins.get(package)) else {
            continue;
        };
        if index.url != *from {
            anyhow::bail!(
                "{package} is pinned to the index {name} ({}) but was resolved from {from}; refusing it (dependency confusion)",
                index.url
            );
        }
    }
    Ok(())
}

/// A pyproject.toml holding `requirements` with the project's pins and its
/// explicit indexes, for `uv pip compile`: uv honours `[tool.uv.sources]`
/// of a pyproject it compiles, which is how a pin reaches a resolution.
pub fn pinned_input(requirements: &[String], indexes: &Indexes) -> String {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let mut out = String::from(
        "[project]\nname = \"slimpack-resolution\"\nversion = \"0\"\ndependencies = [\n",
    );
    for r in requirements.iter().filter(|r| !r.trim().is_empty()) {
        out.push_str(&format!("  {},\n", q(r.trim())));
    }
    out.push_str("]\n\n[tool.uv.sources]\n");
    for (package, index) in &indexes.pins {
        out.push_str(&format!("{} = {{ index = {} }}\n", q(package), q(index)));
    }
    for i in indexes.indexes.iter().filter(|i| i.kind == Kind::Explicit) {
        out.push_str(&format!(
            "\n[[tool.uv.index]]\nname = {}\nurl = {}\nexplicit = true\n",
            q(&i.name),
            q(&i.url)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(name: &str, url: &str, kind: Kind) -> Index {
        Index {
            name: name.into(),
            url: url.into(),
            kind,
            origin: "pyproject.toml".into(),
            userinfo: None,
        }
    }

    fn sample() -> Indexes {
        Indexes {
            indexes: vec![
                index("corp", "http://127.0.0.1:1/simple", Kind::Explicit),
                index("mirror", "https://m.example/simple", Kind::Index),
                index("main", "https://d.example/simple", Kind::Default),
            ],
            pins: [("corp-lib".to_string(), "corp".to_string())].into(),
            notes: Vec::new(),
        }
    }

    #[test]
    fn explicit_indexes_reach_a_resolution_only_through_pins() {
        let a = Access::new(sample(), &[]);
        let s = |p| {
            a.args(p)
                .iter()
                .map(|x| x.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            s(Purpose::Resolve),
            [
                "--index",
                "mirror=https://m.example/simple",
                "--default-index",
                "main=https://d.example/simple"
            ]
        );
        assert_eq!(
            s(Purpose::Install),
            [
                "--index",
                "corp=http://127.0.0.1:1/simple",
                "--index",
                "mirror=https://m.example/simple",
                "--default-index",
                "main=https://d.example/simple",
                "--index-strategy",
                "unsafe-best-match"
            ]
        );
        assert!(Access::new(Indexes::default(), &[])
            .args(Purpose::Install)
            .is_empty());
        let input = pinned_input(&["corp-lib>=1".into(), "flask".into()], a.indexes());
        let doc: toml::Value = input.parse::<toml::Table>().unwrap().into();
        assert_eq!(
            doc["tool"]["uv"]["sources"]["corp-lib"]["index"].as_str(),
            Some("corp")
        );
        assert_eq!(
            doc["tool"]["uv"]["index"][0]["explicit"].as_bool(),
            Some(true)
        );
        assert_eq!(doc["project"]["dependencies"][1].as_str(), Some("flask"));
    }

    #[test]
    fn origins_are_read_and_taken_out_and_pins_checked() {
        let text = "corp-lib==1.0 \\\n    --hash=sha256:aa\n    # via -r in\n    # from http://127.0.0.1:1/simple\nsix==1.17.0 \\\n    --hash=sha256:bb\n    # from https://pypi.org/simple\n";
        let (rest, origins) = take_origins(text);
        assert_eq!(rest, "corp-lib==1.0 \\\n    --hash=sha256:aa\n    # via -r in\nsix==1.17.0 \\\n    --hash=sha256:bb\n");
        assert_eq!(origins["corp-lib"], "http://127.0.0.1:1/simple");
        assert_eq!(origins["six"], "https://pypi.org/simple");
        check_pins(&sample(), &origins).unwrap();
        let mut bad = origins.clone();
        bad.insert("corp-lib".into(), "https://pypi.org/simple".into());
        let e = check_pins(&sample(), &bad).unwrap_err().to_string();
        assert!(e.contains("dependency confusion"), "{e}");
    }

    #[test]
    fn failures_name_the_index_the_package_and_the_fix() {
        let a = Access::new(sample(), &[]);
        let e = "  cause: Because corp-lib was not found in the package registry and you require corp-lib, we can conclude that your requirements are unsatisfiable.\n\nhint: An index URL (http://127.0.0.1:1/simple) could not be queried due to a lack of valid authentication credentials (401 Unauthorized)";
        let h = a.explain(e).unwrap();
        assert!(h.contains("the index corp (http://127.0.0.1:1/simple) refused the request for corp-lib (401 Unauthorized)"), "{h}");
        assert!(
            h.contains("UV_INDEX_CORP_USERNAME and UV_INDEX_CORP_PASSWORD"),
            "{h}"
        );
        let e = "  cause: Because corp-lib was not found in the package registry and you require corp-lib, we can conclude that your requirements are unsatisfiable.";
        let h = a.explain(e).unwrap();
        assert!(
            h.contains("pinned to the index corp") && h.contains("dependency confusion"),
            "{h}"
        );
        assert!(a.explain("error: connection reset").is_none());
        let mut ar = sample();
        ar.indexes[0].url = "https://us-python.pkg.dev/p/r/simple".into();
        let g = Access::new(ar, &[]);
        assert_eq!(g.source(&g.indexes().indexes[0]), Source::Google);
        let e = "hint: An index URL (https://us-python.pkg.dev/p/r/simple) could not be queried due to a lack of valid authentication credentials (403 Forbidden)";
        assert!(g
            .explain(e)
            .unwrap()
            .contains("roles/artifactregistry.reader"));
    }

    #[test]
    fn found_credentials_reach_uv_and_never_debug_output() {
        std::env::set_var("SLIMPACK_TEST_IDX_SECRET", "s3cr3t-value");
        let mut i = sample();
        i.indexes[1].userinfo = Some("me:${SLIMPACK_TEST_IDX_SECRET}".into());
        let a = Access::new(i, &[]);
        assert_eq!(
            a.credentials().unwrap(),
            [
                ("UV_INDEX_MIRROR_USERNAME".to_string(), "me".to_string()),
                (
                    "UV_INDEX_MIRROR_PASSWORD".to_string(),
                    "s3cr3t-value".to_string()
                )
            ]
        );
        assert!(!format!("{a:?}").contains("s3cr3t"), "{a:?}");
        assert_eq!(
            a.describe(&a.indexes().indexes[1]),
            "the ${…} variables in its URL"
        );
    }

    #[test]
    fn variables_in_a_url_are_filled_from_the_environment() {
        std::env::set_var("SLIMPACK_TEST_IDX_TOKEN", "t0k");
        assert_eq!(
            fill("me:${SLIMPACK_TEST_IDX_TOKEN}", "o").unwrap(),
            "me:t0k"
        );
        let e = fill("${SLIMPACK_TEST_IDX_UNSET}", "Pipfile [[source]] corp").unwrap_err();
        assert!(format!("{e:#}").contains("${SLIMPACK_TEST_IDX_UNSET}, which is not set"));
    }
}
