//! One task per call: it owns the call's RTP socket and paces its packets,
//! feeding the pure [`Call`] with what arrives.

use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::call::{Call, CallOutput};
use crate::sip::sdp;
use crate::sip::ua::{CallHandle, UaEvent, NO_FINAL_NOTIFY};

use super::{now, sleep_until, wall_now, Shared, ToSip};
use crate::call::record::CallRecord;
use crate::callback::limits::BookingRefusal;
use crate::callback::{AttemptOutcome, Requested, State};
use crate::flow::interpreter::{Booked, CallbackError};

/// What the SIP task tells a call.
#[derive(Debug)]
pub enum ToCall {
    /// A SIP event.
    Sip(UaEvent),
    /// The server is stopping: end the call now.
    Shutdown,
}

/// Runs a call until it is finished.
pub(super) async fn run(
    handle: CallHandle,
    mut call: Call,
    socket: UdpSocket,
    port: u16,
    mut events: mpsc::Receiver<ToCall>,
    to_sip: mpsc::Sender<ToSip>,
    shared: Arc<Shared>,
) {
    let (stats, callbacks, policy) = (&shared.stats, &shared.callbacks, &shared.config.dialling);
    let mut stored: Option<
        tokio::sync::oneshot::Receiver<Result<crate::callback::Requested, String>>,
    > = None;
    let mut booked = None;
    // A call we placed looks now and then whether an admin cancelled its
    // request (`callflow callbacks cancel`), and if so ends itself.
    let mut cancel_check = tokio::time::interval(CANCEL_CHECK);
    cancel_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut state_query: Option<tokio::sync::oneshot::Receiver<Option<State>>> = None;
    let mut progress = Progress::default();
    let mut packet = Vec::with_capacity(256);
    let mut incoming = vec![0u8; 2048];
    loop {
        let t = now();
        while let Some(due) = call.next_packet_due().filter(|d| *d <= t) {
            if call.poll_packet(t, &mut packet).is_none() {
                break;
            }
            if let Some(dest) = call.rtp_destination() {
                // tokio answers WouldBlock until the reactor has seen the
                // socket writable once (always so for a new call's first
                // packet), and when the send buffer is full: then wait.
                if let Err(e) = socket.try_send_to(&packet, dest) {
                    if e.kind() == std::io::ErrorKind::WouldBlock {
                        let _ = socket.send_to(&packet, dest).await;
                    }
                }
                stats.record(t.saturating_duration_since(due));
            }
        }
        call.handle_timeout(t);
        while let Some(output) = call.poll_output() {
            match output {
                CallOutput::Sip(command) => {
                    let _ = to_sip.send(ToSip::Command(handle, command)).await;
                }
                CallOutput::StoreCallback(request) => {
                    tracing::info!(number = %request.number, queue = %request.queue, "callback requested");
                    // Every number, typed or the caller's own, passes the
                    // policy before it is stored (toll fraud).
                    match policy.check(&request.number) {
                        Err(why) => {
                            tracing::info!(number = %request.number, "callback number refused: {why}");
                            call.callback_stored(now(), Err(CallbackError::Refused(why)));
                        }
                        _ => match shared.book(&request.number, call.source().ip()) {
                            Ok(()) => {
                                let priority = request.priority.unwrap_or(0);
                                stored = Some(callbacks.request(request, priority, wall_now()));
                            }
                            Err(refusal) => {
                                tracing::warn!(number = %request.number, source = %call.source(), ?refusal,
                                    "callback refused: over the booking limit");
                                let error = match refusal {
                                    BookingRefusal::Number => CallbackError::Refused(
                                        "this number has had its callbacks for now".into(),
                                    ),
                                    BookingRefusal::Source => CallbackError::Failed(
                                        "too many callbacks booked from this source".into(),
                                    ),
                                };
                                call.callback_stored(now(), Err(error));
                            }
                        },
                    }
                }
                CallOutput::Finished(mut record) => {
                    record.callback_id = booked;
                    if let Some(leg) = call.callback() {
                        let outcome = progress.outcome(&record);
                        record.callback = Some(leg.record(outcome.result_text()));
                        if progress.stopping && outcome != AttemptOutcome::Completed {
                            // Cut short by a shutdown, not missed by the
                            // callee: left `dialling`, the next start dials
                            // it again without counting this attempt.
                            tracing::info!(id = leg.id, "callback interrupted by the shutdown; dialled again at the next start");
                        } else {
                            shared.settle_callback(leg, outcome);
                        }
                    }
                    tracing::info!(
                        from = %record.caller, to = %record.called, flow = %record.flow,
                        path = %record.nodes.join(">"), outcome = record.outcome, detail = %record.detail,
                        "call ended"
                    );
                    shared.records.write(record);
                }
            }
        }
        if call.is_finished() {
            break;
        }
        let deadline = call.poll_timeout();
        tokio::select! {
            received = socket.recv_from(&mut incoming) => {
                if let Ok((n, from)) = received {
                    call.on_rtp(now(), from, &incoming[..n]);
                }
            }
            event = events.recv() => match event {
                // Our offer's answer: in the ACK after a delayed offer, or in
                // the 2xx of a call we placed.
                Some(ToCall::Sip(UaEvent::Confirmed { answer: Some(body) })) => {
                    start_media(&mut call, &body, "ACK");
                }
                Some(ToCall::Sip(UaEvent::Answered { answer })) => {
                    if let Some(leg) = call.callback() {
                        callbacks.progress(leg.id, wall_now(), AttemptOutcome::Answered);
                    }
                    tracing::info!("callback answered");
                    start_media(&mut call, &answer, "2xx");
                }
                Some(ToCall::Sip(UaEvent::DialFailed { status, reason })) => {
                    tracing::info!(status, %reason, "callback not answered");
                    call.dial_failed(now(), status, &reason);
                }
                Some(ToCall::Sip(UaEvent::TransferAccepted)) => {
                    if let Some(leg) = call.callback() {
                        callbacks.progress(leg.id, wall_now(), AttemptOutcome::Connected);
                    }
                    progress.handed_over = true;
                    progress.refused = false;
                    call.on_sip(now(), UaEvent::TransferAccepted);
                }
                Some(ToCall::Sip(UaEvent::TransferResult(Err(reason)))) => {
                    // The ACD saying no is a failure; its silence after the
                    // 202 is not (the callee is on the way to an agent).
                    progress.refused |= reason != NO_FINAL_NOTIFY;
                    call.on_sip(now(), UaEvent::TransferResult(Err(reason)));
                }
                Some(ToCall::Sip(e)) => call.on_sip(now(), e),
                Some(ToCall::Shutdown) => {
                    progress.stopping = true;
                    call.terminate(now(), "server shutting down".into());
                }
                None => {
                    progress.stopping = true;
                    call.terminate(now(), "signalling stopped".into());
                }
            },
            result = wait_stored(&mut stored) => {
                stored = None;
                let booked = match result {
                    Ok(Requested::Created(id)) => {
                        booked = Some(id);
                        tracing::info!(id, "callback stored");
                        Ok(Booked::New)
                    }
                    Ok(Requested::Merged(id)) => {
                        booked = Some(id);
                        tracing::info!(id, "callback merged with the one already booked");
                        Ok(Booked::Merged)
                    }
                    Err(e) => Err(CallbackError::Failed(e)),
                };
                call.callback_stored(now(), booked);
            }
            _ = cancel_check.tick(), if call.callback().is_some() && state_query.is_none() => {
                state_query = call.callback().map(|leg| callbacks.state(leg.id));
            }
            state = wait_state(&mut state_query) => {
                state_query = None;
                if state == Some(State::Cancelled) {
                    tracing::info!("callback cancelled by an admin; ending its call");
                    call.terminate(now(), "callback cancelled by an admin".into());
                }
            }
            _ = sleep_until(deadline) => {}
        }
    }
    let _ = to_sip.send(ToSip::Done(handle, port)).await;
}

