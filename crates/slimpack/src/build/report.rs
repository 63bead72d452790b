//! The build report: what was built, reused, compiled and added
//! (`--json` prints it as is).

use super::runtime::RuntimeLayers;
use super::{Planned, VenvRecord};
use crate::builder;
use crate::python::{bytecode, native};
use serde::Serialize;
use slimpack_oci::{Image, Layer};

#[derive(Debug, Clone, Serialize)]
pub struct LayerReport {
    pub name: String,
    pub digest: String,
    pub diff_id: String,
    pub size: u64,
    pub uncompressed_size: u64,
    /// Reused from the cache rather than built.
    pub cached: bool,
    /// Found in the build cache's registry repository (`--cache`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub from_build_cache: bool,
}

/// What the build cache in a registry (`--cache`) gave and got.
#[derive(Debug, Clone, Serialize)]
pub struct BuildCacheReport {
    pub repository: String,
    /// Records and layers fetched from it.
    pub downloaded_bytes: u64,
    /// What this build's records added to it.
    pub published: crate::registry::cache_repo::Published,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    pub name: String,
    pub digest: String,
    pub outputs: Vec<String>,
    pub layers: Vec<LayerReport>,
    pub size: u64,
    pub uncompressed_size: u64,
    pub python: String,
    pub base: String,
    pub os_packages: usize,
    pub python_packages: usize,
    pub bytecode: Option<bytecode::Compiled>,
    /// What each strip rule took out of the venv.
    pub stripped: Vec<crate::python::strip::Applied>,
    /// Bytecode of the venv's packages the app names, in a layer of its own.
    pub named_bytecode: Option<super::named::NamedRecord>,
    /// The package indexes and what came from each, when any is declared.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub indexes: Vec<super::plan::IndexPlan>,
    /// Commands run at build time whose output is in the app layer.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub build_steps: Vec<super::steps::Step>,
    /// How the image's programs were isolated when this build ran them
    /// (`namespaces`, `root-namespaces`, `chroot`); None when nothing ran.
    pub sandbox: Option<String>,
    /// What the builder stage did, when dependencies were compiled.
    pub builder: Option<builder::Built>,
    /// Debian packages added to the runtime for the venv's compiled code.
    pub runtime_additions: Vec<native::Addition>,
    /// Set when the dependencies were resolved by this build (not reused).
    pub resolved: Option<Vec<String>>,
    pub cmd: Vec<String>,
    /// The port the app listens on ($PORT).
    pub port: u16,
    /// A health endpoint seen in the source, for startup probes.
    pub health_path: Option<String>,
    /// What `--push` sent, when asked.
    pub push: Option<crate::registry::PushReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_cache: Option<BuildCacheReport>,
    /// The SPDX document, when one was written or attached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sbom: Option<super::sbom::SbomReport>,
    pub warnings: Vec<String>,
    pub seconds: f64,
}

/// The report of a build not yet written anywhere.
pub(super) fn new(
    planned: &Planned,
    image: &Image,
    layers: &[(String, Layer, bool)],
    runtime: &RuntimeLayers,
    venv: &VenvRecord,
    named: Option<super::named::NamedRecord>,
) -> BuildReport {
    let lock = &planned.lock;
    BuildReport {
        name: planned.project.name.clone(),
        digest: image.manifest_digest.clone(),
        outputs: Vec::new(),
        layers: layers
            .iter()
            .map(|(name, l, cached)| LayerReport {
                name: name.clone(),
                digest: l.digest.clone(),
                diff_id: l.diff_id.clone(),
                size: l.size,
                uncompressed_size: l.uncompressed_size,
                cached: *cached,
                from_build_cache: false,
            })
            .collect(),
        size: image.compressed_size(),
        uncompressed_size: image.uncompressed_size(),
        python: planned.runtime.target.version.clone(),
        base: runtime.description.clone(),
        os_packages: runtime.os_packages,
        python_packages: lock.packages.len(),
        bytecode: venv.bytecode.clone(),
        stripped: runtime
            .stripped
            .iter()
            .chain(&venv.stripped)
            .cloned()
            .collect(),
        named_bytecode: named,
        build_steps: planned.steps.clone(),
        indexes: super::plan::IndexPlan::all(planned.uv.indexes(), &lock.origins),
        sandbox: layers
            .iter()
            .any(|(name, _, cached)| name == "venv" && !cached)
            .then(|| crate::sandbox::mode().ok().map(|m| m.as_str().to_string()))
            .flatten(),
        builder: venv.builder.clone(),
        runtime_additions: venv.runtime_additions.clone(),
        resolved: (!planned.lock_cached).then(|| {
            lock.packages
                .iter()
                .map(|p| format!("{}=={}", p.name, p.version))
                .collect()
        }),
        cmd: planned.start.argv.clone(),
        port: planned.image.port,
        health_path: planned.start.health_path.clone(),
        push: None,
        build_cache: None,
        sbom: None,
        warnings: planned.warnings.clone(),
        seconds: planned.started.elapsed().as_secs_f64(),
    }
}
