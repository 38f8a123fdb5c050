//! A scripted SIP peer for the lab: the trunk that brings a caller (and,
//! in-dialog, the ACD that takes REFER), or the trunk that receives the
//! callbacks we dial. It is a small user agent of its own, written from
//! RFC 3261 independently of ours: it retransmits its requests until they
//! are answered (17.1), answers a retransmitted request with the same
//! response, and ACKs every 2xx it gets, so calls survive a lossy network.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::sip::message::{self, Message, Method};

/// RFC 3261 T1 and T2.
const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);

/// A request we sent and retransmit until it is answered.
struct Pending {
    bytes: Vec<u8>,
    next: Instant,
    interval: Duration,
    invite: bool,
    /// When we give up (64*T1).
    give_up: Instant,
}

/// What the peer knows of its one dialog.
#[derive(Debug, Default, Clone)]
pub(super) struct DialogState {
    /// Our tag.
    pub(super) local_tag: String,
    /// The endpoint's tag, once it answered.
    pub(super) remote_tag: Option<String>,
    /// The endpoint's Contact URI (where in-dialog requests go).
    pub(super) remote_target: Option<String>,
    /// Our next CSeq.
    pub(super) cseq: u32,
}

/// One peer with one call.
pub(super) struct Peer {
    /// Its SIP address.
    pub(super) addr: SocketAddr,
    /// Its RTP address (in its SDP).
    pub(super) rtp: SocketAddr,
    pub(super) call_id: String,
    pub(super) dialog: DialogState,
    pending: HashMap<String, Pending>,
    /// Responses we sent, by the request's branch and method, to send
    /// again when the request is retransmitted.
    answered: HashMap<(String, String), Vec<u8>>,
    next_branch: u32,
    /// Every message received, in order (retransmissions included).
    pub(super) received: Vec<Message>,
    /// ... and the bytes each came as.
    pub(super) raw: Vec<Vec<u8>>,
    /// SIP to send now (the lab puts it on the network).
    pub(super) outbox: Vec<Vec<u8>>,
    /// The endpoint's SDP answer (or offer, in a call it placed).
    pub(super) remote_sdp: Option<String>,
    /// How many ACKs to "lose" before sending them again.
    pub(super) drop_acks: usize,
    /// How REFER is answered: the status, and the NOTIFY sipfrag status
    /// that follows a 202.
    pub(super) refer_answer: (u16, u16),
    /// How an INVITE from the endpoint is answered, in order: e.g.
    /// `[407, 200]` challenges first, then answers.
    pub(super) invite_answers: Vec<u16>,
    /// A BYE from the endpoint was answered.
    pub(super) got_bye: bool,
    /// The 200 to our INVITE arrived.
    pub(super) answered_at: Option<Instant>,
    /// We sent CANCEL: a 200 that crosses it is ACKed and then ended.
    cancelled: bool,
    acks_sent: usize,
    /// The ACK of the 2xx we answered an INVITE with arrived.
    pub(super) confirmed_at: Option<Instant>,
    /// An INVITE we answered only with 180 (an `invite_answers` of 180):
    /// it rings until CANCELled, then gets 487.
    ringing: Option<Message>,
    /// The payload type our SDP gives telephone-event.
    pub(super) dtmf_pt: u8,
    /// The payload type our audio goes out with.
    pub(super) audio_pt: u8,
    /// Our SIP comes over TLS (the lab still carries it as datagrams).
    pub(super) tls: bool,
    /// Our SRTP key: our SDP is then an `RTP/SAVP` offer with it.
    pub(super) srtp_key: Option<crate::sip::sdp::sdes::SdesKey>,
}

impl Peer {
    pub(super) fn new(addr: SocketAddr, rtp: SocketAddr, call_id: &str) -> Self {
        Self {
            addr,
            rtp,
            call_id: call_id.to_string(),
            dialog: DialogState {
                local_tag: format!("peer-{}", addr.port()),
                cseq: 1,
                ..DialogState::default()
            },
            pending: HashMap::new(),
            answered: HashMap::new(),
            next_branch: 0,
            received: Vec::new(),
            raw: Vec::new(),
            outbox: Vec::new(),
            remote_sdp: None,
            drop_acks: 0,
            refer_answer: (202, 200),
            invite_answers: vec![200],
            got_bye: false,
            answered_at: None,
            cancelled: false,
            acks_sent: 0,
            confirmed_at: None,
            ringing: None,
            dtmf_pt: 101,
            audio_pt: 0,
            tls: false,
            srtp_key: None,
        }
    }

