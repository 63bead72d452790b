//! What the runtime leaves out once its packages are assembled, by rules a
//! project can turn off (`no-strip`), as the venv's are:
//!
//! - `libraries`: shared libraries that no program, extension module or
//!   plugin of the runtime links, directly or through another library
//!   (glibc's `libmvec`, ncurses' form and menu libraries, expat's wide
//!   variant…). Kept whatever links them: what glibc loads by itself (name
//!   service modules, `libgcc_s`), what manylinux wheels may link without
//!   bundling it, and every library of a package asked for by name
//!   (`packages`, or added because the venv links one of its libraries).
//! - `stdlib-sources`: the standard library ships as bytecode only, each
//!   module's `.pyc` where its `.py` was (the layout of CPython's
//!   embeddable distribution). Every module stays importable and is never
//!   compiled at start; what is lost is the source line under a stdlib
//!   frame in a traceback and `inspect.getsource` of stdlib objects. The
//!   venv then carries no stdlib bytecode of its own.

use crate::core::cache::{Cache, CacheDir, KeyHasher, RecordKind};
use crate::core::progress::Progress;
use crate::python::native::{links, Links};
use crate::python::strip::{Applied, Rule, Stripped};
use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use slimpack_oci::{Entry, EntryKind, Layer, LayerBuilder};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

/// Where Debian keeps the libraries the loader finds by default.
const LIB_DIR: &str = "usr/lib/x86_64-linux-gnu";

/// Libraries kept though nothing in the runtime links them: what glibc
/// loads itself (`dlopen`), and what the manylinux policy lets a wheel
/// link from the system.
const ALWAYS_KEPT: &[&str] = &[
    "ld-linux-x86-64.so.2",
    "libc.so.6",
    "libm.so.6",
    "libdl.so.2",
    "librt.so.1",
    "libpthread.so.0",
    "libutil.so.1",
    "libresolv.so.2",
    "libnsl.so.1",
    "libcrypt.so.1",
    "libgcc_s.so.1",
    "libstdc++.so.6",
    "libz.so.1",
    "libnss_files.so.2",
    "libnss_dns.so.2",
];

/// A library the rule may leave out: a file directly in [`LIB_DIR`].
fn is_candidate(path: &str) -> bool {
    path.strip_prefix(LIB_DIR)
        .and_then(|rest| rest.strip_prefix('/'))
        .is_some_and(|name| !name.contains('/') && name.contains(".so"))
}

/// Takes out the libraries in [`LIB_DIR`] that nothing links (see the
/// module's documentation); `kept` are paths never taken out.
pub(super) fn unlinked_libraries(b: &mut LayerBuilder, kept: &BTreeSet<String>) -> Stripped {
    let mut objects: BTreeMap<String, Links> = BTreeMap::new();
    for (path, e) in b.iter() {
        if let EntryKind::Bytes(data) = &e.kind {
            if let Some(o) = links(data) {
                objects.insert(path.to_string(), o);
            }
        }
    }
    let name_of = |path: &str, o: &Links| {
        o.soname
            .clone()
            .unwrap_or_else(|| path.rsplit('/').next().unwrap_or(path).to_string())
    };
    // Each library by the name others link it by.
    let mut by_name: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for (path, o) in &objects {
        if is_candidate(path) {
            by_name.entry(name_of(path, o)).or_default().push(path);
        }
    }
    let mut needed: BTreeSet<String> = ALWAYS_KEPT.iter().map(|s| s.to_string()).collect();
    let mut queue: Vec<&str> = objects
        .iter()
        .filter(|(path, o)| {
            !is_candidate(path) || kept.contains(*path) || needed.contains(&name_of(path, o))
        })
        .map(|(path, _)| path.as_str())
        .collect();
    let mut seen: BTreeSet<&str> = queue.iter().copied().collect();
    while let Some(path) = queue.pop() {
        for lib in &objects[path].needed {
            needed.insert(lib.clone());
            for p in by_name.get(lib).into_iter().flatten() {
                if seen.insert(p) {
                    queue.push(p);
                }
            }
        }
    }
    let gone: Vec<String> = by_name
        .iter()
        .filter(|(name, _)| !needed.contains(*name))
        .flat_map(|(_, paths)| paths.iter().map(|p| p.to_string()))
        .filter(|p| !kept.contains(p))
        .collect();
    let mut out = Stripped::default();
    let gone_names: BTreeSet<&str> = gone.iter().filter_map(|p| p.rsplit('/').next()).collect();
    for p in &gone {
        if let Some(Entry {
            kind: EntryKind::Bytes(data),
            ..
        }) = b.remove(p)
        {
            out.files += 1;
            out.bytes += data.len() as u64;
        }
    }
    // The links to them (`libfoo.so.1` → `libfoo.so.1.2.3`) would dangle.
    let links: Vec<String> = b
        .iter()
        .filter(|(p, e)| {
            is_candidate(p)
                && matches!(&e.kind, EntryKind::Symlink(t)
                    if gone_names.contains(t.rsplit('/').next().unwrap_or(t)))
        })
        .map(|(p, _)| p.to_string())
        .collect();
    for l in links {
        b.remove(&l);
    }
    out
}

