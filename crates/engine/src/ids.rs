//! Stable ids derived from content: digests for ids and idempotency keys, and the
//! bucket a split sends a contact to.

use sha2::{Digest, Sha256};

/// A stable hex digest of parts, for ids and idempotency keys.
pub fn digest(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    h.finalize()
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Where a split sends a contact: a stable hash of (workflow, step, contact).
pub fn split_bucket(workflow: &str, step: &str, contact: &str, total: u64) -> u64 {
    let mut h = Sha256::new();
    h.update(format!("{workflow}\0{step}\0{contact}").as_bytes());
    let d = h.finalize();
    let n = u64::from_be_bytes(d[..8].try_into().expect("8 bytes"));
    n % total.max(1)
}
