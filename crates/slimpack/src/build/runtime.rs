//! The runtime stage: which base the image stands on (signed Debian
//! packages, or a registry image with its own Python), the interpreter it
//! gives, and its layers. Everything that differs between the two kinds
//! of base is a method here, so the pipeline never matches on it.

use super::plan::{BasePlan, OsPackage};
use super::Context;
use crate::base::{self, debian, registry::RegistryBase};
use crate::builder;
use crate::core::cache::KeyHasher;
use crate::project::{pyproject, Project};
use crate::python::{native, Target};
use crate::settings::Config;
use anyhow::{bail, Result};
use slimpack_oci::Layer;

/// Where the image's runtime (Python and the system below it) comes from.
pub enum RuntimeBase {
    /// Signed Debian packages, resolved.
    Debian(debian::Resolved),
    /// A registry image, pulled and unpacked.
    Registry(Box<RegistryBase>),
}

/// The base chosen, the interpreter it gives and why.
pub struct Selected {
    pub base: RuntimeBase,
    pub target: Target,
    /// The Debian packages' source: the runtime's, or (registry base) the
    /// release that goes with its Python, for builder and library names.
    pub spec: debian::BaseSpec,
    pub why: String,
}

/// The runtime's layers as built or reused, and how to describe them.
pub struct RuntimeLayers {
    /// (name, layer, reused from the cache)
    pub layers: Vec<(String, Layer, bool)>,
    pub description: String,
    pub os_packages: usize,
    /// What the runtime's strip rules took out (a registry base: nothing).
    pub stripped: Vec<crate::python::strip::Applied>,
}

/// Picks the base from the configuration and the project's Python request
/// and resolves it: the runtime first, because the venv is built for its
/// exact interpreter and glibc.
pub fn select(ctx: &Context, cfg: &Config, project: &Project) -> Result<Selected> {
    let registry_base = match base::registry_base(cfg.base.as_deref())? {
        Some(r) => {
            let insecure = crate::registry::is_insecure(&r, &ctx.insecure_registries);
            Some(base::registry::prepare(
                &r,
                insecure,
                &ctx.cache,
                &ctx.progress,
            )?)
        }
        None => None,
    };
    let choice = match &registry_base {
        Some(b) => base::Choice {
            suite: base::suite_for_python(&b.target.minor),
            standalone: None,
            why: registry_python(cfg, b)?,
        },
        None => base::choose(
            cfg.base.as_deref(),
            cfg.python.as_deref(),
            project.python_request.as_ref(),
            cfg.python_source.unwrap_or_default(),
            cfg.python_mirror.as_deref(),
        )?,
    };
    let (suite, why) = (choice.suite, choice.why);
    let spec = debian::BaseSpec {
        suite,
        mirror: trimmed(cfg.mirror.as_deref(), debian::DEFAULT_MIRROR),
        security_mirror: trimmed(
            cfg.security_mirror.as_deref(),
            debian::DEFAULT_SECURITY_MIRROR,
        ),
        extra_packages: cfg.packages.clone(),
        purpose: debian::Purpose::Runtime,
        tools: cfg.packages.clone(),
        standalone: choice.standalone,
        check_valid_until: cfg.check_valid_until.unwrap_or(true),
        no_strip: cfg
            .no_strip
            .iter()
            .copied()
            .filter(|r| r.is_runtime())
            .collect(),
    };
    let (base, target) = match registry_base {
        Some(b) => {
            let t = b.target.clone();
            (RuntimeBase::Registry(Box::new(b)), t)
        }
        None => {
            let resolved = debian::resolve(&spec, &ctx.cache, ctx.refresh, &ctx.progress)?;
            let mut t = target_of(&spec, &resolved);
            if let Some(p) = spec.standalone.as_ref().filter(|_| t.freethreaded) {
                t.host_interpreter = Some(base::standalone::host_interpreter(
                    p,
                    &ctx.cache,
                    &ctx.progress,
                )?);
            }
            (RuntimeBase::Debian(resolved), t)
        }
    };
    let selected = Selected {
        base,
        target,
        spec,
        why,
    };
    selected.check_request(project)?;
    Ok(selected)
}

