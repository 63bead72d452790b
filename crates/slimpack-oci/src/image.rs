use crate::{canonical_json, BlobStore, Error, Layer, Result, MEDIA_TYPE_CONFIG};
use oci_spec::image::{
    Arch, ConfigBuilder, DescriptorBuilder, Digest, HistoryBuilder, ImageConfigurationBuilder,
    ImageManifestBuilder, MediaType, Os, RootFsBuilder,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::str::FromStr;

/// What an image runs and how it describes itself; everything but the layers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImageSpec {
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub exposed_ports: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// Manifest annotations.
    pub annotations: BTreeMap<String, String>,
    /// RFC 3339 time; from SOURCE_DATE_EPOCH so that it does not vary.
    pub created: Option<String>,
    /// One `created_by` line per layer, for `docker history`.
    pub history: Vec<String>,
}

/// An image written into a blob store: config and manifest bytes are kept
/// exactly as hashed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Image {
    pub manifest_digest: String,
    pub manifest_size: u64,
    pub config_digest: String,
    pub layers: Vec<Layer>,
}

fn spec_err(e: impl std::fmt::Display) -> Error {
    Error::Spec(e.to_string())
}

fn digest(d: &str) -> Result<Digest> {
    Digest::from_str(d).map_err(spec_err)
}

impl Image {
    /// Writes config and manifest for `layers` into `store`.
    pub fn assemble(store: &BlobStore, spec: &ImageSpec, layers: Vec<Layer>) -> Result<Image> {
        let mut cfg = ConfigBuilder::default();
        if let Some(u) = &spec.user {
            cfg = cfg.user(u.clone());
        }
        if let Some(w) = &spec.workdir {
            cfg = cfg.working_dir(w.clone());
        }
        if !spec.env.is_empty() {
            cfg = cfg.env(spec.env.clone());
        }
        if !spec.entrypoint.is_empty() {
            cfg = cfg.entrypoint(spec.entrypoint.clone());
        }
        if !spec.cmd.is_empty() {
            cfg = cfg.cmd(spec.cmd.clone());
        }
        if !spec.exposed_ports.is_empty() {
            cfg = cfg.exposed_ports(spec.exposed_ports.clone());
        }
        if !spec.labels.is_empty() {
            cfg = cfg.labels(
                spec.labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<std::collections::HashMap<_, _>>(),
            );
        }
        let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.clone()).collect();
        let rootfs = RootFsBuilder::default()
            .typ("layers")
            .diff_ids(diff_ids)
            .build()
            .map_err(spec_err)?;
        let mut history = Vec::new();
        for (i, _) in layers.iter().enumerate() {
            let mut h = HistoryBuilder::default().created_by(
                spec.history
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| "slimpack".to_string()),
            );
            if let Some(c) = &spec.created {
                h = h.created(c.clone());
            }
            history.push(h.build().map_err(spec_err)?);
        }
        let mut conf = ImageConfigurationBuilder::default()
            .architecture(Arch::Amd64)
            .os(Os::Linux)
            .config(cfg.build().map_err(spec_err)?)
            .rootfs(rootfs)
            .history(history);
        if let Some(c) = &spec.created {
            conf = conf.created(c.clone());
        }
        let config_bytes = canonical_json(&conf.build().map_err(spec_err)?)?;
        let config_digest = store.put_bytes(&config_bytes)?;

        let config_desc = DescriptorBuilder::default()
            .media_type(MediaType::ImageConfig)
            .digest(digest(&config_digest)?)
            .size(config_bytes.len() as u64)
            .build()
            .map_err(spec_err)?;
        let mut layer_descs = Vec::new();
        for l in &layers {
            layer_descs.push(
                DescriptorBuilder::default()
                    .media_type(MediaType::from(l.media_type.as_str()))
                    .digest(digest(&l.digest)?)
                    .size(l.size)
                    .build()
                    .map_err(spec_err)?,
            );
        }
        let mut manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(config_desc)
            .layers(layer_descs);
        if !spec.annotations.is_empty() {
            manifest = manifest.annotations(
                spec.annotations
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<std::collections::HashMap<_, _>>(),
            );
        }
        let manifest_bytes = canonical_json(&manifest.build().map_err(spec_err)?)?;
        let manifest_digest = store.put_bytes(&manifest_bytes)?;
        debug_assert_eq!(MEDIA_TYPE_CONFIG, MediaType::ImageConfig.to_string());
        Ok(Image {
            manifest_digest,
            manifest_size: manifest_bytes.len() as u64,
            config_digest,
            layers,
        })
    }

    pub fn digests(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.manifest_digest.as_str())
            .chain(std::iter::once(self.config_digest.as_str()))
            .chain(self.layers.iter().map(|l| l.digest.as_str()))
    }

    pub fn compressed_size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }

    pub fn uncompressed_size(&self) -> u64 {
        self.layers.iter().map(|l| l.uncompressed_size).sum()
    }
}
