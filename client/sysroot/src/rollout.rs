//! Phased rollouts on the client: which wave of a release this machine is
//! in. The bucket is a pure function of the machine id and the release's
//! commit id (documented in `docs/deployments.md`, "Phased rollouts"), so
//! every machine decides alone, the same way every time, and a machine in
//! the first 10% of one release is not always first for the next.

use serde::Serialize;
use treectl_store::ObjectId;

use crate::state::Deployment;
use crate::{Result, Sysroot, SysrootError};

/// Buckets per release: a bucket is a share of the fleet in hundredths
/// of a percent.
pub const BUCKETS: u64 = 10_000;
/// The domain of the bucket hash.
pub const BUCKET_DOMAIN: &[u8] = b"treectl rollout bucket v1\0";
/// Overrides the machine id (fleet simulations, tests, images without one).
pub const MACHINE_ID_ENV: &str = "TREECTL_MACHINE_ID";

/// The machine's bucket for `commit`, `0..BUCKETS`: the first 8 bytes of
/// `SHA-256(BUCKET_DOMAIN ‖ machine id ‖ 0x00 ‖ commit id as 64 hex
/// digits)`, big-endian, modulo [`BUCKETS`].
pub fn bucket(machine_id: &str, commit: &ObjectId) -> u64 {
    let mut msg = BUCKET_DOMAIN.to_vec();
    msg.extend_from_slice(machine_id.as_bytes());
    msg.push(0);
    msg.extend_from_slice(commit.to_hex().as_bytes());
    let digest = ObjectId::of(&msg);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.0[..8]);
    u64::from_be_bytes(first) % BUCKETS
}

/// Whether a machine in `bucket` is inside a wave of `percent`.
pub fn in_wave(bucket: u64, percent: u8) -> bool {
    bucket < u64::from(percent) * (BUCKETS / 100)
}

/// The smallest rollout percentage that includes `bucket`.
pub fn percent_needed(bucket: u64) -> u8 {
    u8::try_from(bucket / (BUCKETS / 100) + 1).expect("a bucket is below 100%")
}

/// Where this machine stands in a release's rollout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RolloutStatus {
    pub percent: u8,
    pub paused: bool,
    /// This machine's bucket, in hundredths of a percent.
    pub bucket: u64,
    /// The rollout percentage from which this machine takes the release.
    pub from_percent: u8,
    /// The machine takes the release now (inside the wave, not paused).
    pub in_wave: bool,
    /// `--ignore-rollout`: the machine takes it anyway.
    pub ignored: bool,
}

impl RolloutStatus {
    pub fn new(machine_id: &str, commit: &ObjectId, percent: u8, paused: bool) -> Self {
        let b = bucket(machine_id, commit);
        RolloutStatus {
            percent,
            paused,
            bucket: b,
            from_percent: percent_needed(b),
            in_wave: !paused && in_wave(b, percent),
            ignored: false,
        }
    }

    /// One line for people.
    pub fn describe(&self) -> String {
        let pos = format!(
            "this machine's bucket is {}.{:02}%",
            self.bucket / 100,
            self.bucket % 100
        );
        match (self.paused, self.in_wave) {
            (true, _) => format!(
                "rollout paused at {}%; {pos}, in the wave from {}%",
                self.percent, self.from_percent
            ),
            (false, true) => format!("rollout at {}%; {pos}: in the wave", self.percent),
            (false, false) => format!(
                "rollout at {}%; {pos}: it gets the release when the rollout reaches {}%",
                self.percent, self.from_percent
            ),
        }
    }
}

/// The machine id: `$TREECTL_MACHINE_ID`, else the default deployment's
/// `/etc/machine-id`.
pub fn machine_id(sysroot: &Sysroot, default: &Deployment) -> Result<String> {
    if let Ok(id) = std::env::var(MACHINE_ID_ENV) {
        if !id.trim().is_empty() {
            return Ok(id.trim().to_owned());
        }
    }
    let path = default.path(sysroot).join("etc/machine-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_owned()),
        _ => Err(SysrootError::NoMachineId { path }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 14, acceptance 4: with 1,000 machine ids and a 10% rollout,
    /// between 7% and 13% of machines are in the wave; the function is
    /// stable (a fixed vector) and differs between releases.
    #[test]
    fn a_ten_percent_wave_takes_about_ten_percent() {
        let commit = ObjectId::of(b"release 2");
        let other = ObjectId::of(b"release 3");
        let ids: Vec<String> = (0..1000).map(|i| format!("{i:032x}")).collect();
        let inside = ids
            .iter()
            .filter(|id| in_wave(bucket(id, &commit), 10))
            .count();
        assert!(
            (70..=130).contains(&inside),
            "{inside} of 1000 in a 10% wave"
        );
        assert_eq!(
            ids.iter()
                .filter(|id| in_wave(bucket(id, &commit), 100))
                .count(),
            1000
        );
        assert_eq!(
            ids.iter()
                .filter(|id| in_wave(bucket(id, &commit), 0))
                .count(),
            0
        );
        // Waves grow: a machine inside at 10% is inside at 20%.
        assert!(ids.iter().all(|id| {
            let b = bucket(id, &commit);
            !in_wave(b, 10) || in_wave(b, 20)
        }));
        // Another release: another order.
        let first = |c: &ObjectId| -> Vec<&String> {
            ids.iter().filter(|id| in_wave(bucket(id, c), 10)).collect()
        };
        assert_ne!(first(&commit), first(&other));
        // Stable across versions of treectl: a fixed vector.
        assert_eq!(
            bucket("0123456789abcdef0123456789abcdef", &commit),
            BUCKET_VECTOR
        );
        let b = bucket("machine", &commit);
        assert_eq!(percent_needed(b) as u64, b / 100 + 1);
        assert!(in_wave(b, percent_needed(b)) && !in_wave(b, percent_needed(b) - 1));
    }

    /// Computed independently (Python hashlib) from the definition above.
    const BUCKET_VECTOR: u64 = 8959;
}
