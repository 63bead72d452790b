//! A Dockerfile parser that keeps what a linter needs: every instruction
//! with its line, flags (`--from`, `--mount`, ...), JSON or shell form and
//! heredocs; the parser directives (`syntax`, `escape`, `check`); the build
//! stages and what `--from` refers to; and `ARG`/`ENV` substitution.
//! The grammar follows Docker's reference and BuildKit's behaviour: line
//! continuations with the escape character, comment lines dropped inside
//! them, heredocs (`<<EOF`, `<<-EOF`, quoted delimiters) on RUN/COPY/ADD.

use std::collections::BTreeMap;
use std::fmt;

/// Instructions Docker knows (`MAINTAINER` is deprecated but still parsed).
const KEYWORDS: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

fn err(line: usize, message: impl Into<String>) -> ParseError {
    ParseError {
        line,
        message: message.into(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Directives {
    pub syntax: Option<String>,
    /// `\` unless `# escape=` says otherwise (only `\` and `` ` ``).
    pub escape: char,
    /// `# check=skip=...;error=true`, as written.
    pub check: Option<String>,
}

/// How the arguments were written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Args {
    /// `["executable", "arg"]`: no shell.
    Exec(Vec<String>),
    /// Anything else, run by the shell for RUN/CMD/ENTRYPOINT.
    Shell(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flag {
    pub name: String,
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    pub delimiter: String,
    pub body: String,
    /// `<<-`: leading tabs were stripped.
    pub strip_tabs: bool,
    /// A quoted delimiter: no expansion in the body.
    pub quoted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// First and last physical line (1-based).
    pub line: usize,
    pub end_line: usize,
    /// Upper case.
    pub keyword: String,
    pub flags: Vec<Flag>,
    pub args: Args,
    pub heredocs: Vec<Heredoc>,
    /// Index of the stage it belongs to (`None` for ARGs before the first FROM).
    pub stage: Option<usize>,
}

impl Instruction {
    pub fn flag(&self, name: &str) -> Option<&Flag> {
        self.flags.iter().find(|f| f.name == name)
    }

    /// The arguments as one string (exec form joined by spaces).
    pub fn text(&self) -> String {
        match &self.args {
            Args::Exec(v) => v.join(" "),
            Args::Shell(s) => s.clone(),
        }
    }
}

/// Where a `--from` or a `FROM` points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Stage(usize),
    Image(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub index: usize,
    pub name: Option<String>,
    /// The `FROM` argument with global ARG defaults substituted.
    pub base: String,
    /// An earlier stage when `FROM` names one.
    pub from: Source,
    pub platform: Option<String>,
    /// Index of its FROM in `instructions`, and of its last instruction.
    pub first: usize,
    pub last: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    pub directives: Directives,
    pub instructions: Vec<Instruction>,
    pub stages: Vec<Stage>,
    /// ARGs declared before the first FROM, with their defaults.
    pub global_args: BTreeMap<String, Option<String>>,
    /// Inline suppressions: line of the instruction they precede → rule ids
    /// (`# hadolint ignore=DL3008,DL3009`, `# slimpack-ignore RULE ...`).
    pub ignores: BTreeMap<usize, Vec<String>>,
}

impl Dockerfile {
    /// The stage a `--from` value names: a stage name, a stage index, or an image.
    pub fn resolve_from(&self, value: &str, before: usize) -> Source {
        resolve_in(&self.stages, value, before)
    }

    pub fn stage_instructions(&self, stage: usize) -> impl Iterator<Item = &Instruction> {
        self.instructions
            .iter()
            .filter(move |i| i.stage == Some(stage))
    }
}

/// A stage among the first `before` ones, by name or index; else an image.
fn resolve_in(stages: &[Stage], value: &str, before: usize) -> Source {
    if let Some(s) = stages.iter().take(before).find(|s| {
        s.name
            .as_deref()
            .is_some_and(|n| n.eq_ignore_ascii_case(value))
    }) {
        return Source::Stage(s.index);
    }
    if let Ok(i) = value.parse::<usize>() {
        if i < before.min(stages.len()) {
            return Source::Stage(i);
        }
    }
    Source::Image(value.to_string())
}

/// `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR:+alternative}`, with the
/// escape character protecting a `$`. Unknown variables become empty, as in
/// Docker.
/// Where the `}` closing a `${` is, counting the `${…}` nested in it
/// (`${TAG:-${DEFAULT}}`).
fn closing_brace(chars: &[char]) -> Option<usize> {
    let mut depth = 1;
    let mut j = 0;
    while j < chars.len() {
        if chars[j] == '$' && chars.get(j + 1) == Some(&'{') {
            depth += 1;
            j += 2;
            continue;
        }
        if chars[j] == '}' {
            depth -= 1;
            if depth == 0 {
                return Some(j);
            }
        }
        j += 1;
    }
    None
}

pub fn expand(word: &str, vars: &BTreeMap<String, String>, escape: char) -> String {
    let chars: Vec<char> = word.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == escape && chars.get(i + 1) == Some(&'$') {
            out.push('$');
            i += 2;
            continue;
        }
        if c != '$' {
            out.push(c);
            i += 1;
            continue;
        }
        if chars.get(i + 1) == Some(&'{') {
            if let Some(end) = closing_brace(&chars[i + 2..]) {
                let inner: String = chars[i + 2..i + 2 + end].iter().collect();
                let (name, op, alt) = if let Some((n, a)) = inner.split_once(":-") {
                    (n, Some('-'), a)
                } else if let Some((n, a)) = inner.split_once(":+") {
                    (n, Some('+'), a)
                } else {
                    (inner.as_str(), None, "")
                };
                let val = vars.get(name).filter(|v| !v.is_empty());
                match (op, val) {
                    (Some('-'), None) => out.push_str(&expand(alt, vars, escape)),
                    (Some('+'), Some(_)) => out.push_str(&expand(alt, vars, escape)),
                    (Some('+'), None) => {}
                    (_, Some(v)) => out.push_str(v),
                    (_, None) => {}
                }
                i += 3 + end;
                continue;
            }
        }
        let name: String = chars[i + 1..]
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric() || **c == '_')
            .collect();
        if name.is_empty() {
            out.push('$');
            i += 1;
            continue;
        }
        if let Some(v) = vars.get(&name) {
            out.push_str(v);
        }
        i += 1 + name.chars().count();
    }
    out
}

/// A logical line: an instruction's text with continuations joined.
struct Logical {
    line: usize,
    end_line: usize,
    text: String,
}

fn parse_directive(line: &str) -> Option<(String, String)> {
    let rest = line.trim_start().strip_prefix('#')?;
    let (k, v) = rest.split_once('=')?;
    let k = k.trim().to_ascii_lowercase();
    if k.is_empty() || k.contains(char::is_whitespace) {
        return None;
    }
    Some((k, v.trim().to_string()))
}

/// Heredoc starts in an instruction's text: `<<EOF`, `<<-EOF`, `<<"EOF"`.
fn heredoc_starts(text: &str) -> Vec<(String, bool, bool)> {
    let mut out = Vec::new();
    let b = text.as_bytes();
    let mut i = 0;
    while i + 2 < b.len() {
        if b[i] == b'<' && b[i + 1] == b'<' && (i == 0 || b[i - 1] != b'<') {
            let mut j = i + 2;
            let strip = b.get(j) == Some(&b'-');
            if strip {
                j += 1;
            }
            let quote = b.get(j).copied().filter(|q| *q == b'"' || *q == b'\'');
            if quote.is_some() {
                j += 1;
            }
            let start = j;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                j += 1;
            }
            if j > start {
                let name = text[start..j].to_string();
                if let Some(q) = quote {
                    if b.get(j) == Some(&q) {
                        j += 1;
                    }
                }
                out.push((name, strip, quote.is_some()));
                i = j;
                continue;
            }
        }
        i += 1;
    }
    out
}

fn split_flags(text: &str) -> (Vec<Flag>, String) {
    let mut flags = Vec::new();
    let mut rest = text.trim_start();
    while let Some(after) = rest.strip_prefix("--") {
        let end = after.find(char::is_whitespace).unwrap_or(after.len());
        let word = &after[..end];
        if word.is_empty() {
            break;
        }
        let (name, value) = match word.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (word.to_string(), None),
        };
        flags.push(Flag { name, value });
        rest = after[end..].trim_start();
    }
    (flags, rest.to_string())
}

