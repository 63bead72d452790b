//! The runtime base made the way distroless is made: signed Debian packages,
//! extracted without dpkg or maintainer scripts, trimmed to what a Python
//! app can use.

use super::archive;
use crate::core::cache::{Cache, CacheDir, KeyHasher, RecordKind};
use crate::core::http;
use crate::core::progress::Progress;
use crate::python::strip::Applied;
use crate::settings::StripRule;
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use slimpack_debian::{
    check_sha256, merged_usr, parse_packages, read_deb, ContentsIndex, DebEntryKind, Package,
    Resolver, Suite,
};
use slimpack_oci::{Entry, EntryKind, Layer, LayerBuilder};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{SystemTime, UNIX_EPOCH};

/// Bump when the layer's content rules change, so cached layers are rebuilt.
// v4: the `libraries` and `stdlib-sources` rules (`base::trim`).
const POLICY_VERSION: &str = "runtime-v4";
/// Bump when what the builder's root leaves out changes.
// v2: gcc's LTO dump tool and static libraries no build reads.
const BUILDER_POLICY: &str = "builder-v2";
/// How long a verified package resolution is reused before the archive is
/// asked again (security updates land within this time).
const RESOLUTION_TTL_SECS: u64 = 24 * 3600;

pub const DEFAULT_MIRROR: &str = "https://deb.debian.org/debian";
pub const DEFAULT_SECURITY_MIRROR: &str = "https://deb.debian.org/debian-security";

/// Never pulled in as dependencies: what only maintainer scripts or shells
/// need, plus the libraries of stdlib modules no web app uses (nis, dbm,
/// readline), whose extension modules are then left out too. Naming one in
/// `packages` still installs it.
const EXCLUDED: &[&str] = &[
    "dpkg",
    "perl-base",
    "perl",
    "perl-modules-5.32",
    "perl-modules-5.36",
    "perl-modules-5.40",
    "perl-modules-5.42",
    "debconf",
    "debconf-2.0",
    "cdebconf",
    "mime-support",
    "mailcap",
    "bash",
    "dash",
    "coreutils",
    "libc-bin",
    "openssl",
    "sensible-utils",
    "install-info",
    "init-system-helpers",
    "lsb-base",
    "sysvinit-utils",
    "ucf",
    "readline-common",
    "libreadline8",
    "libreadline8t64",
    "libnsl2",
    "libtirpc3",
    "libtirpc3t64",
    "libtirpc-common",
    "libdb5.3",
    "libdb5.3t64",
    "gcc-10-base",
    "gcc-12-base",
    "gcc-14-base",
    "gcc-15-base",
    "tzdata-legacy",
    "base-files",
    "debianutils",
    "libgdbm6",
    "libgdbm6t64",
    "libgdbm-compat4",
    "libgdbm-compat4t64",
];

/// Stdlib extension modules dropped when the library they link is absent.
const OPTIONAL_EXTENSIONS: &[(&str, &[&str])] = &[
    ("nis.", &["libnsl2"]),
    ("_dbm.", &["libdb5.3", "libdb5.3t64"]),
    ("readline.", &["libreadline8", "libreadline8t64"]),
];

/// What a package set is for: the image's runtime, or the builder stage
/// that compiles source-only Python packages against the same interpreter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Purpose {
    #[default]
    Runtime,
    Builder,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BaseSpec {
    pub suite: Suite,
    pub mirror: String,
    pub security_mirror: String,
    pub extra_packages: Vec<String>,
    #[serde(default)]
    pub purpose: Purpose,
    /// Packages asked for their programs (`packages`, system tools the
    /// dependencies call): their executables stay in the runtime, where
    /// everyone else's are dropped.
    #[serde(default)]
    pub tools: Vec<String>,
    /// CPython from python-build-standalone instead of Debian's: the
    /// runtime then has no Python packages, and the release under /opt/python.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standalone: Option<super::standalone::Pinned>,
    /// Refuse a Release past its `Valid-Until` (false only for snapshot
    /// archives, whose releases expire by design). Not part of any key:
    /// the same signed Release gives the same packages either way.
    #[serde(default = "yes", skip_serializing_if = "is_yes")]
    pub check_valid_until: bool,
    /// The runtime's strip rules the project turned off (`no-strip`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub no_strip: Vec<StripRule>,
}

fn yes() -> bool {
    true
}

fn is_yes(b: &bool) -> bool {
    *b
}

/// What the compiler depends on that no build of a Python package uses:
/// the sanitizers' and gprofng's runtimes (27 MB unpacked, 7 MB to fetch).
/// Asked for by name in `build-packages`, they are still installed.
const NOT_IN_BUILDER: &[&str] = &[
    "libasan6",
    "libasan8",
    "libtsan0",
    "libtsan2",
    "liblsan0",
    "libubsan1",
    "libhwasan0",
    "libgprofng0",
];

/// The builder's own tools, beside the runtime's packages: a C compiler, the
/// interpreter's headers, and what setup scripts commonly call.
fn builder_tools(python: Option<&str>) -> Vec<String> {
    // perl-base is Essential in Debian: tools such as pg_config are Perl scripts.
    let mut v: Vec<String> = [
        "gcc",
        "libc6-dev",
        "dash",
        "coreutils",
        "sed",
        "grep",
        "make",
        "perl-base",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // A standalone Python brings its own headers.
    if let Some(python) = python {
        v.push(format!("python{python}-dev"));
    }
    v
}

impl BaseSpec {
    pub fn roots(&self) -> Vec<String> {
        let py = self.debian_python();
        let mut r: Vec<String> = match py {
            Some(py) => vec![
                format!("python{py}-minimal"),
                format!("libpython{py}-stdlib"),
            ],
            // python-build-standalone needs glibc only.
            None => vec!["libc6".into()],
        };
        r.extend(["ca-certificates", "tzdata", "netbase"].map(String::from));
        if self.purpose == Purpose::Builder {
            r.extend(builder_tools(py));
        }
        for p in &self.extra_packages {
            if !r.contains(p) {
                r.push(p.clone());
            }
        }
        r
    }

    /// The Debian Python of the runtime (`3.13`), None when it is standalone.
    pub fn debian_python(&self) -> Option<&'static str> {
        self.standalone.is_none().then(|| self.suite.python())
    }

    /// Whether the runtime rule `r` applies (a builder keeps everything).
    pub fn strips(&self, r: StripRule) -> bool {
        self.purpose == Purpose::Runtime && !self.no_strip.contains(&r)
    }

    /// The interpreter and the standard library, as image paths.
    fn python_paths(&self) -> (String, String) {
        match &self.standalone {
            Some(p) => (p.interpreter(), p.stdlib()),
            None => {
                let py = self.suite.python();
                (
                    format!("/usr/bin/python{py}"),
                    format!("/usr/lib/python{py}"),
                )
            }
        }
    }

    /// The builder for this runtime, with `build_packages` added.
    pub fn builder(&self, build_packages: &[String]) -> BaseSpec {
        let mut b = self.clone();
        b.purpose = Purpose::Builder;
        b.extra_packages.extend(build_packages.iter().cloned());
        b
    }

    /// This spec with more packages (e.g. the libraries the venv needs).
    pub fn with_packages(&self, more: &[String]) -> BaseSpec {
        let mut b = self.clone();
        for p in more {
            if !b.extra_packages.contains(p) {
                b.extra_packages.push(p.clone());
            }
        }
        b
    }

    pub fn key(&self) -> String {
        let mut h = KeyHasher::new(RecordKind::DebianResolution.as_str());
        h.part("suite", self.suite.codename())
            .part("mirror", &self.mirror)
            .part("security", &self.security_mirror)
            .part("policy", POLICY_VERSION);
        if self.purpose == Purpose::Builder {
            h.part("purpose", "builder");
        }
        // Tools change what is excluded; without them the key is as it was.
        for t in &self.tools {
            h.part("tool", t);
        }
        for r in self.roots() {
            h.part("root", r);
        }
        if let Some(p) = &self.standalone {
            h.part("standalone", &p.download.sha256);
        }
        h.finish()
    }
}

/// A package asked for that the archive does not have.
#[derive(Debug, thiserror::Error)]
#[error("Debian package {package:?} (from `packages` or `build-packages` in the configuration) does not exist in {suite}{hint}")]
pub struct UnknownPackage {
    pub package: String,
    pub suite: String,
    pub hint: String,
}

/// `.deb` files fetched at once.
const DOWNLOADS: usize = 4;

