//! Settings from `[tool.slimpack]` in `pyproject.toml` or a `slimpack.toml`,
//! with command-line flags laid over them.

mod deploy;

pub use deploy::DeployConfig;

use anyhow::{anyhow, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    /// `debian:trixie`, `debian:bookworm` (or just `trixie`, `bookworm`).
    pub base: Option<String>,
    pub python: Option<String>,
    /// The start command: a string (split like a shell would, no shell
    /// features) or a list.
    pub command: Option<Command>,
    pub port: Option<u16>,
    /// Extra Debian packages for the runtime (with their dependencies).
    #[serde(default)]
    pub packages: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub user: Option<String>,
    /// Extra Debian packages for the builder stage (`-dev` packages for
    /// dependencies compiled from source).
    #[serde(default)]
    pub build_packages: Vec<String>,
    /// Python packages to compile from source even where a wheel exists.
    #[serde(default)]
    pub no_binary: Vec<String>,
    /// Dependency groups or extras to install as well.
    #[serde(default)]
    pub with: Vec<String>,
    /// Python distributions whose system packages (from slimpack's table of
    /// programs and libraries they call) are not to be added.
    #[serde(default)]
    pub no_system_packages: Vec<String>,
    /// What the venv keeps that slimpack would take out: `debug` (debug
    /// sections of compiled extensions), `tests` (packages' test suites),
    /// `stubs` (type stubs).
    #[serde(default)]
    pub no_strip: Vec<StripRule>,
    /// `imports` (default), `all`, or `none`.
    pub bytecode: Option<BytecodeMode>,
    pub mirror: Option<String>,
    pub security_mirror: Option<String>,
    /// false accepts the mirror's Releases after their `Valid-Until` (as
    /// apt's `check-valid-until=no`): for snapshot archives such as
    /// snapshot.debian.org, whose releases expire by design.
    pub check_valid_until: Option<bool>,
    /// Where the interpreter comes from: `auto` (Debian's where a stable
    /// release has the version, python-build-standalone otherwise),
    /// `debian` or `standalone`.
    pub python_source: Option<PythonSource>,
    /// A mirror of python-build-standalone's releases (same layout).
    pub python_mirror: Option<String>,
    /// A registry repository (`REGISTRY/REPO`) that holds the build cache:
    /// what a build resolves and makes is looked up there first and pushed
    /// there after, so runners with an empty cache reuse it.
    pub cache: Option<String>,
    /// How an index's credentials are found, by index name: `google` takes
    /// a token from the Google credential chain (as `*-python.pkg.dev`
    /// indexes do without saying), for an Artifact Registry repository
    /// behind another name.
    #[serde(default)]
    pub index_auth: BTreeMap<String, IndexAuth>,
    /// Django's `collectstatic` at build time (when staticfiles is
    /// installed and STATIC_ROOT set); `false` turns it off.
    pub collectstatic: Option<bool>,
    /// Commands run at build time in /app with the image's interpreter and
    /// venv, network off (e.g. `python manage.py compilemessages`); what
    /// they write joins the app layer.
    #[serde(default)]
    pub build_steps: Vec<Command>,
    /// The environment of build steps only (settings that read variables),
    /// never the image's.
    #[serde(default)]
    pub build_env: BTreeMap<String, String>,
    /// `[tool.slimpack.deploy]`: where `slimpack deploy` runs the app.
    #[serde(default, skip_serializing_if = "is_default")]
    pub deploy: DeployConfig,
}

fn is_default(d: &DeployConfig) -> bool {
    *d == DeployConfig::default()
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Command {
    Line(String),
    Argv(Vec<String>),
}

impl Config {
    /// Reads the project's configuration: `slimpack.toml` if present, else
    /// `[tool.slimpack]` of `pyproject.toml` (already parsed by the caller).
    pub fn load(dir: &Path, tool_table: Option<&toml::Value>) -> Result<(Config, Option<String>)> {
        let file = dir.join("slimpack.toml");
        if file.is_file() {
            let text = crate::core::fs::read_project_file(dir, &file)?;
            let value = crate::core::fs::parse_toml(&file, &text)?;
            let cfg = value
                .try_into()
                .map_err(|e: toml::de::Error| anyhow!("{}: {}", file.display(), e.message()))?;
            return Ok((cfg, Some(file.display().to_string())));
        }
        if let Some(t) = tool_table {
            let origin = format!("{} [tool.slimpack]", dir.join("pyproject.toml").display());
            let cfg = t
                .clone()
                .try_into()
                .map_err(|e: toml::de::Error| anyhow!("{origin}: {}", e.message()))?;
            return Ok((cfg, Some(origin)));
        }
        Ok((Config::default(), None))
    }

    /// Lays `over` on top of `self`: set scalars replace, lists and maps extend.
    pub fn overlay(mut self, over: Config) -> Config {
        macro_rules! take {
            ($($f:ident),*) => { $( if over.$f.is_some() { self.$f = over.$f; } )* };
        }
        take!(
            base,
            python,
            command,
            port,
            user,
            bytecode,
            mirror,
            security_mirror,
            check_valid_until,
            python_source,
            python_mirror,
            cache,
            collectstatic
        );
        self.packages.extend(over.packages);
        self.build_packages.extend(over.build_packages);
        self.no_binary.extend(over.no_binary);
        self.env.extend(over.env);
        self.labels.extend(over.labels);
        self.with.extend(over.with);
        self.no_system_packages.extend(over.no_system_packages);
        self.no_strip.extend(over.no_strip);
        self.index_auth.extend(over.index_auth);
        self.build_steps.extend(over.build_steps);
        self.build_env.extend(over.build_env);
        self.deploy = self.deploy.overlay(over.deploy);
        self
    }
}

/// Where an index's credentials come from, when not from uv's own
/// variables, `~/.netrc` or a keyring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IndexAuth {
    /// An access token from the Google credential chain, as Artifact
    /// Registry takes it (`oauth2accesstoken`).
    Google,
}

