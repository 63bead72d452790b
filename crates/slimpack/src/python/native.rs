//! Which system libraries the venv's compiled code needs: the ELF `NEEDED`
//! entries of every shared object, less what the venv bundles itself
//! (auditwheel's `*.libs/`, `RPATH`/`RUNPATH` with `$ORIGIN`, or another
//! object of the venv) and less what the runtime already has. What remains
//! is mapped to Debian packages, so the runtime gets `libpq5` because
//! psycopg2's extension links `libpq.so.5`, and nothing it does not need.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use slimpack_debian::ContentsIndex;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

/// A library an object of the venv links that the venv does not bundle.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Needed {
    pub soname: String,
    /// The first object (path relative to site-packages) that needs it.
    pub needed_by: String,
}

/// A Debian package added to the runtime, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Addition {
    pub package: String,
    pub soname: String,
    pub needed_by: String,
}

impl std::fmt::Display for Addition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} needed by {} → {}",
            self.soname, self.needed_by, self.package
        )
    }
}

struct Object {
    rel: String,
    dir: PathBuf,
    links: Links,
}

/// What an ELF object says of its linking.
pub struct Links {
    pub soname: Option<String>,
    /// Its `NEEDED` libraries.
    pub needed: Vec<String>,
    /// Its `RPATH` and `RUNPATH` directories.
    pub search: Vec<String>,
}

/// The linking of an ELF object; None for anything that does not parse as
/// ELF (other architectures, test fixtures: the loader would not load
/// them either).
pub fn links(bytes: &[u8]) -> Option<Links> {
    if !bytes.starts_with(b"\x7fELF") {
        return None;
    }
    let elf = goblin::elf::Elf::parse(bytes).ok()?;
    Some(Links {
        soname: elf.soname.map(str::to_string),
        needed: elf.libraries.iter().map(|s| s.to_string()).collect(),
        search: elf
            .rpaths
            .iter()
            .chain(elf.runpaths.iter())
            .flat_map(|r| r.split(':'))
            .map(str::to_string)
            .collect(),
    })
}

fn is_elf(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == *b"\x7fELF"
}

/// Libraries needed by the shared objects under `site` that nothing in
/// `site` provides, each with the first object needing it.
pub fn unbundled(site: &Path) -> Result<Vec<Needed>> {
    let mut objects = Vec::new();
    // Every file name in the venv, and every SONAME an object declares.
    let mut provided: HashSet<String> = HashSet::new();
    let mut libs_dirs: Vec<PathBuf> = Vec::new();
    for e in walkdir::WalkDir::new(site)
        .sort_by_file_name()
        .into_iter()
        .filter_map(|e| e.ok())
    {
        let p = e.path();
        if e.file_type().is_dir() && p.to_string_lossy().ends_with(".libs") {
            libs_dirs.push(p.to_path_buf());
        }
        // Links (`libfoo.so.1` → `libfoo.so.1.2`) are found by name below;
        // only the files themselves are read, and never through a link that
        // could point outside the venv.
        if !e.file_type().is_file() || !is_elf(p) {
            continue;
        }
        let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
        let rel = p
            .strip_prefix(site)
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned();
        let Some(links) = links(&bytes) else {
            continue;
        };
        if let Some(so) = &links.soname {
            provided.insert(so.clone());
        }
        objects.push(Object {
            rel,
            dir: p.parent().unwrap_or(site).to_path_buf(),
            links,
        });
    }
    let mut first: BTreeMap<String, String> = BTreeMap::new();
    for o in &objects {
        for lib in &o.links.needed {
            if provided.contains(lib) {
                continue;
            }
            let in_search = o.links.search.iter().any(|d| {
                let d = d
                    .replace("$ORIGIN", &o.dir.to_string_lossy())
                    .replace("${ORIGIN}", &o.dir.to_string_lossy());
                Path::new(&d).join(lib).exists()
            });
            let in_libs = libs_dirs.iter().any(|d| d.join(lib).exists());
            if in_search || in_libs {
                continue;
            }
            first.entry(lib.clone()).or_insert_with(|| o.rel.clone());
        }
    }
    Ok(first
        .into_iter()
        .map(|(soname, needed_by)| Needed { soname, needed_by })
        .collect())
}

