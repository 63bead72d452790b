//! An SPDX 2.3 JSON document of an image: the image, its operating
//! system, every Debian package of its dpkg database, the Python
//! interpreter and where it came from, every Python distribution, and
//! what contains and depends on what. Built from what the image holds;
//! a build adds what only it knows (the lock's hashes, the interpreter's
//! download). Same image and facts, same bytes: no clock, no random
//! namespace, everything sorted.

use super::contents::{normalize_name, Contents, Interpreter};
use super::license;
use anyhow::Result;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

pub const MEDIA_TYPE: &str = "application/spdx+json";

/// What the build knows beyond the image.
#[derive(Debug, Clone, Default)]
pub struct BuildFacts {
    /// The project, when it declares a name: (name, version).
    pub app: Option<(String, Option<String>)>,
    /// Normalized name → the SHA-256s the lock pins it to.
    pub hashes: BTreeMap<String, Vec<String>>,
    /// The interpreter's download, when it was one: (URL, SHA-256).
    pub interpreter_download: Option<(String, String)>,
    /// The interpreter's full version, when the image does not tell it.
    pub interpreter_version: Option<String>,
}

impl BuildFacts {
    /// The `--hash=sha256:` pins of a requirements text, by package.
    pub fn hashes_of(requirements: &str) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut current: Option<String> = None;
        for line in requirements.lines() {
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            if !line.starts_with([' ', '\t']) && !t.starts_with("--hash") {
                let end = t
                    .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
                    .unwrap_or(t.len());
                current = Some(normalize_name(&t[..end]));
            }
            for word in t.split_whitespace() {
                if let (Some(name), Some(h)) = (&current, word.strip_prefix("--hash=sha256:")) {
                    out.entry(name.clone()).or_default().push(h.to_string());
                }
            }
        }
        out
    }
}

/// Who the document is about.
pub struct Subject<'a> {
    /// The image's name (a reference, or the project's name).
    pub name: &'a str,
    pub manifest_digest: &'a str,
    pub created: Option<&'a str>,
}

/// SPDX element ids: letters, digits, `.` and `-`, unique in a document.
#[derive(Default)]
struct Ids(BTreeSet<String>);

impl Ids {
    fn make(&mut self, prefix: &str, name: &str) -> String {
        let base = format!("SPDXRef-{prefix}-{}", license::idstring(name));
        let mut id = base.clone();
        let mut n = 2;
        while !self.0.insert(id.clone()) {
            id = format!("{base}-{n}");
            n += 1;
        }
        id
    }
}

fn purl_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn purl_ref(purl: String) -> Value {
    json!({"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": purl})
}

