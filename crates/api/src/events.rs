//! The live event feed behind `GET /v1/events` (SSE) and the gRPC `Watch`: the backlog from the
//! event log, then live events, without gaps or duplicates, until the server shuts down.

use crate::core::Core;
use futures::Stream;
use nodeagent_types::Event;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::{broadcast, watch};

/// Tells long-lived responses (event streams) that the server is shutting down, so that graceful
/// shutdown, which waits for every open connection, is not held up by a client that never hangs
/// up.
#[derive(Clone, Debug)]
pub(crate) struct Stop(watch::Receiver<bool>);

impl Stop {
    /// The receiving end of a server's stop channel: it fires when the server sends `true`.
    pub(crate) fn new(receiver: watch::Receiver<bool>) -> Stop {
        Stop(receiver)
    }

    /// A signal that never fires, for a router served by someone else's loop.
    pub(crate) fn never() -> Stop {
        let (_tx, rx) = watch::channel(false);
        Stop(rx)
    }

    /// Resolves once the server is stopping; never if the sender went away without saying so.
    pub(crate) async fn stopped(&mut self) {
        loop {
            if *self.0.borrow_and_update() {
                return;
            }
            if self.0.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

struct Feed {
    core: Arc<dyn Core>,
    rx: broadcast::Receiver<Event>,
    queue: VecDeque<Event>,
    /// Sequence number of the last event handed out; later events only.
    last: Option<u64>,
    stop: Stop,
}

/// Events after `since` (all of the log when `None`), oldest first, then live ones.
///
/// The subscription is taken before the backlog is read, so an event that lands in between shows
/// up in both and is dropped the second time by its sequence number. When the subscriber falls
/// behind the broadcast buffer, the missed events are read back from the log rather than lost.
pub(crate) fn feed(
    core: Arc<dyn Core>,
    since: Option<u64>,
    stop: Stop,
) -> impl Stream<Item = Event> + Send + 'static {
    let rx = core.subscribe();
    let queue: VecDeque<Event> = core.events(since).into();
    let state = Feed {
        core,
        rx,
        queue,
        last: since,
        stop,
    };
    futures::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(e) = s.queue.pop_front() {
                if s.last.is_some_and(|l| e.seq <= l) {
                    continue;
                }
                s.last = Some(e.seq);
                return Some((e, s));
            }
            let mut stop = s.stop.clone();
            tokio::select! {
                _ = stop.stopped() => return None,
                r = s.rx.recv() => match r {
                    Ok(e) => s.queue.push_back(e),
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let missed = s.core.events(s.last);
                        s.queue.extend(missed);
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            }
        }
    })
}