fn json_form(text: &str) -> Option<Vec<String>> {
    let t = text.trim();
    if !t.starts_with('[') {
        return None;
    }
    serde_json::from_str::<Vec<String>>(t).ok()
}

pub fn parse(source: &str) -> Result<Dockerfile, ParseError> {
    // A UTF-8 byte-order mark (editors on Windows write one) is no text.
    let source = source.strip_prefix('\u{feff}').unwrap_or(source);
    let lines: Vec<&str> = source.lines().collect();
    let (directives, first) = parse_directives(&lines)?;
    let (mut instructions, ignores) = parse_instructions(&lines, first, directives.escape)?;
    if instructions.is_empty() {
        return Err(err(1, "the file has no instructions"));
    }
    let (stages, global_args) = parse_stages(&mut instructions, directives.escape)?;
    Ok(Dockerfile {
        directives,
        instructions,
        stages,
        global_args,
        ignores,
    })
}

/// Parser directives: only at the very top, before any other line. Also
/// the index of the first line after them.
fn parse_directives(lines: &[&str]) -> Result<(Directives, usize), ParseError> {
    let mut directives = Directives {
        escape: '\\',
        ..Default::default()
    };
    let mut i = 0;
    while i < lines.len() {
        match parse_directive(lines[i]) {
            Some((k, v)) if k == "syntax" && directives.syntax.is_none() => {
                directives.syntax = Some(v)
            }
            Some((k, v)) if k == "check" && directives.check.is_none() => {
                directives.check = Some(v)
            }
            Some((k, v)) if k == "escape" => match v.as_str() {
                "\\" => directives.escape = '\\',
                "`" => directives.escape = '`',
                _ => {
                    return Err(err(
                        i + 1,
                        format!("escape directive {v:?}: only \\ or ` are allowed"),
                    ))
                }
            },
            _ => break,
        }
        i += 1;
    }
    Ok((directives, i))
}

