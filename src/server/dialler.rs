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
use super::runtime::Runtime;
use super::{wall_now, Control, Shared, ToSip};

/// At most this many requests per claim: a backlog after an outage is
/// dialled in steps, each followed by a look at what settled meanwhile.
const CLAIM_BATCH: usize = 50;

/// Runs until the server drains. `listener` is the SIP listener that
/// places the calls.
pub(super) async fn run(
    shared: Arc<Shared>,
    listener: mpsc::UnboundedSender<ToSip>,
    mut control: watch::Receiver<Control>,
) {
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
        let limit = queue_limit(Arc::clone(&shared), shared.runtime(), now);
        match shared.callbacks.claim(now, limit, CLAIM_BATCH).await {
            Ok(claimed) => {
                for callback in claimed {
                    if listener.send(ToSip::Dial(Box::new(callback))).is_err() {
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
fn queue_limit(shared: Arc<Shared>, runtime: Arc<Runtime>, now: DateTime<Utc>) -> QueueLimit {
    Box::new(move |queue: &str| {
        let config = &shared.config;
        let flow = config.callback_flow_for(queue);
        if runtime.entry(flow).is_none() {
            tracing::debug!(queue, flow, "callback flow not loaded; not dialling");
            return 0;
        }
        match runtime.queue_hours(queue, flow) {
            Some(hours) if !hours.is_open(now) => 0,
            _ => config.max_in_progress(queue),
        }
    })
}
