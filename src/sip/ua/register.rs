//! Registering with a trunk's registrar (RFC 3261 section 10): a trunk
//! that sends its calls to wherever its customer registered needs us to
//! REGISTER, answer its digest challenge, refresh before the binding
//! expires, and keep trying after failures.
//!
//! One binding: our Contact for the address-of-record `sip:user@domain`.
//! Every REGISTER keeps the Call-ID and From tag and counts CSeq up
//! (10.2.4). A refresh goes out well before the granted expiry; a failure
//! (no answer, refused credentials, 403, 5xx) is retried after a back-off
//! that doubles from 30 s to 30 min with jitter (as RFC 5626 4.5 does for
//! flows), so a registrar that is down is not hammered. A 423 raises the
//! interval to the registrar's Min-Expires. `unregister` removes the
//! binding (Expires: 0) when the server stops.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::{CallHandle, ClientTx, TimerOwner, UserAgent};
use crate::sip::auth::{self, Challenge, Credentials};
use crate::sip::locate::SipTarget;
use crate::sip::message::{self, Message, Method};
use crate::sip::transaction::NonInviteClientTransaction;
use crate::sip::transport::{Peer, Transport};

/// What to register.
#[derive(Debug, Clone)]
pub struct RegisterConfig {
    /// Where REGISTERs go: an address, or a name DNS locates (RFC 3263),
    /// perhaps with a port and a transport.
    pub registrar: SipTarget,
    /// Where REGISTERs go when the registrar cannot be reached: the
    /// trunk's other addresses, in order.
    pub backups: Vec<SipTarget>,
    /// The registrar's domain: the Request-URI `sip:domain`, and the host
    /// of our address-of-record.
    pub domain: String,
    /// The user of our address-of-record, and of our Contact: the trunk
    /// sends calls for the registration to it.
    pub user: String,
    /// Digest credentials for the registrar's challenge.
    pub credentials: Option<Credentials>,
    /// The binding's lifetime asked for.
    pub expires: Duration,
}

/// Where the registration stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationState {
    /// A REGISTER is out, and no binding is known to hold.
    Registering,
    /// The registrar holds our binding for this long from when it said so.
    Registered {
        /// As granted.
        expires: Duration,
    },
    /// The last attempt failed; the next one is after the back-off.
    Failed {
        /// Why, as the log says it.
        reason: String,
    },
    /// No binding: never registered, or removed on shutdown.
    Unregistered,
}

/// The first wait after a failure; it doubles with each one.
const BACKOFF_BASE: Duration = Duration::from_secs(30);
/// The longest wait after failures.
const BACKOFF_MAX: Duration = Duration::from_secs(1800);
/// Challenges answered per REGISTER at most (a proxy and the registrar,
/// with a stale nonce each).
const MAX_CHALLENGES: usize = 4;
/// The shortest binding asked for (RFC 3261 10.2.1.1 suggests an hour;
/// some registrars want less, none should get a flood).
const MIN_EXPIRES: Duration = Duration::from_secs(60);

/// A challenge answered, counted per nonce (RFC 7616 3.4).
#[derive(Clone)]
struct Answered {
    header: &'static str,
    challenge: Challenge,
    counter: auth::NonceCounter,
    cnonce: String,
}

/// The registration's state in the user agent.
pub(super) struct Registration {
    config: RegisterConfig,
    call_id: String,
    local_tag: String,
    cseq: u32,
    /// The branch of the REGISTER in flight.
    in_flight: Option<String>,
    /// Answers to the registrar's challenges, sent with every REGISTER
    /// until it challenges again.
    answered: Vec<Answered>,
    /// The challenges (header, realm, nonce) answered since the last
    /// success or failure: a realm that challenges again, unless its
    /// nonce went stale, refused our credentials.
    cycle: Vec<(&'static str, String, String)>,
    state: RegistrationState,
    failures: u32,
    /// The next REGISTER (a refresh or a retry) is due then.
    next: Option<Instant>,
    /// Removing the binding: no refresh after it.
    removing: bool,
    /// The interval asked for (raised by a 423).
    expires: Duration,
    /// The registrar's address we are registering with; `None` until the
    /// next REGISTER locates it (again, after a failure).
    at: Option<Peer>,
    /// Its other addresses, tried in order when it fails to answer or
    /// answers 503 (RFC 3263 4.3).
    alternates: Vec<Peer>,
}

/// When to refresh a binding granted for `granted`: half-way for a short
/// one, a minute before the end for a long one, so a lost REGISTER has
/// time for its retransmissions and one more try.
fn refresh_after(granted: Duration) -> Duration {
    let half = granted / 2;
    granted
        .saturating_sub(Duration::from_secs(60))
        .max(half)
        // A registrar granting seconds is not refreshed seconds apart.
        .max(Duration::from_secs(30))
}

impl UserAgent {
    /// Starts registering as `config` says, and keeps the binding fresh.
    pub fn register(&mut self, now: Instant, config: RegisterConfig) {
        let expires = config.expires.max(MIN_EXPIRES);
        let registration = Registration {
            call_id: self.new_call_id(),
            local_tag: self.unique(),
            cseq: 0,
            in_flight: None,
            answered: Vec::new(),
            cycle: Vec::new(),
            state: RegistrationState::Registering,
            failures: 0,
            next: None,
            removing: false,
            expires,
            config,
            at: None,
            alternates: Vec::new(),
        };
        tracing::info!(
            registrar = %registration.config.registrar,
            aor = %format!("sip:{}@{}", registration.config.user, registration.config.domain),
            "registering"
        );
        self.registration = Some(registration);
        self.send_register(now);
    }

