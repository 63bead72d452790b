//! Reading a Debian mirror as apt does: the signed `InRelease`, then each
//! index it names by the hash it lists, by-hash first (`Acquire-By-Hash`:
//! the exact file the signature covers, even while the mirror syncs), the
//! plain path second, and once more with a fresh `InRelease` when both
//! disagree with it. Mirrors are inconsistent mid-sync; this is where that
//! is absorbed, or reported with everything needed to act on it.

use crate::core::cache::{Cache, CacheDir};
use crate::core::http;
use anyhow::{anyhow, Result};
use slimpack_debian::{archive_keys, sha256_hex, verify_inrelease, IndexFile, Release, Suite};
use std::time::{SystemTime, UNIX_EPOCH};

/// An index whose every copy on the mirror differs from what the signed
/// `InRelease` lists.
#[derive(Debug, thiserror::Error)]
#[error("the Debian mirror {mirror} is inconsistent: dists/{dist}/InRelease lists {path} with SHA-256 {listed}, but the mirror serves a file with SHA-256 {served}{by_hash} (even after fetching InRelease again). A mirror being synchronised serves this for a while: try again later, or use another mirror with --mirror (or `mirror` in the configuration)")]
pub struct IndexMismatch {
    pub mirror: String,
    pub dist: String,
    pub path: String,
    pub listed: String,
    pub served: String,
    pub by_hash: &'static str,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Downloads and verifies `dists/DIST/InRelease`; its `Valid-Until` is
/// checked unless `check_valid_until` is false (a snapshot archive).
pub fn fetch_release(
    suite: Suite,
    mirror: &str,
    dist: &str,
    check_valid_until: bool,
) -> Result<(Release, String)> {
    let url = format!("{mirror}/dists/{dist}/InRelease");
    let text =
        String::from_utf8(http::get(&url, None)?).map_err(|_| anyhow!("{url}: not UTF-8"))?;
    let now = check_valid_until.then(now);
    verify_inrelease(&text, &archive_keys(suite), dist, now)
        .map(|release| (release, text))
        .map_err(|e| {
            let expired = matches!(e, slimpack_debian::Error::Expired { .. });
            let e = anyhow::Error::new(e).context(format!("checking {url}"));
            if expired {
                crate::core::errors::hinted(
                    format!("{e:#}"),
                    "use a mirror that is up to date (--mirror, or `mirror` in the configuration); for a snapshot archive such as snapshot.debian.org, whose releases expire by design, set `check-valid-until = false`",
                )
            } else {
                e
            }
        })
}

/// Runs `read` on a verified Release of `dist`; when an index it names
/// cannot be had as listed, once more on a freshly fetched one (the mirror
/// may have finished the sync in between).
pub fn with_release<T>(
    suite: Suite,
    mirror: &str,
    dist: &str,
    check_valid_until: bool,
    read: impl Fn(&Release, &str) -> Result<T>,
) -> Result<T> {
    let (release, text) = fetch_release(suite, mirror, dist, check_valid_until)?;
    match read(&release, &text) {
        Err(e) if e.downcast_ref::<IndexMismatch>().is_some() => {
            let (release, text) = fetch_release(suite, mirror, dist, check_valid_until)?;
            read(&release, &text)
        }
        r => r,
    }
}

/// The entry a verified Release gives for an index file.
pub fn index_entry<'r>(
    mirror: &str,
    dist: &str,
    release: &'r Release,
    path: &str,
) -> Result<&'r IndexFile> {
    release.files.get(path).ok_or_else(|| {
        anyhow!(
            "{mirror}/dists/{dist}/InRelease lists no {path}; is {mirror} a full Debian mirror?"
        )
    })
}

/// The index `path` exactly as the Release lists it: by hash when the
/// archive offers it, else (or when that copy is missing) at its path.
pub fn download_index(mirror: &str, dist: &str, release: &Release, path: &str) -> Result<Vec<u8>> {
    let entry = index_entry(mirror, dist, release, path)?;
    let base = format!("{mirror}/dists/{dist}");
    if release.acquire_by_hash {
        let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
        let url = format!("{base}/{dir}/by-hash/SHA256/{}", entry.sha256);
        // A missing by-hash file is common (a mirror that does not keep
        // them); any failure here falls back to the plain path.
        if let Ok(bytes) = http::get(&url, None) {
            if sha256_hex(&bytes) == entry.sha256 {
                return Ok(bytes);
            }
        }
    }
    let url = format!("{base}/{path}");
    let bytes = http::get(&url, None)?;
    let served = sha256_hex(&bytes);
    if served != entry.sha256 {
        return Err(IndexMismatch {
            mirror: mirror.to_string(),
            dist: dist.to_string(),
            path: path.to_string(),
            listed: entry.sha256.clone(),
            served,
            by_hash: if release.acquire_by_hash {
                ", and by-hash/ has no file with the listed hash"
            } else {
                ""
            },
        }
        .into());
    }
    Ok(bytes)
}

