//! [`Expiring`]: a bounded map whose entries expire, as Redis keys do.

use std::{
    collections::{BTreeMap, HashMap},
    hash::Hash,
    time::Instant,
};

/// A map whose entries expire, ordered by expiry so both the sweep and the
/// eviction of the soonest-to-expire entry are cheap.
#[derive(Debug)]
pub struct Expiring<K, V> {
    entries: HashMap<K, Entry<V>>,
    /// (expiry, insertion number) → key; the number keeps equal expiries
    /// apart.
    by_expiry: BTreeMap<(Instant, u64), K>,
    inserted: u64,
    max_entries: usize,
}

#[derive(Debug)]
pub struct Entry<V> {
    value: V,
    slot: (Instant, u64),
}

impl<K: Eq + Hash + Clone, V> Expiring<K, V> {
    pub fn new(max_entries: usize) -> Self {
        Self {
            entries: HashMap::new(),
            by_expiry: BTreeMap::new(),
            inserted: 0,
            max_entries: max_entries.max(1),
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Inserts or replaces; returns the entries evicted to stay in bounds.
    pub fn insert(&mut self, key: K, value: V, expires: Instant) -> Vec<(K, V)> {
        self.remove(&key);
        self.inserted += 1;
        let slot = (expires, self.inserted);
        self.by_expiry.insert(slot, key.clone());
        self.entries.insert(key, Entry { value, slot });
        let mut evicted = Vec::new();
        while self.entries.len() > self.max_entries {
            let Some((_, oldest)) = self.by_expiry.pop_first() else { break };
            if let Some(entry) = self.entries.remove(&oldest) {
                evicted.push((oldest, entry.value));
            }
        }
        evicted
    }

    pub fn live(&self, key: &K, now: Instant) -> Option<&Entry<V>> {
        self.entries.get(key).filter(|e| e.slot.0 > now)
    }

    pub fn get(&self, key: &K, now: Instant) -> Option<&V> {
        self.live(key, now).map(|e| &e.value)
    }

    pub fn get_mut(&mut self, key: &K, now: Instant) -> Option<&mut V> {
        self.entries.get_mut(key).filter(|e| e.slot.0 > now).map(|e| &mut e.value)
    }

    pub fn expires(&self, key: &K, now: Instant) -> Option<Instant> {
        self.live(key, now).map(|e| e.slot.0)
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        let entry = self.entries.remove(key)?;
        self.by_expiry.remove(&entry.slot);
        Some(entry.value)
    }

    /// Drops every entry expired at `now`; returns them.
    pub fn sweep(&mut self, now: Instant) -> Vec<(K, V)> {
        let mut expired = Vec::new();
        while let Some(entry) = self.by_expiry.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            if let Some(e) = self.entries.remove(&key) {
                expired.push((key, e.value));
            }
        }
        expired
    }
}
