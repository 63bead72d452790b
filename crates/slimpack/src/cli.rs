//! The command line: parses flags, calls the library, prints the result.

use crate::build::{self, BuildOptions, Outcome, Output};
use crate::config::{Command as CfgCommand, Config};
use crate::report::human;
use anyhow::{anyhow, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "slimpack",
    version,
    about = "Small, reproducible OCI images of Python web apps, without a Docker daemon"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build an OCI image of the Python web app in DIR.
    Build(BuildArgs),
}

#[derive(clap::Args)]
struct BuildArgs {
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
    /// Python version (3.13 → Debian trixie, 3.11 → Debian bookworm).
    #[arg(long)]
    python: Option<String>,
    /// Runtime base: debian:trixie or debian:bookworm.
    #[arg(long)]
    base: Option<String>,
    /// Start command (exec form; $PORT and other variables are expanded).
    #[arg(long)]
    command: Option<String>,
    /// Port the app listens on (sets PORT and EXPOSE).
    #[arg(long)]
    port: Option<u16>,
    /// Extra Debian package for the runtime. Repeatable.
    #[arg(long = "package")]
    packages: Vec<String>,
    /// KEY=VALUE environment for the image. Repeatable.
    #[arg(long = "env")]
    env: Vec<String>,
    /// KEY=VALUE label. Repeatable.
    #[arg(long = "label")]
    labels: Vec<String>,
    /// User to run as (default 65532:65532).
    #[arg(long)]
    user: Option<String>,
    /// Also install this dependency group or extra (e.g. dev). Repeatable.
    #[arg(long = "with")]
    with: Vec<String>,
    /// Bytecode: imports (default), all, none.
    #[arg(long)]
    bytecode: Option<String>,
    /// Debian mirror for the runtime packages.
    #[arg(long)]
    mirror: Option<String>,
    /// Refuse to build unless the dependencies are locked.
    #[arg(long)]
    locked: bool,
    /// Ask the Debian archive and PyPI again instead of reusing cached resolutions.
    #[arg(long)]
    refresh: bool,
    /// Cache directory (default $SLIMPACK_CACHE or ~/.cache/slimpack).
    #[arg(long, env = "SLIMPACK_CACHE")]
    cache_dir: Option<PathBuf>,
}

fn pairs(items: &[String], flag: &str) -> Result<std::collections::BTreeMap<String, String>> {
    items
        .iter()
        .map(|i| {
            i.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| anyhow!("{flag} {i:?}: expected KEY=VALUE"))
        })
        .collect()
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Build(a) => build_cmd(a),
    }
}

fn build_cmd(a: BuildArgs) -> Result<()> {
    let overrides = Config {
        base: a.base,
        python: a.python,
        command: a.command.map(CfgCommand::Line),
        port: a.port,
        packages: a.packages,
        env: pairs(&a.env, "--env")?,
        labels: pairs(&a.labels, "--label")?,
        user: a.user,
        with: a.with,
        bytecode: a.bytecode,
        mirror: a.mirror,
        security_mirror: None,
    };
    let outputs = a
        .output
        .iter()
        .map(|o| Output::parse(o))
        .collect::<Result<Vec<_>>>()?;
    let opts = BuildOptions {
        dir: a.dir,
        overrides,
        outputs,
        plan_only: a.plan,
        locked: a.locked,
        refresh: a.refresh,
        cache_dir: a.cache_dir,
        progress: !a.json && !a.plan,
    };
    match build::build(&opts)? {
        Outcome::Plan(plan) => {
            println!("{}", serde_json::to_string_pretty(&plan)?);
            for w in &plan.warnings {
                eprintln!("warning: {w}");
            }
        }
        Outcome::Built(r) if a.json => println!("{}", serde_json::to_string_pretty(&r)?),
        Outcome::Built(r) => {
            for w in &r.warnings {
                eprintln!("warning: {w}");
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
            if let Some(res) = &r.resolved {
                println!("  resolved {}", res.join(" "));
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
                    if l.cached { "cached" } else { "built" },
                    &l.digest[..19]
                );
            }
            println!(
                "  {:<8} {:>12} {:>13}",
                "total",
                human(r.size),
                human(r.uncompressed_size)
            );
        }
    }
    Ok(())
}
