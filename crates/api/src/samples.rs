//! What the sample streams (`/v1/objects/{key}/metrics/stream`, `/v1/metrics/stream`) read: the
//! core's shared sample rings, polled from each stream's own task.
//!
//! A trait of its own rather than a method of [`crate::Core`], so that stand-in cores in tests
//! need not implement it: a router built without one answers the stream routes with 503.

use nodeagent_core::AgentHandle;
use nodeagent_types::Sample;
use std::collections::HashMap;

/// Read-only access to the sample rings. See [`AgentHandle::samples_since`] and
/// [`AgentHandle::latest_changed`].
pub trait Rings: Send + Sync + 'static {
    /// Samples of object `id` with seq above `after`, oldest first, at most the newest `max`;
    /// `None` once the object is gone.
    fn samples_since(&self, id: &str, after: u64, max: usize) -> Option<Vec<Sample>>;
    /// The newest sample of each object whose seq changed since `seen`, and the ids gone.
    fn latest_changed(&self, seen: &mut HashMap<String, u64>) -> (Vec<Sample>, Vec<String>);
}

impl Rings for AgentHandle {
    fn samples_since(&self, id: &str, after: u64, max: usize) -> Option<Vec<Sample>> {
        AgentHandle::samples_since(self, id, after, max)
    }
    fn latest_changed(&self, seen: &mut HashMap<String, u64>) -> (Vec<Sample>, Vec<String>) {
        AgentHandle::latest_changed(self, seen)
    }
}