    /// Removes our binding (a REGISTER with Expires: 0), as the server
    /// stops; nothing is refreshed after.
    pub fn unregister(&mut self, now: Instant) {
        let Some(r) = self.registration.as_mut() else {
            return;
        };
        if r.removing {
            return;
        }
        r.removing = true;
        r.next = None;
        if matches!(r.state, RegistrationState::Unregistered) {
            return;
        }
        tracing::info!(registrar = %r.config.registrar, "removing our registration");
        self.send_register(now);
    }

    /// Where the registration stands, if there is one.
    pub fn registration_state(&self) -> Option<&RegistrationState> {
        self.registration.as_ref().map(|r| &r.state)
    }

    /// Whether a REGISTER is out: a stopping server waits for the answer
    /// to its unregistration.
    pub fn registration_busy(&self) -> bool {
        self.registration
            .as_ref()
            .is_some_and(|r| r.in_flight.is_some())
    }

    /// The user our registration's Contact carries: the trunk sends the
    /// calls for it there, with the number dialled in the To.
    pub(super) fn registered_user(&self) -> Option<&str> {
        self.config
            .registered_user
            .as_deref()
            .or_else(|| self.registration.as_ref().map(|r| r.config.user.as_str()))
    }

    fn send_register(&mut self, now: Instant) {
        let branch = format!("z9hG4bK{}", self.unique());
        let Some(r) = self.registration.as_mut() else {
            return;
        };
        let to = match r.at {
            Some(at) => at,
            None => match self.config.directory.locate_all(
                std::iter::once(&r.config.registrar).chain(&r.config.backups),
                &mut self.rng,
            ) {
                Ok(mut peers) => {
                    let first = peers.remove(0);
                    r.at = Some(first);
                    r.alternates = peers;
                    first
                }
                Err(e) => {
                    self.register_failed(now, e);
                    return;
                }
            },
        };
        r.cseq += 1;
        r.next = None;
        let transport = to.transport;
        let sent_by = self.config.sent_by(transport);
        let aor = format!("sip:{}@{}", r.config.user, r.config.domain);
        let request_uri = format!("sip:{}", r.config.domain);
        let expires = if r.removing { 0 } else { r.expires.as_secs() };
        let mut s = String::with_capacity(600);
        let _ = write!(s, "REGISTER {request_uri} SIP/2.0\r\n");
        let _ = write!(
            s,
            "Via: SIP/2.0/{} {sent_by};branch={branch};rport{}\r\n",
            transport.via_token(),
            transport.via_params()
        );
        let _ = write!(s, "Max-Forwards: 70\r\n");
        let _ = write!(s, "From: <{aor}>;tag={}\r\n", r.local_tag);
        let _ = write!(s, "To: <{aor}>\r\n");
        let _ = write!(s, "Call-ID: {}\r\n", r.call_id);
        let _ = write!(s, "CSeq: {} REGISTER\r\n", r.cseq);
        let _ = write!(
            s,
            "Contact: <sip:{}@{sent_by}{}>\r\n",
            r.config.user,
            transport.uri_param()
        );
        let _ = write!(s, "Expires: {expires}\r\n");
        let _ = write!(s, "Allow: {}\r\n", super::ALLOW);
        let _ = write!(s, "User-Agent: {}\r\n", self.config.product);
        if let Some(creds) = &r.config.credentials {
            for a in &mut r.answered {
                let nc = a.counter.next(&a.challenge.nonce);
                let value = auth::authorize(
                    &a.challenge,
                    creds,
                    "REGISTER",
                    &request_uri,
                    nc,
                    &a.cnonce,
                    &[],
                );
                let _ = write!(s, "{}: {value}\r\n", a.header);
            }
        }
        let _ = write!(s, "Content-Length: 0\r\n\r\n");
        r.in_flight = Some(branch.clone());
        let tx = NonInviteClientTransaction::new(
            now,
            s.into_bytes().into(),
            self.config.timers,
            transport.is_reliable(),
        );
        self.client.insert(
            branch.clone(),
            ClientTx {
                tx,
                to,
                call: NO_CALL,
                method: Method::Register,
            },
        );
        self.drain_client(now, &branch);
    }

