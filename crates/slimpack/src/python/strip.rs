//! What the venv ships that no import or loader reads, taken out by rules
//! a project can turn off one by one (`no-strip`):
//!
//! - `debug`: debug information in compiled extensions. Wheels on PyPI
//!   often carry it (SQLAlchemy's Cython modules hold 4 MB of it, greenlet's
//!   1.2 MB): the `.debug_*` sections go, as `strip --strip-debug` removes
//!   them. Symbols stay, so tracebacks of native crashes and profilers
//!   still name functions.
//! - `tests`: the test suites packages install (`tests/`, `test/`,
//!   `testing/` inside a package) when the import trace saw no module of
//!   them imported: only test runners read them.
//! - `stubs`: type stubs (`*.pyi`, `py.typed`), read by type checkers,
//!   never by the interpreter.
//! - `positions`: the column positions of every instruction (PEP 657),
//!   which CPython 3.11+ puts in bytecode to draw `^^^^` under the failing
//!   expression of a traceback line; compiled with `-X no_debug_ranges`,
//!   the option PEP 657 gives for exactly this, bytecode is 7 % smaller and
//!   a traceback still names file, line and function and shows the line.

use anyhow::{Context, Result};
use object::build::elf::Builder;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::Path;

pub use crate::settings::StripRule as Rule;

/// What one rule took out of a venv.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stripped {
    /// Files changed (debug) or removed (the others).
    pub files: usize,
    /// Bytes saved.
    pub bytes: u64,
}

/// What a rule applied to a venv took out (the plan's and the report's
/// line for it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub rule: Rule,
    pub files: usize,
    pub bytes: u64,
    /// Bytes that ship instead (the stdlib's bytecode for its sources).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub added: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Stripped {
    pub fn by(self, rule: Rule) -> Applied {
        Applied {
            rule,
            files: self.files,
            bytes: self.bytes,
            added: 0,
        }
    }
}

fn is_debug(name: &[u8]) -> bool {
    name.starts_with(b".debug") || name.starts_with(b".zdebug")
}

/// `data` without its debug sections, when it is an ELF file that has some
/// and the result reads back as ELF; None otherwise (left as it is).
pub fn without_debug(data: &[u8]) -> Option<Vec<u8>> {
    if !data.starts_with(b"\x7fELF") {
        return None;
    }
    let mut b = Builder::read(data).ok()?;
    let mut any = false;
    for s in b.sections.iter_mut() {
        if is_debug(s.name.as_slice()) {
            s.delete = true;
            any = true;
        }
    }
    if !any {
        return None;
    }
    let mut out = Vec::new();
    b.write(&mut out).ok()?;
    // What the loader will map must still parse; anything odd keeps the
    // original bytes.
    let ok = object::read::elf::ElfFile64::<object::Endianness>::parse(out.as_slice()).is_ok();
    (ok && out.len() < data.len()).then_some(out)
}

/// Strips every shared object under `dir` in place.
pub fn strip_debug(dir: &Path) -> Result<Stripped> {
    let mut done = Stripped::default();
    for e in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let e = e?;
        if !e.file_type().is_file() {
            continue;
        }
        let name = e.file_name().to_string_lossy();
        if !(name.ends_with(".so") || name.contains(".so.")) {
            continue;
        }
        let data =
            std::fs::read(e.path()).with_context(|| format!("reading {}", e.path().display()))?;
        if let Some(out) = without_debug(&data) {
            done.files += 1;
            done.bytes += (data.len() - out.len()) as u64;
            // Same file, same mode: only its content shrinks.
            std::fs::write(e.path(), out)
                .with_context(|| format!("writing {}", e.path().display()))?;
        }
    }
    Ok(done)
}

/// The names a test suite's directory has inside a package.
fn is_test_dir(name: &str) -> bool {
    matches!(name, "tests" | "test" | "testing")
}

/// Removes test suites from the packages in `site` (not `site`'s own
/// top level: a top-level `tests` is a package someone installed on
/// purpose) unless a module under them is in `imported` (paths relative to
/// `site`, as the import trace saw them).
pub fn strip_tests(site: &Path, imported: &BTreeSet<String>) -> Result<Stripped> {
    let mut done = Stripped::default();
    let mut it = walkdir::WalkDir::new(site)
        .min_depth(2)
        .sort_by_file_name()
        .into_iter();
    while let Some(e) = it.next() {
        let e = e?;
        if !e.file_type().is_dir() || !is_test_dir(&e.file_name().to_string_lossy()) {
            continue;
        }
        let rel = e.path().strip_prefix(site)?.to_string_lossy().into_owned();
        let inside = format!("{rel}/");
        if rel
            .split('/')
            .next()
            .is_some_and(|top| top.ends_with(".dist-info"))
            || imported.iter().any(|m| m.starts_with(&inside))
        {
            continue;
        }
        it.skip_current_dir();
        let (files, bytes) = tree_size(e.path())?;
        std::fs::remove_dir_all(e.path())
            .with_context(|| format!("removing {}", e.path().display()))?;
        done.files += files;
        done.bytes += bytes;
    }
    Ok(done)
}

