//! CPython from python-build-standalone, for the versions Debian does not
//! ship (3.10, 3.12, an exact patch release): the `install_only_stripped`
//! build for x86_64 linux-gnu, verified by SHA-256 against a table pinned
//! inside slimpack (as uv ships its download metadata), unpacked under
//! `/opt/python` on a minimal Debian runtime. It needs nothing of the system
//! but glibc; what it does need is checked once the runtime is assembled.

use crate::core::cache::{Cache, CacheDir};
use crate::core::progress::Progress;
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use slimpack_oci::{Entry, EntryKind, LayerBuilder};
use std::path::{Component, Path, PathBuf};

/// Where the releases are published; a mirror replaces this prefix and
/// keeps the `{build}/{file}` layout, as uv's `UV_PYTHON_INSTALL_MIRROR`.
pub const DEFAULT_MIRROR: &str =
    "https://github.com/astral-sh/python-build-standalone/releases/download";
/// The environment variable naming a mirror (also `python-mirror`).
pub const MIRROR_ENV: &str = "SLIMPACK_PYTHON_INSTALL_MIRROR";
/// The environment variable naming another table (a JSON file laid out as
/// the one shipped), for mirrors that serve other builds.
pub const TABLE_ENV: &str = "SLIMPACK_PYTHON_DOWNLOADS";
/// The interpreter's prefix in the image.
pub const PREFIX: &str = "opt/python";

const TABLE: &str = include_str!("python-downloads.json");

/// One pinned release file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Download {
    /// `3.12.6`
    pub version: String,
    /// The release tag, e.g. `20240909`.
    pub build: String,
    #[serde(default)]
    pub freethreaded: bool,
    pub sha256: String,
}

#[derive(Deserialize)]
struct Table {
    downloads: Vec<Download>,
}

impl Download {
    /// `3.12` (the free-threaded marker is not part of it).
    pub fn minor(&self) -> String {
        let mut it = self.version.split('.');
        format!("{}.{}", it.next().unwrap_or(""), it.next().unwrap_or(""))
    }

    /// The name the interpreter and its library directory carry:
    /// `3.12`, or `3.13t` for a free-threaded build.
    pub fn abi_name(&self) -> String {
        format!(
            "{}{}",
            self.minor(),
            if self.freethreaded { "t" } else { "" }
        )
    }

    /// As a user writes it: `3.12.6`, `3.14.5t`.
    pub fn label(&self) -> String {
        format!(
            "{}{}",
            self.version,
            if self.freethreaded { "t" } else { "" }
        )
    }

    pub fn file_name(&self) -> String {
        format!(
            "cpython-{}+{}-x86_64-unknown-linux-gnu-{}install_only_stripped.tar.gz",
            self.version,
            self.build,
            if self.freethreaded {
                "freethreaded-"
            } else {
                ""
            }
        )
    }

    /// The file's URL under `mirror` (GitHub's own or one laid out like it).
    pub fn url(&self, mirror: &str) -> String {
        format!(
            "{}/{}/{}",
            mirror.trim_end_matches('/'),
            self.build,
            self.file_name().replace('+', "%2B")
        )
    }

    fn numbers(&self) -> (u32, u32, u32) {
        version_numbers(&self.version).unwrap_or((0, 0, 0))
    }
}

/// `3.12.6` → (3, 12, 6); `3.12` → (3, 12, 0).
pub fn version_numbers(v: &str) -> Option<(u32, u32, u32)> {
    let mut it = v.trim().split('.');
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    let patch = match it.next() {
        Some(p) => p.parse().ok()?,
        None => 0,
    };
    it.next().is_none().then_some((major, minor, patch))
}

/// The pinned table: the one shipped, or the file `SLIMPACK_PYTHON_DOWNLOADS`
/// names. Newest first.
pub fn table() -> Result<Vec<Download>> {
    let (text, origin) = match std::env::var_os(TABLE_ENV) {
        Some(path) => {
            let path = PathBuf::from(path);
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "reading the python-build-standalone table {} (from {TABLE_ENV})",
                    path.display()
                )
            })?;
            (text, path.display().to_string())
        }
        None => (TABLE.to_string(), "the table shipped with slimpack".into()),
    };
    parse_table(&text, &origin)
}

