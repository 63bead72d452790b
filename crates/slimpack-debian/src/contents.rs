//! The archive's `Contents-ARCH` index: which package ships a file. Used to
//! answer "which `-dev` package has `libpq-fe.h`" and "which package
//! provides `libpq.so.5`" from data instead of guesses.
//!
//! The full index is ~150 MB of text; only the parts those questions need
//! (headers, executables, shared libraries, pkg-config files) are kept.

use std::collections::BTreeMap;
use std::io::BufRead;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContentsIndex {
    /// Path without a leading `/` and with merged `/usr` (`lib/x/...` is
    /// stored as `usr/lib/x/...`) → package names.
    files: BTreeMap<String, Vec<String>>,
}

/// Paths worth keeping (after merging `/usr`).
fn wanted(path: &str) -> bool {
    if path.starts_with("usr/include/") || path.starts_with("usr/bin/") {
        return true;
    }
    let Some(rest) = path
        .strip_prefix("usr/lib/x86_64-linux-gnu/")
        .or_else(|| path.strip_prefix("usr/lib/aarch64-linux-gnu/"))
        .or_else(|| path.strip_prefix("usr/lib/"))
        .or_else(|| path.strip_prefix("usr/share/pkgconfig/"))
    else {
        return false;
    };
    if rest.ends_with(".pc") {
        return true;
    }
    // Shared objects directly in a library directory: `libpq.so.5`, `libpq.so`.
    !rest.contains('/') && (rest.ends_with(".so") || rest.contains(".so."))
}

fn merge_usr(path: &str) -> String {
    crate::merged_usr(path).unwrap_or_else(|| format!("usr/{path}"))
}

impl ContentsIndex {
    /// Parses a (decompressed) `Contents-ARCH` file, keeping the paths this
    /// index answers for. Lines are `PATH<spaces>SECTION/PKG,SECTION/PKG`;
    /// paths may contain spaces, so the last field is split off from the right.
    pub fn parse<R: BufRead>(input: R) -> std::io::Result<ContentsIndex> {
        let mut files: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for line in input.lines() {
            let line = line?;
            let Some((path, pkgs)) = line.trim_end().rsplit_once([' ', '\t']) else {
                continue;
            };
            let path = merge_usr(path.trim_end().trim_start_matches('/'));
            if !wanted(&path) {
                continue;
            }
            let entry = files.entry(path).or_default();
            for p in pkgs.split(',') {
                let name = p.rsplit('/').next().unwrap_or(p).to_string();
                if !name.is_empty() && !entry.contains(&name) {
                    entry.push(name);
                }
            }
        }
        Ok(ContentsIndex { files })
    }

    /// Writes the kept part as `PATH\tPKG,PKG` lines (the cache format).
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for (p, pkgs) in &self.files {
            s.push_str(p);
            s.push('\t');
            s.push_str(&pkgs.join(","));
            s.push('\n');
        }
        s
    }

    pub fn from_text(text: &str) -> ContentsIndex {
        let files = text
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(p, pkgs)| (p.to_string(), pkgs.split(',').map(str::to_string).collect()))
            .collect();
        ContentsIndex { files }
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Packages shipping exactly `path` (leading `/` optional, `/usr` merged).
    pub fn packages_of(&self, path: &str) -> &[String] {
        let p = merge_usr(path.trim_start_matches('/'));
        self.files.get(&p).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Paths ending in `/suffix` under `prefix`, with their packages: a header
    /// included as `libpq-fe.h` may live in `usr/include/postgresql/`.
    pub fn find_suffix<'a>(
        &'a self,
        prefix: &'a str,
        suffix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a [String])> + 'a {
        let tail = format!("/{}", suffix.trim_start_matches('/'));
        self.files
            .range(prefix.to_string()..)
            .take_while(move |(p, _)| p.starts_with(prefix))
            .filter(move |(p, _)| p.ends_with(&tail))
            .map(|(p, v)| (p.as_str(), v.as_slice()))
    }

    /// The package providing the shared library `soname` in a directory the
    /// dynamic loader searches by default.
    pub fn library_package(&self, soname: &str, multiarch: &str) -> Option<&str> {
        let dirs = [
            format!("usr/lib/{multiarch}/{soname}"),
            format!("usr/lib/{soname}"),
        ];
        dirs.iter()
            .flat_map(|d| self.packages_of(d))
            .map(String::as_str)
            .min_by_key(|p| rank(p, false))
    }

    /// The package to install for a file a build is missing: a header (by
    /// its name as included), an executable, `-lNAME`, or `NAME.pc`.
    pub fn package_for(&self, need: &Need, multiarch: &str) -> Option<String> {
        let candidates: Vec<&str> = match need {
            Need::Header(h) => {
                let exact = self.packages_of(&format!("usr/include/{h}"));
                if !exact.is_empty() {
                    exact.iter().map(String::as_str).collect()
                } else {
                    self.find_suffix("usr/include/", h)
                        .flat_map(|(_, p)| p.iter().map(String::as_str))
                        .collect()
                }
            }
            Need::Program(p) => self
                .packages_of(&format!("usr/bin/{p}"))
                .iter()
                .map(String::as_str)
                .collect(),
            Need::Library(l) => self
                .packages_of(&format!("usr/lib/{multiarch}/lib{l}.so"))
                .iter()
                .map(String::as_str)
                .collect(),
            Need::PkgConfig(m) => [
                format!("usr/lib/{multiarch}/pkgconfig/{m}.pc"),
                format!("usr/share/pkgconfig/{m}.pc"),
                format!("usr/lib/pkgconfig/{m}.pc"),
            ]
            .iter()
            .flat_map(|p| self.packages_of(p))
            .map(String::as_str)
            .collect(),
        };
        candidates
            .into_iter()
            .min_by_key(|p| rank(p, true))
            .map(str::to_string)
    }
}