/// Directories the dynamic loader searches by default, inside a merged-/usr root.
const LOADER_DIRS: &[&str] = &[
    "usr/lib/x86_64-linux-gnu",
    "usr/lib",
    "usr/lib64",
    "usr/local/lib",
];

/// Does the root file system at `root` have the library?
pub fn in_root(root: &Path, soname: &str) -> bool {
    LOADER_DIRS.iter().any(|d| {
        crate::sandbox::resolve_in_root(root, &format!("{d}/{soname}")).is_some_and(|p| p.is_file())
    })
}

/// Debian 13 renamed many library packages `…t64` (the 64-bit time_t
/// transition); later releases keep the names.
pub fn renamed_t64(suite: slimpack_debian::Suite) -> bool {
    use slimpack_debian::Suite;
    matches!(suite, Suite::Trixie | Suite::Forky)
}

/// The Debian packages a library's name says provide it, by Debian's
/// library package naming (`libpq.so.5` → `libpq5`, `libgssapi_krb5.so.2`
/// → `libgssapi-krb5-2`), most likely first; from Debian 13 on, the
/// `t64` renamings too. Only a guess: the caller verifies it against the
/// packages' own files before trusting it.
pub fn package_candidates(soname: &str, suite: slimpack_debian::Suite) -> Vec<String> {
    const EXCEPTIONS: &[(&str, &str)] = &[
        ("libz.so.1", "zlib1g"),
        ("libgcc_s.so.1", "libgcc-s1"),
        ("libcrypto.so.3", "libssl3"),
        ("libssl.so.3", "libssl3"),
        ("libglib-2.0.so.0", "libglib2.0-0"),
        ("libgobject-2.0.so.0", "libglib2.0-0"),
        ("libgio-2.0.so.0", "libglib2.0-0"),
        ("libgthread-2.0.so.0", "libglib2.0-0"),
        ("libgmodule-2.0.so.0", "libglib2.0-0"),
        ("libjpeg.so.62", "libjpeg62-turbo"),
        ("libGL.so.1", "libgl1"),
    ];
    let base = match EXCEPTIONS.iter().find(|(s, _)| *s == soname) {
        Some((_, p)) => p.to_string(),
        None => {
            let Some((name, version)) = soname.split_once(".so.") else {
                return Vec::new();
            };
            let name = name.to_ascii_lowercase().replace('_', "-");
            let version = version.split('.').next().unwrap_or(version);
            if name.ends_with(|c: char| c.is_ascii_digit()) {
                format!("{name}-{version}")
            } else {
                format!("{name}{version}")
            }
        }
    };
    if matches!(
        suite,
        slimpack_debian::Suite::Trixie | slimpack_debian::Suite::Forky
    ) {
        vec![base.clone(), format!("{base}t64")]
    } else {
        vec![base]
    }
}

/// Maps needed libraries to the packages providing them. A library no
/// package provides is an error that names it and what needs it.
pub fn packages_for(
    needs: &[Needed],
    contents: &ContentsIndex,
    suite: &str,
) -> Result<Vec<Addition>> {
    let mut out = Vec::new();
    let mut unknown = Vec::new();
    for n in needs {
        match contents.library_package(&n.soname, "x86_64-linux-gnu") {
            Some(p) => out.push(Addition {
                package: p.to_string(),
                soname: n.soname.clone(),
                needed_by: n.needed_by.clone(),
            }),
            None => unknown.push(format!("{} (needed by {})", n.soname, n.needed_by)),
        }
    }
    if !unknown.is_empty() {
        return Err(crate::core::errors::hinted(
            format!(
                "no Debian {suite} package provides {}; the image would fail to load it.",
                unknown.join(", ")
            ),
            "install a wheel that bundles it, or add the package that provides it under `packages`",
        ));
    }
    Ok(out)
}

