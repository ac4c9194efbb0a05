//! How much one node (or cluster) and one app may hold: apps, scripts per app, rows of each
//! app table (routes, schedules, triggers) and variables per app, each a `Limits` knob
//! (`apps_max`, `app_scripts_max`, `app_table_rows_max`, `app_env_max`).
//!
//! Owns: the checks and their errors: a table longer than the bound is the request's fault
//! (400 `invalid_input`); a create that would pass a count is a conflict with what is stored
//! (409 `conflict`, naming the knob). Does not own: the counting (the store's reads).
//!
//! The counts are read by the admin API before the write, outside the store's transaction: two
//! creates racing on different nodes of a cluster can both pass and leave one item over the
//! bound. That keeps the stores' write paths as they are; the bounds are against exhaustion,
//! not an exact quota.

use picloud_core::ErrorCode;

use super::AdminError;

/// 400 if a table has more rows than `max`.
pub(super) fn table_rows(what: &str, rows: usize, max: usize) -> Result<(), AdminError> {
    if rows > max {
        return Err(AdminError::invalid(format!(
            "{rows} {what} is more than PICLOUD_APP_TABLE_ROWS_MAX ({max})"
        )));
    }
    Ok(())
}

/// 409 if adding `new` items to `have` would pass `max`.
pub(super) fn count(
    what: &str,
    have: usize,
    new: usize,
    max: usize,
    knob: &str,
) -> Result<(), AdminError> {
    if new > 0 && have + new > max {
        return Err(AdminError::new(
            ErrorCode::Conflict,
            format!("{what}: {have} exist and {new} more would pass {knob} ({max})"),
        ));
    }
    Ok(())
}
