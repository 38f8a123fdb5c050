//! RTP ports: one even port per call from the configured range (RTCP, if
//! a peer sends it, would use the odd one above, RFC 3550 11).

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr, UdpSocket};

/// The free ports, used round-robin so a port is not reused at once (late
/// packets of the last call would land in the next one).
pub struct PortPool {
    free: VecDeque<u16>,
}

impl PortPool {
    /// Every even port in `first..=last`.
    pub fn new(first: u16, last: u16) -> Self {
        let start = first + (first % 2);
        Self {
            free: (start..=last).step_by(2).collect(),
        }
    }

    /// Binds a socket on the next free port that the OS lets us have.
    pub fn bind(&mut self, ip: IpAddr) -> Option<(UdpSocket, u16)> {
        for _ in 0..self.free.len() {
            let port = self.free.pop_front()?;
            match UdpSocket::bind(SocketAddr::new(ip, port)) {
                Ok(socket) => return Some((socket, port)),
                Err(_) => self.free.push_back(port), // taken by someone else; try later
            }
        }
        None
    }

    /// Gives a port back.
    pub fn release(&mut self, port: u16) {
        self.free.push_back(port);
    }
}
