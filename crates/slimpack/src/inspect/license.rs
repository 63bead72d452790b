//! Licenses as SPDX expressions: Debian's machine-readable copyright files
//! (DEP-5) and Python's core metadata. A name with no SPDX identifier
//! becomes a `LicenseRef-` whose text is kept, never a guess.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A license expression and the `LicenseRef-`s it uses, with their text.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Declared {
    pub expression: String,
    pub refs: BTreeMap<String, Extracted>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Extracted {
    pub name: String,
    pub text: String,
}

/// The license of a Debian package from its copyright file: the
/// `Files: *` paragraph's, when the file is in DEP-5's format; `None`
/// otherwise (free-form files say nothing a machine can trust).
pub fn debian(copyright: &str, package: &str) -> Option<Declared> {
    let paragraphs: Vec<BTreeMap<String, String>> = copyright
        .replace("\r\n", "\n")
        .split("\n\n")
        .map(paragraph)
        .filter(|p| !p.is_empty())
        .collect();
    let header = paragraphs.first()?;
    if !header
        .get("format")
        .is_some_and(|f| f.contains("copyright-format/1.0"))
    {
        return None;
    }
    let files = paragraphs.iter().find(|p| {
        p.get("files")
            .is_some_and(|f| f.split_whitespace().any(|g| g == "*"))
    })?;
    let field = files.get("license")?;
    let short = field.lines().next()?.trim();
    if short.is_empty() {
        return None;
    }
    // Stand-alone License paragraphs hold the texts the short names refer to.
    let texts: BTreeMap<String, String> = paragraphs
        .iter()
        .filter(|p| !p.contains_key("files"))
        .filter_map(|p| {
            let l = p.get("license")?;
            let (name, text) = l.split_once('\n').unwrap_or((l, ""));
            Some((name.trim().to_lowercase(), text.to_string()))
        })
        .collect();
    let inline = field.split_once('\n').map(|(_, t)| t.to_string());
    Some(expression(short, |name| {
        let text = inline
            .clone()
            .filter(|t| !t.trim().is_empty())
            .or_else(|| texts.get(&name.to_lowercase()).cloned())
            .filter(|t| !t.trim().is_empty());
        text.map(|t| cleanup_text(&t)).unwrap_or_else(|| {
            format!("The license named \"{name}\" in /usr/share/doc/{package}/copyright.")
        })
    }))
}

/// A DEP-5 paragraph: field names lowercased, continuation lines joined
/// with newlines.
fn paragraph(text: &str) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(v) = current.as_ref().and_then(|k| out.get_mut(k)) {
                v.push('\n');
                v.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            let k = k.trim().to_lowercase();
            out.insert(k.clone(), v.trim().to_string());
            current = Some(k);
        }
    }
    out
}

/// DEP-5 writes an empty line inside a text as ` .`.
fn cleanup_text(t: &str) -> String {
    t.lines()
        .map(|l| if l == "." { "" } else { l })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A DEP-5 license field (`GPL-2+ or Artistic`, `LGPL-2.1+ and GPL-2+`,
/// `GPL-2+ with OpenSSL exception`) as an SPDX expression.
fn expression(short: &str, text: impl Fn(&str) -> String) -> Declared {
    let mut d = Declared::default();
    let lower = short.to_lowercase();
    // An exception Debian names has no SPDX identifier to be checked
    // against: the whole field is one license of its own.
    let items: Vec<(String, &str)> = if lower.contains(" with ") {
        vec![(short.to_string(), "")]
    } else {
        let mut items = Vec::new();
        let mut op = "";
        for word in short.replace(',', " ").split_whitespace() {
            match word.to_lowercase().as_str() {
                "or" => op = "OR",
                "and" => op = "AND",
                _ => {
                    items.push((word.to_string(), op));
                    op = "";
                }
            }
        }
        items
    };
    let mut parts = Vec::new();
    for (name, op) in &items {
        let id = spdx_id(name).unwrap_or_else(|| {
            let r = license_ref(name);
            d.refs.entry(r.clone()).or_insert_with(|| Extracted {
                name: name.clone(),
                text: text(name),
            });
            r
        });
        if !op.is_empty() && !parts.is_empty() {
            parts.push(op.to_string());
        } else if !parts.is_empty() {
            parts.push("AND".into());
        }
        parts.push(id);
    }
    d.expression = if parts.is_empty() {
        "NOASSERTION".into()
    } else {
        parts.join(" ")
    };
    d
}

/// `name` in the characters SPDX allows in ids and `LicenseRef-`s.
pub(super) fn idstring(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '+' => 'p',
            c if c.is_ascii_alphanumeric() || c == '.' || c == '-' => c,
            _ => '-',
        })
        .collect()
}

