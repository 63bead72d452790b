use crate::{Error, Result};
use std::io::{self, Read};

/// One file system object from a package's data archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebEntry {
    /// Relative, normalised (no `./`, no `..`, no empty components).
    pub path: String,
    /// Permission bits; setuid and setgid are always cleared.
    pub mode: u32,
    pub kind: DebEntryKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DebEntryKind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    /// Target path relative to the root, normalised like `path`.
    Hardlink(String),
}

fn normalise(deb: &str, raw: &str) -> Result<Option<String>> {
    let mut parts = Vec::new();
    for c in raw.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                return Err(Error::UnsafeEntry {
                    deb: deb.into(),
                    path: raw.into(),
                    reason: "path contains `..`".into(),
                })
            }
            c => parts.push(c),
        }
    }
    Ok(if parts.is_empty() {
        None
    } else {
        Some(parts.join("/"))
    })
}

/// Reads the data archive of a `.deb` (ar with `data.tar.{xz,zst,gz}` or
/// plain tar) into memory. Nothing is written to disk, so neither paths nor
/// symlinks can escape anything here; entries that could be dangerous when
/// materialised (device nodes, fifos, `..`) are refused outright.
pub fn read_deb(deb_name: &str, bytes: &[u8]) -> Result<Vec<DebEntry>> {
    let io_err = |source: io::Error| Error::Io {
        context: format!("reading {deb_name}"),
        source,
    };
    let mut ar = ar::Archive::new(bytes);
    while let Some(member) = ar.next_entry() {
        let mut member = member.map_err(io_err)?;
        let id = String::from_utf8_lossy(member.header().identifier()).into_owned();
        if !id.starts_with("data.tar") {
            continue;
        }
        let mut raw = Vec::new();
        member.read_to_end(&mut raw).map_err(io_err)?;
        let reader: Box<dyn Read> = match id.trim_end_matches('/') {
            "data.tar.xz" => Box::new(liblzma::read::XzDecoder::new(raw.as_slice())),
            "data.tar.zst" => {
                Box::new(zstd::stream::read::Decoder::new(raw.as_slice()).map_err(io_err)?)
            }
            "data.tar.gz" => Box::new(flate2::read::GzDecoder::new(raw.as_slice())),
            "data.tar" => Box::new(raw.as_slice()),
            other => {
                return Err(Error::Malformed {
                    what: deb_name.into(),
                    detail: format!("unsupported data member {other}"),
                })
            }
        };
        return read_data_tar(deb_name, reader);
    }
    Err(Error::Malformed {
        what: deb_name.into(),
        detail: "no data.tar member".into(),
    })
}

fn read_data_tar(deb_name: &str, reader: impl Read) -> Result<Vec<DebEntry>> {
    let io_err = |source: io::Error| Error::Io {
        context: format!("reading data of {deb_name}"),
        source,
    };
    let mut out = Vec::new();
    let mut tar = tar::Archive::new(reader);
    for e in tar.entries().map_err(io_err)? {
        let mut e = e.map_err(io_err)?;
        let raw_path = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let Some(path) = normalise(deb_name, &raw_path)? else {
            continue;
        };
        let mode = e.header().mode().map_err(io_err)? & 0o1777;
        let ty = e.header().entry_type();
        let kind = match ty {
            tar::EntryType::Directory => DebEntryKind::Dir,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut data = Vec::with_capacity(e.size() as usize);
                e.read_to_end(&mut data).map_err(io_err)?;
                DebEntryKind::File(data)
            }
            tar::EntryType::Symlink => {
                let t = e
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                DebEntryKind::Symlink(t)
            }
            tar::EntryType::Link => {
                let t = e
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                match normalise(deb_name, &t)? {
                    Some(t) => DebEntryKind::Hardlink(t),
                    None => {
                        return Err(Error::UnsafeEntry {
                            deb: deb_name.into(),
                            path: raw_path,
                            reason: "hard link to the root".into(),
                        })
                    }
                }
            }
            other => {
                return Err(Error::UnsafeEntry {
                    deb: deb_name.into(),
                    path: raw_path,
                    reason: format!("{other:?} entries (devices, fifos) are not allowed"),
                })
            }
        };
        out.push(DebEntry { path, mode, kind });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(entries: &[(&str, tar::EntryType, &str, u32)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, ty, link, mode) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*ty);
            h.set_mode(*mode);
            h.set_size(0);
            // Write the raw name so that `..` survives (the builder refuses it).
            let name = h.as_old_mut().name.as_mut();
            name[..path.len()].copy_from_slice(path.as_bytes());
            if !link.is_empty() {
                h.set_link_name(link).unwrap();
            }
            h.set_cksum();
            b.append(&h, io::empty()).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn deb_with(data_tar: Vec<u8>) -> Vec<u8> {
        let mut a = ar::Builder::new(Vec::new());
        a.append(
            &ar::Header::new(b"debian-binary".to_vec(), 4),
            &b"2.0\n"[..],
        )
        .unwrap();
        a.append(
            &ar::Header::new(b"data.tar".to_vec(), data_tar.len() as u64),
            data_tar.as_slice(),
        )
        .unwrap();
        a.into_inner().unwrap()
    }

    #[test]
    fn reads_entries_and_clears_setuid() {
        let deb = deb_with(tar_with(&[
            ("./", tar::EntryType::Directory, "", 0o755),
            ("./usr/bin/su", tar::EntryType::Regular, "", 0o4755),
            (
                "./usr/bin/python3",
                tar::EntryType::Symlink,
                "python3.11",
                0o777,
            ),
            ("./usr/bin/py", tar::EntryType::Link, "./usr/bin/su", 0o755),
        ]));
        let e = read_deb("t.deb", &deb).unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].path, "usr/bin/su");
        assert_eq!(e[0].mode, 0o755);
        assert_eq!(e[1].kind, DebEntryKind::Symlink("python3.11".into()));
        assert_eq!(e[2].kind, DebEntryKind::Hardlink("usr/bin/su".into()));
    }

    #[test]
    fn refuses_traversal_and_devices() {
        let deb = deb_with(tar_with(&[(
            "./../../etc/passwd",
            tar::EntryType::Regular,
            "",
            0o644,
        )]));
        assert!(matches!(
            read_deb("t.deb", &deb),
            Err(Error::UnsafeEntry { .. })
        ));
        let deb = deb_with(tar_with(&[("./dev/sda", tar::EntryType::Block, "", 0o644)]));
        assert!(matches!(
            read_deb("t.deb", &deb),
            Err(Error::UnsafeEntry { .. })
        ));
        let deb = deb_with(tar_with(&[(
            "./x",
            tar::EntryType::Link,
            "../../etc/shadow",
            0o644,
        )]));
        assert!(matches!(
            read_deb("t.deb", &deb),
            Err(Error::UnsafeEntry { .. })
        ));
    }
}
