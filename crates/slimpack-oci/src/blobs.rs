use crate::{digest_hex, sha256_digest, Error, IoContext, Result};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A content-addressed directory of blobs (`blobs/sha256/<hex>`), the same
/// shape as an OCI image layout, so a layout can be filled by hard links.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
}

impl BlobStore {
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        let dir = root.join("blobs").join("sha256");
        fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self
            .root
            .join("blobs")
            .join("sha256")
            .join(digest_hex(digest)?))
    }

    pub fn contains(&self, digest: &str) -> bool {
        self.path(digest).map(|p| p.is_file()).unwrap_or(false)
    }

    /// A temporary file inside the store, so that the final rename is atomic.
    pub fn temp_file(&self) -> Result<tempfile::NamedTempFile> {
        tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(self.root.join("blobs"))
            .ctx(|| format!("creating a temporary file in {}", self.root.display()))
    }

    pub fn put_bytes(&self, bytes: &[u8]) -> Result<String> {
        let digest = sha256_digest(bytes);
        if !self.contains(&digest) {
            let mut tmp = self.temp_file()?;
            tmp.write_all(bytes).ctx(|| "writing blob".into())?;
            self.commit(tmp, &digest)?;
        }
        Ok(digest)
    }

    /// Streams `reader` into the store. With `expected`, the blob is kept
    /// only if its digest matches ([`Error::DigestMismatch`] otherwise, and
    /// nothing is stored). Returns the digest.
    pub fn put_reader(
        &self,
        mut reader: impl std::io::Read,
        expected: Option<&str>,
    ) -> Result<String> {
        let mut w = crate::HashingWriter::new(self.temp_file()?);
        std::io::copy(&mut reader, &mut w).ctx(|| "copying a blob into the store".into())?;
        let (tmp, digest, _) = w.finish();
        if let Some(e) = expected.filter(|e| *e != digest) {
            return Err(Error::DigestMismatch {
                path: self.root.display().to_string(),
                expected: e.to_string(),
                actual: digest,
            });
        }
        if !self.contains(&digest) {
            self.commit(tmp, &digest)?;
        }
        Ok(digest)
    }

    /// Moves a finished temporary file to its content address.
    pub fn commit(&self, tmp: tempfile::NamedTempFile, digest: &str) -> Result<PathBuf> {
        let dest = self.path(digest)?;
        tmp.persist(&dest).map_err(|e| Error::Io {
            context: format!("storing blob {}", dest.display()),
            source: e.error,
        })?;
        Ok(dest)
    }

    pub fn read(&self, digest: &str) -> Result<Vec<u8>> {
        let p = self.path(digest)?;
        fs::read(&p).map_err(|_| Error::MissingBlob {
            digest: digest.to_string(),
            store: self.root.display().to_string(),
        })
    }

    /// Puts a blob of this store into another directory of the same shape:
    /// a hard link when both are on one file system, else a copy.
    pub fn export(&self, digest: &str, dest_root: &Path) -> Result<()> {
        let src = self.path(digest)?;
        let dest = dest_root
            .join("blobs")
            .join("sha256")
            .join(digest_hex(digest)?);
        if dest.exists() {
            return Ok(());
        }
        if !src.is_file() {
            return Err(Error::MissingBlob {
                digest: digest.to_string(),
                store: self.root.display().to_string(),
            });
        }
        if fs::hard_link(&src, &dest).is_err() {
            fs::copy(&src, &dest).ctx(|| format!("copying {}", src.display()))?;
        }
        Ok(())
    }
}
