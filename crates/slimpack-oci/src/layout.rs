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
        if !meta.is_dir()
            || !dest.join("oci-layout").exists()
                && fs::read_dir(dest)
                    .map(|mut d| d.next().is_some())
                    .unwrap_or(true)
        {
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