/// A package as the build used it (recorded in the plan and report).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PackageRecord {
    pub name: String,
    pub version: String,
    pub origin: String,
    pub sha256: String,
    pub size: u64,
    pub filename: String,
    pub stanza: String,
    pub mirror: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Resolved {
    pub fetched_at: u64,
    /// e.g. `12.15` from the signed Release file.
    pub release_version: String,
    pub python_version: String,
    pub glibc_version: String,
    pub packages: Vec<PackageRecord>,
    pub skipped: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Runtime {
    pub suite: Suite,
    pub resolved: Resolved,
    pub layer: Layer,
    /// Hash of exactly what is in the layer (package hashes + policy).
    pub key: String,
    /// What the runtime's strip rules took out.
    #[serde(default)]
    pub stripped: Vec<Applied>,
}

/// The runtime layer as cached, with what its rules took out.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RuntimeRecord {
    layer: Layer,
    stripped: Vec<Applied>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Fetches, verifies and resolves the package set (or reuses a fresh one).
pub fn resolve(
    spec: &BaseSpec,
    cache: &Cache,
    refresh: bool,
    progress: &Progress,
) -> Result<Resolved> {
    let key = spec.key();
    if !refresh {
        if let Some(r) = cache.get::<Resolved>(RecordKind::DebianResolution, &key) {
            if now().saturating_sub(r.fetched_at) < RESOLUTION_TTL_SECS {
                return Ok(r);
            }
        }
    }
    let suite = spec.suite;
    let code = suite.codename();
    let sp = progress.spinner(format!("Verifying {code} indexes"));
    let SuiteIndex {
        release_version,
        mirrors,
        mut resolver,
    } = suite_index(spec, cache)?;
    sp.finish_and_clear();
    // Programs asked for (`tools`) get the libraries they depend on, even
    // those the interpreter alone goes without.
    resolver.exclude(
        EXCLUDED
            .iter()
            .copied()
            .filter(|n| spec.tools.is_empty() || !n.starts_with("lib") || *n == "libc-bin"),
    );
    if spec.purpose == Purpose::Builder {
        resolver.exclude(NOT_IN_BUILDER.iter().copied());
    }
    let res = resolver.resolve(&spec.roots()).map_err(|e| match e {
        slimpack_debian::Error::UnknownPackage { package, hint } => UnknownPackage {
            package,
            suite: code.to_string(),
            hint,
        }
        .into(),
        e => anyhow::Error::from(e),
    })?;
    let version_of = |name: &str| {
        res.packages
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.version.clone())
            .ok_or_else(|| anyhow!("{name} is missing from the resolution"))
    };
    let python_version = match (&spec.standalone, spec.debian_python()) {
        (Some(p), _) => p.download.version.clone(),
        (None, py) => upstream(&version_of(&format!(
            "python{}-minimal",
            py.unwrap_or(suite.python())
        ))?),
    };
    let glibc_version = upstream(&version_of("libc6")?);
    let resolved = Resolved {
        fetched_at: now(),
        release_version,
        python_version,
        glibc_version,
        packages: res.packages.iter().map(|p| record(p, &mirrors)).collect(),
        skipped: res.skipped,
    };
    cache.put(RecordKind::DebianResolution, &key, &resolved)?;
    Ok(resolved)
}

/// The library packages `dev` (`-dev` packages) are for: what each
/// depends on at its own exact version, as Debian ties a `-dev` package to
/// its shared library (`libpq-dev` → `libpq5`). What code built against
/// them most likely links at run time.
pub fn libraries_of(spec: &BaseSpec, cache: &Cache, dev: &[String]) -> Result<Vec<String>> {
    Ok(libraries_in(&suite_index(spec, cache)?.resolver, dev))
}

fn libraries_in(resolver: &Resolver, dev: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in dev.iter().filter_map(|d| resolver.get(d)) {
        for dep in &p.depends {
            if let [rel] = dep.0.as_slice() {
                let exact = rel.constraint.as_ref().is_some_and(|(op, _)| op == "=");
                if exact && !rel.name.ends_with("-dev") && !out.contains(&rel.name) {
                    out.push(rel.name.clone());
                }
            }
        }
    }
    out
}

/// A suite's archives, read for resolving: the main archive's release
/// version, which mirror serves each archive (the security archive's
/// differs), and a resolver over all of their packages.
#[derive(Clone)]
struct SuiteIndex {
    release_version: String,
    mirrors: BTreeMap<String, String>,
    resolver: Resolver,
}

/// The suite's archives fetched, verified, parsed and indexed once per
/// process: a build resolves up to three package sets (the runtime, the
/// builder, the runtime with the venv's libraries) from the same archives,
/// and reading them takes about a second (a copy of their 60 000 packages
/// almost as long: the resolver shares one). A second caller waits for the
/// first instead of doing the same work.
fn suite_index(spec: &BaseSpec, cache: &Cache) -> Result<SuiteIndex> {
    type Slot = std::sync::Arc<std::sync::Mutex<Option<SuiteIndex>>>;
    type Archives = [(String, String); 3];
    static SEEN: std::sync::OnceLock<std::sync::Mutex<BTreeMap<Archives, Slot>>> =
        std::sync::OnceLock::new();
    let archives = archives(spec);
    let slot = SEEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(archives.clone())
        .or_default()
        .clone();
    let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(hit) = slot.as_ref() {
        return Ok(hit.clone());
    }
    let code = spec.suite.codename();
    let mut all = Vec::new();
    let mut release_version = String::new();
    let mut mirrors = BTreeMap::new();
    // The three archives at once: the updates and security ones arrive
    // while the suite's own index is still decoding.
    let read = crate::core::parallel::map(archives.len(), &archives, |_, (mirror, dist)| {
        archive_packages(spec, cache, mirror, dist)
    })?;
    for ((mirror, dist), (version, packages)) in archives.into_iter().zip(read) {
        if dist == code {
            release_version = version;
        }
        all.push(packages);
        mirrors.insert(dist, mirror);
    }
    let suite = SuiteIndex {
        release_version,
        mirrors,
        resolver: Resolver::new(all, "amd64"),
    };
    *slot = Some(suite.clone());
    Ok(suite)
}

/// An archive's release version and packages, verified and parsed.
fn archive_packages(
    spec: &BaseSpec,
    cache: &Cache,
    mirror: &str,
    dist: &str,
) -> Result<(String, Vec<Package>)> {
    let index = "main/binary-amd64/Packages.xz";
    let (version, xz) = archive::with_release(
        spec.suite,
        mirror,
        dist,
        spec.check_valid_until,
        |release, text| {
            let version = text
                .lines()
                .find_map(|l| l.strip_prefix("Version: "))
                .unwrap_or("")
                .to_string();
            Ok((
                version,
                archive::fetch_index(cache, mirror, dist, release, index)?,
            ))
        },
    )?;
    let text = slimpack_debian::decompress_xz(&xz)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| anyhow!("{mirror}/dists/{dist}/{index}: cannot decompress"))?;
    Ok((version, parse_in_halves(&text, dist)?))
}

/// [`parse_packages`] of `text` cut in two at a stanza's end, both halves
/// at once: the suite's index (50 MB, 63 000 stanzas) is read on the
/// critical path of every cold build. The same packages in the same order.
fn parse_in_halves(text: &str, dist: &str) -> Result<Vec<Package>> {
    let mid = text.len() / 2;
    // Just after a "\n\n": an ASCII byte, so a char boundary.
    let cut = text.as_bytes()[mid..]
        .windows(2)
        .position(|w| w == b"\n\n")
        .map_or(text.len(), |i| mid + i + 2);
    let (first, second) = text.split_at(cut);
    let halves = crate::core::parallel::map(2, &[first, second], |_, half| {
        Ok(parse_packages(half, dist)?)
    })?;
    Ok(halves.concat())
}

/// The suite, its updates and its security archive.
fn archives(spec: &BaseSpec) -> [(String, String); 3] {
    let code = spec.suite.codename();
    [
        (spec.mirror.clone(), code.to_string()),
        (spec.mirror.clone(), format!("{code}-updates")),
        (spec.security_mirror.clone(), format!("{code}-security")),
    ]
}

/// The suite's `Contents` index (which package ships which file), verified
/// through the signed Release and cached only in its reduced form (named by
/// the full index's hash). Only the main suite's index is read: updates
/// rarely add files, and a package found there is then taken at its newest
/// version by the resolver.
pub fn contents(spec: &BaseSpec, cache: &Cache, progress: &Progress) -> Result<ContentsIndex> {
    let code = spec.suite.codename();
    let path = "main/Contents-amd64.gz";
    archive::with_release(
        spec.suite,
        &spec.mirror,
        code,
        spec.check_valid_until,
        |release, _| {
            let entry = archive::index_entry(&spec.mirror, code, release, path)?;
            let reduced = cache
                .dir(CacheDir::Contents)?
                .join(format!("{}.txt", entry.sha256));
            if let Ok(text) = std::fs::read_to_string(&reduced) {
                return Ok(ContentsIndex::from_text(&text));
            }
            let sp = progress.spinner(format!("Reading the {code} Contents index"));
            let gz = archive::download_index(&spec.mirror, code, release, path);
            sp.finish_and_clear();
            let gz = gz?;
            let idx = ContentsIndex::parse(std::io::BufReader::new(flate2::read::GzDecoder::new(
                gz.as_slice(),
            )))
            .with_context(|| format!("reading {}/dists/{code}/{path}", spec.mirror))?;
            crate::core::fs::write_atomic(&reduced, idx.to_text().as_bytes())?;
            Ok(idx)
        },
    )
}

