//! One pass over an image's layers, lowest first, as a container runtime
//! would stack them: what each layer adds, changes and removes, the final
//! tree, and the bytes a later layer made dead (dive's measure of waste).

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};
use slimpack_oci::{BlobStore, Layer};
use std::collections::BTreeMap;
use std::io::Read;

/// Files whose bytes the later stages read (package databases, licenses,
/// Python metadata). Anything larger is not kept: a database that size
/// is not one a package manager wrote.
const KEPT_LIMIT: u64 = 8 << 20;
/// All such files together: a hostile image cannot make inspect hold more.
const KEPT_TOTAL: u64 = 256 << 20;

/// What one layer did to the tree below it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LayerStats {
    pub digest: String,
    /// The config's history line for this layer, or "" when none.
    pub created_by: String,
    pub compressed: u64,
    /// Bytes of the layer's tar stream.
    pub uncompressed: u64,
    /// Bytes of the regular files it holds.
    pub file_bytes: u64,
    /// Paths new to the tree (files, links and directories).
    pub added: u64,
    /// Paths that replace one a lower layer had.
    pub changed: u64,
    /// Paths its whiteouts removed (each file under a removed directory
    /// counts).
    pub removed: u64,
}

/// A path in the final tree.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub kind: Kind,
    pub size: u64,
    /// Index of the layer the final version comes from.
    pub layer: usize,
    pub sha256: Option<[u8; 32]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Hardlink,
    Other,
}

/// Bytes no reader of the final image can reach.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Waste {
    /// Sizes of file versions a later layer replaced.
    pub overwritten_bytes: u64,
    pub overwritten_files: u64,
    /// Sizes of files a later layer's whiteouts deleted.
    pub deleted_bytes: u64,
    pub deleted_files: u64,
    /// Regular files of the final tree whose bytes another one already
    /// holds (each copy after the first; hard links are not copies).
    pub duplicate_bytes: u64,
    pub duplicate_files: u64,
    /// dive's efficiency: for every path, the smallest size it had in any
    /// layer, over the sum of all its sizes in all layers (a whiteout
    /// counts what it deletes). 1.0 when nothing was written twice.
    pub efficiency: f64,
    /// dive's "potential wasted space": the cumulative size of every path
    /// that appears in more than one layer.
    pub dive_wasted_bytes: u64,
}

/// The final tree and what led to it.
#[derive(Debug, Default)]
pub struct Walk {
    pub layers: Vec<LayerStats>,
    pub tree: BTreeMap<String, Node>,
    pub waste: Waste,
    /// The bytes of the files `wanted` names, as the final tree has them.
    pub kept: BTreeMap<String, Vec<u8>>,
    /// The targets of the symbolic links `wanted` names.
    pub links: BTreeMap<String, String>,
    /// What the layers' whiteouts removed: a path, or `dir/` for an
    /// opaque directory's former children.
    pub whiteouts: Vec<String>,
    /// Bytes read into `kept` so far, replaced ones included.
    kept_bytes: u64,
}

/// Per path, across layers (dive's `EfficiencyData`).
#[derive(Default)]
struct Seen {
    cumulative: u64,
    min: u64,
    times: u32,
}

/// Reads every layer of an image (checked against its digest) in order.
pub fn walk(
    store: &BlobStore,
    layers: &[Layer],
    history: &[String],
    wanted: impl Fn(&str) -> bool,
    hash_files: bool,
) -> Result<Walk> {
    let mut w = Walk::default();
    let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
    for (i, layer) in layers.iter().enumerate() {
        let mut stream = slimpack_oci::open_layer_checked(store, layer)
            .with_context(|| format!("reading layer {} ({})", i + 1, layer.digest))?;
        let mut stats = LayerStats {
            digest: layer.digest.clone(),
            created_by: history.get(i).cloned().unwrap_or_default(),
            compressed: layer.size,
            ..Default::default()
        };
        apply_layer(
            &mut w,
            &mut seen,
            &mut stats,
            (i, hash_files),
            &mut stream,
            &wanted,
        )
        .with_context(|| format!("layer {} ({})", i + 1, layer.digest))?;
        stats.uncompressed = stream.finish()?;
        w.layers.push(stats);
    }
    let (min, cumulative): (u64, u64) = seen
        .values()
        .fold((0, 0), |(m, c), s| (m + s.min, c + s.cumulative));
    w.waste.efficiency = if cumulative == 0 {
        1.0
    } else {
        min as f64 / cumulative as f64
    };
    w.waste.dive_wasted_bytes = seen
        .values()
        .filter(|s| s.times > 1)
        .map(|s| s.cumulative)
        .sum();
    duplicates(&mut w);
    Ok(w)
}

