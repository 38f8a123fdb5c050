//! What `GET /metrics` shows, in the Prometheus (OpenMetrics) text format.
//!
//! Nothing here is on a hot path. Counters that change per packet or per
//! SIP message live where they change, owned by one worker each (media
//! counts in [`MediaStats`], SIP counts in [`SipCounts`]); a scrape asks
//! every worker for a [`WorkerSnapshot`] and adds them up. Counters that
//! change once per call (outcomes, transfers, dialler attempts) are kept in
//! one [`Tally`] behind a lock taken when a call ends.
//!
//! Every label set is bounded: methods are a fixed list, statuses are
//! 100–699, flows and queues are the loaded flows' own names (a transfer to
//! a URI is labelled `direct`, as the URI may hold what a caller typed),
//! and [`MAX_SERIES`] caps what reloads could add.

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use crate::call::record::{CallOutcome, CallRecord};
use crate::call::CallSummary;
use crate::callback::{AttemptOutcome, StoreStats};
use crate::flow::model::Handoff;
use crate::sip::admission::AdmissionCounters;
use crate::sip::ua::UaCounters;

use super::stats::{MediaCounts, LATENESS_BOUNDS};

/// SIP methods counted by name; any other is `other`.
const METHODS: [&str; 14] = [
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "OPTIONS",
    "REGISTER",
    "REFER",
    "NOTIFY",
    "INFO",
    "UPDATE",
    "PRACK",
    "SUBSCRIBE",
    "MESSAGE",
    "PUBLISH",
];

/// The label of methods not in [`METHODS`].
const OTHER: &str = "other";

/// The most label sets one per-call family keeps; past it, new ones are
/// counted under `other` (only reloads that keep renaming flows get there).
pub const MAX_SERIES: usize = 1000;

/// Which way a SIP message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// It came to us.
    Received,
    /// We sent it.
    Sent,
}

/// SIP requests by method and responses by status, each way: one worker's.
#[derive(Debug, Clone)]
pub struct SipCounts {
    /// `[direction][method]`, the last index being `other`.
    requests: [[u64; METHODS.len() + 1]; 2],
    /// `[direction][status - 100]`.
    responses: Box<[[u64; 600]; 2]>,
}

impl Default for SipCounts {
    fn default() -> Self {
        Self {
            requests: [[0; METHODS.len() + 1]; 2],
            responses: Box::new([[0; 600]; 2]),
        }
    }
}

impl SipCounts {
    /// Counts one message from its first line alone (the worker already
    /// parses what it takes; this reads a dozen bytes). Keep-alives and
    /// garbage count as nothing.
    pub fn count(&mut self, bytes: &[u8], direction: Direction) {
        let d = direction as usize;
        if let Some(rest) = bytes.strip_prefix(b"SIP/2.0 ") {
            let status = rest
                .get(..3)
                .and_then(|s| std::str::from_utf8(s).ok())
                .and_then(|s| s.parse::<usize>().ok())
                .filter(|s| (100..700).contains(s));
            if let Some(status) = status {
                self.responses[d][status - 100] += 1;
            }
            return;
        }
        let Some(end) = bytes.iter().take(20).position(|b| *b == b' ') else {
            return;
        };
        let method = &bytes[..end];
        if method.is_empty() {
            return;
        }
        let i = METHODS
            .iter()
            .position(|m| m.as_bytes() == method)
            .unwrap_or(METHODS.len());
        self.requests[d][i] += 1;
    }

    /// Adds another worker's counts.
    pub fn add(&mut self, other: &SipCounts) {
        for (a, b) in self.requests.iter_mut().zip(&other.requests) {
            a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        }
        for (a, b) in self.responses.iter_mut().zip(other.responses.iter()) {
            a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        }
    }

    /// How many requests of `method` went `direction`.
    pub fn requests(&self, method: &str, direction: Direction) -> u64 {
        let i = METHODS
            .iter()
            .position(|m| *m == method)
            .unwrap_or(METHODS.len());
        self.requests[direction as usize][i]
    }

    /// How many responses with `status` went `direction`.
    pub fn responses(&self, status: u16, direction: Direction) -> u64 {
        usize::from(status)
            .checked_sub(100)
            .and_then(|i| self.responses[direction as usize].get(i))
            .copied()
            .unwrap_or(0)
    }
}

