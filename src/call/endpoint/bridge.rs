//! The bridge hand-off: callflow places the call to the queue itself, as a
//! B2BUA's second leg. The caller hears the transfer's hold prompts while
//! it rings; once the agent answers, the audio (and RFC 4733 events) is
//! relayed both ways from the two legs' ports, and a BYE from either side
//! ends both.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::call::{context_headers, header_value, user_to_user};
use crate::callback::AttemptOutcome;
use crate::flow::compile::bridge_target;
use crate::flow::interpreter::TransferRequest;
use crate::media::latch::{RtpLatch, RtpPeer};
use crate::sip::admission::Networks;
use crate::sip::sdp::sdes::SdesKey;
use crate::sip::sdp::{MediaSession, Negotiated};
use crate::sip::transport::Peer;
use crate::sip::transport::Transport;
use crate::sip::ua::{CallHandle, EndReason, OutgoingCall, UaEvent};

use super::relay::{payload_range, RelayRule, RelayStream};
use super::{Endpoint, EndpointOutput, QueuedPacket};

/// How long a bridge that could not be placed at all waits before its
/// failure reaches the flow (the caller hears the hold prompt meanwhile).
const BRIDGE_FAILURE_DELAY: Duration = Duration::from_secs(1);

/// The agent's leg of a bridged call.
pub(super) struct BridgeLeg {
    /// The call we placed to the queue.
    pub(super) handle: CallHandle,
    /// Its RTP port.
    pub(super) port: u16,
    /// What its 2xx agreed, once answered.
    media: Option<Negotiated>,
    /// Which inbound RTP on `port` is the agent's.
    latch: RtpLatch,
    /// Where the agent's side may have RTP sent.
    networks: Networks,
    /// The RTP peer last told to the edge.
    peer: Option<RtpPeer>,
    /// The relay rules last told to the edge: for the caller's port, and
    /// for this leg's.
    told: [Option<RelayRule>; 2],
}

impl BridgeLeg {
    /// The edge's news if the agent's RTP peer changed since last told.
    pub(super) fn announce_peer(&mut self) -> Option<EndpointOutput> {
        let peer = self.media.and(self.latch.peer());
        if peer == self.peer {
            return None;
        }
        self.peer = peer;
        Some(EndpointOutput::RtpPeer {
            port: self.port,
            peer,
        })
    }
}

/// Keeps the user part of a From we present to the agent to characters a
/// number or a simple name uses: the caller's From is a claim, and the
/// claim must not be able to bend our request.
fn presentable(caller: &str) -> &str {
    let ok = !caller.is_empty()
        && caller.len() <= 64
        && caller
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+*#._-".contains(&b));
    if ok {
        caller
    } else {
        "anonymous"
    }
}

/// The URI without its URI headers (`?X-...`), which are for REFER only.
fn request_uri(uri: &str) -> &str {
    uri.split('?').next().unwrap_or(uri)
}

fn g711(codec: crate::sip::sdp::Codec) -> crate::media::g711::Codec {
    match codec {
        crate::sip::sdp::Codec::Pcmu => crate::media::g711::Codec::Pcmu,
        crate::sip::sdp::Codec::Pcma => crate::media::g711::Codec::Pcma,
    }
}

/// Rewrites a relayed packet's payload type from one leg's numbering to
/// the other's; `None` for a payload type the target leg did not agree to.
fn map_payload_type(pt: u8, from: &Negotiated, to: &Negotiated) -> Option<u8> {
    if pt == from.payload_type {
        Some(to.payload_type)
    } else if Some(pt) == from.dtmf_payload_type {
        to.dtmf_payload_type
    } else {
        None
    }
}