/// `p` as recorded; `mirrors` maps its archive (its origin) to the mirror
/// that serves it.
fn record(p: &Package, mirrors: &BTreeMap<String, String>) -> PackageRecord {
    let mirror = mirrors.get(&p.origin).map_or("", String::as_str);
    PackageRecord {
        name: p.name.clone(),
        version: p.version.clone(),
        origin: p.origin.clone(),
        sha256: p.sha256.clone(),
        size: p.size,
        filename: p.filename.clone(),
        stanza: p.stanza.clone(),
        mirror: mirror.to_string(),
    }
}

/// `3.11.2-6+deb12u6` → `3.11.2`.
fn upstream(v: &str) -> String {
    let v = v.split_once(':').map_or(v, |(_, r)| r);
    v.split(['-', '+', '~']).next().unwrap_or(v).to_string()
}

/// Every package's entries, in `resolved`'s order. One worker takes a
/// package from download (or the cache) through the check against the
/// signed index's SHA-256 to its decoded entries, largest packages first:
/// decompressing (mostly xz) is the slow part of assembling a root, and
/// this way it starts on the first package to arrive instead of after the
/// last, and the largest (gcc, 19 MB of xz) never starts last, leaving one
/// core decoding alone.
fn fetch_and_read(
    resolved: &Resolved,
    purpose: Purpose,
    cache: &Cache,
    progress: &Progress,
) -> Result<Vec<Decoded>> {
    let dir = cache.dir(CacheDir::Debs)?;
    let missing: Vec<&PackageRecord> = resolved
        .packages
        .iter()
        .filter(|p| !deb_path(&dir, p).is_file())
        .collect();
    let pb = if missing.is_empty() {
        indicatif::ProgressBar::hidden()
    } else {
        progress.bytes(
            format!("Downloading {} Debian packages", missing.len()),
            missing.iter().map(|p| p.size).sum(),
        )
    };
    let mut order: Vec<usize> = (0..resolved.packages.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(resolved.packages[i].size));
    let workers = DOWNLOADS.max(std::thread::available_parallelism().map_or(2, |n| n.get()));
    let read = crate::core::parallel::map(workers, &order, |_, &i| {
        let p = &resolved.packages[i];
        if let Some(hit) = decoded_before(p) {
            return Ok(hit);
        }
        let bytes = deb_bytes(p, &dir, &pb)?;
        let entries = Decoded::new(read_deb(&format!("{}_{}.deb", p.name, p.version), &bytes)?);
        if read_again(p, purpose) {
            keep_decoded(p, &entries);
        }
        Ok(entries)
    });
    pb.finish_and_clear();
    let mut slots: Vec<Option<Decoded>> = resolved.packages.iter().map(|_| None).collect();
    for (i, entries) in order.into_iter().zip(read?) {
        slots[i] = Some(entries);
    }
    Ok(slots.into_iter().flatten().collect())
}

/// A package's entries as decoded once, shared.
type Decoded = std::sync::Arc<Vec<slimpack_debian::DebEntry>>;

/// Packages decoded in this process, by their checked SHA-256: a cold
/// build assembles the runtime, the runtime with the venv's libraries and
/// the builder, which share their libraries and interpreter (libc6 and
/// libpython3.11-stdlib three times), and decoding is most of what
/// assembling costs.
static DECODED: std::sync::Mutex<BTreeMap<String, Decoded>> =
    std::sync::Mutex::new(BTreeMap::new());

fn decoded_before(p: &PackageRecord) -> Option<Decoded> {
    DECODED.lock().ok()?.get(&p.sha256).cloned()
}

fn keep_decoded(p: &PackageRecord, entries: &Decoded) {
    if let Ok(mut d) = DECODED.lock() {
        d.insert(p.sha256.clone(), entries.clone());
    }
}

/// What another root of the same build likely reads again: every package
/// of a runtime, and the builder's libraries (what a runtime adds for
/// compiled code), not its compilers and headers (most of its bytes).
fn read_again(p: &PackageRecord, purpose: Purpose) -> bool {
    purpose == Purpose::Runtime || p.name.starts_with("lib") && !p.name.ends_with("-dev")
}

/// Where the cache keeps a package: by its hash.
fn deb_path(dir: &std::path::Path, p: &PackageRecord) -> std::path::PathBuf {
    dir.join(format!("{}.deb", p.sha256))
}

/// A package's bytes, checked against the signed index: from the cache
/// (trusted no more than the network: a copy that fails the check is
/// fetched again), else downloaded and cached.
fn deb_bytes(
    p: &PackageRecord,
    dir: &std::path::Path,
    pb: &indicatif::ProgressBar,
) -> Result<Vec<u8>> {
    let path = deb_path(dir, p);
    if let Ok(bytes) = std::fs::read(&path) {
        if check_sha256(&p.name, &bytes, &p.sha256).is_ok() {
            return Ok(bytes);
        }
    }
    let url = format!("{}/{}", p.mirror, p.filename);
    let bytes = http::get(&url, Some(pb))?;
    check_sha256(&url, &bytes, &p.sha256)?;
    crate::core::fs::write_atomic(&path, &bytes)?;
    Ok(bytes)
}

/// A package's copyright file (and its doc directory, or the link that
/// stands for it): Debian's terms for shipping its binaries, and what an
/// SBOM reads a package's license from.
fn is_license_path(path: &str) -> bool {
    path.strip_prefix("usr/share/doc/").is_some_and(|rest| {
        let rest = rest.trim_end_matches('/');
        !rest.is_empty()
            && (!rest.contains('/') || rest.split_once('/').is_some_and(|(_, f)| f == "copyright"))
    })
}

/// Leaves out what no app uses: docs, man pages, locales, glibc's iconv
/// modules (Python never loads them), the stdlib's IDE, test and packaging
/// helpers, and ca-certificates' individual files once bundled.
fn dropped(path: &str, python: &str) -> bool {
    if is_license_path(path) {
        return false;
    }
    const PREFIXES: &[&str] = &[
        "usr/share/doc/",
        "usr/share/man/",
        "usr/share/info/",
        "usr/share/locale/",
        "usr/share/lintian/",
        "usr/share/bug/",
        "usr/share/linda/",
        "usr/share/menu/",
        "usr/share/pixmaps/",
        "usr/share/applications/",
        "usr/share/bash-completion/",
        "usr/share/gdb/",
        // libstdc++'s pretty printers for gdb.
        "usr/share/gcc/",
        "usr/share/binfmts/",
        "usr/lib/x86_64-linux-gnu/gconv/",
        "usr/share/ca-certificates/",
        "usr/sbin/",
        "etc/cron.daily/",
        "etc/logrotate.d/",
        "usr/share/zoneinfo/right/",
        // The zones' source text, for zic: readers open the compiled zones.
        "usr/share/zoneinfo/tzdata.zi",
        "usr/share/python3/",
        "usr/share/debconf/",
        "usr/lib/mime/",
        "usr/share/mime/",
        "etc/ca-certificates/",
    ];
    if PREFIXES
        .iter()
        .any(|p| path.starts_with(p) || format!("{path}/") == *p)
    {
        return true;
    }
    let stdlib = format!("usr/lib/python{python}/");
    if let Some(rest) = path.strip_prefix(&stdlib) {
        let top = rest.split('/').next().unwrap_or("");
        let dynload = rest.strip_prefix("lib-dynload/");
        return unused_stdlib(top)
            || top.starts_with("config-")
            || dynload.is_some_and(test_extension);
    }
    // Interpreter helpers that are scripts needing a shell or pydoc.
    path.starts_with("usr/bin/") && !path.starts_with(&format!("usr/bin/python{python}"))
}

/// The top-level entries of a standard library that no web app uses:
/// IDLE, Tk, the test suite, pip's bootstrap, 2to3, pydoc's topics. One
/// list for Debian's stdlib and a standalone Python's.
pub(super) fn unused_stdlib(top: &str) -> bool {
    matches!(
        top,
        "idlelib"
            | "tkinter"
            | "turtledemo"
            | "lib2to3"
            | "pydoc_data"
            | "ensurepip"
            | "test"
            | "turtle.py"
            | "__phello__"
    )
}

/// CPython's own test-support extension modules (`_testcapi`…), which
/// only its test suite imports.
pub(super) fn test_extension(file: &str) -> bool {
    [
        "_test",
        "_ctypes_test",
        "xxlimited",
        "_xxtestfuzz",
        "xxsubtype",
    ]
    .iter()
    .any(|p| file.starts_with(p))
}

/// Where a package's programs are.
fn is_executable_path(path: &str) -> bool {
    path.starts_with("usr/bin/") || path.starts_with("usr/sbin/")
}