/// A table's text, checked entry by entry; newest first.
fn parse_table(text: &str, origin: &str) -> Result<Vec<Download>> {
    let t: Table = serde_json::from_str(text)
        .map_err(|e| anyhow!("{origin}: not a python-build-standalone table: {e}"))?;
    let mut downloads = t.downloads;
    for d in &downloads {
        if version_numbers(&d.version).is_none()
            || d.sha256.len() != 64
            || !d.sha256.bytes().all(|b| b.is_ascii_hexdigit())
            || d.build.is_empty()
            || !d.build.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            bail!("{origin}: the entry for {:?} is malformed (a version like 3.12.6, a build tag, a 64-digit SHA-256)", d.version);
        }
    }
    downloads.sort_by_key(|d| std::cmp::Reverse(d.numbers()));
    Ok(downloads)
}

/// The versions the table offers, for messages: `3.12.6, 3.11.15, 3.14.5t`.
pub fn offered(table: &[Download]) -> String {
    if table.is_empty() {
        return "none".into();
    }
    table
        .iter()
        .map(Download::label)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A download chosen for a build, with the URL it comes from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Pinned {
    #[serde(flatten)]
    pub download: Download,
    pub url: String,
}

impl Pinned {
    pub fn new(download: Download, mirror: Option<&str>) -> Pinned {
        let env_mirror = std::env::var(MIRROR_ENV).ok().filter(|m| !m.is_empty());
        let mirror = mirror
            .map(str::to_string)
            .or(env_mirror)
            .unwrap_or_else(|| DEFAULT_MIRROR.to_string());
        let url = download.url(&mirror);
        Pinned { download, url }
    }

    /// The interpreter's path in the image.
    pub fn interpreter(&self) -> String {
        format!("/{PREFIX}/bin/python{}", self.download.abi_name())
    }

    /// Its standard library in the image.
    pub fn stdlib(&self) -> String {
        format!("/{PREFIX}/lib/python{}", self.download.abi_name())
    }
}

/// The release file, from the cache (named by its hash) or the mirror.
/// A file whose hash is not the pinned one is never kept.
pub fn fetch(p: &Pinned, cache: &Cache, progress: &Progress) -> Result<PathBuf> {
    let dir = cache.dir(CacheDir::Python)?;
    let path = dir.join(format!("{}.tar.gz", p.download.sha256));
    if let Ok(bytes) = std::fs::read(&path) {
        if sha256_hex(&bytes) == p.download.sha256 {
            return Ok(path);
        }
    }
    let sp = progress.spinner(format!("Downloading Python {}", p.download.label()));
    let bytes = crate::core::http::get(&p.url, None);
    sp.finish_and_clear();
    let bytes = bytes.map_err(|e| {
        crate::core::errors::hinted(
            format!(
                "downloading Python {} from {} failed: {e:#}",
                p.download.label(),
                p.url
            ),
            format!("set {MIRROR_ENV} (or python-mirror) to a mirror laid out as the releases are, or use a Debian Python (3.9, 3.11, 3.13)"),
        )
    })?;
    let got = sha256_hex(&bytes);
    if got != p.download.sha256 {
        bail!(
            "{}: SHA-256 is {got}, but slimpack's pinned table says {}; the file was discarded (nothing was cached). A mirror must serve the release files unchanged",
            p.url,
            p.download.sha256
        );
    }
    crate::core::fs::write_atomic(&path, &bytes)?;
    Ok(path)
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// What the runtime leaves out of the build: tests, IDLE, Tk, ensurepip,
/// documentation and, outside the builder, headers and static libraries.
fn dropped(rest: &str, abi: &str, builder: bool) -> bool {
    let lib = format!("lib/python{abi}/");
    if let Some(stdlib) = rest.strip_prefix(&lib) {
        let top = stdlib.split('/').next().unwrap_or("");
        let file = stdlib.rsplit('/').next().unwrap_or("");
        // Its own site-packages holds pip, which the image never needs: the
        // venv has its own.
        return super::debian::unused_stdlib(top)
            || top == "site-packages"
            || (top == "lib-dynload"
                && (file.starts_with("_tkinter") || super::debian::test_extension(file)))
            || (!builder && top.starts_with("config-") && file.ends_with(".a"));
    }
    let top = rest.split('/').next().unwrap_or("");
    let bin = rest.strip_prefix("bin/").unwrap_or("");
    ["share"].contains(&top)
        || (!builder && top == "include")
        || (top == "lib"
            && ["tcl", "tk", "itcl", "thread", "Tix"]
                .iter()
                .any(|p| rest["lib/".len().min(rest.len())..].starts_with(p)))
        || ["idle", "pydoc", "2to3", "pip"]
            .iter()
            .any(|p| bin.starts_with(p))
}

/// An archive entry that passed the checks, by what it is.
enum Checked {
    Dir,
    File,
    /// Its target, relative and inside `python/`.
    Symlink(String),
    /// Its target's path under `python/`.
    Hardlink(String),
}

type GzEntry<'a> = tar::Entry<'a, flate2::read::GzDecoder<std::fs::File>>;

/// Walks the release archive: every path must be a plain relative path
/// under `python/`, links must stay inside it, and nothing but files,
/// directories and links may be there (the archive is verified, but is
/// still input). `f` gets each entry with its path under `python/`.
fn each_entry(
    archive: &Path,
    mut f: impl FnMut(&mut GzEntry, &str, Checked) -> Result<()>,
) -> Result<()> {
    let file =
        std::fs::File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    tar.set_preserve_permissions(true);
    let what = || format!("the python-build-standalone archive {}", archive.display());
    for entry in tar.entries().with_context(what)? {
        let mut entry = entry.with_context(what)?;
        let path = entry.path().with_context(what)?.into_owned();
        let rest = under_python(&path).ok_or_else(|| {
            anyhow!(
                "{}: entry {} is not a plain path under python/",
                what(),
                crate::core::text::escape_controls(&path.display().to_string())
            )
        })?;
        let checked = match entry.header().entry_type() {
            tar::EntryType::Directory => Checked::Dir,
            tar::EntryType::Regular | tar::EntryType::Continuous => Checked::File,
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .with_context(what)?
                    .ok_or_else(|| anyhow!("{}: link {rest} has no target", what()))?
                    .to_string_lossy()
                    .into_owned();
                if !link_stays_inside(&rest, &target) {
                    bail!(
                        "{}: link {rest} points outside python/ ({})",
                        what(),
                        crate::core::text::escape_controls(&target)
                    );
                }
                Checked::Symlink(target)
            }
            tar::EntryType::Link => Checked::Hardlink(
                entry
                    .link_name()
                    .with_context(what)?
                    .and_then(|t| under_python(&t))
                    .ok_or_else(|| anyhow!("{}: hard link {rest} leaves python/", what()))?,
            ),
            other => bail!("{}: {rest} is a {other:?}, not a file", what()),
        };
        f(&mut entry, &rest, checked).with_context(what)?;
    }
    Ok(())
}

/// Adds the release archive's `python/` tree under [`PREFIX`], trimmed.
pub fn add_tree(b: &mut LayerBuilder, archive: &Path, abi: &str, builder: bool) -> Result<()> {
    each_entry(archive, |entry, rest, checked| {
        if rest.is_empty() || dropped(rest, abi, builder) {
            return Ok(());
        }
        let dest = format!("{PREFIX}/{rest}");
        let mode = entry.header().mode().unwrap_or(0o644) & 0o7777 & !0o6000;
        let kind = match checked {
            Checked::Dir if b.contains(&dest) => return Ok(()),
            Checked::Dir => EntryKind::Dir,
            Checked::File => {
                let mut data = Vec::with_capacity(entry.size() as usize);
                std::io::Read::read_to_end(entry, &mut data)?;
                EntryKind::Bytes(data)
            }
            Checked::Symlink(target) => EntryKind::Symlink(target),
            Checked::Hardlink(target) => EntryKind::Hardlink(format!("{PREFIX}/{target}")),
        };
        b.add(&dest, Entry::new(mode, kind))?;
        Ok(())
    })
}

/// `python/bin/python3` → `bin/python3`; None for anything not under
/// `python/` or not made of plain components.
fn under_python(path: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_str()?.to_string()),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (parts.first().map(String::as_str) == Some("python")).then(|| parts[1..].join("/"))
}

