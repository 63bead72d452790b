//! Where images live, as go-containerregistry's `remote`, `layout` and
//! `tarball` are places: a [`Source`] is read from, a [`Sink`] written to.
//! Every command that names an image parses it here, once.

use crate::core::cache::Cache;
use crate::core::progress::Progress;
use crate::registry::{self, PushReport, Reference};
use anyhow::{anyhow, bail, Result};
use serde::Deserialize;
use slimpack_oci::{BlobStore, Image, LoadedImage};
use std::path::{Path, PathBuf};

/// Where an image is read from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A project directory: the caller builds it first.
    Project(PathBuf),
    /// An OCI image layout on disk (`oci:DIR[:TAG]` or `DIR[:TAG]`).
    Layout { dir: PathBuf, tag: Option<String> },
    /// `docker-archive:FILE` (`docker save`'s format).
    DockerArchive(PathBuf),
    /// `docker://REF`, or a reference whose first part is a registry host
    /// (`127.0.0.1:5000/app:v1`, `gcr.io/x/y`).
    Registry(Reference),
}

impl Source {
    /// Reads what the user typed, in this order: a project directory, a
    /// docker-archive, `docker://`, a layout, a registry reference.
    pub fn parse(s: &str) -> Result<Source> {
        if is_project_dir(Path::new(s)) {
            return Ok(Source::Project(s.into()));
        }
        if let Some(file) = s.strip_prefix("docker-archive:") {
            return Ok(Source::DockerArchive(file.into()));
        }
        if let Some(r) = s.strip_prefix("docker://") {
            return Ok(Source::Registry(Reference::parse(r)?));
        }
        if let Some((dir, tag)) = layout_ref(s) {
            return Ok(Source::Layout { dir, tag });
        }
        let first = s.split('/').next().unwrap_or("");
        if !s.starts_with("oci:")
            && s.contains('/')
            && !Path::new(s).exists()
            && (first.contains('.') || first.contains(':') || first == "localhost")
        {
            return Ok(Source::Registry(Reference::parse(s)?));
        }
        bail!("{s}: not an OCI image layout, docker-archive:FILE, or registry reference (docker://REF)")
    }

    /// The image's blobs and manifest (pulled into the cache for a
    /// registry). A project must have been built into a place first.
    pub fn load(
        &self,
        cache: &Cache,
        insecure: &[String],
        progress: &Progress,
    ) -> Result<(BlobStore, LoadedImage)> {
        match self {
            Source::Project(dir) => bail!(
                "{}: a project directory, not an image; build it first",
                dir.display()
            ),
            Source::DockerArchive(file) => {
                let img = slimpack_oci::import_docker_archive(file, &cache.blobs)?;
                Ok((cache.blobs.clone(), img))
            }
            Source::Layout { dir, tag } => Ok(slimpack_oci::read_layout(dir, tag.as_deref())?),
            Source::Registry(r) => {
                let insecure = registry::is_insecure(r, insecure);
                let (img, _) = registry::pull(r, insecure, cache, progress)?;
                Ok((cache.blobs.clone(), img))
            }
        }
    }
}

/// What running an image needs of its configuration (the OCI image spec's
/// `config` object), read once into types.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct RunConfig {
    #[serde(rename = "User", default)]
    pub user: Option<String>,
    #[serde(rename = "Env", default)]
    pub env: Option<Vec<String>>,
    #[serde(rename = "Entrypoint", default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    pub working_dir: Option<String>,
}

impl RunConfig {
    pub fn of(image: &LoadedImage) -> Result<RunConfig> {
        match image.config.get("config") {
            None | Some(serde_json::Value::Null) => Ok(RunConfig::default()),
            Some(c) => serde_json::from_value(c.clone())
                .map_err(|e| anyhow!("the image's configuration is malformed: {e}")),
        }
    }

    pub fn env(&self) -> &[String] {
        self.env.as_deref().unwrap_or_default()
    }

    /// Entrypoint then Cmd: what the image runs.
    pub fn argv(&self) -> Vec<String> {
        let mut a = self.entrypoint.clone().unwrap_or_default();
        a.extend(self.cmd.iter().flatten().cloned());
        a
    }

    /// The working directory, `/` when unset.
    pub fn workdir(&self) -> &str {
        self.working_dir
            .as_deref()
            .filter(|w| !w.is_empty())
            .unwrap_or("/")
    }
}

