//! slimpack: a Python web app into a small, reproducible OCI image, with no
//! Docker daemon.
//!
//! The pipeline is the architecture: [`project`] detects the app, [`plan`]
//! decides what goes in which layer, [`base`] builds the runtime from signed
//! Debian packages, [`python`] installs dependencies with uv into a venv,
//! [`sandbox`] runs the image's own interpreter under bwrap, and
//! [`build`] assembles the OCI image (through `slimpack-oci`).

pub mod base;
pub mod build;
pub mod cache;
pub mod cli;
pub mod config;
pub mod deploy;
pub mod dockerfile;
pub mod google;
pub mod http;
pub mod plan;
pub mod project;
pub mod python;
pub mod registry;
pub mod report;
pub mod run;
pub mod sandbox;

/// The first executable file called `name` on PATH.
pub(crate) fn which(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
