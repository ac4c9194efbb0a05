//! Turning the store's state into the data plane's catalog.
//!
//! Owns: [`Publisher`], which reads a consistent [`picloud_core::Snapshot`], builds an
//! immutable [`Catalog`] and swaps it into the worker's live slot. Called at start and after
//! every change (and, with PostgreSQL, by the sync daemon). Does not own: the swap mechanism
//! itself (the worker's `Live`) or compiling scripts (the worker's AST cache compiles on first
//! use, or when the admin API warms it at save).

use std::sync::Arc;

use picloud_core::{Catalog, Limits, Store, StoreError};
use picloud_worker::dispatch::Live;

/// Builds catalogs from the store and publishes them.
pub struct Publisher {
    store: Arc<dyn Store>,
    live: Live,
    limits: Limits,
}

impl Publisher {
    /// A publisher feeding `live` from `store`, with the node's limits.
    pub fn new(store: Arc<dyn Store>, live: Live, limits: Limits) -> Publisher {
        Publisher {
            store,
            live,
            limits,
        }
    }

    /// Reads everything and swaps in a new catalog unless the live one is already at (or past)
    /// that revision. Returns the live revision.
    pub fn publish(&self) -> Result<u64, StoreError> {
        let snapshot = self.store.snapshot()?;
        let current = self.live.current().revision;
        if snapshot.revision <= current && current != 0 {
            return Ok(current);
        }
        let (catalog, warnings) = Catalog::build(&snapshot, &self.limits);
        for w in warnings {
            log::warn!("catalog revision {}: {w}", snapshot.revision);
        }
        log::info!(
            "catalog revision {} published ({} apps)",
            catalog.revision,
            catalog.app_count()
        );
        let revision = catalog.revision;
        self.live.swap(catalog);
        Ok(revision)
    }

    /// The live catalog's revision.
    pub fn revision(&self) -> u64 {
        self.live.current().revision
    }
}
