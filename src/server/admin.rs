//! The admin HTTP listener (off unless `admin` is configured): metrics for
//! Prometheus, health and readiness for load balancers and orchestrators,
//! the calls in progress, reloads, and the callback store.
//!
//! `/health` and `/ready` answer anyone (a load balancer's probe carries no
//! credentials, and they tell nothing but a status); everything else wants
//! `Authorization: Bearer <token>`. Connections are bounded
//! ([`MAX_CONNECTIONS`]), and each request has [`REQUEST_TIMEOUT`] to be
//! answered, so a stranger who reaches the port can hold little.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{oneshot, watch, OwnedSemaphorePermit, Semaphore};

use super::metrics::{Scrape, WorkerSnapshot};
use super::{Control, Shared, ToListener};
use crate::callback::{ListFilter, State as CallbackState};

/// Admin connections open at once at most; more wait to be accepted.
pub const MAX_CONNECTIONS: usize = 64;

/// How long a request may take, reading it included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a worker or the store may take to answer a scrape or a probe
/// before it counts as stuck.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);

/// The most callbacks `GET /callbacks` returns (`limit` may ask fewer).
const MAX_LISTED: usize = 10_000;

/// Where the admin listener runs, and the token it wants.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// The address to listen on (keep it on a management network).
    pub listen: SocketAddr,
    /// The bearer token, inline; or
    pub token: Option<String>,
    /// a file holding it (kept out of the configuration).
    pub token_file: Option<PathBuf>,
}

/// The shortest token taken: guessing must not be a way in.
const MIN_TOKEN: usize = 16;

impl AdminConfig {
    /// The token, from the configuration or its file, checked.
    pub fn load_token(&self) -> Result<String, String> {
        let token = match (&self.token, &self.token_file) {
            (Some(t), None) => t.trim().to_string(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| format!("admin.token_file {}: {e}", path.display()))?
                .trim()
                .to_string(),
            _ => return Err("admin: give exactly one of `token` and `token_file`".into()),
        };
        if token.len() < MIN_TOKEN || !token.bytes().all(|b| b.is_ascii_graphic() && b != b'"') {
            return Err(format!(
                "admin: the token must be at least {MIN_TOKEN} printable characters, without spaces"
            ));
        }
        Ok(token)
    }
}

/// What the handlers share.
#[derive(Clone)]
struct Admin {
    shared: Arc<Shared>,
    token: Arc<str>,
    control: watch::Receiver<Control>,
}

/// Serves the admin API on `listener` until the process ends.
pub(super) async fn run(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    token: String,
    control: watch::Receiver<Control>,
) {
    let admin = Admin {
        shared,
        token: Arc::from(token),
        control,
    };
    let app = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/calls", get(calls))
        .route("/callbacks", get(callbacks))
        .route("/reload", post(reload))
        .layer(axum::middleware::from_fn(timeout))
        .with_state(admin);
    let listener = Bounded {
        listener,
        permits: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
    };
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!("the admin listener stopped: {e}");
    }
}

/// Gives each request [`REQUEST_TIMEOUT`].
async fn timeout(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "timed out\n").into_response(),
    }
}

impl Admin {
    /// Whether the request carries the token (compared in constant time).
    fn authorised(&self, headers: &HeaderMap) -> bool {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let expected = self.token.as_bytes();
        let given = given.trim().as_bytes();
        let mut diff = u8::from(given.len() != expected.len());
        for (i, b) in expected.iter().enumerate() {
            diff |= b ^ given.get(i).copied().unwrap_or(0);
        }
        diff == 0
    }

    fn draining(&self) -> bool {
        matches!(*self.control.borrow(), Control::Draining(_))
    }
}

/// 401, with the scheme the client should use.
fn unauthorised() -> Response {
    let mut r = (StatusCode::UNAUTHORIZED, "a bearer token is needed\n").into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"callflow\""),
    );
    r
}

