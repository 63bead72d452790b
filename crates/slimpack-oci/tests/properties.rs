//! Properties of layers that must hold for any input: the bytes depend only
//! on the set of entries (never on insertion order), and no path that leaves
//! the root is ever accepted.

use proptest::prelude::*;
use slimpack_oci::{BlobStore, Entry, LayerBuilder};

fn component() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{1,8}",
        Just("..".to_string()),
        Just(".".to_string()),
        Just("".to_string()),
        "[a-z]{1,3}\\.py",
    ]
}

fn path() -> impl Strategy<Value = String> {
    (any::<bool>(), prop::collection::vec(component(), 1..5))
        .prop_map(|(abs, parts)| format!("{}{}", if abs { "/" } else { "" }, parts.join("/")))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn accepted_paths_never_escape(p in path()) {
        let mut b = LayerBuilder::new();
        if b.add(&p, Entry::bytes(0o644, "x")).is_ok() {
            let stored: Vec<String> = b.paths().map(str::to_string).collect();
            for s in stored {
                prop_assert!(!s.starts_with('/'));
                prop_assert!(!s.split('/').any(|c| c == ".." || c == "." || c.is_empty()), "{s}");
            }
        } else {
            prop_assert!(p.split('/').any(|c| c == "..") || p.split('/').all(|c| c.is_empty() || c == "."));
        }
    }

    #[test]
    fn digest_depends_on_content_not_order(
        files in prop::collection::btree_map("[a-z]{1,4}(/[a-z]{1,4}){0,2}", prop::collection::vec(any::<u8>(), 0..64), 1..12),
        seed in any::<u64>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let mut entries: Vec<(String, Vec<u8>)> = files.into_iter().collect();
        // A path cannot be both a file and the parent of another file.
        let all: Vec<String> = entries.iter().map(|(p, _)| p.clone()).collect();
        entries.retain(|(p, _)| !all.iter().any(|q| q.starts_with(&format!("{p}/"))));
        let build = |order: &[(String, Vec<u8>)]| {
            let mut b = LayerBuilder::new();
            for (p, d) in order {
                b.add(p, Entry::bytes(0o644, d.clone())).unwrap();
            }
            b.write(&store, 315_532_800).unwrap()
        };
        let a = build(&entries);
        let mut shuffled = entries.clone();
        let n = shuffled.len();
        for i in 0..n {
            let j = (seed.wrapping_mul(6364136223846793005).wrapping_add(i as u64) % n as u64) as usize;
            shuffled.swap(i, j);
        }
        let b = build(&shuffled);
        prop_assert_eq!(a, b);
    }
}