/// Instructions from line `i` on, and the inline ignores by line.
#[allow(clippy::type_complexity)]
fn parse_instructions(
    lines: &[&str],
    mut i: usize,
    esc: char,
) -> Result<(Vec<Instruction>, BTreeMap<usize, Vec<String>>), ParseError> {
    let mut instructions = Vec::new();
    let mut ignores: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    let mut pending_ignores: Vec<String> = Vec::new();
    while i < lines.len() {
        let raw = lines[i];
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            i += 1;
            continue;
        }
        if let Some(c) = trimmed.strip_prefix('#') {
            let c = c.trim();
            if let Some(r) = c.strip_prefix("hadolint ignore=") {
                pending_ignores.extend(r.split(',').map(|s| s.trim().to_string()));
            } else if let Some(r) = c.strip_prefix("slimpack-ignore") {
                pending_ignores.extend(
                    r.split([',', ' '])
                        .filter(|s| !s.is_empty())
                        .map(str::to_string),
                );
            }
            i += 1;
            continue;
        }
        let logical = join_continuations(lines, &mut i, esc);
        let (word, rest) = match logical.text.trim_start().split_once(char::is_whitespace) {
            Some((w, r)) => (w.to_string(), r.trim().to_string()),
            None => (logical.text.trim().to_string(), String::new()),
        };
        let keyword = word.to_ascii_uppercase();
        if !KEYWORDS.contains(&keyword.as_str()) {
            return Err(err(logical.line, format!("unknown instruction {word:?}")));
        }
        let (flags, args_text) = if matches!(
            keyword.as_str(),
            "FROM" | "COPY" | "ADD" | "RUN" | "HEALTHCHECK"
        ) {
            split_flags(&rest)
        } else {
            (Vec::new(), rest)
        };
        // Heredocs take the lines that follow, up to their delimiter.
        let (heredocs, end_line) = if matches!(keyword.as_str(), "RUN" | "COPY" | "ADD") {
            read_heredocs(lines, &mut i, &args_text, logical.line)?
        } else {
            (Vec::new(), logical.end_line)
        };
        let args = match json_form(&args_text) {
            Some(v)
                if matches!(
                    keyword.as_str(),
                    "RUN" | "CMD" | "ENTRYPOINT" | "SHELL" | "COPY" | "ADD" | "VOLUME"
                ) =>
            {
                Args::Exec(v)
            }
            _ => Args::Shell(args_text),
        };
        if !pending_ignores.is_empty() {
            ignores.insert(logical.line, std::mem::take(&mut pending_ignores));
        }
        instructions.push(Instruction {
            line: logical.line,
            end_line,
            keyword,
            flags,
            args,
            heredocs,
            stage: None,
        });
    }
    Ok((instructions, ignores))
}