/// Asks every worker for its snapshot; those that do not answer within
/// [`ANSWER_WITHIN`] are counted, not waited for.
pub(super) async fn snapshots(shared: &Shared) -> (Vec<WorkerSnapshot>, usize) {
    let inboxes = shared.workers.get().cloned().unwrap_or_default();
    let mut answers = Vec::with_capacity(inboxes.len());
    for inbox in &inboxes {
        let (reply, answer) = oneshot::channel();
        // A full inbox is a worker far behind: it counts as silent.
        let _ = inbox.try_send(ToListener::Snapshot(reply));
        answers.push(answer);
    }
    let deadline = tokio::time::Instant::now() + ANSWER_WITHIN;
    let mut got = Vec::with_capacity(answers.len());
    let mut silent = 0;
    for answer in answers {
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(snapshot)) => got.push(snapshot),
            _ => silent += 1,
        }
    }
    (got, silent)
}

/// Whether the callback store answers, and its counts.
async fn store_stats(shared: &Shared) -> Result<crate::callback::StoreStats, String> {
    match tokio::time::timeout(ANSWER_WITHIN, shared.callbacks.stats()).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "the callback store did not answer within {ANSWER_WITHIN:?}"
        )),
    }
}

/// 200 while the workers' loops turn (each answers within 2 s).
async fn health(State(admin): State<Admin>) -> Response {
    let (_, silent) = snapshots(&admin.shared).await;
    if silent == 0 {
        (StatusCode::OK, Json(json!({"status": "ok"}))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "stuck", "workers_silent": silent})),
        )
            .into_response()
    }
}

/// 200 while the node takes calls: not draining, flows loaded, the
/// callback store answering.
async fn ready(State(admin): State<Admin>) -> Response {
    let mut why = Vec::new();
    if admin.draining() {
        why.push("draining".to_string());
    }
    if admin.shared.runtime().flows.flows.is_empty() {
        why.push("no flows loaded".to_string());
    }
    match tokio::time::timeout(ANSWER_WITHIN, admin.shared.callbacks.ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => why.push(format!("callback store: {e}")),
        Err(_) => why.push("callback store: no answer in time".to_string()),
    }
    if why.is_empty() {
        (StatusCode::OK, Json(json!({"status": "ready"}))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready", "why": why})),
        )
            .into_response()
    }
}

async fn metrics(State(admin): State<Admin>, headers: HeaderMap) -> Response {
    if !admin.authorised(&headers) {
        return unauthorised();
    }
    let scrape = gather(&admin).await;
    match scrape.to_text() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode\n").into_response(),
    }
}

/// Everything a scrape shows.
async fn gather(admin: &Admin) -> Scrape {
    let shared = &admin.shared;
    let (workers, workers_silent) = snapshots(shared).await;
    let store = store_stats(shared).await.ok();
    Scrape {
        workers,
        workers_silent,
        tally: shared.tally().clone(),
        media: shared.media_counts(),
        ports: shared.ports().in_use(),
        store,
        now: super::wall_now(),
        queue_status: shared.waits.freshness(super::now()),
        draining: admin.draining(),
        records_dropped: shared.records.dropped(),
    }
}

async fn calls(State(admin): State<Admin>, headers: HeaderMap) -> Response {
    if !admin.authorised(&headers) {
        return unauthorised();
    }
    let (workers, silent) = snapshots(&admin.shared).await;
    let calls: Vec<_> = workers.into_iter().flat_map(|w| w.calls).collect();
    Json(json!({
        "node": admin.shared.records.node(),
        "calls": calls,
        "workers_silent": silent,
    }))
    .into_response()
}

/// `GET /callbacks` filters, as `callflow callbacks list` takes them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CallbackQuery {
    state: Option<String>,
    queue: Option<String>,
    limit: Option<usize>,
}

