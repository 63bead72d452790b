//! `slimpack build`.

use super::{print_json, ImageFlags, ProjectFlags};
use crate::build::{self, BuildReport, Context, Planned};
use crate::core::progress::human;
use crate::core::text::escape_controls;
use crate::image::Sink;
use crate::registry::{BlobAction, PushReport};
use anyhow::Result;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub(super) struct BuildArgs {
    /// The project directory.
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// Where to write the image: `oci:DIR[:TAG]` (default
    /// target/slimpack/NAME.oci) or `docker-archive:FILE`. Repeatable.
    #[arg(long, short)]
    output: Vec<String>,
    /// Print the build plan as JSON and build nothing.
    #[arg(long)]
    plan: bool,
    /// Machine-readable report on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    project: ProjectFlags,
    #[command(flatten)]
    image: ImageFlags,
    /// Refuse to build unless the dependencies are locked.
    #[arg(long)]
    locked: bool,
    /// Push the image to this registry reference after building
    /// (`REGISTRY/REPO[:TAG]`); the outputs are written too.
    #[arg(long)]
    push: Option<String>,
    /// Write an SPDX 2.3 SBOM of the image to FILE (one is attached to
    /// the image on every push either way).
    #[arg(long, value_name = "FILE")]
    sbom: Option<std::path::PathBuf>,
    /// Speak plain HTTP to this registry (loopback ones always are). Repeatable.
    #[arg(long = "insecure-registry")]
    insecure: Vec<String>,
}

pub(super) fn run(a: BuildArgs) -> Result<i32> {
    let request = build::Request {
        dir: a.dir.clone(),
        overrides: a.project.overrides(Some(&a.image))?,
        locked: a.locked,
    };
    // Bad places fail before the build, not after it.
    let mut sinks = a
        .output
        .iter()
        .map(|o| Sink::parse_output(o))
        .collect::<Result<Vec<_>>>()?;
    if let Some(p) = &a.push {
        sinks.push(Sink::parse_push(p)?);
    }
    let mut ctx = a.project.context(!a.json && !a.plan)?;
    ctx.insecure_registries = a.insecure.clone();
    ctx.will_build = !a.plan;
    let planned = build::plan(&ctx, build::Inputs::read(&request)?)?;
    if a.plan {
        let plan = planned.plan(&ctx);
        print_json(&plan)?;
        for w in &plan.warnings {
            eprintln!("warning: {}", crate::core::text::escape_controls(w));
        }
        return Ok(0);
    }
    let built = build::build(&ctx, &planned)?;
    let report = build::deliver(&ctx, &planned, built, &sinks, false, a.sbom.as_ref())?;
    if a.json {
        print_json(&report)?;
    } else {
        print_report(&report)?;
    }
    Ok(0)
}

/// Builds a project given where an image is expected (`run DIR`, `push
/// DIR`) with the defaults, and says so unless `quiet`.
pub(super) fn project_image(ctx: &Context, dir: &Path, quiet: bool) -> Result<BuildReport> {
    let request = build::Request {
        dir: dir.to_path_buf(),
        ..Default::default()
    };
    let planned: Planned = build::plan(ctx, build::Inputs::read(&request)?)?;
    let built = build::build(ctx, &planned)?;
    let report = build::deliver(ctx, &planned, built, &[], false, None)?;
    if !quiet {
        eprintln!("built {} ({})", report.name, report.digest);
    }
    Ok(report)
}

