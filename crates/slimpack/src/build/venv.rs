//! The venv stage: the lock installed into /opt/venv (from wheels, or in
//! the builder), the system libraries its compiled code links added to the
//! runtime, bytecode compiled by the image's own interpreter. Its record is
//! cached by [`key`]: same lock, Python, platform and runtime, no rebuild.

use super::runtime::RuntimeBase;
use crate::base::debian;
use crate::builder;
use crate::core::cache::{CacheDir, KeyHasher, RecordKind};
use crate::python::strip::Rule;
use crate::python::{self, bytecode, native};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use slimpack_oci::{add_tree, Entry, Layer, LayerBuilder};
use std::path::{Path, PathBuf};

// v5: debug sections stripped from the venv's shared objects.
// v6: venv bytecode for traced imports; tests and stubs stripped.
// v7: walked packages compiled whole.
// v9: no stdlib bytecode where the runtime ships the stdlib as bytecode.
// v10: wheels installed on the host beside the builder, which compiles only
// what has none.
// v11: the builder compiles with the interpreter's flags (-O2 -DNDEBUG) and
// -g0 added by its sitecustomize, instead of CFLAGS=-g0 in their place.
// v12: the import trace in two processes (`bytecode::TRACE_SHARDS`).
const VENV_POLICY: &str = "venv-v12";
const OPAQUE_VENV: &str = "opt/venv/.wh..wh..opq";

/// The venv layer and what building it decided about the rest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VenvRecord {
    pub layer: slimpack_oci::Layer,
    pub runtime_additions: Vec<native::Addition>,
    pub builder: Option<builder::Built>,
    pub bytecode: Option<bytecode::Compiled>,
    /// What each strip rule took out.
    #[serde(default)]
    pub stripped: Vec<python::strip::Applied>,
    /// The venv's top-level modules (what an app's code can name).
    #[serde(default)]
    pub modules: Vec<String>,
}

/// How the venv is made smaller: which bytecode, which strip rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub bytecode: bytecode::Mode,
    /// The rules applied (every rule but those the project turned off).
    pub strip: Vec<python::strip::Rule>,
}

impl Options {
    pub fn new(bytecode: bytecode::Mode, no_strip: &[python::strip::Rule]) -> Options {
        Options {
            bytecode,
            strip: python::strip::Rule::ALL
                .into_iter()
                .filter(|r| !no_strip.contains(r))
                .collect(),
        }
    }

    pub fn strips(&self, r: python::strip::Rule) -> bool {
        self.strip.contains(&r)
    }
}

/// Everything the venv layer is made from.
pub fn key(req: &builder::Request, runtime: &RuntimeBase, opts: &Options) -> String {
    let mut h = KeyHasher::new(RecordKind::VenvLayer.as_str());
    h.part("policy", VENV_POLICY)
        .part("lock", &req.lock.text)
        .part("python", &req.target.version)
        .part("platform", &req.target.platform)
        .part("bytecode", opts.bytecode.as_str())
        .part("uv", &req.uv.version)
        .part("mtime", req.mtime.to_string());
    for p in req.no_binary {
        h.part("no-binary", p);
    }
    for r in &opts.strip {
        h.part("strip", r.as_str());
    }
    for p in req.build_packages {
        h.part("build-package", p);
    }
    for l in req.local {
        h.part("local-package", &l.path)
            .part("local-digest", &l.digest);
    }
    for g in &req.lock.vcs {
        h.part("vcs", g);
    }
    // Only when there is one: every other venv keeps its key.
    if let Some(p) = req.app_package {
        h.part(
            "app-package",
            serde_json::to_string(p).expect("plain data serializes"),
        );
    }
    // The interpreter compiles the bytecode: another build of the same
    // version is another venv. Only when there is one: Debian keys stay.
    if let Some(p) = &req.spec.standalone {
        h.part("standalone", &p.download.sha256);
    }
    runtime.key_part(&mut h);
    h.finish()
}

