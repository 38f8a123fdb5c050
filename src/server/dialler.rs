//! The dialler: takes due callback requests from the store (best first, no
//! more per queue than its pacing allows, none while its queue is closed)
//! and hands each to the SIP listener, which places the call through the
//! trunk. It wakes when a request is stored or an attempt settles, so a
//! free queue's callback is dialled within milliseconds of the caller's
//! confirmation, and polls besides, for requests whose time comes.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};

use super::callbacks::QueueLimit;
use super::config::ServerConfig;
use super::runtime::Runtime;
use super::{wall_now, Control, Shared, ToListener};

/// At most this many requests per claim: a backlog after an outage is
/// dialled in steps, each followed by a look at what settled meanwhile.
const CLAIM_BATCH: usize = 50;

/// Runs until the server drains. `listener` is the SIP listener that
/// places the calls.
pub(super) async fn run(
    shared: Arc<Shared>,
    workers: Vec<mpsc::Sender<ToListener>>,
    mut control: watch::Receiver<Control>,
) {
    let mut next = 0usize;
    if shared.config.trunk.is_none() {
        tracing::warn!("no trunk configured: callback requests are stored but not dialled");
        return;
    }
    let changed = shared.callbacks.changed();
    let poll = shared
        .config
        .dialler
        .poll
        .0
        .max(std::time::Duration::from_millis(10));
    loop {
        if *control.borrow() != Control::Running {
            tracing::info!("dialler stopped for the drain");
            return;
        }
        let now = wall_now();
        let limit = queue_limit(Arc::clone(&shared), shared.runtime(), now, super::now());
        match shared.callbacks.claim(now, limit, CLAIM_BATCH).await {
            Ok(claimed) => {
                for callback in claimed {
                    // Spread over the workers, one after another.
                    let Some(worker) = workers.get(next % workers.len().max(1)) else {
                        return;
                    };
                    next = next.wrapping_add(1);
                    if worker
                        .send(ToListener::Dial(Box::new(callback)))
                        .await
                        .is_err()
                    {
                        // The listener is gone; the claim is undone by the
                        // recovery at the next start.
                        return;
                    }
                }
            }
            Err(e) => tracing::error!("dialler: {e}"),
        }
        tokio::select! {
            _ = changed.notified() => {}
            _ = tokio::time::sleep(poll) => {}
            changed = control.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

/// Each queue's pacing: its configured limit, or 0 while its hours say it is
/// closed or its callback flow is not loaded (the request then waits,
/// instead of failing, for an opening or a fixed configuration).
fn queue_limit(
    shared: Arc<Shared>,
    runtime: Arc<Runtime>,
    now: DateTime<Utc>,
    at: std::time::Instant,
) -> QueueLimit {
    Box::new(move |queue: &str| {
        let limit = limit_for(&shared.config, &runtime, now, queue);
        // The ACD's own word on what it can take, while it is fresh.
        match shared.waits.callback_capacity(queue, at) {
            Some(capacity) => limit.min(capacity),
            None => limit,
        }
    })
}

fn limit_for(config: &ServerConfig, runtime: &Runtime, now: DateTime<Utc>, queue: &str) -> usize {
    let flow = config.callback_flow_for(queue);
    if runtime.entry(flow).is_none() {
        warn_once(queue, format!("callback flow `{flow}` is not loaded"));
        return 0;
    }
    if !runtime.transfers_to(flow, queue) {
        warn_once(
            queue,
            format!("callback flow `{flow}` has no transfer to this queue"),
        );
        return 0;
    }
    match runtime.queue_hours(queue, flow) {
        Some(hours) if !hours.is_open(now) => 0,
        _ => config.max_in_progress(queue),
    }
}

/// Says once per queue (per process) why its callbacks wait: the limit is
/// asked for at every claim, and the log must not fill with the same line.
fn warn_once(queue: &str, why: String) {
    static WARNED: std::sync::Mutex<std::collections::BTreeSet<String>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut warned = WARNED.lock().unwrap_or_else(|p| p.into_inner());
    if warned.insert(queue.to_string()) {
        tracing::warn!(queue, "callbacks of this queue wait: {why}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::config::QueueConfig;
    use std::path::Path;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn a_queue_is_paced_by_its_limit_and_not_dialled_while_closed() {
        let runtime = Runtime::load(Path::new("flows"), Path::new("prompts")).unwrap();
        let mut config = ServerConfig::default();
        config.queues.insert(
            "general".into(),
            QueueConfig {
                callback_flow: None,
                max_in_progress: Some(4),
            },
        );
        config.queues.insert(
            "billing".into(),
            QueueConfig {
                callback_flow: Some("missing".into()),
                max_in_progress: None,
            },
        );
        // flows/callback.yaml keeps `general` to the Riga office hours.
        let monday_10_riga = at("2026-11-23T10:00:00+02:00");
        let monday_21_riga = at("2026-11-23T21:00:00+02:00");
        let christmas = at("2026-12-25T10:00:00+02:00");
        assert_eq!(limit_for(&config, &runtime, monday_10_riga, "general"), 4);
        assert_eq!(limit_for(&config, &runtime, monday_21_riga, "general"), 0);
        assert_eq!(limit_for(&config, &runtime, christmas, "general"), 0);
        // The shipped callback flow only transfers to `general`.
        assert_eq!(
            limit_for(&config, &runtime, monday_10_riga, "tech"),
            0,
            "a callback flow that cannot reach the queue is not used"
        );
        // A callback flow without hours for its queue: the default pacing.
        let plain = Runtime::load(Path::new("tests/sipp/flows"), Path::new("prompts")).unwrap();
        assert_eq!(limit_for(&config, &plain, monday_21_riga, "support"), 2);
        assert_eq!(
            limit_for(&config, &runtime, monday_10_riga, "billing"),
            0,
            "its callback flow is not loaded: it waits"
        );
    }
}
