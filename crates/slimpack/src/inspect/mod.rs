//! `slimpack inspect`: any image read layer by layer (what each layer
//! did, the bytes a later layer made dead, the final tree by owner and
//! category), two images compared, and an SPDX document of what an image
//! holds. Reads blobs only: nothing is unpacked or run.
//!
//! `walk` stacks the layers; `contents` reads the package databases and
//! Python metadata the image carries and puts every file in a category;
//! `sbom` and `license` write SPDX; `render` prints for people.

pub mod contents;
pub mod license;
pub mod render;
pub mod sbom;
pub mod walk;

use crate::core::cache::{Cache, KeyHasher, RecordKind};
use anyhow::Result;
use contents::{Category, Contents};
use serde::Serialize;
use slimpack_oci::{BlobStore, LoadedImage};
use std::collections::BTreeMap;
use walk::{Kind, LayerStats, Waste};

/// What a layer's [`contents::Facts`] are made of and how: part of their
/// cache key (here and in every build cache), bumped whenever that
/// changes, so that no facts read by older code are reused.
const FACTS_POLICY: &str = "layer-facts-v2";

/// How many of the largest files and directories are kept.
pub const LARGEST: usize = 10;

/// One group of the breakdown (`python packages`) with its items (each
/// distribution), largest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Group {
    pub name: String,
    pub bytes: u64,
    pub files: u64,
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Item {
    pub name: String,
    pub bytes: u64,
    pub files: u64,
}

/// Everything `inspect` knows of an image.
#[derive(Debug, Serialize)]
pub struct Inspection {
    /// What the user named.
    pub name: String,
    pub manifest_digest: String,
    pub config_digest: String,
    pub created: Option<String>,
    pub compressed: u64,
    pub uncompressed: u64,
    /// Bytes of the final tree's regular files.
    pub file_bytes: u64,
    pub files: u64,
    pub layers: Vec<LayerStats>,
    pub waste: Waste,
    pub categories: Vec<Group>,
    pub largest_files: Vec<Item>,
    pub largest_dirs: Vec<Item>,
    pub contents: Contents,
    /// The final tree, path by path.
    #[serde(skip)]
    pub tree: BTreeMap<String, walk::Node>,
}

/// What an SBOM needs of one layer: from the cache (and through it the
/// build cache), else read from `store`, or from the cache's blobs when
/// the build cache only named the layer (fetched first).
pub fn layer_facts(
    cache: &Cache,
    store: &BlobStore,
    layer: &slimpack_oci::Layer,
) -> Result<contents::Facts> {
    let mut h = KeyHasher::new(RecordKind::LayerFacts.as_str());
    h.part("policy", FACTS_POLICY).part("layer", &layer.digest);
    let key = &h.finish();
    if let Some(f) = cache.get::<contents::Facts>(RecordKind::LayerFacts, key) {
        return Ok(f);
    }
    let store = if store.contains(&layer.digest) {
        store
    } else {
        cache.ensure_blob(&layer.digest)?;
        &cache.blobs
    };
    let w = walk::walk(
        store,
        std::slice::from_ref(layer),
        &[],
        contents::wanted,
        false,
    )?;
    let facts = contents::Facts::from_walk(&w);
    cache.put(RecordKind::LayerFacts, key, &facts)?;
    Ok(facts)
}

/// What an image holds, from its layers' facts (each cached): enough for
/// an SBOM, without the file-by-file walk `inspect` makes.
pub fn image_contents(
    cache: &Cache,
    store: &BlobStore,
    layers: &[slimpack_oci::Layer],
    env: &[String],
) -> Result<Contents> {
    let facts = layers
        .iter()
        .map(|l| layer_facts(cache, store, l))
        .collect::<Result<Vec<_>>>()?;
    Ok(Contents::read(&contents::Facts::stack(facts), env))
}