    /// The endpoint's SRTP key, from the `a=crypto` of its SDP.
    pub(super) fn endpoint_srtp_key(&self) -> Option<crate::sip::sdp::sdes::SdesKey> {
        let sdp = crate::sip::sdp::parse(self.remote_sdp.as_ref()?).ok()?;
        let audio = sdp.media.first()?;
        crate::sip::sdp::sdes::first_usable(&audio.crypto).map(|(_, key)| key)
    }

    fn branch(&mut self) -> String {
        self.next_branch += 1;
        format!("z9hG4bK-peer{}-{}", self.addr.port(), self.next_branch)
    }

    pub(super) fn sdp(&self) -> String {
        let (proto, crypto) = match &self.srtp_key {
            Some(key) => (
                "RTP/SAVP",
                format!(
                    "a=crypto:1 {}\r\n",
                    crate::sip::sdp::sdes::attribute(1, key)
                        .split_once(' ')
                        .map_or("", |(_, rest)| rest)
                ),
            ),
            None => ("RTP/AVP", String::new()),
        };
        format!(
            "v=0\r\no=peer 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} {proto} 0 {pt}\r\n{crypto}a=rtpmap:0 PCMU/8000\r\na=rtpmap:{pt} telephone-event/8000\r\na=fmtp:{pt} 0-15\r\na=sendrecv\r\n",
            ip = self.rtp.ip(),
            port = self.rtp.port(),
            pt = self.dtmf_pt
        )
    }