/// The cached record for `key`, if its layer's blob is still there.
pub fn cached(req: &builder::Request, key: &str) -> Option<VenvRecord> {
    req.cache
        .get::<VenvRecord>(RecordKind::VenvLayer, key)
        .filter(|r| req.cache.has_blob(&r.layer.digest))
}

/// The runtime layer for the base packages plus `additions`.
pub fn runtime_with(
    req: &builder::Request,
    resolved: &debian::Resolved,
    additions: &[native::Addition],
) -> Result<(debian::Runtime, bool)> {
    let (spec, resolved) = resolved_with(req, resolved, additions)?;
    debian::build(&spec, resolved, req.cache, req.mtime, req.progress)
}

/// The root of the runtime with `additions`, its layer not needed.
pub fn root_with(
    req: &builder::Request,
    resolved: &debian::Resolved,
    additions: &[native::Addition],
) -> Result<PathBuf> {
    let (spec, resolved) = resolved_with(req, resolved, additions)?;
    debian::root(&spec, &resolved, req.cache, req.mtime, req.progress)
}

/// The base packages plus `additions`, resolved.
fn resolved_with(
    req: &builder::Request,
    resolved: &debian::Resolved,
    additions: &[native::Addition],
) -> Result<(debian::BaseSpec, debian::Resolved)> {
    if additions.is_empty() {
        return Ok((req.spec.clone(), resolved.clone()));
    }
    let spec = req.spec.with_packages(&native::package_names(additions));
    let resolved = debian::resolve(&spec, req.cache, req.refresh, req.progress)?;
    Ok((spec, resolved))
}

/// Builds the venv layer: installs the lock (from wheels, or in the builder),
/// adds to the runtime the libraries its compiled code links, and compiles
/// bytecode with that runtime's interpreter.
pub fn build(req: &builder::Request, runtime: &RuntimeBase, opts: &Options) -> Result<VenvRecord> {
    let work = tempfile::tempdir_in(req.cache.dir(CacheDir::Work)?)?;
    let venv_dir = work.path().join("venv");
    let site = python::site_dir(&venv_dir, req.target);
    let built = std::thread::scope(|s| {
        // The runtime without additions (its root, cached) is what the
        // venv's libraries are checked against after the install; made
        // meanwhile, it overlaps the install's downloads and the builder.
        // Errors show again, in order, where the root is used.
        s.spawn(|| {
            let quiet = crate::core::progress::Progress::hidden();
            let _ = runtime.root(
                &builder::Request {
                    progress: &quiet,
                    ..*req
                },
                &[],
            );
        });
        install(req, runtime, &site, work.path())
    })?;
    python::local::install(req.project_dir, req.local, req.target, req.uv, &venv_dir)?;
    python::local::install_vcs(&req.lock.vcs, req.target, req.uv, &venv_dir)?;
    python::finish_venv(&venv_dir, req.target)?;
    let mut stripped = Vec::new();
    if opts.strips(Rule::Debug) {
        stripped.push(python::strip::strip_debug(&venv_dir)?.by(Rule::Debug));
    }
    if let Some(p) = req.app_package {
        python::install_app_package(&venv_dir, req.target, p)?;
    }
    let (root, additions) = match runtime {
        RuntimeBase::Debian(resolved) => native_additions(req, resolved, &site)?,
        RuntimeBase::Registry(b) => {
            registry_base_has_libraries(req, b, &site)?;
            (b.root.clone(), Vec::new())
        }
    };
    let modules = bytecode::top_level_modules(&site);
    let pyc_dir = work.path().join("pyc");
    let (compiled, more) = strip_and_compile(req, opts, &root, &venv_dir, &pyc_dir, &modules)?;
    stripped.extend(more);
    let mut b = LayerBuilder::new();
    add_tree(&mut b, &venv_dir, "opt/venv")?;
    if crate::sandbox::exists_in_root(&root, "opt/venv") {
        // The base's own venv must not show through ours.
        b.add(OPAQUE_VENV, Entry::bytes(0o644, Vec::new()))?;
    }
    // The stdlib's bytecode, beside it wherever the interpreter keeps its
    // stdlib (/usr for Debian's, /opt/python for a standalone one, another
    // path in a registry base).
    add_mirrored(&mut b, &pyc_dir)?;
    Ok(VenvRecord {
        layer: write_and_unpack(req, b)?,
        runtime_additions: additions,
        builder: built,
        bytecode: compiled,
        stripped,
        modules,
    })
}