/// Whether relative link `target` of `link` (both under `python/`) resolves
/// inside `python/`.
fn link_stays_inside(link: &str, target: &str) -> bool {
    if target.starts_with('/') {
        return false;
    }
    let mut depth: Vec<&str> = link.split('/').collect();
    depth.pop();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if depth.pop().is_none() {
                    return false;
                }
            }
            c => depth.push(c),
        }
    }
    true
}

/// The release unpacked here, whole, for uv to run its interpreter: uv
/// learns a free-threaded build's wheel tags (`cp313t`) only by asking the
/// interpreter, as it does for the Pythons it installs itself. The builds
/// need nothing of the system but glibc, so they run on any x86_64 Linux.
/// Unpacked once per hash, whole or not at all.
pub fn host_interpreter(p: &Pinned, cache: &Cache, progress: &Progress) -> Result<PathBuf> {
    let dir = cache
        .dir(CacheDir::Python)?
        .join(format!("{}.tree", p.download.sha256));
    let inside = format!("python/bin/python{}", p.download.abi_name());
    let interpreter = dir.join(&inside);
    if interpreter.is_file() {
        return Ok(interpreter);
    }
    let archive = fetch(p, cache, progress)?;
    let parent = dir.parent().unwrap_or(&dir);
    let staging = tempfile::Builder::new()
        .prefix(".tmp-python-")
        .tempdir_in(parent)?;
    unpack_tree(&archive, staging.path())?;
    if !staging.path().join(&inside).is_file() {
        bail!("{}: the archive has no {inside}", p.url);
    }
    let staged = staging.keep();
    if let Err(e) = std::fs::rename(&staged, &dir) {
        let _ = std::fs::remove_dir_all(&staged);
        // Another build unpacked it first.
        if !interpreter.is_file() {
            return Err(e)
                .with_context(|| format!("moving the unpacked Python to {}", dir.display()));
        }
    }
    Ok(interpreter)
}

