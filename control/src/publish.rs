//! Turning the store's state into the data plane's catalog.
//!
//! Owns: [`Publisher`], which keeps the last [`Snapshot`] it published, brings it up to the
//! store's revision with [`Store::changes_since`] (only changed apps are read), builds an
//! immutable [`Catalog`] from it and swaps that into the worker's live slot. Called at start,
//! by the control thread after every admin write (so the node that took a change serves it
//! when the call returns), and by the sync daemon when another node's change is announced.
//! Calls are serialised by a lock, so catalogs go live in revision order and never backwards.
//!
//! Does not own: the swap mechanism itself (the worker's `Live`) or compiling scripts (the
//! worker's AST cache compiles on first use, or when the admin API warms it at save; a
//! rebuilt catalog reuses every compiled script whose hash did not change).

use std::sync::Arc;

use parking_lot::Mutex;
use picloud_core::{Catalog, Limits, Snapshot, Store, StoreError};
use picloud_worker::dispatch::Live;

/// Builds catalogs from the store and publishes them.
pub struct Publisher {
    store: Arc<dyn Store>,
    live: Live,
    limits: Limits,
    /// What the live catalog was built from.
    published: Mutex<Snapshot>,
    /// Told (without blocking) after every swap: the scheduler, whose schedules may have
    /// changed.
    watchers: Mutex<Vec<crossbeam_channel::Sender<()>>>,
}

impl Publisher {
    /// A publisher feeding `live` from `store`, with the node's limits.
    pub fn new(store: Arc<dyn Store>, live: Live, limits: Limits) -> Publisher {
        Publisher {
            store,
            live,
            limits,
            published: Mutex::new(Snapshot {
                revision: 0,
                apps: Vec::new(),
            }),
            watchers: Mutex::new(Vec::new()),
        }
    }

    /// Sends `()` on `tx` after every catalog swap (dropped when the channel is full: one
    /// pending wake-up is enough).
    pub fn watch(&self, tx: crossbeam_channel::Sender<()>) {
        self.watchers.lock().push(tx);
    }

    /// Catches up with the store: reads what changed since the published revision and, if
    /// anything did, swaps in a new catalog. Returns the live revision. Stale or repeated
    /// calls are harmless (nothing newer → nothing done).
    pub fn publish(&self) -> Result<u64, StoreError> {
        self.publish_up_to(u64::MAX)
    }

    /// [`Publisher::publish`], unless the published catalog is already at `revision` or later
    /// once the lock is held: the sync thread, woken by the notification of this node's own
    /// admin write, then waits for the control thread's publish and reads nothing itself.
    pub fn publish_up_to(&self, revision: u64) -> Result<u64, StoreError> {
        let mut published = self.published.lock();
        if published.revision >= revision {
            return Ok(published.revision);
        }
        let delta = self.store.changes_since(published.revision)?;
        // Apps whose stored state differs from what is live: a deploy, a script or table
        // change, a config write (an unquarantine is one) lifts the app's quarantine on this
        // node. Compared by content, because the embedded store answers every delta with all
        // apps; `published.apps` is sorted by name.
        let changed: Vec<String>;
        if delta.revision < published.revision {
            // The store went back in time (a database restored from a backup): what it has
            // now is the truth, so start over from it.
            log::warn!(
                "store revision went back from {} to {}; reloading everything",
                published.revision,
                delta.revision
            );
            *published = self.store.snapshot()?;
            changed = published.apps.iter().map(|a| a.app.name.clone()).collect();
        } else if delta.revision == published.revision {
            return Ok(published.revision);
        } else {
            changed = delta
                .changed
                .iter()
                .filter(|a| {
                    published
                        .apps
                        .binary_search_by(|o| o.app.name.as_str().cmp(a.app.name.as_str()))
                        .map_or(true, |i| published.apps[i] != **a)
                })
                .map(|a| a.app.name.clone())
                .collect();
            published.apply(delta);
        }
        let (catalog, warnings) = Catalog::build(&published, &self.limits);
        for w in warnings {
            log::warn!("catalog revision {}: {w}", published.revision);
        }
        log::info!(
            "catalog revision {} published ({} apps)",
            catalog.revision,
            catalog.app_count()
        );
        let revision = catalog.revision;
        self.live.swap(catalog);
        for app in self
            .live
            .lift_quarantines(changed.iter().map(String::as_str))
        {
            log::info!("app {app}: quarantine lifted on this node by a change of the app");
        }
        for w in self.watchers.lock().iter() {
            let _ = w.try_send(());
        }
        Ok(revision)
    }

    /// The live catalog (and its per-app stats).
    pub fn live(&self) -> &Live {
        &self.live
    }

    /// The live catalog's revision.
    pub fn revision(&self) -> u64 {
        self.live.current().revision
    }
}