/// Writes the venv layer and, meanwhile, the cache's unpacked copy of it
/// from the same files: the named packages' bytecode and the app's steps
/// run with the venv unpacked, which would otherwise decompress the layer
/// just written. Without the copy (it failed), they unpack the layer.
fn write_and_unpack(req: &builder::Request, b: LayerBuilder) -> Result<Layer> {
    let staging = tempfile::Builder::new()
        // Swept like any unpacking a killed build left.
        .prefix(".unpack-venv-")
        .tempdir_in(req.cache.dir(CacheDir::Rootfs)?)?;
    let unpacked = staging.path().join("root");
    let mut tree = b.clone();
    let (layer, copied) = std::thread::scope(|s| {
        let copy = s.spawn(|| crate::sandbox::unpack_tree(&mut tree, &unpacked, req.mtime));
        let layer = b.write(&req.cache.blobs, req.mtime);
        (layer, copy.join())
    });
    let layer = layer?;
    if let Ok(Ok(())) = copied {
        let _ = crate::sandbox::keep_unpacked(req.cache, &layer, &unpacked);
    }
    Ok(layer)
}

/// Starts building, in the background, the runtime the venv will most
/// likely need, while the builder compiles: the libraries compiled code
/// links are known only once it is built. The guess: the Debian package
/// of each library the wheels link (by Debian's naming, as
/// [`guessed_additions`] tries first), and the library packages of the
/// builder's `-dev` packages (psycopg2: libpq-dev → libpq5). When the
/// build links something else, the runtime it needs is built then, as
/// without the guess.
fn prepare_expected_runtime(
    req: &builder::Request,
    resolved: &debian::Resolved,
    wheels: &Path,
    from_source: &[String],
) {
    let in_runtime = |p: &String| resolved.packages.iter().any(|r| &r.name == p);
    // The runtime without additions, built meanwhile (see `build`).
    let Ok(base_root) = root_with(req, resolved, &[]) else {
        return;
    };
    let mut expected: Vec<String> = needs_beyond(req, &base_root, wheels)
        .unwrap_or_default()
        .iter()
        .filter_map(|n| {
            native::package_candidates(&n.soname, req.spec.suite)
                .into_iter()
                .next()
        })
        .collect();
    let dev = builder::build_packages_for(req.build_packages, from_source);
    expected.extend(debian::libraries_of(req.spec, req.cache, &dev).unwrap_or_default());
    expected.retain(|p| !in_runtime(p));
    expected.sort();
    expected.dedup();
    if expected.is_empty() {
        return;
    }
    let spec = req.spec.with_packages(&expected);
    let quiet = crate::core::progress::Progress::hidden();
    if let Ok(resolved) = debian::resolve(&spec, req.cache, req.refresh, &quiet) {
        debian::prepare(
            &spec,
            &resolved,
            req.cache,
            req.mtime,
            debian::Prepare::RootAndLayer,
        );
    }
}