/// One logical line from line `i` on, joined as Docker does: escape and
/// newline removed, nothing added; comment and empty lines inside a
/// continuation dropped.
fn join_continuations(lines: &[&str], i: &mut usize, esc: char) -> Logical {
    let start = *i;
    let mut text = String::new();
    loop {
        let l = lines[*i];
        let t = l.trim_end();
        if let Some(body) = t.strip_suffix(esc) {
            // Joined as Docker does: escape and newline removed, nothing added.
            text.push_str(body);
            *i += 1;
            // Comment and empty lines inside a continuation are dropped.
            while *i < lines.len()
                && (lines[*i].trim().is_empty() || lines[*i].trim_start().starts_with('#'))
            {
                *i += 1;
            }
            if *i >= lines.len() {
                break;
            }
        } else {
            text.push_str(t);
            *i += 1;
            break;
        }
    }
    Logical {
        line: start + 1,
        end_line: *i,
        text,
    }
}

/// The bodies of the heredocs `args` opens, read from line `i` on; and the
/// line where the instruction ends.
fn read_heredocs(
    lines: &[&str],
    i: &mut usize,
    args: &str,
    line: usize,
) -> Result<(Vec<Heredoc>, usize), ParseError> {
    let mut heredocs = Vec::new();
    let mut end_line = *i;
    for (name, strip, quoted) in heredoc_starts(args) {
        let mut body = String::new();
        let mut closed = false;
        while *i < lines.len() {
            let l = lines[*i];
            *i += 1;
            let cmp = if strip { l.trim_start_matches('\t') } else { l };
            if cmp == name {
                closed = true;
                break;
            }
            body.push_str(cmp);
            body.push('\n');
        }
        end_line = *i;
        if !closed {
            return Err(err(
                line,
                format!("heredoc <<{name} is never closed (no line \"{name}\")"),
            ));
        }
        heredocs.push(Heredoc {
            delimiter: name,
            body,
            strip_tabs: strip,
            quoted,
        });
    }
    Ok((heredocs, end_line))
}