/// The interpreter a resolved Debian runtime gives: Debian's, or the
/// standalone build under /opt/python.
fn target_of(spec: &debian::BaseSpec, resolved: &debian::Resolved) -> Target {
    match &spec.standalone {
        None => Target::debian(
            spec.suite.python(),
            &resolved.python_version,
            &resolved.glibc_version,
        ),
        Some(p) => Target {
            minor: p.download.abi_name(),
            version: p.download.version.clone(),
            platform: crate::python::platform_for_glibc(&resolved.glibc_version),
            interpreter: p.interpreter(),
            stdlib: p.stdlib(),
            freethreaded: p.download.freethreaded,
            host_interpreter: None,
        },
    }
}

fn trimmed(configured: Option<&str>, default: &str) -> String {
    configured
        .unwrap_or(default)
        .trim_end_matches('/')
        .to_string()
}

/// Why the registry base's Python, or the error when another was asked for.
fn registry_python(cfg: &Config, b: &RegistryBase) -> Result<String> {
    if let Some(p) = cfg.python.as_deref() {
        if base::minor_of(p).as_deref() != Some(b.target.minor.as_str()) {
            bail!(
                "Python {p} was asked for, but the base image {} has Python {}",
                b.reference,
                b.target.version
            );
        }
    }
    Ok(format!(
        "Python {} of the base image {}",
        b.target.version, b.reference
    ))
}

impl Selected {
    /// The project's own Python request must hold for what the base gives.
    fn check_request(&self, project: &Project) -> Result<()> {
        let Some((req, origin)) = &project.python_request else {
            return Ok(());
        };
        let exact = req.trim().starts_with(|c: char| c.is_ascii_digit());
        let ok = if exact {
            // Exact minors were matched to a Debian suite already; a
            // registry base has the Python it has.
            !matches!(self.base, RuntimeBase::Registry(_))
                || base::minor_of(req).as_deref() == Some(self.target.minor.as_str())
        } else {
            pyproject::python_satisfies(req, &self.target.version)
        };
        if !ok {
            bail!(
                "{origin} asks for Python {req:?}, but the {} base gives {}",
                self.name(),
                self.target.version
            );
        }
        Ok(())
    }

    /// Adds the system packages the dependencies call or load (with their
    /// programs) to a Debian runtime, resolving it again; a registry base
    /// must have them already.
    pub fn add_tools(
        &mut self,
        ctx: &Context,
        needs: &[crate::python::system::SystemNeed],
        warnings: &mut Vec<String>,
    ) -> Result<()> {
        let packages: Vec<String> = needs.iter().flat_map(|n| n.packages.clone()).collect();
        if packages.is_empty() {
            return Ok(());
        }
        if let RuntimeBase::Registry(b) = &self.base {
            for n in needs {
                warnings.push(format!(
                    "{} {}: slimpack adds {} only to Debian bases; make sure the base image {} has it",
                    n.dist,
                    n.why,
                    n.packages.join(", "),
                    b.reference
                ));
            }
            return Ok(());
        }
        self.spec = self.spec.with_packages(&packages);
        for p in packages {
            if !self.spec.tools.contains(&p) {
                self.spec.tools.push(p);
            }
        }
        let resolved = debian::resolve(&self.spec, &ctx.cache, ctx.refresh, &ctx.progress)?;
        self.target = target_of(&self.spec, &resolved);
        self.base = RuntimeBase::Debian(resolved);
        Ok(())
    }

    /// The base as asked for: `debian:trixie`, or the registry reference.
    pub fn name(&self) -> String {
        match &self.base {
            RuntimeBase::Registry(b) => b.reference.to_string(),
            RuntimeBase::Debian(_) => format!("debian:{}", self.spec.suite.codename()),
        }
    }
}

impl RuntimeBase {
    /// Stdlib bytecode is unchecked-hash: the venv must be rebuilt
    /// whenever the runtime's sources could have changed.
    pub fn key_part(&self, h: &mut KeyHasher) {
        match self {
            RuntimeBase::Debian(resolved) => h.part(
                "runtime",
                resolved
                    .packages
                    .iter()
                    .map(|p| format!("{}={}\n", p.name, p.sha256))
                    .collect::<String>(),
            ),
            RuntimeBase::Registry(b) => h
                .part("base-image", b.pinned.to_string())
                .part("interpreter", &b.target.interpreter),
        };
    }