/// Traces what the dependencies import, takes out what the strip rules say
/// (test suites only with the trace, which tells which are imported), and
/// compiles the bytecode: in the venv, and the stdlib's into `pyc_dir`.
fn strip_and_compile(
    req: &builder::Request,
    opts: &Options,
    root: &Path,
    venv_dir: &Path,
    pyc_dir: &Path,
    modules: &[String],
) -> Result<(Option<bytecode::Compiled>, Vec<python::strip::Applied>)> {
    let site = python::site_dir(venv_dir, req.target);
    let sp = req
        .progress
        .spinner("Compiling bytecode with the image's interpreter".into());
    let mut stripped = Vec::new();
    let traced = match opts.bytecode {
        bytecode::Mode::Imports => bytecode::trace(root, venv_dir, pyc_dir, req.target, modules)?,
        _ => Vec::new(),
    };
    if opts.strips(Rule::Tests) && opts.bytecode == bytecode::Mode::Imports {
        let prefix = format!("/opt/venv/lib/python{}/site-packages/", req.target.minor);
        let imported = traced
            .iter()
            .filter_map(|t| t.strip_prefix(&prefix))
            .map(str::to_string)
            .collect();
        stripped.push(python::strip::strip_tests(&site, &imported)?.by(Rule::Tests));
    }
    if opts.strips(Rule::Stubs) {
        stripped.push(python::strip::strip_stubs(&site)?.by(Rule::Stubs));
    }
    let compiled = match opts.bytecode {
        bytecode::Mode::None => None,
        mode => Some(bytecode::compile(
            root,
            venv_dir,
            pyc_dir,
            req.target,
            bytecode::Compiling {
                mode,
                positions: !opts.strips(Rule::Positions),
            },
            &traced,
            modules,
        )?),
    };
    sp.finish_and_clear();
    Ok((compiled, stripped))
}

/// Adds `dir`, a tree that mirrors the image's paths, at the image's root.
pub(super) fn add_mirrored(b: &mut LayerBuilder, dir: &Path) -> Result<()> {
    let mut tops: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    tops.sort();
    for top in tops {
        add_tree(b, &dir.join(&top), &top)?;
    }
    Ok(())
}

/// Installs the lock into `site`: from wheels, and in the builder what has
/// none. Returns what the builder did, when it ran.
fn install(
    req: &builder::Request,
    runtime: &RuntimeBase,
    site: &Path,
    work: &Path,
) -> Result<Option<builder::Built>> {
    if !req.lock.source_builds.is_empty() {
        return install_beside_builder(req, runtime, site, work, &req.lock.source_builds).map(Some);
    }
    let sp = req.progress.spinner(format!(
        "Installing {} Python packages",
        req.lock.packages.len()
    ));
    let r = python::install_wheels(req.lock, req.target, req.uv, site);
    sp.finish_and_clear();
    match r {
        Ok(()) => Ok(None),
        // A lock exported from uv.lock can name a package with no wheel:
        // the builder compiles it.
        Err(e) => match e.downcast_ref::<python::uv::MissingWheels>() {
            Some(missing) => {
                install_beside_builder(req, runtime, site, work, &missing.packages).map(Some)
            }
            None => Err(e),
        },
    }
}

/// The builder compiles `from_source` while the rest of the lock is
/// installed from wheels here, as without a builder; the compiled files
/// join them after. Once the wheels are in, the runtime the venv will need
/// starts building ([`prepare_expected_runtime`]).
fn install_beside_builder(
    req: &builder::Request,
    runtime: &RuntimeBase,
    site: &Path,
    work: &Path,
    from_source: &[String],
) -> Result<builder::Built> {
    let resolved = match runtime {
        RuntimeBase::Debian(resolved) => resolved,
        RuntimeBase::Registry(b) => bail!(
            "{} must be compiled from source (no wheel for {}), and compiling on a registry base ({}) is not supported yet; use a Debian base (debian:trixie, debian:bookworm) or a version with wheels",
            from_source.join(", "),
            req.target.platform,
            b.reference
        ),
    };
    let compiled = work.join("compiled");
    let sources = req.lock.only(from_source);
    let wheels = req.lock.without(from_source);
    let install = || python::install_wheels(&wheels, req.target, req.uv, site);
    // A chroot builder takes the uv cache into its root for the run
    // (`sandbox::chroot` moves its binds): the host's install, which reads
    // that cache, goes first instead of beside it.
    let first = match crate::sandbox::mode()? {
        crate::sandbox::Mode::Chroot => Some(install()),
        _ => None,
    };
    let built = std::thread::scope(|s| {
        let compiling = s.spawn(|| {
            let only = builder::Request {
                lock: &sources,
                ..*req
            };
            builder::install(&only, &compiled, from_source)
        });
        let installed = first.unwrap_or_else(install);
        if installed.is_ok() {
            prepare_expected_runtime(req, resolved, site, from_source);
        }
        let built = compiling
            .join()
            .map_err(|_| anyhow::anyhow!("the builder's thread panicked"))?;
        installed.and(built)
    })?;
    // Both installs leave one: not part of the venv.
    let _ = std::fs::remove_file(compiled.join(python::uv::TARGET_LOCK));
    merge_into(&compiled, site)?;
    Ok(built)
}