/// The standard library's sources replaced by their bytecode, compiled by
/// the runtime's own interpreter (`interpreter`, `stdlib`: image paths).
/// The bytecode depends only on the sources and the interpreter: it is
/// cached by them, so adding a library to a runtime compiles nothing.
pub(super) fn stdlib_bytecode(
    b: &mut LayerBuilder,
    interpreter: &str,
    stdlib: &str,
    cache: &Cache,
    progress: &Progress,
) -> Result<Applied> {
    let dir = format!("{}/", stdlib.trim_start_matches('/'));
    let key = stdlib_key(b, interpreter, &dir);
    let pycs = match cache.get::<Layer>(RecordKind::StdlibBytecode, &key) {
        Some(layer) if cache.blobs.contains(&layer.digest) => read_layer(cache, &layer)?,
        _ => {
            let sp = progress.spinner("Compiling the standard library".into());
            let pycs = compile(b, interpreter, stdlib, cache)?;
            let mut l = LayerBuilder::new();
            for (path, data) in &pycs {
                l.add(path, Entry::bytes(0o644, data.clone()))?;
            }
            let layer = l.write(&cache.blobs, crate::core::time::DEFAULT_EPOCH)?;
            cache.put(RecordKind::StdlibBytecode, &key, &layer)?;
            sp.finish_and_clear();
            pycs
        }
    };
    Ok(replace_sources(b, &dir, pycs))
}

/// Each `.py` in `dir` that has its `.pyc` in `pycs` gives way to it; links
/// to such sources (`_sysconfigdata_….py`) become links to the bytecode.
fn replace_sources(b: &mut LayerBuilder, dir: &str, pycs: Vec<(String, Vec<u8>)>) -> Applied {
    let mut applied = Stripped::default().by(Rule::StdlibSources);
    let compiled: BTreeSet<String> = pycs.iter().map(|(p, _)| p.clone()).collect();
    for (pyc, data) in pycs {
        let source = &pyc[..pyc.len() - 1];
        if let Some(Entry {
            kind: EntryKind::Bytes(src),
            ..
        }) = b.remove(source)
        {
            applied.files += 1;
            applied.bytes += src.len() as u64;
        }
        applied.added += data.len() as u64;
        // Paths came from this builder's own entries: always valid.
        let _ = b.add(&pyc, Entry::bytes(0o644, data));
    }
    let links: Vec<(String, String)> = b
        .iter()
        .filter_map(|(p, e)| match &e.kind {
            EntryKind::Symlink(t)
                if p.starts_with(dir)
                    && p.ends_with(".py")
                    && !t.contains('/')
                    && compiled.contains(&format!(
                        "{}/{t}c",
                        p.rsplit_once('/').map_or("", |(d, _)| d)
                    )) =>
            {
                Some((p.to_string(), format!("{t}c")))
            }
            _ => None,
        })
        .collect();
    for (link, target) in links {
        b.remove(&link);
        let _ = b.add(&format!("{link}c"), Entry::symlink(target));
    }
    applied
}

