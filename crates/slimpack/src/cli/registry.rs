//! `slimpack push` and `slimpack pull`.

use super::build::{print_push, project_image};
use super::{print_json, RegistryFlags};
use crate::core::progress::human;
use crate::image::{Sink, Source};
use crate::inspect::sbom;
use crate::registry::{self, Reference};
use anyhow::{bail, Result};

#[derive(clap::Args)]
pub(super) struct PushArgs {
    /// `oci:DIR[:TAG]`, an OCI layout directory, or a project directory
    /// (built first).
    image: String,
    /// Where to: `REGISTRY/REPO[:TAG]`, e.g.
    /// us-central1-docker.pkg.dev/my-project/backend/my-app:v1.
    reference: String,
    /// Also tag the pushed image with this tag. Repeatable.
    #[arg(long = "tag")]
    tags: Vec<String>,
    #[command(flatten)]
    common: RegistryFlags,
}

#[derive(clap::Args)]
pub(super) struct PullArgs {
    /// `REGISTRY/REPO[:TAG][@DIGEST]`.
    reference: String,
    /// Also write the image as an OCI layout: `oci:DIR[:TAG]`.
    #[arg(long, short)]
    output: Option<String>,
    /// Also write the SPDX document attached to the image (as `build
    /// --push` attaches one) to FILE; an error when none is attached.
    #[arg(long, value_name = "FILE")]
    sbom: Option<std::path::PathBuf>,
    #[command(flatten)]
    common: RegistryFlags,
}

pub(super) fn push(a: PushArgs) -> Result<i32> {
    let target = Reference::parse(&a.reference)?;
    let ctx = a.common.context()?;
    let not_pushable = || {
        anyhow::anyhow!(
            "{}: not an OCI image layout (no index.json) or a project directory",
            a.image
        )
    };
    let source = match Source::parse(&a.image) {
        Ok(s) => s,
        Err(_) => return Err(not_pushable()),
    };
    let (store, digest) = match &source {
        Source::Project(dir) => {
            let r = project_image(&ctx, dir, a.common.json)?;
            (ctx.cache.blobs.clone(), r.digest)
        }
        Source::Layout { dir, tag } => {
            let (store, img) = slimpack_oci::read_layout(dir, tag.as_deref())?;
            (store, img.manifest_digest)
        }
        Source::DockerArchive(_) => bail!(
            "{}: push an OCI layout (`slimpack build -o oci:DIR`); a docker-archive holds no manifest to push",
            a.image
        ),
        Source::Registry(_) => return Err(not_pushable()),
    };
    let insecure = registry::is_insecure(&target, &a.common.insecure);
    let mut report = registry::push(
        &store,
        &digest,
        &target,
        &a.tags,
        insecure,
        &ctx.cache,
        &ctx.progress,
    )?;
    report.sbom = Some(attach_sbom(&ctx, &store, &digest, &target, insecure)?);
    if a.common.json {
        print_json(&report)?;
    } else {
        print_push(&report);
        if let Some(s) = &report.sbom {
            println!("  sbom    SPDX 2.3 attached as {}", s.digest);
        }
    }
    Ok(0)
}

/// An SBOM of what the pushed image holds, attached to it. Named after
/// the repository, so one image pushed to one place gets the same bytes.
fn attach_sbom(
    ctx: &crate::build::Context,
    store: &slimpack_oci::BlobStore,
    digest: &str,
    target: &Reference,
    insecure: bool,
) -> Result<registry::referrers::Attached> {
    let image = slimpack_oci::load_manifest(store, digest)?;
    let cfg = crate::image::RunConfig::of(&image)?;
    let contents = crate::inspect::image_contents(&ctx.cache, store, &image.layers, cfg.env())?;
    let name = format!("{}/{}", target.registry, target.repository);
    let created = image.config.get("created").and_then(|c| c.as_str());
    let doc = sbom::document(
        &sbom::Subject {
            name: &name,
            manifest_digest: digest,
            created,
        },
        &contents,
        None,
    )?;
    let manifest = store.read(digest)?;
    let media_type = serde_json::from_slice::<serde_json::Value>(&manifest)?["mediaType"]
        .as_str()
        .unwrap_or(slimpack_oci::MEDIA_TYPE_MANIFEST)
        .to_string();
    registry::referrers::attach(
        &ctx.cache,
        target,
        &registry::referrers::Subject {
            digest,
            size: manifest.len() as u64,
            media_type: &media_type,
        },
        sbom::MEDIA_TYPE,
        &doc,
        insecure,
        &ctx.progress,
    )
}

pub(super) fn pull(a: PullArgs) -> Result<i32> {
    let r = Reference::parse(&a.reference)?;
    let output = a.output.as_deref().map(Sink::parse_output).transpose()?;
    let ctx = a.common.context()?;
    let insecure = registry::is_insecure(&r, &a.common.insecure);
    let (image, report) = registry::pull(&r, insecure, &ctx.cache, &ctx.progress)?;
    if let Some(to) = &a.sbom {
        let attached = registry::referrers::fetch(
            &ctx.cache,
            &r,
            &image.manifest_digest,
            sbom::MEDIA_TYPE,
            insecure,
        )?;
        let Some((_, doc)) = attached else {
            bail!(
                "{}: no SPDX document is attached to {}; nothing written to {}",
                r.repo_key(),
                image.manifest_digest,
                to.display()
            );
        };
        crate::core::fs::write_atomic(to, &doc)?;
    }
    match &output {
        Some(Sink::Layout { path, tag }) => slimpack_oci::write_layout(
            &ctx.cache.blobs,
            &image.to_image(&ctx.cache.blobs)?,
            path,
            tag,
        )?,
        Some(_) => bail!(
            "--output {}: pull writes OCI layouts only (oci:DIR[:TAG])",
            a.output.as_deref().unwrap_or_default()
        ),
        None => {}
    }
    if a.common.json {
        print_json(&report)?;
    } else {
        println!("Pulled {}", report.reference);
        println!(
            "  downloaded {}, {} from the cache, in {:.2}s",
            human(report.downloaded_bytes),
            human(report.cached_bytes),
            report.seconds
        );
        if let Some(o) = &a.output {
            println!("  output  {o}");
        }
        if let Some(s) = &a.sbom {
            println!("  sbom    {}", s.display());
        }
    }
    Ok(0)
}