/// Reads `image` from `store`.
pub fn inspect(name: &str, store: &BlobStore, image: &LoadedImage) -> Result<Inspection> {
    let history = history(&image.config);
    let cfg = crate::image::RunConfig::of(image)?;
    let w = walk::walk(store, &image.layers, &history, contents::wanted, true)?;
    let mut contents = Contents::read(&contents::Facts::from_walk(&w), cfg.env());
    contents.attribute(&w.kept, &w.tree);
    let categories = contents::categorize(&w.tree, &contents, cfg.workdir());
    let files = w.tree.values().filter(|n| n.kind == Kind::File);
    Ok(Inspection {
        name: name.to_string(),
        manifest_digest: image.manifest_digest.clone(),
        config_digest: image.config_digest.clone(),
        created: image
            .config
            .get("created")
            .and_then(|c| c.as_str())
            .map(str::to_string),
        compressed: image.layers.iter().map(|l| l.size).sum(),
        uncompressed: w.layers.iter().map(|l| l.uncompressed).sum(),
        file_bytes: files.clone().map(|n| n.size).sum(),
        files: files.count() as u64,
        categories: groups(&w.tree, &categories),
        largest_files: largest_files(&w.tree),
        largest_dirs: largest_dirs(&w.tree),
        layers: w.layers,
        waste: w.waste,
        contents,
        tree: w.tree,
    })
}

/// One `created_by` per layer: history entries marked `empty_layer` made
/// none.
fn history(config: &serde_json::Value) -> Vec<String> {
    config
        .get("history")
        .and_then(|h| h.as_array())
        .map(|h| {
            h.iter()
                .filter(|e| {
                    !e.get("empty_layer")
                        .and_then(|b| b.as_bool())
                        .unwrap_or(false)
                })
                .map(|e| {
                    e.get("created_by")
                        .and_then(|c| c.as_str())
                        .unwrap_or("")
                        .to_string()
                })
                .collect()
        })
        .unwrap_or_default()
}

fn groups(tree: &BTreeMap<String, walk::Node>, cats: &BTreeMap<String, Category>) -> Vec<Group> {
    /// Bytes and files, of a group and of each of its items.
    type Sums = (u64, u64, BTreeMap<String, (u64, u64)>);
    let mut by: BTreeMap<&'static str, Sums> = BTreeMap::new();
    for (path, c) in cats {
        let size = tree.get(path).map(|n| n.size).unwrap_or(0);
        let g = by.entry(c.group()).or_default();
        g.0 += size;
        g.1 += 1;
        if let Some(item) = c.item() {
            let i = g.2.entry(item.to_string()).or_default();
            i.0 += size;
            i.1 += 1;
        }
    }
    let mut out: Vec<Group> = by
        .into_iter()
        .map(|(name, (bytes, files, items))| Group {
            name: name.to_string(),
            bytes,
            files,
            items: sorted(
                items
                    .into_iter()
                    .map(|(name, (bytes, files))| Item { name, bytes, files })
                    .collect(),
            ),
        })
        .collect();
    out.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.name.cmp(&b.name)));
    out
}

/// Largest first, then by name: the order never depends on a map's.
fn sorted(mut items: Vec<Item>) -> Vec<Item> {
    items.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.name.cmp(&b.name)));
    items
}

fn largest_files(tree: &BTreeMap<String, walk::Node>) -> Vec<Item> {
    let mut v: Vec<Item> = tree
        .iter()
        .filter(|(_, n)| n.kind == Kind::File)
        .map(|(p, n)| Item {
            name: format!("/{p}"),
            bytes: n.size,
            files: 1,
        })
        .collect();
    v = sorted(v);
    v.truncate(LARGEST);
    v
}