/// Preference among packages shipping the same file: real packages over
/// debug, cross and transitional ones; for build needs, `-dev` packages;
/// then the shortest name (the generic one, e.g. `libpq-dev` over
/// `postgresql-server-dev-15`).
fn rank(name: &str, dev: bool) -> (u8, usize, String) {
    let penalty = if name.ends_with("-dbgsym") || name.ends_with("-dbg") {
        3
    } else if name.contains("-cross") || name.starts_with("lib32") || name.starts_with("libx32") {
        2
    } else if dev && !name.ends_with("-dev") {
        1
    } else {
        0
    };
    (penalty, name.len(), name.to_string())
}

/// A file a failed build was missing.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Need {
    /// As written in `#include <...>`: `libpq-fe.h`, `libxml/parser.h`.
    Header(String),
    Program(String),
    /// `-lNAME` the linker did not find.
    Library(String),
    /// A pkg-config module.
    PkgConfig(String),
}

impl std::fmt::Display for Need {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Need::Header(h) => write!(f, "header {h}"),
            Need::Program(p) => write!(f, "program {p}"),
            Need::Library(l) => write!(f, "library -l{l}"),
            Need::PkgConfig(m) => write!(f, "pkg-config module {m}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
bin/abpoa                                               science/abpoa
lib/x86_64-linux-gnu/libc.so.6                          libs/libc6
usr/bin/pg_config                                       libdevel/libpq-dev
usr/include/postgresql/libpq-fe.h                       libdevel/libpq-dev
usr/include/postgresql/15/server/libpq-fe.h             libdevel/postgresql-server-dev-15
usr/include/libxml2/libxml/parser.h                     libdevel/libxml2-dev
usr/lib/x86_64-linux-gnu/libpq.so.5                     libs/libpq5
usr/lib/x86_64-linux-gnu/libpq.so                       libdevel/libpq-dev
usr/lib/x86_64-linux-gnu/libpq.so.5.15                  libs/libpq5
usr/lib/debug/.build-id/aa/bb.debug                     debug/libpq5-dbgsym
usr/lib/x86_64-linux-gnu/pkgconfig/libpq.pc             libdevel/libpq-dev
usr/share/doc/libpq5/copyright                          doc/libpq5
usr/share/My Files/with space.h                         misc/weird
usr/bin/x86_64-linux-gnu-gcc                            devel/gcc,devel/gcc-cross-dummy
";

    #[test]
    fn keeps_what_builds_ask_for() {
        let idx = ContentsIndex::parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(
            idx.packages_of("/lib/x86_64-linux-gnu/libc.so.6"),
            ["libc6"]
        );
        assert_eq!(
            idx.packages_of("usr/lib/x86_64-linux-gnu/libc.so.6"),
            ["libc6"]
        );
        assert!(idx.packages_of("usr/share/doc/libpq5/copyright").is_empty());
        assert!(idx
            .packages_of("usr/lib/debug/.build-id/aa/bb.debug")
            .is_empty());
        assert_eq!(idx.packages_of("usr/bin/abpoa"), ["abpoa"]);
        let m = "x86_64-linux-gnu";
        assert_eq!(idx.library_package("libpq.so.5", m), Some("libpq5"));
        assert_eq!(idx.library_package("libnope.so.1", m), None);
        assert_eq!(
            idx.package_for(&Need::Program("pg_config".into()), m)
                .as_deref(),
            Some("libpq-dev")
        );
        // The generic -dev package wins over the server headers.
        assert_eq!(
            idx.package_for(&Need::Header("libpq-fe.h".into()), m)
                .as_deref(),
            Some("libpq-dev")
        );
        assert_eq!(
            idx.package_for(&Need::Header("libxml/parser.h".into()), m)
                .as_deref(),
            Some("libxml2-dev")
        );
        assert_eq!(
            idx.package_for(&Need::Library("pq".into()), m).as_deref(),
            Some("libpq-dev")
        );
        assert_eq!(
            idx.package_for(&Need::PkgConfig("libpq".into()), m)
                .as_deref(),
            Some("libpq-dev")
        );
        assert_eq!(
            idx.package_for(&Need::Program("x86_64-linux-gnu-gcc".into()), m)
                .as_deref(),
            Some("gcc")
        );
        assert_eq!(idx.package_for(&Need::Header("nope.h".into()), m), None);
        // The cache format round-trips.
        assert_eq!(ContentsIndex::from_text(&idx.to_text()), idx);
    }
}
