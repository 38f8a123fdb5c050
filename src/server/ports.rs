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
    /// The range, for tables by port.
    first: u16,
    last: u16,
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
            first,
            last,
        }
    }

    /// An empty table for values by this pool's ports.
    pub fn table<T>(&self) -> PortTable<T> {
        // Even ports only: the first is `2 * base`, and there are `len`.
        let base = self.first.div_ceil(2);
        PortTable {
            base,
            len: usize::from(self.last / 2 + 1).saturating_sub(usize::from(base)),
            slots: Vec::new(),
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

/// Values by RTP port, in a vector indexed by the port's place in the
/// pool's range. A worker finds the socket of every packet it sends here:
/// one index, where a hash map hashed the port and probed a bucket.
///
/// Pool ports are even; an odd port is never stored nor found. The vector
/// grows to the highest port stored, as far as the range goes.
pub struct PortTable<T> {
    /// Half the range's first even port: port `p` is at `p / 2 - base`.
    base: u16,
    /// How many even ports the range holds.
    len: usize,
    slots: Vec<Option<T>>,
}

impl<T> PortTable<T> {
    fn index(&self, port: u16) -> Option<usize> {
        if port % 2 != 0 {
            return None;
        }
        let i = usize::from((port / 2).checked_sub(self.base)?);
        (i < self.len).then_some(i)
    }

    /// How many ports the table can hold (its range's even ports).
    pub fn capacity(&self) -> usize {
        self.len
    }

    /// `port`'s place in the table, from 0 to [`PortTable::capacity`]:
    /// one per port, the same in every table of the pool.
    pub fn slot(&self, port: u16) -> Option<usize> {
        self.index(port)
    }

    /// The value for `port`.
    pub fn get(&self, port: u16) -> Option<&T> {
        self.slots.get(self.index(port)?)?.as_ref()
    }

    /// The value for `port`, to change.
    pub fn get_mut(&mut self, port: u16) -> Option<&mut T> {
        let i = self.index(port)?;
        self.slots.get_mut(i)?.as_mut()
    }

    /// Stores `value` for `port` (in place of any value it had), or gives
    /// it back if `port` is not one of the pool's.
    pub fn insert(&mut self, port: u16, value: T) -> Result<(), T> {
        let Some(i) = self.index(port) else {
            return Err(value);
        };
        if i >= self.slots.len() {
            self.slots.resize_with(i + 1, || None);
        }
        self.slots[i] = Some(value);
        Ok(())
    }

    /// Takes `port`'s value out.
    pub fn remove(&mut self, port: u16) -> Option<T> {
        let i = self.index(port)?;
        self.slots.get_mut(i)?.take()
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
    fn a_table_finds_each_pool_port_and_nothing_else() {
        for (first, last) in [(20000, 20010), (20001, 20009), (65534, 65535)] {
            let pool = PortPool::new(first, last);
            let mut table = pool.table::<u32>();
            let ports: Vec<u16> = pool.free.iter().copied().collect();
            for &p in &ports {
                assert_eq!(table.insert(p, u32::from(p) * 3), Ok(()));
            }
            for &p in &ports {
                assert_eq!(table.get(p), Some(&(u32::from(p) * 3)));
            }
            // Each port its own slot, within the capacity.
            let mut slots: Vec<usize> = ports.iter().map(|&p| table.slot(p).unwrap()).collect();
            slots.sort_unstable();
            slots.dedup();
            assert_eq!(slots.len(), ports.len());
            assert!(slots.iter().all(|&s| s < table.capacity()));
            assert_eq!(table.capacity(), ports.len());
            // Odd ports, and ports below and above the range.
            let outside = [first.saturating_sub(1), first.saturating_sub(2)];
            let above = [last.saturating_add(1), last.saturating_add(2)];
            for p in outside.into_iter().chain(above) {
                if !(first..=last).contains(&p) {
                    assert_eq!(table.insert(p, 1), Err(1), "port {p}");
                }
            }
            for p in [first | 1, 1, 0, 65535] {
                if !ports.contains(&p) {
                    assert_eq!(table.get(p), None, "port {p}");
                }
            }
            assert_eq!(table.insert(first | 1, 7), Err(7), "odd: given back");
            if let Some(&p) = ports.first() {
                *table.get_mut(p).unwrap() += 1;
                assert_eq!(table.remove(p), Some(u32::from(p) * 3 + 1));
                assert_eq!(table.get(p), None);
                assert_eq!(table.remove(p), None);
            }
        }
    }

    #[test]
    fn the_edges_of_the_port_space_work() {
        assert_eq!(PortPool::new(65534, 65535).available(), 1);
        assert_eq!(PortPool::new(65535, 65535).available(), 0);
        assert_eq!(PortPool::new(20001, 20002).available(), 1);
    }
}
