use crate::{Dependency, Error, Package, Result};
use debversion::Version;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::str::FromStr;
use std::sync::Arc;

/// Picks a closure of packages from one or more archives (a suite with its
/// `-updates` and `-security` archives): the newest version of each name wins.
///
/// Cloning is cheap: the archives' index is shared, so one resolver built
/// from a suite's indexes serves every package set resolved from it.
#[derive(Clone)]
pub struct Resolver {
    index: Arc<Index>,
    excluded: BTreeSet<String>,
}

/// The archives' packages by name and by what they provide.
struct Index {
    by_name: HashMap<String, Package>,
    providers: HashMap<String, Vec<String>>,
}

/// What was chosen, and why some dependencies were left out.
#[derive(Debug, Clone)]
pub struct Resolution {
    /// Sorted by name.
    pub packages: Vec<Package>,
    /// `package needs dependency`, for dependencies skipped by policy.
    pub skipped: Vec<String>,
}

fn newer(a: &str, b: &str) -> bool {
    match (Version::from_str(a), Version::from_str(b)) {
        (Ok(a), Ok(b)) => a > b,
        _ => false,
    }
}

impl Resolver {
    pub fn new(archives: Vec<Vec<Package>>, arch: &str) -> Self {
        let mut by_name: HashMap<String, Package> = HashMap::new();
        for pkgs in archives {
            for p in pkgs {
                if p.architecture != arch && p.architecture != "all" {
                    continue;
                }
                match by_name.get(&p.name) {
                    Some(old) if !newer(&p.version, &old.version) => {}
                    _ => {
                        by_name.insert(p.name.clone(), p);
                    }
                }
            }
        }
        let mut providers: HashMap<String, Vec<String>> = HashMap::new();
        for p in by_name.values() {
            for v in &p.provides {
                providers.entry(v.clone()).or_default().push(p.name.clone());
            }
        }
        for v in providers.values_mut() {
            v.sort();
        }
        Self {
            index: Arc::new(Index { by_name, providers }),
            excluded: BTreeSet::new(),
        }
    }

    /// Names never pulled in as dependencies (they may still be asked for
    /// explicitly as roots): what only maintainer scripts need.
    pub fn exclude<I: IntoIterator<Item = S>, S: Into<String>>(&mut self, names: I) -> &mut Self {
        self.excluded.extend(names.into_iter().map(Into::into));
        self
    }

    pub fn get(&self, name: &str) -> Option<&Package> {
        self.index.by_name.get(name)
    }

    fn candidates(&self, name: &str) -> Vec<&Package> {
        let by_name = &self.index.by_name;
        let mut out: Vec<&Package> = by_name.get(name).into_iter().collect();
        if let Some(ps) = self.index.providers.get(name) {
            out.extend(ps.iter().filter_map(|p| by_name.get(p)));
        }
        out
    }

    fn hint(&self, name: &str) -> String {
        let mut close: Vec<&str> = self
            .index
            .by_name
            .keys()
            .filter(|k| k.starts_with(name) || name.starts_with(k.as_str()))
            .map(String::as_str)
            .collect();
        close.sort();
        close.truncate(5);
        if close.is_empty() {
            String::new()
        } else {
            format!("; similar names: {}", close.join(", "))
        }
    }

    pub fn resolve(&self, roots: &[String]) -> Result<Resolution> {
        let mut chosen: BTreeMap<String, &Package> = BTreeMap::new();
        let mut provided: HashMap<String, String> = HashMap::new();
        let mut skipped = BTreeSet::new();
        let mut queue = VecDeque::new();
        for r in roots {
            let p = self
                .candidates(r)
                .into_iter()
                .next()
                .ok_or_else(|| Error::UnknownPackage {
                    package: r.clone(),
                    hint: self.hint(r),
                })?;
            queue.push_back(p);
        }
        while let Some(p) = queue.pop_front() {
            if chosen.contains_key(&p.name) {
                continue;
            }
            chosen.insert(p.name.clone(), p);
            for v in &p.provides {
                provided.entry(v.clone()).or_insert_with(|| p.name.clone());
            }
            for dep in p.pre_depends.iter().chain(&p.depends) {
                if let Some(next) = self.pick(p, dep, &chosen, &provided, &mut skipped)? {
                    queue.push_back(next);
                }
            }
        }
        Ok(Resolution {
            packages: chosen.into_values().cloned().collect(),
            skipped: skipped.into_iter().collect(),
        })
    }