/// Moves the tree `from` into `to`, directory by directory.
fn merge_into(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dest = to.join(e.file_name());
        if e.file_type()?.is_dir() && dest.is_dir() {
            merge_into(&e.path(), &dest)?;
        } else if dest.symlink_metadata().is_ok() {
            bail!(
                "{} is both in a wheel and in what the builder compiled",
                dest.display()
            );
        } else {
            std::fs::rename(e.path(), &dest)?;
        }
    }
    Ok(())
}

/// A registry base gets no packages added: it must have every library.
fn registry_base_has_libraries(
    req: &builder::Request,
    b: &crate::base::registry::RegistryBase,
    site: &Path,
) -> Result<()> {
    let missing: Vec<String> = native::unbundled(site)?
        .into_iter()
        .filter(|n| !native::in_root(&b.root, &n.soname))
        .map(|n| format!("{} (needed by {})", n.soname, n.needed_by))
        .collect();
    if !missing.is_empty() {
        bail!(
            "the base image {} lacks {}; slimpack adds system libraries only to Debian bases: use debian:{} or a base image that has them",
            b.reference,
            missing.join(", "),
            req.spec.suite.codename()
        );
    }
    Ok(())
}

/// The additions Debian's library package naming gives, when the packages
/// exist and their own files (the verified `.deb`s, as unpacked) provide
/// every library needed: the `Contents` index (12 MB, and where a mirror is
/// inconsistent, unobtainable) is then not needed. None when a guess fails.
fn guessed_additions(
    req: &builder::Request,
    resolved: &debian::Resolved,
    needs: &[native::Needed],
) -> Result<Option<(PathBuf, Vec<native::Addition>)>> {
    let candidates: Vec<Vec<String>> = needs
        .iter()
        .map(|n| native::package_candidates(&n.soname, req.spec.suite))
        .collect();
    if candidates.iter().any(Vec::is_empty) {
        return Ok(None);
    }
    // Which candidate of each is tried; an unknown package moves to the next.
    let mut pick = vec![0usize; needs.len()];
    for _ in 0..4 {
        let additions: Vec<native::Addition> = needs
            .iter()
            .zip(&candidates)
            .zip(&pick)
            .map(|((n, c), i)| native::Addition {
                package: c[*i].clone(),
                soname: n.soname.clone(),
                needed_by: n.needed_by.clone(),
            })
            .collect();
        match root_with(req, resolved, &additions) {
            Ok(root) => {
                let all = needs.iter().all(|n| native::in_root(&root, &n.soname));
                return Ok(all.then_some((root, additions)));
            }
            Err(e) => {
                let Some(unknown) = e.downcast_ref::<debian::UnknownPackage>() else {
                    return Err(e);
                };
                let mut moved = false;
                for ((c, i), _) in candidates.iter().zip(pick.iter_mut()).zip(needs) {
                    if c[*i] == unknown.package && *i + 1 < c.len() {
                        *i += 1;
                        moved = true;
                    }
                }
                if !moved {
                    return Ok(None);
                }
            }
        }
    }
    Ok(None)
}

