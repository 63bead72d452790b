use crate::{Error, Result};
use pgp::composed::{CleartextSignedMessage, SignedPublicKey};
use std::collections::BTreeMap;

/// One file listed in a Release file's SHA256 section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexFile {
    pub sha256: String,
    pub size: u64,
}

/// The signed content of an `InRelease` file.
#[derive(Debug, Clone)]
pub struct Release {
    pub suite: String,
    pub codename: String,
    pub date: String,
    pub valid_until: Option<String>,
    /// Path relative to `dists/SUITE/` → size and hash.
    pub files: BTreeMap<String, IndexFile>,
    /// `Acquire-By-Hash: yes`: every index is also served under
    /// `by-hash/SHA256/HASH` beside it, so a client can fetch exactly the
    /// file the signature names while the mirror syncs.
    pub acquire_by_hash: bool,
}

/// Verifies an `InRelease` file and returns only what the signature covers.
///
/// At least one signature must verify with a primary key of `keys` or a
/// subkey whose binding to its primary verifies (Debian's archive keys sign
/// with subkeys). `expected_codename` guards against a mirror serving another
/// suite's index; `now` (Unix seconds) is checked against `Valid-Until`,
/// unless it is None: a snapshot archive (snapshot.debian.org) serves
/// releases past it by design, as apt's `check-valid-until=no` allows.
pub fn verify_inrelease(
    text: &str,
    keys: &[SignedPublicKey],
    expected_codename: &str,
    now: Option<u64>,
) -> Result<Release> {
    let what = format!("InRelease of {expected_codename}");
    let bad = |detail: String| Error::BadSignature {
        what: what.clone(),
        suite: expected_codename.to_string(),
        detail,
    };
    let (msg, _) =
        CleartextSignedMessage::from_string(text).map_err(|e| bad(format!("unreadable: {e}")))?;
    let mut verified = false;
    'keys: for key in keys {
        if msg.verify(key).is_ok() {
            verified = true;
            break;
        }
        for sub in &key.public_subkeys {
            if sub.verify_bindings(&key.primary_key).is_ok() && msg.verify(sub).is_ok() {
                verified = true;
                break 'keys;
            }
        }
    }
    if !verified {
        return Err(bad(format!(
            "none of its {} signature(s) was made by a known archive key",
            msg.signatures().len()
        )));
    }
    let signed = msg.signed_text().replace("\r\n", "\n");
    let release = parse_release(&signed, &what)?;
    if release.codename != expected_codename {
        return Err(Error::WrongSuite {
            what,
            expected: expected_codename.to_string(),
            found: release.codename,
        });
    }
    if let (Some(until), Some(now)) = (&release.valid_until, now) {
        let t = parse_http_date(until).ok_or_else(|| Error::Malformed {
            what: what.clone(),
            detail: format!("Valid-Until {until:?}"),
        })?;
        if t < now {
            return Err(Error::Expired {
                what,
                valid_until: until.clone(),
            });
        }
    }
    Ok(release)
}

fn parse_release(text: &str, what: &str) -> Result<Release> {
    let mut fields: BTreeMap<String, String> = BTreeMap::new();
    let mut files = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(' ') {
            if section == "SHA256" {
                let parts: Vec<&str> = rest.split_whitespace().collect();
                if let [hash, size, path] = parts[..] {
                    let size = size.parse().map_err(|_| Error::Malformed {
                        what: what.to_string(),
                        detail: format!("size in {line:?}"),
                    })?;
                    files.insert(
                        path.to_string(),
                        IndexFile {
                            sha256: hash.to_ascii_lowercase(),
                            size,
                        },
                    );
                }
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            section = k.to_string();
            fields.insert(k.to_string(), v.trim().to_string());
        }
    }
    let get = |k: &str| fields.get(k).cloned().unwrap_or_default();
    if files.is_empty() {
        return Err(Error::Malformed {
            what: what.to_string(),
            detail: "no SHA256 file list".into(),
        });
    }
    Ok(Release {
        suite: get("Suite"),
        codename: get("Codename"),
        date: get("Date"),
        valid_until: fields.get("Valid-Until").cloned(),
        acquire_by_hash: get("Acquire-By-Hash").eq_ignore_ascii_case("yes"),
        files,
    })
}