/// SPDX wants `YYYY-MM-DDThh:mm:ssZ`: an image's time, to the second.
fn spdx_time(created: Option<&str>) -> String {
    created
        .filter(|c| c.len() >= 19 && c.as_bytes()[10] == b'T')
        .map(|c| format!("{}Z", &c[..19]))
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

fn package(id: &str, name: &str, version: &str) -> serde_json::Map<String, Value> {
    let mut p = serde_json::Map::new();
    p.insert("SPDXID".into(), id.into());
    p.insert("name".into(), name.into());
    p.insert("versionInfo".into(), version.into());
    p.insert("downloadLocation".into(), "NOASSERTION".into());
    p.insert("filesAnalyzed".into(), false.into());
    p.insert("licenseConcluded".into(), "NOASSERTION".into());
    p.insert("licenseDeclared".into(), "NOASSERTION".into());
    p.insert("copyrightText".into(), "NOASSERTION".into());
    p
}

/// The packages and relationships of a document being written.
#[derive(Default)]
struct Doc {
    ids: Ids,
    packages: Vec<Value>,
    rel: BTreeSet<(String, &'static str, String)>,
}

const IMAGE_ID: &str = "SPDXRef-Image";

impl Doc {
    fn contains(&mut self, id: &str) {
        self.rel.insert((IMAGE_ID.into(), "CONTAINS", id.into()));
    }

    fn image(&mut self, subject: &Subject, short: &str) {
        self.ids.0.insert(IMAGE_ID.into());
        self.rel
            .insert(("SPDXRef-DOCUMENT".into(), "DESCRIBES", IMAGE_ID.into()));
        let hex = subject
            .manifest_digest
            .strip_prefix("sha256:")
            .unwrap_or(subject.manifest_digest);
        let mut p = package(IMAGE_ID, subject.name, subject.manifest_digest);
        p.insert("primaryPackagePurpose".into(), "CONTAINER".into());
        p.insert(
            "checksums".into(),
            json!([{"algorithm": "SHA256", "checksumValue": hex}]),
        );
        p.insert(
            "externalRefs".into(),
            json!([purl_ref(format!(
                "pkg:oci/{}@{}",
                purl_escape(short),
                purl_escape(subject.manifest_digest)
            ))]),
        );
        self.packages.push(p.into());
    }

    fn os(&mut self, contents: &Contents) {
        if let (Some(id), Some(pretty)) = (&contents.os_id, &contents.os) {
            let os_id = self.ids.make("OperatingSystem", id);
            let version = contents.os_version.as_deref().unwrap_or("NOASSERTION");
            let mut p = package(&os_id, id, version);
            p.insert("primaryPackagePurpose".into(), "OPERATING-SYSTEM".into());
            p.insert("description".into(), pretty.as_str().into());
            self.packages.push(p.into());
            self.contains(&os_id);
        }
    }

    /// Every Debian package; their ids by name.
    fn debs(&mut self, contents: &Contents) -> BTreeMap<String, String> {
        let distro = match (&contents.os_id, &contents.os_version) {
            (Some(id), Some(v)) => Some(format!("{id}-{v}")),
            (Some(id), None) => Some(id.clone()),
            _ => None,
        };
        let vendor = contents.os_id.as_deref().unwrap_or("debian");
        let mut ids = BTreeMap::new();
        for d in &contents.debs {
            let id = self
                .ids
                .make("deb", &format!("{}-{}", d.name, d.architecture));
            let mut p = package(&id, &d.name, &d.version);
            p.insert("supplier".into(), "Organization: Debian".into());
            if let Some(l) = &d.license {
                p.insert("licenseDeclared".into(), l.as_str().into());
            }
            if d.source != d.name || d.source_version != d.version {
                let from = format!(
                    "built from Debian source package {} {}",
                    d.source, d.source_version
                );
                p.insert("sourceInfo".into(), from.into());
            }
            let mut q = vec![format!("arch={}", purl_escape(&d.architecture))];
            if let Some(distro) = &distro {
                q.push(format!("distro={}", purl_escape(distro)));
            }
            if d.source != d.name {
                q.push(format!("upstream={}", purl_escape(&d.source)));
            }
            let purl = format!(
                "pkg:deb/{}/{}@{}?{}",
                purl_escape(vendor),
                purl_escape(&d.name),
                purl_escape(&d.version),
                q.join("&")
            );
            p.insert("externalRefs".into(), json!([purl_ref(purl)]));
            self.packages.push(p.into());
            self.contains(&id);
            ids.insert(d.name.clone(), id);
        }
        ids
    }

    fn interpreter(
        &mut self,
        i: &Interpreter,
        facts: Option<&BuildFacts>,
        debs: &BTreeMap<String, String>,
    ) {
        let version = facts
            .and_then(|f| f.interpreter_version.clone())
            .unwrap_or_else(|| i.version.clone());
        let id = self.ids.make("Python", "CPython");
        let mut p = package(&id, "CPython", &version);
        p.insert("primaryPackagePurpose".into(), "APPLICATION".into());
        p.insert("licenseDeclared".into(), "Python-2.0".into());
        let origin = match i.origin.as_str() {
            "debian" => format!(
                "{} from the Debian package {}",
                i.path,
                i.package.as_deref().unwrap_or("(not in the dpkg database)")
            ),
            "python-build-standalone" => {
                format!("{} from a python-build-standalone release", i.path)
            }
            _ => format!("{} built from source into the image", i.path),
        };
        p.insert("sourceInfo".into(), origin.into());
        let mut purl = format!("pkg:generic/cpython@{}", purl_escape(&version));
        if let Some((url, sha)) = facts.and_then(|f| f.interpreter_download.as_ref()) {
            p.insert("downloadLocation".into(), url.as_str().into());
            p.insert(
                "checksums".into(),
                json!([{"algorithm": "SHA256", "checksumValue": sha}]),
            );
            purl.push_str(&format!("?download_url={}", purl_escape(url)));
        }
        p.insert("externalRefs".into(), json!([purl_ref(purl)]));
        self.packages.push(p.into());
        match i.package.as_deref().and_then(|n| debs.get(n)) {
            Some(deb) => self.rel.insert((deb.clone(), "CONTAINS", id)),
            None => self.rel.insert((IMAGE_ID.into(), "CONTAINS", id)),
        };
    }

    /// Every Python distribution, and which requires which (in the same
    /// site-packages).
    fn dists(&mut self, contents: &Contents, facts: Option<&BuildFacts>) {
        let mut ids: BTreeMap<(String, String), String> = BTreeMap::new();
        for d in &contents.dists {
            let n = normalize_name(&d.name);
            let id = self.ids.make("pypi", &n);
            ids.insert((d.location.clone(), n), id);
        }
        for d in &contents.dists {
            let n = normalize_name(&d.name);
            let id = ids[&(d.location.clone(), n.clone())].clone();
            let mut p = package(&id, &d.name, &d.version);
            let declared = license::python(
                d.license_expression.as_deref(),
                d.license_field.as_deref(),
                &d.license_classifiers,
            );
            if let Some(l) = declared {
                p.insert("licenseDeclared".into(), l.into());
            }
            p.insert(
                "sourceInfo".into(),
                format!("installed in /{}", d.location).into(),
            );
            if let Some(h) = facts.and_then(|f| f.hashes.get(&n)) {
                if let [one] = h.as_slice() {
                    p.insert(
                        "checksums".into(),
                        json!([{"algorithm": "SHA256", "checksumValue": one}]),
                    );
                }
                let pins = format!(
                    "The lock pins it to the file with one of these SHA-256 digests: {}",
                    h.join(", ")
                );
                p.insert("comment".into(), pins.into());
            }
            let purl = format!("pkg:pypi/{}@{}", purl_escape(&n), purl_escape(&d.version));
            p.insert("externalRefs".into(), json!([purl_ref(purl)]));
            self.packages.push(p.into());
            self.contains(&id);
            for r in &d.requires {
                if let Some(other) = ids.get(&(d.location.clone(), r.clone())) {
                    self.rel.insert((id.clone(), "DEPENDS_ON", other.clone()));
                }
            }
        }
    }

    fn app(&mut self, name: &str, version: Option<&str>) {
        let id = self.ids.make("App", name);
        let mut p = package(&id, name, version.unwrap_or("NOASSERTION"));
        p.insert("primaryPackagePurpose".into(), "APPLICATION".into());
        self.packages.push(p.into());
        self.contains(&id);
    }
}

/// The document, as pretty JSON with a final newline.
pub fn document(
    subject: &Subject,
    contents: &Contents,
    facts: Option<&BuildFacts>,
) -> Result<Vec<u8>> {
    let short = subject
        .name
        .rsplit('/')
        .next()
        .unwrap_or(subject.name)
        .split([':', '@'])
        .next()
        .unwrap_or("image")
        .to_lowercase();
    let mut d = Doc::default();
    d.image(subject, &short);
    d.os(contents);
    let debs = d.debs(contents);
    if let Some(i) = &contents.interpreter {
        d.interpreter(i, facts, &debs);
    }
    d.dists(contents, facts);
    if let Some((name, version)) = facts.and_then(|f| f.app.as_ref()) {
        d.app(name, version.as_deref());
    }
    let relationships: Vec<Value> = d
        .rel
        .into_iter()
        .map(
            |(a, t, b)| json!({"spdxElementId": a, "relationshipType": t, "relatedSpdxElement": b}),
        )
        .collect();
    let hex = subject
        .manifest_digest
        .strip_prefix("sha256:")
        .unwrap_or(subject.manifest_digest);
    let mut doc = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": subject.name,
        "documentNamespace": format!("https://slimpack.dev/spdx/{}/{hex}", purl_escape(&short)),
        "creationInfo": {
            "created": spdx_time(subject.created),
            "creators": [format!("Tool: slimpack-{}", env!("CARGO_PKG_VERSION"))],
        },
        "packages": d.packages,
        "relationships": relationships,
    });
    let used: BTreeSet<&str> = packages_licenses(&doc);
    let extracted: Vec<Value> = contents
        .license_refs
        .iter()
        .filter(|(id, _)| used.contains(id.as_str()))
        .map(|(id, e)| json!({"licenseId": id, "name": e.name, "extractedText": e.text}))
        .collect();
    if !extracted.is_empty() {
        doc["hasExtractedLicensingInfos"] = extracted.into();
    }
    let mut out = serde_json::to_vec_pretty(&doc)?;
    out.push(b'\n');
    Ok(out)
}

