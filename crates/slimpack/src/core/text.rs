//! Text that came from outside (images, registries, projects) shown on a
//! terminal: control characters are escaped, so a name cannot clear the
//! screen, move the cursor or rewrite what was printed before it.

/// `s` quoted, with control characters escaped (`"a\u{1b}[2J"`).
pub fn shown(s: &str) -> String {
    format!("{s:?}")
}

/// `s` with every control character but newline and tab escaped as
/// `\u{..}`: for messages that span lines.
pub fn escape_controls(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_never_reach_the_terminal() {
        assert_eq!(shown("a\u{1b}[2Jb"), "\"a\\u{1b}[2Jb\"");
        assert_eq!(
            escape_controls("line\n\tnext\u{1b}[2J\r\u{7}"),
            "line\n\tnext\\u{1b}[2J\\u{d}\\u{7}"
        );
        assert_eq!(escape_controls("plain é"), "plain é");
    }

    proptest::proptest! {
        #[test]
        fn no_control_character_but_newline_and_tab_survives(s in ".*") {
            let e = escape_controls(&s);
            proptest::prop_assert!(e.chars().all(|c| !c.is_control() || c == '\n' || c == '\t'));
        }
    }
}