impl Config {
    /// The indexes whose credentials come from Google's chain.
    pub fn google_indexes(&self) -> Vec<String> {
        self.index_auth
            .iter()
            .filter(|(_, a)| **a == IndexAuth::Google)
            .map(|(n, _)| n.clone())
            .collect()
    }
}

/// Where the image's CPython comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PythonSource {
    /// Debian's build when a stable release has the version asked for,
    /// else python-build-standalone, else Debian testing.
    #[default]
    Auto,
    /// Only Debian's builds.
    Debian,
    /// Only python-build-standalone's builds (on a minimal Debian).
    Standalone,
}

/// Which bytecode goes into the image: size against start-up time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BytecodeMode {
    /// What the dependencies import, and every module of the packages the
    /// app names.
    Imports,
    /// Venv and the whole stdlib.
    All,
    /// No bytecode: smallest, slowest start.
    None,
}

impl BytecodeMode {
    pub fn as_str(self) -> &'static str {
        match self {
            BytecodeMode::Imports => "imports",
            BytecodeMode::All => "all",
            BytecodeMode::None => "none",
        }
    }
}

/// A rule of what the image does not ship: `python::strip` applies the
/// venv's, `base::trim` the runtime's.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum StripRule {
    Debug,
    Tests,
    Stubs,
    StdlibSources,
    Libraries,
    Positions,
}

impl StripRule {
    pub const ALL: [StripRule; 6] = [
        StripRule::Debug,
        StripRule::Tests,
        StripRule::Stubs,
        StripRule::StdlibSources,
        StripRule::Libraries,
        StripRule::Positions,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StripRule::Debug => "debug",
            StripRule::Tests => "tests",
            StripRule::Stubs => "stubs",
            StripRule::StdlibSources => "stdlib-sources",
            StripRule::Libraries => "libraries",
            StripRule::Positions => "positions",
        }
    }

    /// What the rule takes out, for the plan.
    pub fn describe(self) -> &'static str {
        match self {
            StripRule::Debug => "debug sections of compiled extensions",
            StripRule::Tests => "packages' test suites that nothing imports",
            StripRule::Stubs => "type stubs (*.pyi, py.typed)",
            StripRule::StdlibSources => {
                "the standard library's sources, its bytecode shipped instead"
            }
            StripRule::Libraries => "system libraries that no program or module links",
            StripRule::Positions => "column positions in the bytecode of packages",
        }
    }

    /// Whether the rule trims the runtime (Debian's packages, a standalone
    /// Python) rather than the venv.
    pub fn is_runtime(self) -> bool {
        matches!(self, StripRule::StdlibSources | StripRule::Libraries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pyproject_table_and_rejects_unknown_keys() {
        let d = tempfile::tempdir().unwrap();
        let t: toml::Value = toml::from_str(
            "port = 9000\ncommand = 'gunicorn app:app'\npackages = ['libpq5']\n[env]\nA = '1'\n",
        )
        .unwrap();
        let (c, origin) = Config::load(d.path(), Some(&t)).unwrap();
        assert_eq!(c.port, Some(9000));
        assert_eq!(c.command, Some(Command::Line("gunicorn app:app".into())));
        assert!(origin.unwrap().contains("[tool.slimpack]"));
        let t: toml::Value =
            toml::from_str("[deploy]\nregion = 'europe-west1'\nmax-instances = 3\n").unwrap();
        let (c, _) = Config::load(d.path(), Some(&t)).unwrap();
        assert_eq!(c.deploy.region.as_deref(), Some("europe-west1"));
        assert_eq!(c.deploy.max_instances, Some(3));
        let t: toml::Value = toml::from_str("prot = 9000\n").unwrap();
        let e = Config::load(d.path(), Some(&t)).unwrap_err().to_string();
        assert!(e.contains("prot"), "{e}");
    }

    #[test]
    fn slimpack_toml_wins_and_flags_overlay() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("slimpack.toml"),
            "python = '3.11'\npackages = ['a']\n",
        )
        .unwrap();
        let t: toml::Value = toml::from_str("python = '3.13'\n").unwrap();
        let (c, _) = Config::load(d.path(), Some(&t)).unwrap();
        assert_eq!(c.python.as_deref(), Some("3.11"));
        let c = c.overlay(Config {
            python: Some("3.13".into()),
            packages: vec!["b".into()],
            ..Default::default()
        });
        assert_eq!(c.python.as_deref(), Some("3.13"));
        assert_eq!(c.packages, vec!["a", "b"]);
    }
}