/// Stages, global ARGs, and which stage each instruction is in.
#[allow(clippy::type_complexity)]
fn parse_stages(
    instructions: &mut [Instruction],
    esc: char,
) -> Result<(Vec<Stage>, BTreeMap<String, Option<String>>), ParseError> {
    let mut stages: Vec<Stage> = Vec::new();
    let mut global_args = BTreeMap::new();
    let mut global_vals: BTreeMap<String, String> = BTreeMap::new();
    for (idx, ins) in instructions.iter_mut().enumerate() {
        match ins.keyword.as_str() {
            "FROM" => {
                let text = ins.text();
                let words: Vec<&str> = text.split_whitespace().collect();
                let (image, name) = match words.as_slice() {
                    [image] => (*image, None),
                    [image, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => {
                        (*image, Some(name.to_string()))
                    }
                    [] => return Err(err(ins.line, "FROM needs an image")),
                    _ => {
                        return Err(err(
                            ins.line,
                            format!("FROM {text:?}: expected IMAGE [AS NAME]"),
                        ))
                    }
                };
                let base = expand(image, &global_vals, esc);
                if let Some(last) = stages.last_mut() {
                    last.last = idx - 1;
                }
                let index = stages.len();
                let from = match resolve_in(&stages, &base, index) {
                    // FROM takes stage names only; a bare number is an image.
                    Source::Stage(s) if stages[s].name.is_none() => Source::Image(base.clone()),
                    f => f,
                };
                stages.push(Stage {
                    index,
                    name,
                    base,
                    from,
                    platform: ins.flag("platform").and_then(|f| f.value.clone()),
                    first: idx,
                    last: idx,
                });
            }
            "ARG" if stages.is_empty() => {
                for decl in ins.text().split_whitespace() {
                    let (k, v) = match decl.split_once('=') {
                        Some((k, v)) => (k.to_string(), Some(v.trim_matches('"').to_string())),
                        None => (decl.to_string(), None),
                    };
                    if let Some(v) = &v {
                        global_vals.insert(k.clone(), v.clone());
                    }
                    global_args.insert(k, v);
                }
            }
            kw if stages.is_empty() => {
                return Err(err(
                    ins.line,
                    format!("{kw} before the first FROM (only ARG may come before it)"),
                ))
            }
            _ => {}
        }
        if !stages.is_empty() {
            ins.stage = Some(stages.len() - 1);
        }
    }
    if let Some(last) = stages.last_mut() {
        last.last = instructions.len() - 1;
    }
    if stages.is_empty() {
        return Err(err(
            instructions[0].line,
            "no FROM: a Dockerfile needs at least one stage",
        ));
    }
    Ok((stages, global_args))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_defaults_and_a_byte_order_mark() {
        let vars: BTreeMap<String, String> = [("X".to_string(), "3.12-slim".to_string())].into();
        assert_eq!(
            expand("python:${TAG:-${X}}", &vars, '\\'),
            "python:3.12-slim"
        );
        assert_eq!(
            expand("python:${TAG:-${Y:-3.13}}", &vars, '\\'),
            "python:3.13"
        );
        let df = parse("\u{feff}FROM python:3.12-slim\nRUN echo hi\n").unwrap();
        assert_eq!(df.instructions[0].keyword, "FROM");
    }

    #[test]
    fn stages_flags_forms_and_continuations() {
        let d = parse(
            "# syntax=docker/dockerfile:1.7\n\
             # check=skip=JSONArgsRecommended\n\
             ARG PY=3.12\n\
             FROM python:${PY}-slim AS builder\n\
             RUN apt-get update && apt-get install -y \\\n\
             # a comment inside\n\
             \x20   gcc \\\n\
             \x20   libpq-dev\n\
             RUN --mount=type=cache,target=/root/.cache/uv uv sync --frozen\n\
             FROM python:${PY}-slim\n\
             COPY --from=builder /opt/venv /opt/venv\n\
             COPY --from=0 /x /y\n\
             COPY --from=nginx:latest /etc/nginx /etc/nginx\n\
             CMD [\"gunicorn\", \"main:app\"]\n\
             ENTRYPOINT python main.py\n",
        )
        .unwrap();
        assert_eq!(
            d.directives.syntax.as_deref(),
            Some("docker/dockerfile:1.7")
        );
        assert_eq!(
            d.directives.check.as_deref(),
            Some("skip=JSONArgsRecommended")
        );
        assert_eq!(d.stages.len(), 2);
        assert_eq!(d.stages[0].name.as_deref(), Some("builder"));
        assert_eq!(d.stages[0].base, "python:3.12-slim");
        assert_eq!(d.stages[1].base, "python:3.12-slim");
        let run = &d.instructions[2];
        assert_eq!((run.line, run.end_line), (5, 8));
        assert!(run.text().contains("gcc") && run.text().contains("libpq-dev"));
        assert!(!run.text().contains("comment"));
        let cached = &d.instructions[3];
        assert_eq!(
            cached.flag("mount").unwrap().value.as_deref(),
            Some("type=cache,target=/root/.cache/uv")
        );
        assert_eq!(cached.text(), "uv sync --frozen");
        let copies: Vec<&Instruction> = d
            .instructions
            .iter()
            .filter(|i| i.keyword == "COPY")
            .collect();
        let from =
            |i: &Instruction| d.resolve_from(i.flag("from").unwrap().value.as_deref().unwrap(), 1);
        assert_eq!(from(copies[0]), Source::Stage(0));
        assert_eq!(from(copies[1]), Source::Stage(0));
        assert_eq!(from(copies[2]), Source::Image("nginx:latest".into()));
        let cmd = d.instructions.iter().find(|i| i.keyword == "CMD").unwrap();
        assert_eq!(
            cmd.args,
            Args::Exec(vec!["gunicorn".into(), "main:app".into()])
        );
        let ep = d
            .instructions
            .iter()
            .find(|i| i.keyword == "ENTRYPOINT")
            .unwrap();
        assert_eq!(ep.args, Args::Shell("python main.py".into()));
        assert_eq!(ep.stage, Some(1));
        assert_eq!(d.stage_instructions(0).count(), 3);
    }

    #[test]
    fn escape_directive_heredocs_and_ignores() {
        let d = parse(
            "# escape=`\n\
             FROM debian:12\n\
             RUN echo a `\n\
             \x20 b\n\
             # hadolint ignore=DL3008,DL3009\n\
             RUN <<EOF\n\
             apt-get update\n\
             apt-get install -y curl\n\
             EOF\n\
             COPY <<-\"END\" /etc/conf\n\
             \tkey=$VALUE\n\
             \tEND\n\
             # slimpack-ignore SP101\n\
             USER 1000\n",
        )
        .unwrap();
        assert_eq!(d.directives.escape, '`');
        assert_eq!(d.instructions[1].text(), "echo a   b");
        let run = &d.instructions[2];
        assert_eq!(run.heredocs.len(), 1);
        assert_eq!(
            run.heredocs[0].body,
            "apt-get update\napt-get install -y curl\n"
        );
        assert_eq!((run.line, run.end_line), (6, 9));
        let copy = &d.instructions[3];
        assert!(copy.heredocs[0].strip_tabs && copy.heredocs[0].quoted);
        assert_eq!(copy.heredocs[0].body, "key=$VALUE\n");
        assert_eq!(d.ignores[&6], vec!["DL3008".to_string(), "DL3009".into()]);
        assert_eq!(d.ignores[&14], vec!["SP101".to_string()]);
    }

    #[test]
    fn bad_files_name_their_line() {
        for (src, line, needle) in [
            ("FROM a\nRUNN x\n", 2, "unknown instruction"),
            ("RUN x\nFROM a\n", 1, "before the first FROM"),
            ("FROM a\nRUN <<EOF\necho\n", 2, "never closed"),
            ("# escape=x\nFROM a\n", 1, "escape"),
            ("\n# only a comment\n", 1, "no instructions"),
            ("FROM a b c d\n", 1, "IMAGE [AS NAME]"),
            ("ARG X=1\n", 1, "no FROM"),
        ] {
            let e = parse(src).unwrap_err();
            assert_eq!(e.line, line, "{src:?}: {e}");
            assert!(e.message.contains(needle), "{src:?}: {e}");
        }
    }

    #[test]
    fn substitution() {
        let vars: BTreeMap<String, String> = [
            ("A".to_string(), "x".to_string()),
            ("E".to_string(), String::new()),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            expand("$A-${A}-${B:-d}-${A:+alt}-${B:+alt}", &vars, '\\'),
            "x-x-d-alt-"
        );
        assert_eq!(expand("${E:-empty}", &vars, '\\'), "empty");
        assert_eq!(expand("\\$A $ $1", &vars, '\\'), "$A $ ");
    }

    #[test]
    fn the_seeds_dockerfiles_parse() {
        let flask = parse(include_str!(
            "../../tests/fixtures/dockerfiles/seed000-flask.Dockerfile"
        ))
        .unwrap();
        assert_eq!(flask.stages.len(), 2);
        assert_eq!(flask.stages[0].name.as_deref(), Some("builder"));
        let copy = flask
            .stage_instructions(1)
            .find(|i| i.flag("from").is_some())
            .unwrap();
        assert_eq!(
            flask.resolve_from(copy.flag("from").unwrap().value.as_deref().unwrap(), 1),
            Source::Stage(0)
        );
        // The CMD's JSON array spans eight continued lines.
        let cmd = flask.instructions.last().unwrap();
        assert_eq!((cmd.line, cmd.end_line), (56, 62));
        assert!(matches!(&cmd.args, Args::Exec(v) if v.len() == 14 && v[0] == "gunicorn"));
        let fastapi = parse(include_str!(
            "../../tests/fixtures/dockerfiles/seed003-fastapi.Dockerfile"
        ))
        .unwrap();
        let run = fastapi
            .stage_instructions(0)
            .find(|i| i.keyword == "RUN")
            .unwrap();
        assert!(run.text().contains("libpq-dev gcc"), "{}", run.text());
        assert_eq!(fastapi.stages[1].name, None);
    }

    proptest::proptest! {
        /// Any input gives a Dockerfile or an error with a line inside the
        /// file, never a panic.
        #[test]
        fn never_panics(lines in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::strategy::Just("FROM a AS b".to_string()),
                proptest::strategy::Just("RUN x \\".to_string()),
                proptest::strategy::Just("RUN <<EOF".to_string()),
                proptest::strategy::Just("EOF".to_string()),
                proptest::strategy::Just("# escape=`".to_string()),
                proptest::strategy::Just("COPY --from=b . .".to_string()),
                proptest::strategy::Just("CMD [\"a\"".to_string()),
                proptest::strategy::Just("ARG X=${Y:-$Z}".to_string()),
                "[ -~\\t]{0,20}",
            ],
            0..12,
        )) {
            let src = lines.join("\n");
            match parse(&src) {
                Ok(d) => proptest::prop_assert!(!d.stages.is_empty()),
                Err(e) => proptest::prop_assert!(e.line >= 1 && e.line <= lines.len().max(1)),
            }
        }
    }
}
