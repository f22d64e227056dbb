//! Reload triggers other than the admin API: SIGHUP and a watch on the config file.

use std::{sync::Arc, time::Duration};

use notify::{RecursiveMode, Watcher};
use tokio::{sync::mpsc, task::JoinHandle};

use super::Live;

/// Editors write a file in several steps; events closer than this are one change.
const SETTLE: Duration = Duration::from_millis(200);
const MAX_SETTLE: Duration = Duration::from_secs(2);

/// Starts the SIGHUP handler and, when the config came from a file, the file
/// watch. Both run until aborted.
pub fn spawn_watchers(live: &Arc<Live>) -> Vec<JoinHandle<()>> {
    let (tx, rx) = mpsc::channel::<()>(1);
    let mut tasks = vec![spawn_reloader(Arc::clone(live), rx)];
    if let Some(task) = spawn_sighup(tx.clone()) {
        tasks.push(task);
    }
    if let Some(file) = live.file().cloned() {
        match watch_file(&file, tx) {
            Ok(task) => tasks.push(task),
            // Reload by SIGHUP or the admin API still works.
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "cannot watch the config file")
            }
        }
    }
    tasks
}

/// Runs reloads one after another, coalescing triggers that arrive meanwhile.
fn spawn_reloader(live: Arc<Live>, mut rx: mpsc::Receiver<()>) -> JoinHandle<()> {
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Wait for a quiet moment (bounded, so a busy directory cannot
            // postpone a reload forever).
            let latest = tokio::time::Instant::now() + MAX_SETTLE;
            loop {
                tokio::select! {
                    () = tokio::time::sleep(SETTLE) => break,
                    () = tokio::time::sleep_until(latest) => break,
                    more = rx.recv() => if more.is_none() { return },
                }
            }
            let live = Arc::clone(&live);
            // Reading and parsing the file is blocking work.
            let _ = tokio::task::spawn_blocking(move || live.reload()).await;
        }
    })
}

#[cfg(unix)]
fn spawn_sighup(tx: mpsc::Sender<()>) -> Option<JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP");
            return None;
        }
    };
    Some(tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the config");
            // A full channel already holds a pending reload.
            let _ = tx.try_send(());
        }
    }))
}

#[cfg(not(unix))]
fn spawn_sighup(_tx: mpsc::Sender<()>) -> Option<JoinHandle<()>> {
    None
}

/// Watches the file's directory, not the file: editors and config managers
/// often replace a file by renaming a new one over it, which ends a watch on
/// the old inode.
fn watch_file(file: &std::path::Path, tx: mpsc::Sender<()>) -> notify::Result<JoinHandle<()>> {
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."))
        .to_path_buf();
    let name = file.file_name().map(ToOwned::to_owned);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if event.kind.is_access() {
            return;
        }
        if event.paths.iter().any(|p| p.file_name() == name.as_deref()) {
            let _ = tx.try_send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(tokio::spawn(async move {
        // The watcher stops when dropped; this task owns it until aborted.
        let _watcher = watcher;
        std::future::pending::<()>().await;
    }))
}
