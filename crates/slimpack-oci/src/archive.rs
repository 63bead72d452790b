use crate::{digest_hex, BlobStore, Error, Image, IoContext, Result};
use std::io::{self, BufWriter, Write};
use std::path::Path;

/// Writes `image` as a `docker save`-style tarball that `docker load`,
/// `podman load` and `skopeo ... docker-archive:` accept. Layers are stored
/// uncompressed, as `docker save` does, so their digests are the diff_ids.
pub fn write_docker_archive(
    store: &BlobStore,
    image: &Image,
    dest: &Path,
    repo_tag: &str,
) -> Result<()> {
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).ctx(|| format!("creating {}", parent.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".slimpack-archive-")
        .tempfile_in(parent)
        .ctx(|| format!("creating a temporary file in {}", parent.display()))?;
    let file = tmp.reopen().ctx(|| "reopening archive".into())?;
    let mut tar = tar::Builder::new(BufWriter::with_capacity(1 << 20, file));

    let header = |size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(size);
        h.set_entry_type(tar::EntryType::Regular);
        h
    };
    let werr = |e: io::Error| Error::Io {
        context: format!("writing {}", dest.display()),
        source: e,
    };

    let config = store.read(&image.config_digest)?;
    let config_name = format!("{}.json", digest_hex(&image.config_digest)?);
    tar.append_data(
        &mut header(config.len() as u64),
        &config_name,
        config.as_slice(),
    )
    .map_err(werr)?;

    let mut layer_names = Vec::new();
    for layer in &image.layers {
        let name = format!("{}.tar", digest_hex(&layer.diff_id)?);
        let reader = layer.open(store)?;
        tar.append_data(&mut header(layer.uncompressed_size), &name, reader)
            .map_err(werr)?;
        layer_names.push(name);
    }
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": [repo_tag],
        "Layers": layer_names,
    }]);
    let manifest = serde_json::to_vec(&manifest).map_err(|e| Error::Spec(e.to_string()))?;
    tar.append_data(
        &mut header(manifest.len() as u64),
        "manifest.json",
        manifest.as_slice(),
    )
    .map_err(werr)?;
    let mut out = tar.into_inner().map_err(werr)?;
    out.flush().map_err(werr)?;
    drop(out);
    tmp.persist(dest).map_err(|e| Error::Io {
        context: format!("renaming into {}", dest.display()),
        source: e.error,
    })?;
    Ok(())
}