    /// A final response to our REGISTER.
    pub(super) fn on_register_response(&mut self, now: Instant, status: u16, m: &Message) {
        let branch = m.top_via().and_then(|v| v.branch.clone());
        let Some(r) = self.registration.as_mut() else {
            return;
        };
        if branch.is_none() || r.in_flight != branch {
            return;
        }
        r.in_flight = None;
        if status == 503 && self.register_elsewhere(now) {
            return;
        }
        let Some(r) = self.registration.as_mut() else {
            return;
        };
        match status {
            200..=299 if r.removing => {
                r.state = RegistrationState::Unregistered;
                tracing::info!(registrar = %r.config.registrar, "registration removed");
            }
            200..=299 => {
                let transport = r.at.map_or(Transport::Udp, |p| p.transport);
                let ours = format!("sip:{}@{}", r.config.user, self.config.sent_by(transport));
                let granted = granted_expiry(m, &ours).unwrap_or(r.expires);
                if granted.is_zero() {
                    // The registrar kept no binding of ours.
                    self.register_failed(now, "the registrar granted no binding".into());
                    return;
                }
                r.state = RegistrationState::Registered { expires: granted };
                r.failures = 0;
                r.cycle.clear();
                let at = now + refresh_after(granted);
                r.next = Some(at);
                tracing::info!(
                    registrar = %r.config.registrar,
                    expires_s = granted.as_secs(),
                    refresh_in_s = refresh_after(granted).as_secs(),
                    "registered"
                );
                self.schedule(Some(at), TimerOwner::Register);
            }
            401 | 407 => self.answer_register_challenge(now, status, m),
            423 => {
                let min = m
                    .header("Min-Expires")
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                match min {
                    Some(min) if min > r.expires && min <= Duration::from_secs(86_400) => {
                        r.expires = min;
                        self.send_register(now);
                    }
                    _ => self.register_failed(now, "423 without a usable Min-Expires".into()),
                }
            }
            _ => {
                let phrase = match &m.start {
                    message::StartLine::Response { reason, .. } => reason.as_str(),
                    message::StartLine::Request { .. } => "",
                };
                // A phrase is the registrar's text: kept short and plain.
                let phrase: String = phrase
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(80)
                    .collect();
                let reason = format!("{status} {phrase}");
                self.register_failed(now, reason);
            }
        }
    }

    fn answer_register_challenge(&mut self, now: Instant, status: u16, m: &Message) {
        let (asked, answer) = if status == 401 {
            ("WWW-Authenticate", "Authorization")
        } else {
            ("Proxy-Authenticate", "Proxy-Authorization")
        };
        let challenges: Vec<Challenge> = m
            .headers_named(asked)
            .filter_map(|v| Challenge::parse(v).ok())
            .collect();
        let cnonce = auth::new_cnonce(&mut self.rng);
        let Some(r) = self.registration.as_mut() else {
            return;
        };
        let Some(challenge) = auth::choose(&challenges).cloned() else {
            self.register_failed(now, format!("{status} with no challenge we can answer"));
            return;
        };
        if r.config.credentials.is_none() {
            self.register_failed(now, format!("{status}: the registrar wants credentials"));
            return;
        }
        // Challenged again with a nonce we answered, or for a realm we
        // answered in this round without the nonce going stale: our
        // credentials were refused, and sending them again would not
        // change that. (A refresh's first challenge is no refusal: the
        // nonce we kept from the last round may simply have expired.)
        let same_realm = r
            .cycle
            .iter()
            .any(|(h, realm, _)| *h == answer && *realm == challenge.realm);
        let same_nonce = r.cycle.iter().any(|(_, _, n)| *n == challenge.nonce);
        if same_nonce || (same_realm && !challenge.stale) || r.cycle.len() >= MAX_CHALLENGES {
            self.register_failed(
                now,
                format!("{status}: the registrar refused our credentials"),
            );
            return;
        }
        r.answered
            .retain(|a| !(a.header == answer && a.challenge.realm == challenge.realm));
        r.cycle
            .push((answer, challenge.realm.clone(), challenge.nonce.clone()));
        r.answered.push(Answered {
            header: answer,
            challenge,
            counter: auth::NonceCounter::new(),
            cnonce,
        });
        self.send_register(now);
    }

