//! The runtime base: which Debian release (and so which Python) the image
//! is built on, or a registry image with its own Python.

pub mod archive;
pub mod debian;
pub mod registry;
pub mod standalone;
mod trim;

use crate::project::pyproject::python_satisfies;
use crate::settings::PythonSource;
use anyhow::{bail, Context, Result};
use slimpack_debian::Suite;

/// In the order they are preferred when several satisfy a request: the
/// stable releases newest first, then the old one whose support ended, then
/// testing (only when nothing stable gives the Python asked for).
const SUITES: [Suite; 4] = [
    Suite::Trixie,
    Suite::Bookworm,
    Suite::Bullseye,
    Suite::Forky,
];

/// What the user should know about building on `suite`.
pub fn suite_warning(suite: Suite) -> Option<String> {
    match suite {
        Suite::Bullseye => Some("Python 3.9 comes from Debian 11 (bullseye), whose security support has ended (LTS closed in August 2026): the image gets no more security fixes; move to Python 3.11 or newer".into()),
        Suite::Forky => Some("Python 3.14 comes from Debian testing (forky), which is not a stable release: its packages change under you, and a build may not repeat next week".into()),
        Suite::Bookworm | Suite::Trixie => None,
    }
}

fn available() -> String {
    SUITES
        .iter()
        .map(|s| {
            format!(
                "Python {} (Debian {} {})",
                s.python(),
                s.version_id(),
                s.codename()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The registry image named as the base, if the base is one (anything but
/// `debian`, `debian:trixie`, `debian:bookworm`, `trixie`, `bookworm`,
/// which mean signed Debian packages; `docker.io/library/debian:trixie` is
/// the registry image).
pub fn registry_base(base: Option<&str>) -> Result<Option<crate::registry::Reference>> {
    let Some(b) = base else { return Ok(None) };
    let short = b.strip_prefix("debian:").unwrap_or(b);
    if b == "debian" || Suite::from_codename(short).is_some() {
        return Ok(None);
    }
    if !b.contains('/') && !b.contains(':') {
        bail!("unknown base {b:?}: use debian:trixie (Python 3.13), debian:bookworm (Python 3.11), debian:bullseye (3.9), debian:forky (3.14), or a registry image such as python:3.12-slim");
    }
    if b.starts_with("debian:") {
        bail!("{b:?} is not a Debian release slimpack builds from (trixie, bookworm, bullseye, forky); for the Docker Hub image write docker.io/library/{b}");
    }
    crate::registry::Reference::parse(b)
        .map(Some)
        .with_context(|| format!("base {b:?}"))
}

/// The Debian suite whose packages go with a registry base's Python (for
/// the builder stage and library names): same Python if there is one.
pub fn suite_for_python(minor: &str) -> Suite {
    SUITES
        .iter()
        .copied()
        .find(|s| s.python() == minor)
        .unwrap_or(Suite::Trixie)
}

fn parse_base(base: &str) -> Result<Suite> {
    let b = base.strip_prefix("debian:").unwrap_or(base);
    if b == "debian" {
        return Ok(Suite::Trixie);
    }
    if let Some(s) = Suite::from_codename(b) {
        return Ok(s);
    }
    bail!("unknown base {base:?}: use debian:trixie (Python 3.13), debian:bookworm (3.11), debian:bullseye (3.9) or debian:forky (3.14)")
}

/// A version as people write it, without its `python`, `cpython-` or `@`
/// prefix.
fn bare_version(v: &str) -> &str {
    v.trim()
        .trim_start_matches("python")
        .trim_start_matches("cpython-")
        .trim_start_matches('@')
}

pub(crate) fn minor_of(v: &str) -> Option<String> {
    let v = bare_version(v);
    let mut it = v.split('.');
    let (maj, min) = (it.next()?, it.next()?);
    (maj.chars().all(|c| c.is_ascii_digit())
        && !maj.is_empty()
        && min.chars().all(|c| c.is_ascii_digit())
        && !min.is_empty())
    .then(|| format!("{maj}.{min}"))
}

/// What the runtime's CPython is, and why.
#[derive(Debug, Clone)]
pub struct Choice {
    /// The Debian release under it (its Python, or only its libc).
    pub suite: Suite,
    /// python-build-standalone's build, when it is not Debian's.
    pub standalone: Option<standalone::Pinned>,
    pub why: String,
}

/// A version as asked for: `3.12`, `3.12.6`, `3.13t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Asked {
    major: u32,
    minor: u32,
    patch: Option<u32>,
    freethreaded: bool,
}

impl Asked {
    fn parse(v: &str) -> Option<Asked> {
        let v = bare_version(v);
        let (v, freethreaded) = match v.strip_suffix('t') {
            Some(rest) => (rest, true),
            None => (v, false),
        };
        let parts: Vec<&str> = v.split('.').collect();
        if !(2..=3).contains(&parts.len())
            || parts
                .iter()
                .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
        {
            return None;
        }
        Some(Asked {
            major: parts[0].parse().ok()?,
            minor: parts[1].parse().ok()?,
            patch: parts.get(2).and_then(|p| p.parse().ok()),
            freethreaded,
        })
    }

    fn minor_str(&self) -> String {
        format!("{}.{}", self.major, self.minor)
    }

    fn matches(&self, d: &standalone::Download) -> bool {
        let Some((ma, mi, pa)) = standalone::version_numbers(&d.version) else {
            return false;
        };
        ma == self.major
            && mi == self.minor
            && self.patch.is_none_or(|p| p == pa)
            && d.freethreaded == self.freethreaded
    }
}

/// Where choosing looks, and what it may take.
struct Chooser<'a> {
    suites: Vec<Suite>,
    explicit_base: bool,
    source: PythonSource,
    table: Vec<standalone::Download>,
    mirror: Option<&'a str>,
}

impl Chooser<'_> {
    fn debian(&self, ok: impl Fn(&str) -> bool, testing: bool) -> Option<Suite> {
        if self.source == PythonSource::Standalone {
            return None;
        }
        // Testing only when asked for by name or nothing else will do.
        self.suites
            .iter()
            .copied()
            .filter(|s| (*s == Suite::Forky) == testing || self.explicit_base)
            .find(|s| ok(s.python()))
    }

    fn standalone(&self, ok: impl Fn(&standalone::Download) -> bool) -> Option<Choice> {
        if self.source == PythonSource::Debian {
            return None;
        }
        let d = self.table.iter().find(|d| ok(d))?.clone();
        // Its libc: the base named, else the newest stable release.
        let suite = if self.explicit_base {
            self.suites[0]
        } else {
            Suite::Trixie
        };
        Some(Choice {
            suite,
            why: format!(
                "Python {} from python-build-standalone {} on Debian {}",
                d.label(),
                d.build,
                suite.codename()
            ),
            standalone: Some(standalone::Pinned::new(d, self.mirror)),
        })
    }

    fn debian_choice(suite: Suite, why: String) -> Choice {
        Choice {
            suite,
            standalone: None,
            why,
        }
    }

    /// A version asked for by number.
    fn exact(&self, asked: Asked, strict_patch: bool, origin: &str) -> Option<Choice> {
        let minor = asked.minor_str();
        let debian_has = |p: &str| p == minor;
        if !asked.freethreaded && asked.patch.is_none() {
            if let Some(s) = self.debian(debian_has, false) {
                return Some(Self::debian_choice(
                    s,
                    format!("Python {minor} from Debian {} ({origin})", s.codename()),
                ));
            }
        }
        if let Some(c) = self.standalone(|d| asked.matches(d)) {
            return Some(c);
        }
        if !asked.freethreaded && asked.patch.is_none() {
            if let Some(s) = self.debian(debian_has, true) {
                return Some(Self::debian_choice(
                    s,
                    format!("Python {minor} from Debian {} ({origin})", s.codename()),
                ));
            }
        }
        if asked.patch.is_some() && !strict_patch && !asked.freethreaded {
            // A project's pin of a patch release is often a developer's
            // local interpreter: the same minor serves, and the plan says so.
            let same_minor = Asked {
                patch: None,
                ..asked
            };
            let mut c = self.exact(same_minor, true, origin)?;
            c.why = format!(
                "{} ({origin} pins a patch release no pinned build has exactly)",
                c.why
            );
            return Some(c);
        }
        None
    }

    /// A range such as `>=3.10,<3.13`: the newest stable Debian Python that
    /// satisfies it, else the newest standalone build, else Debian testing.
    fn range(&self, req: &str, origin: &str) -> Option<Choice> {
        let ok = |v: &str| python_satisfies(req, v);
        let why = |s: Suite| format!("Python {} from {origin} ({req})", s.python());
        if let Some(s) = self.debian(ok, false) {
            return Some(Self::debian_choice(s, why(s)));
        }
        if let Some(mut c) = self.standalone(|d| !d.freethreaded && ok(&d.version)) {
            c.why = format!(
                "{} ({origin} asks for {req}; no Debian release has it)",
                c.why
            );
            return Some(c);
        }
        self.debian(ok, true)
            .map(|s| Self::debian_choice(s, why(s)))
    }

    fn available(&self) -> String {
        let debian = match self.source {
            PythonSource::Standalone => String::new(),
            _ => available(),
        };
        let pbs = match self.source {
            PythonSource::Debian => String::new(),
            _ => format!(
                "python-build-standalone (pinned builds): {}",
                standalone::offered(&self.table)
            ),
        };
        [debian, pbs]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Picks the runtime's CPython from the explicit base, the explicit Python
/// version (flag or config), or what the project asks for, in that order of
/// strength: Debian's build where a stable release has it, else
/// python-build-standalone's. Nothing is downloaded here; a request nothing
/// can satisfy fails naming where it came from and what is available.
pub fn choose(
    base: Option<&str>,
    python: Option<&str>,
    request: Option<&(String, String)>,
    source: PythonSource,
    mirror: Option<&str>,
) -> Result<Choice> {
    let from_base = base.map(parse_base).transpose()?;
    let chooser = Chooser {
        suites: from_base.map_or(SUITES.to_vec(), |b| vec![b]),
        explicit_base: from_base.is_some(),
        source,
        table: standalone::table()?,
        mirror,
    };
    let unavailable = |what: String| {
        anyhow::anyhow!(
            "{what}, which no base gives; available: {}{}",
            chooser.available(),
            match from_base {
                Some(b) => format!(" (the base is debian:{})", b.codename()),
                None => String::new(),
            }
        )
    };
    if let Some(p) = python {
        let asked = Asked::parse(p).ok_or_else(|| {
            anyhow::anyhow!("--python {p:?} is not a Python version like 3.12, 3.12.6 or 3.13t")
        })?;
        return chooser
            .exact(asked, true, "as configured")
            .ok_or_else(|| unavailable(format!("Python {} was asked for", p.trim())));
    }
    if let Some((req, origin)) = request {
        let exact = req.trim().starts_with(|c: char| c.is_ascii_digit());
        let choice = match Asked::parse(req).filter(|_| exact) {
            Some(asked) => chooser.exact(asked, false, &format!("{origin}: {req}")),
            None => chooser.range(req, origin),
        };
        return choice.ok_or_else(|| unavailable(format!("{origin} asks for Python {req:?}")));
    }
    if source == PythonSource::Standalone {
        return chooser
            .standalone(|d| !d.freethreaded)
            .ok_or_else(|| unavailable("a python-build-standalone Python was asked for".into()));
    }
    let s = chooser.suites[0];
    Ok(Chooser::debian_choice(
        s,
        format!("Python {} (default)", s.python()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::settings::PythonSource;

    fn req(s: &str) -> (String, String) {
        (s.to_string(), "pyproject.toml".to_string())
    }

    #[test]
    fn registry_bases_are_told_from_debian_ones() {
        for debian in [
            None,
            Some("debian"),
            Some("debian:trixie"),
            Some("bookworm"),
        ] {
            assert!(registry_base(debian).unwrap().is_none(), "{debian:?}");
        }
        let r = registry_base(Some("python:3.12-slim")).unwrap().unwrap();
        assert_eq!(r.to_string(), "docker.io/library/python:3.12-slim");
        let r = registry_base(Some("gcr.io/distroless/python3-debian12"))
            .unwrap()
            .unwrap();
        assert_eq!(r.registry, "gcr.io");
        let e = registry_base(Some("ubuntu")).unwrap_err().to_string();
        assert!(
            e.contains("unknown base") && e.contains("python:3.12-slim"),
            "{e}"
        );
        assert!(registry_base(Some("Bad/Name:x")).is_err());
        let e = registry_base(Some("debian:sid")).unwrap_err().to_string();
        assert!(e.contains("docker.io/library/debian:sid"), "{e}");
        assert_eq!(suite_for_python("3.11"), Suite::Bookworm);
        assert_eq!(suite_for_python("3.12"), Suite::Trixie);
    }

    fn pick(base: Option<&str>, python: Option<&str>, request: Option<&str>) -> Result<Choice> {
        choose(
            base,
            python,
            request.map(req).as_ref(),
            PythonSource::Auto,
            None,
        )
    }

    fn suite(base: Option<&str>, python: Option<&str>, request: Option<&str>) -> Suite {
        let c = pick(base, python, request).unwrap();
        assert!(c.standalone.is_none(), "{c:?}");
        c.suite
    }

    fn standalone(python: Option<&str>, request: Option<&str>) -> String {
        let c = pick(None, python, request).unwrap();
        c.standalone
            .clone()
            .unwrap_or_else(|| panic!("{python:?} {request:?}: {c:?}"))
            .download
            .label()
    }

    #[test]
    fn explicit_python_and_base() {
        assert_eq!(suite(None, Some("3.11"), None), Suite::Bookworm);
        assert_eq!(suite(None, None, None), Suite::Trixie);
        assert_eq!(suite(None, Some("3.9"), None), Suite::Bullseye);
        // Testing only when named: a stable release and a pinned build first.
        assert_eq!(standalone(Some("3.14"), None), "3.14.5");
        assert_eq!(
            suite(Some("debian:forky"), Some("3.14"), None),
            Suite::Forky
        );
        assert!(suite_warning(Suite::Bullseye).unwrap().contains("security"));
        assert!(suite_warning(Suite::Trixie).is_none());
        assert_eq!(suite(Some("debian:bookworm"), None, None), Suite::Bookworm);
        assert!(pick(None, Some("banana"), None).is_err());
        assert!(pick(Some("docker.io/library/python:3.12-slim"), None, None).is_err());
    }

    #[test]
    fn versions_debian_lacks_come_from_python_build_standalone() {
        assert_eq!(standalone(Some("3.12"), None), "3.12.6");
        assert_eq!(standalone(Some("3.10"), None), "3.10.15");
        assert_eq!(standalone(Some("3.12.5"), None), "3.12.5");
        // An exact release even where Debian has the minor.
        assert_eq!(standalone(Some("3.11.15"), None), "3.11.15");
        assert_eq!(standalone(Some("3.14t"), None), "3.14.5t");
        let c = pick(None, Some("3.12"), None).unwrap();
        assert_eq!(c.suite, Suite::Trixie);
        assert!(c.why.contains("python-build-standalone"), "{}", c.why);
        let p = c.standalone.unwrap();
        assert!(p.url.ends_with("install_only_stripped.tar.gz"), "{}", p.url);
        // On the base named.
        let c = pick(Some("debian:bookworm"), Some("3.12"), None).unwrap();
        assert_eq!(c.suite, Suite::Bookworm);
        assert!(c.standalone.is_some());
        // A mirror replaces the release host.
        let c = choose(
            None,
            Some("3.12"),
            None,
            PythonSource::Auto,
            Some("http://m/pbs"),
        )
        .unwrap();
        assert!(c
            .standalone
            .unwrap()
            .url
            .starts_with("http://m/pbs/20240909/"));
    }

    #[test]
    fn what_nothing_gives_fails_before_any_download() {
        for (python, request) in [
            (Some("3.7"), None),
            (Some("3.12.99"), None),
            (Some("3.11t"), None),
            (None, Some(">=3.20")),
            (None, Some("3.7")),
        ] {
            let e = pick(None, python, request).unwrap_err().to_string();
            assert!(e.contains("3.13 (Debian 13 trixie)"), "{e}");
            assert!(e.contains("python-build-standalone"), "{e}");
            assert!(e.contains("3.12.6"), "{e}");
            if request.is_some() {
                assert!(e.contains("pyproject.toml"), "{e}");
            } else {
                assert!(e.contains("asked for"), "{e}");
            }
        }
        // Only Debian, when asked.
        let e = choose(None, Some("3.12"), None, PythonSource::Debian, None)
            .unwrap_err()
            .to_string();
        assert!(!e.contains("python-build-standalone"), "{e}");
        // Only standalone, when asked.
        let c = choose(None, Some("3.13"), None, PythonSource::Standalone, None).unwrap();
        assert_eq!(c.standalone.unwrap().download.version, "3.13.12");
        let c = choose(None, None, None, PythonSource::Standalone, None).unwrap();
        assert_eq!(c.standalone.unwrap().download.version, "3.14.5");
    }

    #[test]
    fn project_requests() {
        assert_eq!(suite(None, None, Some(">=3.9,<3.12")), Suite::Bookworm);
        assert_eq!(suite(None, None, Some(">=3.10")), Suite::Trixie);
        assert_eq!(suite(None, None, Some("3.11")), Suite::Bookworm);
        // A project's patch pin: the exact build when pinned, else the minor.
        assert_eq!(suite(None, None, Some("3.11.7")), Suite::Bookworm);
        assert!(pick(None, None, Some("3.11.7"))
            .unwrap()
            .why
            .contains("patch"));
        assert_eq!(standalone(None, Some("3.11.15")), "3.11.15");
        assert_eq!(standalone(None, Some("3.12.4")), "3.12.6");
        assert_eq!(suite(None, None, Some("<3.10")), Suite::Bullseye);
        // What no stable Debian has: the newest pinned build that satisfies.
        assert_eq!(standalone(None, Some(">=3.12,<3.13")), "3.12.6");
        assert_eq!(standalone(None, Some("==3.10.*")), "3.10.15");
        assert_eq!(standalone(None, Some(">=3.14")), "3.14.5");
        assert!(pick(Some("bookworm"), None, Some(">=3.12"))
            .unwrap()
            .standalone
            .is_some());
    }
}
