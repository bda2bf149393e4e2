//! The registry of objects, with change tracking for the store.
//!
//! The loop writes what changed to the store after every turn. It used to find that by
//! comparing every object with a full copy of what it last wrote: O(objects) per turn (a PATCH
//! at 10,000 objects paid for 10,000 comparisons) and a second copy of every object in memory.
//! Now every mutable access marks its id dirty, and only dirty objects are looked at; the store
//! side keeps a hash of each object's encoding instead of a copy.

use super::Entry;
use std::collections::{HashMap, HashSet};

/// Objects by id. Entries are boxed: an `Entry` is large, and a map of boxes keeps its spare
/// capacity (up to half the table after a resize) at pointer size.
#[derive(Default)]
pub(super) struct Objects {
    map: HashMap<String, Box<Entry>>,
    /// Ids whose entry was inserted, removed or handed out mutably since [`Objects::take_dirty`].
    dirty: HashSet<String>,
}

impl Objects {
    pub(super) fn get(&self, id: &str) -> Option<&Entry> {
        self.map.get(id).map(|b| &**b)
    }

    /// The entry, marked dirty: the store looks at it after this turn.
    pub(super) fn get_mut(&mut self, id: &str) -> Option<&mut Entry> {
        let e = self.map.get_mut(id)?;
        if !self.dirty.contains(id) {
            self.dirty.insert(id.to_string());
        }
        Some(&mut **e)
    }

    pub(super) fn insert(&mut self, id: String, e: Entry) {
        self.dirty.insert(id.clone());
        self.map.insert(id, Box::new(e));
    }

    pub(super) fn remove(&mut self, id: &str) -> Option<Entry> {
        let e = self.map.remove(id)?;
        self.dirty.insert(id.to_string());
        Some(*e)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&String, &Entry)> {
        self.map.iter().map(|(k, v)| (k, &**v))
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &Entry> {
        self.map.values().map(|v| &**v)
    }

    pub(super) fn contains_key(&self, id: &str) -> bool {
        self.map.contains_key(id)
    }

    /// The ids changed since the last call.
    pub(super) fn take_dirty(&mut self) -> HashSet<String> {
        std::mem::take(&mut self.dirty)
    }
}
