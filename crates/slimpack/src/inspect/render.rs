//! `inspect` for people: tables that fit 80 columns, colored only on a
//! terminal (and never with `NO_COLOR`). Names come from images: every
//! one is printed with its control characters escaped.

use super::{Diff, Inspection};
use crate::core::text::escape_controls;
use std::fmt::Write;

pub const WIDTH: usize = 80;

#[derive(Clone, Copy)]
pub struct Style {
    pub color: bool,
}

impl Style {
    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    fn head(&self, s: &str) -> String {
        self.paint("1", s)
    }
    fn dim(&self, s: &str) -> String {
        self.paint("2", s)
    }
    fn grew(&self, s: &str) -> String {
        self.paint("31", s)
    }
    fn shrank(&self, s: &str) -> String {
        self.paint("32", s)
    }
}

/// Bytes in SI units as the benchmark reports them (`81.5 MB`).
pub fn size(b: u64) -> String {
    crate::core::progress::human(b)
}

fn signed(l: u64, r: u64) -> String {
    if r >= l {
        format!("+{}", size(r - l))
    } else {
        format!("-{}", size(l - r))
    }
}

/// `s` escaped and cut to `w` characters, the middle given up first (a
/// path's end says the most).
pub fn fit(s: &str, w: usize) -> String {
    let s = escape_controls(s);
    let chars: Vec<char> = s.chars().collect();
    if chars.len() <= w {
        return s;
    }
    if w < 5 {
        return chars[..w].iter().collect();
    }
    let head = (w - 1) / 3;
    let tail = w - 1 - head;
    let mut out: String = chars[..head].iter().collect();
    out.push('…');
    out.extend(&chars[chars.len() - tail..]);
    out
}

/// `s` escaped and cut at its end: a command's start says the most.
pub fn fit_end(s: &str, w: usize) -> String {
    let s = escape_controls(s);
    if s.chars().count() <= w {
        return s;
    }
    let mut out: String = s.chars().take(w.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn pct(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "-".into();
    }
    format!("{:.1}%", part as f64 * 100.0 / whole as f64)
}

pub fn inspection(i: &Inspection, st: Style) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{}", st.head(&fit(&i.name, WIDTH)));
    let _ = writeln!(o, "  {}", fit(&i.manifest_digest, WIDTH - 2));
    let _ = writeln!(
        o,
        "  {} uncompressed, {} compressed, {} layers, {} files",
        size(i.uncompressed),
        size(i.compressed),
        i.layers.len(),
        i.files
    );
    if let Some(py) = &i.contents.interpreter {
        let _ = writeln!(
            o,
            "  Python {} ({}, {})",
            fit(&py.version, 20),
            py.origin,
            fit(&py.path, 30)
        );
    }
    if let Some(os) = &i.contents.os {
        let _ = writeln!(
            o,
            "  {}: {} Debian packages, {} Python distributions",
            fit(os, 40),
            i.contents.debs.len(),
            i.contents.dists.len()
        );
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "{}",
        st.head(&format!(
            "{:<3}{:<34}{:>9}{:>9}{:>8}{:>8}{:>8}",
            "#", "LAYER", "SIZE", "GZIP", "ADDED", "CHANGED", "GONE"
        ))
    );
    for (n, l) in i.layers.iter().enumerate() {
        let what = if l.created_by.is_empty() {
            l.digest.clone()
        } else {
            l.created_by.clone()
        };
        let what = what
            .replace("/bin/sh -c #(nop) ", "")
            .replace("/bin/sh -c ", "");
        let _ = writeln!(
            o,
            "{:<3}{:<34}{:>9}{:>9}{:>8}{:>8}{:>8}",
            n + 1,
            fit_end(what.trim_start_matches("slimpack: "), 33),
            size(l.uncompressed),
            size(l.compressed),
            l.added,
            l.changed,
            l.removed
        );
    }
    let w = &i.waste;
    let _ = writeln!(o);
    let _ = writeln!(o, "{}", st.head("WASTE"));
    for (what, bytes, files) in [
        (
            "overwritten by a later layer",
            w.overwritten_bytes,
            w.overwritten_files,
        ),
        ("deleted by a later layer", w.deleted_bytes, w.deleted_files),
        ("duplicate files", w.duplicate_bytes, w.duplicate_files),
    ] {
        let _ = writeln!(o, "  {what:<28} {:>10} in {files} files", size(bytes));
    }
    let _ = writeln!(
        o,
        "  efficiency (dive's score)    {:>9.1}%",
        w.efficiency * 100.0
    );
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "{}",
        st.head(&format!(
            "{:<52}{:>10}{:>8}{:>10}",
            "CATEGORY", "SIZE", "SHARE", "FILES"
        ))
    );
    for g in &i.categories {
        let _ = writeln!(
            o,
            "{:<52}{:>10}{:>8}{:>10}",
            fit(&g.name, 51),
            size(g.bytes),
            pct(g.bytes, i.file_bytes),
            g.files
        );
        for item in g.items.iter().take(5) {
            let _ = writeln!(
                o,
                "{}",
                st.dim(&format!(
                    "  {:<50}{:>10}{:>8}{:>10}",
                    fit(&item.name, 49),
                    size(item.bytes),
                    pct(item.bytes, i.file_bytes),
                    item.files
                ))
            );
        }
        if g.items.len() > 5 {
            let rest: u64 = g.items[5..].iter().map(|x| x.bytes).sum();
            let _ = writeln!(
                o,
                "{}",
                st.dim(&format!(
                    "  {:<50}{:>10}",
                    format!("{} more", g.items.len() - 5),
                    size(rest)
                ))
            );
        }
    }
    for (title, list) in [
        ("LARGEST DIRECTORIES", &i.largest_dirs),
        ("LARGEST FILES", &i.largest_files),
    ] {
        let _ = writeln!(o);
        let _ = writeln!(o, "{}", st.head(&format!("{title:<68}{:>12}", "SIZE")));
        for d in list {
            let _ = writeln!(o, "{:<68}{:>12}", fit(&d.name, 67), size(d.bytes));
        }
    }
    o
}

