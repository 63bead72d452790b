//! System programs and libraries that Python packages call or `dlopen`,
//! which the ELF `NEEDED` of the venv cannot show: a curated table from
//! PyPI distributions to the Debian packages they need at run time.

use crate::project::normalize_name;
use crate::python::Lock;
use serde::Serialize;
use slimpack_debian::Suite;

/// A distribution in the lock that needs Debian packages at run time.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SystemNeed {
    /// The PyPI distribution.
    pub dist: String,
    pub packages: Vec<String>,
    pub why: String,
}

struct Entry {
    dist: &'static str,
    /// Debian 11/12 names; `t64` marks a library renamed `…t64` from Debian
    /// 13 on.
    packages: &'static [&'static str],
    why: &'static str,
    /// Not needed when one of these is installed too (it bundles the library).
    unless: &'static [&'static str],
}

const TABLE: &[Entry] = &[
    Entry {
        dist: "pdf2image",
        packages: &["poppler-utils"],
        why: "runs pdftoppm and pdfinfo",
        unless: &[],
    },
    Entry {
        dist: "pydub",
        packages: &["ffmpeg"],
        why: "runs ffmpeg and ffprobe",
        unless: &[],
    },
    Entry {
        dist: "moviepy",
        packages: &["ffmpeg"],
        why: "runs ffmpeg",
        unless: &["imageio-ffmpeg"],
    },
    Entry {
        dist: "ffmpeg-python",
        packages: &["ffmpeg"],
        why: "runs ffmpeg",
        unless: &[],
    },
    Entry {
        dist: "openai-whisper",
        packages: &["ffmpeg"],
        why: "runs ffmpeg to decode audio",
        unless: &[],
    },
    Entry {
        dist: "pytesseract",
        packages: &["tesseract-ocr"],
        why: "runs tesseract",
        unless: &[],
    },
    Entry {
        dist: "python-magic",
        packages: &["libmagic1:t64"],
        why: "loads libmagic with ctypes",
        unless: &[],
    },
    Entry {
        dist: "weasyprint",
        packages: &[
            "libpango-1.0-0",
            "libpangoft2-1.0-0",
            "libharfbuzz-subset0",
            "fonts-dejavu-core",
        ],
        why: "loads Pango and HarfBuzz with cffi, and needs a font",
        unless: &[],
    },
    Entry {
        dist: "cairocffi",
        packages: &["libcairo2"],
        why: "loads libcairo with cffi",
        unless: &[],
    },
    Entry {
        dist: "cairosvg",
        packages: &["libcairo2"],
        why: "loads libcairo with cffi",
        unless: &[],
    },
    Entry {
        dist: "opencv-python",
        packages: &["libgl1", "libglib2.0-0:t64"],
        why: "cv2 links libGL and GLib, which the wheel does not bundle",
        unless: &[],
    },
    Entry {
        dist: "opencv-contrib-python",
        packages: &["libgl1", "libglib2.0-0:t64"],
        why: "cv2 links libGL and GLib, which the wheel does not bundle",
        unless: &[],
    },
    Entry {
        dist: "psycopg",
        packages: &["libpq5"],
        why: "loads libpq with ctypes (pure-Python psycopg 3)",
        unless: &["psycopg-binary", "psycopg-c"],
    },
    Entry {
        dist: "pyodbc",
        packages: &["unixodbc"],
        why: "needs the unixODBC driver manager and its configuration",
        unless: &[],
    },
];

/// The Debian packages the lock's distributions need beyond what they
/// link, for `suite`, leaving out the distributions in `off`.
pub fn needs(lock: &Lock, suite: Suite, off: &[String]) -> Vec<SystemNeed> {
    let have = |d: &str| lock.packages.iter().any(|p| p.name == d);
    let off: Vec<String> = off.iter().map(|d| normalize_name(d)).collect();
    TABLE
        .iter()
        .filter(|e| have(e.dist))
        .filter(|e| !e.unless.iter().any(|u| have(u)))
        .filter(|e| !off.iter().any(|o| o == e.dist))
        .map(|e| SystemNeed {
            dist: e.dist.to_string(),
            packages: e.packages.iter().map(|p| name_in(p, suite)).collect(),
            why: e.why.to_string(),
        })
        .collect()
}

fn name_in(entry: &str, suite: Suite) -> String {
    match entry.strip_suffix(":t64") {
        Some(n) if super::native::renamed_t64(suite) => format!("{n}t64"),
        Some(n) => n.to_string(),
        None => entry.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(names: &[&str]) -> Lock {
        Lock::of(&names.iter().map(|n| (*n, "1")).collect::<Vec<_>>())
    }

    #[test]
    fn table_lookups() {
        let n = needs(
            &lock(&["pdf2image", "pydub", "flask"]),
            Suite::Bookworm,
            &[],
        );
        assert_eq!(n.len(), 2);
        assert_eq!(n[0].packages, vec!["poppler-utils"]);
        assert_eq!(n[1].packages, vec!["ffmpeg"]);
        let n = needs(&lock(&["python-magic"]), Suite::Trixie, &[]);
        assert_eq!(n[0].packages, vec!["libmagic1t64"]);
        let n = needs(&lock(&["python-magic"]), Suite::Bookworm, &[]);
        assert_eq!(n[0].packages, vec!["libmagic1"]);
        assert!(needs(&lock(&["psycopg", "psycopg-binary"]), Suite::Trixie, &[]).is_empty());
        assert_eq!(
            needs(&lock(&["psycopg"]), Suite::Trixie, &[])[0].packages,
            vec!["libpq5"]
        );
        assert!(needs(&lock(&["pdf2image"]), Suite::Trixie, &["PDF2Image".into()]).is_empty());
    }
}