/// `LicenseRef-` and the name in the characters SPDX allows.
fn license_ref(name: &str) -> String {
    format!("LicenseRef-{}", idstring(name).trim_matches('-'))
}

/// Debian's short name as an SPDX identifier, when it is one.
fn spdx_id(name: &str) -> Option<String> {
    let (base, later) = match name.strip_suffix('+') {
        Some(b) => (b, true),
        None => (name, false),
    };
    let lower = base.to_lowercase();
    for family in ["gpl", "lgpl", "agpl", "gfdl"] {
        if let Some(v) = lower.strip_prefix(family).and_then(|r| r.strip_prefix('-')) {
            let v = if v.contains('.') {
                v.to_string()
            } else {
                format!("{v}.0")
            };
            let id = format!(
                "{}-{v}-{}",
                family.to_uppercase(),
                if later { "or-later" } else { "only" }
            );
            return known(&id);
        }
    }
    let mapped = match lower.as_str() {
        "expat" | "mit" => "MIT",
        "bsd-2-clause" => "BSD-2-Clause",
        "bsd-3-clause" => "BSD-3-Clause",
        "bsd-4-clause" => "BSD-4-Clause",
        "apache-2" | "apache-2.0" => "Apache-2.0",
        "artistic" | "artistic-1" => "Artistic-1.0-Perl",
        "artistic-2" | "artistic-2.0" => "Artistic-2.0",
        "psf-2" | "psf-2.0" => "PSF-2.0",
        "python" | "python-2.0" => "Python-2.0",
        "zlib" => "Zlib",
        "isc" => "ISC",
        "cc0" | "cc0-1.0" => "CC0-1.0",
        "openssl" => "OpenSSL",
        "mpl-1.1" => "MPL-1.1",
        "mpl-2.0" => "MPL-2.0",
        "x11" => "X11",
        "curl" => "curl",
        "libpng" => "Libpng",
        _ => "",
    };
    if later && !mapped.is_empty() {
        // `MIT+` means nothing; keep it as Debian wrote it.
        return None;
    }
    if !mapped.is_empty() {
        return known(mapped);
    }
    if later {
        return None;
    }
    spdx::license_id(base).map(|l| l.name.to_string())
}

fn known(id: &str) -> Option<String> {
    spdx::license_id(id).map(|l| l.name.to_string())
}

