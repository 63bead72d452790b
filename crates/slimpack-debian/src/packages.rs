use crate::{Error, Result};
use debversion::Version;
use std::str::FromStr;

/// One stanza of a `Packages` index.
#[derive(Debug, Clone)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub architecture: String,
    pub depends: Vec<Dependency>,
    pub pre_depends: Vec<Dependency>,
    /// Virtual package names this one provides.
    pub provides: Vec<String>,
    pub filename: String,
    pub size: u64,
    pub sha256: String,
    pub essential: bool,
    /// Which archive it came from (`bookworm`, `bookworm-security`, ...).
    pub origin: String,
    /// The stanza itself, for writing a dpkg status database.
    pub stanza: String,
}

/// Alternatives (`a | b`): satisfied by any one of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency(pub Vec<Relation>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub name: String,
    /// `(op, version)`, e.g. `(">=", "2.34")`.
    pub constraint: Option<(String, String)>,
}

impl Relation {
    pub fn satisfied_by(&self, version: &str) -> bool {
        let Some((op, want)) = &self.constraint else {
            return true;
        };
        let (Ok(have), Ok(want)) = (Version::from_str(version), Version::from_str(want)) else {
            return false;
        };
        match op.as_str() {
            ">=" => have >= want,
            "<=" => have <= want,
            ">>" | ">" => have > want,
            "<<" | "<" => have < want,
            "=" => have == want,
            _ => false,
        }
    }
}

impl std::fmt::Display for Dependency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|r| match &r.constraint {
                Some((op, v)) => format!("{} ({op} {v})", r.name),
                None => r.name.clone(),
            })
            .collect();
        f.write_str(&parts.join(" | "))
    }
}

pub(crate) fn parse_relations(s: &str) -> Vec<Dependency> {
    s.split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(|group| {
            Dependency(
                group
                    .split('|')
                    .map(|alt| {
                        let alt = alt.trim();
                        let (name, rest) = match alt
                            .find(|c: char| c == '(' || c == '[' || c == '<' || c.is_whitespace())
                        {
                            Some(i) => (&alt[..i], &alt[i..]),
                            None => (alt, ""),
                        };
                        // `python3:any` and `foo:native` name the same package here.
                        let name = name.split(':').next().unwrap_or(name).to_string();
                        let constraint = rest.find('(').and_then(|i| {
                            let inner = &rest[i + 1..rest[i..].find(')').map(|j| i + j)?];
                            let inner = inner.trim();
                            let op_end = inner
                                .find(|c: char| !matches!(c, '<' | '>' | '='))
                                .unwrap_or(inner.len());
                            Some((
                                inner[..op_end].to_string(),
                                inner[op_end..].trim().to_string(),
                            ))
                        });
                        Relation { name, constraint }
                    })
                    .collect(),
            )
        })
        .collect()
}

/// Parses a whole `Packages` file. `origin` labels where it came from.
pub fn parse_packages(text: &str, origin: &str) -> Result<Vec<Package>> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let stanza = stanza.trim_matches('\n');
        if stanza.is_empty() {
            continue;
        }
        let mut p = Package {
            name: String::new(),
            version: String::new(),
            architecture: String::new(),
            depends: Vec::new(),
            pre_depends: Vec::new(),
            provides: Vec::new(),
            filename: String::new(),
            size: 0,
            sha256: String::new(),
            essential: false,
            origin: origin.to_string(),
            stanza: stanza.to_string(),
        };
        // Continuation lines only occur in fields we do not read (Description).
        for line in stanza.lines() {
            if line.starts_with([' ', '\t']) {
                continue;
            }
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let v = v.trim();
            match k {
                "Package" => p.name = v.to_string(),
                "Version" => p.version = v.to_string(),
                "Architecture" => p.architecture = v.to_string(),
                "Depends" => p.depends = parse_relations(v),
                "Pre-Depends" => p.pre_depends = parse_relations(v),
                "Provides" => {
                    p.provides = parse_relations(v)
                        .into_iter()
                        .flat_map(|d| d.0.into_iter().map(|r| r.name))
                        .collect()
                }
                "Filename" => p.filename = v.to_string(),
                "Size" => p.size = v.parse().unwrap_or(0),
                "SHA256" => p.sha256 = v.to_ascii_lowercase(),
                "Essential" => p.essential = v == "yes",
                _ => {}
            }
        }
        if p.name.is_empty() || p.version.is_empty() || p.filename.is_empty() {
            return Err(Error::Malformed {
                what: format!("Packages index of {origin}"),
                detail: format!(
                    "stanza without Package, Version or Filename: {:?}",
                    stanza.lines().next().unwrap_or("")
                ),
            });
        }
        if p.sha256.len() != 64 {
            return Err(Error::Malformed {
                what: format!("Packages index of {origin}"),
                detail: format!("{} has no SHA256", p.name),
            });
        }
        out.push(p);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relations_with_alternatives_versions_and_qualifiers() {
        let d = parse_relations("libc6 (>= 2.34), mime-support | media-types, python3:any (>= 3.11~) [amd64], foo:native");
        assert_eq!(d.len(), 4);
        assert_eq!(d[0].0[0].name, "libc6");
        assert_eq!(d[0].0[0].constraint, Some((">=".into(), "2.34".into())));
        assert_eq!(d[1].0.len(), 2);
        assert_eq!(d[1].0[1].name, "media-types");
        assert_eq!(d[2].0[0].name, "python3");
        assert_eq!(d[2].0[0].constraint, Some((">=".into(), "3.11~".into())));
        assert_eq!(d[3].0[0].name, "foo");
        assert_eq!(d[1].to_string(), "mime-support | media-types");
    }

    #[test]
    fn version_constraints() {
        let r = &parse_relations("libc6 (>= 2.34)")[0].0[0];
        assert!(r.satisfied_by("2.36-9+deb12u4"));
        assert!(!r.satisfied_by("2.31-13"));
        let r = &parse_relations("x (<< 3.12)")[0].0[0];
        assert!(r.satisfied_by("3.11.2-6"));
        assert!(!r.satisfied_by("3.12.1-1"));
        let r = &parse_relations("x (= 1.0-1)")[0].0[0];
        assert!(r.satisfied_by("1.0-1"));
        assert!(!r.satisfied_by("1.0-2"));
    }

    #[test]
    fn parses_stanzas_and_rejects_missing_hashes() {
        let text = "Package: netbase\nVersion: 6.4\nArchitecture: all\nFilename: pool/main/n/netbase/netbase_6.4_all.deb\nSize: 12\nSHA256: 0000000000000000000000000000000000000000000000000000000000000000\nDescription: x\n more\n\nPackage: libc6\nVersion: 2.36-9\nArchitecture: amd64\nDepends: libgcc-s1\nProvides: libc6-x (= 1)\nFilename: pool/l.deb\nSize: 9\nSHA256: 1111111111111111111111111111111111111111111111111111111111111111\n";
        let p = parse_packages(text, "bookworm").unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].provides, vec!["libc6-x".to_string()]);
        assert_eq!(p[1].depends[0].0[0].name, "libgcc-s1");
        let bad = text.replace(
            "SHA256: 1111111111111111111111111111111111111111111111111111111111111111\n",
            "",
        );
        assert!(parse_packages(&bad, "bookworm").is_err());
    }
}
