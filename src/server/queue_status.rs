//! Where the estimated wait of each ACD queue comes from: a static value,
//! or an HTTP JSON endpoint of the ACD polled in the background with a
//! timeout. A call never waits for it: it reads the last good value, which
//! expires after `max_age`, then the configured default. A down, slow or
//! confused ACD can therefore never stall or break a call.
//!
//! The HTTP side is reqwest (hyper under it) over rustls: HTTP/1.1 and 2,
//! HTTPS checked against the Mozilla roots or the source's own `ca`,
//! chunked bodies, redirects, connections kept between polls, and an
//! `Authorization` header from the config (an ACD or CRM API token).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::now;
use crate::flow::duration::FlowDuration;

/// How one queue's estimated wait is known.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, untagged)]
pub enum WaitSource {
    /// A fixed value.
    Static {
        /// The wait.
        wait: FlowDuration,
    },
    /// Polled from `url` (`http://` or `https://`), reading the number of
    /// seconds in the JSON field `field`.
    Http {
        /// The endpoint.
        url: String,
        /// The `Authorization` header to send, e.g. `Bearer abc123`.
        #[serde(default)]
        authorization: Option<String>,
        /// Over HTTPS, the CA (PEM) the endpoint's certificate chains to,
        /// for an ACD with a private CA; default: the Mozilla roots.
        #[serde(default)]
        ca: Option<std::path::PathBuf>,
        /// The JSON field with the wait in seconds (dots for nesting).
        field: String,
        /// How often to poll (default 10s).
        #[serde(default = "default_every")]
        every: FlowDuration,
        /// How long one poll may take (default 1s).
        #[serde(default = "default_timeout")]
        timeout: FlowDuration,
        /// How long a value may be used once polls fail (default 60s).
        #[serde(default = "default_max_age")]
        max_age: FlowDuration,
        /// The value when there is none fresh enough (default 5m).
        #[serde(default = "default_wait")]
        default: FlowDuration,
        /// The JSON field with how many callbacks the queue can take now
        /// (e.g. its idle agents): the dialler then keeps at most that many
        /// of the queue's callbacks in progress, and falls back to the
        /// configured pacing when the value is older than `max_age`.
        #[serde(default)]
        callbacks_field: Option<String>,
    },
}

fn default_every() -> FlowDuration {
    FlowDuration(Duration::from_secs(10))
}
fn default_timeout() -> FlowDuration {
    FlowDuration(Duration::from_secs(1))
}
fn default_max_age() -> FlowDuration {
    FlowDuration(Duration::from_secs(60))
}
fn default_wait() -> FlowDuration {
    FlowDuration(Duration::from_secs(300))
}

/// Why a poll gave no value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PollError {
    /// The URL is not an `http://` or `https://` URL, or the source's
    /// settings cannot be used (its CA file, its Authorization value).
    #[error("{0}")]
    BadUrl(String),
    /// Connecting, sending or reading failed.
    #[error("{0}")]
    Io(String),
    /// No answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// An answer that is not a 200 with the field as a number.
    #[error("unusable answer: {0}")]
    Garbage(String),
}

/// The current estimated waits, shared by all calls.
#[derive(Debug, Default)]
pub struct QueueWaits {
    values: RwLock<BTreeMap<String, Entry>>,
}

#[derive(Debug, Clone)]
struct Entry {
    fresh: Option<(Duration, Instant)>,
    /// How many callbacks the ACD said the queue can take, and when.
    capacity: Option<(usize, Instant)>,
    max_age: Duration,
    default: Duration,
}

impl QueueWaits {
    /// The wait of `queue` at `now`: the last polled value while younger
    /// than its max age, else the default; `None` for an unknown queue.
    pub fn get(&self, queue: &str, now: Instant) -> Option<Duration> {
        let values = self.values.read().unwrap_or_else(|p| p.into_inner());
        let e = values.get(queue)?;
        Some(match e.fresh {
            Some((wait, at)) if now.saturating_duration_since(at) <= e.max_age => wait,
            _ => e.default,
        })
    }

