use crate::MEDIA_TYPE_MANIFEST;
use crate::{canonical_json, BlobStore, Error, Image, IoContext, Result, MEDIA_TYPE_INDEX};
use std::fs;
use std::path::{Path, PathBuf};

/// Splits `DIR[:TAG]` the way skopeo's `oci:` transport does.
pub fn parse_layout_ref(s: &str) -> (PathBuf, Option<String>) {
    match s.rsplit_once(':') {
        Some((dir, tag)) if !tag.is_empty() && !tag.contains('/') => {
            (PathBuf::from(dir), Some(tag.to_string()))
        }
        _ => (PathBuf::from(s), None),
    }
}

/// Writes `image` as an OCI image layout at `dest`, replacing what was there.
/// The layout is assembled in a sibling temporary directory and renamed into
/// place, so a failure never leaves a half-written layout behind.
pub fn write_layout(store: &BlobStore, image: &Image, dest: &Path, tag: &str) -> Result<()> {
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(parent).ctx(|| format!("creating {}", parent.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".slimpack-layout-")
        .tempdir_in(parent)
        .ctx(|| format!("creating a temporary directory in {}", parent.display()))?;
    let root = tmp.path();
    fs::create_dir_all(root.join("blobs/sha256")).ctx(|| "creating blobs".into())?;
    for d in image.digests() {
        store.export(d, root)?;
    }
    fs::write(
        root.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .ctx(|| "writing oci-layout".into())?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_INDEX,
        "manifests": [{
            "mediaType": MEDIA_TYPE_MANIFEST,
            "digest": image.manifest_digest,
            "size": image.manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": tag},
            "platform": {"architecture": "amd64", "os": "linux"},
        }],
    });
    fs::write(root.join("index.json"), canonical_json(&index)?)
        .ctx(|| "writing index.json".into())?;

    let tmp_path = tmp.keep();
    if dest.exists() {
        let meta = fs::symlink_metadata(dest).ctx(|| format!("reading {}", dest.display()))?;
        let is_layout = meta.is_dir() && dest.join("oci-layout").is_file();
        let is_empty_dir = meta.is_dir()
            && fs::read_dir(dest)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
        // Never replace something that is not ours to replace.
        if !is_layout && !is_empty_dir {
            let _ = fs::remove_dir_all(&tmp_path);
            return Err(Error::Spec(format!(
                "{} exists and is not an OCI image layout; refusing to replace it",
                dest.display()
            )));
        }
        let old = parent.join(format!(
            ".slimpack-old-{}",
            dest.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        ));
        let _ = fs::remove_dir_all(&old);
        fs::rename(dest, &old).ctx(|| format!("moving old {}", dest.display()))?;
        fs::rename(&tmp_path, dest).ctx(|| format!("renaming into {}", dest.display()))?;
        let _ = fs::remove_dir_all(&old);
    } else {
        fs::rename(&tmp_path, dest).ctx(|| format!("renaming into {}", dest.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Entry, ImageSpec, LayerBuilder};

    fn image(store: &BlobStore) -> Image {
        let mut b = LayerBuilder::new();
        b.add("app/main.py", Entry::bytes(0o644, "print(1)\n"))
            .unwrap();
        let layer = b.write(store, 0).unwrap();
        Image::assemble(store, &ImageSpec::default(), vec![layer]).unwrap()
    }

    #[test]
    fn writes_replaces_layouts_and_refuses_other_directories() {
        let d = tempfile::tempdir().unwrap();
        let store = BlobStore::open(d.path().join("store")).unwrap();
        let img = image(&store);
        let dest = d.path().join("out.oci");
        write_layout(&store, &img, &dest, "v1").unwrap();
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(dest.join("index.json")).unwrap()).unwrap();
        assert_eq!(
            index["manifests"][0]["digest"],
            img.manifest_digest.as_str()
        );
        assert_eq!(
            index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
            "v1"
        );
        for digest in img.digests() {
            assert!(dest
                .join("blobs/sha256")
                .join(crate::digest_hex(digest).unwrap())
                .is_file());
        }
        // A layout is replaced whole.
        write_layout(&store, &img, &dest, "v2").unwrap();
        assert!(fs::read_to_string(dest.join("index.json"))
            .unwrap()
            .contains("v2"));
        // Someone's project directory is not.
        let precious = d.path().join("src");
        fs::create_dir(&precious).unwrap();
        fs::write(precious.join("main.py"), "x").unwrap();
        assert!(write_layout(&store, &img, &precious, "latest").is_err());
        assert!(precious.join("main.py").is_file());
        let leftovers = fs::read_dir(d.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".slimpack")
            })
            .count();
        assert_eq!(leftovers, 0, "no temporary directories left behind");
    }

    #[test]
    fn layout_refs() {
        assert_eq!(
            parse_layout_ref("out/flask:v1"),
            (PathBuf::from("out/flask"), Some("v1".into()))
        );
        assert_eq!(
            parse_layout_ref("out/flask"),
            (PathBuf::from("out/flask"), None)
        );
        assert_eq!(
            parse_layout_ref("./a:b/c"),
            (PathBuf::from("./a:b/c"), None)
        );
    }
}
