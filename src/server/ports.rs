//! RTP ports: one even port per call from the configured range (RTCP, if
//! a peer sends it, would use the odd one above, RFC 3550 11).

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr, UdpSocket};

/// The free ports. A call gets a random one from the older half of the
/// queue: random, so that nobody can guess a live call's port from their
/// own (and press keys in it); from the older half, so that a port just
/// released is not reused at once (late packets of the last call would
/// land in the next one).
pub struct PortPool {
    free: VecDeque<u16>,
    total: usize,
}

impl PortPool {
    /// Every even port in `first..=last` (which the configuration checked
    /// holds at least one).
    pub fn new(first: u16, last: u16) -> Self {
        let mut ports: Vec<u16> = (u32::from(first)..=u32::from(last))
            .filter(|p| p % 2 == 0)
            .filter_map(|p| u16::try_from(p).ok())
            .collect();
        fastrand::shuffle(&mut ports);
        Self {
            total: ports.len(),
            free: ports.into(),
        }
    }

    /// How many ports calls hold, and how many there are.
    pub fn in_use(&self) -> (usize, usize) {
        (self.total - self.free.len(), self.total)
    }

    /// How many ports are free.
    #[cfg(test)]
    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// Binds a socket on a random free port that the OS lets us have.
    pub fn bind(&mut self, ip: IpAddr) -> Option<(UdpSocket, u16)> {
        for _ in 0..self.free.len() {
            let older_half = self.free.len().div_ceil(2);
            let port = self.free.swap_remove_front(fastrand::usize(..older_half))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_even_random_and_not_reused_at_once() {
        let mut pool = PortPool::new(41001, 41400);
        assert_eq!(pool.available(), 200);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let mut taken = Vec::new();
        for _ in 0..20 {
            let (socket, port) = pool.bind(ip).expect("a free port");
            assert_eq!(port % 2, 0);
            taken.push((socket, port));
        }
        let ports: Vec<u16> = taken.iter().map(|(_, p)| *p).collect();
        let sequential = ports.windows(2).filter(|w| w[1] == w[0] + 2).count();
        assert!(sequential < 5, "ports look sequential: {ports:?}");
        let (socket, released) = taken.pop().unwrap();
        drop(socket);
        pool.release(released);
        for _ in 0..50 {
            let (_, port) = pool.bind(ip).expect("a free port");
            assert_ne!(port, released, "a released port waits its turn");
            pool.release(port);
        }
    }

    #[test]
    fn the_edges_of_the_port_space_work() {
        assert_eq!(PortPool::new(65534, 65535).available(), 1);
        assert_eq!(PortPool::new(65535, 65535).available(), 0);
        assert_eq!(PortPool::new(20001, 20002).available(), 1);
    }
}