/// Counters that change once per call or per attempt, for all workers.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Finished calls by flow and outcome.
    calls: BTreeMap<(String, &'static str), u64>,
    /// Transfers by queue and result.
    transfers: BTreeMap<(String, &'static str), u64>,
    /// Callback attempts by how they ended.
    attempts: BTreeMap<&'static str, u64>,
}

impl Tally {
    /// Counts a finished call: its outcome, and each transfer it tried.
    /// `is_queue` tells a queue's name from a direct transfer's URI.
    pub fn call_ended(&mut self, record: &CallRecord, is_queue: impl Fn(&str) -> bool) {
        let outcome = record.outcome.as_str();
        bump(&mut self.calls, (record.flow.clone(), outcome));
        let label = |target: &str| {
            if is_queue(target) {
                target.to_string()
            } else {
                "direct".to_string()
            }
        };
        for failed in &record.failed_transfers {
            bump(&mut self.transfers, (label(&failed.target), "failed"));
        }
        if record.outcome == CallOutcome::Transferred {
            let result = match (record.handoff, &record.refer_failed) {
                (Some(Handoff::Bridge), Some(_)) => "bridged_after_refer_failed",
                (Some(Handoff::Bridge), None) => "bridged",
                _ => "referred",
            };
            bump(&mut self.transfers, (label(&record.detail), result));
        }
    }

    /// Counts a callback attempt's last word.
    pub fn attempt_settled(&mut self, outcome: &AttemptOutcome) {
        let result = match outcome {
            AttemptOutcome::Answered => "answered",
            AttemptOutcome::Busy => "busy",
            AttemptOutcome::NoAnswer => "no_answer",
            AttemptOutcome::Failed(_) => "failed",
            AttemptOutcome::Refused(_) => "refused",
            AttemptOutcome::Connected => "connected",
            AttemptOutcome::Completed => "completed",
        };
        *self.attempts.entry(result).or_default() += 1;
    }
}

/// Adds one to a per-call family's series, under `other` once the family
/// is full.
fn bump(family: &mut BTreeMap<(String, &'static str), u64>, key: (String, &'static str)) {
    if family.len() >= MAX_SERIES && !family.contains_key(&key) {
        *family.entry((OTHER.to_string(), key.1)).or_default() += 1;
    } else {
        *family.entry(key).or_default() += 1;
    }
}

/// What one worker tells a scrape.
#[derive(Debug, Clone, Default)]
pub struct WorkerSnapshot {
    /// Its calls in progress.
    pub calls: Vec<CallSummary>,
    /// Its SIP counts.
    pub sip: SipCounts,
    /// Its listener's admission counters (from the listener's first
    /// worker only: the state is the listener's).
    pub admission: Option<AdmissionCounters>,
    /// Its user agent's table bounds.
    pub ua: UaCounters,
    /// Calls answered, placed and refused for want of room so far.
    pub started: crate::call::endpoint::CallCounters,
    /// RTP datagrams its reader dropped (queue full).
    pub rtp_in_dropped: u64,
    /// RTP sends that failed.
    pub rtp_send_failed: u64,
}

/// Everything one scrape shows, gathered before it is encoded.
#[derive(Debug, Default)]
pub struct Scrape {
    /// The workers' answers.
    pub workers: Vec<WorkerSnapshot>,
    /// Workers that did not answer in time.
    pub workers_silent: usize,
    /// The per-call counters.
    pub tally: Tally,
    /// The media counters.
    pub media: MediaCounts,
    /// RTP ports held, and in all.
    pub ports: (usize, usize),
    /// The callback store's counts, if it answered.
    pub store: Option<StoreStats>,
    /// Now, on the wall clock, for the oldest pending request's age.
    pub now: chrono::DateTime<chrono::Utc>,
    /// Each queue-status source's age (`None` before its first answer).
    pub queue_status: Vec<(String, Option<Duration>)>,
    /// Whether the node is draining.
    pub draining: bool,
    /// Call records dropped because the writer fell behind.
    pub records_dropped: u64,
}

impl Scrape {
    /// The scrape in the OpenMetrics text format (which Prometheus reads;
    /// served as `application/openmetrics-text`).
    pub fn to_text(self) -> Result<String, std::fmt::Error> {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(self));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry)?;
        Ok(text)
    }
}

/// Writes one family's descriptor and its series.
struct Family<'a, 'b> {
    encoder: &'a mut DescriptorEncoder<'b>,
}

