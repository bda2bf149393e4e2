//! Read-only access to the shared sample rings for live streams (issue 19).
//!
//! Streams poll the rings from their own task at their own pace: the collector thread does no
//! extra work for them, and nothing at all happens while nobody listens. Each call takes the
//! series map's read lock once and each series' lock only long enough to copy out what changed.

use crate::handle::AgentHandle;
use nodeagent_engine::series::lock;
use nodeagent_types::Sample;
use std::collections::HashMap;

impl AgentHandle {
    /// Samples of the object with id `id` whose seq is above `after`, oldest first, at most the
    /// newest `max`. `None` once the object has no series any more (it was deleted).
    pub fn samples_since(&self, id: &str, after: u64, max: usize) -> Option<Vec<Sample>> {
        let series = self.shared.series.get(id)?;
        let s = lock(&series);
        let newest = s.latest_seq();
        if newest <= after {
            return Some(Vec::new());
        }
        // Skip what would be cut anyway: seqs are consecutive in the common case.
        let after = after.max(newest.saturating_sub(max as u64));
        let mut out: Vec<Sample> = s.since(after).collect();
        if out.len() > max {
            out.drain(..out.len() - max);
        }
        Some(out)
    }

    /// The newest sample of every object (the host included) whose newest seq is not the one
    /// in `seen`, which is updated; ids no longer sampled are dropped from `seen` and returned
    /// second, so a stream can say which objects went away.
    pub fn latest_changed(&self, seen: &mut HashMap<String, u64>) -> (Vec<Sample>, Vec<String>) {
        let all = self.shared.series.all();
        let mut changed = Vec::new();
        // Series whose id is in `seen` after this pass; when that is all of `seen`, nothing
        // went away.
        let mut matched = 0;
        for series in &all {
            let s = lock(series);
            let seq = s.latest_seq();
            match seen.get(s.id.as_str()) {
                Some(&old) if old == seq => {
                    matched += 1;
                    continue;
                }
                Some(_) => matched += 1,
                None if seq == 0 => continue,
                None => matched += 1,
            }
            if let Some(sample) = s.latest() {
                seen.insert(s.id.to_string(), seq);
                changed.push(sample);
            }
        }
        let mut gone = Vec::new();
        if matched == seen.len() {
            return (changed, gone);
        }
        let live: std::collections::HashSet<String> =
            all.iter().map(|s| lock(s).id.clone()).collect();
        seen.retain(|id, _| {
            let keep = live.contains(id.as_str());
            if !keep {
                gone.push(id.clone());
            }
            keep
        });
        (changed, gone)
    }
}
