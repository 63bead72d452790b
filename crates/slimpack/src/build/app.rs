//! The app stage: the project's files (as `.dockerignore` and the secret
//! rules leave them) in /app, the only layer a code edit rebuilds.

use crate::core::cache::{Cache, KeyHasher, RecordKind};
use crate::project::ignore::AppFile;
use anyhow::{Context, Result};
use slimpack_oci::{Entry, Layer, LayerBuilder};
use std::collections::BTreeSet;

const APP_POLICY: &str = "app-v1";
const OPAQUE_APP: &str = "app/.wh..wh..opq";

/// The app layer's inputs, hashed.
pub struct AppInput {
    pub files: Vec<AppFile>,
    pub key: String,
    /// The base image has an /app of its own, which ours replaces (an OCI
    /// opaque whiteout) instead of merging with.
    opaque: bool,
    /// Symlinks that point outside /app: hashed (the key is as it always
    /// was) but left out of the layer, with a warning each.
    pub left_out: Vec<String>,
    /// The words of the app's Python files (what could name a package, for
    /// the bytecode stage), read with the files for the key.
    pub words: BTreeSet<String>,
}

/// Adds the identifier-like words of `text` to `into`.
fn words_of(text: &[u8], into: &mut BTreeSet<String>) {
    for w in text.split(|b| !(b.is_ascii_alphanumeric() || *b == b'_')) {
        match std::str::from_utf8(w) {
            Ok(w) if !w.is_empty() && !into.contains(w) => {
                into.insert(w.to_string());
            }
            _ => {}
        }
    }
}

/// A link that leaves /app means nothing in the image.
fn escapes(f: &AppFile, target: &str) -> bool {
    let depth = f.rel.matches('/').count();
    let ups = target.split('/').filter(|c| *c == "..").count();
    target.starts_with('/') || ups > depth
}

pub fn input(files: Vec<AppFile>, mtime: u64, opaque: bool) -> Result<AppInput> {
    let mut h = KeyHasher::new(RecordKind::AppLayer.as_str());
    h.part("policy", APP_POLICY)
        .part("mtime", mtime.to_string());
    if opaque {
        h.part("opaque", "app");
    }
    let mut left_out = Vec::new();
    let mut words = BTreeSet::new();
    for f in &files {
        h.part("path", &f.rel);
        match &f.symlink {
            Some(t) => {
                h.part("symlink", t);
                if escapes(f, t) {
                    left_out.push(format!(
                        "left out symlink {} → {t}: it points outside the app",
                        f.rel
                    ));
                }
            }
            None => {
                let bytes = std::fs::read(&f.path)
                    .with_context(|| format!("reading {}", f.path.display()))?;
                if f.rel.ends_with(".py") {
                    words_of(&bytes, &mut words);
                }
                h.part("mode", if f.executable { "755" } else { "644" })
                    .part("content", bytes);
            }
        }
    }
    Ok(AppInput {
        files,
        key: h.finish(),
        opaque,
        left_out,
        words,
    })
}

/// The app layer cached under `key`, when its blob is here.
pub fn cached(cache: &Cache, key: &str) -> Option<Layer> {
    cache
        .get::<Layer>(RecordKind::AppLayer, key)
        .filter(|l| cache.blobs.contains(&l.digest))
}

/// The layer for `input` (and what build steps wrote, which replaces the
/// app's file of the same path), cached under `key`; whether it came from
/// the cache.
pub fn layer(
    cache: &Cache,
    input: &AppInput,
    key: &str,
    mtime: u64,
    outputs: Option<&super::steps::Outputs>,
) -> Result<(Layer, bool)> {
    if let Some(l) = cached(cache, key) {
        return Ok((l, true));
    }
    let written: BTreeSet<&str> = outputs
        .into_iter()
        .flat_map(|o| o.files.iter().map(|(rel, _, _)| rel.as_str()))
        .collect();
    let mut b = LayerBuilder::new();
    b.add("app", Entry::dir(0o755))?;
    if input.opaque {
        b.add(OPAQUE_APP, Entry::bytes(0o644, Vec::new()))?;
    }
    for f in input
        .files
        .iter()
        .filter(|f| !written.contains(f.rel.as_str()))
    {
        let dest = format!("app/{}", f.rel);
        match &f.symlink {
            Some(t) if escapes(f, t) => {}
            Some(t) => b.add(&dest, Entry::symlink(t.clone()))?,
            None => b.add(
                &dest,
                Entry::file(if f.executable { 0o755 } else { 0o644 }, f.path.clone()),
            )?,
        }
    }
    for (rel, path, exec) in outputs.iter().flat_map(|o| &o.files) {
        b.add(
            &format!("app/{rel}"),
            Entry::file(if *exec { 0o755 } else { 0o644 }, path.clone()),
        )?;
    }
    let layer = b.write(&cache.blobs, mtime)?;
    cache.put(RecordKind::AppLayer, key, &layer)?;
    Ok((layer, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_identifiers_wherever_they_stand() {
        let mut w = BTreeSet::new();
        words_of(
            b"from sqlalchemy.orm import Session\nAPPS = ['rest_framework', \"django.contrib\"]  # yaml\n\xff\xfe",
            &mut w,
        );
        let got: Vec<&str> = w.iter().map(String::as_str).collect();
        assert_eq!(
            got,
            [
                "APPS",
                "Session",
                "contrib",
                "django",
                "from",
                "import",
                "orm",
                "rest_framework",
                "sqlalchemy",
                "yaml"
            ]
        );
    }
}
