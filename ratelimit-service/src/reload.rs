//! Config hot reload. The files are re-read on a short timer and compared byte for byte: unlike
//! inotify this also sees Kubernetes' ConfigMap symlink swaps and edits over network mounts,
//! and config files are small. An invalid new config is logged with the same message as
//! `validate` and the config in force stays.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{ConfigError, Loaded, Snapshot, compile, read_snapshot};
use crate::service::State;
use crate::store::Store;

/// Loads `path` into `state`; returns what was loaded or why not.
pub fn apply<S: Store>(
    state: &State<S>,
    snapshot: &Result<Snapshot, ConfigError>,
) -> Result<(), ConfigError> {
    let loaded: Result<Loaded, ConfigError> = match snapshot {
        Ok(s) => compile(s),
        Err(e) => Err(e.clone()),
    };
    match loaded {
        Ok(l) => {
            for w in &l.warnings {
                tracing::warn!("{w}");
            }
            let domains: Vec<&String> = l.config.domains.keys().collect();
            tracing::info!(files = ?l.files, domains = ?domains, "rate-limit config loaded");
            state.config.store(Some(Arc::new(l.config)));
            state
                .metrics
                .config_reloads
                .with_label_values(&["success"])
                .inc();
            state.metrics.config_loaded.set(1);
            Ok(())
        }
        Err(e) => {
            let kept = state.config.load().is_some();
            tracing::error!(error = %e, keeping_previous = kept, "rate-limit config rejected");
            state
                .metrics
                .config_reloads
                .with_label_values(&["failure"])
                .inc();
            Err(e)
        }
    }
}

/// Loads the config now, then watches it every `every`.
pub fn start<S: Store>(state: Arc<State<S>>, path: PathBuf, every: Duration) {
    let mut last = read_snapshot(&path);
    let _ = apply(&state, &last);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            let now = read_snapshot(&path);
            if !same(&now, &last) {
                let _ = apply(&state, &now);
                last = now;
            }
        }
    });
}

fn same(a: &Result<Snapshot, ConfigError>, b: &Result<Snapshot, ConfigError>) -> bool {
    match (a, b) {
        (Ok(a), Ok(b)) => a == b,
        (Err(a), Err(b)) => a == b,
        _ => false,
    }
}
