//! `requirements.txt` as pip and uv read it: `-r`/`-c` includes, line
//! continuations, comments, `--hash` options and environment markers. We
//! parse it to fail early with `file:line`, to know what is pinned, and to
//! collect every file that the cache key must cover; uv reads the files
//! itself for the actual resolution.

use anyhow::{bail, Result};
use regex::Regex;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Requirement {
    pub name: String,
    /// The version specifier as written (`==3.0.0`, `>=2,<3`), maybe empty.
    pub specifier: String,
    pub marker: Option<String>,
    pub hashes: Vec<String>,
    /// `file:line` where it was declared.
    pub origin: String,
}

impl Requirement {
    /// `==X` (without wildcard) or `===X`: one exact version.
    pub fn is_pinned(&self) -> bool {
        let s = self.specifier.trim();
        (s.starts_with("==") && !s.contains('*') && !s.contains(',')) || s.starts_with("===")
    }
}

#[derive(Debug, Default, Clone)]
pub struct RequirementsFile {
    pub requirements: Vec<Requirement>,
    /// The top file and every file it includes, in the order read.
    pub files: Vec<PathBuf>,
    /// `--index-url` / `--extra-index-url` lines.
    pub indexes: Vec<IndexLine>,
}

/// An `--index-url` (`-i`) or `--extra-index-url` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexLine {
    /// `--extra-index-url`: searched before the default, not instead of it.
    pub extra: bool,
    pub url: String,
    /// `file:line`.
    pub origin: String,
}

fn name_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r"^([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(\[[A-Za-z0-9._,\s-]*\])?\s*(.*)$",
        )
        .unwrap()
    })
}

fn clause_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"^\s*(~=|===|==|!=|<=|>=|<|>)\s*([A-Za-z0-9][A-Za-z0-9.*+!_-]*)\s*$").unwrap()
    })
}

/// Parses one requirement (PEP 508 without URLs) or explains what is wrong.
pub fn parse_requirement(text: &str, origin: &str) -> std::result::Result<Requirement, String> {
    let (spec_part, marker) = match text.split_once(';') {
        Some((a, m)) => {
            let m = m.trim();
            if m.is_empty() {
                return Err("empty environment marker after `;`".into());
            }
            (a.trim(), Some(m.to_string()))
        }
        None => (text.trim(), None),
    };
    if let Some((name, url)) = spec_part.split_once(" @ ") {
        return direct_url(name.trim(), url.trim(), marker, origin);
    }
    if spec_part.contains("://") {
        return Err("a URL needs a name: write `name @ URL`".into());
    }
    let caps = name_re()
        .captures(spec_part)
        .ok_or_else(|| format!("{spec_part:?} does not start with a package name"))?;
    let name = caps[1].to_string();
    let mut rest = caps.get(3).map_or("", |m| m.as_str()).trim();
    if rest.starts_with('(') && rest.ends_with(')') {
        rest = rest[1..rest.len() - 1].trim();
    }
    if !rest.is_empty() {
        for clause in rest.split(',') {
            if !clause_re().is_match(clause) {
                return Err(format!(
                    "invalid version specifier {:?} for {name} (expected e.g. `{name}==1.2.3` or `{name}>=1.2,<2`)",
                    clause.trim()
                ));
            }
        }
    }
    Ok(Requirement {
        name,
        specifier: rest.replace(' ', ""),
        marker,
        hashes: Vec::new(),
        origin: origin.to_string(),
    })
}

/// `name @ URL`: a wheel or sdist by https URL (hashed by the resolver like
/// any download), or a git repository at a ref (resolved to a commit).
/// Credentials never go in the URL: they would be stored in the lock, the
/// plan and the cache.
fn direct_url(
    name: &str,
    url: &str,
    marker: Option<String>,
    origin: &str,
) -> std::result::Result<Requirement, String> {
    let scheme = url.split("://").next().unwrap_or("");
    if !matches!(
        scheme,
        "https" | "http" | "git+https" | "git+http" | "git+ssh" | "git+file"
    ) {
        return Err(format!(
            "{url}: only https:// URLs and git+https:// (git+ssh://) repositories are supported"
        ));
    }
    let authority = url
        .split_once("://")
        .map_or("", |(_, r)| r.split('/').next().unwrap_or(""));
    if scheme != "git+ssh" && authority.contains('@') {
        return Err(format!(
            "{name}: the URL holds credentials, which would be stored in the lock, the plan and the cache; remove them and let git or uv find them (a git credential helper, GIT_CONFIG_* url.<base>.insteadOf in the environment, or ~/.netrc)"
        ));
    }
    if name_re()
        .captures(name)
        .is_none_or(|c| c[0].len() != c[1].len())
    {
        return Err(format!("{name:?} is not a package name"));
    }
    Ok(Requirement {
        name: name.to_string(),
        specifier: format!("@ {url}"),
        marker,
        hashes: Vec::new(),
        origin: origin.to_string(),
    })
}