/// A directory that holds a Python project and is not an image layout.
fn is_project_dir(dir: &Path) -> bool {
    dir.is_dir()
        && !dir.join("index.json").exists()
        && (dir.join("requirements.txt").exists() || dir.join("pyproject.toml").exists())
}

/// `oci:DIR[:TAG]` or `DIR[:TAG]` naming an OCI image layout on disk.
pub fn layout_ref(reference: &str) -> Option<(PathBuf, Option<String>)> {
    let rest = reference.strip_prefix("oci:").unwrap_or(reference);
    let (dir, tag) = slimpack_oci::parse_layout_ref(rest);
    if dir.join("index.json").is_file() {
        return Some((dir, tag));
    }
    let whole = PathBuf::from(rest);
    whole.join("index.json").is_file().then_some((whole, None))
}

/// Where an image is written.
#[derive(Debug, Clone, PartialEq)]
pub enum Sink {
    Layout { path: PathBuf, tag: String },
    DockerArchive { path: PathBuf },
    Registry(Reference),
}

/// How to reach registries when a sink is one.
pub struct SinkContext<'a> {
    pub cache: &'a Cache,
    pub progress: &'a Progress,
    /// Registries spoken to over plain HTTP (loopback ones always are).
    pub insecure: &'a [String],
    /// The image's name, for a docker-archive's `NAME:latest`.
    pub name: &'a str,
}

/// What writing to a sink did.
pub enum Written {
    File(String),
    Pushed(PushReport),
}

impl Sink {
    /// A `--output`: `oci:DIR[:TAG]`, `DIR[:TAG]` or `docker-archive:FILE`.
    pub fn parse_output(s: &str) -> Result<Sink> {
        if let Some(p) = s.strip_prefix("docker-archive:") {
            let p = p.split(':').next().unwrap_or(p);
            if p.is_empty() {
                bail!("--output docker-archive: needs a file name");
            }
            return Ok(Sink::DockerArchive { path: p.into() });
        }
        let rest = s.strip_prefix("oci:").unwrap_or(s);
        let (path, tag) = slimpack_oci::parse_layout_ref(rest);
        if path.as_os_str().is_empty() {
            bail!("--output {s:?} names no path");
        }
        Ok(Sink::Layout {
            path,
            tag: tag.unwrap_or_else(|| "latest".into()),
        })
    }

    /// A `--push` reference: `REGISTRY/REPO[:TAG]`.
    pub fn parse_push(s: &str) -> Result<Sink> {
        Ok(Sink::Registry(Reference::parse(s)?))
    }

    /// Where `build` writes when no output is named.
    pub fn default_for(name: &str) -> Sink {
        Sink::Layout {
            path: PathBuf::from("target/slimpack").join(format!("{name}.oci")),
            tag: "latest".into(),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Sink::Layout { path, tag } => format!("oci:{}:{tag}", path.display()),
            Sink::DockerArchive { path } => format!("docker-archive:{}", path.display()),
            Sink::Registry(r) => r.to_string(),
        }
    }

    /// Writes `image` (whose blobs are in the cache) here.
    pub fn write(&self, image: &Image, ctx: &SinkContext) -> Result<Written> {
        let blobs = &ctx.cache.blobs;
        if !matches!(self, Sink::Registry(_)) {
            // A file holds every layer: those the build cache (`--cache`)
            // only named are fetched and checked now.
            for l in &image.layers {
                ctx.cache.ensure_blob(&l.digest)?;
            }
        }
        match self {
            Sink::Layout { path, tag } => slimpack_oci::write_layout(blobs, image, path, tag)?,
            Sink::DockerArchive { path } => {
                refuse_foreign_file(path)?;
                slimpack_oci::write_docker_archive(
                    blobs,
                    image,
                    path,
                    &format!("{}:latest", ctx.name),
                )?
            }
            Sink::Registry(r) => {
                return Ok(Written::Pushed(registry::push(
                    blobs,
                    &image.manifest_digest,
                    r,
                    &[],
                    registry::is_insecure(r, ctx.insecure),
                    ctx.cache,
                    ctx.progress,
                )?))
            }
        }
        Ok(Written::File(self.describe()))
    }
}