/// Resolves a relative symlink target against the link's original location,
/// giving an absolute path, so that moving the link into /usr keeps it right.
fn absolute_target(link_path: &str, target: &str) -> String {
    if target.starts_with('/') {
        return target.to_string();
    }
    let mut parts: Vec<&str> = link_path.split('/').collect();
    parts.pop();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

pub const NONROOT_UID: u64 = 65532;

/// The runtimes (and builders) being made in the background by [`prepare`]
/// (and [`prepare_builder`]), by key.
static PREPARING: std::sync::Mutex<Vec<(String, Preparing)>> = std::sync::Mutex::new(Vec::new());

/// One background preparation: the first to wait joins it, holding the
/// lock, so a second waiter waits for that instead of doing it again.
type Preparing = std::sync::Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>;

/// Whether a background preparation is on a cold build's longest path.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Urgency {
    /// The builder: everything compiled waits for it.
    Critical,
    /// A runtime: needed only once the venv is installed (and compiled),
    /// so it takes the cores the critical work leaves idle. Its thread and
    /// what it starts (the stdlib's compile) run at a lower priority.
    Spare,
}

/// Runs `work` on its own thread with its own handle on `cache` and no
/// progress shown, registered under `key` for [`wait_for_prepared`].
fn in_background(
    key: String,
    cache: &Cache,
    urgency: Urgency,
    work: impl FnOnce(&Cache, &Progress) + Send + 'static,
) {
    let root = cache.root().to_path_buf();
    let handle = std::thread::spawn(move || {
        if urgency == Urgency::Spare {
            // On Linux the nice value is the calling thread's, and the
            // threads and processes it starts inherit it. Relative to the
            // user's own nice value; best effort.
            // SAFETY: nice has no memory-safety preconditions.
            unsafe { libc::nice(10) };
        }
        if let Ok(cache) = Cache::open(&root) {
            work(&cache, &Progress::hidden());
        }
    });
    if let Ok(mut p) = PREPARING.lock() {
        p.push((
            key,
            std::sync::Arc::new(std::sync::Mutex::new(Some(handle))),
        ));
    }
}

/// What [`prepare`] makes of a runtime.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Prepare {
    /// Its root, then its layer: the runtime the image will likely ship.
    RootAndLayer,
    /// Its root alone: what a venv's libraries are checked against when
    /// the image will likely ship this runtime with more packages.
    Root,
}

/// Starts building the runtime (its root with the stdlib's bytecode, then,
/// if asked, its layer) in the background as soon as its packages are
/// resolved: the Python resolution, the venv's install and the builder's
/// downloads then run beside it instead of before it. [`root`] waits for
/// the root only, [`build`] for all of it; a failure here is left for them
/// to meet again and report.
pub fn prepare(spec: &BaseSpec, resolved: &Resolved, cache: &Cache, mtime: u64, what: Prepare) {
    let key = runtime_key(spec, resolved, mtime);
    let Ok(dir) = root_dir(cache, &key) else {
        return;
    };
    // A cached layer (perhaps only named by a build cache) is the runtime:
    // a root, if one is needed, is unpacked from it then.
    if cache
        .get::<RuntimeRecord>(RecordKind::RuntimeLayer, &key)
        .is_some()
    {
        return;
    }
    let layer = what == Prepare::RootAndLayer;
    if dir.is_dir() && !layer {
        return;
    }
    let signal = RootSignal::register(&key);
    let (spec, resolved) = (spec.clone(), resolved.clone());
    in_background(key, cache, Urgency::Spare, move |cache, quiet| {
        let Ok((mut b, stripped)) = assemble(&spec, &resolved, cache, quiet) else {
            return;
        };
        signal.done(dir.is_dir() || unpack_root(&mut b, &dir, mtime).is_ok());
        if layer {
            let _ = write_layer(b, stripped, &spec, resolved, cache, mtime, quiet);
        }
    });
}

/// The runtime's root file system, where its interpreter runs at build
/// time: unpacked once per runtime into the cache, straight from its
/// assembled packages (no layer is needed for it, nor written), or from
/// its layer when only that is cached.
pub fn root(
    spec: &BaseSpec,
    resolved: &Resolved,
    cache: &Cache,
    mtime: u64,
    progress: &Progress,
) -> Result<std::path::PathBuf> {
    let key = runtime_key(spec, resolved, mtime);
    RootSignal::wait(&key);
    let dir = root_dir(cache, &key)?;
    if dir.is_dir() {
        return Ok(dir);
    }
    let record = cache
        .get::<RuntimeRecord>(RecordKind::RuntimeLayer, &key)
        .filter(|r| cache.has_blob(&r.layer.digest));
    if let Some(r) = record {
        // Fetched first when a build cache only named it.
        cache.ensure_blob(&r.layer.digest)?;
        crate::sandbox::unpack(&cache.blobs, std::slice::from_ref(&r.layer), &dir, false)
            .context("unpacking the runtime")?;
        return Ok(dir);
    }
    let (mut b, _) = assemble(spec, resolved, cache, progress)?;
    unpack_root(&mut b, &dir, mtime)?;
    Ok(dir)
}

/// Where a runtime's root is unpacked: named by everything its layer is
/// made from, so that it needs no layer to be found.
fn root_dir(cache: &Cache, key: &str) -> Result<std::path::PathBuf> {
    Ok(cache
        .dir(CacheDir::Rootfs)?
        .join(format!("runtime-{}", &key[..32.min(key.len())])))
}

fn unpack_root(b: &mut LayerBuilder, dir: &std::path::Path, mtime: u64) -> Result<()> {
    crate::sandbox::unpack_tree(b, dir, mtime).context("unpacking the runtime")
}

/// Roots being unpacked in the background, by runtime key: true once
/// unpacked, false if that failed. A waiter for the root need not wait for
/// the layer's compression that follows.
type RootSlot = std::sync::Arc<std::sync::OnceLock<bool>>;
static ROOTS: std::sync::Mutex<BTreeMap<String, RootSlot>> = std::sync::Mutex::new(BTreeMap::new());

/// The background side of a root in [`ROOTS`]: it always answers, false
/// when dropped unanswered (an error, a panic), so no waiter hangs.
struct RootSignal(RootSlot);

impl RootSignal {
    fn register(key: &str) -> RootSignal {
        let slot = RootSlot::default();
        if let Ok(mut r) = ROOTS.lock() {
            r.insert(key.to_string(), slot.clone());
        }
        RootSignal(slot)
    }

    fn done(&self, unpacked: bool) {
        let _ = self.0.set(unpacked);
    }

    /// Waits for the root registered under `key`, if one is.
    fn wait(key: &str) {
        let slot = ROOTS.lock().ok().and_then(|r| r.get(key).cloned());
        if let Some(slot) = slot {
            slot.wait();
        }
    }
}

impl Drop for RootSignal {
    fn drop(&mut self) {
        self.done(false);
    }
}

/// Waits for the background work registered under `key` (a runtime's or
/// the builder's), if there is any.
fn wait_for_prepared(key: &str) {
    let slots: Vec<Preparing> = match PREPARING.lock() {
        Ok(p) => p
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, s)| s.clone())
            .collect(),
        Err(_) => Vec::new(),
    };
    for slot in slots {
        let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = slot.take() {
            let _ = h.join();
        }
    }
}

/// Everything the runtime layer is made from.
fn runtime_key(spec: &BaseSpec, resolved: &Resolved, mtime: u64) -> String {
    let mut h = KeyHasher::new(RecordKind::RuntimeLayer.as_str());
    h.part("policy", POLICY_VERSION)
        .part("suite", spec.suite.codename())
        .part("release", &resolved.release_version)
        .part("mtime", mtime.to_string());
    for p in &resolved.packages {
        h.part("pkg", &p.name).part("sha", &p.sha256);
    }
    if let Some(p) = &spec.standalone {
        h.part("standalone", &p.download.sha256);
    }
    for r in StripRule::ALL.into_iter().filter(|r| r.is_runtime()) {
        h.part("strip", format!("{}={}", r.as_str(), spec.strips(r)));
    }
    // A package asked for by name keeps every library (`trim`): the same
    // package set asked for differently is another layer.
    if spec.strips(StripRule::Libraries) {
        let asked: BTreeSet<&String> = spec.extra_packages.iter().collect();
        for p in asked {
            h.part("asked", p);
        }
    }
    // Only when asked: every other runtime keeps its key.
    for t in spec
        .tools
        .iter()
        .filter(|_| spec.purpose == Purpose::Runtime)
    {
        h.part("tool", t);
    }
    h.finish()
}

/// Builds (or reuses) the runtime layer for a resolved package set.
pub fn build(
    spec: &BaseSpec,
    resolved: Resolved,
    cache: &Cache,
    mtime: u64,
    progress: &Progress,
) -> Result<(Runtime, bool)> {
    wait_for_prepared(&runtime_key(spec, &resolved, mtime));
    build_now(spec, resolved, cache, mtime, progress)
}

