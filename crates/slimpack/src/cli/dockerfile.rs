//! `slimpack dockerfile`.

use super::{ImageFlags, ProjectFlags};
use crate::build;
use crate::dockerfile::emit;
use anyhow::Result;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub(super) struct DockerfileArgs {
    /// The project directory; the files are written into it.
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// Runtime stage: slim (the builder's python image) or distroless.
    #[arg(long, value_enum, hide_possible_values = true, default_value_t = emit::Runtime::Slim)]
    runtime: emit::Runtime,
    /// The Python image for the stages (default python:X.Y-slim-RELEASE from
    /// the plan); a digest-pinned reference is best.
    #[arg(long)]
    python_image: Option<String>,
    /// The uv image the builder copies uv from (default
    /// ghcr.io/astral-sh/uv:VERSION, the uv slimpack uses).
    #[arg(long)]
    uv_image: Option<String>,
    /// Overwrite existing files without asking.
    #[arg(long)]
    force: bool,
    /// Print the Dockerfile on stdout and write nothing.
    #[arg(long)]
    stdout: bool,
    #[command(flatten)]
    project: ProjectFlags,
    #[command(flatten)]
    image: ImageFlags,
}

pub(super) fn run(a: DockerfileArgs) -> Result<i32> {
    let opts = emit::GenerateOptions {
        build: build::Request {
            dir: a.dir.clone(),
            overrides: a.project.overrides(Some(&a.image))?,
            locked: false,
        },
        runtime: a.runtime,
        python_image: a.python_image.clone(),
        uv_image: a.uv_image.clone(),
    };
    let ctx = a
        .project
        .context(!a.stdout || std::io::stderr().is_terminal())?;
    let (_, files) = emit::generate(&ctx, &opts)?;
    if a.stdout {
        print!("{}", files.dockerfile);
        return Ok(0);
    }
    let interactive = std::io::stdin().is_terminal();
    let written = emit::write(&a.dir, &files, |path| {
        if a.force {
            return Ok(true);
        }
        if !interactive {
            return Ok(false);
        }
        ask_overwrite(path)
    })?;
    for (name, what) in written {
        let verb = match what {
            emit::Written::Created => "wrote",
            emit::Written::Replaced => "replaced",
            emit::Written::Unchanged => "unchanged",
        };
        println!("{verb:>9}  {}", a.dir.join(name).display());
    }
    Ok(0)
}

fn ask_overwrite(path: &Path) -> Result<bool> {
    eprint!(
        "{} exists and would change. Overwrite? [y/N] ",
        path.display()
    );
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}