/// Directories by the bytes under them. A directory whose bytes all sit
/// in one subdirectory says nothing that one does not: only the deepest
/// of such a chain is listed.
fn largest_dirs(tree: &BTreeMap<String, walk::Node>) -> Vec<Item> {
    let mut sums: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (p, n) in tree.iter().filter(|(_, n)| n.kind == Kind::File) {
        let mut dir = p.as_str();
        while let Some((d, _)) = dir.rsplit_once('/') {
            let e = sums.entry(d.to_string()).or_default();
            e.0 += n.size;
            e.1 += 1;
            dir = d;
        }
    }
    let chained: std::collections::BTreeSet<&str> = sums
        .iter()
        .filter_map(|(d, (bytes, _))| {
            let (parent, _) = d.rsplit_once('/')?;
            (sums.get(parent).map(|p| p.0) == Some(*bytes)).then_some(parent)
        })
        .collect();
    let v: Vec<Item> = sums
        .iter()
        // `/usr` and `/usr/lib` say nothing of where the bytes are.
        .filter(|(d, _)| d.matches('/').count() >= 2 && !chained.contains(d.as_str()))
        .map(|(d, (bytes, files))| Item {
            name: format!("/{d}"),
            bytes: *bytes,
            files: *files,
        })
        .collect();
    let mut v = sorted(v);
    v.truncate(LARGEST);
    v
}

/// The largest change first, then by name.
fn by_change(a: (u64, u64, &str), b: (u64, u64, &str)) -> std::cmp::Ordering {
    b.0.abs_diff(b.1).cmp(&a.0.abs_diff(a.1)).then(a.2.cmp(b.2))
}

/// Two images side by side, by category and item.
#[derive(Debug, Serialize)]
pub struct Diff {
    pub left: String,
    pub right: String,
    pub left_bytes: u64,
    pub right_bytes: u64,
    pub groups: Vec<GroupDiff>,
}

#[derive(Debug, Serialize)]
pub struct GroupDiff {
    pub name: String,
    pub left: u64,
    pub right: u64,
    /// Items whose size differs, by how much, largest change first.
    pub items: Vec<ItemDiff>,
}

#[derive(Debug, Serialize)]
pub struct ItemDiff {
    pub name: String,
    pub left: u64,
    pub right: u64,
}

