//! Finding uv: the one on PATH, else a pinned wheel from PyPI, checked by
//! hash and unpacked into the cache.

use crate::core::cache::{Cache, CacheDir};
use crate::core::http;
use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

const UV_VERSION: &str = "0.13.9";
const UV_WHEEL: &str = "uv-0.13.9-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl";
const UV_WHEEL_SHA256: &str = "d7f459fe4fd247d830351c75686d3996ace3c6f3f728eb0e85a30b7ada0cef19";

/// The lock file uv leaves in a `--target` directory: no part of a venv.
pub const TARGET_LOCK: &str = ".lock";

/// Settings for every uv run, on the host or in the builder: our cache, no
/// Python downloads, and no config from the user's home that would make
/// builds differ between machines.
pub const SETTINGS: [(&str, &str); 3] = [
    ("UV_PYTHON_DOWNLOADS", "never"),
    ("UV_NO_CONFIG", "1"),
    ("UV_NO_PROGRESS", "1"),
];

#[derive(Debug, Clone)]
pub struct Uv {
    /// Where the binary is: known at once when it is on PATH, else fetched
    /// on first use (a build whose every stage is cached never runs uv, and
    /// never downloads it).
    path: std::sync::Arc<std::sync::OnceLock<PathBuf>>,
    /// Held while fetching: a prefetch and a first use download it once.
    fetching: std::sync::Arc<std::sync::Mutex<()>>,
    pub version: String,
    cache_dir: PathBuf,
    tools_dir: PathBuf,
    /// The project's indexes and their credentials.
    indexes: std::sync::Arc<super::index::Access>,
}

fn version_of(path: &Path) -> Result<String> {
    let out = Command::new(path)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", path.display()))?;
    let s = String::from_utf8_lossy(&out.stdout);
    s.split_whitespace()
        .nth(1)
        .map(str::to_string)
        .ok_or_else(|| anyhow!("{} --version printed {s:?}", path.display()))
}

impl Uv {
    pub fn locate(cache: &Cache) -> Result<Uv> {
        let cache_dir = cache.dir(CacheDir::UvCache)?;
        let tools_dir = cache.dir(CacheDir::Tools)?;
        let path = std::sync::Arc::new(std::sync::OnceLock::new());
        if let Some(p) = std::env::var_os("SLIMPACK_UV")
            .map(PathBuf::from)
            .or_else(|| crate::core::which("uv"))
        {
            let version = version_of(&p)?;
            let _ = path.set(p);
            return Ok(Uv {
                path,
                fetching: Default::default(),
                version,
                cache_dir,
                tools_dir,
                indexes: Default::default(),
            });
        }
        Ok(Uv {
            path,
            fetching: Default::default(),
            version: UV_VERSION.into(),
            cache_dir,
            tools_dir,
            indexes: Default::default(),
        })
    }

    /// This uv, told the project's indexes.
    pub fn with_indexes(mut self, access: super::index::Access) -> Uv {
        self.indexes = std::sync::Arc::new(access);
        self
    }

    pub fn indexes(&self) -> &super::index::Access {
        &self.indexes
    }

    /// The binary: the one found, or the pinned wheel's, fetched and
    /// checked the first time it is needed.
    pub fn path(&self) -> Result<&Path> {
        if let Some(p) = self.path.get() {
            return Ok(p);
        }
        let _one = self.fetching.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = self.path.get() {
            return Ok(p);
        }
        let bin = fetch_pinned(&self.tools_dir)?;
        Ok(self.path.get_or_init(|| bin))
    }

    /// Starts fetching the binary in the background, for a build about to
    /// resolve: the download then overlaps reading the Debian indexes.
    /// A failure is left for the first use to report.
    pub fn prefetch(&self) {
        if self.path.get().is_none() {
            let uv = self.clone();
            std::thread::spawn(move || {
                let _ = uv.path();
            });
        }
    }

    /// A uv command on the host, with [`SETTINGS`] and our cache.
    pub fn command(&self) -> Result<Command> {
        let mut c = Command::new(self.path()?);
        c.env("UV_CACHE_DIR", &self.cache_dir).envs(SETTINGS);
        if let Some(ca) = http::host_ca_bundle() {
            c.env("SSL_CERT_FILE", ca);
        }
        Ok(c)
    }

