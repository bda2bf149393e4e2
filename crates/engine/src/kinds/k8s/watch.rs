//! The `k8s` kind's one watch task: one kube-rs watcher per kind of resource in use (per
//! cluster), not one per object, all multiplexed in this task. Each watcher selects the
//! resources that carry the agent's id label, so it sees only what the agent applied.
//!
//! The driver asks for a kind to be watched when an object first uses it; the task reports
//! what it sees through the core's loop, where the driver turns it into state.

use super::apply::Ref;
use super::cluster::Cluster;
use futures::stream::{SelectAll, StreamExt};
use kube::api::DynamicObject;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt as _;
use nodeagent_types::K8S_LABEL_ID;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;

/// A kind of resource in one cluster: what one watcher follows.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WatchKey {
    pub cluster: String,
    pub group: String,
    pub plural: String,
}

impl WatchKey {
    pub fn of(cluster: &str, r: &Ref) -> WatchKey {
        WatchKey {
            cluster: cluster.to_string(),
            group: r.group.clone(),
            plural: r.plural.clone(),
        }
    }
}

/// Start following a kind (the ref gives its API resource).
pub struct Follow {
    pub key: WatchKey,
    pub cluster: Arc<Cluster>,
    pub kind: Ref,
}

/// What the watch task reports.
pub enum WatchMsg {
    /// A resource with the id label, as it is now.
    Seen {
        key: WatchKey,
        obj: Box<DynamicObject>,
    },
    /// One was deleted.
    Deleted {
        key: WatchKey,
        obj: Box<DynamicObject>,
    },
    /// The watcher (re)lists: what it lists until [`WatchMsg::Listed`] is all there is.
    Listing {
        key: WatchKey,
    },
    Listed {
        key: WatchKey,
    },
    /// The watcher failed (it retries with backoff).
    Failed {
        key: WatchKey,
        message: String,
    },
}

type Events = Pin<Box<dyn futures::Stream<Item = WatchMsg> + Send>>;

/// Runs the task: `follow` adds watchers; `notify` returns false once the core is gone.
pub fn spawn(
    mut follow: mpsc::UnboundedReceiver<Follow>,
    notify: impl Fn(WatchMsg) -> bool + Send + Sync + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut streams: SelectAll<Events> = SelectAll::new();
        loop {
            tokio::select! {
                f = follow.recv() => match f {
                    Some(f) => match f.cluster.client().await {
                        // Across namespaces: the kind's resources of every object.
                        Ok(client) => streams.push(stream(
                            f.key,
                            kube::Api::all_with(client, &f.kind.api_resource()),
                        )),
                        Err(e) => {
                            if !notify(WatchMsg::Failed { key: f.key, message: e.message }) {
                                return;
                            }
                        }
                    },
                    None => return,
                },
                Some(m) = streams.next(), if !streams.is_empty() => {
                    if !notify(m) {
                        return;
                    }
                }
            }
        }
    })
}

fn stream(key: WatchKey, api: kube::Api<DynamicObject>) -> Events {
    let cfg = watcher::Config::default().labels(K8S_LABEL_ID);
    Box::pin(
        watcher::watcher(api, cfg)
            .default_backoff()
            .map(move |ev| match ev {
                Ok(Event::Apply(o)) | Ok(Event::InitApply(o)) => WatchMsg::Seen {
                    key: key.clone(),
                    obj: Box::new(o),
                },
                Ok(Event::Delete(o)) => WatchMsg::Deleted {
                    key: key.clone(),
                    obj: Box::new(o),
                },
                Ok(Event::Init) => WatchMsg::Listing { key: key.clone() },
                Ok(Event::InitDone) => WatchMsg::Listed { key: key.clone() },
                Err(e) => WatchMsg::Failed {
                    key: key.clone(),
                    message: e.to_string(),
                },
            }),
    )
}