    /// A REGISTER got no answer: a failure if it is the one in flight (an
    /// older refresh timing out must not end the unregistration's wait).
    pub(super) fn register_unanswered(&mut self, now: Instant, branch: &str) {
        let ours = self
            .registration
            .as_ref()
            .is_some_and(|r| r.in_flight.as_deref() == Some(branch));
        if ours && !self.register_elsewhere(now) {
            self.register_failed(now, "REGISTER: no response (timeout)".into());
        }
    }

    /// The registrar's address failed us: send the REGISTER to its next
    /// one, if DNS gave another; false if not.
    fn register_elsewhere(&mut self, now: Instant) -> bool {
        let Some(r) = self.registration.as_mut() else {
            return false;
        };
        if r.alternates.is_empty() {
            return false;
        }
        let failed = r.at;
        let next = r.alternates.remove(0);
        r.at = Some(next);
        r.in_flight = None;
        // Challenges were the failed server's; the next one sets its own.
        r.answered.clear();
        r.cycle.clear();
        tracing::info!(failed = ?failed.map(|p| p.to_string()), %next, "the registrar failed there; trying its next address");
        self.send_register(now);
        true
    }

    /// The REGISTER failed: try again after the back-off.
    pub(super) fn register_failed(&mut self, now: Instant, reason: String) {
        let jitter = self.rng.f64();
        let Some(r) = self.registration.as_mut() else {
            return;
        };
        r.in_flight = None;
        r.cycle.clear();
        // The next attempt asks DNS afresh.
        r.at = None;
        r.alternates.clear();
        if r.removing {
            r.state = RegistrationState::Unregistered;
            tracing::warn!(registrar = %r.config.registrar, %reason, "could not remove our registration");
            return;
        }
        r.failures += 1;
        let doubled = BACKOFF_BASE.saturating_mul(1 << r.failures.min(10).saturating_sub(1));
        let ceiling = doubled.min(BACKOFF_MAX);
        // Between half and all of the ceiling, so that many servers that
        // lost one registrar do not come back to it in step.
        let wait = ceiling.mul_f64(0.5 + 0.5 * jitter);
        r.state = RegistrationState::Failed {
            reason: reason.clone(),
        };
        let at = now + wait;
        r.next = Some(at);
        tracing::warn!(
            registrar = %r.config.registrar,
            %reason,
            failures = r.failures,
            retry_in_s = wait.as_secs(),
            "registration failed"
        );
        self.schedule(Some(at), TimerOwner::Register);
    }

    /// The registration's timer: a refresh or a retry is due.
    pub(super) fn registration_due(&mut self, now: Instant) {
        let due = self
            .registration
            .as_ref()
            .is_some_and(|r| r.in_flight.is_none() && r.next.is_some_and(|t| t <= now));
        if due {
            if let Some(r) = self.registration.as_mut() {
                if matches!(r.state, RegistrationState::Registered { .. }) {
                    // The refresh keeps the binding: still registered
                    // while it is out.
                } else {
                    r.state = RegistrationState::Registering;
                }
            }
            self.send_register(now);
        }
    }
}

/// The handle REGISTER's client transactions carry: they belong to no
/// call.
pub(super) const NO_CALL: CallHandle = CallHandle(0);

/// The lifetime the registrar granted our binding: the `expires` of our
/// Contact among those it lists (10.2.4), else its Expires header.
fn granted_expiry(m: &Message, ours: &str) -> Option<Duration> {
    let is_ours = |uri: &str| {
        uri.strip_prefix(ours)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(';'))
    };
    let from_contact = m.headers_named("Contact").find_map(|c| {
        // A 200 lists every binding of the address-of-record, other
        // hosts' too: ours is the one with our address.
        c.split(',')
            .find(|one| is_ours(message::uri_of(one)))
            .and_then(|one| {
                one.split(';').skip(1).find_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    k.trim()
                        .eq_ignore_ascii_case("expires")
                        .then(|| v.trim().parse::<u64>().ok())
                        .flatten()
                })
            })
    });
    from_contact
        .or_else(|| m.header("Expires").and_then(|v| v.trim().parse().ok()))
        // A day at most: it is added to the clock.
        .map(|s: u64| Duration::from_secs(s.min(86_400)))
}
