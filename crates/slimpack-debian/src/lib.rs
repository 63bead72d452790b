//! Verified access to the Debian archive, with no root, no dpkg and no apt:
//! check an `InRelease` signature against the archive keys shipped in this
//! crate, parse `Packages` indexes, resolve a package closure under a policy,
//! read `.deb` files into memory without touching the host file system, and
//! look up which package ships a file in the `Contents` index.
//!
//! Fetching is the caller's business: every function here takes bytes.

mod contents;
mod deb;
mod keyring;
mod packages;
mod release;
mod resolve;

pub use contents::{ContentsIndex, Need};
pub use deb::{read_deb, DebEntry, DebEntryKind};
pub use keyring::{archive_keys, Suite};
pub use packages::{parse_packages, Dependency, Package, Relation};
pub use release::{parse_http_date, verify_inrelease, IndexFile, Release};
pub use resolve::{Resolution, Resolver};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the signature of {what} does not verify against Debian's archive keys for {suite}: {detail}")]
    BadSignature {
        what: String,
        suite: String,
        detail: String,
    },
    #[error("{what} expired at {valid_until} (Valid-Until); the mirror is stale or replaying an old release")]
    Expired { what: String, valid_until: String },
    #[error("{what} is for suite {found:?}, not {expected:?}")]
    WrongSuite {
        what: String,
        expected: String,
        found: String,
    },
    #[error("malformed {what}: {detail}")]
    Malformed { what: String, detail: String },
    #[error("{what}: sha256 mismatch (expected {expected}, got {actual})")]
    HashMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("package {package:?} is not in the archive{hint}")]
    UnknownPackage { package: String, hint: String },
    #[error("cannot satisfy {dependency:?} needed by {package}: no candidate in the archive")]
    Unsatisfiable { package: String, dependency: String },
    #[error("{deb}: refusing entry {path:?}: {reason}")]
    UnsafeEntry {
        deb: String,
        path: String,
        reason: String,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// Merged /usr: `/bin`, `/lib`... are symlinks into `/usr`, as on every
/// current Debian system, so a path a package ships under them is really
/// under `/usr`. `None` for the top directories themselves (they are links).
pub fn merged_usr(path: &str) -> Option<String> {
    for top in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        if path == top {
            return None;
        }
        if let Some(rest) = path.strip_prefix(top).and_then(|r| r.strip_prefix('/')) {
            return Some(format!("usr/{top}/{rest}"));
        }
    }
    Some(path.to_string())
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Checks `bytes` against an expected SHA-256 from a signed index.
pub fn check_sha256(what: &str, bytes: &[u8], expected: &str) -> Result<()> {
    let actual = sha256_hex(bytes);
    if actual.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(Error::HashMismatch {
            what: what.to_string(),
            expected: expected.to_string(),
            actual,
        })
    }
}

/// Decompresses an `.xz` index (`Packages.xz`, `Contents-amd64.xz`).
pub fn decompress_xz(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::with_capacity(bytes.len() * 6);
    liblzma::read::XzDecoder::new(bytes).read_to_end(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::merged_usr;

    #[test]
    fn merged_usr_moves_top_dirs() {
        assert_eq!(
            merged_usr("lib/x86_64-linux-gnu/libc.so.6").unwrap(),
            "usr/lib/x86_64-linux-gnu/libc.so.6"
        );
        assert_eq!(
            merged_usr("lib64/ld-linux-x86-64.so.2").unwrap(),
            "usr/lib64/ld-linux-x86-64.so.2"
        );
        assert_eq!(merged_usr("library/x").unwrap(), "library/x");
        assert!(merged_usr("lib").is_none());
    }
}