/// Takes the SDP answer to our offer (from `carrier`, for the log) and
/// starts the flow, or ends the call when the answer is unusable.
fn start_media(call: &mut Call, body: &[u8], carrier: &str) {
    let t = now();
    let negotiated = sdp::parse(&String::from_utf8_lossy(body))
        .map_err(|e| e.to_string())
        .and_then(|a| sdp::accept_answer(&a).map_err(|e| e.to_string()));
    match negotiated {
        Ok(negotiated) => {
            call.set_media(negotiated);
            call.on_sip(t, UaEvent::Confirmed { answer: None });
        }
        Err(e) => {
            tracing::info!("unusable SDP answer in the {carrier}: {e}");
            call.terminate(t, format!("unusable SDP answer: {e}"));
        }
    }
}

/// How far a call we placed got, beyond what its record says.
#[derive(Debug, Default)]
struct Progress {
    /// The ACD accepted a transfer (202).
    handed_over: bool,
    /// ... and then reported it failed (a non-2xx NOTIFY, a REFER error).
    refused: bool,
    /// The server is stopping: the call was cut short.
    stopping: bool,
}

impl Progress {
    /// What a finished call we placed means for its callback request: a
    /// confirmed transfer keeps the promise, and so does one the ACD took
    /// whose end we did not see (the callee hung up first, or the NOTIFY
    /// was late): dialling them again could ring someone talking to the
    /// agent. An answered call that never got there (voicemail, a hang-up
    /// before the key) counts as missed.
    fn outcome(&self, record: &CallRecord) -> AttemptOutcome {
        match record.outcome {
            "transferred" => AttemptOutcome::Completed,
            _ if self.handed_over && !self.refused => AttemptOutcome::Connected,
            "busy" => AttemptOutcome::Busy,
            "no_answer" => AttemptOutcome::NoAnswer,
            _ if record.answer.is_some() => AttemptOutcome::Answered,
            _ => AttemptOutcome::Failed(record.detail.clone()),
        }
    }
}

