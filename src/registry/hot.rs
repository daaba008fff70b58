//! The hit path's lock-free copy of the cache.

use std::{collections::HashMap, sync::Arc};

use arc_swap::ArcSwap;

use super::Slot;

/// A lock-free copy of the cache for the hit path: `ArcSwap` maps, sharded by key hash so a
/// publish copies one shard. Entries are only ever replaced by an equal or newer revision, so
/// the hot path can never go back to a version the watcher already swapped out.
#[derive(Debug)]
pub(super) struct HotSnapshot {
    shards: Vec<ArcSwap<HashMap<String, Slot>>>,
}

const HOT_SHARDS: usize = 64;

impl HotSnapshot {
    pub(super) fn new() -> Self {
        Self {
            shards: (0..HOT_SHARDS).map(|_| ArcSwap::default()).collect(),
        }
    }

    fn shard(&self, key: &str) -> &ArcSwap<HashMap<String, Slot>> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        &self.shards[(h.finish() as usize) % HOT_SHARDS]
    }

    pub(super) fn get(&self, key: &str) -> Option<Slot> {
        self.shard(key).load().get(key).cloned()
    }

    /// Serves `slot` for `key` from now on, unless a newer revision is already served.
    pub(super) fn publish(&self, key: &str, slot: &Slot) {
        self.shard(key).rcu(|current| {
            if current
                .get(key)
                .is_some_and(|held| held.revision > slot.revision)
            {
                return Arc::clone(current);
            }
            let mut next = HashMap::clone(current);
            next.insert(key.to_string(), slot.clone());
            Arc::new(next)
        });
    }

    /// Drops `key` if its copy is at most `revision`.
    pub(super) fn remove(&self, key: &str, revision: i64) {
        self.shard(key).rcu(|current| match current.get(key) {
            Some(held) if held.revision <= revision => {
                let mut next = HashMap::clone(current);
                next.remove(key);
                Arc::new(next)
            }
            _ => Arc::clone(current),
        });
    }
}
