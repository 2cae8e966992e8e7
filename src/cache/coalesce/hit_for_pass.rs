//! Hit-for-pass: keys whose last response could not be shared for a reason of its own, so
//! their requests go upstream side by side instead of queueing behind a leader.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::cache::policy::NotStorable;

/// The reasons that mark a key hit-for-pass: they come from the response itself, so every
/// client would get the same answer. A reason that comes from the leader's own request
/// (`request-no-store`, `authorization`, `no-freshness`, …) never marks a key.
pub const HIT_FOR_PASS_REASONS: [NotStorable; 6] = [
    NotStorable::NoStore,
    NotStorable::Private,
    NotStorable::SetCookie,
    NotStorable::VaryStar,
    NotStorable::VaryNotAllowed,
    NotStorable::MustUnderstand,
];

const HFP_SHARDS: usize = 16;

/// Keys whose last response could not be shared, with their expiry. Sharded maps with lazy
/// expiry: an insert per unique uncacheable URL must stay O(1) (a full general-purpose cache
/// stalled requests here doing its housekeeping), and losing entries only costs one queue.
/// Keys are held as their 64-bit keyed hash, computed once per operation: a collision (about
/// 1 in 10^10 at the cap) only sends a key's requests upstream uncoalesced for a while.
pub(super) struct HitForPass {
    ttl: Duration,
    per_shard: usize,
    hasher: std::collections::hash_map::RandomState,
    shards: Vec<Mutex<HashMap<u64, tokio::time::Instant, KeyHashed>>>,
}

/// The map hasher of [`HitForPass`]: its keys are hashes already.
type KeyHashed = std::hash::BuildHasherDefault<PassThrough>;

#[derive(Default)]
struct PassThrough(u64);

impl std::hash::Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl HitForPass {
    pub(super) fn new(ttl: Duration, cap: usize) -> Self {
        Self {
            ttl,
            per_shard: (cap / HFP_SHARDS).max(1),
            hasher: std::collections::hash_map::RandomState::new(),
            shards: (0..HFP_SHARDS)
                .map(|_| Mutex::new(HashMap::default()))
                .collect(),
        }
    }

    fn shard(&self, key: &str) -> (u64, &Mutex<HashMap<u64, tokio::time::Instant, KeyHashed>>) {
        use std::hash::BuildHasher;
        // One hasher for the life of the map: each RandomState::new() has other keys.
        let h = self.hasher.hash_one(key);
        // The map takes its bucket from the low bits and its tags from the top ones: the shard
        // comes from bits of neither.
        (h, &self.shards[(h >> 32) as usize % HFP_SHARDS])
    }

    pub(super) fn insert(&self, key: &str) {
        let now = tokio::time::Instant::now();
        let (h, shard) = self.shard(key);
        let mut m = shard.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= self.per_shard {
            m.retain(|_, exp| *exp > now);
            if m.len() >= self.per_shard {
                m.clear();
            }
        }
        m.insert(h, now + self.ttl);
    }

    pub(super) fn contains(&self, key: &str) -> bool {
        let now = tokio::time::Instant::now();
        let (h, shard) = self.shard(key);
        let mut m = shard.lock().unwrap_or_else(|e| e.into_inner());
        match m.get(&h) {
            Some(exp) if *exp > now => true,
            Some(_) => {
                m.remove(&h);
                false
            }
            None => false,
        }
    }
}
