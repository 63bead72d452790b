//! The build's SBOM: `inspect`'s SPDX document of the image just built,
//! from each layer's facts (cached by layer digest, so a code edit reads
//! only the app layer), with what only the build knows: the lock's
//! hashes, the interpreter's download, the project's name and version.
//! Written to `--sbom FILE` and attached to every image pushed.

use super::{Context, Planned};
use crate::image::Sink;
use crate::inspect::{self, sbom};
use crate::registry::{self, referrers};
use anyhow::{Context as _, Result};
use serde::Serialize;
use slimpack_oci::Image;
use std::path::PathBuf;

/// What the report says of the SBOM.
#[derive(Debug, Clone, Serialize)]
pub struct SbomReport {
    /// The document's digest; its bytes are in the cache's blobs.
    pub digest: String,
    /// The file written, when `--sbom` named one.
    pub file: Option<String>,
    pub debian_packages: usize,
    pub python_packages: usize,
    pub bytes: usize,
    /// Where it was attached (one per registry the image went to).
    pub attached: Vec<referrers::Attached>,
}

/// The document, and what the report says of it.
pub fn document(ctx: &Context, planned: &Planned, image: &Image) -> Result<(Vec<u8>, SbomReport)> {
    let contents = inspect::image_contents(
        &ctx.cache,
        &ctx.cache.blobs,
        &image.layers,
        &planned.image.env,
    )
    .context("reading the image for its SBOM")?;
    let standalone = planned.runtime.spec.standalone.as_ref();
    let app = planned.project.name_declared.then(|| {
        let version = planned
            .project
            .pyproject
            .as_ref()
            .and_then(|p| p.version.clone());
        (planned.project.name.clone(), version)
    });
    let build = sbom::BuildFacts {
        app,
        hashes: sbom::BuildFacts::hashes_of(&planned.lock.text),
        interpreter_download: standalone.map(|p| (p.url.clone(), p.download.sha256.clone())),
        interpreter_version: standalone.map(|p| p.download.version.clone()),
    };
    let doc = sbom::document(
        &sbom::Subject {
            name: &planned.project.name,
            manifest_digest: &image.manifest_digest,
            created: Some(&planned.image.created),
        },
        &contents,
        Some(&build),
    )?;
    let report = SbomReport {
        digest: ctx.cache.blobs.put_bytes(&doc)?,
        file: None,
        debian_packages: contents.debs.len(),
        python_packages: contents.dists.len(),
        bytes: doc.len(),
        attached: Vec::new(),
    };
    Ok((doc, report))
}

/// Writes the document to `file` and attaches it to the image in every
/// registry `sinks` pushed to.
pub fn deliver(
    ctx: &Context,
    image: &Image,
    (doc, mut report): (Vec<u8>, SbomReport),
    file: Option<&PathBuf>,
    sinks: &[Sink],
) -> Result<SbomReport> {
    if let Some(f) = file {
        crate::core::fs::write_atomic(f, &doc)?;
        report.file = Some(f.display().to_string());
    }
    for s in sinks {
        if let Sink::Registry(r) = s {
            report
                .attached
                .push(attach(ctx, &image.manifest_digest, r, &doc)?);
        }
    }
    Ok(report)
}

/// Attaches `doc` to the image `manifest_digest` (whose manifest is in
/// the cache), already pushed to `target`'s repository.
pub fn attach(
    ctx: &Context,
    manifest_digest: &str,
    target: &registry::Reference,
    doc: &[u8],
) -> Result<referrers::Attached> {
    let size = ctx.cache.blobs.read(manifest_digest)?.len() as u64;
    referrers::attach(
        &ctx.cache,
        target,
        &referrers::Subject {
            digest: manifest_digest,
            size,
            media_type: slimpack_oci::MEDIA_TYPE_MANIFEST,
        },
        sbom::MEDIA_TYPE,
        doc,
        registry::is_insecure(target, &ctx.insecure_registries),
        &ctx.progress,
    )
}