    /// How many callbacks `queue` can take now, if its status source says
    /// so and said it recently enough (within its max age).
    pub fn callback_capacity(&self, queue: &str, now: Instant) -> Option<usize> {
        let values = self.values.read().unwrap_or_else(|p| p.into_inner());
        match values.get(queue)?.capacity {
            Some((n, at)) if now.saturating_duration_since(at) <= values.get(queue)?.max_age => {
                Some(n)
            }
            _ => None,
        }
    }

    /// Every queue's wait in whole seconds, as `wait_QUEUE` variables for a
    /// new call.
    pub fn as_vars(&self, now: Instant) -> Vec<(String, String)> {
        let names: Vec<String> = {
            let values = self.values.read().unwrap_or_else(|p| p.into_inner());
            values.keys().cloned().collect()
        };
        names
            .into_iter()
            .filter_map(|q| {
                self.get(&q, now)
                    .map(|w| (format!("wait_{q}"), w.as_secs().to_string()))
            })
            .collect()
    }

    /// Every queue's source, with the age of its last good answer (`None`
    /// before the first), for the metrics.
    pub fn freshness(&self, now: Instant) -> Vec<(String, Option<Duration>)> {
        let values = self.values.read().unwrap_or_else(|p| p.into_inner());
        values
            .iter()
            .map(|(q, e)| {
                let age = e.fresh.map(|(_, at)| now.saturating_duration_since(at));
                (q.clone(), age)
            })
            .collect()
    }

    fn set(&self, queue: &str, entry: Entry) {
        let mut values = self.values.write().unwrap_or_else(|p| p.into_inner());
        values.insert(queue.to_string(), entry);
    }

    fn update(&self, queue: &str, status: Status, at: Instant) {
        let mut values = self.values.write().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = values.get_mut(queue) {
            e.fresh = Some((status.wait, at));
            if let Some(n) = status.callbacks {
                e.capacity = Some((n, at));
            }
        }
    }
}

/// Registers every source and starts a poller task per HTTP source.
pub fn start(sources: &BTreeMap<String, WaitSource>) -> Arc<QueueWaits> {
    let waits = Arc::new(QueueWaits::default());
    for (queue, source) in sources {
        match source {
            WaitSource::Static { wait } => waits.set(
                queue,
                Entry {
                    fresh: None,
                    capacity: None,
                    max_age: Duration::ZERO,
                    default: wait.0,
                },
            ),
            WaitSource::Http {
                url,
                authorization,
                ca,
                field,
                every,
                timeout,
                max_age,
                default,
                callbacks_field,
            } => {
                waits.set(
                    queue,
                    Entry {
                        fresh: None,
                        capacity: None,
                        max_age: max_age.0,
                        default: default.0,
                    },
                );
                let (waits, queue, url, field, callbacks_field) = (
                    Arc::clone(&waits),
                    queue.clone(),
                    url.clone(),
                    field.clone(),
                    callbacks_field.clone(),
                );
                let (every, timeout) = (every.0.max(Duration::from_millis(100)), timeout.0);
                let poller =
                    match Poller::new(&url, authorization.as_deref(), ca.as_deref(), timeout) {
                        Ok(p) => p,
                        Err(e) => {
                            // The default stands in for it, as for a down ACD.
                            tracing::error!(%queue, %url, "queue status: {e}");
                            continue;
                        }
                    };
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(every);
                    loop {
                        tick.tick().await;
                        match poller.status(&field, callbacks_field.as_deref()).await {
                            Ok(status) => waits.update(&queue, status, now()),
                            Err(e) => tracing::warn!(%queue, %url, "queue status: {e}"),
                        }
                    }
                });
            }
        }
    }
    waits
}

/// What one poll of a queue's status says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// The estimated wait.
    pub wait: Duration,
    /// How many callbacks the queue can take now, when asked for.
    pub callbacks: Option<usize>,
}

/// One poll: GET the URL and read `field` (seconds) from the JSON body.
pub async fn poll(url: &str, field: &str, timeout: Duration) -> Result<Duration, PollError> {
    poll_status(url, field, None, timeout).await.map(|s| s.wait)
}