/// A Python distribution's license: `License-Expression` (PEP 639) when
/// it is valid SPDX, else a `License` field that is one identifier, else
/// the one unambiguous `License ::` classifier; `None` when unknown.
pub fn python(
    expression: Option<&str>,
    license_field: Option<&str>,
    classifiers: &[String],
) -> Option<String> {
    for candidate in [expression, license_field].into_iter().flatten() {
        let c = candidate.trim();
        if !c.is_empty() && !c.contains('\n') && spdx::Expression::parse(c).is_ok() {
            return Some(c.to_string());
        }
    }
    let mapped: Vec<&str> = classifiers
        .iter()
        .filter_map(|c| {
            Some(match c.rsplit("::").next()?.trim() {
                "MIT License" => "MIT",
                "ISC License (ISCL)" => "ISC",
                "Python Software Foundation License" => "PSF-2.0",
                "Mozilla Public License 2.0 (MPL 2.0)" => "MPL-2.0",
                "GNU General Public License v2 (GPLv2)" => "GPL-2.0-only",
                "GNU General Public License v3 (GPLv3)" => "GPL-3.0-only",
                "GNU Lesser General Public License v3 (LGPLv3)" => "LGPL-3.0-only",
                "Apache Software License" | "BSD License" => return None,
                _ => return None,
            })
        })
        .collect();
    match mapped.as_slice() {
        [one] => Some(one.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIBPQ: &str = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nUpstream-Name: PostgreSQL\n\nFiles: *\nCopyright: 1996-2023, The PostgreSQL Global Development Group\nLicense: PostgreSQL\n\nFiles: src/backend/regex/*\nCopyright: 1998, Henry Spencer\nLicense: Spencer\n\nLicense: PostgreSQL\n Permission to use, copy, modify, and distribute this software\n .\n IN NO EVENT\n";

    #[test]
    fn the_files_star_paragraph_decides() {
        let d = debian(LIBPQ, "libpq5").unwrap();
        assert_eq!(d.expression, "PostgreSQL");
        assert!(d.refs.is_empty());
    }

    #[test]
    fn debian_names_map_to_spdx_or_to_a_ref_with_text() {
        let t = |s: &str| expression(s, |n| format!("text of {n}"));
        assert_eq!(t("GPL-2+").expression, "GPL-2.0-or-later");
        assert_eq!(
            t("LGPL-2.1+ and GPL-2+").expression,
            "LGPL-2.1-or-later AND GPL-2.0-or-later"
        );
        assert_eq!(
            t("GPL-1+ or Artistic").expression,
            "GPL-1.0-or-later OR Artistic-1.0-Perl"
        );
        assert_eq!(t("Expat").expression, "MIT");
        assert_eq!(t("BSD-3-clause").expression, "BSD-3-Clause");
        let odd = t("public-domain");
        assert_eq!(odd.expression, "LicenseRef-public-domain");
        assert_eq!(
            odd.refs["LicenseRef-public-domain"].text,
            "text of public-domain"
        );
        let w = t("GPL-2+ with OpenSSL exception");
        assert_eq!(w.expression, "LicenseRef-GPL-2p-with-OpenSSL-exception");
        for e in [t("GPL-2+"), t("LGPL-2.1+ and GPL-2+"), t("Expat or GPL-3")] {
            assert!(
                spdx::Expression::parse(&e.expression).is_ok(),
                "{}",
                e.expression
            );
        }
    }

    #[test]
    fn free_form_copyright_files_declare_nothing() {
        assert_eq!(
            debian(
                "This is Debian's prepackaged version of foo.\n\nLicense: GPL\n",
                "foo"
            ),
            None
        );
        let standalone_text = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\nCopyright: x\nLicense: Custom-1\n\nLicense: Custom-1\n Do what you like.\n .\n Really.\n";
        let d = debian(standalone_text, "foo").unwrap();
        assert_eq!(
            d.refs["LicenseRef-Custom-1"].text,
            "Do what you like.\n\nReally."
        );
    }

    #[test]
    fn python_licenses() {
        assert_eq!(
            python(Some("BSD-3-Clause"), None, &[]).as_deref(),
            Some("BSD-3-Clause")
        );
        assert_eq!(
            python(Some("not a license"), Some("MIT"), &[]).as_deref(),
            Some("MIT")
        );
        let c = vec!["License :: OSI Approved :: MIT License".to_string()];
        assert_eq!(
            python(None, Some("Copyright (c) me"), &c).as_deref(),
            Some("MIT")
        );
        let bsd = vec!["License :: OSI Approved :: BSD License".to_string()];
        assert_eq!(python(None, None, &bsd), None);
    }
}