pub fn diff(d: &Diff, st: Style) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{} {}", st.head("A:"), fit(&d.left, WIDTH - 3));
    let _ = writeln!(o, "{} {}", st.head("B:"), fit(&d.right, WIDTH - 3));
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "{}",
        st.head(&format!(
            "{:<44}{:>11}{:>11}{:>12}",
            "CATEGORY", "A", "B", "B - A"
        ))
    );
    let line = |name: &str, l: u64, r: u64, indent: bool| {
        let change = signed(l, r);
        let change = if r > l {
            st.grew(&format!("{change:>12}"))
        } else if r < l {
            st.shrank(&format!("{change:>12}"))
        } else {
            format!("{change:>12}")
        };
        // An item only one image has: `+` appeared in B, `-` only in A.
        let name = match (indent, l, r) {
            (false, ..) => fit(name, 43),
            (true, 0, _) => format!("+ {}", fit(name, 41)),
            (true, _, 0) => format!("- {}", fit(name, 41)),
            (true, ..) => format!("  {}", fit(name, 41)),
        };
        format!("{:<44}{:>11}{:>11}{}", name, size(l), size(r), change)
    };
    for g in &d.groups {
        let _ = writeln!(o, "{}", line(&g.name, g.left, g.right, false));
        for i in g.items.iter().take(6) {
            let _ = writeln!(o, "{}", line(&i.name, i.left, i.right, true));
        }
        if g.items.len() > 6 {
            let _ = writeln!(
                o,
                "{}",
                st.dim(&format!("  {} more changed", g.items.len() - 6))
            );
        }
    }
    let _ = writeln!(
        o,
        "{}",
        st.head(&line("total (files)", d.left_bytes, d.right_bytes, false))
    );
    let _ = writeln!(o, "{}", st.dim("+ only in B   - only in A"));
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diff_marks_what_only_one_image_has() {
        let d = Diff {
            left: "peer".into(),
            right: "ours".into(),
            left_bytes: 300,
            right_bytes: 120,
            groups: vec![super::super::GroupDiff {
                name: "system packages".into(),
                left: 300,
                right: 120,
                items: vec![
                    super::super::ItemDiff {
                        name: "perl-base".into(),
                        left: 200,
                        right: 0,
                    },
                    super::super::ItemDiff {
                        name: "libpq5".into(),
                        left: 0,
                        right: 20,
                    },
                    super::super::ItemDiff {
                        name: "libc6".into(),
                        left: 100,
                        right: 100,
                    },
                ],
            }],
        };
        let text = diff(&d, Style { color: false });
        assert!(text.contains("\n- perl-base"), "{text}");
        assert!(text.contains("\n+ libpq5"), "{text}");
        assert!(text.contains("\n  libc6"), "{text}");
        assert!(text.lines().all(|l| l.chars().count() <= WIDTH), "{text}");
    }

    #[test]
    fn names_are_cut_in_the_middle_and_escaped() {
        assert_eq!(fit("short", 10), "short");
        let f = fit("/opt/venv/lib/python3.11/site-packages/sqlalchemy/orm", 20);
        assert_eq!(f.chars().count(), 20);
        assert!(f.ends_with("sqlalchemy/orm") || f.contains('…'));
        assert!(!fit("evil\x1b[2Jname", 40).contains('\x1b'));
        assert_eq!(size(81_500_000), "81.5 MB");
        assert_eq!(size(999), "999 B");
    }
}
