//! slimpack: a Python web app into a small, reproducible OCI image, with no
//! Docker daemon.
//!
//! The pipeline is the architecture (ARCHITECTURE.md draws it): [`project`]
//! reads the app, [`base`] makes the runtime from signed Debian packages or
//! a registry image, [`python`] installs the dependencies with uv into a
//! venv, [`builder`] compiles what has no wheel, [`build`] plans and
//! assembles the image, [`image`] says where images live; [`run`],
//! [`deploy`] and [`dockerfile`] use the result, and [`cli`] is the thin
//! layer on top. Modules import only modules below them
//! (`tests/architecture.rs` enforces it).

pub mod base;
pub mod build;
pub mod builder;
pub mod cli;
pub mod core;
pub mod deploy;
pub mod dockerfile;
pub mod image;
pub mod inspect;
pub mod project;
pub mod python;
pub mod registry;
pub mod run;
pub mod sandbox;
pub mod settings;
