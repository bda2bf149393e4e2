//! The event log: bounded in memory, numbered in order, with a live feed.

use crate::series::lock;
use nodeagent_types::{Event, EventKind, Timestamp};
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::broadcast;

#[derive(Debug)]
pub struct EventLog {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Event>,
}

#[derive(Debug)]
struct Inner {
    cap: usize,
    next_seq: u64,
    log: VecDeque<Stored>,
}

/// An event as the log keeps it: its JSON. An `Event` with its strings and a `data` map took
/// about 1 KB of heap, and the log keeps up to 10,000 (10 MB, the largest item after the
/// objects themselves at 10,000 objects); the JSON takes about a quarter. Reads (`since`) parse
/// back the few events a caller asks for.
#[derive(Debug)]
struct Stored {
    seq: u64,
    json: Box<str>,
}

impl Stored {
    fn new(ev: &Event) -> Stored {
        Stored {
            seq: ev.seq,
            // Serializing an Event (strings, numbers, a JSON value) cannot fail.
            json: serde_json::to_string(ev)
                .unwrap_or_default()
                .into_boxed_str(),
        }
    }

    fn event(&self) -> Option<Event> {
        serde_json::from_str(&self.json).ok()
    }
}

impl EventLog {
    pub fn new(cap: usize) -> EventLog {
        let (tx, _) = broadcast::channel(1024);
        EventLog {
            inner: Mutex::new(Inner {
                cap: cap.max(1),
                next_seq: 1,
                log: VecDeque::new(),
            }),
            tx,
        }
    }

    /// Puts back the events of an earlier run (oldest first) and continues numbering after
    /// `last_seq`, so that sequence numbers stay monotonic across restarts. Not broadcast.
    pub fn restore(&self, events: Vec<Event>, last_seq: u64) {
        let mut g = lock(&self.inner);
        let last = events.last().map_or(0, |e| e.seq).max(last_seq);
        g.next_seq = g.next_seq.max(last + 1);
        let mut log: VecDeque<Stored> = events.iter().map(Stored::new).collect();
        while log.len() > g.cap {
            log.pop_front();
        }
        log.extend(std::mem::take(&mut g.log));
        g.log = log;
    }

    /// The sequence number the next event will get.
    pub fn next_seq(&self) -> u64 {
        lock(&self.inner).next_seq
    }

    /// Appends an event and returns its sequence number.
    pub fn emit(
        &self,
        kind: EventKind,
        object: Option<(&str, &str)>,
        message: impl Into<String>,
        data: serde_json::Value,
    ) -> u64 {
        let mut g = lock(&self.inner);
        let seq = g.next_seq;
        g.next_seq += 1;
        let ev = Event {
            seq,
            ts: Timestamp::now(),
            kind,
            object_id: object.map(|o| o.0.to_string()),
            name: object.map(|o| o.1.to_string()),
            message: message.into(),
            data,
        };
        if g.log.len() >= g.cap {
            g.log.pop_front();
        }
        g.log.push_back(Stored::new(&ev));
        // Send under the lock so subscribers see events in sequence order.
        let _ = self.tx.send(ev);
        seq
    }

    /// Events with `seq > since`, oldest first.
    pub fn since(&self, since: Option<u64>) -> Vec<Event> {
        let after = since.unwrap_or(0);
        let inner = lock(&self.inner);
        // The log is in seq order: a binary search, not a scan. The store asks for the events
        // after its last write on every turn of the loop, and the log holds up to 10,000.
        let start = inner.log.partition_point(|e| e.seq <= after);
        inner.log.range(start..).filter_map(Stored::event).collect()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}
