//! The runtime base: which Debian release (and so which Python) the image
//! is built on, or a registry image with its own Python.

pub mod debian;
pub mod registry;

use crate::project::pyproject::python_satisfies;
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

pub(crate) fn minor_of(v: &str) -> Option<String> {
    let v = v
        .trim()
        .trim_start_matches("python")
        .trim_start_matches("cpython-")
        .trim_start_matches('@');
    let mut it = v.split('.');
    let (maj, min) = (it.next()?, it.next()?);
    (maj.chars().all(|c| c.is_ascii_digit())
        && !maj.is_empty()
        && min.chars().all(|c| c.is_ascii_digit())
        && !min.is_empty())
    .then(|| format!("{maj}.{min}"))
}

/// Picks the Debian release from the explicit base, the explicit Python
/// version (flag or config), or what the project asks for, in that order
/// of strength. A Python the base cannot give is an error, never a silent
/// substitution.
pub fn choose_suite(
    base: Option<&str>,
    python: Option<&str>,
    request: Option<&(String, String)>,
) -> Result<(Suite, String)> {
    let from_base = base.map(parse_base).transpose()?;
    if let Some(p) = python {
        let minor = minor_of(p)
            .ok_or_else(|| anyhow::anyhow!("--python {p:?} is not a Python version like 3.11"))?;
        let Some(suite) = SUITES.iter().copied().find(|s| s.python() == minor) else {
            bail!(
                "Python {minor} is not available from a Debian base; available: {}",
                available()
            );
        };
        if let Some(b) = from_base {
            if b != suite {
                bail!(
                    "base debian:{} gives Python {}, but Python {minor} was asked for",
                    b.codename(),
                    b.python()
                );
            }
        }
        return Ok((suite, format!("Python {minor} as configured")));
    }
    let candidates: Vec<Suite> = match from_base {
        Some(b) => vec![b],
        None => SUITES.to_vec(),
    };
    if let Some((req, origin)) = request {
        let ok: Vec<Suite> = if let Some(minor) =
            minor_of(req).filter(|_| req.trim().starts_with(|c: char| c.is_ascii_digit()))
        {
            candidates
                .iter()
                .copied()
                .filter(|s| s.python() == minor)
                .collect()
        } else {
            candidates
                .iter()
                .copied()
                .filter(|s| python_satisfies(req, s.python()))
                .collect()
        };
        return match ok.first() {
            Some(s) => Ok((*s, format!("Python {} from {origin} ({req})", s.python()))),
            None => bail!(
                "{origin} asks for Python {req:?}, which no supported base gives; available: {}",
                available()
            ),
        };
    }
    let s = candidates[0];
    Ok((s, format!("Python {} (default)", s.python())))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn explicit_python_and_base() {
        assert_eq!(
            choose_suite(None, Some("3.11"), None).unwrap().0,
            Suite::Bookworm
        );
        assert_eq!(choose_suite(None, None, None).unwrap().0, Suite::Trixie);
        assert_eq!(
            choose_suite(None, Some("3.9"), None).unwrap().0,
            Suite::Bullseye
        );
        assert_eq!(
            choose_suite(None, Some("3.14"), None).unwrap().0,
            Suite::Forky
        );
        assert!(suite_warning(Suite::Bullseye).unwrap().contains("security"));
        assert!(suite_warning(Suite::Trixie).is_none());
        assert_eq!(
            choose_suite(Some("debian:bookworm"), None, None).unwrap().0,
            Suite::Bookworm
        );
        let e = choose_suite(None, Some("3.12"), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("3.12") && e.contains("3.13") && e.contains("3.11"),
            "{e}"
        );
        assert!(choose_suite(Some("bookworm"), Some("3.13"), None).is_err());
        assert!(choose_suite(None, Some("banana"), None).is_err());
        assert!(choose_suite(Some("docker.io/library/python:3.12-slim"), None, None).is_err());
    }

    #[test]
    fn project_requests() {
        assert_eq!(
            choose_suite(None, None, Some(&req(">=3.9,<3.12")))
                .unwrap()
                .0,
            Suite::Bookworm
        );
        assert_eq!(
            choose_suite(None, None, Some(&req(">=3.10"))).unwrap().0,
            Suite::Trixie
        );
        assert_eq!(
            choose_suite(None, None, Some(&req("3.11"))).unwrap().0,
            Suite::Bookworm
        );
        assert_eq!(
            choose_suite(None, None, Some(&req("3.11.7"))).unwrap().0,
            Suite::Bookworm
        );
        // Stable first: a range the stable releases satisfy never gets testing.
        assert_eq!(
            choose_suite(None, None, Some(&req(">=3.10"))).unwrap().0,
            Suite::Trixie
        );
        assert_eq!(
            choose_suite(None, None, Some(&req(">=3.14"))).unwrap().0,
            Suite::Forky
        );
        assert_eq!(
            choose_suite(None, None, Some(&req("<3.10"))).unwrap().0,
            Suite::Bullseye
        );
        let e = choose_suite(None, None, Some(&req("3.8")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("pyproject.toml"), "{e}");
        assert!(choose_suite(Some("bookworm"), None, Some(&req(">=3.12"))).is_err());
    }
}