/// The rule for RTP the `from` leg sends (as its `latch` took it) to go
/// out of `out_port` to the `to` leg at `dest`; `None` until the latch has
/// a source and an audio SSRC. Events pass once their own SSRC is latched
/// and both legs agreed on them.
fn relay_rule(
    latch: &RtpLatch,
    from: &Negotiated,
    to: &Negotiated,
    out_port: u16,
    dest: RtpPeer,
) -> Option<RelayRule> {
    let (source, audio_ssrc, event_ssrc) = latch.latched()?;
    let events = match (from.dtmf_payload_type, to.dtmf_payload_type, event_ssrc) {
        (Some(payload_type), Some(to_payload_type), Some(ssrc)) => Some(RelayStream {
            payload_type,
            ssrc,
            to_payload_type,
        }),
        _ => None,
    };
    Some(RelayRule {
        source,
        audio: RelayStream {
            payload_type: from.payload_type,
            ssrc: audio_ssrc?,
            to_payload_type: to.payload_type,
        },
        events,
        transcode: (from.codec != to.codec).then(|| (g711(from.codec), g711(to.codec))),
        out_port,
        to: dest.addr,
    })
}

impl Endpoint {
    /// For a call we place with secure media (`srtp`): keeps only the
    /// addresses reached over TLS (SDES keys are in the SDP, RFC 4568 8.3)
    /// and makes the key the leg sends with. `None` for plain RTP.
    pub(super) fn secure_leg(
        &mut self,
        srtp: bool,
        peers: &mut Vec<Peer>,
    ) -> Result<Option<SdesKey>, String> {
        if !srtp {
            return Ok(None);
        }
        peers.retain(|p| p.transport == Transport::Tls);
        if peers.is_empty() {
            return Err("SRTP needs TLS, and none of its addresses is over TLS".into());
        }
        self.env.srtp_key().map(Some)
    }