/// An index named by a verified Release, from the cache (kept by its hash,
/// so a cached copy is exactly what the signature covers) or the mirror.
pub fn fetch_index(
    cache: &Cache,
    mirror: &str,
    dist: &str,
    release: &Release,
    path: &str,
) -> Result<Vec<u8>> {
    let entry = index_entry(mirror, dist, release, path)?;
    let cached = cache.dir(CacheDir::Indexes)?.join(&entry.sha256);
    if let Ok(bytes) = std::fs::read(&cached) {
        if sha256_hex(&bytes) == entry.sha256 {
            return Ok(bytes);
        }
    }
    let bytes = download_index(mirror, dist, release, path)?;
    crate::core::fs::write_atomic(&cached, &bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::io::{Read, Write};
    use std::sync::{Arc, Mutex};

    /// A mirror on loopback serving `files` (path → body); every request
    /// path is logged.
    fn mirror(files: BTreeMap<String, Vec<u8>>) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let seen = log.clone();
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(mut s) = s else { continue };
                let mut buf = [0u8; 2048];
                let n = s.read(&mut buf).unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).into_owned();
                let path = req.split_whitespace().nth(1).unwrap_or("").to_string();
                seen.lock().unwrap().push(path.clone());
                let reply = match files.get(&path) {
                    Some(body) => {
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .into_bytes();
                        r.extend_from_slice(body);
                        r
                    }
                    None => {
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_vec()
                    }
                };
                let _ = s.write_all(&reply);
            }
        });
        (format!("http://127.0.0.1:{port}/debian"), log)
    }

    fn release(by_hash: bool, listed: &[u8]) -> Release {
        let mut files = BTreeMap::new();
        files.insert(
            "main/binary-amd64/Packages.xz".to_string(),
            IndexFile {
                sha256: sha256_hex(listed),
                size: listed.len() as u64,
            },
        );
        Release {
            suite: "stable".into(),
            codename: "trixie".into(),
            date: String::new(),
            valid_until: None,
            files,
            acquire_by_hash: by_hash,
        }
    }

    const PATH: &str = "main/binary-amd64/Packages.xz";

    #[test]
    fn the_listed_file_is_taken_by_hash_when_the_plain_path_has_moved_on() {
        let good = b"the index the signature covers".to_vec();
        let plain = "/debian/dists/trixie/main/binary-amd64/Packages.xz".to_string();
        let by_hash = format!(
            "/debian/dists/trixie/main/binary-amd64/by-hash/SHA256/{}",
            sha256_hex(&good)
        );
        let (m, log) = mirror(BTreeMap::from([
            (plain.clone(), b"a newer index, mid-sync".to_vec()),
            (by_hash.clone(), good.clone()),
        ]));
        let got = download_index(&m, "trixie", &release(true, &good), PATH).unwrap();
        assert_eq!(got, good);
        assert_eq!(*log.lock().unwrap(), [by_hash]);
    }

    #[test]
    fn without_a_by_hash_copy_the_plain_path_serves() {
        let good = b"index".to_vec();
        let plain = "/debian/dists/trixie/main/binary-amd64/Packages.xz".to_string();
        let (m, log) = mirror(BTreeMap::from([(plain.clone(), good.clone())]));
        assert_eq!(
            download_index(&m, "trixie", &release(true, &good), PATH).unwrap(),
            good
        );
        assert_eq!(log.lock().unwrap().last(), Some(&plain));
        // No Acquire-By-Hash: by-hash is not asked for at all.
        let (m, log) = mirror(BTreeMap::from([(plain.clone(), good.clone())]));
        download_index(&m, "trixie", &release(false, &good), PATH).unwrap();
        assert_eq!(*log.lock().unwrap(), [plain]);
    }

    #[test]
    fn an_inconsistent_mirror_is_named_with_both_hashes() {
        let listed = b"what InRelease lists".to_vec();
        let served = b"what the mirror serves".to_vec();
        let plain = "/debian/dists/trixie/main/binary-amd64/Packages.xz".to_string();
        let (m, _) = mirror(BTreeMap::from([(plain, served.clone())]));
        let e = download_index(&m, "trixie", &release(true, &listed), PATH).unwrap_err();
        let mismatch = e.downcast_ref::<IndexMismatch>().expect("typed");
        assert_eq!(mismatch.served, sha256_hex(&served));
        let msg = e.to_string();
        for needle in [
            m.as_str(),
            PATH,
            &sha256_hex(&listed),
            &sha256_hex(&served),
            "--mirror",
            "by-hash",
        ] {
            assert!(msg.contains(needle), "{needle} missing from: {msg}");
        }
    }
}