    /// Sends a request and retransmits it until answered.
    fn send_request(&mut self, now: Instant, method: &str, uri: &str, extra: &str, body: &str) {
        let branch = self.branch();
        let to_tag = self
            .dialog
            .remote_tag
            .as_ref()
            .map(|t| format!(";tag={t}"))
            .unwrap_or_default();
        let cseq = self.dialog.cseq;
        self.dialog.cseq += 1;
        let content_type = if body.is_empty() {
            String::new()
        } else if method == "INFO" {
            "Content-Type: application/dtmf-relay\r\n".to_string()
        } else {
            "Content-Type: application/sdp\r\n".to_string()
        };
        let bytes = format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {addr};branch={branch}\r\nMax-Forwards: 70\r\nFrom: <sip:37120000000@{addr}>;tag={tag}\r\nTo: <sip:800@127.0.0.1>{to_tag}\r\nCall-ID: {cid}\r\nCSeq: {cseq} {method}\r\nContact: <sip:peer@{addr}>\r\n{extra}{content_type}Content-Length: {len}\r\n\r\n{body}",
            addr = self.addr,
            tag = self.dialog.local_tag,
            cid = self.call_id,
            len = body.len(),
        )
        .into_bytes();
        self.outbox.push(bytes.clone());
        self.pending.insert(
            branch,
            Pending {
                bytes,
                next: now + T1,
                interval: T1,
                invite: method == "INVITE",
                give_up: now + 64 * T1,
            },
        );
    }

    /// The caller dials `number` with an SDP offer.
    pub(super) fn invite(&mut self, now: Instant, number: &str) {
        let uri = format!("sip:{number}@127.0.0.1");
        let sdp = self.sdp();
        self.send_request(now, "INVITE", &uri, "", &sdp);
    }

    /// An in-dialog request to the endpoint's Contact.
    pub(super) fn in_dialog(&mut self, now: Instant, method: &str, extra: &str, body: &str) {
        let uri = self
            .dialog
            .remote_target
            .clone()
            .unwrap_or_else(|| "sip:800@127.0.0.1".into());
        self.send_request(now, method, &uri, extra, body);
    }

    /// CANCEL for our INVITE (same branch, RFC 3261 9.1).
    pub(super) fn cancel(&mut self, now: Instant) {
        self.cancelled = true;
        let Some((branch, p)) = self.pending.iter().find(|(_, p)| p.invite) else {
            return;
        };
        let text = String::from_utf8_lossy(&p.bytes).to_string();
        let first = text
            .lines()
            .next()
            .unwrap_or_default()
            .replace("INVITE", "CANCEL");
        let keep = |l: &&str| {
            l.starts_with("Via:")
                || l.starts_with("From:")
                || l.starts_with("To:")
                || l.starts_with("Call-ID:")
                || l.starts_with("Max-Forwards:")
        };
        let mut out = format!("{first}\r\n");
        for l in text.lines().skip(1).filter(keep) {
            out.push_str(l);
            out.push_str("\r\n");
        }
        let cseq = text
            .lines()
            .find(|l| l.starts_with("CSeq:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("1");
        out.push_str(&format!("CSeq: {cseq} CANCEL\r\nContent-Length: 0\r\n\r\n"));
        let bytes = out.into_bytes();
        let key = format!("{branch}-cancel");
        self.outbox.push(bytes.clone());
        self.pending.insert(
            key,
            Pending {
                bytes,
                next: now + T1,
                interval: T1,
                invite: false,
                give_up: now + 64 * T1,
            },
        );
    }

    /// When a retransmission is next due.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.next).min()
    }

    /// Retransmits what is due (Timer A / E, doubling to T2).
    pub(super) fn handle_timeout(&mut self, now: Instant) {
        self.pending.retain(|_, p| now < p.give_up);
        for p in self.pending.values_mut() {
            if p.next <= now {
                self.outbox.push(p.bytes.clone());
                p.interval = if p.invite {
                    p.interval * 2
                } else {
                    (p.interval * 2).min(T2)
                };
                p.next = now + p.interval;
            }
        }
    }

    /// A datagram from the endpoint.
    pub(super) fn handle(&mut self, now: Instant, bytes: &[u8]) {
        let Ok(m) = message::parse(bytes) else {
            panic!(
                "the endpoint sent unparsable SIP:\n{}",
                String::from_utf8_lossy(bytes)
            );
        };
        self.received.push(m.clone());
        self.raw.push(bytes.to_vec());
        if m.is_request() {
            self.on_request(now, &m);
        } else {
            self.on_response(now, &m);
        }
    }

    fn on_response(&mut self, now: Instant, m: &Message) {
        let branch = m
            .top_via()
            .and_then(|v| v.branch.clone())
            .unwrap_or_default();
        let status = m.status().unwrap_or(0);
        let invite = m.method() == Method::Invite;
        if let Some(p) = self.pending.get(&branch) {
            // A provisional response stops INVITE retransmissions (Timer A,
            // 17.1.1.2); a final one ends every client transaction.
            if status >= 200 || p.invite {
                if status >= 200 {
                    self.pending.remove(&branch);
                } else if let Some(p) = self.pending.get_mut(&branch) {
                    p.next = now + Duration::from_secs(3600);
                }
            }
        }
        if m.method() == Method::Cancel {
            self.pending.remove(&format!("{branch}-cancel"));
        }
        if invite && (200..300).contains(&status) {
            self.answered_at.get_or_insert(now);
            self.dialog.remote_tag = m.to_tag().map(str::to_string);
            self.dialog.remote_target = m.header("Contact").map(|c| message::uri_of(c).to_string());
            if !m.body.is_empty() {
                self.remote_sdp = Some(String::from_utf8_lossy(&m.body).to_string());
            }
            if self.drop_acks > 0 {
                self.drop_acks -= 1;
                return;
            }
            let first = self.answered_at == Some(now) && !self.got_ack_sent();
            self.send_ack(m, &branch);
            if self.cancelled && first {
                self.in_dialog(now, "BYE", "", "");
            }
        }
    }

    fn got_ack_sent(&self) -> bool {
        self.acks_sent > 0
    }

    /// The ACK for a 2xx: a new transaction (RFC 3261 13.2.2.4).
    fn send_ack(&mut self, response: &Message, _invite_branch: &str) {
        self.acks_sent += 1;
        let cseq = response.cseq().map(|c| c.0).unwrap_or(1);
        let uri = self
            .dialog
            .remote_target
            .clone()
            .unwrap_or_else(|| "sip:800@127.0.0.1".into());
        let branch = self.branch();
        let to = response.header("To").unwrap_or_default();
        let bytes = format!(
            "ACK {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {addr};branch={branch}\r\nMax-Forwards: 70\r\nFrom: <sip:37120000000@{addr}>;tag={tag}\r\nTo: {to}\r\nCall-ID: {cid}\r\nCSeq: {cseq} ACK\r\nContent-Length: 0\r\n\r\n",
            addr = self.addr,
            tag = self.dialog.local_tag,
            cid = self.call_id,
        );
        self.outbox.push(bytes.into_bytes());
    }

    fn on_request(&mut self, now: Instant, m: &Message) {
        let method = m.method();
        let branch = m
            .top_via()
            .and_then(|v| v.branch.clone())
            .unwrap_or_default();
        if method == Method::Ack {
            // The ACK of our 2xx (not of a 407 or 486): the call is up.
            if self.pending.remove("2xx").is_some() {
                self.confirmed_at.get_or_insert(now);
            }
            return;
        }
        let key = (branch, method.as_str().to_string());
        if let Some(again) = self.answered.get(&key) {
            self.outbox.push(again.clone());
            return;
        }
        let (status, body) = match method {
            Method::Bye => {
                self.got_bye = true;
                (200, String::new())
            }
            Method::Refer => (self.refer_answer.0, String::new()),
            Method::Invite => {
                // A call the endpoint places: our answer's SDP, after any
                // challenges scripted first.
                let status = if self.invite_answers.len() > 1 {
                    self.invite_answers.remove(0)
                } else {
                    self.invite_answers.first().copied().unwrap_or(200)
                };
                if !m.body.is_empty() {
                    self.remote_sdp = Some(String::from_utf8_lossy(&m.body).to_string());
                }
                if status == 200 {
                    self.dialog.remote_tag = m.from_tag().map(str::to_string);
                    self.dialog.remote_target =
                        m.header("Contact").map(|c| message::uri_of(c).to_string());
                    self.call_id = m.call_id().to_string();
                    (200, self.sdp())
                } else {
                    (status, String::new())
                }
            }
            Method::Cancel => {
                if let Some(invite) = self.ringing.take() {
                    let terminated = self.response(&invite, 487, "");
                    let key = (
                        invite
                            .top_via()
                            .and_then(|v| v.branch.clone())
                            .unwrap_or_default(),
                        "INVITE".to_string(),
                    );
                    self.answered.insert(key, terminated.clone());
                    self.outbox.push(terminated);
                }
                (200, String::new())
            }
            _ => (200, String::new()),
        };
        if method == Method::Invite && status == 180 {
            self.ringing = Some(m.clone());
        }
        let response = self.response(m, status, &body);
        self.answered.insert(key, response.clone());
        self.outbox.push(response.clone());
        if method == Method::Invite && status == 200 {
            // A UAS sends its 2xx again until the ACK comes (13.3.1.4).
            self.pending.insert(
                "2xx".into(),
                Pending {
                    bytes: response,
                    next: now + T1,
                    interval: T1,
                    invite: false,
                    give_up: now + 64 * T1,
                },
            );
        }
        if method == Method::Refer && status == 202 {
            let frag = format!("SIP/2.0 {} Done\r\n", self.refer_answer.1);
            self.in_dialog(
                now,
                "NOTIFY",
                "Event: refer\r\nSubscription-State: terminated;reason=noresource\r\nContent-Type: message/sipfrag\r\n",
                &frag,
            );
        }
    }

    fn response(&self, request: &Message, status: u16, body: &str) -> Vec<u8> {
        let reason = match status {
            200 => "OK",
            202 => "Accepted",
            180 => "Ringing",
            487 => "Request Terminated",
            407 => "Proxy Authentication Required",
            486 => "Busy Here",
            _ => "Whatever",
        };
        let mut out = format!("SIP/2.0 {status} {reason}\r\n");
        for v in request.headers_named("Via") {
            out.push_str(&format!("Via: {v}\r\n"));
        }
        let to = request.header("To").unwrap_or_default();
        let to = if message::tag_param(to).is_some() {
            to.to_string()
        } else {
            format!("{to};tag={}", self.dialog.local_tag)
        };
        out.push_str(&format!(
            "From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\n",
            request.header("From").unwrap_or_default(),
            request.call_id(),
            request.header("CSeq").unwrap_or_default(),
        ));
        if status == 200 && request.method() == Method::Invite {
            out.push_str(&format!("Contact: <sip:peer@{}>\r\n", self.addr));
        }
        if status == 407 {
            out.push_str("Proxy-Authenticate: Digest realm=\"trunk.test\", nonce=\"n0nce\", algorithm=MD5, qop=\"auth\"\r\n");
        }
        if !body.is_empty() {
            out.push_str("Content-Type: application/sdp\r\n");
        }
        out.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        out.into_bytes()
    }

    /// Where the endpoint wants our RTP (from its SDP).
    pub(super) fn endpoint_rtp(&self) -> Option<SocketAddr> {
        let sdp = self.remote_sdp.as_ref()?;
        let parsed = crate::sip::sdp::parse(sdp).ok()?;
        let audio = parsed.media.first()?;
        let ip = parsed.connection.or(audio.connection)?;
        Some(SocketAddr::new(ip, audio.port))
    }

    /// Requests of `method` received so far (retransmissions included).
    pub(super) fn requests(&self, method: Method) -> usize {
        self.received
            .iter()
            .filter(|m| m.is_request() && m.method() == method)
            .count()
    }

    /// Final responses to our requests of `method`, by status.
    pub(super) fn finals(&self, method: Method) -> Vec<u16> {
        self.received
            .iter()
            .filter(|m| !m.is_request() && m.method() == method)
            .filter_map(Message::status)
            .filter(|s| *s >= 200)
            .collect()
    }
}