fn build_now(
    spec: &BaseSpec,
    resolved: Resolved,
    cache: &Cache,
    mtime: u64,
    progress: &Progress,
) -> Result<(Runtime, bool)> {
    let key = runtime_key(spec, &resolved, mtime);
    if let Some(r) = cache.get::<RuntimeRecord>(RecordKind::RuntimeLayer, &key) {
        if cache.has_blob(&r.layer.digest) {
            return Ok((
                Runtime {
                    suite: spec.suite,
                    resolved,
                    layer: r.layer,
                    key,
                    stripped: r.stripped,
                },
                true,
            ));
        }
    }
    let (b, stripped) = assemble(spec, &resolved, cache, progress)?;
    let runtime = write_layer(b, stripped, spec, resolved, cache, mtime, progress)?;
    Ok((runtime, false))
}

/// Writes an assembled runtime's layer and records it.
fn write_layer(
    b: LayerBuilder,
    stripped: Vec<Applied>,
    spec: &BaseSpec,
    resolved: Resolved,
    cache: &Cache,
    mtime: u64,
    progress: &Progress,
) -> Result<Runtime> {
    let key = runtime_key(spec, &resolved, mtime);
    let sp = progress.spinner("Writing the runtime layer".into());
    let layer = b.write(&cache.blobs, mtime)?;
    let record = RuntimeRecord { layer, stripped };
    cache.put(RecordKind::RuntimeLayer, &key, &record)?;
    sp.finish_and_clear();
    Ok(Runtime {
        suite: spec.suite,
        resolved,
        layer: record.layer,
        key,
        stripped: record.stripped,
    })
}

/// dpkg's file lists (`/var/lib/dpkg/info/PKG.list`) of what each package
/// still has in the tree, so that `dpkg -S`, scanners and `slimpack
/// inspect` can tell whose a file is.
fn add_file_lists(b: &mut LayerBuilder, owned: &[(&PackageRecord, Vec<String>)]) -> Result<()> {
    for (p, paths) in owned {
        let mut list = String::from("/.\n");
        // A stdlib source whose bytecode ships instead is listed as that.
        let mut kept: Vec<String> = paths
            .iter()
            .filter_map(|path| {
                let pyc = format!("{path}c");
                match b.contains(path) {
                    true => Some(path.clone()),
                    false => (path.ends_with(".py") && b.contains(&pyc)).then_some(pyc),
                }
            })
            .collect();
        kept.sort();
        kept.dedup();
        for path in kept {
            list.push('/');
            list.push_str(path.trim_end_matches('/'));
            list.push('\n');
        }
        let arch = p
            .stanza
            .lines()
            .find_map(|l| l.strip_prefix("Architecture:"))
            .map(str::trim)
            .unwrap_or("amd64");
        let name = if p.stanza.lines().any(|l| l.trim() == "Multi-Arch: same") {
            format!("{}:{arch}", p.name)
        } else {
            p.name.clone()
        };
        b.add(
            &format!("var/lib/dpkg/info/{name}.list"),
            Entry::bytes(0o644, list),
        )?;
    }
    Ok(())
}

/// Every file of the resolved packages as one tree, trimmed by the policy
/// of `spec.purpose` and the runtime's strip rules (what they took out is
/// returned), with the system files dpkg's scripts would have made.
fn assemble(
    spec: &BaseSpec,
    resolved: &Resolved,
    cache: &Cache,
    progress: &Progress,
) -> Result<(LayerBuilder, Vec<Applied>)> {
    let python = spec.suite.python();
    let drop = |path: &str, tool: bool| match spec.purpose {
        Purpose::Runtime if tool && is_executable_path(path) => false,
        Purpose::Runtime => dropped(path, python),
        Purpose::Builder => dropped_from_builder(path),
    };
    let names: BTreeSet<&str> = resolved.packages.iter().map(|p| p.name.as_str()).collect();
    let mut b = LayerBuilder::new();
    let mut ca_roots: Vec<(String, Vec<u8>)> = Vec::new();
    let mut owned: Vec<(&PackageRecord, Vec<String>)> = Vec::new();
    let read = fetch_and_read(resolved, spec.purpose, cache, progress)?;
    for (entries, p) in read.into_iter().zip(&resolved.packages) {
        let tool = spec.tools.contains(&p.name);
        owned.push((p, Vec::new()));
        // A package no other root keeps is taken, not copied.
        for e in std::sync::Arc::unwrap_or_clone(entries) {
            let Some(path) = merged_usr(&e.path) else {
                continue;
            };
            if let (true, DebEntryKind::File(data)) = (
                path.starts_with("usr/share/ca-certificates/") && path.ends_with(".crt"),
                &e.kind,
            ) {
                ca_roots.push((path.clone(), data.clone()));
            }
            if drop(&path, tool) {
                continue;
            }
            let moved = path != e.path;
            let kind = match e.kind {
                DebEntryKind::Dir => EntryKind::Dir,
                DebEntryKind::File(data) => EntryKind::Bytes(data),
                DebEntryKind::Symlink(t) if moved => {
                    EntryKind::Symlink(absolute_target(&e.path, &t))
                }
                DebEntryKind::Symlink(t) => EntryKind::Symlink(t),
                DebEntryKind::Hardlink(t) => EntryKind::Hardlink(merged_usr(&t).unwrap_or(t)),
            };
            if let Some((_, paths)) = owned.last_mut() {
                paths.push(path.clone());
            }
            if matches!(kind, EntryKind::Dir) && b.contains(&path) {
                continue;
            }
            b.add(&path, Entry::new(e.mode, kind))?;
        }
    }
    // Extension modules whose libraries the policy left out.
    let dynload = format!("usr/lib/python{python}/lib-dynload/");
    b.retain(|p, _| {
        let Some(file) = p.strip_prefix(dynload.as_str()) else {
            return true;
        };
        !OPTIONAL_EXTENSIONS.iter().any(|(prefix, libs)| {
            file.starts_with(prefix) && !libs.iter().any(|l| names.contains(l))
        })
    });
    // Links into the dropped directories would dangle.
    let dangling: Vec<String> = b
        .iter()
        .filter_map(|(p, e)| match &e.kind {
            EntryKind::Symlink(t)
                if t.starts_with('/')
                    && drop(t.trim_start_matches('/'), false)
                    && !b.contains(t.trim_start_matches('/')) =>
            {
                Some(p.to_string())
            }
            _ => None,
        })
        .collect();
    for p in dangling {
        b.remove(&p);
    }
    if let Some(p) = &spec.standalone {
        super::standalone::add(&mut b, p, spec.purpose == Purpose::Builder, cache, progress)?;
    }
    add_system_files(&mut b, spec, resolved, ca_roots)?;
    // The interpreter runs in the tree for its bytecode: after the system files.
    let stripped = trim(&mut b, spec, &owned, cache, progress)?;
    if spec.purpose == Purpose::Runtime {
        link_repeated_copyrights(&mut b);
        add_file_lists(&mut b, &owned)?;
    }
    if spec.purpose == Purpose::Builder {
        if !b.contains("usr/bin/sh") {
            b.add("usr/bin/sh", Entry::symlink("dash"))?;
        }
        // Mount points for the host's name resolution while building.
        for f in ["etc/resolv.conf", "etc/hosts"] {
            b.add(f, Entry::bytes(0o644, Vec::new()))?;
        }
    }
    Ok((b, stripped))
}

/// Debian's copyright files repeat across the packages of one source
/// (Kerberos' four, Python's two): each repeat becomes a hard link to the
/// first, so the layer holds the text once.
fn link_repeated_copyrights(b: &mut LayerBuilder) {
    let mut first: BTreeMap<Vec<u8>, String> = BTreeMap::new();
    let mut links: Vec<(String, String)> = Vec::new();
    for (path, e) in b.iter() {
        if let (true, EntryKind::Bytes(data)) = (
            path.starts_with("usr/share/doc/") && path.ends_with("/copyright"),
            &e.kind,
        ) {
            match first.get(data) {
                Some(target) => links.push((path.to_string(), target.clone())),
                None => {
                    first.insert(data.clone(), path.to_string());
                }
            }
        }
    }
    for (path, target) in links {
        // Both paths are this builder's own: always valid.
        let _ = b.add(&path, Entry::new(0o644, EntryKind::Hardlink(target)));
    }
}

