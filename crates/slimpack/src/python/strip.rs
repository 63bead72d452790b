//! Debug information in the venv's compiled extensions. Wheels on PyPI
//! often carry it (SQLAlchemy's Cython modules hold 4 MB of it, greenlet's
//! 1.2 MB), and nothing reads it at run time: the `.debug_*` sections go,
//! as `strip --strip-debug` removes them. Symbols stay, so tracebacks of
//! native crashes and profilers still name functions.

use anyhow::{Context, Result};
use object::build::elf::Builder;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// What stripping took out of a venv.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stripped {
    /// Shared objects that had debug sections.
    pub files: usize,
    /// Bytes those sections took.
    pub bytes: u64,
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
}