fn print_report(r: &BuildReport) -> Result<()> {
    for w in &r.warnings {
        eprintln!("warning: {}", crate::core::text::escape_controls(w));
    }
    println!("Built {} in {:.2}s", r.name, r.seconds);
    for o in &r.outputs {
        println!("  output  {o}");
    }
    println!("  digest  {}", r.digest);
    println!(
        "  python  {} on {}, {} OS packages, {} Python packages",
        r.python, r.base, r.os_packages, r.python_packages
    );
    if let Some(res) = r.resolved.as_ref().filter(|r| !r.is_empty()) {
        println!("  resolved {}", res.join(" "));
    }
    if let Some(b) = &r.builder {
        if !b.compiled.is_empty() {
            println!("  compiled {} in the builder", b.compiled.join(" "));
        }
        if !b.build_packages.is_empty() {
            println!("  builder  + {}", b.build_packages.join(" "));
        }
    }
    for a in &r.runtime_additions {
        println!("  library  {a}");
    }
    for s in r.stripped.iter().filter(|s| s.files > 0) {
        let instead = match s.added {
            0 => String::new(),
            n => format!(" ({} instead)", human(n)),
        };
        println!(
            "  stripped {} in {} file(s): {}{instead}",
            human(s.bytes),
            s.files,
            s.rule.describe()
        );
    }
    if let Some(n) = &r.named_bytecode {
        println!(
            "  bytecode {} module(s) of {} (named by the app)",
            n.files,
            n.packages.join(", ")
        );
    }
    for i in r.indexes.iter().filter(|i| !i.packages.is_empty()) {
        println!(
            "  index    {} {}: {}",
            escape_controls(&i.name),
            escape_controls(&i.url),
            i.packages.join(" ")
        );
    }
    for s in &r.build_steps {
        println!(
            "  step     {} ({})",
            escape_controls(&s.argv.join(" ")),
            escape_controls(&s.why)
        );
    }
    if let Some(m) = r.sandbox.as_deref().filter(|m| *m != "namespaces") {
        println!("  sandbox  {m} (no user namespaces here: see the README's security section)");
    }
    println!("  cmd     {}", serde_json::to_string(&r.cmd)?);
    println!(
        "  {:<8} {:>12} {:>13}  {:<8} digest",
        "layer", "compressed", "uncompressed", ""
    );
    for l in &r.layers {
        println!(
            "  {:<8} {:>12} {:>13}  {:<8} {}",
            l.name,
            human(l.size),
            human(l.uncompressed_size),
            if l.from_build_cache {
                "registry"
            } else if l.cached {
                "cached"
            } else {
                "built"
            },
            &l.digest[..19]
        );
    }
    println!(
        "  {:<8} {:>12} {:>13}",
        "total",
        human(r.size),
        human(r.uncompressed_size)
    );
    if let Some(s) = &r.sbom {
        let to = s
            .file
            .as_deref()
            .map(|f| format!(" → {f}"))
            .unwrap_or_default();
        println!(
            "  sbom    SPDX 2.3, {} Debian and {} Python packages{to}",
            s.debian_packages, s.python_packages
        );
        for a in &s.attached {
            let how = a
                .fallback_tag
                .as_deref()
                .map(|t| format!(" (tag {t})"))
                .unwrap_or_default();
            println!("          attached as {}{how}", a.digest);
        }
    }
    if let Some(p) = &r.push {
        print_push(p);
    }
    if let Some(c) = &r.build_cache {
        println!(
            "Build cache {}: downloaded {}; {} record(s) pushed ({} uploaded, {} mounted), {} already there",
            c.repository,
            human(c.downloaded_bytes),
            c.published.records,
            human(c.published.uploaded_bytes),
            human(c.published.mounted_bytes),
            c.published.present
        );
    }
    Ok(())
}

pub(super) fn print_push(p: &PushReport) {
    println!("Pushed {}", p.reference);
    for t in &p.tags {
        println!("  tag     {t}");
    }
    for b in &p.blobs {
        let what = match &b.action {
            BlobAction::Skipped => "exists".to_string(),
            BlobAction::Mounted { from } => format!("mounted from {from}"),
            BlobAction::Uploaded => "uploaded".into(),
        };
        println!(
            "  {:<7} {} {:>10}  {what}",
            b.kind,
            &b.digest[..19],
            human(b.size)
        );
    }
    println!("  {} in {:.2}s", p.summary(), p.seconds);
}