/// How often a call we placed checks that its request was not cancelled.
const CANCEL_CHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// The store's answer to a state query, when one is out.
async fn wait_state(
    pending: &mut Option<tokio::sync::oneshot::Receiver<Option<State>>>,
) -> Option<State> {
    match pending {
        Some(rx) => rx.await.unwrap_or(None),
        None => std::future::pending().await,
    }
}

/// The store's answer, when a request is waiting for one.
async fn wait_stored(
    pending: &mut Option<
        tokio::sync::oneshot::Receiver<Result<crate::callback::Requested, String>>,
    >,
) -> Result<crate::callback::Requested, String> {
    match pending {
        Some(rx) => rx
            .await
            .unwrap_or_else(|_| Err("the callback store stopped".into())),
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(outcome: &'static str, answered: bool) -> CallRecord {
        CallRecord {
            call_id: "c".into(),
            from: String::new(),
            to: String::new(),
            caller: "37120000000".into(),
            called: "general".into(),
            flow: "callback".into(),
            start: String::new(),
            answer: answered.then(String::new),
            end: String::new(),
            nodes: Vec::new(),
            digits: String::new(),
            outcome,
            detail: "why".into(),
            callback: None,
            callback_id: None,
        }
    }

    #[test]
    fn an_attempt_reads_its_outcome_from_the_record_and_the_transfer() {
        let fresh = Progress::default();
        assert_eq!(
            fresh.outcome(&record("transferred", true)),
            AttemptOutcome::Completed
        );
        assert_eq!(fresh.outcome(&record("busy", false)), AttemptOutcome::Busy);
        assert_eq!(
            fresh.outcome(&record("no_answer", false)),
            AttemptOutcome::NoAnswer
        );
        assert_eq!(
            fresh.outcome(&record("caller_hung_up", true)),
            AttemptOutcome::Answered,
            "voicemail or a hang-up before the key: missed"
        );
        assert_eq!(
            fresh.outcome(&record("dial_failed", false)),
            AttemptOutcome::Failed("why".into())
        );
        let taken = Progress {
            handed_over: true,
            ..Progress::default()
        };
        assert_eq!(
            taken.outcome(&record("caller_hung_up", true)),
            AttemptOutcome::Connected,
            "the ACD took the callee; its NOTIFY never came"
        );
        let refused = Progress {
            handed_over: true,
            refused: true,
            stopping: false,
        };
        assert_eq!(
            refused.outcome(&record("completed", true)),
            AttemptOutcome::Answered
        );
    }
}
