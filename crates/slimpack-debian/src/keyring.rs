use pgp::composed::{Deserializable, SignedPublicKey};

/// The Debian releases whose archive keys ship with this crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Suite {
    /// Debian 11: Python 3.9. Its security support has ended.
    Bullseye,
    Bookworm,
    Trixie,
    /// Debian testing (14): Python 3.14. Not a stable release.
    Forky,
}

impl Suite {
    pub fn codename(self) -> &'static str {
        match self {
            Suite::Bullseye => "bullseye",
            Suite::Bookworm => "bookworm",
            Suite::Trixie => "trixie",
            Suite::Forky => "forky",
        }
    }

    pub fn from_codename(s: &str) -> Option<Suite> {
        match s {
            "bullseye" | "debian11" | "11" => Some(Suite::Bullseye),
            "bookworm" | "debian12" | "12" => Some(Suite::Bookworm),
            "trixie" | "debian13" | "13" => Some(Suite::Trixie),
            "forky" | "debian14" | "14" => Some(Suite::Forky),
            _ => None,
        }
    }

    /// The CPython minor version Debian ships in this release.
    pub fn python(self) -> &'static str {
        match self {
            Suite::Bullseye => "3.9",
            Suite::Bookworm => "3.11",
            Suite::Trixie => "3.13",
            Suite::Forky => "3.14",
        }
    }

    pub fn version_id(self) -> &'static str {
        match self {
            Suite::Bullseye => "11",
            Suite::Bookworm => "12",
            Suite::Trixie => "13",
            Suite::Forky => "14",
        }
    }
}

/// Debian's archive keys for `suite`, as shipped by the debian-archive-keyring
/// package: the automatic signing keys for the main and security archives and
/// the stable release key. Embedded so that verification does not depend on
/// the host's keyring (or its absence).
pub fn archive_keys(suite: Suite) -> Vec<SignedPublicKey> {
    let blobs: &[&[u8]] = match suite {
        Suite::Bullseye => &[
            include_bytes!("../keys/debian-archive-bullseye-automatic.gpg"),
            include_bytes!("../keys/debian-archive-bullseye-security-automatic.gpg"),
            include_bytes!("../keys/debian-archive-bullseye-stable.gpg"),
            // bullseye's -updates and -security are signed by later keys too.
            include_bytes!("../keys/debian-archive-bookworm-automatic.gpg"),
            include_bytes!("../keys/debian-archive-bookworm-security-automatic.gpg"),
        ],
        Suite::Bookworm => &[
            include_bytes!("../keys/debian-archive-bookworm-automatic.gpg"),
            include_bytes!("../keys/debian-archive-bookworm-security-automatic.gpg"),
            include_bytes!("../keys/debian-archive-bookworm-stable.gpg"),
            // bookworm's -updates and -security are also signed by the keys of
            // the release that followed it.
            include_bytes!("../keys/debian-archive-trixie-automatic.gpg"),
            include_bytes!("../keys/debian-archive-trixie-security-automatic.gpg"),
        ],
        Suite::Trixie => &[
            include_bytes!("../keys/debian-archive-trixie-automatic.gpg"),
            include_bytes!("../keys/debian-archive-trixie-security-automatic.gpg"),
            include_bytes!("../keys/debian-archive-trixie-stable.gpg"),
        ],
        // Testing is signed by the automatic keys of the current releases
        // until its own exist.
        Suite::Forky => &[
            include_bytes!("../keys/debian-archive-trixie-automatic.gpg"),
            include_bytes!("../keys/debian-archive-trixie-security-automatic.gpg"),
            include_bytes!("../keys/debian-archive-bookworm-automatic.gpg"),
        ],
    };
    let mut keys = Vec::new();
    for blob in blobs {
        if let Ok(iter) = SignedPublicKey::from_bytes_many(*blob) {
            keys.extend(iter.flatten());
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_keyrings_parse() {
        assert!(archive_keys(Suite::Bookworm).len() >= 3);
        assert!(archive_keys(Suite::Trixie).len() >= 3);
        assert!(archive_keys(Suite::Bullseye).len() >= 3);
        assert!(archive_keys(Suite::Forky).len() >= 2);
    }
}