fn packages_licenses(doc: &Value) -> BTreeSet<&str> {
    doc["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["licenseDeclared"].as_str())
        .flat_map(|l| l.split([' ', '(', ')']))
        .filter(|t| t.starts_with("LicenseRef-"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::contents::{DebPackage, Dist, Interpreter};

    fn contents() -> Contents {
        Contents {
            os: Some("Debian GNU/Linux 12 (bookworm)".into()),
            os_id: Some("debian".into()),
            os_version: Some("12".into()),
            debs: vec![DebPackage {
                name: "libpq5".into(),
                version: "15.8-0+deb12u1".into(),
                architecture: "amd64".into(),
                source: "postgresql-15".into(),
                source_version: "15.8-0+deb12u1".into(),
                license: Some("PostgreSQL".into()),
                files: vec![],
            }],
            dists: vec![Dist {
                name: "psycopg2".into(),
                version: "2.9.10".into(),
                location: "opt/venv/lib/python3.11/site-packages".into(),
                dist_info: String::new(),
                license_expression: None,
                license_field: Some("LGPL with exceptions".into()),
                license_classifiers: vec![],
                requires: vec![],
                files: vec![],
            }],
            interpreter: Some(Interpreter {
                version: "3.11".into(),
                path: "/usr/bin/python3.11".into(),
                origin: "debian".into(),
                package: Some("python3.11-minimal".into()),
            }),
            license_refs: BTreeMap::new(),
        }
    }

    #[test]
    fn same_facts_same_bytes_and_the_parts_a_scanner_reads() {
        let s = Subject {
            name: "127.0.0.1:5000/shop/api:v1",
            manifest_digest: "sha256:abcd",
            created: Some("2023-11-14T22:13:20.123Z"),
        };
        let facts = BuildFacts {
            hashes: BuildFacts::hashes_of("psycopg2==2.9.10 \\\n    --hash=sha256:aaaa\n"),
            ..Default::default()
        };
        let a = document(&s, &contents(), Some(&facts)).unwrap();
        assert_eq!(a, document(&s, &contents(), Some(&facts)).unwrap());
        let v: Value = serde_json::from_slice(&a).unwrap();
        assert_eq!(v["creationInfo"]["created"], "2023-11-14T22:13:20Z");
        let text = String::from_utf8(a).unwrap();
        assert!(text.contains("pkg:deb/debian/libpq5@15.8-0%2Bdeb12u1?arch=amd64&distro=debian-12&upstream=postgresql-15"));
        assert!(text.contains("pkg:pypi/psycopg2@2.9.10"));
        assert!(text.contains("\"checksumValue\": \"aaaa\""));
        assert!(text.contains("pkg:oci/api@sha256%3Aabcd"));
    }

    #[test]
    fn hashes_by_requirement() {
        let h = BuildFacts::hashes_of("# via x\nFlask==3.0 \\\n    --hash=sha256:11 \\\n    --hash=sha256:22\nmarkupsafe==2.1 --hash=sha256:33\n");
        assert_eq!(h["flask"], vec!["11", "22"]);
        assert_eq!(h["markupsafe"], vec!["33"]);
    }
}