impl Diff {
    /// `left` against `right`: positive deltas are what `right` has more of.
    pub fn of(left: &Inspection, right: &Inspection) -> Diff {
        let names: std::collections::BTreeSet<&str> = left
            .categories
            .iter()
            .chain(&right.categories)
            .map(|g| g.name.as_str())
            .collect();
        let find = |i: &'_ Inspection, n: &str| {
            i.categories
                .iter()
                .find(|g| g.name == n)
                .cloned()
                .unwrap_or_default()
        };
        let mut groups: Vec<GroupDiff> = names
            .into_iter()
            .map(|n| {
                let (l, r) = (find(left, n), find(right, n));
                let items: std::collections::BTreeSet<&str> = l
                    .items
                    .iter()
                    .chain(&r.items)
                    .map(|i| i.name.as_str())
                    .collect();
                let size = |g: &Group, i: &str| {
                    g.items
                        .iter()
                        .find(|x| x.name == i)
                        .map(|x| x.bytes)
                        .unwrap_or(0)
                };
                let mut items: Vec<ItemDiff> = items
                    .into_iter()
                    .map(|i| ItemDiff {
                        name: i.to_string(),
                        left: size(&l, i),
                        right: size(&r, i),
                    })
                    .filter(|d| d.left != d.right)
                    .collect();
                items.sort_by(|a, b| {
                    by_change((a.left, a.right, &a.name), (b.left, b.right, &b.name))
                });
                GroupDiff {
                    name: n.to_string(),
                    left: l.bytes,
                    right: r.bytes,
                    items,
                }
            })
            .collect();
        groups.sort_by(|a, b| by_change((a.left, a.right, &a.name), (b.left, b.right, &b.name)));
        Diff {
            left: left.name.clone(),
            right: right.name.clone(),
            left_bytes: left.file_bytes,
            right_bytes: right.file_bytes,
            groups,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use slimpack_oci::{Entry, Image, ImageSpec, LayerBuilder};

    fn file(b: &mut LayerBuilder, path: &str, byte: u8, n: usize) {
        b.add(path, Entry::bytes(0o644, vec![byte; n])).unwrap();
    }

    /// Two layers with known waste: an overwritten file, a deleted file,
    /// a directory made opaque, a duplicate.
    fn crafted(store: &BlobStore) -> LoadedImage {
        let mut l1 = LayerBuilder::new();
        file(&mut l1, "a/big", b'x', 1000);
        file(&mut l1, "a/keep", b'k', 300);
        file(&mut l1, "d/one", b'1', 100);
        file(&mut l1, "d/two", b'2', 200);
        file(&mut l1, "dup1", b'y', 500);
        file(&mut l1, "usr/lib/libfoo.so.1", b'f', 700);
        let status = "Package: libfoo1\nStatus: install ok installed\nArchitecture: amd64\nSource: foo\nVersion: 1.2-3\n\n";
        l1.add("var/lib/dpkg/status", Entry::bytes(0o644, status))
            .unwrap();
        l1.add(
            "var/lib/dpkg/info/libfoo1:amd64.list",
            Entry::bytes(0o644, "/usr\n/usr/lib\n/usr/lib/libfoo.so.1\n"),
        )
        .unwrap();
        let mut l2 = LayerBuilder::new();
        file(&mut l2, "a/big", b'z', 400);
        file(&mut l2, "a/.wh.keep", b'?', 0);
        file(&mut l2, "dup2", b'y', 500);
        file(&mut l2, "d/.wh..wh..opq", b'?', 0);
        file(&mut l2, "d/three", b'3', 50);
        file(&mut l2, "root/.cache/pip/http/blob", b'p', 60);
        let site = "opt/venv/lib/python3.11/site-packages";
        file(&mut l2, &format!("{site}/flask/__init__.py"), b'#', 80);
        l2.add(&format!("{site}/flask-3.0.dist-info/METADATA"), Entry::bytes(0o644, "Metadata-Version: 2.1\nName: Flask\nVersion: 3.0\nRequires-Dist: pytest; extra == \"test\"\n\nlong text\n")).unwrap();
        l2.add(&format!("{site}/flask-3.0.dist-info/RECORD"), Entry::bytes(0o644, "flask/__init__.py,,80\nflask-3.0.dist-info/METADATA,,\nflask-3.0.dist-info/RECORD,,\n")).unwrap();
        file(&mut l2, "app/main.py", b'm', 40);
        let layers = vec![l1.write(store, 0).unwrap(), l2.write(store, 0).unwrap()];
        let spec = ImageSpec {
            workdir: Some("/app".into()),
            history: vec!["first".into(), "second".into()],
            ..Default::default()
        };
        let img = Image::assemble(store, &spec, layers).unwrap();
        slimpack_oci::load_manifest(store, &img.manifest_digest).unwrap()
    }

    #[test]
    fn a_crafted_image_has_exactly_its_known_waste() {
        let d = tempfile::tempdir().unwrap();
        let store = BlobStore::open(d.path()).unwrap();
        let img = crafted(&store);
        let i = inspect("crafted", &store, &img).unwrap();
        let w = &i.waste;
        assert_eq!((w.overwritten_bytes, w.overwritten_files), (1000, 1));
        // a/keep, and d/one and d/two under the opaque directory.
        assert_eq!((w.deleted_bytes, w.deleted_files), (600, 3));
        assert_eq!((w.duplicate_bytes, w.duplicate_files), (500, 1));
        // dive: a/big 1400 (min 400), a/keep 600 (min 300), the opaque d
        // 300, and the paths seen once at their size.
        assert_eq!(w.dive_wasted_bytes, 2000);
        let (min, total) = (
            400 + 300 + 300 + 100 + 200 + 500 + 500 + 50 + 60 + 80 + 40 + 700,
            1400 + 600 + 300 + 100 + 200 + 500 + 500 + 50 + 60 + 80 + 40 + 700,
        );
        // METADATA, RECORD, status and the list count too.
        let meta: u64 = i
            .tree
            .iter()
            .filter(|(p, _)| p.contains("dist-info") || p.contains("dpkg"))
            .map(|(_, n)| n.size)
            .sum();
        let want = (min as f64 + meta as f64) / (total as f64 + meta as f64);
        assert!(
            (w.efficiency - want).abs() < 1e-9,
            "{} vs {want}",
            w.efficiency
        );
        let l2 = &i.layers[1];
        assert_eq!(l2.created_by, "second");
        assert_eq!((l2.changed, l2.removed), (1, 3));
        let tar_size = |l: &slimpack_oci::Layer| {
            std::io::copy(&mut l.open(&store).unwrap(), &mut std::io::sink()).unwrap()
        };
        assert_eq!(i.layers[0].uncompressed, tar_size(&img.layers[0]));
        assert_eq!(
            i.uncompressed,
            tar_size(&img.layers[0]) + tar_size(&img.layers[1])
        );
        assert!(!i.tree.contains_key("a/keep") && !i.tree.contains_key("d/one"));
        assert_eq!(i.tree["a/big"].size, 400);

        let group = |n: &str| {
            i.categories
                .iter()
                .find(|g| g.name == n)
                .cloned()
                .unwrap_or_default()
        };
        assert_eq!(
            group("system packages").items,
            vec![Item {
                name: "libfoo1".into(),
                bytes: 700,
                files: 1
            }]
        );
        let py = group("python packages");
        assert_eq!((py.items[0].name.as_str(), py.items[0].files), ("Flask", 3));
        assert_eq!(
            group("leftovers").items[0],
            Item {
                name: "pip and tool caches".into(),
                bytes: 60,
                files: 1
            }
        );
        assert_eq!(group("app").bytes, 40);
        assert_eq!(
            i.largest_files[0],
            Item {
                name: "/usr/lib/libfoo.so.1".into(),
                bytes: 700,
                files: 1
            }
        );
        assert_eq!(i.contents.debs[0].source, "foo");
    }

    /// A layer whose content is not what the config's diff_ids name is
    /// refused, as `run` refuses it: nothing is reported of it.
    #[test]
    fn a_layer_that_is_not_its_diff_id_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let store = BlobStore::open(d.path()).unwrap();
        let mut img = crafted(&store);
        img.layers[1].diff_id = img.layers[0].diff_id.clone();
        let e = format!("{:#}", inspect("bad", &store, &img).unwrap_err());
        assert!(e.contains("rootfs.diff_ids"), "{e}");
    }