    /// uv's cache directory, shared with the builder sandbox.
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// Runs a uv command; on failure the error carries uv's own message.
    pub fn run(&self, mut cmd: Command, what: &str) -> Result<String> {
        let out = cmd.output().context("running uv")?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let stderr = stderr.trim_end();
            // An index that refused uv is said here, for every command
            // that fetches: which index, which package, why.
            return Err(failure(what, stderr, || self.indexes.explain(stderr)));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// uv failed; its own message, as it printed it, and what to do when an
/// index caused it (in [`crate::core::errors::Hinted`]'s form).
#[derive(Debug, thiserror::Error)]
#[error("{what} failed:\n{stderr}{}", hint.as_ref().map(|h| format!("\n  hint: {h}")).unwrap_or_default())]
pub struct UvFailed {
    pub what: String,
    pub stderr: String,
    pub hint: Option<String>,
}

/// A wheels-only run failed because packages have no wheel for the
/// target: the builder stage compiles them.
#[derive(Debug, thiserror::Error)]
#[error("{failed}")]
pub struct MissingWheels {
    /// The packages uv named (it does not always name them).
    pub packages: Vec<String>,
    pub failed: UvFailed,
}

/// uv's failure, read once into what the caller acts on.
/// The pinned uv wheel from the package index, checked by hash, its binary
/// unpacked under `tools`.
fn fetch_pinned(tools: &Path) -> Result<PathBuf> {
    let dir = tools.join(format!("uv-{UV_VERSION}"));
    let bin = dir.join("uv");
    if bin.is_file() {
        return Ok(bin);
    }
    let index = std::env::var("UV_INDEX_URL")
        .or_else(|_| std::env::var("PIP_INDEX_URL"))
        .unwrap_or_else(|_| "https://pypi.org/simple".into());
    let meta = http::get_accept(
        &format!("{}/uv/", index.trim_end_matches('/')),
        Some("application/vnd.pypi.simple.v1+json"),
        None,
    )
    .context("looking up the uv wheel on the package index (or put uv on PATH)")?;
    let meta: serde_json::Value = serde_json::from_slice(&meta)?;
    let url = meta["files"]
        .as_array()
        .and_then(|a| a.iter().find(|u| u["filename"] == UV_WHEEL))
        .and_then(|u| u["url"].as_str())
        .ok_or_else(|| anyhow!("PyPI lists no {UV_WHEEL}"))?
        .to_string();
    let wheel = http::get(&url, None)?;
    let got = slimpack_oci::sha256_digest(&wheel);
    if got != format!("sha256:{UV_WHEEL_SHA256}") {
        bail!(
            "{url}: sha256 {got} does not match the pinned {UV_WHEEL_SHA256}; refusing to run it"
        );
    }
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(wheel))?;
    let mut f = zip
        .by_name(&format!("uv-{UV_VERSION}.data/scripts/uv"))
        .context("the uv wheel has no uv binary")?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut f, &mut bytes)?;
    crate::core::fs::write_atomic(&bin, &bytes)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))?;
    Ok(bin)
}

fn failure(what: &str, stderr: &str, explain: impl FnOnce() -> Option<String>) -> anyhow::Error {
    let mut failed = UvFailed {
        what: what.to_string(),
        stderr: stderr.to_string(),
        hint: None,
    };
    if says_no_wheels(stderr) {
        MissingWheels {
            packages: wheels_required(stderr),
            failed,
        }
        .into()
    } else {
        failed.hint = explain();
        failed.into()
    }
}

/// Packages uv says have no usable wheel (so must be built from source), in
/// a resolution's or an install's error.
pub fn wheels_required(stderr: &str) -> Vec<String> {
    let mut out: Vec<String> = stderr
        .split("Wheels are required for `")
        .skip(1)
        .filter_map(|rest| rest.split('`').next())
        .map(crate::project::normalize_name)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Does uv's message say a package has no wheel for the target?
pub(super) fn says_no_wheels(message: &str) -> bool {
    message.contains("has no usable wheels")
        || message.contains("Wheels are required")
        || message.contains("doesn't have a source distribution or wheel")
        || message.contains("no wheels with a matching")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packages_without_wheels_are_named() {
        let e = "  cause: Because psycopg2==2.9.9 has no usable wheels and you require psycopg2==2.9.9, we can conclude that your requirements are unsatisfiable.\n\nhint: Wheels are required for `psycopg2` because building from source is disabled for all packages (i.e., with `--no-build`)\nhint: Wheels are required for `My_Pkg` because ...";
        assert_eq!(wheels_required(e), vec!["my-pkg", "psycopg2"]);
        assert!(wheels_required("error: No solution found: foo>=9 is not available").is_empty());
        let missing = failure("installing", e, || {
            unreachable!("no index is asked about missing wheels")
        });
        let m = missing.downcast_ref::<MissingWheels>().unwrap();
        assert_eq!(m.packages, vec!["my-pkg", "psycopg2"]);
        assert_eq!(missing.to_string(), format!("installing failed:\n{e}"));
        let other = failure("installing", "connection reset", || None);
        assert!(other.downcast_ref::<MissingWheels>().is_none());
        assert_eq!(other.to_string(), "installing failed:\nconnection reset");
        let refused = failure("installing", "401", || Some("set X".into()));
        assert_eq!(
            refused.to_string(),
            "installing failed:\n401\n  hint: set X"
        );
    }
}
