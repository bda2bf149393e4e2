//! The one task that follows Docker's event stream for the whole agent (not one per container).
//!
//! It connects (lazily, through the manager), subscribes to container events, and hands each
//! one to the core; when the stream breaks it says so and reconnects with a backoff. A
//! reconnect asks the engine to replay events since the last one seen, so a short outage loses
//! nothing; the core also re-inspects its containers on every (re)connect for anything older.

use super::ContainerManager;
use futures::StreamExt;
use nodeagent_drivers::docker::ContainerEvent;
use std::time::Duration;

/// What the watcher tells the core.
#[derive(Debug, Clone)]
pub enum WatchMsg {
    /// The engine answers; events follow from here. Sent on the first connect and on every
    /// reconnect.
    Connected {
        socket: String,
        server_version: String,
        api_version: String,
    },
    /// The engine is gone (or never came). Sent once per outage, not once per retry.
    Disconnected {
        message: String,
    },
    Event(ContainerEvent),
}

const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Starts the watcher. `since_nanos` (Unix time) is where the first subscription starts, so
/// nothing between the agent's start and the subscription is missed. `notify` returns false
/// once nobody listens any more, which ends the task.
pub fn watch(
    mgr: ContainerManager,
    since_nanos: i64,
    notify: impl Fn(WatchMsg) -> bool + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // The instant of the last event passed on, and the events seen at that instant.
        let mut last_time = since_nanos;
        let mut seen_at_last: Vec<(String, String)> = Vec::new();
        let mut backoff = MIN_BACKOFF;
        let mut down_reported = false;
        loop {
            let down = match mgr.client().await {
                Err(e) => e.message,
                Ok(d) => match d.ping().await {
                    Err(e) => e.to_string(),
                    Ok(()) => {
                        down_reported = false;
                        backoff = MIN_BACKOFF;
                        let up = WatchMsg::Connected {
                            socket: d.socket().to_string(),
                            server_version: d.server_version().to_string(),
                            api_version: d.api_version().to_string(),
                        };
                        if !notify(up) {
                            return;
                        }
                        let mut events = d.events(Some(last_time));
                        let why = loop {
                            match events.next().await {
                                Some(Ok(ev)) => {
                                    // The replay starts at the last event's instant, which
                                    // brings the events of that instant again.
                                    let key = (ev.id.clone(), ev.action.clone());
                                    if ev.time_nano < last_time
                                        || (ev.time_nano == last_time
                                            && seen_at_last.contains(&key))
                                    {
                                        continue;
                                    }
                                    if ev.time_nano > last_time {
                                        last_time = ev.time_nano;
                                        seen_at_last.clear();
                                    }
                                    seen_at_last.push(key);
                                    if !notify(WatchMsg::Event(ev)) {
                                        return;
                                    }
                                }
                                Some(Err(e)) => break e.to_string(),
                                None => break "the event stream ended".to_string(),
                            }
                        };
                        tracing::debug!(reason = %why, "docker event stream broke; reconnecting");
                        why
                    }
                },
            };
            if !down_reported {
                down_reported = true;
                if !notify(WatchMsg::Disconnected { message: down }) {
                    return;
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    })
}
