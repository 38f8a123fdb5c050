//! A dialog (RFC 3261 section 12) as the UAS that answered the INVITE, and
//! the requests we send inside it.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use crate::sip::message::{self, Message, Method};
use crate::sip::sdp::MediaSession;
use crate::sip::transport::Peer;

/// Where a dialog is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogState {
    /// The INVITE arrived; no final response yet.
    Early,
    /// We sent a 2xx and wait for the ACK.
    Answered,
    /// The ACK arrived.
    Confirmed,
    /// We sent BYE.
    Terminating,
}

/// One dialog.
pub(super) struct Dialog {
    pub call_id: String,
    pub local_tag: String,
    /// Our party: the INVITE's To, without a tag.
    pub local_party: String,
    /// Their party: the INVITE's From, with their tag.
    pub remote_party: String,
    /// Where in-dialog requests go: the INVITE's Contact URI.
    pub remote_target: String,
    /// Record-Route of the INVITE, in order (RFC 3261 12.1.1).
    pub route_set: Vec<String>,
    pub local_cseq: u32,
    pub remote_cseq: u32,
    pub state: DialogState,
    /// Where the INVITE came from (or, for a call we placed, where it
    /// went): over a stream, the connection every request of the dialog
    /// uses; over UDP, the fallback destination when the target is a name
    /// we cannot resolve (no DNS here).
    pub source: Peer,
    /// The initial INVITE and its transaction key, until it is answered.
    pub invite: Option<(Message, crate::sip::transaction::TransactionKey)>,
    /// The leg's offer/answer state: every SDP of the dialog goes
    /// through it. `None` until we answered, or placed the call.
    pub media: Option<MediaSession>,
    /// The 2xx we sent carried our offer (delayed offer): the ACK answers.
    pub offer_in_2xx: bool,
    /// A REFER is under way and the final NOTIFY is due by then.
    pub refer_deadline: Option<Instant>,
    /// A REFER is out and not yet answered.
    pub refer_sent: bool,
    /// The final NOTIFY arrived before the REFER's 2xx (the 2xx was lost
    /// or overtaken, RFC 6665 4.1.2.4): the transfer is reported, and the
    /// 2xx, when it comes, is not news.
    pub refer_settled_early: bool,
    /// The trunk an incoming call came through: it counts against that
    /// trunk's limits until the dialog is forgotten.
    pub trunk: Option<super::TrunkId>,
    /// For a call we placed: where its peer may ask us to send RTP (a
    /// call that came in has its trunk's).
    pub media_networks: Option<crate::sip::admission::Networks>,
    /// The session timer (RFC 4028), when the peer asked for one.
    pub session: Option<super::session_timer::SessionTimer>,
    /// Whether the peer's Allow lists UPDATE (how we refresh a session).
    pub update_allowed: bool,
    /// A secure dialog (RFC 3261 12.1.1): its INVITE came over TLS to a
    /// `sips:` URI (or we placed it to one), so our Contact is `sips:`.
    pub secure: bool,
    /// Our re-INVITE is out: an offer from the peer meanwhile gets 491.
    pub reinvite_pending: bool,
}

impl Dialog {
    /// Where requests in this dialog go.
    pub fn destination(&self) -> Peer {
        // A dialog over a stream keeps to its connection (RFC 5923): a
        // peer or proxy behind NAT can only be reached over it, and a
        // record-routing proxy expects it.
        if self.source.transport.is_reliable() {
            return self.source;
        }
        Peer::udp(self.udp_destination())
    }

    fn udp_destination(&self) -> SocketAddr {
        let target = self
            .route_set
            .first()
            .map(|r| message::uri_of(r))
            .unwrap_or(&self.remote_target);
        match message::uri_host_port(target) {
            Some((host, port)) => match host.parse::<IpAddr>() {
                Ok(ip) => SocketAddr::new(ip, port.unwrap_or(5060)),
                Err(_) => self.source.addr,
            },
            None => self.source.addr,
        }
    }

