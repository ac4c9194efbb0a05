//! The file watcher of `picloud dev`: the kernel's change notifications for one app folder,
//! reduced to "a file of the app was saved".
//!
//! Owns: the `notify` watcher (inotify on Linux) on the folder, not recursive, and the filter
//! that decides which events are saves: a create, a data write, a rename or a delete of
//! `picloud.toml`, `.env` or a `*.rhai` file. Everything else is dropped on notify's own
//! thread, in particular the `OPEN`/`ACCESS` events that reading the folder for a deploy
//! causes (inotify reports them too; passing them on would redeploy forever) and editors'
//! swap and backup files.
//! Does not own: debouncing and deploying (`dev.rs`, which waits on the channel this fills).
//!
//! Threads: notify runs one thread per watcher, blocked in `epoll_wait` with no timeout on the
//! inotify descriptor; it wakes only when the kernel reports an event in the folder. Dropping
//! the [`Watcher`] tells it to stop (`dev.rs` drops it before stopping the node). Signals are
//! blocked before it starts, so it inherits the mask and never takes SIGINT/SIGTERM.

use std::path::Path;

use crossbeam_channel::{Sender, TrySendError};
use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};

/// A running watcher; dropping it stops notify's thread.
pub struct Watcher {
    _inner: RecommendedWatcher,
}

/// Watches `dir` and puts one `()` into `saves` per save. `saves` should hold one message: a
/// full channel already says "something changed", so a burst of events costs one wake-up of
/// the receiver, not one per event.
pub fn start(dir: &Path, saves: Sender<()>) -> notify::Result<Watcher> {
    let mut inner = notify::recommended_watcher(move |event: notify::Result<Event>| match event {
        Ok(event) if is_save(&event) => match saves.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) | Err(TrySendError::Disconnected(())) => {}
        },
        Ok(_) => {}
        // An overflowed inotify queue or a vanished folder: say so, and still ask for a
        // deploy, which reports a missing folder itself.
        Err(e) => {
            log::warn!("watching the app folder: {e}");
            let _ = saves.try_send(());
        }
    })?;
    inner.watch(dir, RecursiveMode::NonRecursive)?;
    Ok(Watcher { _inner: inner })
}

/// Whether `event` is a change to a file of the app (see the module doc).
pub fn is_save(event: &Event) -> bool {
    let changes_content = match event.kind {
        EventKind::Create(_) | EventKind::Remove(_) => true,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_) => true,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        _ => false,
    };
    changes_content && event.paths.iter().any(|p| is_app_file(p))
}

/// `picloud.toml`, `.env` or `NAME.rhai`: what `picloud dev` deploys.
pub fn is_app_file(path: &Path) -> bool {
    match path.file_name().and_then(|n| n.to_str()) {
        Some("picloud.toml" | ".env") => true,
        Some(name) => name.ends_with(".rhai") && name.len() > ".rhai".len(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, MetadataKind};
    use std::path::PathBuf;

    fn event(kind: EventKind, file: &str) -> Event {
        Event::new(kind).add_path(PathBuf::from("/app").join(file))
    }

    #[test]
    fn saves_of_app_files_count() {
        for (kind, file) in [
            (
                EventKind::Modify(ModifyKind::Data(DataChange::Any)),
                "hello.rhai",
            ),
            (
                EventKind::Access(AccessKind::Close(AccessMode::Write)),
                "picloud.toml",
            ),
            (EventKind::Create(CreateKind::File), ".env"),
            (
                EventKind::Remove(notify::event::RemoveKind::File),
                "old.rhai",
            ),
            (
                EventKind::Modify(ModifyKind::Name(notify::event::RenameMode::To)),
                "hello.rhai",
            ),
        ] {
            assert!(is_save(&event(kind, file)), "{kind:?} {file}");
        }
    }

    #[test]
    fn reads_metadata_and_other_files_do_not() {
        for (kind, file) in [
            (
                EventKind::Access(AccessKind::Open(AccessMode::Any)),
                "hello.rhai",
            ),
            (
                EventKind::Access(AccessKind::Close(AccessMode::Read)),
                "picloud.toml",
            ),
            (
                EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any)),
                "hello.rhai",
            ),
            (
                EventKind::Modify(ModifyKind::Data(DataChange::Any)),
                ".hello.rhai.swp",
            ),
            (
                EventKind::Modify(ModifyKind::Data(DataChange::Any)),
                "hello.rhai~",
            ),
            (EventKind::Create(CreateKind::File), "4913"),
            (
                EventKind::Modify(ModifyKind::Data(DataChange::Any)),
                ".rhai",
            ),
        ] {
            assert!(!is_save(&event(kind, file)), "{kind:?} {file}");
        }
    }
}