/// Reads `path` and everything it includes.
pub fn read(path: &Path) -> Result<RequirementsFile> {
    let mut out = RequirementsFile::default();
    let root = path.parent().unwrap_or(Path::new("."));
    read_into(root, path, &mut out, 0)?;
    Ok(out)
}

/// A requirement by local path: `.`, `./libs/x`, `../x`, `/abs`, `file:...`.
fn is_local(s: &str) -> bool {
    s == "."
        || s.starts_with("./")
        || s.starts_with("../")
        || s.starts_with('/')
        || s.starts_with("file:")
}

fn read_into(root: &Path, path: &Path, out: &mut RequirementsFile, depth: usize) -> Result<()> {
    if depth > 16 {
        bail!(
            "{}: -r includes nest deeper than 16 levels (a cycle?)",
            path.display()
        );
    }
    let text = crate::core::fs::read_project_file(root, path)?;
    // A UTF-8 byte-order mark (editors on Windows write one) is no text.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text).to_string();
    if out.files.iter().any(|f| f == path) {
        return Ok(());
    }
    out.files.push(path.to_path_buf());
    let dir = path.parent().unwrap_or(Path::new("."));
    let display = path.display().to_string();

    // Join continuation lines, remembering where each logical line started.
    let mut logical: Vec<(usize, String)> = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let (start, mut acc) = pending.take().unwrap_or((line_no, String::new()));
        // A comment starts at `#` preceded by whitespace or at line start.
        let stripped = match raw.find(" #").or(if raw.trim_start().starts_with('#') {
            Some(0)
        } else {
            None
        }) {
            Some(0) => "",
            Some(i) => &raw[..i],
            None => raw,
        };
        if let Some(cont) = stripped.strip_suffix('\\') {
            acc.push_str(cont);
            acc.push(' ');
            pending = Some((start, acc));
        } else {
            acc.push_str(stripped);
            logical.push((start, acc));
        }
    }
    if let Some(p) = pending {
        logical.push(p);
    }

    for (line_no, line) in logical {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let origin = format!("{display}:{line_no}");
        let err = |msg: String| anyhow::anyhow!("{origin}: {msg}");
        if line.starts_with('-') {
            let (opt, val) = match line.split_once([' ', '=']) {
                Some((o, v)) => (o, v.trim()),
                None => (line, ""),
            };
            match opt {
                "-r" | "--requirement" | "-c" | "--constraint" => {
                    if val.is_empty() {
                        return Err(err(format!("{opt} needs a file name")));
                    }
                    let inc = dir.join(val);
                    if !inc.is_file() {
                        return Err(err(format!("included file {} does not exist", inc.display())));
                    }
                    if opt.starts_with("-r") || opt == "--requirement" {
                        read_into(root, &inc, out, depth + 1)?;
                    } else if !out.files.contains(&inc) {
                        // Constraint files shape the resolution: key on them too.
                        out.files.push(inc);
                    }
                }
                // A package of the project's own (built into a wheel and
                // installed, not editable); a VCS URL is not supported yet.
                "-e" | "--editable" if is_local(val) => {}
                "-e" | "--editable" => {
                    return Err(err(format!(
                        "{val}: editable installs of anything but a directory of the project are not supported yet; publish the package to an index, or vendor it into the project and write `-e ./path`"
                    )))
                }
"-i" | "--index-url" | "--extra-index-url" => {
                    if val.is_empty() {
                        return Err(err(format!("{opt} needs a URL")));
                    }
                    out.indexes.push(IndexLine {
                        extra: opt == "--extra-index-url",
                        url: val.to_string(),
                        origin: origin.clone(),
                    });
                }
                "-f" | "--find-links" | "--no-binary"
                | "--only-binary" | "--pre" | "--prefer-binary" | "--no-index" | "--trusted-host" => {}
                _ => return Err(err(format!("unknown option {opt}"))),
            }
            continue;
        }
        // A package of the project's own, by path.
        if is_local(line.split([' ', ';']).next().unwrap_or(line)) {
            continue;
        }
        // A requirement, possibly followed by per-requirement options.
        let (req_text, opts) = match line.find(" --") {
            Some(i) => (&line[..i], &line[i..]),
            None => (line, ""),
        };
        let mut req = parse_requirement(req_text, &origin).map_err(err)?;
        for opt in opts.split_whitespace() {
            if let Some(h) = opt.strip_prefix("--hash=") {
                if !h.starts_with("sha256:")
                    && !h.starts_with("sha384:")
                    && !h.starts_with("sha512:")
                {
                    return Err(err(format!("unsupported hash {h:?} (use sha256:...)")));
                }
                req.hashes.push(h.to_string());
            } else if opt.starts_with("--") {
                return Err(err(format!("unknown per-requirement option {opt}")));
            }
        }
        out.requirements.push(req);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn includes_continuations_hashes_markers() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "base.txt", "gunicorn==21.2.0 # server\n");
        let p = write(
            d.path(),
            "requirements.txt",
            "# top\n-r base.txt\nflask==3.0.0 \\\n    --hash=sha256:aaaa \\\n    --hash=sha256:bbbb\npywin32>=300 ; sys_platform == 'win32'\n\n--index-url https://pypi.org/simple\n",
        );
        let r = read(&p).unwrap();
        assert_eq!(r.files.len(), 2);
        let names: Vec<_> = r.requirements.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, vec!["gunicorn", "flask", "pywin32"]);
        assert_eq!(r.requirements[1].hashes.len(), 2);
        assert!(r.requirements[1].origin.ends_with("requirements.txt:3"));
        assert_eq!(
            r.requirements[2].marker.as_deref(),
            Some("sys_platform == 'win32'")
        );
        assert!(r.requirements[0].is_pinned());
        assert!(!r.requirements[2].is_pinned());
    }

    #[test]
    fn errors_name_file_and_line() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "requirements.txt",
            "flask==3.0.0\n\ngunicorn==>21\n",
        );
        let e = read(&p).unwrap_err().to_string();
        assert!(e.contains("requirements.txt:3"), "{e}");
        assert!(e.contains("gunicorn"), "{e}");
        let p = write(d.path(), "requirements.txt", "-r missing.txt\n");
        assert!(read(&p).unwrap_err().to_string().contains("missing.txt"));
        let p = write(
            d.path(),
            "requirements.txt",
            "-e git+https://example.com/x.git#egg=x\n",
        );
        let e = read(&p).unwrap_err().to_string();
        assert!(
            e.contains("requirements.txt:1") && e.contains("editable"),
            "{e}"
        );
        // The project's own packages by path are taken (built into wheels).
        let p = write(
            d.path(),
            "requirements.txt",
            "-e .\n./libs/util\nflask==3.0.0\n",
        );
        assert_eq!(read(&p).unwrap().requirements.len(), 1);
        let p = write(d.path(), "requirements.txt", "!!!\n");
        assert!(read(&p)
            .unwrap_err()
            .to_string()
            .contains("requirements.txt:1"));
    }

    #[test]
    fn a_byte_order_mark_is_no_text() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "requirements.txt", "\u{feff}flask==3.0.0\n");
        assert_eq!(read(&p).unwrap().requirements[0].name, "flask");
    }

    #[test]
    fn requirement_forms() {
        let ok = [
            "flask",
            "flask>=2,<4",
            "Flask[async] == 3.0.0",
            "a.b-c_d~=1.4",
            "x (>=1.0)",
            "zope.interface===5.0",
            "pkg @ https://x/y-1.0-py3-none-any.whl",
            "colors @ git+https://example.com/colors.git@v1 ; python_version >= '3.11'",
        ];
        for s in ok {
            assert!(parse_requirement(s, "t").is_ok(), "{s}");
        }
        let bad = [
            "flask==",
            "flask=3",
            "-flask",
            "flask>=1;",
            "pkg @ ftp://x/y.whl",
            "pkg @ https://user:token@x/y.whl",
            "colors @ git+https://ghp_secret@github.com/o/colors.git",
            "https://x/y.whl",
        ];
        for s in bad {
            assert!(parse_requirement(s, "t").is_err(), "{s}");
        }
    }
}