    fn pick<'a>(
        &'a self,
        from: &Package,
        dep: &Dependency,
        chosen: &BTreeMap<String, &Package>,
        provided: &HashMap<String, String>,
        skipped: &mut BTreeSet<String>,
    ) -> Result<Option<&'a Package>> {
        // Already satisfied by something chosen (or queued earlier)?
        for rel in &dep.0 {
            if let Some(p) = chosen.get(&rel.name) {
                if rel.satisfied_by(&p.version) {
                    return Ok(None);
                }
            }
            if rel.constraint.is_none() && provided.contains_key(&rel.name) {
                return Ok(None);
            }
        }
        let mut all_excluded = true;
        for rel in &dep.0 {
            if self.excluded.contains(&rel.name) {
                continue;
            }
            for cand in self.candidates(&rel.name) {
                if self.excluded.contains(&cand.name) {
                    continue;
                }
                all_excluded = false;
                let ok = if cand.name == rel.name {
                    rel.satisfied_by(&cand.version)
                } else {
                    rel.constraint.is_none()
                };
                if ok {
                    return Ok(Some(cand));
                }
            }
        }
        if all_excluded {
            skipped.insert(format!("{} needs {}", from.name, dep));
            return Ok(None);
        }
        Err(Error::Unsatisfiable {
            package: format!("{} {}", from.name, from.version),
            dependency: dep.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packages::parse_relations;

    fn pkg(name: &str, version: &str, deps: &str, provides: &[&str], origin: &str) -> Package {
        Package {
            name: name.into(),
            version: version.into(),
            architecture: "amd64".into(),
            depends: parse_relations(deps),
            pre_depends: vec![],
            provides: provides.iter().map(|s| s.to_string()).collect(),
            filename: format!("pool/{name}.deb"),
            size: 1,
            sha256: "0".repeat(64),
            essential: false,
            origin: origin.into(),
            stanza: String::new(),
        }
    }

    fn names(r: &Resolution) -> Vec<&str> {
        r.packages.iter().map(|p| p.name.as_str()).collect()
    }

    #[test]
    fn newest_version_across_archives_wins_and_policy_skips_script_deps() {
        let main = vec![
            pkg(
                "python3.11-minimal",
                "3.11.2-6",
                "libc6 (>= 2.34), libpython3.11-minimal",
                &[],
                "bookworm",
            ),
            pkg(
                "libpython3.11-minimal",
                "3.11.2-6",
                "libc6",
                &[],
                "bookworm",
            ),
            pkg("libc6", "2.36-9", "", &[], "bookworm"),
            pkg(
                "tzdata",
                "2024a-0",
                "debconf (>= 0.5) | debconf-2.0",
                &[],
                "bookworm",
            ),
            pkg(
                "debconf",
                "1.5.82",
                "perl-base",
                &["debconf-2.0"],
                "bookworm",
            ),
            pkg(
                "libpython3.11-stdlib",
                "3.11.2-6",
                "mime-support | media-types",
                &[],
                "bookworm",
            ),
            pkg("mime-support", "3.66", "mailcap", &[], "bookworm"),
            pkg("media-types", "10.0.0", "", &[], "bookworm"),
        ];
        let security = vec![pkg("libc6", "2.36-9+deb12u9", "", &[], "bookworm-security")];
        let mut r = Resolver::new(vec![main, security], "amd64");
        r.exclude([
            "debconf",
            "debconf-2.0",
            "mime-support",
            "mailcap",
            "perl-base",
        ]);
        let res = r
            .resolve(&[
                "python3.11-minimal".into(),
                "tzdata".into(),
                "libpython3.11-stdlib".into(),
            ])
            .unwrap();
        assert_eq!(
            names(&res),
            vec![
                "libc6",
                "libpython3.11-minimal",
                "libpython3.11-stdlib",
                "media-types",
                "python3.11-minimal",
                "tzdata"
            ]
        );
        let libc = res.packages.iter().find(|p| p.name == "libc6").unwrap();
        assert_eq!(libc.version, "2.36-9+deb12u9");
        assert_eq!(libc.origin, "bookworm-security");
        assert_eq!(
            res.skipped,
            vec!["tzdata needs debconf (>= 0.5) | debconf-2.0".to_string()]
        );
    }

    #[test]
    fn unknown_and_unsatisfiable_are_errors() {
        let r = Resolver::new(
            vec![vec![
                pkg("a", "1", "b (>= 2)", &[], "x"),
                pkg("b", "1", "", &[], "x"),
            ]],
            "amd64",
        );
        assert!(matches!(
            r.resolve(&["nope".into()]),
            Err(Error::UnknownPackage { .. })
        ));
        assert!(matches!(
            r.resolve(&["a".into()]),
            Err(Error::Unsatisfiable { .. })
        ));
    }

    #[test]
    fn virtual_packages_resolve_through_providers() {
        let r = Resolver::new(
            vec![vec![
                pkg("app", "1", "mail-transport-agent", &[], "x"),
                pkg("postfix", "3", "", &["mail-transport-agent"], "x"),
            ]],
            "amd64",
        );
        let res = r.resolve(&["app".into()]).unwrap();
        assert_eq!(names(&res), vec!["app", "postfix"]);
    }
}