/// Removes type stubs from `site`.
pub fn strip_stubs(site: &Path) -> Result<Stripped> {
    let mut done = Stripped::default();
    for e in walkdir::WalkDir::new(site).sort_by_file_name() {
        let e = e?;
        let name = e.file_name().to_string_lossy();
        if e.file_type().is_file() && (name.ends_with(".pyi") || name == "py.typed") {
            done.files += 1;
            done.bytes += e.metadata()?.len();
            std::fs::remove_file(e.path())
                .with_context(|| format!("removing {}", e.path().display()))?;
        }
    }
    Ok(done)
}

fn tree_size(dir: &Path) -> Result<(usize, u64)> {
    let (mut files, mut bytes) = (0, 0);
    for e in walkdir::WalkDir::new(dir) {
        let e = e?;
        if e.file_type().is_file() {
            files += 1;
            bytes += e.metadata()?.len();
        }
    }
    Ok((files, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/elf/with-debug.so"
    );

    fn section_names(data: &[u8]) -> Vec<String> {
        use object::{Object, ObjectSection};
        let f = object::File::parse(data).unwrap();
        f.sections()
            .filter_map(|s| s.name().ok().map(str::to_string))
            .collect()
    }

    #[test]
    fn debug_sections_go_and_the_object_still_loads() {
        let data = std::fs::read(FIXTURE).unwrap();
        assert!(section_names(&data).iter().any(|n| n.starts_with(".debug")));
        let out = without_debug(&data).expect("it has debug sections");
        assert!(out.len() < data.len());
        let names = section_names(&out);
        assert!(!names.iter().any(|n| n.starts_with(".debug")), "{names:?}");
        assert!(
            names.iter().any(|n| n == ".symtab"),
            "symbols stay: {names:?}"
        );
        // The same bytes every time.
        assert_eq!(without_debug(&data).unwrap(), out);
        // Nothing left to strip the second time.
        assert!(without_debug(&out).is_none());
        // And the dynamic loader takes it: load it, call its function.
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("stripped.so");
        std::fs::write(&p, &out).unwrap();
        let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
        // SAFETY: a shared object built from tests/fixtures/elf/answer.c,
        // with no constructors; the symbol has the signature declared.
        unsafe {
            let h = libc::dlopen(c.as_ptr(), libc::RTLD_NOW);
            assert!(!h.is_null(), "dlopen failed");
            let f = libc::dlsym(h, c"slimpack_answer".as_ptr());
            assert!(!f.is_null());
            let f: extern "C" fn() -> i32 = std::mem::transmute(f);
            assert_eq!(f(), 42);
            libc::dlclose(h);
        }
    }

    #[test]
    fn what_is_not_an_elf_with_debug_is_left_alone() {
        assert!(without_debug(b"not an elf").is_none());
        assert!(without_debug(b"\x7fELF but truncated").is_none());
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("x.so"), b"text").unwrap();
        std::fs::copy(FIXTURE, d.path().join("a.so")).unwrap();
        let s = strip_debug(d.path()).unwrap();
        assert_eq!(s.files, 1);
        assert!(s.bytes > 0);
        assert_eq!(std::fs::read(d.path().join("x.so")).unwrap(), b"text");
    }

    fn touch(root: &Path, rel: &str, len: usize) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, vec![b'x'; len]).unwrap();
    }

    #[test]
    fn test_suites_go_unless_imported_or_top_level() {
        let d = tempfile::tempdir().unwrap();
        let site = d.path();
        touch(site, "greenlet/tests/test_a.py", 10);
        touch(site, "greenlet/tests/data/x.bin", 5);
        touch(site, "sqlalchemy/testing/plugin.py", 7);
        touch(site, "numpy/testing/__init__.py", 3);
        touch(site, "numpy/core/tests/test_b.py", 4);
        touch(site, "tests/__init__.py", 1);
        touch(site, "pkg-1.0.dist-info/tests/x", 1);
        touch(site, "pkg/contest/x.py", 1);
        let imported: BTreeSet<String> = ["numpy/testing/__init__.py".to_string()].into();
        let s = strip_tests(site, &imported).unwrap();
        assert_eq!(
            s,
            Stripped {
                files: 4,
                bytes: 26
            }
        );
        assert!(!site.join("greenlet/tests").exists());
        assert!(!site.join("sqlalchemy/testing").exists());
        assert!(!site.join("numpy/core/tests").exists());
        assert!(site.join("numpy/testing/__init__.py").exists(), "imported");
        assert!(
            site.join("tests/__init__.py").exists(),
            "a top-level package"
        );
        assert!(site.join("pkg-1.0.dist-info/tests/x").exists());
        assert!(site.join("pkg/contest/x.py").exists());
    }

    #[test]
    fn stubs_go_and_modules_stay() {
        let d = tempfile::tempdir().unwrap();
        touch(d.path(), "a/__init__.pyi", 9);
        touch(d.path(), "a/py.typed", 0);
        touch(d.path(), "a/__init__.py", 3);
        touch(d.path(), "a/pyi.py", 3);
        let s = strip_stubs(d.path()).unwrap();
        assert_eq!(s, Stripped { files: 2, bytes: 9 });
        assert!(d.path().join("a/__init__.py").exists());
        assert!(d.path().join("a/pyi.py").exists());
    }
}