    /// Places the call to the queue for the caller `caller`.
    pub(super) fn start_bridge(&mut self, now: Instant, caller: CallHandle, t: TransferRequest) {
        // One agent leg per call: an earlier one is ended, never leaked.
        if let Some(old) = self.calls.get(&caller).and_then(|a| a.bridge.as_ref()) {
            let old = old.handle;
            self.end_leg(now, caller, Some(old));
        }
        let Some(a) = self.calls.get(&caller) else {
            return;
        };
        let media = a.call.media().copied();
        let presented = presentable(a.call.caller()).to_string();
        let placed = bridge_target(&t.uri).and_then(|target| {
            let peers = self
                .config
                .ua
                .directory
                .locate(&target, &mut self.rng)
                .map_err(|e| format!("the queue at {target}: {e}"))?;
            let media = media.ok_or("the caller has no media to bridge")?;
            let mut peers = peers;
            let key = self
                .secure_leg(t.srtp, &mut peers)
                .map_err(|e| format!("the queue at {target}: {e}"))?;
            let local = self.open_media()?;
            let mut session = MediaSession::with_codecs(local, &[media.codec]);
            if let Some(key) = key {
                session = session.srtp_only(key);
            }
            Ok((peers, session))
        });
        let (mut peers, session) = match placed {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(uri = %t.uri, "cannot bridge the call: {e}");
                if let Some(a) = self.calls.get_mut(&caller) {
                    a.bridge_failure = Some((now + BRIDGE_FAILURE_DELAY, e));
                }
                return;
            }
        };
        let mut headers: Vec<(String, String)> = context_headers(&t)
            .into_iter()
            .map(|(k, v)| (k, header_value(&v)))
            .collect();
        headers.extend(user_to_user(&t));
        let port = session.local().port;
        // Whichever of its servers answers, its media may be at any.
        let networks = self.media_networks_for(&peers);
        let destination = peers.remove(0);
        let handle = self.ua.originate(
            now,
            OutgoingCall {
                target: request_uri(&t.uri).to_string(),
                from_user: presented,
                destination,
                media: session,
                media_networks: networks.clone(),
                credentials: None,
                ring_timeout: t.ring_timeout,
                headers,
                session_expires: Some(crate::sip::ua::SESSION_EXPIRES),
                alternates: peers,
            },
        );
        let latch = RtpLatch::new(false, networks.clone());
        tracing::info!(uri = %t.uri, %destination, leg = handle.0, "bridging the call to the queue");
        if let Some(a) = self.calls.get_mut(&caller) {
            a.bridge = Some(BridgeLeg {
                handle,
                port,
                media: None,
                latch,
                networks,
                peer: None,
                told: [None, None],
            });
        }
        self.legs.insert(handle, caller);
        self.by_port.insert(port, caller);
        self.out
            .push_back(EndpointOutput::RtpOpened { call: handle, port });
        self.pump(now);
    }

    /// Where RTP to a peer at any of `peers` may go (a server DNS gave
    /// several addresses): the media networks of the trunk each belongs
    /// to, else its own address.
    pub(super) fn media_networks_for(&self, peers: &[Peer]) -> Networks {
        let mut nets: Vec<ipnet::IpNet> = Vec::new();
        // The shared admission knows the trunks' sources by name too.
        let shared = self.config.ua.shared_admission.as_ref().map(|a| a.lock());
        for peer in peers {
            let ip = peer.addr.ip();
            let media = match &shared {
                Some(a) => a.media_of_source(ip),
                None => self
                    .config
                    .ua
                    .admission
                    .trunks
                    .iter()
                    .find(|t| t.sources.contains(ip))
                    .map(|t| t.media.clone()),
            };
            match media {
                Some(media) => nets.extend(media.iter()),
                None => nets.push(ipnet::IpNet::from(ip)),
            }
        }
        nets.sort();
        nets.dedup();
        Networks::new(nets)
    }

    /// A SIP event on the agent's leg of `caller`'s call.
    pub(super) fn on_leg_event(&mut self, now: Instant, caller: CallHandle, event: UaEvent) {
        let Some(a) = self.calls.get_mut(&caller) else {
            return;
        };
        let Some(leg) = a.bridge.as_mut() else {
            return;
        };
        let _entered = a.span.clone().entered();
        match event {
            UaEvent::Ringing => tracing::debug!("the queue is ringing"),
            UaEvent::Answered { answer } => {
                // The leg's session took only the caller's codec.
                let agreed = answer.and_then(|n| {
                    let ip = n.remote.ip();
                    if !ip.is_unspecified() && !leg.networks.contains(ip) {
                        return Err(format!(
                            "the answer's media address {ip} is outside the queue's networks"
                        ));
                    }
                    Ok(n)
                });
                match agreed {
                    Ok(n) => {
                        tracing::info!(remote = %n.remote, srtp = n.srtp.is_some(), "the agent answered; relaying the audio");
                        let (port, keys) = (leg.port, n.srtp);
                        leg.latch
                            .expect(n.remote, n.payload_type, n.dtmf_payload_type);
                        leg.media = Some(n);
                        a.call.bridge_answered(now);
                        if let Some(id) = a.call.callback().map(|l| l.id) {
                            self.out.push_back(EndpointOutput::CallbackProgress {
                                id,
                                outcome: AttemptOutcome::Connected,
                            });
                        }
                        self.set_srtp(port, keys);
                    }
                    Err(e) => {
                        tracing::warn!("unusable SDP answer from the queue: {e}");
                        let handle = leg.handle;
                        a.call
                            .bridge_failed(now, format!("unusable SDP answer: {e}"));
                        drop(_entered);
                        self.end_leg(now, caller, Some(handle));
                    }
                }
            }
            // A re-INVITE (the user agent refused one outside the leg's
            // networks), or the answer in the ACK to one without SDP.
            UaEvent::MediaChanged(n)
            | UaEvent::Confirmed {
                answer: Some(Ok(n)),
            } => {
                let ip = n.remote.ip();
                if !ip.is_unspecified() && !leg.networks.contains(ip) {
                    tracing::warn!(remote = %n.remote, "the agent's media moved outside the queue's networks; ending the call");
                    a.call
                        .terminate(now, "agent media outside the queue's networks".into());
                } else {
                    leg.latch
                        .expect(n.remote, n.payload_type, n.dtmf_payload_type);
                    leg.media = Some(n);
                    let port = leg.port;
                    self.set_srtp(port, n.srtp);
                }
            }
            UaEvent::Confirmed {
                answer: Some(Err(e)),
            } => {
                tracing::warn!("unusable SDP answer from the agent: {e}");
                a.call
                    .terminate(now, format!("unusable SDP answer from the agent: {e}"));
            }
            UaEvent::DialFailed { status, reason, .. } => {
                tracing::info!(status, %reason, "the queue did not answer the bridged call");
                a.call.bridge_failed(now, format!("{status} {reason}"));
                drop(_entered);
                self.end_leg(now, caller, None);
            }
            UaEvent::Ended(reason) => {
                tracing::info!(?reason, "the agent's leg ended");
                if a.call.is_bridged() {
                    a.call.agent_hung_up(now);
                } else if reason != EndReason::LocalBye {
                    a.call
                        .bridge_failed(now, format!("the queue's call ended: {reason:?}"));
                }
                drop(_entered);
                self.end_leg(now, caller, None);
            }
            _ => {}
        }
        self.service(now, caller);
    }

    /// Forgets `caller`'s agent leg and frees its port; with `hang_up`,
    /// ends it first (BYE, or CANCEL while it rings).
    pub(super) fn end_leg(
        &mut self,
        now: Instant,
        caller: CallHandle,
        hang_up: Option<CallHandle>,
    ) {
        let Some(a) = self.calls.get_mut(&caller) else {
            return;
        };
        let Some(leg) = a.bridge.take() else {
            return;
        };
        // The edge relays nothing more of either port.
        for (port, told) in [a.port, leg.port].into_iter().zip(leg.told) {
            if told.is_some() {
                self.out
                    .push_back(EndpointOutput::Relay { port, rule: None });
            }
        }
        self.legs.remove(&leg.handle);
        self.by_port.remove(&leg.port);
        self.close_srtp(leg.port);
        self.out
            .push_back(EndpointOutput::RtpClosed { port: leg.port });
        if let Some(h) = hang_up {
            self.ua.hangup(now, h);
        }
    }

    /// Tells the edge where the relay rules of `caller`'s bridge changed:
    /// a direction has one while the bridge is up, neither leg has SRTP
    /// (sealing is the endpoint's), and the sending leg's latch has taken
    /// its source and audio SSRC. Each rule lets through just what
    /// [`Endpoint::relay_from_caller`] and [`Endpoint::relay_from_agent`]
    /// would relay, to the same place.
    pub(super) fn announce_relays(&mut self, caller: CallHandle) {
        let Some(a) = self.calls.get_mut(&caller) else {
            return;
        };
        let Some(leg) = a.bridge.as_mut() else {
            return;
        };
        let plain = !self.srtp.contains_key(&a.port) && !self.srtp.contains_key(&leg.port);
        let rules = match (plain && a.call.is_bridged(), a.call.media(), leg.media) {
            (true, Some(callers), Some(agent)) => [
                leg.latch
                    .peer()
                    .filter(|_| agent.sends_rtp())
                    .and_then(|to| relay_rule(a.call.latch(), callers, &agent, leg.port, to)),
                a.call
                    .rtp_destination()
                    .and_then(|to| relay_rule(&leg.latch, &agent, callers, a.port, to)),
            ],
            _ => [None, None],
        };
        for ((port, told), rule) in [a.port, leg.port].into_iter().zip(&mut leg.told).zip(rules) {
            if *told != rule {
                *told = rule;
                self.out.push_back(EndpointOutput::Relay { port, rule });
            }
        }
    }

    /// RTP that reached the agent leg's port of `caller`'s call: relayed to
    /// the caller if it is the agent's.
    pub(super) fn relay_from_agent(&mut self, caller: CallHandle, from: SocketAddr, packet: &[u8]) {
        let Some(a) = self.calls.get_mut(&caller) else {
            return;
        };
        let Some(leg) = a.bridge.as_mut() else {
            return;
        };
        if !leg.latch.accept(from, packet) {
            return;
        }
        // The first packet may have latched the agent's address.
        if let Some(out) = leg.announce_peer() {
            self.out.push_back(out);
        }
        if !a.call.is_bridged() {
            return;
        }
        let Some(leg) = a.bridge.as_ref() else {
            return;
        };
        let (Some(agent), Some(callers), Some(to)) =
            (leg.media, a.call.media().copied(), a.call.rtp_destination())
        else {
            return;
        };
        let port = a.port;
        self.relay(port, to, packet, &agent, &callers);
    }

    /// RTP the caller sent (already accepted by the call's latch): relayed
    /// to the agent once the bridge is up.
    pub(super) fn relay_from_caller(&mut self, caller: CallHandle, packet: &[u8]) {
        let Some(a) = self.calls.get(&caller) else {
            return;
        };
        let Some(leg) = a.bridge.as_ref() else {
            return;
        };
        let (Some(agent), Some(callers)) = (leg.media, a.call.media().copied()) else {
            return;
        };
        if !agent.sends_rtp() {
            return;
        }
        let Some(to) = leg.latch.peer() else {
            return;
        };
        let port = leg.port;
        self.relay(port, to, packet, &callers, &agent);
    }

    /// Queues `packet` to go out of `port` to `to`, its payload type
    /// renumbered from the `from` leg's to the `to_leg`'s. Sequence numbers,
    /// timestamps and SSRC pass unchanged: each side sees the other's
    /// stream as a new source (RFC 3550 8.2), and RFC 4733 events keep the
    /// timing their sender gave them.
    fn relay(
        &mut self,
        port: u16,
        to: RtpPeer,
        packet: &[u8],
        from: &Negotiated,
        to_leg: &Negotiated,
    ) {
        if packet.len() < 12 {
            return;
        }
        let Some(pt) = map_payload_type(packet[1] & 0x7f, from, to_leg) else {
            return;
        };
        let start = self.rtp_bytes.len();
        self.rtp_bytes.extend_from_slice(packet);
        self.rtp_bytes[start + 1] = (packet[1] & 0x80) | pt;
        // A caller who re-INVITEd to the other G.711 law keeps talking
        // with the agent: the audio is re-encoded, not garbled.
        if pt == to_leg.payload_type && from.codec != to_leg.codec {
            if let Some(payload) = payload_range(packet) {
                let bytes = &mut self.rtp_bytes[start + payload.start..start + payload.end];
                g711(from.codec).transcode(g711(to_leg.codec), bytes);
            }
        }
        if let Some(s) = self.srtp.get_mut(&port) {
            if !s.protect(&mut self.rtp_bytes, start, true) {
                return;
            }
        }
        self.rtp_queue.push(QueuedPacket {
            port,
            to,
            start,
            len: self.rtp_bytes.len() - start,
            late: Duration::ZERO,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::sdp::{Codec, Direction};

    fn leg(pt: u8, dtmf: Option<u8>) -> Negotiated {
        Negotiated {
            codec: Codec::Pcmu,
            payload_type: pt,
            remote: SocketAddr::from(([127, 0, 0, 1], 4000)),
            dtmf_payload_type: dtmf,
            ptime_ms: 20,
            direction: Direction::SendRecv,
            srtp: None,
        }
    }

    #[test]
    fn payload_types_are_renumbered_and_unagreed_ones_dropped() {
        let caller = leg(0, Some(101));
        let agent = leg(0, Some(96));
        assert_eq!(map_payload_type(0, &caller, &agent), Some(0));
        assert_eq!(map_payload_type(101, &caller, &agent), Some(96));
        assert_eq!(map_payload_type(96, &agent, &caller), Some(101));
        assert_eq!(
            map_payload_type(13, &caller, &agent),
            None,
            "comfort noise was not agreed"
        );
        assert_eq!(
            map_payload_type(101, &caller, &leg(0, None)),
            None,
            "no events to a leg without them"
        );
    }

    #[test]
    fn a_claimed_caller_id_cannot_bend_the_request() {
        assert_eq!(presentable("+37120000000"), "+37120000000");
        assert_eq!(presentable("alice"), "alice");
        assert_eq!(presentable("a@evil"), "anonymous");
        assert_eq!(presentable(""), "anonymous");
        assert_eq!(header_value("two\r\nVia: x"), "twoVia: x");
        assert_eq!(request_uri("sip:q@10.0.0.1?X-A=1"), "sip:q@10.0.0.1");
    }
}