async fn callbacks(
    State(admin): State<Admin>,
    headers: HeaderMap,
    query: Result<Query<CallbackQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if !admin.authorised(&headers) {
        return unauthorised();
    }
    let Query(query) = match query {
        Ok(q) => q,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let state = match query.state.as_deref().map(str::parse::<CallbackState>) {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let filter = ListFilter {
        state,
        queue: query.queue,
        limit: Some(query.limit.unwrap_or(MAX_LISTED).min(MAX_LISTED)),
    };
    match admin.shared.callbacks.list(filter).await {
        Ok(list) => {
            let list: Vec<_> = list
                .iter()
                .map(|c| {
                    json!({
                        "id": c.id,
                        "number": c.number,
                        "queue": c.queue,
                        "priority": c.priority,
                        "state": c.state.as_str(),
                        "attempts": c.attempts,
                        "requested_at": crate::call::record::timestamp(c.requested_at),
                        "next_attempt_at": crate::call::record::timestamp(c.next_attempt_at),
                        "updated_at": crate::call::record::timestamp(c.updated_at),
                        "last_error": c.last_error,
                        "context": c.context,
                    })
                })
                .collect();
            Json(json!({ "callbacks": list })).into_response()
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}

/// Reloads the flows with the checks of start-up; refused with the errors
/// (422), the last good flows kept.
async fn reload(State(admin): State<Admin>, headers: HeaderMap) -> Response {
    if !admin.authorised(&headers) {
        return unauthorised();
    }
    match admin.shared.reload().await {
        Ok(flows) => (
            StatusCode::OK,
            Json(json!({"reloaded": true, "flows": flows})),
        )
            .into_response(),
        Err(error) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"reloaded": false, "error": error})),
        )
            .into_response(),
    }
}

/// A listener that holds at most [`MAX_CONNECTIONS`] connections: the
/// next is accepted when one closes.
struct Bounded {
    listener: tokio::net::TcpListener,
    permits: Arc<Semaphore>,
}

/// An accepted connection, holding its place until dropped, and for at
/// most [`CONNECTION_LIFETIME`]: a client that sends nothing (or a byte a
/// minute) cannot keep a place, and the probes' answers with it.
struct Held {
    stream: tokio::net::TcpStream,
    _permit: OwnedSemaphorePermit,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
}

/// How long an admin connection may stay open, however busy.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);

impl Held {
    /// An error once the connection's time is up.
    fn expired(&mut self, cx: &mut std::task::Context<'_>) -> Option<std::io::Error> {
        std::future::Future::poll(self.deadline.as_mut(), cx)
            .is_ready()
            .then(|| {
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "admin connection open too long",
                )
            })
    }
}

impl axum::serve::Listener for Bounded {
    type Io = Held;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok(permit) = Arc::clone(&self.permits).acquire_owned().await else {
                // Never closed; wait forever rather than spin.
                std::future::pending::<()>().await;
                continue;
            };
            match self.listener.accept().await {
                Ok((stream, addr)) => {
                    return (
                        Held {
                            stream,
                            _permit: permit,
                            deadline: Box::pin(tokio::time::sleep(CONNECTION_LIFETIME)),
                        },
                        addr,
                    )
                }
                Err(e) => {
                    // Out of descriptors, say: wait rather than spin.
                    tracing::warn!("admin listener: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

impl tokio::io::AsyncRead for Held {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if let Some(e) = self.expired(cx) {
            return std::task::Poll::Ready(Err(e));
        }
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Held {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if let Some(e) = self.expired(cx) {
            return std::task::Poll::Ready(Err(e));
        }
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(token: Option<&str>, file: Option<PathBuf>) -> AdminConfig {
        AdminConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            token: token.map(String::from),
            token_file: file,
        }
    }

    #[test]
    fn the_token_is_given_once_and_long_enough() {
        assert_eq!(
            config(Some(" 0123456789abcdef "), None).load_token(),
            Ok("0123456789abcdef".to_string())
        );
        assert!(config(Some("short"), None).load_token().is_err());
        assert!(config(Some("0123456789 abcdef"), None)
            .load_token()
            .is_err());
        assert!(config(None, None).load_token().is_err());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "fedcba9876543210\n").unwrap();
        assert_eq!(
            config(None, Some(path.clone())).load_token(),
            Ok("fedcba9876543210".to_string())
        );
        assert!(config(Some("0123456789abcdef"), Some(path))
            .load_token()
            .is_err());
    }
}