/// An existing file is replaced only when it is a docker-archive, as an
/// OCI layout output replaces only a layout: anything else is not ours.
fn refuse_foreign_file(path: &Path) -> Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    let ours = meta.is_file()
        && std::fs::File::open(path).is_ok_and(|f| {
            tar::Archive::new(f)
                .entries()
                .map(|mut es| {
                    es.any(|e| {
                        e.ok().and_then(|e| e.path().ok().map(|p| p.into_owned()))
                            == Some(PathBuf::from("manifest.json"))
                    })
                })
                .unwrap_or(false)
        });
    if !ours {
        bail!(
            "{} exists and is not a docker-archive; refusing to replace it",
            path.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_existing_file_is_replaced_only_when_it_is_an_archive() {
        let d = tempfile::tempdir().unwrap();
        let notes = d.path().join("notes.tar");
        std::fs::write(&notes, "my notes").unwrap();
        let e = refuse_foreign_file(&notes).unwrap_err().to_string();
        assert!(e.contains("not a docker-archive"), "{e}");
        let archive = d.path().join("app.tar");
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "manifest.json", &b"[]"[..]).unwrap();
        std::fs::write(&archive, b.into_inner().unwrap()).unwrap();
        refuse_foreign_file(&archive).unwrap();
        refuse_foreign_file(&d.path().join("new.tar")).unwrap();
    }

    #[test]
    fn outputs_parse() {
        assert!(matches!(
            Sink::parse_output("docker-archive:app.tar").unwrap(),
            Sink::DockerArchive { .. }
        ));
        match Sink::parse_output("oci:out/flask:v1").unwrap() {
            Sink::Layout { path, tag } => {
                assert_eq!(path, PathBuf::from("out/flask"));
                assert_eq!(tag, "v1");
            }
            _ => panic!(),
        }
        match Sink::parse_output("out/flask").unwrap() {
            Sink::Layout { tag, .. } => assert_eq!(tag, "latest"),
            _ => panic!(),
        }
        assert!(Sink::parse_output("docker-archive:").is_err());
        assert!(Sink::parse_push("Bad/Name").is_err());
    }

    #[test]
    fn run_config_is_read_into_types() {
        let image = |config: serde_json::Value| LoadedImage {
            manifest_digest: String::new(),
            config_digest: String::new(),
            config,
            layers: Vec::new(),
        };
        let c = RunConfig::of(&image(serde_json::json!({"config": {
            "User": "65532", "Env": ["A=1"], "Entrypoint": ["python"],
            "Cmd": ["main.py"], "WorkingDir": "", "Labels": {"x": "y"}
        }})))
        .unwrap();
        assert_eq!(c.argv(), vec!["python", "main.py"]);
        assert_eq!(c.env(), ["A=1"]);
        assert_eq!(c.workdir(), "/");
        let c = RunConfig::of(&image(serde_json::json!({"config": {"Cmd": null}}))).unwrap();
        assert!(c.argv().is_empty());
        assert_eq!(
            RunConfig::of(&image(serde_json::json!({}))).unwrap(),
            RunConfig::default()
        );
        let e = RunConfig::of(&image(serde_json::json!({"config": {"Cmd": "sh"}})))
            .unwrap_err()
            .to_string();
        assert!(e.contains("malformed"), "{e}");
    }

    #[test]
    fn sources_parse_in_order() {
        let d = tempfile::tempdir().unwrap();
        let project = d.path().join("app");
        std::fs::create_dir(&project).unwrap();
        std::fs::write(project.join("requirements.txt"), "flask\n").unwrap();
        let p = project.display().to_string();
        assert_eq!(Source::parse(&p).unwrap(), Source::Project(project.clone()));
        // A layout in the same directory wins over the project files.
        std::fs::write(project.join("index.json"), "{}").unwrap();
        assert!(matches!(
            Source::parse(&format!("oci:{p}")).unwrap(),
            Source::Layout { tag: None, .. }
        ));
        assert_eq!(
            Source::parse("docker-archive:x.tar").unwrap(),
            Source::DockerArchive("x.tar".into())
        );
        assert!(matches!(
            Source::parse("127.0.0.1:5000/app:v1").unwrap(),
            Source::Registry(_)
        ));
        assert!(matches!(
            Source::parse("docker://python:3.12-slim").unwrap(),
            Source::Registry(_)
        ));
        let e = Source::parse("nothing-here").unwrap_err().to_string();
        assert!(e.contains("not an OCI image layout"), "{e}");
    }
}
