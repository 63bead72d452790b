//! A registry image as the runtime base (`--base python:3.12-slim`,
//! `gcr.io/distroless/python3-debian12`, or an image of our own): pulled
//! once, its layers reused as they are (never recompressed), and its own
//! Python found and asked for its version, paths and C library, so the venv
//! is built for exactly that interpreter.

use crate::core::cache::{Cache, RecordKind};
use crate::core::progress::Progress;
use crate::python::{self, Target};
use crate::registry::{self, Reference};
use crate::sandbox::{self, Sandbox};
use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use slimpack_oci::{Layer, LoadedImage};
use std::path::PathBuf;
use std::time::Duration;

pub struct RegistryBase {
    /// As asked, and pinned to the digest pulled.
    pub reference: Reference,
    pub pinned: Reference,
    pub image: LoadedImage,
    pub root: PathBuf,
    pub target: Target,
    /// The base image's own environment (`KEY=VALUE`).
    pub env: Vec<String>,
}

#[derive(Deserialize)]
struct Probe {
    version: String,
    minor: String,
    executable: String,
    stdlib: String,
    libc: (String, String),
    #[serde(default)]
    freethreaded: bool,
}

const PROBE: &str = r#"
import json, os, platform, sys, sysconfig
print(json.dumps({
    "version": platform.python_version(),
    "minor": "%d.%d" % sys.version_info[:2],
    "executable": os.path.realpath(sys.executable),
    "stdlib": sysconfig.get_path("stdlib"),
    "libc": list(platform.libc_ver()),
    "freethreaded": bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
}))
"#;

/// Pulls and unpacks `reference`, and finds its Python.
pub fn prepare(
    reference: &Reference,
    insecure: bool,
    cache: &Cache,
    progress: &Progress,
) -> Result<RegistryBase> {
    let (mut image, report) = registry::pull(reference, insecure, cache, progress)
        .with_context(|| format!("pulling the base image {reference}"))?;
    // Docker's gzip layers are byte for byte OCI's; name them as OCI does,
    // since our manifest is OCI.
    for l in &mut image.layers {
        if l.media_type.is_empty()
            || l.media_type == "application/vnd.docker.image.rootfs.diff.tar.gzip"
        {
            l.media_type = slimpack_oci::MEDIA_TYPE_LAYER_GZIP.into();
        }
    }
    fill_uncompressed_sizes(cache, &mut image.layers)?;
    let sp = progress.spinner(format!("Unpacking {reference}"));
    let (root, _) = sandbox::cached_rootfs(cache, &cache.blobs, &image.layers, false)?;
    sp.finish_and_clear();
    let env: Vec<String> = crate::image::RunConfig::of(&image)?.env().to_vec();
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/bin:/usr/bin:/bin")
        .to_string();
    // The interpreter is a property of the image: asked once per digest.
    let target = match cache.get::<Target>(RecordKind::BasePython, &report.digest) {
        Some(t) => t,
        None => {
            let t = probe_python(reference, &root, &path)?;
            cache.put(RecordKind::BasePython, &report.digest, &t)?;
            t
        }
    };
    Ok(RegistryBase {
        reference: reference.clone(),
        pinned: reference.with_digest(&report.digest),
        image,
        root,
        target,
        env,
    })
}

/// Runs the image's first `python3` on `path` and asks it for its version,
/// real path, stdlib and C library.
fn probe_python(reference: &Reference, root: &std::path::Path, path: &str) -> Result<Target> {
    let python = path
        .split(':')
        .chain(["/usr/local/bin", "/usr/bin"])
        .map(|d| format!("{}/python3", d.trim_end_matches('/')))
        .find(|p| {
            sandbox::exists_in_root(root, p)
        })
        .ok_or_else(|| {
            anyhow!("the base image {reference} has no python3 on its PATH ({path}); use an image with Python (python:3.12-slim, gcr.io/distroless/python3-debian12) or a Debian base (debian:trixie)")
        })?;
    let out = Sandbox::new(root)
        .env("PATH", path)
        .env("HOME", "/tmp")
        .run(&[&python, "-c", PROBE], Duration::from_secs(60))?;
    if out.status != 0 {
        bail!(
            "{python} in the base image {reference} did not run (exit {}): {}",
            out.status,
            out.stderr.trim()
        );
    }
    let probe: Probe = serde_json::from_str(out.stdout.trim()).map_err(|_| {
        anyhow!(
            "{python} in {reference} printed something unexpected: {}",
            out.stdout.trim()
        )
    })?;
    if probe.libc.0 != "glibc" {
        bail!(
            "the base image {reference} has no glibc ({} reported {:?}): manylinux wheels need glibc (alpine/musl bases make every binary package compile from source, as seeds 001 and 003 warn); use a Debian-based image",
            python,
            probe.libc.0
        );
    }
    Ok(Target {
        minor: if probe.freethreaded {
            format!("{}t", probe.minor)
        } else {
            probe.minor
        },
        version: probe.version,
        platform: python::platform_for_glibc(&probe.libc.1),
        interpreter: probe.executable,
        stdlib: probe.stdlib,
        freethreaded: probe.freethreaded,
        host_interpreter: None,
    })
}

/// Base layers come with compressed sizes only; count the tar bytes once
/// per layer and remember them by digest.
fn fill_uncompressed_sizes(cache: &Cache, layers: &mut [Layer]) -> Result<()> {
    for l in layers.iter_mut().filter(|l| l.uncompressed_size == 0) {
        if let Some(n) = cache.get::<u64>(RecordKind::LayerSize, &l.digest) {
            l.uncompressed_size = n;
            continue;
        }
        let mut r = slimpack_oci::open_layer(&cache.blobs, l)?;
        let n = std::io::copy(&mut r, &mut std::io::sink())
            .with_context(|| format!("reading layer {}", l.digest))?;
        l.uncompressed_size = n;
        cache.put(RecordKind::LayerSize, &l.digest, &n)?;
    }
    Ok(())
}
