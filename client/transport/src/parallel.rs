//! The one worker pool: [`in_parallel`] runs a function over chunks of a
//! slice on a few scoped threads and stops everyone at the first error.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Set when a worker failed: the others stop taking work (and a long
/// chunk may check it between items).
#[derive(Debug, Default)]
pub struct Stop(AtomicBool);

impl Stop {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs `work` over `items`, `chunk` items at a time, on at most `jobs`
/// threads. Returns the first error; errors after it (workers that gave up
/// because of it) are dropped.
pub fn in_parallel<T: Sync, E: Send>(
    jobs: usize,
    items: &[T],
    chunk: usize,
    work: impl Fn(&[T], &Stop) -> Result<(), E> + Sync,
) -> Result<(), E> {
    if items.is_empty() {
        return Ok(());
    }
    let chunk = chunk.max(1);
    let next = AtomicUsize::new(0);
    let stop = Stop::default();
    let error: Mutex<Option<E>> = Mutex::new(None);
    let worker = || loop {
        if stop.is_set() {
            return;
        }
        let start = next.fetch_add(chunk, Ordering::Relaxed);
        if start >= items.len() {
            return;
        }
        let end = (start + chunk).min(items.len());
        if let Err(e) = work(&items[start..end], &stop) {
            let mut slot = error.lock().expect("error slot poisoned");
            if slot.is_none() && !stop.is_set() {
                *slot = Some(e);
            }
            stop.set();
            return;
        }
    };
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1).min(items.len().div_ceil(chunk)) {
            s.spawn(worker);
        }
    });
    match error.into_inner().expect("error slot poisoned") {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn every_item_once_and_the_first_error_wins() {
        let items: Vec<u64> = (1..=1000).collect();
        let sum = AtomicU64::new(0);
        in_parallel(4, &items, 7, |c, _| {
            sum.fetch_add(c.iter().sum::<u64>(), Ordering::Relaxed);
            Ok::<_, ()>(())
        })
        .expect("no error");
        assert_eq!(sum.into_inner(), 500_500);
        let r = in_parallel(3, &items, 10, |c, stop| {
            if c.contains(&500) {
                return Err("500");
            }
            assert!(c.len() <= 10);
            let _ = stop.is_set();
            Ok(())
        });
        assert_eq!(r, Err("500"));
    }
}