/// The sources and the interpreter, by content.
fn stdlib_key(b: &LayerBuilder, interpreter: &str, dir: &str) -> String {
    let mut h = KeyHasher::new(RecordKind::StdlibBytecode.as_str());
    // v2: compiled by `python::bytecode`'s shared compiling script.
    h.part("policy", "v2").part("interpreter", interpreter);
    let digest = |data: &[u8]| hex::encode(Sha256::digest(data));
    for (path, e) in b.iter() {
        let is_source = path.starts_with(dir) && path.ends_with(".py");
        if !is_source && path != interpreter.trim_start_matches('/') {
            continue;
        }
        match &e.kind {
            EntryKind::Bytes(data) => h.part(path, digest(data)),
            EntryKind::Symlink(t) => h.part(path, format!("-> {t}")),
            _ => h.part(path, "other"),
        };
    }
    h.finish()
}

/// Unpacks the tree in scratch space and compiles its stdlib there.
fn compile(
    b: &LayerBuilder,
    interpreter: &str,
    stdlib: &str,
    cache: &Cache,
) -> Result<Vec<(String, Vec<u8>)>> {
    let work = tempfile::tempdir_in(cache.dir(CacheDir::Work)?)?;
    let root = work.path().join("root");
    crate::sandbox::unpack_tree(&mut b.clone(), &root, crate::core::time::DEFAULT_EPOCH)
        .context("unpacking the runtime to compile its standard library")?;
    let out = work.path().join("out");
    let pycs = crate::python::bytecode::compile_stdlib(&root, interpreter, stdlib, &out)?;
    pycs.iter()
        .map(|pyc| {
            let rel = pyc.trim_start_matches('/');
            let data = std::fs::read(out.join(rel))
                .with_context(|| format!("reading the bytecode {pyc}"))?;
            Ok((rel.to_string(), data))
        })
        .collect()
}