/// Applies the runtime's strip rules ([`super::trim`]) to the assembled tree.
fn trim(
    b: &mut LayerBuilder,
    spec: &BaseSpec,
    owned: &[(&PackageRecord, Vec<String>)],
    cache: &Cache,
    progress: &Progress,
) -> Result<Vec<Applied>> {
    let mut stripped = Vec::new();
    if spec.strips(StripRule::Libraries) {
        // A package asked for by name keeps every library it has.
        let asked: BTreeSet<String> = owned
            .iter()
            .filter(|(p, _)| spec.extra_packages.contains(&p.name) || spec.tools.contains(&p.name))
            .flat_map(|(_, paths)| paths.iter().cloned())
            .collect();
        stripped.push(super::trim::unlinked_libraries(b, &asked).by(StripRule::Libraries));
    }
    if spec.strips(StripRule::StdlibSources) {
        let (interpreter, stdlib) = spec.python_paths();
        stripped.push(super::trim::stdlib_bytecode(
            b,
            &interpreter,
            &stdlib,
            cache,
            progress,
        )?);
    }
    Ok(stripped)
}

/// The builder root file system for a resolved builder package set,
/// unpacked once into the cache (named by the package hashes).
pub fn builder_rootfs(
    spec: &BaseSpec,
    resolved: &Resolved,
    cache: &Cache,
    progress: &Progress,
) -> Result<std::path::PathBuf> {
    wait_for_prepared(&builder_key(spec));
    builder_rootfs_now(spec, resolved, cache, progress)
}

/// What [`prepare_builder`] registers its work under.
fn builder_key(spec: &BaseSpec) -> String {
    format!("builder {}", spec.key())
}

/// Starts resolving, downloading and unpacking the builder `spec` in the
/// background, before the Python resolution says whether anything needs
/// compiling: for a dependency known to have no wheel ([`crate::python::
/// SDIST_ONLY`]), the builder is needed, and its 70 packages download
/// beside the resolution instead of after it. [`builder_rootfs`] waits for
/// it; a failure is left for the build to meet again and report.
pub fn prepare_builder(spec: &BaseSpec, cache: &Cache) {
    let spec = spec.clone();
    in_background(
        builder_key(&spec),
        cache,
        Urgency::Critical,
        move |cache, quiet| {
            if let Ok(resolved) = resolve(&spec, cache, false, quiet) {
                let _ = builder_rootfs_now(&spec, &resolved, cache, quiet);
            }
        },
    );
}

fn builder_rootfs_now(
    spec: &BaseSpec,
    resolved: &Resolved,
    cache: &Cache,
    progress: &Progress,
) -> Result<std::path::PathBuf> {
    let mut h = KeyHasher::new("builder-rootfs");
    h.part("policy", POLICY_VERSION)
        .part("builder-policy", BUILDER_POLICY)
        .part("suite", spec.suite.codename());
    for p in &resolved.packages {
        h.part("pkg", &p.name).part("sha", &p.sha256);
    }
    if let Some(p) = &spec.standalone {
        h.part("standalone", &p.download.sha256);
    }
    let dir = cache
        .dir(CacheDir::Rootfs)?
        .join(format!("builder-{}", &h.finish()[..32]));
    if dir.is_dir() {
        return Ok(dir);
    }
    let (mut b, _) = assemble(spec, resolved, cache, progress)?;
    let sp = progress.spinner("Unpacking the builder".into());
    let result = crate::sandbox::unpack_tree(&mut b, &dir, crate::core::time::DEFAULT_EPOCH);
    sp.finish_and_clear();
    result.context("unpacking the builder root file system")?;
    Ok(dir)
}

/// The builder keeps headers, static libraries and tools. What goes:
/// documentation, and the largest files no build of a Python package
/// reads (70 MB of a 276 MB builder, a quarter of what unpacking it
/// writes): gcc's LTO dump tool, a debugging aid (`lto1`, which `-flto`
/// needs, stays); the interpreter's static libraries (an extension links
/// no libpython, and embedding links the shared one, which stays); glibc's
/// (only `-static` programs link it; `libc_nonshared.a`, which every link
/// reads, stays); the sanitizers' static runtimes (their shared ones are
/// not installed either: [`NOT_IN_BUILDER`]).
fn dropped_from_builder(path: &str) -> bool {
    const SANITIZERS: [&str; 5] = ["libasan", "libtsan", "liblsan", "libubsan", "libhwasan"];
    let file = path.rsplit('/').next().unwrap_or(path);
    let docs = [
        "usr/share/doc/",
        "usr/share/man/",
        "usr/share/info/",
        "usr/share/locale/",
        "usr/share/lintian/",
    ]
    .iter()
    .any(|p| path.starts_with(p));
    docs || file.contains("-lto-dump-")
        || file.starts_with("libpython3") && file.ends_with(".a")
        || path.starts_with("usr/lib/") && path.ends_with("-linux-gnu/libc.a")
        || path.starts_with("usr/lib/gcc/")
            && file.ends_with(".a")
            && SANITIZERS.iter().any(|s| file.starts_with(s))
}

/// Libraries Debian installs under an alternative (BLAS and LAPACK), with
/// the link `update-alternatives` would make in a maintainer script: the
/// optimised implementation when there is one, else the reference one.
const LIBRARY_ALTERNATIVES: &[(&str, &[&str])] = &[
    (
        "libblas.so.3",
        &["openblas-pthread", "blis-pthread", "atlas", "blas"],
    ),
    ("liblapack.so.3", &["openblas-pthread", "atlas", "lapack"]),
];

fn library_alternatives(b: &mut LayerBuilder) -> Result<()> {
    const DIR: &str = "usr/lib/x86_64-linux-gnu";
    for (lib, providers) in LIBRARY_ALTERNATIVES {
        let link = format!("{DIR}/{lib}");
        if b.contains(&link) {
            continue;
        }
        if let Some(p) = providers
            .iter()
            .find(|p| b.contains(&format!("{DIR}/{p}/{lib}")))
        {
            b.add(&link, Entry::symlink(format!("{p}/{lib}")))?;
        }
    }
    Ok(())
}

