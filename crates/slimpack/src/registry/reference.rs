//! Image references as Docker spells them: `[REGISTRY/]REPO[:TAG][@DIGEST]`.

use anyhow::{bail, Result};
use std::fmt;

/// Docker Hub's name in references, and the host its API answers on.
pub const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_API: &str = "registry-1.docker.io";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]` as written (Docker Hub normalized to `docker.io`).
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

fn valid_component(c: &str) -> bool {
    // distribution's grammar: [a-z0-9]+ joined by one `.`, one or two `_`,
    // or any number of `-`.
    let b = c.as_bytes();
    if b.is_empty() || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        let ch = b[i];
        if ch.is_ascii_lowercase() || ch.is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && matches!(b[i], b'.' | b'_' | b'-') {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok || sep.is_empty() {
            return false;
        }
    }
    true
}

/// A tag as the distribution spec allows it.
pub fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// `sha256:` and 64 lowercase hex digits (the only algorithm we write or accept).
pub fn valid_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    })
}

impl Reference {
    pub fn parse(s: &str) -> Result<Reference> {
        let input = s.strip_prefix("docker://").unwrap_or(s);
        let hint = "expected [REGISTRY/]REPOSITORY[:TAG][@sha256:DIGEST], e.g. us-central1-docker.pkg.dev/my-project/backend/my-app:v1";
        if input.is_empty() {
            bail!("image reference is empty; {hint}");
        }
        let (name_tag, digest) = match input.split_once('@') {
            Some((n, d)) => {
                if !valid_digest(d) {
                    bail!("{s:?}: {d:?} is not a sha256 digest (sha256: and 64 hex digits)");
                }
                (n, Some(d.to_string()))
            }
            None => (input, None),
        };
        let last_slash = name_tag.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match name_tag[last_slash..].rfind(':') {
            Some(i) => (
                &name_tag[..last_slash + i],
                Some(name_tag[last_slash + i + 1..].to_string()),
            ),
            None => (name_tag, None),
        };
        if let Some(t) = &tag {
            if !valid_tag(t) {
                bail!("{s:?}: tag {t:?} is not valid (letters, digits, `_`, `.`, `-`; at most 128; not starting with `.` or `-`)");
            }
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let registry = match registry.as_str() {
            "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
            _ => registry,
        };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if repository.is_empty() || !repository.split('/').all(valid_component) {
            bail!("{s:?}: repository {repository:?} is not valid (lowercase letters, digits and `._-` separators between `/`); {hint}");
        }
        if registry.is_empty() || registry.chars().any(|c| c.is_whitespace() || c == '/') {
            bail!("{s:?}: registry {registry:?} is not a host name; {hint}");
        }
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The host the registry API answers on.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// What to GET or PUT under `/manifests/`: the digest, else the tag,
    /// else `latest`.
    pub fn manifest_ref(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// The same repository, pinned to `digest`.
    pub fn with_digest(&self, digest: &str) -> Reference {
        Reference {
            tag: None,
            digest: Some(digest.to_string()),
            ..self.clone()
        }
    }

    /// `registry/repository`, the key for "where does this blob live".
    pub fn repo_key(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// Loopback registries are spoken to over plain HTTP, as Docker does.
    pub fn is_loopback(&self) -> bool {
        is_loopback_host(&self.registry)
    }
}

pub use crate::core::http::is_loopback_host;

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Reference {
        Reference::parse(s).unwrap()
    }

    #[test]
    fn docker_hub_names_are_normalized() {
        let r = p("python:3.12-slim");
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.repository, "library/python");
        assert_eq!(r.tag.as_deref(), Some("3.12-slim"));
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(p("docker.io/library/python").manifest_ref(), "latest");
        assert_eq!(
            p("index.docker.io/bitnami/redis").repo_key(),
            "docker.io/bitnami/redis"
        );
    }

    #[test]
    fn registries_ports_tags_and_digests() {
        let r = p("us-central1-docker.pkg.dev/my-project/backend/my-app:v1");
        assert_eq!(r.registry, "us-central1-docker.pkg.dev");
        assert_eq!(r.repository, "my-project/backend/my-app");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = p(&format!("127.0.0.1:5000/app:v1@{d}"));
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.manifest_ref(), d);
        assert!(r.is_loopback());
        assert_eq!(r.to_string(), format!("127.0.0.1:5000/app:v1@{d}"));
        let r = p("localhost/app");
        assert_eq!(r.registry, "localhost");
        assert!(r.is_loopback());
        assert!(!p("gcr.io/distroless/python3-debian12").is_loopback());
        assert!(is_loopback_host("[::1]:5000"));
        assert!(!is_loopback_host("127.example.com:5000"));
    }

    #[test]
    fn bad_references_say_what_is_wrong() {
        for bad in [
            "",
            "UPPER/case",
            "host/a//b",
            "host/app:-bad",
            "host/app@sha256:abc",
            "host/app@md5:0123",
            "a/b:c:d",
            "host/-app",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        let e = Reference::parse("host/App").unwrap_err().to_string();
        assert!(e.contains("repository"), "{e}");
    }
}