/// The files of a cached layer, in order.
fn read_layer(cache: &Cache, layer: &Layer) -> Result<Vec<(String, Vec<u8>)>> {
    let reader = slimpack_oci::open_layer_checked(&cache.blobs, layer)?;
    let mut ar = tar::Archive::new(reader);
    let mut out = Vec::new();
    for e in ar.entries()? {
        let mut e = e?;
        if e.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = e.path()?.to_string_lossy().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data)?;
        out.push((path, data));
    }
    ar.into_inner().finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 shared object is more than a test needs: the rule is
    /// tested through its graph on real libraries in the end-to-end tests;
    /// here, which paths are candidates and how sources give way.
    #[test]
    fn candidates_are_files_directly_in_the_library_directory() {
        assert!(is_candidate("usr/lib/x86_64-linux-gnu/libmvec.so.1"));
        assert!(is_candidate("usr/lib/x86_64-linux-gnu/libz.so.1.2.13"));
        assert!(!is_candidate(
            "usr/lib/x86_64-linux-gnu/sasl2/libsasldb.so.2"
        ));
        assert!(!is_candidate(
            "usr/lib/x86_64-linux-gnu/ossl-modules/legacy.so"
        ));
        assert!(!is_candidate("usr/lib/python3.11/lib-dynload/_ssl.so"));
        assert!(!is_candidate("usr/bin/python3.11"));
    }

    /// Real libraries of this Debian machine: python3.11 links libexpat,
    /// nothing links libexpatw or libmvec (a package asked for keeps its own).
    #[test]
    fn libraries_nothing_links_go_with_their_links() {
        let host = |p: &str| std::fs::read(format!("/{p}")).ok();
        let files = [
            "usr/bin/python3.11",
            "usr/lib/x86_64-linux-gnu/libexpat.so.1.8.10",
            "usr/lib/x86_64-linux-gnu/libexpatw.so.1.8.10",
            "usr/lib/x86_64-linux-gnu/libmvec.so.1",
            "usr/lib/x86_64-linux-gnu/libz.so.1.2.13",
        ];
        let mut b = LayerBuilder::new();
        for f in files {
            let Some(data) = host(f) else {
                eprintln!("skipped: /{f} is not on this machine");
                return;
            };
            b.add(f, Entry::bytes(0o755, data)).unwrap();
        }
        b.add(
            "usr/lib/x86_64-linux-gnu/libexpatw.so.1",
            Entry::symlink("libexpatw.so.1.8.10"),
        )
        .unwrap();
        b.add(
            "usr/lib/x86_64-linux-gnu/libexpat.so.1",
            Entry::symlink("/lib/x86_64-linux-gnu/libexpat.so.1.8.10"),
        )
        .unwrap();
        // What does not parse as ELF is not judged, so it stays.
        b.add(
            "usr/lib/x86_64-linux-gnu/libbroken.so.1",
            Entry::bytes(0o644, &b"\x7fELF\x02\x01 not an object"[..]),
        )
        .unwrap();
        let mut asked = b.clone();
        let kept = BTreeSet::from(["usr/lib/x86_64-linux-gnu/libmvec.so.1".to_string()]);
        let gone = unlinked_libraries(&mut b, &BTreeSet::new());
        assert_eq!(gone.files, 2, "{gone:?}");
        let paths: Vec<&str> = b.paths().collect();
        for p in [
            "libexpat.so.1.8.10",
            "libexpat.so.1",
            "libz.so.1.2.13",
            "libbroken.so.1",
        ] {
            assert!(
                paths.contains(&format!("usr/lib/x86_64-linux-gnu/{p}").as_str()),
                "{p}"
            );
        }
        for p in ["libexpatw.so.1.8.10", "libexpatw.so.1", "libmvec.so.1"] {
            assert!(
                !paths.contains(&format!("usr/lib/x86_64-linux-gnu/{p}").as_str()),
                "{p}"
            );
        }
        assert_eq!(unlinked_libraries(&mut asked, &kept).files, 1);
        assert!(asked.contains("usr/lib/x86_64-linux-gnu/libmvec.so.1"));
    }

    #[test]
    fn sources_give_way_to_bytecode_and_links_follow() {
        let mut b = LayerBuilder::new();
        let dir = "usr/lib/python3.11/";
        b.add(
            "usr/lib/python3.11/json/decoder.py",
            Entry::bytes(0o644, "x = 1\n"),
        )
        .unwrap();
        b.add(
            "usr/lib/python3.11/broken.py",
            Entry::bytes(0o644, "def (\n"),
        )
        .unwrap();
        b.add(
            "usr/lib/python3.11/_data_x.py",
            Entry::bytes(0o644, "d = {}\n"),
        )
        .unwrap();
        b.add(
            "usr/lib/python3.11/_data_alias.py",
            Entry::symlink("_data_x.py"),
        )
        .unwrap();
        b.add(
            "usr/lib/python3.11/sitecustomize.py",
            Entry::symlink("/etc/python3.11/sitecustomize.py"),
        )
        .unwrap();
        let pycs = vec![
            ("usr/lib/python3.11/_data_x.pyc".to_string(), vec![1u8; 10]),
            (
                "usr/lib/python3.11/json/decoder.pyc".to_string(),
                vec![2u8; 20],
            ),
        ];
        let applied = replace_sources(&mut b, dir, pycs);
        assert_eq!(
            (applied.files, applied.bytes, applied.added),
            (2, 13, 30),
            "{applied:?}"
        );
        let paths: Vec<&str> = b.paths().collect();
        assert!(paths.contains(&"usr/lib/python3.11/json/decoder.pyc"));
        assert!(!paths.contains(&"usr/lib/python3.11/json/decoder.py"));
        // What did not compile keeps its source.
        assert!(paths.contains(&"usr/lib/python3.11/broken.py"));
        assert!(matches!(
            &b.get("usr/lib/python3.11/_data_alias.pyc").unwrap().kind,
            EntryKind::Symlink(t) if t == "_data_x.pyc"
        ));
        assert!(!paths.contains(&"usr/lib/python3.11/_data_alias.py"));
        // A link out of the stdlib (a configuration file) stays a source.
        assert!(paths.contains(&"usr/lib/python3.11/sitecustomize.py"));
    }
}
