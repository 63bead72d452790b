//! One way to run work on a few threads: a fixed number of workers take
//! items in order; after the first error no new item starts.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Runs `work` on each item, `workers` at a time; the first error.
pub fn for_each<T: Sync>(
    workers: usize,
    items: &[T],
    work: impl Fn(usize, &T) -> anyhow::Result<()> + Sync,
) -> anyhow::Result<()> {
    let next = AtomicUsize::new(0);
    let failed: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..workers.min(items.len()) {
            s.spawn(|| loop {
                if failed.lock().map(|f| f.is_some()).unwrap_or(true) {
                    return;
                }
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(item) = items.get(i) else { return };
                if let Err(e) = work(i, item) {
                    failed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_or_insert(e);
                    return;
                }
            });
        }
    });
    match failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// [`for_each`] that keeps what `work` returns: the results in the items'
/// order, or the first error.
pub fn map<T: Sync, R: Send>(
    workers: usize,
    items: &[T],
    work: impl Fn(usize, &T) -> anyhow::Result<R> + Sync,
) -> anyhow::Result<Vec<R>> {
    let slots: Vec<Mutex<Option<R>>> = items.iter().map(|_| Mutex::new(None)).collect();
    for_each(workers, items, |i, item| {
        let r = work(i, item)?;
        *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
        Ok(())
    })?;
    slots
        .into_iter()
        .map(|s| {
            s.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .ok_or_else(|| anyhow::anyhow!("an item was not worked on"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_once_and_the_first_error() {
        let seen = Mutex::new(Vec::new());
        for_each(3, &[1, 2, 3, 4, 5], |_, n| {
            seen.lock().unwrap().push(*n);
            Ok(())
        })
        .unwrap();
        let mut seen = seen.into_inner().unwrap();
        seen.sort();
        assert_eq!(seen, vec![1, 2, 3, 4, 5]);
        let e = for_each(2, &[1, 2, 3], |_, n| {
            if *n == 2 {
                anyhow::bail!("item {n} failed")
            }
            Ok(())
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "item 2 failed");
        for_each(4, &[] as &[u8], |_, _| anyhow::bail!("never")).unwrap();
    }

    #[test]
    fn results_in_the_items_order() {
        let items: Vec<u64> = (0..50).collect();
        let out = map(4, &items, |i, n| {
            // Later items finish first.
            std::thread::sleep(std::time::Duration::from_micros(50 - n));
            Ok((i, n * 2))
        })
        .unwrap();
        assert_eq!(
            out,
            items
                .iter()
                .map(|n| (*n as usize, n * 2))
                .collect::<Vec<_>>()
        );
        let e = map(2, &[1, 2, 3], |_, n| {
            if *n == 3 {
                anyhow::bail!("item {n} failed")
            }
            Ok(*n)
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "item 3 failed");
    }
}