    #[test]
    fn a_diff_names_what_grew_by_category() {
        let d = tempfile::tempdir().unwrap();
        let store = BlobStore::open(d.path()).unwrap();
        let big = inspect("big", &store, &crafted(&store)).unwrap();
        let mut b = LayerBuilder::new();
        file(&mut b, "app/main.py", b'm', 40);
        let img = Image::assemble(
            &store,
            &ImageSpec {
                workdir: Some("/app".into()),
                ..Default::default()
            },
            vec![b.write(&store, 0).unwrap()],
        )
        .unwrap();
        let small = inspect(
            "small",
            &store,
            &slimpack_oci::load_manifest(&store, &img.manifest_digest).unwrap(),
        )
        .unwrap();
        let diff = Diff::of(&small, &big);
        let g = |n: &str| diff.groups.iter().find(|g| g.name == n).unwrap();
        assert_eq!((g("app").left, g("app").right), (40, 40));
        assert_eq!(g("leftovers").right, 60);
        assert_eq!(g("leftovers").items[0].name, "pip and tool caches");
        assert_eq!(g("system packages").items[0].right, 700);
        // Largest change first.
        assert!(
            diff.groups[0].right.abs_diff(diff.groups[0].left)
                >= diff.groups[1].right.abs_diff(diff.groups[1].left)
        );
    }
}