/// The package names of `additions`, each once, in order.
pub fn package_names(additions: &[Addition]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    additions
        .iter()
        .filter(|a| seen.insert(a.package.clone()))
        .map(|a| a.package.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_package_names() {
        use slimpack_debian::Suite;
        assert_eq!(
            package_candidates("libpq.so.5", Suite::Bookworm),
            ["libpq5"]
        );
        assert_eq!(
            package_candidates("libgssapi_krb5.so.2", Suite::Bookworm),
            ["libgssapi-krb5-2"]
        );
        assert_eq!(package_candidates("libz.so.1", Suite::Bookworm), ["zlib1g"]);
        assert_eq!(
            package_candidates("libssl.so.3", Suite::Trixie),
            ["libssl3", "libssl3t64"]
        );
        assert_eq!(
            package_candidates("libmariadb.so.3", Suite::Bookworm),
            ["libmariadb3"]
        );
        assert!(package_candidates("weird", Suite::Bookworm).is_empty());
    }

    /// The host's own shared objects are real ELF files to test against.
    fn host_lib(name: &str) -> Option<PathBuf> {
        ["/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu"]
            .iter()
            .map(|d| Path::new(d).join(name))
            .find(|p| p.is_file())
    }

    #[test]
    fn finds_what_is_not_bundled() {
        // libz stands in for an extension module: it links only libc.
        let (Some(libz), Some(libc)) = (host_lib("libz.so.1"), host_lib("libc.so.6")) else {
            eprintln!("skipping: no host libz/libc");
            return;
        };
        let d = tempfile::tempdir().unwrap();
        let site = d.path();
        std::fs::create_dir_all(site.join("pkg")).unwrap();
        std::fs::copy(&libz, site.join("pkg/_ext.so")).unwrap();
        let needs = unbundled(site).unwrap();
        assert_eq!(
            needs,
            vec![Needed {
                soname: "libc.so.6".into(),
                needed_by: "pkg/_ext.so".into()
            }]
        );
        // Bundled the auditwheel way: satisfied.
        std::fs::create_dir_all(site.join("pkg.libs")).unwrap();
        std::fs::copy(&libc, site.join("pkg.libs/libc.so.6")).unwrap();
        let needs = unbundled(site).unwrap();
        // libc's own NEEDED (the loader) is what is left.
        assert!(needs.iter().all(|n| n.soname != "libc.so.6"), "{needs:?}");
        // Text files and non-ELF data are ignored.
        std::fs::write(site.join("pkg/__init__.py"), "x = 1\n").unwrap();
        std::fs::write(site.join("pkg/fake.so"), b"\x7fELFnot really").unwrap();
        assert!(unbundled(site).is_ok());
    }

    #[test]
    fn maps_to_packages_or_names_the_missing() {
        let idx =
            ContentsIndex::parse("usr/lib/x86_64-linux-gnu/libpq.so.5   libs/libpq5\n".as_bytes())
                .unwrap();
        let n = |s: &str| Needed {
            soname: s.into(),
            needed_by: "psycopg2/_psycopg.so".into(),
        };
        let a = packages_for(&[n("libpq.so.5")], &idx, "bookworm").unwrap();
        assert_eq!(
            a[0].to_string(),
            "libpq.so.5 needed by psycopg2/_psycopg.so → libpq5"
        );
        let e = packages_for(&[n("libnope.so.9")], &idx, "bookworm")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("libnope.so.9") && e.contains("psycopg2/_psycopg.so"),
            "{e}"
        );
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("usr/lib/x86_64-linux-gnu")).unwrap();
        std::fs::write(root.path().join("usr/lib/x86_64-linux-gnu/libz.so.1"), "").unwrap();
        assert!(in_root(root.path(), "libz.so.1"));
        assert!(!in_root(root.path(), "libpq.so.5"));
    }
}
