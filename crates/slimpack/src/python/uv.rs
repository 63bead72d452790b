//! Finding uv: the one on PATH, else a pinned wheel from PyPI, checked by
//! hash and unpacked into the cache.

use crate::core::cache::Cache;
use crate::core::http;
use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

const UV_VERSION: &str = "0.13.9";
const UV_WHEEL: &str = "uv-0.13.9-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl";
const UV_WHEEL_SHA256: &str = "d7f459fe4fd247d830351c75686d3996ace3c6f3f728eb0e85a30b7ada0cef19";

/// Settings for every uv run, on the host or in the builder: our cache, no
/// Python downloads, and no config from the user's home that would make
/// builds differ between machines.
pub const SETTINGS: [(&str, &str); 3] = [
    ("UV_PYTHON_DOWNLOADS", "never"),
    ("UV_NO_CONFIG", "1"),
    ("UV_NO_PROGRESS", "1"),
];

/// The package index the user chose: part of what a resolution depends on,
/// and passed into the builder.
pub const INDEX_VARS: [&str; 5] = [
    "UV_INDEX_URL",
    "UV_EXTRA_INDEX_URL",
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "UV_INDEX",
];

#[derive(Debug, Clone)]
pub struct Uv {
    pub path: PathBuf,
    pub version: String,
    cache_dir: PathBuf,
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
        let cache_dir = cache.dir("uv-cache")?;
        if let Some(p) = std::env::var_os("SLIMPACK_UV")
            .map(PathBuf::from)
            .or_else(|| crate::core::which("uv"))
        {
            let version = version_of(&p)?;
            return Ok(Uv {
                path: p,
                version,
                cache_dir,
            });
        }
        let dir = cache.dir("tools")?.join(format!("uv-{UV_VERSION}"));
        let bin = dir.join("uv");
        if !bin.is_file() {
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
                bail!("{url}: sha256 {got} does not match the pinned {UV_WHEEL_SHA256}; refusing to run it");
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
        }
        Ok(Uv {
            path: bin,
            version: UV_VERSION.into(),
            cache_dir,
        })
    }

    /// A uv command on the host, with [`SETTINGS`] and our cache.
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.path);
        c.env("UV_CACHE_DIR", &self.cache_dir).envs(SETTINGS);
        if let Some(ca) = http::host_ca_bundle() {
            c.env("SSL_CERT_FILE", ca);
        }
        c
    }

    /// uv's cache directory, shared with the builder sandbox.
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// Runs a uv command; on failure the error carries uv's own message.
    pub fn run(&self, mut cmd: Command, what: &str) -> Result<String> {
        let out = cmd
            .output()
            .with_context(|| format!("running {}", self.path.display()))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            bail!("{what} failed:\n{}", stderr.trim_end());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}