/// Parses the RFC 2822 dates of Release files (`Sat, 28 Nov 2026 00:53:02 UTC`)
/// into Unix seconds.
pub fn parse_http_date(s: &str) -> Option<u64> {
    let s = s.split_once(',').map(|(_, r)| r).unwrap_or(s).trim();
    let mut it = s.split_whitespace();
    let day: u64 = it.next()?.parse().ok()?;
    let month = match it.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = it.next()?.parse().ok()?;
    let mut hms = it.next()?.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    u64::try_from(days)
        .ok()
        .map(|d| d * 86400 + h * 3600 + m * 60 + sec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{archive_keys, Suite};

    const INRELEASE: &str = include_str!("../tests/data/bookworm-InRelease");
    // A time before the fixture's date; bookworm's main InRelease has no Valid-Until.
    const NOW: Option<u64> = Some(1_780_000_000);
    // Debian testing's, which has one (Fri, 06 Nov 2026 08:08:01 UTC).
    const FORKY: &str = include_str!("../tests/data/forky-InRelease");

    #[test]
    fn real_bookworm_inrelease_verifies() {
        let r = verify_inrelease(INRELEASE, &archive_keys(Suite::Bookworm), "bookworm", NOW)
            .expect("signature must verify");
        assert_eq!(r.codename, "bookworm");
        let p = &r.files["main/binary-amd64/Packages.xz"];
        assert_eq!(p.sha256.len(), 64);
        // Debian's archive serves indexes by hash too.
        assert!(r.acquire_by_hash);
    }

    #[test]
    fn tampered_content_is_rejected() {
        let tampered = INRELEASE.replacen("Label: Debian", "Label: Debiam", 1);
        let err = verify_inrelease(&tampered, &archive_keys(Suite::Bookworm), "bookworm", NOW)
            .unwrap_err();
        assert!(matches!(err, Error::BadSignature { .. }), "{err}");
    }

    #[test]
    fn other_release_keys_do_not_verify_and_wrong_suite_is_caught() {
        // trixie's keyring lacks bookworm's stable key but has the automatic
        // keys that also sign bookworm, so use an empty keyring for the negative case.
        let err = verify_inrelease(INRELEASE, &[], "bookworm", NOW).unwrap_err();
        assert!(matches!(err, Error::BadSignature { .. }));
        let err =
            verify_inrelease(INRELEASE, &archive_keys(Suite::Bookworm), "trixie", NOW).unwrap_err();
        assert!(matches!(err, Error::WrongSuite { .. }), "{err}");
    }

    #[test]
    fn valid_until_is_checked_unless_the_caller_says_snapshot() {
        let keys = archive_keys(Suite::Forky);
        let until = parse_http_date("Fri, 06 Nov 2026 08:08:01 UTC").unwrap();
        let r = verify_inrelease(FORKY, &keys, "forky", Some(until - 1)).unwrap();
        assert_eq!(
            r.valid_until.as_deref(),
            Some("Fri, 06 Nov 2026 08:08:01 UTC")
        );
        let err = verify_inrelease(FORKY, &keys, "forky", Some(until + 1)).unwrap_err();
        assert!(matches!(err, Error::Expired { .. }), "{err}");
        assert!(err.to_string().contains("06 Nov 2026"), "{err}");
        // Not checked: still signed, still the suite asked for.
        verify_inrelease(FORKY, &keys, "forky", None).unwrap();
        let tampered = FORKY.replacen("Label: Debian", "Label: Debiam", 1);
        assert!(verify_inrelease(&tampered, &keys, "forky", None).is_err());
        assert!(matches!(
            verify_inrelease(FORKY, &keys, "trixie", None).unwrap_err(),
            Error::WrongSuite { .. }
        ));
    }

    #[test]
    fn dates() {
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 UTC"), Some(0));
        assert_eq!(
            parse_http_date("Sat, 28 Nov 2026 00:53:02 UTC"),
            Some(1_795_827_182)
        );
        assert_eq!(parse_http_date("garbage"), None);
    }
}