/// The Debian packages the venv's compiled code needs beyond the runtime,
/// and the root of the runtime with them.
fn native_additions(
    req: &builder::Request,
    resolved: &debian::Resolved,
    site: &Path,
) -> Result<(PathBuf, Vec<native::Addition>)> {
    let (cache, progress) = (req.cache, req.progress);
    let base_root = root_with(req, resolved, &[])?;
    let needs = needs_beyond(req, &base_root, site)?;
    if needs.is_empty() {
        return Ok((base_root, Vec::new()));
    }
    if let Some(found) = guessed_additions(req, resolved, &needs)? {
        return Ok(found);
    }
    let contents = debian::contents(req.spec, cache, progress)?;
    let additions = native::packages_for(&needs, &contents, req.spec.suite.codename())?;
    let root = root_with(req, resolved, &additions)?;
    let still: Vec<String> = needs
        .iter()
        .filter(|n| !native::in_root(&root, &n.soname))
        .map(|n| format!("{} (needed by {})", n.soname, n.needed_by))
        .collect();
    if !still.is_empty() {
        bail!(
            "the runtime still lacks {} after adding {}; add the package that provides it under `packages`",
            still.join(", "),
            native::package_names(&additions).join(", ")
        );
    }
    Ok((root, additions))
}

/// The libraries the compiled code in `site` links that the runtime at
/// `base_root` lacks, by soname.
fn needs_beyond(
    req: &builder::Request,
    base_root: &Path,
    site: &Path,
) -> Result<Vec<native::Needed>> {
    let mut needs: Vec<native::Needed> = native::unbundled(site)?;
    if req.spec.standalone.is_some() {
        // A standalone Python needs only glibc, as released; what a build of
        // it links beyond that is added like the venv's own needs.
        let prefix = crate::base::standalone::PREFIX;
        needs.extend(
            native::unbundled(&base_root.join(prefix))?
                .into_iter()
                .map(|n| native::Needed {
                    needed_by: format!("/{prefix}/{}", n.needed_by),
                    ..n
                }),
        );
    }
    let mut needs: Vec<native::Needed> = needs
        .into_iter()
        .filter(|n| !native::in_root(base_root, &n.soname))
        .collect();
    needs.sort_by(|a, b| a.soname.cmp(&b.soname));
    needs.dedup_by(|a, b| a.soname == b.soname);
    Ok(needs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the builder compiled joins the wheels directory by directory;
    /// a file both have (a wheel and a compiled package claiming one path)
    /// is an error naming it, never a silent overwrite.
    #[test]
    fn compiled_files_join_the_wheels_and_a_clash_is_an_error() {
        let site = tempfile::tempdir().unwrap();
        let compiled = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(site.path().join("bin")).unwrap();
        std::fs::write(site.path().join("bin/uvicorn"), "wheel").unwrap();
        std::fs::create_dir_all(compiled.path().join("bin")).unwrap();
        std::fs::write(compiled.path().join("bin/pg"), "compiled").unwrap();
        std::fs::create_dir_all(compiled.path().join("psycopg2")).unwrap();
        std::fs::write(compiled.path().join("psycopg2/__init__.py"), "").unwrap();
        merge_into(compiled.path(), site.path()).unwrap();
        for f in ["bin/uvicorn", "bin/pg", "psycopg2/__init__.py"] {
            assert!(site.path().join(f).is_file(), "{f}");
        }

        let again = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(again.path().join("bin")).unwrap();
        std::fs::write(again.path().join("bin/uvicorn"), "compiled").unwrap();
        let err = merge_into(again.path(), site.path()).unwrap_err();
        assert!(err.to_string().contains("bin/uvicorn"), "{err}");
        assert_eq!(
            std::fs::read_to_string(site.path().join("bin/uvicorn")).unwrap(),
            "wheel"
        );
    }
}