/// A tar path as a key: no leading `./` or `/`, no trailing `/`; `None`
/// for the root itself and for any `..` (not a path inside the image).
fn clean(raw: &[u8]) -> Option<String> {
    let s = String::from_utf8_lossy(raw);
    let parts: Vec<&str> = s
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.is_empty() || parts.contains(&"..") {
        return None;
    }
    Some(parts.join("/"))
}

fn apply_layer(
    w: &mut Walk,
    seen: &mut BTreeMap<String, Seen>,
    stats: &mut LayerStats,
    (index, hash_files): (usize, bool),
    stream: &mut dyn Read,
    wanted: &dyn Fn(&str) -> bool,
) -> Result<()> {
    let mut archive = tar::Archive::new(stream);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let Some(path) = clean(&entry.path_bytes()) else {
            continue;
        };
        let (dir, name) = match path.rsplit_once('/') {
            Some((d, n)) => (Some(d), n),
            None => (None, path.as_str()),
        };
        if name == ".wh..wh..opq" {
            let dir = dir.unwrap_or("");
            w.whiteouts.push(format!("{dir}/"));
            let removed = remove_children(w, dir);
            account_removal(seen, stats, &mut w.waste, dir, &removed);
            continue;
        }
        if let Some(victim) = name.strip_prefix(".wh.") {
            let target = match dir {
                Some(d) => format!("{d}/{victim}"),
                None => victim.to_string(),
            };
            w.whiteouts.push(target.clone());
            let mut removed = remove_children(w, &target);
            w.links.remove(&target);
            if let Some(n) = w.tree.remove(&target) {
                w.kept.remove(&target);
                removed.push(n);
            }
            account_removal(seen, stats, &mut w.waste, &target, &removed);
            continue;
        }
        let kind = match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => Kind::File,
            tar::EntryType::Directory => Kind::Dir,
            tar::EntryType::Symlink => Kind::Symlink,
            tar::EntryType::Link => Kind::Hardlink,
            _ => Kind::Other,
        };
        let size = if kind == Kind::File { entry.size() } else { 0 };
        let mut hasher = Sha256::new();
        let mut keep = (kind == Kind::File && size <= KEPT_LIMIT && wanted(&path)).then(Vec::new);
        // A hard link holds no bytes in the tar: it has its target's
        // (slimpack links Debian's repeated copyright files).
        if kind == Kind::Hardlink && wanted(&path) {
            keep = entry
                .link_name_bytes()
                .and_then(|t| clean(&t))
                .and_then(|t| w.kept.get(&t).cloned());
        }
        if kind == Kind::File {
            let mut buf = [0u8; 64 * 1024];
            loop {
                let n = entry
                    .read(&mut buf)
                    .map_err(|e| anyhow!("reading {path}: {e}"))?;
                if n == 0 {
                    break;
                }
                if hash_files {
                    hasher.update(&buf[..n]);
                }
                if let Some(k) = keep.as_mut() {
                    k.extend_from_slice(&buf[..n]);
                }
            }
        }
        stats.file_bytes += size;
        let node = Node {
            kind,
            size,
            layer: index,
            sha256: (kind == Kind::File && hash_files).then(|| hasher.finalize().into()),
        };
        let before = w.tree.get(&path).map(|n| (n.kind, n.size));
        match before {
            // A directory entry over a directory only restates its
            // metadata; it neither adds nor changes content.
            Some((Kind::Dir, _)) if kind == Kind::Dir => {}
            Some((old_kind, old_size)) => {
                stats.changed += 1;
                if old_kind == Kind::Dir {
                    let removed = remove_children(w, &path);
                    account_removal(seen, stats, &mut w.waste, &path, &removed);
                } else if old_kind == Kind::File {
                    w.waste.overwritten_bytes += old_size;
                    w.waste.overwritten_files += 1;
                }
            }
            None => stats.added += 1,
        }
        if kind != Kind::Dir {
            let s = seen.entry(path.clone()).or_default();
            if s.times == 0 || size < s.min {
                s.min = size;
            }
            s.cumulative += size;
            s.times += 1;
        }
        w.links.remove(&path);
        if kind == Kind::Symlink && wanted(&path) {
            if let Some(t) = entry.link_name_bytes() {
                w.links
                    .insert(path.clone(), String::from_utf8_lossy(&t).into_owned());
            }
        }
        match keep {
            Some(bytes) => {
                w.kept_bytes += bytes.len() as u64;
                if w.kept_bytes > KEPT_TOTAL {
                    bail!(
                        "the image holds more than {} MiB of package databases and metadata ({path} and the files before it); not read",
                        KEPT_TOTAL >> 20
                    );
                }
                w.kept.insert(path.clone(), bytes);
            }
            None => {
                w.kept.remove(&path);
            }
        }
        w.tree.insert(path, node);
    }
    Ok(())
}

