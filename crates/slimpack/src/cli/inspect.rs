//! `slimpack inspect`: what is in an image, where its bytes go, how it
//! differs from another, and its SBOM.

use super::{print_json, RegistryFlags};
use crate::build::Context;
use crate::core::fs::write_atomic;
use crate::image::Source;
use crate::inspect::{self, render, sbom, Diff, Inspection};
use crate::registry::{self, referrers};
use anyhow::{bail, Result};
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(clap::Args)]
pub(super) struct InspectArgs {
    /// What `run` accepts: `oci:DIR[:TAG]`, `docker-archive:FILE`, a
    /// registry reference, or a project directory (built first).
    image: String,
    /// Compare with this image (same forms): what grew, what appeared,
    /// by category.
    #[arg(long, value_name = "OTHER")]
    diff: Option<String>,
    /// Write an SPDX 2.3 document of what the image holds (dpkg
    /// database, Python metadata) to FILE (`-`: standard output).
    #[arg(long, value_name = "FILE")]
    sbom: Option<PathBuf>,
    /// Write the SPDX document attached to the image in its registry
    /// (`slimpack build --push` attaches one) to FILE (`-`: standard output).
    #[arg(long, value_name = "FILE")]
    attached_sbom: Option<PathBuf>,
    #[command(flatten)]
    common: RegistryFlags,
}

struct Loaded {
    shown: String,
    source: Source,
    inspection: Inspection,
}

fn load(ctx: &Context, image: &str, insecure: &[String], quiet: bool) -> Result<Loaded> {
    let mut source = Source::parse(image)?;
    let mut shown = image.to_string();
    if let Source::Project(dir) = &source {
        let r = super::build::project_image(ctx, dir, quiet)?;
        shown = r.outputs[0].clone();
        source = Source::parse(&shown)?;
    }
    let (store, img) = source.load(&ctx.cache, insecure, &ctx.progress)?;
    let inspection = inspect::inspect(&shown, &store, &img)?;
    Ok(Loaded {
        shown,
        source,
        inspection,
    })
}

/// `-` is standard output; a file is written whole or not at all.
fn emit(to: &std::path::Path, bytes: &[u8]) -> Result<()> {
    if to.as_os_str() == "-" {
        use std::io::Write;
        std::io::stdout().write_all(bytes)?;
        return Ok(());
    }
    write_atomic(to, bytes)
}

pub(super) fn run(a: InspectArgs) -> Result<i32> {
    let to_stdout = |p: &Option<PathBuf>| p.as_ref().is_some_and(|p| p.as_os_str() == "-");
    if [&a.sbom, &a.attached_sbom]
        .iter()
        .filter(|p| to_stdout(p))
        .count()
        + usize::from(a.common.json)
        > 1
    {
        bail!("--sbom -, --attached-sbom - and --json all write to standard output; give the documents file names");
    }
    let ctx = a.common.context()?;
    let quiet = a.common.json || to_stdout(&a.sbom) || to_stdout(&a.attached_sbom);
    let main = load(&ctx, &a.image, &a.common.insecure, quiet)?;
    let style = render::Style {
        color: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };
    if let Some(to) = &a.sbom {
        let i = &main.inspection;
        let doc = sbom::document(
            &sbom::Subject {
                name: &main.shown,
                manifest_digest: &i.manifest_digest,
                created: i.created.as_deref(),
            },
            &i.contents,
            None,
        )?;
        emit(to, &doc)?;
    }
    if let Some(to) = &a.attached_sbom {
        let Source::Registry(r) = &main.source else {
            bail!("--attached-sbom: {} is not in a registry; SBOMs are attached to images there (slimpack build --push)", main.shown);
        };
        let insecure = registry::is_insecure(r, &a.common.insecure);
        match referrers::fetch(&ctx.cache, r, &main.inspection.manifest_digest, sbom::MEDIA_TYPE, insecure)? {
            Some((_, doc)) => emit(to, &doc)?,
            None => bail!(
                "{}: no SPDX document is attached to {} (push it with `slimpack build --push`, or write one from its contents with --sbom)",
                r.repo_key(),
                main.inspection.manifest_digest
            ),
        }
    }
    if quiet && !a.common.json {
        return Ok(0);
    }
    if let Some(other) = &a.diff {
        let right = load(&ctx, other, &a.common.insecure, a.common.json)?;
        let d = Diff::of(&main.inspection, &right.inspection);
        if a.common.json {
            print_json(&d)?;
        } else {
            print!("{}", render::diff(&d, style));
        }
        return Ok(0);
    }
    if a.common.json {
        print_json(&main.inspection)?;
    } else {
        print!("{}", render::inspection(&main.inspection, style));
    }
    Ok(0)
}