impl Family<'_, '_> {
    fn counter<L: prometheus_client::encoding::EncodeLabelSet>(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (L, u64)>,
    ) -> Result<(), std::fmt::Error> {
        let mut m = self
            .encoder
            .encode_descriptor(name, help, None, MetricType::Counter)?;
        for (labels, v) in series {
            ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
        }
        Ok(())
    }

    fn gauge<L: prometheus_client::encoding::EncodeLabelSet, V: EncodeGaugeValue>(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (L, V)>,
    ) -> Result<(), std::fmt::Error> {
        let mut m = self
            .encoder
            .encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (labels, v) in series {
            ConstGauge::new(v).encode(m.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// No labels.
type NoLabels = [(&'static str, &'static str); 0];

impl prometheus_client::collector::Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut f = Family {
            encoder: &mut encoder,
        };
        let mut active: BTreeMap<&str, u64> = BTreeMap::new();
        let mut started = crate::call::endpoint::CallCounters::default();
        let mut sip = SipCounts::default();
        let mut admission = AdmissionCounters::default();
        let mut ua = UaCounters::default();
        let (mut rtp_in_dropped, mut rtp_send_failed) = (0, 0);
        for w in &self.workers {
            for c in &w.calls {
                *active.entry(c.flow.as_str()).or_default() += 1;
            }
            started.answered += w.started.answered;
            started.placed += w.started.placed;
            started.no_capacity += w.started.no_capacity;
            sip.add(&w.sip);
            if let Some(a) = &w.admission {
                admission.add(a);
            }
            ua.transactions_full += w.ua.transactions_full;
            ua.dialogs_full += w.ua.dialogs_full;
            ua.draining_refused += w.ua.draining_refused;
            rtp_in_dropped += w.rtp_in_dropped;
            rtp_send_failed += w.rtp_send_failed;
        }
        f.gauge(
            "callflow_calls_active",
            "Calls in progress (ringing, answered or placed), by flow.",
            active
                .iter()
                .map(|(flow, n)| ([("flow", *flow)], *n as i64)),
        )?;
        f.counter(
            "callflow_calls",
            "Calls that ended, by flow and outcome.",
            self.tally
                .calls
                .iter()
                .map(|((flow, outcome), n)| ([("flow", flow.as_str()), ("outcome", *outcome)], *n)),
        )?;
        f.counter(
            "callflow_call_setups",
            "Calls set up: answered (inbound) or placed (callback attempts).",
            [
                ([("direction", "inbound")], started.answered),
                ([("direction", "outbound")], started.placed),
            ],
        )?;
        let directions = [(Direction::Received, "received"), (Direction::Sent, "sent")];
        let mut requests = Vec::new();
        let mut responses = Vec::new();
        for (d, dname) in directions {
            for (i, name) in METHODS.iter().chain([&OTHER]).enumerate() {
                let n = sip.requests[d as usize][i];
                if n > 0 {
                    requests.push(([("method", *name), ("direction", dname)], n));
                }
            }
            for (i, n) in sip.responses[d as usize].iter().enumerate() {
                if *n > 0 {
                    responses.push(((i + 100, dname), *n));
                }
            }
        }
        f.counter(
            "callflow_sip_requests",
            "SIP requests by method, received and sent (retransmissions included).",
            requests,
        )?;
        f.counter(
            "callflow_sip_responses",
            "SIP responses by status code, received and sent (retransmissions included).",
            responses.into_iter().map(|((status, d), n)| {
                (
                    vec![("status", status.to_string()), ("direction", d.to_string())],
                    n,
                )
            }),
        )?;
        f.counter(
            "callflow_rejections",
            "What admission control and the table bounds turned away, by reason.",
            [
                ("unknown_source_dropped", admission.unknown_dropped),
                ("unknown_source_forbidden", admission.unknown_forbidden),
                ("source_rate_limited", admission.rate_limited),
                ("source_table_full", admission.source_table_full),
                ("trunk_max_calls", admission.over_calls),
                ("trunk_call_rate", admission.over_rate),
                ("bad_credentials", admission.bad_credentials),
                ("transaction_table_full", ua.transactions_full),
                ("dialog_table_full", ua.dialogs_full),
                ("no_rtp_port", started.no_capacity),
                ("draining", ua.draining_refused),
            ]
            .map(|(reason, n)| ([("reason", reason)], n)),
        )?;
        f.counter(
            "callflow_transfers",
            "Transfers to a queue by result (queue `direct`: to a URI).",
            self.tally
                .transfers
                .iter()
                .map(|((queue, result), n)| ([("queue", queue.as_str()), ("result", *result)], *n)),
        )?;
        f.counter(
            "callflow_dialler_attempts",
            "Callback attempts by how they ended.",
            self.tally
                .attempts
                .iter()
                .map(|(result, n)| ([("result", *result)], *n)),
        )?;
        if let Some(store) = &self.store {
            f.gauge(
                "callflow_callbacks",
                "Callback requests in the store, by state.",
                store
                    .by_state
                    .iter()
                    .map(|(state, n)| ([("state", state.as_str())], *n as i64)),
            )?;
            let age = store.oldest_pending.map_or(0.0, |t| {
                (self.now - t).num_milliseconds().max(0) as f64 / 1000.0
            });
            f.gauge(
                "callflow_callbacks_oldest_pending_age_seconds",
                "How long the oldest pending callback request has waited (0: none pending).",
                [(NoLabels::default(), age)],
            )?;
        }
        f.gauge(
            "callflow_callback_store_up",
            "Whether the callback store answered this scrape.",
            [(NoLabels::default(), i64::from(self.store.is_some()))],
        )?;
        f.counter(
            "callflow_rtp_packets",
            "RTP packets sent and received by the calls.",
            [
                ([("direction", "sent")], self.media.sent),
                ([("direction", "received")], self.media.received),
            ],
        )?;
        f.counter(
            "callflow_rtp_dropped",
            "RTP packets lost inside callflow: `received` the reader could not hand on, `sent` the kernel refused.",
            [
                ([("direction", "received")], rtp_in_dropped),
                ([("direction", "sent")], rtp_send_failed),
            ],
        )?;
        // Per bucket, not cumulative: the encoder adds them up.
        let buckets: Vec<(f64, u64)> = LATENESS_BOUNDS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.media.buckets)
            .collect();
        let m = f.encoder.encode_descriptor(
            "callflow_rtp_pacing_lateness_seconds",
            "How late RTP packets left against their 20 ms schedule.",
            None,
            MetricType::Histogram,
        )?;
        let sum = self.media.late_us_sum as f64 / 1e6;
        let mut m = m;
        // The count is the buckets' sum, read together with them.
        let count = self.media.buckets.iter().sum();
        m.encode_histogram::<NoLabels>(sum, count, &buckets, None)?;
        f.gauge(
            "callflow_rtp_ports",
            "RTP ports held by calls, and in the configured range.",
            [
                ([("state", "in_use")], self.ports.0 as i64),
                ([("state", "configured")], self.ports.1 as i64),
            ],
        )?;
        f.gauge(
            "callflow_queue_status_age_seconds",
            "Age of each queue-status source's last good answer (-1: none yet).",
            self.queue_status.iter().map(|(q, age)| {
                (
                    [("queue", q.as_str())],
                    age.map_or(-1.0, |a| a.as_secs_f64()),
                )
            }),
        )?;
        f.gauge(
            "callflow_draining",
            "1 while the node drains (takes no new calls).",
            [(NoLabels::default(), i64::from(self.draining))],
        )?;
        f.gauge(
            "callflow_workers_silent",
            "Call workers that did not answer this scrape in time.",
            [(NoLabels::default(), self.workers_silent as i64)],
        )?;
        f.counter(
            "callflow_call_records_dropped",
            "Call records lost because the record file fell behind.",
            [(NoLabels::default(), self.records_dropped)],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_messages_are_counted_from_their_first_line() {
        let mut c = SipCounts::default();
        c.count(
            b"INVITE sip:a@b SIP/2.0\r\nVia: x\r\n\r\n",
            Direction::Received,
        );
        c.count(b"SIP/2.0 200 OK\r\n\r\n", Direction::Sent);
        c.count(b"SIP/2.0 486 Busy Here\r\n\r\n", Direction::Received);
        c.count(b"FOO sip:a@b SIP/2.0\r\n\r\n", Direction::Received);
        // Keep-alives and garbage are nothing.
        c.count(b"\r\n\r\n", Direction::Received);
        c.count(b"SIP/2.0 99x", Direction::Received);
        c.count(b" x", Direction::Received);
        assert_eq!(c.requests("INVITE", Direction::Received), 1);
        assert_eq!(c.requests("INVITE", Direction::Sent), 0);
        assert_eq!(c.requests("FOO", Direction::Received), 1);
        assert_eq!(c.responses(200, Direction::Sent), 1);
        assert_eq!(c.responses(486, Direction::Received), 1);
        assert_eq!(c.responses(99, Direction::Received), 0);
        let mut sum = SipCounts::default();
        sum.add(&c);
        sum.add(&c);
        assert_eq!(sum.responses(200, Direction::Sent), 2);
    }

    fn record(flow: &str, outcome: CallOutcome, detail: &str) -> CallRecord {
        CallRecord {
            call_id: "c".into(),
            from: String::new(),
            to: String::new(),
            caller: "1".into(),
            called: "2".into(),
            flow: flow.into(),
            start: String::new(),
            answer: None,
            end: String::new(),
            nodes: Vec::new(),
            digits: String::new(),
            outcome,
            detail: detail.into(),
            callback: None,
            callback_id: None,
            handoff: None,
            refer_failed: None,
            agent_answer: None,
            inputs: Vec::new(),
            failed_transfers: Vec::new(),
            hung_up_by: None,
            node: None,
        }
    }

    /// The families, their labels and their values, as Prometheus would
    /// read them; a direct transfer's URI never becomes a label.
    #[test]
    fn a_scrape_encodes_bounded_families() {
        let mut tally = Tally::default();
        let is_queue = |q: &str| q == "sales";
        let mut r = record("support", CallOutcome::Transferred, "sales");
        r.handoff = Some(Handoff::Bridge);
        r.refer_failed = Some("405".into());
        r.failed_transfers
            .push(crate::call::record::FailedTransfer {
                target: "sip:1234@pbx".into(),
                reason: "486".into(),
            });
        tally.call_ended(&r, is_queue);
        tally.call_ended(
            &record("support", CallOutcome::CallerHungUp, "menu"),
            is_queue,
        );
        tally.attempt_settled(&AttemptOutcome::Failed("503".into()));
        let mut sip = SipCounts::default();
        sip.count(b"INVITE sip:x SIP/2.0\r\n", Direction::Received);
        sip.count(b"SIP/2.0 200 OK\r\n", Direction::Sent);
        let scrape = Scrape {
            workers: vec![WorkerSnapshot {
                sip,
                ..WorkerSnapshot::default()
            }],
            tally,
            media: MediaCounts {
                sent: 3,
                received: 2,
                buckets: [2, 1, 0, 0, 0, 0],
                late_us_sum: 4000,
            },
            ports: (2, 100),
            now: chrono::DateTime::UNIX_EPOCH,
            ..Scrape::default()
        };
        let text = scrape.to_text().unwrap();
        for line in [
            "callflow_calls_total{flow=\"support\",outcome=\"transferred\"} 1",
            "callflow_calls_total{flow=\"support\",outcome=\"caller_hung_up\"} 1",
            "callflow_transfers_total{queue=\"sales\",result=\"bridged_after_refer_failed\"} 1",
            "callflow_transfers_total{queue=\"direct\",result=\"failed\"} 1",
            "callflow_dialler_attempts_total{result=\"failed\"} 1",
            "callflow_sip_requests_total{method=\"INVITE\",direction=\"received\"} 1",
            "callflow_sip_responses_total{status=\"200\",direction=\"sent\"} 1",
            "callflow_rtp_packets_total{direction=\"sent\"} 3",
            "callflow_rtp_pacing_lateness_seconds_bucket{le=\"0.002\"} 2",
            "callflow_rtp_pacing_lateness_seconds_bucket{le=\"0.005\"} 3",
            "callflow_rtp_pacing_lateness_seconds_bucket{le=\"+Inf\"} 3",
            "callflow_rtp_pacing_lateness_seconds_sum 0.004",
            "callflow_rtp_pacing_lateness_seconds_count 3",
            "callflow_rtp_ports{state=\"in_use\"} 2",
            "callflow_callback_store_up 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        assert!(!text.contains("pbx"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn a_family_stops_growing_at_its_bound() {
        let mut tally = Tally::default();
        for i in 0..MAX_SERIES + 5 {
            tally.call_ended(
                &record(&format!("flow{i}"), CallOutcome::Completed, "end"),
                |_| false,
            );
        }
        assert_eq!(tally.calls.len(), MAX_SERIES + 1);
        assert_eq!(tally.calls[&(OTHER.to_string(), "completed")], 5);
    }
}