/// Takes everything under `dir` out of the tree.
fn remove_children(w: &mut Walk, dir: &str) -> Vec<Node> {
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    let paths: Vec<String> = w
        .tree
        .range(prefix.clone()..)
        .take_while(|(p, _)| p.starts_with(&prefix))
        .map(|(p, _)| p.clone())
        .collect();
    paths
        .into_iter()
        .filter_map(|p| {
            w.kept.remove(&p);
            w.links.remove(&p);
            w.tree.remove(&p)
        })
        .collect()
}

/// A whiteout is a version of its path whose size is what it deletes,
/// as dive counts it.
fn account_removal(
    seen: &mut BTreeMap<String, Seen>,
    stats: &mut LayerStats,
    waste: &mut Waste,
    path: &str,
    removed: &[Node],
) {
    let files = removed.iter().filter(|n| n.kind != Kind::Dir);
    let bytes: u64 = files.clone().map(|n| n.size).sum();
    let count = files.count() as u64;
    stats.removed += count;
    waste.deleted_bytes += bytes;
    waste.deleted_files += count;
    let s = seen.entry(path.to_string()).or_default();
    if s.times == 0 || bytes < s.min {
        s.min = bytes;
    }
    s.cumulative += bytes;
    s.times += 1;
}

fn duplicates(w: &mut Walk) {
    let mut first: BTreeMap<[u8; 32], ()> = BTreeMap::new();
    for n in w.tree.values() {
        if let (Kind::File, Some(h)) = (n.kind, n.sha256) {
            if n.size > 0 && first.insert(h, ()).is_some() {
                w.waste.duplicate_bytes += n.size;
                w.waste.duplicate_files += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_paths_are_keys_inside_the_image_or_nothing() {
        assert_eq!(clean(b"./usr//lib/").as_deref(), Some("usr/lib"));
        assert_eq!(clean(b"/etc/os-release").as_deref(), Some("etc/os-release"));
        assert_eq!(clean(b"a/../../etc/passwd"), None);
        assert_eq!(clean(b"./"), None);
    }

    #[test]
    fn a_hard_link_has_its_targets_bytes() {
        use slimpack_oci::{Entry, EntryKind, LayerBuilder};
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let mut b = LayerBuilder::new();
        b.add(
            "usr/share/doc/liba1/copyright",
            Entry::bytes(0o644, "License: MIT\n"),
        )
        .unwrap();
        b.add(
            "usr/share/doc/libb1/copyright",
            Entry::new(
                0o644,
                EntryKind::Hardlink("usr/share/doc/liba1/copyright".into()),
            ),
        )
        .unwrap();
        let layer = b.write(&store, 0).unwrap();
        let w = walk(&store, &[layer], &[], |p| p.ends_with("/copyright"), true).unwrap();
        assert_eq!(w.kept["usr/share/doc/libb1/copyright"], b"License: MIT\n");
        assert_eq!(w.waste.duplicate_files, 0);
    }
}
