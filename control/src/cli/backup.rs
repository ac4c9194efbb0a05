//! `picloud backup FILE` and `picloud restore FILE --data-dir DIR [--force]`.
//!
//! Owns: saving the node's `POST /v1/backup` answer to FILE atomically (FILE.tmp, fsync,
//! rename), checking what arrived is a PiCloud store before it replaces FILE, and the offline
//! restore's command line. Does not own: taking the copy (the node, `crate::admin`), or the
//! file steps of a restore (`crate::store::embedded_backup::restore`).

use std::path::Path;
use std::time::Duration;

use super::ClientOpts;
use super::client::{self, CliError, Client};
use super::output;
use crate::store::embedded_backup::{self, BackupInfo};

/// A backup call may carry up to `BACKUP_BYTES_MAX` (256 MiB), over an SSH tunnel from a
/// small board: far longer than an ordinary call may take.
const BACKUP_TIMEOUT: Duration = Duration::from_secs(30 * 60);

fn describe(info: &BackupInfo) -> String {
    format!(
        "{} bytes, revision {}, schema version {}",
        info.bytes, info.revision, info.schema_version
    )
}

/// `picloud backup FILE`.
pub fn backup(opts: &ClientOpts, file: &Path) -> Result<(), CliError> {
    let client = client::resolve_target(opts.url.clone(), opts.token.clone(), &|_| None)
        .map(|t| Client::with_timeout(t, BACKUP_TIMEOUT))
        .map_err(CliError::Usage)?;
    let mut tmp_name = file.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = std::path::PathBuf::from(&tmp_name);
    let mut refused = None;
    // The answer streams into FILE.tmp; FILE is replaced only once the copy is complete, on
    // disk, and checked.
    let written = embedded_backup::write_atomically(file, |f| {
        let (n, _) = match client.download("POST", "/v1/backup", f) {
            Ok(v) => v,
            Err(e) => {
                refused = Some(e);
                return Err(std::io::Error::other("backup call failed"));
            }
        };
        f.sync_all()?;
        if let Err(e) = embedded_backup::inspect_backup(&tmp) {
            return Err(std::io::Error::other(e.to_string()));
        }
        Ok(n)
    });
    if let Some(e) = refused {
        return Err(e);
    }
    written.map_err(|e| CliError::Local(format!("{}: {e}", file.display())))?;
    let info = embedded_backup::inspect_backup(file)
        .map_err(|e| CliError::Local(format!("{}: {e}", file.display())))?;
    output::eprint_line(&format!("saved {} ({})", file.display(), describe(&info)));
    Ok(())
}

/// `picloud restore FILE --data-dir DIR [--force]`.
pub fn restore(file: &Path, dir: &Path, force: bool) -> Result<(), CliError> {
    let info =
        embedded_backup::restore(file, dir, force).map_err(|e| CliError::Local(e.to_string()))?;
    output::eprint_line(&format!(
        "restored {} into {} ({}); start the node on it",
        file.display(),
        dir.display(),
        describe(&info)
    ));
    Ok(())
}