    /// Builds a request in the dialog (RFC 3261 12.2.1.1) with a new CSeq.
    pub fn request(
        &mut self,
        method: &Method,
        branch: &str,
        config: &super::UaConfig,
        extra: &[(&str, &str)],
        body: Option<(&str, &[u8])>,
    ) -> Vec<u8> {
        self.local_cseq += 1;
        let mut s = String::with_capacity(512);
        // A first hop without `lr` is a strict router (RFC 2543): it wants
        // its own URI as the Request-URI and the remote target as the last
        // Route (RFC 3261 12.2.1.1).
        let strict = self.route_set.first().filter(|r| !is_loose(r));
        let request_uri = match strict {
            Some(first) => message::uri_of(first),
            None => self.remote_target.as_str(),
        };
        let _ = write!(s, "{} {} SIP/2.0\r\n", method.as_str(), request_uri);
        let transport = self.source.transport;
        let _ = write!(
            s,
            "Via: SIP/2.0/{} {};branch={branch};rport{}\r\n",
            transport.via_token(),
            config.sent_by(transport),
            transport.via_params()
        );
        let _ = write!(s, "Max-Forwards: 70\r\n");
        let skip = usize::from(strict.is_some());
        for route in self.route_set.iter().skip(skip) {
            let _ = write!(s, "Route: {route}\r\n");
        }
        if strict.is_some() {
            let _ = write!(s, "Route: <{}>\r\n", self.remote_target);
        }
        let _ = write!(s, "From: {};tag={}\r\n", self.local_party, self.local_tag);
        let _ = write!(s, "To: {}\r\n", self.remote_party);
        let _ = write!(s, "Call-ID: {}\r\n", self.call_id);
        let _ = write!(s, "CSeq: {} {}\r\n", self.local_cseq, method.as_str());
        let _ = write!(s, "Contact: {}\r\n", config.contact(transport, self.secure));
        let _ = write!(s, "User-Agent: {}\r\n", config.product);
        for (n, v) in extra {
            let _ = write!(s, "{n}: {v}\r\n");
        }
        let body = body.unwrap_or(("", &[]));
        if !body.1.is_empty() {
            let _ = write!(s, "Content-Type: {}\r\n", body.0);
        }
        let _ = write!(s, "Content-Length: {}\r\n\r\n", body.1.len());
        let mut out = s.into_bytes();
        out.extend_from_slice(body.1);
        out
    }
}

/// Whether a Route value names a loose router (`;lr` in its URI).
fn is_loose(route: &str) -> bool {
    let uri = message::uri_of(route);
    uri.split(';').skip(1).any(|p| {
        p.split('=')
            .next()
            .is_some_and(|n| n.trim().eq_ignore_ascii_case("lr"))
    })
}

/// A To/From value without its tag parameter.
pub(super) fn without_tag(value: &str) -> String {
    let params_at = match value.rfind('>') {
        Some(i) => i + 1,
        None => value.find(';').unwrap_or(value.len()),
    };
    let (head, params) = value.split_at(params_at);
    let kept: Vec<&str> = params
        .split(';')
        .filter(|p| !p.is_empty() && !p.trim().to_ascii_lowercase().starts_with("tag="))
        .collect();
    let mut out = head.to_string();
    for p in kept {
        out.push(';');
        out.push_str(p);
    }
    out
}

/// The user part of a SIP or tel URI (`sip:+3712000@host` -> `+3712000`).
pub(super) fn user_of(uri: &str) -> String {
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))
        .or_else(|| uri.strip_prefix("tel:"))
        .unwrap_or(uri);
    let user = match rest.find('@') {
        Some(i) => &rest[..i],
        None if uri.starts_with("tel:") => rest,
        None => "",
    };
    user.split(';').next().unwrap_or("").to_string()
}