/// One poll for the wait and, with `callbacks_field`, the callback
/// capacity.
pub async fn poll_status(
    url: &str,
    field: &str,
    callbacks_field: Option<&str>,
    timeout: Duration,
) -> Result<Status, PollError> {
    Poller::new(url, None, None, timeout)?
        .status(field, callbacks_field)
        .await
}

/// The largest status body taken: a status answer is small, and a source
/// that streams without end must not fill memory.
const MAX_BODY: usize = 64 * 1024;

/// Polls one status URL, keeping its connection between polls.
pub struct Poller {
    client: reqwest::Client,
    url: reqwest::Url,
    authorization: Option<reqwest::header::HeaderValue>,
    timeout: Duration,
}

impl Poller {
    /// A poller of `url`, sending `authorization` if given, trusting `ca`
    /// (PEM) over HTTPS if given, giving up on a poll after `timeout`.
    pub fn new(
        url: &str,
        authorization: Option<&str>,
        ca: Option<&std::path::Path>,
        timeout: Duration,
    ) -> Result<Self, PollError> {
        let parsed = reqwest::Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| {
                PollError::BadUrl(format!("`{url}` is not an http:// or https:// URL"))
            })?;
        let authorization = authorization
            .map(|v| {
                let mut v = reqwest::header::HeaderValue::from_str(v)
                    .map_err(|_| PollError::BadUrl("authorization: not a header value".into()))?;
                // Kept out of any debug output.
                v.set_sensitive(true);
                Ok::<_, PollError>(v)
            })
            .transpose()?;
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(ca) = ca {
            use rustls::pki_types::pem::PemObject;
            let certs = rustls::pki_types::CertificateDer::pem_file_iter(ca)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .map_err(|e| PollError::BadUrl(format!("ca {}: {e}", ca.display())))?;
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| PollError::BadUrl(format!("ca {}: {e}", ca.display())))?;
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| PollError::BadUrl(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::limited(5))
            // No proxy from the environment: the token goes to the ACD.
            .no_proxy()
            .build()
            .map_err(|e| PollError::BadUrl(format!("HTTP client: {e}")))?;
        Ok(Self {
            client,
            url: parsed,
            authorization,
            timeout,
        })
    }

    /// One poll for the wait and, with `callbacks_field`, the callback
    /// capacity. A capacity that is missing or not a count is logged and
    /// left out: the wait alone is still worth having.
    pub async fn status(
        &self,
        field: &str,
        callbacks_field: Option<&str>,
    ) -> Result<Status, PollError> {
        let body = tokio::time::timeout(self.timeout, self.fetch())
            .await
            .map_err(|_| PollError::Timeout(self.timeout))??;
        let wait = read_field(&body, field)?;
        let callbacks = callbacks_field.and_then(|f| match read_count(&body, f) {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!(url = %self.url, "queue status: {e}");
                None
            }
        });
        Ok(Status { wait, callbacks })
    }

    async fn fetch(&self) -> Result<Vec<u8>, PollError> {
        let mut request = self
            .client
            .get(self.url.clone())
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(a) = &self.authorization {
            request = request.header(reqwest::header::AUTHORIZATION, a.clone());
        }
        let mut response = request.send().await.map_err(|e| {
            if e.is_timeout() {
                PollError::Timeout(self.timeout)
            } else {
                PollError::Io(error_chain(&e))
            }
        })?;
        let status = response.status();
        if status != reqwest::StatusCode::OK {
            return Err(PollError::Garbage(format!("HTTP status {status}")));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| PollError::Io(error_chain(&e)))?
        {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(PollError::Garbage(format!("a body over {MAX_BODY} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// An error with its causes, which reqwest keeps apart ("error sending
/// request" alone says nothing).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// The number at `field` (dots for nesting) of a JSON body.
fn number_at(body: &[u8], field: &str) -> Result<f64, PollError> {
    let json: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| PollError::Garbage(format!("not JSON: {e}")))?;
    let mut v = &json;
    for part in field.split('.') {
        v = v
            .get(part)
            .ok_or_else(|| PollError::Garbage(format!("no field `{field}`")))?;
    }
    v.as_f64()
        .ok_or_else(|| PollError::Garbage(format!("`{field}` is not a number")))
}

fn read_count(body: &[u8], field: &str) -> Result<usize, PollError> {
    let n = number_at(body, field)?;
    if !(0.0..=100_000.0).contains(&n) || n.fract() != 0.0 {
        return Err(PollError::Garbage(format!(
            "`{field}` = {n} is not a count"
        )));
    }
    Ok(n as usize)
}

fn read_field(body: &[u8], field: &str) -> Result<Duration, PollError> {
    let secs = number_at(body, field)?;
    if !(0.0..=86_400.0).contains(&secs) {
        return Err(PollError::Garbage(format!(
            "`{field}` = {secs} is not a wait in seconds"
        )));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A one-shot HTTP server answering `reply`, and what it was asked.
    async fn serve_recording(
        reply: &'static str,
    ) -> (String, tokio::sync::oneshot::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            if let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let _ = tx.send(String::from_utf8_lossy(&buf[..n]).into_owned());
                let _ = s.write_all(reply.as_bytes()).await;
            }
        });
        (format!("http://{addr}/status"), rx)
    }

    #[tokio::test]
    async fn chunked_bodies_and_the_authorization_header_work() {
        let (url, asked) = serve_recording(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n6\r\n{\"wait\r\n5\r\n\":42}\r\n0\r\n\r\n",
        )
        .await;
        let poller = Poller::new(&url, Some("Bearer t0ken"), None, Duration::from_secs(2)).unwrap();
        assert_eq!(
            poller.status("wait", None).await.map(|s| s.wait),
            Ok(Duration::from_secs(42))
        );
        let request = asked.await.unwrap();
        assert!(request.contains("authorization: Bearer t0ken"), "{request}");
    }

    #[tokio::test]
    async fn a_redirect_is_followed() {
        let (target, _) =
            serve_recording("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{\"wait\":7}").await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            if let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let reply = format!(
                    "HTTP/1.1 302 Found\r\nLocation: {target}\r\nContent-Length: 0\r\n\r\n"
                );
                let _ = s.write_all(reply.as_bytes()).await;
            }
        });
        assert_eq!(
            poll(
                &format!("http://{addr}/old"),
                "wait",
                Duration::from_secs(2)
            )
            .await,
            Ok(Duration::from_secs(7))
        );
    }

    #[tokio::test]
    async fn https_with_the_sources_own_ca() {
        let pki = crate::server::tls::test_pki::Pki::new();
        let tls = crate::server::tls::Tls::load(&pki.config("acd", &["127.0.0.1"], false)).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tls.acceptor.clone();
        tokio::spawn(async move {
            for _ in 0..2 {
                let Ok((s, _)) = listener.accept().await else {
                    return;
                };
                let Ok(mut s) = acceptor.accept(s).await else {
                    continue;
                };
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"wait\":12}")
                    .await;
                let _ = s.shutdown().await;
            }
        });
        let url = format!("https://{addr}/status");
        // Without the CA: refused, an error, not a hang.
        assert!(matches!(
            poll(&url, "wait", Duration::from_secs(2)).await,
            Err(PollError::Io(_))
        ));
        let poller = Poller::new(&url, None, Some(&pki.ca()), Duration::from_secs(2)).unwrap();
        assert_eq!(
            poller.status("wait", None).await.map(|s| s.wait),
            Ok(Duration::from_secs(12))
        );
    }

    #[test]
    fn only_http_urls_and_header_safe_tokens_are_taken() {
        let t = Duration::from_secs(1);
        assert!(Poller::new("ftp://acd/x", None, None, t).is_err());
        assert!(Poller::new("not a url", None, None, t).is_err());
        assert!(Poller::new("http://acd/x", Some("Bearer a\nb"), None, t).is_err());
        assert!(Poller::new("https://acd.example.net/q", Some("Bearer ok"), None, t).is_ok());
    }

    /// A one-shot HTTP server answering `reply` after `delay`.
    async fn serve_once(reply: &'static str, delay: Duration) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            if let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                tokio::time::sleep(delay).await;
                let _ = s.write_all(reply.as_bytes()).await;
            }
        });
        format!("http://{addr}/status")
    }

    #[tokio::test]
    async fn a_json_endpoint_gives_the_wait() {
        let url = serve_once(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"queue\":{\"wait\":95}}",
            Duration::ZERO,
        )
        .await;
        assert_eq!(
            poll(&url, "queue.wait", Duration::from_secs(2)).await,
            Ok(Duration::from_secs(95))
        );
    }

    #[tokio::test]
    async fn the_endpoint_can_say_how_many_callbacks_the_queue_takes() {
        let body = "HTTP/1.1 200 OK\r\n\r\n{\"wait\":95,\"idle\":2,\"bad\":1.5}";
        let url = serve_once(body, Duration::ZERO).await;
        let status = poll_status(&url, "wait", Some("idle"), Duration::from_secs(2)).await;
        assert_eq!(
            status,
            Ok(Status {
                wait: Duration::from_secs(95),
                callbacks: Some(2)
            })
        );
        let url = serve_once(body, Duration::ZERO).await;
        let status = poll_status(&url, "wait", Some("bad"), Duration::from_secs(2)).await;
        assert_eq!(
            status.map(|s| s.callbacks),
            Ok(None),
            "not a count: left out, the wait still counts"
        );
    }

    #[tokio::test]
    async fn down_slow_or_garbage_endpoints_are_errors_not_hangs() {
        let down = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}/x", l.local_addr().unwrap())
        };
        assert!(matches!(
            poll(&down, "wait", Duration::from_secs(2)).await,
            Err(PollError::Io(_))
        ));
        let slow = serve_once(
            "HTTP/1.1 200 OK\r\n\r\n{\"wait\":1}",
            Duration::from_secs(3),
        )
        .await;
        assert_eq!(
            poll(&slow, "wait", Duration::from_millis(200)).await,
            Err(PollError::Timeout(Duration::from_millis(200)))
        );
        let garbage = serve_once("HTTP/1.1 200 OK\r\n\r\n<html>busy</html>", Duration::ZERO).await;
        assert!(matches!(
            poll(&garbage, "wait", Duration::from_secs(2)).await,
            Err(PollError::Garbage(_))
        ));
        let error = serve_once("HTTP/1.1 503 Service Unavailable\r\n\r\n", Duration::ZERO).await;
        assert!(matches!(
            poll(&error, "wait", Duration::from_secs(2)).await,
            Err(PollError::Garbage(_))
        ));
        let negative = serve_once("HTTP/1.1 200 OK\r\n\r\n{\"wait\":-5}", Duration::ZERO).await;
        assert!(matches!(
            poll(&negative, "wait", Duration::from_secs(2)).await,
            Err(PollError::Garbage(_))
        ));
    }

    #[test]
    fn a_stale_value_gives_way_to_the_default() {
        let waits = QueueWaits::default();
        waits.set(
            "support",
            Entry {
                fresh: None,
                capacity: None,
                max_age: Duration::from_secs(60),
                default: Duration::from_secs(300),
            },
        );
        let t0 = now();
        assert_eq!(
            waits.get("support", t0),
            Some(Duration::from_secs(300)),
            "no value yet: the default"
        );
        let status = Status {
            wait: Duration::from_secs(42),
            callbacks: Some(3),
        };
        waits.update("support", status, t0);
        assert_eq!(
            waits.callback_capacity("support", t0 + Duration::from_secs(30)),
            Some(3)
        );
        assert_eq!(
            waits.callback_capacity("support", t0 + Duration::from_secs(61)),
            None,
            "a stale capacity gives way to the configured pacing"
        );
        assert_eq!(
            waits.get("support", t0 + Duration::from_secs(30)),
            Some(Duration::from_secs(42))
        );
        assert_eq!(
            waits.get("support", t0 + Duration::from_secs(61)),
            Some(Duration::from_secs(300)),
            "too old"
        );
        assert_eq!(
            waits.as_vars(t0),
            [("wait_support".to_string(), "42".to_string())]
        );
        assert_eq!(waits.get("other", t0), None);
    }
}
