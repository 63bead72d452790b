//! The build plan: every decision made before any layer is built, printable
//! as JSON (`slimpack build --plan`).

use crate::project::entrypoint::StartCommand;
use crate::python::{LockedPackage, Target};
use serde::Serialize;
use slimpack_oci::ImageSpec;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub project: ProjectPlan,
    pub python: PythonPlan,
    pub base: BasePlan,
    pub dependencies: DependencyPlan,
    pub start: StartCommand,
    pub image: ImageConfig,
    pub layers: Vec<LayerPlan>,
    /// Commands run at build time (Django's collectstatic, `build-steps`):
    /// what they write joins the app layer.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub build_steps: Vec<crate::build::steps::Step>,
    /// How build steps run the image's programs on this machine: in bwrap's
    /// namespaces, bwrap as root without a user namespace, or chroot.
    pub sandbox: String,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProjectPlan {
    pub dir: String,
    pub name: String,
    pub dependencies_from: String,
    pub locked: bool,
    pub config: Option<String>,
    pub app_files: usize,
    pub left_out_secrets: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PythonPlan {
    #[serde(flatten)]
    pub target: Target,
    pub chosen_because: String,
    pub interpreter: String,
    pub bytecode: String,
    /// The strip rules applied to the image (`no-strip` turns one off).
    pub strip: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BasePlan {
    pub name: String,
    pub release: String,
    pub mirror: String,
    pub security_mirror: String,
    pub roots: Vec<String>,
    pub packages: Vec<OsPackage>,
    /// Dependencies left out by policy (what only maintainer scripts need).
    pub skipped: Vec<String>,
    /// The python-build-standalone release file, when the interpreter is
    /// not Debian's: where it came from and the SHA-256 it was checked against.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub standalone: Option<crate::base::standalone::Pinned>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DependencyPlan {
    pub how: String,
    /// The uv version that resolves and installs them.
    pub uv: String,
    pub groups: Vec<String>,
    pub packages: Vec<LockedPackage>,
    /// The exact hash-pinned requirements that will be installed.
    pub lock: String,
    /// Packages compiled from source in the builder stage (no usable wheel,
    /// or named in `no-binary`).
    pub source_builds: Vec<String>,
    /// The builder's `-dev` packages to start with (configured and
    /// well-known); more may be added from the Contents index if a build
    /// misses a file. Empty when nothing is built from source.
    pub build_packages: Vec<String>,
    /// System libraries the venv's compiled code needs, added to the
    /// runtime. Known once the venv has been built (`null` before).
    pub runtime_libraries: Option<Vec<crate::python::native::Addition>>,
    /// Debian packages added because a dependency calls or loads them
    /// (slimpack's table; `no-system-packages` turns an entry off).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub system_packages: Vec<crate::python::system::SystemNeed>,
    /// The project's own packages, built from these paths.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub local_packages: Vec<String>,
    /// Git requirements, each pinned to a commit.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub git: Vec<String>,
    /// The package indexes, in the order uv searches them, when the
    /// project or the environment declares any (PyPI alone otherwise).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub indexes: Vec<IndexPlan>,
}

/// One package index: where it was declared, how its credentials are
/// found (never what they are), and what comes from it.
#[derive(Debug, Clone, Serialize)]
pub struct IndexPlan {
    pub name: String,
    pub url: String,
    pub kind: crate::project::indexes::Kind,
    pub declared_in: String,
    pub credentials: String,
    /// Packages pinned to it: they never come from another index, so a
    /// package of the same name elsewhere (PyPI) cannot replace them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pinned: Vec<String>,
    /// What a pin guarantees, said where there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guard: Option<String>,
    /// Packages the resolution took from it.
    pub packages: Vec<String>,
}

impl IndexPlan {
    /// Every declared index, and PyPI when it is still searched.
    pub fn all(
        access: &crate::python::index::Access,
        origins: &BTreeMap<String, String>,
    ) -> Vec<IndexPlan> {
        use crate::project::indexes::{Kind, PYPI};
        let indexes = access.indexes();
        if indexes.is_empty() {
            return Vec::new();
        }
        let from = |url: &str| -> Vec<String> {
            origins
                .iter()
                .filter(|(_, u)| u.as_str() == url)
                .map(|(p, _)| p.clone())
                .collect()
        };
        let mut out: Vec<IndexPlan> = indexes
            .indexes
            .iter()
            .map(|i| {
                let pinned: Vec<String> = indexes
                    .pins
                    .iter()
                    .filter(|(_, n)| **n == i.name)
                    .map(|(p, _)| p.clone())
                    .collect();
                IndexPlan {
                    name: i.name.clone(),
                    url: i.url.clone(),
                    kind: i.kind,
                    declared_in: i.origin.clone(),
                    credentials: access.describe(i),
                    guard: (!pinned.is_empty()).then(|| {
                        "the pinned packages come from this index only: a package of the same name on another index (PyPI) is never taken instead".to_string()
                    }),
                    pinned,
                    packages: from(&i.url),
                }
            })
            .collect();
        if !indexes.indexes.iter().any(|i| i.kind == Kind::Default) {
            out.push(IndexPlan {
                name: "pypi".into(),
                url: PYPI.into(),
                kind: Kind::Default,
                declared_in: "uv's default".into(),
                credentials: "none".into(),
                pinned: Vec::new(),
                guard: None,
                packages: from(PYPI),
            });
        }
        out
    }
}

/// The image's configuration, decided once: the plan shows it and the
/// image is made from it.
#[derive(Debug, Clone, Serialize)]
pub struct ImageConfig {
    pub user: String,
    pub workdir: String,
    pub env: Vec<String>,
    pub port: u16,
    pub cmd: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub created: String,
}

impl ImageConfig {
    /// The OCI configuration, with one history line per layer.
    pub fn spec(&self, history: Vec<String>) -> ImageSpec {
        ImageSpec {
            user: Some(self.user.clone()),
            workdir: Some(self.workdir.clone()),
            env: self.env.clone(),
            entrypoint: Vec::new(),
            cmd: self.cmd.clone(),
            exposed_ports: vec![format!("{}/tcp", self.port)],
            labels: self.labels.clone(),
            annotations: self
                .labels
                .iter()
                .filter(|(k, _)| k.starts_with("org.opencontainers.image."))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            created: Some(self.created.clone()),
            history,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LayerPlan {
    pub name: String,
    pub contents: String,
    /// Hash of everything the layer is made from: same key, same layer.
    pub key: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct OsPackage {
    pub name: String,
    pub version: String,
    pub archive: String,
    pub sha256: String,
}