/// Unpacks the release archive into `dest` as it is, after the same checks
/// as [`add_tree`].
fn unpack_tree(archive: &Path, dest: &Path) -> Result<()> {
    std::fs::create_dir_all(dest)?;
    each_entry(archive, |entry, rest, _| {
        entry.set_mask(0o022);
        if !entry.unpack_in(dest)? {
            bail!("entry {rest} would land outside the unpack root");
        }
        Ok(())
    })
}

/// Fetches the release and adds it to `b` (the runtime or the builder).
pub fn add(
    b: &mut LayerBuilder,
    p: &Pinned,
    builder: bool,
    cache: &Cache,
    progress: &Progress,
) -> Result<()> {
    let archive = fetch(p, cache, progress)?;
    add_tree(b, &archive, &p.download.abi_name(), builder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_table_is_well_formed() {
        let t = table().unwrap();
        assert!(t.len() >= 4);
        assert!(t.iter().any(|d| d.minor() == "3.12"));
        assert!(t.iter().any(|d| d.minor() == "3.10"));
        // Newest first.
        assert!(t.windows(2).all(|w| w[0].numbers() >= w[1].numbers()));
    }

    #[test]
    fn a_broken_table_is_refused_naming_it() {
        let e = parse_table("{", "t.json").unwrap_err().to_string();
        assert!(
            e.contains("t.json") && e.contains("not a python-build-standalone table"),
            "{e}"
        );
        for bad in [
            r#"{"downloads": [{"version": "3.12", "build": "1", "sha256": "00"}]}"#,
            r#"{"downloads": [{"version": "x.y.z", "build": "1", "sha256": "%"}]}"#,
            r#"{"downloads": [{"version": "3.12.1", "build": "../../x", "sha256": "0000000000000000000000000000000000000000000000000000000000000000"}]}"#,
        ] {
            let e = parse_table(bad, "t.json").unwrap_err().to_string();
            assert!(e.contains("malformed"), "{e}");
        }
    }

    /// Writes a gzip tar of `entries` (path, kind, link target or content).
    fn archive(dir: &Path, entries: &[(&str, tar::EntryType, &str)]) -> PathBuf {
        let p = dir.join("a.tar.gz");
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&p).unwrap(),
            flate2::Compression::fast(),
        );
        let mut b = tar::Builder::new(gz);
        for (path, kind, extra) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o755);
            let data = if matches!(kind, tar::EntryType::Regular) {
                extra.as_bytes()
            } else {
                &[]
            };
            h.set_size(data.len() as u64);
            if matches!(kind, tar::EntryType::Symlink | tar::EntryType::Link) {
                h.set_link_name(extra).unwrap();
            }
            // Names set raw: the builder's own checks would refuse `..`.
            let name = h.as_old_mut().name.as_mut();
            name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_cksum();
            b.append(&h, data).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap();
        p
    }

    #[test]
    fn a_hostile_archive_is_refused() {
        use tar::EntryType::*;
        let d = tempfile::tempdir().unwrap();
        let good = archive(
            d.path(),
            &[
                ("python/bin/python3.12", Regular, "elf"),
                ("python/bin/python3", Symlink, "python3.12"),
            ],
        );
        let mut b = LayerBuilder::new();
        add_tree(&mut b, &good, "3.12", false).unwrap();
        assert!(b.contains("opt/python/bin/python3.12"));
        // Unpacked on the host (a free-threaded build, for uv to ask), the
        // same archive lands whole, and a hostile one leaves nothing outside.
        let host = d.path().join("host");
        unpack_tree(&good, &host).unwrap();
        assert_eq!(
            std::fs::read_link(host.join("python/bin/python3")).unwrap(),
            Path::new("python3.12")
        );
        for (entries, needle) in [
            (
                vec![("python/../etc/passwd", Regular, "x")],
                "not a plain path",
            ),
            (vec![("etc/passwd", Regular, "x")], "not a plain path"),
            (
                vec![("python/bin/x", Symlink, "/etc/shadow")],
                "outside python/",
            ),
            (
                vec![("python/bin/x", Symlink, "../../../etc")],
                "outside python/",
            ),
            (vec![("python/bin/x", Link, "etc/passwd")], "leaves python/"),
            (vec![("python/dev/null", Char, "")], "not a file"),
        ] {
            let sub = tempfile::tempdir().unwrap();
            let a = archive(sub.path(), &entries);
            let e = add_tree(&mut LayerBuilder::new(), &a, "3.12", false)
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{entries:?}: {e}");
            let root = sub.path().join("root");
            let e = unpack_tree(&a, &root).unwrap_err().to_string();
            assert!(e.contains(needle), "host unpack, {entries:?}: {e}");
            assert!(!sub.path().join("etc").exists());
        }
    }

    #[test]
    fn urls_follow_the_release_layout() {
        let d = Download {
            version: "3.12.6".into(),
            build: "20240909".into(),
            freethreaded: false,
            sha256: "0".repeat(64),
        };
        assert_eq!(
            d.url(DEFAULT_MIRROR),
            "https://github.com/astral-sh/python-build-standalone/releases/download/20240909/cpython-3.12.6%2B20240909-x86_64-unknown-linux-gnu-install_only_stripped.tar.gz"
        );
        let ft = Download {
            freethreaded: true,
            ..d.clone()
        };
        assert!(ft
            .file_name()
            .ends_with("-freethreaded-install_only_stripped.tar.gz"));
        assert_eq!(ft.abi_name(), "3.12t");
        assert_eq!(d.url("http://127.0.0.1:9/m/"), "http://127.0.0.1:9/m/20240909/cpython-3.12.6%2B20240909-x86_64-unknown-linux-gnu-install_only_stripped.tar.gz");
        let p = Pinned::new(d, Some("http://m"));
        assert_eq!(p.interpreter(), "/opt/python/bin/python3.12");
        assert_eq!(p.stdlib(), "/opt/python/lib/python3.12");
    }

    #[test]
    fn paths_and_links_stay_under_python() {
        assert_eq!(
            under_python(Path::new("python/bin/python3")).as_deref(),
            Some("bin/python3")
        );
        assert_eq!(under_python(Path::new("python")).as_deref(), Some(""));
        for bad in ["bin/x", "/python/x", "python/../etc", "python/a/../../x"] {
            assert!(under_python(Path::new(bad)).is_none(), "{bad}");
        }
        assert!(link_stays_inside("bin/python3", "python3.12"));
        assert!(link_stays_inside("lib/a/b", "../../bin/x"));
        assert!(!link_stays_inside("bin/python3", "../../etc/passwd"));
        assert!(!link_stays_inside("bin/python3", "/usr/bin/python3"));
    }

    #[test]
    fn the_runtime_trim() {
        assert!(dropped("lib/python3.12/test/test_os.py", "3.12", false));
        assert!(dropped("lib/python3.12/idlelib/x.py", "3.12", false));
        assert!(dropped(
            "lib/python3.12/lib-dynload/_tkinter.cpython-312-x86_64-linux-gnu.so",
            "3.12",
            false
        ));
        assert!(dropped("lib/tcl8.6/init.tcl", "3.12", false));
        assert!(dropped("include/python3.12/Python.h", "3.12", false));
        assert!(!dropped("include/python3.12/Python.h", "3.12", true));
        assert!(dropped("bin/pip3", "3.12", false));
        assert!(dropped("share/man/man1/python3.1", "3.12", false));
        assert!(!dropped("lib/python3.12/json/__init__.py", "3.12", false));
        assert!(!dropped("lib/libpython3.12.so.1.0", "3.12", false));
        assert!(!dropped("bin/python3.12", "3.12", false));
        assert!(!dropped(
            "lib/python3.12/lib-dynload/_ssl.cpython-312-x86_64-linux-gnu.so",
            "3.12",
            false
        ));
    }
}