fn add_system_files(
    b: &mut LayerBuilder,
    spec: &BaseSpec,
    resolved: &Resolved,
    mut roots: Vec<(String, Vec<u8>)>,
) -> Result<()> {
    let suite = spec.suite;
    for top in ["bin", "sbin", "lib", "lib64"] {
        b.add(top, Entry::symlink(format!("usr/{top}")))?;
    }
    library_alternatives(b)?;
    if !b.contains("usr/lib64") {
        b.add("usr/lib64", Entry::dir(0o755))?;
    }
    // `python3` is the image's interpreter, whichever it is.
    let python = match &spec.standalone {
        Some(p) => p.interpreter(),
        None => format!("python{}", suite.python()),
    };
    b.add("usr/bin/python3", Entry::symlink(python.clone()))?;
    b.add("usr/bin/python", Entry::symlink(python))?;
    b.add("tmp", Entry::dir(0o1777))?;
    b.add("var/tmp", Entry::dir(0o1777))?;
    b.add("root", Entry::dir(0o700))?;
    let mut home = Entry::dir(0o700);
    home.uid = NONROOT_UID;
    home.gid = NONROOT_UID;
    b.add("home/nonroot", home)?;
    for d in ["proc", "sys", "dev", "run", "etc", "app", "opt"] {
        if !b.contains(d) {
            b.add(d, Entry::dir(0o755))?;
        }
    }
    b.add(
        "etc/passwd",
        Entry::bytes(
            0o644,
            "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
        ),
    )?;
    b.add(
        "etc/group",
        Entry::bytes(0o644, "root:x:0:\nnogroup:x:65534:\nnonroot:x:65532:\n"),
    )?;
    b.add(
        "etc/nsswitch.conf",
        Entry::bytes(0o644, "passwd: files\ngroup: files\nhosts: files dns\n"),
    )?;
    let v = suite.version_id();
    let code = suite.codename();
    b.add(
        "etc/os-release",
        Entry::bytes(0o644, format!(
            "PRETTY_NAME=\"Debian GNU/Linux {v} ({code})\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"{v}\"\nVERSION=\"{v} ({code})\"\nVERSION_CODENAME={code}\nID=debian\nHOME_URL=\"https://www.debian.org/\"\nSUPPORT_URL=\"https://www.debian.org/support\"\nBUG_REPORT_URL=\"https://bugs.debian.org/\"\n"
        )),
    )?;
    b.add("usr/lib/os-release", Entry::symlink("../../etc/os-release"))?;
    let point = if resolved.release_version.is_empty() {
        v.to_string()
    } else {
        resolved.release_version.clone()
    };
    b.add(
        "etc/debian_version",
        Entry::bytes(0o644, format!("{point}\n")),
    )?;

    // The dpkg database, so that dpkg-query and scanners list the packages.
    let mut status = String::new();
    for p in &resolved.packages {
        let mut skipping = false;
        for line in p.stanza.lines() {
            if !line.starts_with([' ', '\t']) {
                let field = line.split(':').next().unwrap_or("");
                skipping = matches!(
                    field,
                    "Filename"
                        | "Size"
                        | "MD5sum"
                        | "SHA256"
                        | "SHA1"
                        | "Description-md5"
                        | "Tag"
                        | "Task"
                );
                if !skipping {
                    status.push_str(line);
                    status.push('\n');
                    if field == "Package" {
                        status.push_str("Status: install ok installed\n");
                    }
                }
            } else if !skipping {
                status.push_str(line);
                status.push('\n');
            }
        }
        status.push('\n');
    }
    b.add("var/lib/dpkg/status", Entry::bytes(0o644, status))?;
    b.add("var/lib/dpkg/info", Entry::dir(0o755))?;

    // What update-ca-certificates would have generated: one bundle of the
    // Mozilla roots, where OpenSSL (and so Python's ssl) looks for it.
    roots.sort();
    if roots.is_empty() {
        bail!("ca-certificates shipped no certificates; the image could not verify TLS");
    }
    let mut bundle = Vec::new();
    for (_, pem) in &roots {
        bundle.extend_from_slice(pem);
        if !pem.ends_with(b"\n") {
            bundle.push(b'\n');
        }
    }
    b.add(
        "etc/ssl/certs/ca-certificates.crt",
        Entry::bytes(0o644, bundle),
    )?;
    b.add(
        "usr/lib/ssl/cert.pem",
        Entry::symlink("/etc/ssl/certs/ca-certificates.crt"),
    )?;
    b.add("usr/lib/ssl/certs", Entry::symlink("/etc/ssl/certs"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `name`'s record, for the bytes `good`, on a mirror at `port`.
    fn record_of(name: &str, good: &[u8], port: u16) -> PackageRecord {
        PackageRecord {
            name: name.into(),
            version: "1".into(),
            origin: "bookworm".into(),
            sha256: slimpack_debian::sha256_hex(good),
            size: good.len() as u64,
            filename: format!("pool/main/f/foo/{name}_1_amd64.deb"),
            stanza: String::new(),
            mirror: format!("http://127.0.0.1:{port}/debian"),
        }
    }

    fn http_ok(body: &[u8]) -> Vec<u8> {
        let mut r =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        r.extend_from_slice(body);
        r
    }

    /// A package whose data is one file, `etc/{name}` holding `text`, in
    /// an uncompressed tar, as dpkg-deb -Znone makes.
    fn deb_holding(name: &str, text: &str) -> Vec<u8> {
        deb_of(&[(&format!("etc/{name}"), text)])
    }

    /// A package of these files (path, text).
    fn deb_of(files: &[(&str, &str)]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for (path, text) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(text.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, format!("./{path}"), text.as_bytes())
                .unwrap();
        }
        let data = tar.into_inner().unwrap();
        let mut deb = ar::Builder::new(Vec::new());
        for (member, body) in [("debian-binary", &b"2.0\n"[..]), ("data.tar", &data)] {
            let header = ar::Header::new(member.as_bytes().to_vec(), body.len() as u64);
            deb.append(&header, body).unwrap();
        }
        deb.into_inner().unwrap()
    }

    /// A runtime's packages are decoded once per process: a second root
    /// reads them with no request and no cached file. A builder's compilers
    /// are not kept (their bytes are most of a builder's).
    #[test]
    fn a_runtimes_packages_are_decoded_once_a_compilers_are_not_kept() {
        let cache_dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(cache_dir.path()).unwrap();
        let resolved_with = |p: PackageRecord| Resolved {
            fetched_at: 0,
            release_version: String::new(),
            python_version: String::new(),
            glibc_version: String::new(),
            packages: vec![p],
            skipped: Vec::new(),
        };
        let quiet = Progress::hidden();
        // Unique bytes: the decoded packages are the whole process's.
        let unique = format!("{:?}", std::time::SystemTime::now());
        for (name, purpose, kept) in [
            ("libdecoded1", Purpose::Runtime, true),
            ("gcc-decoded", Purpose::Builder, false),
        ] {
            let deb = deb_holding(name, &unique);
            let sent = deb.clone();
            let p = record_of(
                name,
                &deb,
                crate::registry::testing::serve(1, move |_| http_ok(&sent)),
            );
            let resolved = resolved_with(p.clone());
            let first = fetch_and_read(&resolved, purpose, &cache, &quiet).unwrap();
            assert_eq!(first[0][0].path, format!("etc/{name}"));
            std::fs::remove_file(deb_path(&cache.dir(CacheDir::Debs).unwrap(), &p)).unwrap();
            let again = fetch_and_read(&resolved, purpose, &cache, &quiet);
            match kept {
                true => assert_eq!(again.unwrap(), first, "{name}"),
                false => assert!(again.is_err(), "{name} was kept"),
            }
        }
    }

    /// The tree under `dir`: each path with its kind, mode, time and
    /// content (or link target).
    fn snapshot(dir: &std::path::Path) -> Vec<(String, String)> {
        use std::os::unix::fs::MetadataExt;
        walkdir::WalkDir::new(dir)
            .sort_by_file_name()
            .into_iter()
            .map(|e| {
                let e = e.unwrap();
                let m = e.path().symlink_metadata().unwrap();
                let what = match m.file_type() {
                    t if t.is_symlink() => format!("-> {:?}", std::fs::read_link(e.path())),
                    t if t.is_file() => format!("{:?}", std::fs::read(e.path()).unwrap()),
                    _ => "dir".into(),
                };
                let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
                (rel, format!("{:o} {} {what}", m.mode(), m.mtime()))
            })
            .collect()
    }

    /// A runtime prepared for its root alone is unpacked without a layer
    /// written; the layer written later holds exactly that root.
    #[test]
    fn a_runtimes_root_needs_no_layer_and_is_what_its_layer_holds() {
        let cache_dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(cache_dir.path()).unwrap();
        let quiet = Progress::hidden();
        let name = "librootonly1";
        let unique = format!("{:?}", std::time::SystemTime::now());
        // A runtime has roots to trust: ca-certificates' are made a bundle.
        let deb = deb_of(&[
            (&format!("etc/{name}"), &unique),
            (
                "usr/share/ca-certificates/test/root.crt",
                "-----BEGIN CERTIFICATE-----\n",
            ),
        ]);
        let sent = deb.clone();
        let port = crate::registry::testing::serve(1, move |_| http_ok(&sent));
        let resolved = Resolved {
            fetched_at: 0,
            release_version: "12.0".into(),
            python_version: String::new(),
            glibc_version: String::new(),
            packages: vec![record_of(name, &deb, port)],
            skipped: Vec::new(),
        };
        // No interpreter in this runtime: nothing to compile or scan.
        let spec = BaseSpec {
            suite: Suite::Bookworm,
            mirror: format!("http://127.0.0.1:{port}/debian"),
            security_mirror: String::new(),
            extra_packages: Vec::new(),
            purpose: Purpose::Runtime,
            tools: Vec::new(),
            standalone: None,
            check_valid_until: true,
            no_strip: vec![StripRule::Libraries, StripRule::StdlibSources],
        };
        let mtime = 1_234_567_890;
        prepare(&spec, &resolved, &cache, mtime, Prepare::Root);
        let root = root(&spec, &resolved, &cache, mtime, &quiet).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("etc").join(name)).unwrap(),
            unique
        );
        let key = runtime_key(&spec, &resolved, mtime);
        assert!(
            cache
                .get::<RuntimeRecord>(RecordKind::RuntimeLayer, &key)
                .is_none(),
            "a layer was written for a root"
        );

        let (runtime, cached) = build(&spec, resolved.clone(), &cache, mtime, &quiet).unwrap();
        assert!(!cached);
        let from_layer = cache_dir.path().join("from-layer");
        crate::sandbox::unpack(&cache.blobs, &[runtime.layer], &from_layer, false).unwrap();
        assert_eq!(snapshot(&root), snapshot(&from_layer));
    }

    /// The builder leaves out what no build reads, and keeps what links
    /// and compiles need (libgcc.a in every shared object, the linker
    /// script's libc_nonshared.a, lto1 for `-flto`, the shared libpython).
    #[test]
    fn the_builder_leaves_out_only_what_no_build_reads() {
        for dropped in [
            "usr/share/doc/gcc-12/README",
            "usr/bin/x86_64-linux-gnu-lto-dump-12",
            "usr/bin/aarch64-linux-gnu-lto-dump-12",
            "usr/lib/python3.11/config-3.11-x86_64-linux-gnu/libpython3.11.a",
            "usr/lib/python3.11/config-3.11-x86_64-linux-gnu/libpython3.11-pic.a",
            "usr/lib/x86_64-linux-gnu/libc.a",
            "usr/lib/gcc/x86_64-linux-gnu/12/libasan.a",
            "usr/lib/gcc/x86_64-linux-gnu/12/libubsan.a",
        ] {
            assert!(dropped_from_builder(dropped), "{dropped}");
        }
        for kept in [
            "usr/lib/gcc/x86_64-linux-gnu/12/libgcc.a",
            "usr/lib/gcc/x86_64-linux-gnu/12/lto1",
            "usr/lib/gcc/x86_64-linux-gnu/12/libasan_preinit.o",
            "usr/lib/x86_64-linux-gnu/libc_nonshared.a",
            "usr/lib/x86_64-linux-gnu/libc.so",
            "usr/lib/x86_64-linux-gnu/libpython3.11.so",
            "usr/lib/x86_64-linux-gnu/libcrypto.a",
            "usr/include/python3.11/Python.h",
            "usr/bin/x86_64-linux-gnu-gcc-12",
        ] {
            assert!(!dropped_from_builder(kept), "{kept}");
        }
    }

    /// A cached package is trusted no more than the network: a copy that
    /// fails its hash is fetched again and replaced, a download that fails
    /// it is refused (and not cached), and a sound copy costs no request.
    #[test]
    fn a_corrupt_cached_package_is_fetched_again_and_a_bad_download_refused() {
        let good = b"!<arch>\nthe package".to_vec();
        let record = |port: u16| record_of("libfoo1", &good, port);
        let dir = tempfile::tempdir().unwrap();
        let pb = indicatif::ProgressBar::hidden();
        let sent = good.clone();
        let p = record(crate::registry::testing::serve(1, move |_| http_ok(&sent)));
        let cached = deb_path(dir.path(), &p);
        std::fs::write(&cached, b"truncated").unwrap();
        assert_eq!(deb_bytes(&p, dir.path(), &pb).unwrap(), good);
        assert_eq!(std::fs::read(&cached).unwrap(), good, "the cache is mended");

        // Sound in the cache: no request (the server is gone).
        assert_eq!(deb_bytes(&p, dir.path(), &pb).unwrap(), good);

        let p = record(crate::registry::testing::serve(1, move |_| {
            http_ok(b"tampered")
        }));
        std::fs::write(&cached, b"truncated").unwrap();
        let err = deb_bytes(&p, dir.path(), &pb).unwrap_err().to_string();
        assert!(err.contains("libfoo1_1_amd64.deb"), "{err}");
        assert_eq!(std::fs::read(&cached).unwrap(), b"truncated");
    }

    /// Cut anywhere (around multi-byte text, runs of blank lines, a last
    /// stanza without its newline, one stanza, none), the halves give the
    /// packages of the whole, in order.
    #[test]
    fn an_index_parsed_in_halves_is_the_index_parsed_whole() {
        let stanza = |i: usize| {
            format!("Package: p{i}\nVersion: {i}\nArchitecture: amd64\nDescription: caf\u{e9} \u{2014} {}\n .\n more\nFilename: pool/p{i}.deb\nSize: {i}\nSHA256: {}\n", "\u{e9}".repeat(i % 7), "0".repeat(64))
        };
        let seps = ["\n", "\n\n", "\n\n\n"];
        let mut texts = vec![String::new(), stanza(1), stanza(2).trim_end().to_string()];
        for n in [2, 3, 10, 57] {
            let mut t = String::new();
            for i in 0..n {
                t.push_str(&stanza(i));
                t.push_str(seps[i % 3]);
            }
            texts.push(t.clone());
            texts.push(t.trim_end().to_string());
        }
        for t in &texts {
            let whole = parse_packages(t, "bookworm").unwrap();
            let halves = parse_in_halves(t, "bookworm").unwrap();
            let stanzas = |v: &[Package]| v.iter().map(|p| p.stanza.clone()).collect::<Vec<_>>();
            assert_eq!(stanzas(&halves), stanzas(&whole), "{t:?}");
        }
    }

    /// Only a single, exact-version dependency that is no `-dev` package is
    /// taken for the library a `-dev` package is for; alternatives, ranges,
    /// other `-dev` packages and names the index lacks give nothing.
    #[test]
    fn a_dev_package_names_its_library_by_its_exact_dependency() {
        let stanza = |name: &str, depends: &str| {
            format!("Package: {name}\nVersion: 1\nArchitecture: amd64\nDepends: {depends}\nFilename: pool/{name}.deb\nSize: 1\nSHA256: {}\n", "0".repeat(64))
        };
        let text = [
            stanza("libpq-dev", "libpq5 (= 15.10-0+deb12u1), libssl-dev"),
            stanza("libalt-dev", "libalt1 (= 1) | libalt2 (= 1)"),
            stanza("librange-dev", "librange1 (>= 1)"),
            stanza(
                "libdouble-dev",
                "libdouble-common-dev (= 1), libpq5 (= 15.10-0+deb12u1)",
            ),
        ]
        .join("\n");
        let resolver = Resolver::new(vec![parse_packages(&text, "bookworm").unwrap()], "amd64");
        let names = |d: &[&str]| -> Vec<String> {
            libraries_in(
                &resolver,
                &d.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
        };
        assert_eq!(names(&["libpq-dev", "libdouble-dev"]), vec!["libpq5"]);
        assert!(names(&["libalt-dev", "librange-dev", "nosuch-dev"]).is_empty());
    }

    #[test]
    fn moved_links_keep_their_targets() {
        assert_eq!(
            absolute_target("lib/x86_64-linux-gnu/libz.so.1", "libz.so.1.2.13"),
            "/lib/x86_64-linux-gnu/libz.so.1.2.13"
        );
        assert_eq!(absolute_target("lib/a/b", "../../usr/lib/c"), "/usr/lib/c");
    }

    #[test]
    fn drop_policy() {
        assert!(!dropped("usr/share/doc/libc6/copyright", "3.11"));
        assert!(!dropped("usr/share/doc/libpython3.11-minimal", "3.11"));
        assert!(dropped("usr/share/doc/libc6/changelog.Debian.gz", "3.11"));
        assert!(dropped("usr/share/doc/libc6/sub/copyright", "3.11"));
        assert!(dropped("usr/lib/x86_64-linux-gnu/gconv/UTF-16.so", "3.11"));
        assert!(dropped("usr/lib/python3.11/idlelib/idle.py", "3.11"));
        assert!(dropped("usr/lib/python3.11/ensurepip/__init__.py", "3.11"));
        assert!(!dropped("usr/lib/python3.11/json/__init__.py", "3.11"));
        assert!(!dropped("usr/bin/python3.11", "3.11"));
        assert!(dropped("usr/bin/pydoc3.11", "3.11"));
        assert!(!dropped("usr/share/zoneinfo/Europe/Paris", "3.11"));
        assert!(dropped("usr/share/zoneinfo/tzdata.zi", "3.11"));
        let dynload = "usr/lib/python3.11/lib-dynload";
        assert!(dropped(
            &format!("{dynload}/_testcapi.cpython-311-x86_64-linux-gnu.so"),
            "3.11"
        ));
        assert!(dropped(
            &format!("{dynload}/_ctypes_test.cpython-311-x86_64-linux-gnu.so"),
            "3.11"
        ));
        assert!(dropped(
            &format!("{dynload}/xxlimited_35.cpython-311-x86_64-linux-gnu.so"),
            "3.11"
        ));
        assert!(!dropped(
            &format!("{dynload}/_ctypes.cpython-311-x86_64-linux-gnu.so"),
            "3.11"
        ));
        assert!(!dropped(
            &format!("{dynload}/_typing.cpython-311-x86_64-linux-gnu.so"),
            "3.11"
        ));
    }

    #[test]
    fn repeated_copyright_files_are_hard_links() {
        let mut b = LayerBuilder::new();
        let text = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n";
        for p in ["libkrb5-3", "libk5crypto3", "libgssapi-krb5-2"] {
            b.add(
                &format!("usr/share/doc/{p}/copyright"),
                Entry::bytes(0o644, text),
            )
            .unwrap();
        }
        b.add(
            "usr/share/doc/libc6/copyright",
            Entry::bytes(0o644, "other"),
        )
        .unwrap();
        let mut unlinked = Vec::new();
        b.clone().write_tar(&mut unlinked, 0).unwrap();
        link_repeated_copyrights(&mut b);
        let kind = |p: &str| {
            b.get(&format!("usr/share/doc/{p}/copyright"))
                .unwrap()
                .kind
                .clone()
        };
        // The first in path order keeps the bytes; the tar writes the others as links to it.
        assert!(matches!(kind("libgssapi-krb5-2"), EntryKind::Bytes(_)));
        for p in ["libk5crypto3", "libkrb5-3"] {
            assert!(
                matches!(kind(p), EntryKind::Hardlink(t) if t == "usr/share/doc/libgssapi-krb5-2/copyright"),
                "{p}"
            );
        }
        assert!(matches!(kind("libc6"), EntryKind::Bytes(_)));
        // The two repeats' bytes (a 512-byte block each) are not written.
        let mut linked = Vec::new();
        b.write_tar(&mut linked, 0).unwrap();
        assert_eq!(linked.len() + 2 * 512, unlinked.len());
    }

    #[test]
    fn upstream_versions() {
        assert_eq!(upstream("3.11.2-6+deb12u6"), "3.11.2");
        assert_eq!(upstream("2.36-9+deb12u13"), "2.36");
        assert_eq!(upstream("1:2.3~rc1-1"), "2.3");
    }
}
