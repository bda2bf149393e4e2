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
    log: VecDeque<Event>,
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
        g.log.push_back(ev.clone());
        // Send under the lock so subscribers see events in sequence order.
        let _ = self.tx.send(ev);
        seq
    }

    /// Events with `seq > since`, oldest first.
    pub fn since(&self, since: Option<u64>) -> Vec<Event> {
        let after = since.unwrap_or(0);
        lock(&self.inner)
            .log
            .iter()
            .filter(|e| e.seq > after)
            .cloned()
            .collect()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}
