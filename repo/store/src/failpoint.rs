//! Crash testing: `TREECTL_FAILPOINT=NAME:N` makes the process kill itself
//! with SIGKILL the N-th time it passes the point NAME, the way ostree's
//! `OSTREE_REPO_TEST_ERROR` does. Tests use it to stop a command at exact,
//! varied moments; without the variable a failpoint costs one load.
//! `NAME:N:stop` instead prints `treectl: stopped at failpoint NAME` to
//! stderr and waits forever there, so that a test can cut the power of a
//! whole machine (a VM) at that moment.
//!
//! Points: `stage-object` (after an object is written to staging),
//! `store-object` (after an object is renamed into the store),
//! `before-refs` (all objects durable, no ref moved yet), `after-refs`
//! (refs moved, staging not yet removed), `prune-delete` (after prune
//! deletes an object), `publish-before-index` (a publish's intent written,
//! index not yet), `publish-after-index` (index written, history not yet),
//! `publish-after-history` (history written, ref not yet moved),
//! `pull-delta-bytes` (after each piece of a static delta a pull downloads).
//! Deployments (client `sysroot`): `deploy-checkout`, `deploy-before-rename`,
//! `<op>-before-swap` / `<op>-after-swap` (op: deploy, finalize, rollback,
//! pin, cleanup), `stage-written`, `finalize-etc`, `finalize-exchanged`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static TARGET: OnceLock<Option<(String, u64, bool)>> = OnceLock::new();
static HITS: AtomicU64 = AtomicU64::new(0);

/// Passes the failpoint `name`.
pub fn hit(name: &str) {
    let target = TARGET.get_or_init(|| {
        let spec = std::env::var("TREECTL_FAILPOINT").ok()?;
        let (point, n) = spec.split_once(':')?;
        let (n, stop) = match n.split_once(':') {
            Some((n, "stop")) => (n, true),
            Some(_) => return None,
            None => (n, false),
        };
        Some((point.to_owned(), n.parse().ok()?, stop))
    });
    if let Some((point, n, stop)) = target {
        if point == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *n {
            if *stop {
                eprintln!("treectl: stopped at failpoint {name}");
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(3600));
                }
            }
            let _ = rustix::process::kill_process(
                rustix::process::getpid(),
                rustix::process::Signal::KILL,
            );
        }
    }
}