    pub fn plan(&self, name: &str, spec: &debian::BaseSpec) -> BasePlan {
        match self {
            RuntimeBase::Debian(resolved) => BasePlan {
                name: name.to_string(),
                release: resolved.release_version.clone(),
                mirror: spec.mirror.clone(),
                security_mirror: spec.security_mirror.clone(),
                roots: spec.roots(),
                packages: resolved
                    .packages
                    .iter()
                    .map(|p| OsPackage {
                        name: p.name.clone(),
                        version: p.version.clone(),
                        archive: p.origin.clone(),
                        sha256: p.sha256.clone(),
                    })
                    .collect(),
                skipped: resolved.skipped.clone(),
                standalone: spec.standalone.clone(),
            },
            // A registry base has no Debian resolution to show.
            RuntimeBase::Registry(b) => BasePlan {
                name: b.pinned.to_string(),
                release: String::new(),
                mirror: String::new(),
                security_mirror: String::new(),
                roots: Vec::new(),
                packages: Vec::new(),
                skipped: Vec::new(),
                standalone: None,
            },
        }
    }

    /// The runtime layer's line in the plan.
    pub fn contents(&self, target: &Target, suite: slimpack_debian::Suite) -> String {
        match self {
            RuntimeBase::Debian(resolved) => format!(
                "Python {} and {} Debian {} packages",
                target.version,
                resolved.packages.len(),
                suite.codename()
            ),
            RuntimeBase::Registry(b) => format!(
                "the {} layers of {} (Python {} at {})",
                b.image.layers.len(),
                b.pinned,
                target.version,
                target.interpreter
            ),
        }
    }

    /// The base image has an /app of its own, which ours replaces.
    pub fn has_app(&self) -> bool {
        match self {
            RuntimeBase::Registry(b) => crate::sandbox::exists_in_root(&b.root, "app"),
            RuntimeBase::Debian(_) => false,
        }
    }

    /// A registry base's digest, as the OCI base label.
    pub fn digest_label(&self) -> Option<String> {
        match self {
            RuntimeBase::Registry(b) => Some(b.pinned.digest.clone().unwrap_or_default()),
            RuntimeBase::Debian(_) => None,
        }
    }

    /// A registry base's own environment stays, under ours.
    pub fn merge_env(&self, env: Vec<String>) -> Vec<String> {
        let RuntimeBase::Registry(b) = self else {
            return env;
        };
        let ours: Vec<String> = env
            .iter()
            .filter_map(|e| e.split_once('=').map(|(k, _)| format!("{k}=")))
            .collect();
        let mut merged: Vec<String> = b
            .env
            .iter()
            .filter(|e| !ours.iter().any(|k| e.starts_with(k.as_str())))
            .cloned()
            .collect();
        merged.extend(env);
        merged
    }

    /// The image history line of runtime layer `i`.
    pub fn history(&self, i: usize, target: &Target, suite: slimpack_debian::Suite) -> String {
        match self {
            RuntimeBase::Debian(_) => format!(
                "slimpack: runtime, Debian {} Python {}",
                suite.codename(),
                target.version
            ),
            RuntimeBase::Registry(b) => format!("base image {} layer {}", b.pinned, i + 1),
        }
    }

    /// The unpacked root of the runtime with `additions`, where the image's
    /// interpreter runs at build time.
    pub fn root(
        &self,
        req: &builder::Request,
        additions: &[native::Addition],
    ) -> Result<std::path::PathBuf> {
        match self {
            RuntimeBase::Debian(resolved) => super::venv::root_with(req, resolved, additions),
            RuntimeBase::Registry(b) => Ok(b.root.clone()),
        }
    }

    /// The runtime's layers, with the packages the venv's compiled code
    /// needs added to a Debian runtime.
    pub fn layers(
        &self,
        req: &builder::Request,
        additions: &[native::Addition],
    ) -> Result<RuntimeLayers> {
        Ok(match self {
            RuntimeBase::Debian(resolved) => {
                let (runtime, cached) = super::venv::runtime_with(req, resolved, additions)?;
                RuntimeLayers {
                    layers: vec![("runtime".into(), runtime.layer.clone(), cached)],
                    // Testing has no release number.
                    description: match runtime.resolved.release_version.as_str() {
                        "" => format!("Debian testing ({})", req.spec.suite.codename()),
                        v => format!("Debian {v} ({})", req.spec.suite.codename()),
                    },
                    os_packages: runtime.resolved.packages.len(),
                    stripped: runtime.stripped.clone(),
                }
            }
            RuntimeBase::Registry(b) => RuntimeLayers {
                layers: b
                    .image
                    .layers
                    .iter()
                    .map(|l| ("base".to_string(), l.clone(), true))
                    .collect(),
                description: b.pinned.to_string(),
                os_packages: 0,
                stripped: Vec::new(),
            },
        })
    }
}
