//! `POST /v1/backup`: a consistent copy of the node's embedded store, sent back as the answer.
//!
//! Owns: where the copy is staged (a hidden file in the data directory, removed before the
//! answer leaves), the bound on what one answer may carry ([`BACKUP_BYTES_MAX`]), the answer's
//! headers, and refusing the call on PostgreSQL (use `pg_dump`). Does not own: taking the copy
//! (`crate::store::embedded_backup`), or saving it (`picloud backup`, `crate::cli::backup`).
//!
//! The data directory rather than the system temp dir stages the copy because on a Pi `/tmp`
//! is often a RAM disk, and the data directory is known to be writable and on a disk. The copy
//! is read into one buffer of exactly its size, which the front end writes out: the database
//! is held once in memory, only during the call. The call runs on the control thread, so other
//! admin calls wait for it; the data plane and KV writes by scripts do not.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use picloud_core::ErrorCode;
use picloud_worker::http::Response;

use super::{Admin, AdminError, AdminResult};
use crate::store::embedded_backup::read_bounded;

/// The largest copy one answer carries: 256 MiB, a quarter of the RAM of the smallest board
/// we aim at. The catalog is normally a few MiB; KV data and invocation records make up the
/// rest. Above this, stop the node and copy `DATA_DIR/picloud.redb` (docs/reference.md).
pub const BACKUP_BYTES_MAX: u64 = 256 * 1024 * 1024;

/// Makes staging names unique within the process (the control thread runs one call at a time,
/// but a leftover from a crashed call must never be reused).
static SEQ: AtomicU64 = AtomicU64::new(0);

/// Removes the staged copy however the call ends.
struct Staged(PathBuf);

impl Drop for Staged {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            log::warn!("backup: cannot remove {}: {e}", self.0.display());
        }
    }
}

impl Admin {
    /// `POST /v1/backup`.
    pub(super) fn backup(&self) -> AdminResult {
        let Some(store) = &self.backup else {
            return Err(AdminError::new(
                ErrorCode::Conflict,
                "this node's store is PostgreSQL: back it up with pg_dump \
                 (POST /v1/backup copies the embedded store only)",
            ));
        };
        let dir = store
            .path()
            .parent()
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        let staged = Staged(dir.join(format!(
            ".backup-{}-{}.redb",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        )));
        let info = store.backup_to(&staged.0)?;
        let body = read_bounded(&staged.0, BACKUP_BYTES_MAX).map_err(|(len, e)| {
            if len > BACKUP_BYTES_MAX {
                AdminError::new(
                    ErrorCode::TooLarge,
                    format!(
                        "the copy is {len} bytes, more than the {BACKUP_BYTES_MAX} one answer \
                         carries; stop the node and copy its picloud.redb instead"
                    ),
                )
            } else {
                AdminError::new(
                    ErrorCode::Internal,
                    format!("reading the copy {}: {e}", staged.0.display()),
                )
            }
        })?;
        drop(staged);
        log::info!(
            "backup: {} bytes at revision {} (schema {})",
            body.len(),
            info.revision,
            info.schema_version
        );
        let mut resp = Response::new(200, "application/octet-stream", body);
        resp.headers.push((
            "content-disposition".into(),
            format!("attachment; filename=\"picloud-{}.redb\"", info.revision),
        ));
        resp.headers
            .push(("x-picloud-revision".into(), info.revision.to_string()));
        resp.headers.push((
            "x-picloud-schema-version".into(),
            info.schema_version.to_string(),
        ));
        Ok(resp)
    }
}
