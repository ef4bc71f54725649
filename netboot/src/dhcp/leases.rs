//! The lease table: pure, in memory, O(1) or O(log n) per operation.
//!
//! - `by_ip` holds one entry per address the server has ever touched (offered, bound, released,
//!   expired, declined, or skipped because it is reserved), so it is bounded by the configured
//!   pools plus the reserved addresses, and capped by `max_entries`.
//! - `by_key` maps a client (option 61, else its MAC) to its one address.
//! - Expiry uses a min-heap of `(time, ip)` with lazy deletion (a popped timer that no longer
//!   matches its entry is ignored), so renewals never search the heap.
//! - Allocation never scans a pool: a cursor walks each pool once over the server's life
//!   (addresses never used), then freed addresses are reused oldest first from a queue. Expired
//!   and released entries keep their client key until the address goes to someone else, so a
//!   returning client gets its old address back when nobody took it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::net::Ipv4Addr;

use serde::Serialize;

use crate::node::MacAddr;

/// Seconds since the Unix epoch. Lease times are wall-clock because they outlive the process.
pub type Secs = u64;

/// Whom a lease belongs to: the client identifier (option 61) when the client sends one, else
/// its hardware address (RFC 2131 4.2).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum ClientKey {
    Mac(MacAddr),
    Id(Box<[u8]>),
}

impl ClientKey {
    /// The key of a request.
    pub fn new(client_id: Option<&[u8]>, mac: MacAddr) -> Self {
        match client_id {
            Some(id) if !id.is_empty() => ClientKey::Id(id.into()),
            _ => ClientKey::Mac(mac),
        }
    }
}

/// The state of an address in the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LeaseState {
    /// Offered and held for the client until `until`.
    Offered,
    /// Bound (ACKed) until `until`.
    Bound,
    /// Released by the client; free, remembered for the client.
    Released,
    /// Expired (or never used but reserved for someone else); free.
    Expired,
    /// Declined by a client (address in use on the wire); out of the pool until `until`.
    Declined,
}

impl LeaseState {
    fn is_free(self) -> bool {
        matches!(self, LeaseState::Released | LeaseState::Expired)
    }
}

/// One entry of the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The client it belongs (or last belonged) to; `None` for declined and placeholder entries.
    pub key: Option<ClientKey>,
    pub mac: MacAddr,
    pub state: LeaseState,
    /// End of the offer, lease or decline; the release time for released entries.
    pub until: Secs,
    /// The host name the client sent (option 12), bounded.
    pub hostname: Option<Box<str>>,
    /// Whether the address sits in its pool's free queue (avoids duplicates there).
    queued: bool,
}

/// A persisted change of the table, written to the journal before the reply that depends on it
/// leaves. Offers are never persisted: losing one is harmless.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRecord {
    pub ip: Ipv4Addr,
    pub state: RecordState,
    pub key: ClientKey,
    pub mac: MacAddr,
    /// Lease end (bound), release time (released) or end of quarantine (declined).
    pub until: Secs,
    pub hostname: Option<Box<str>>,
}

/// The kinds of persisted changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordState {
    Bound,
    Released,
    Declined,
}

/// A lease as the appliance shows it (`node list`, status).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LeaseInfo {
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    pub state: LeaseState,
    /// Unix seconds.
    pub expires: Secs,
    /// The node's name from its reservation, else the host name the client sent.
    pub hostname: Option<String>,
}

struct Pool {
    ranges: Vec<(u32, u32)>,
    /// Next never-used candidate: index into `ranges` and address (u64: no overflow at the end).
    range: usize,
    next: u64,
    free: VecDeque<u32>,
}

impl Pool {
    fn next_fresh(&mut self) -> Option<u32> {
        while let Some(&(start, end)) = self.ranges.get(self.range) {
            if self.next < u64::from(start) {
                self.next = u64::from(start);
            }
            if self.next <= u64::from(end) {
                let ip = self.next as u32;
                self.next += 1;
                return Some(ip);
            }
            self.range += 1;
        }
        None
    }
}

/// How many free-queue addresses one allocation may look at before giving up (the queue
/// rotates addresses reserved for other clients to its back, so the next call moves on).
const MAX_PROBES: usize = 64;

/// The lease table. See the module documentation.
pub struct LeaseTable {
    by_ip: HashMap<u32, Lease>,
    by_key: HashMap<ClientKey, u32>,
    timers: BinaryHeap<Reverse<(Secs, u32)>>,
    pools: Vec<Pool>,
    /// (start, end, pool index), sorted, for `pool_of`.
    index: Vec<(u32, u32, usize)>,
    excluded: HashSet<u32>,
    max_entries: usize,
}

impl LeaseTable {
    /// A table for `pools[i]` = the ranges of subnet `i`. `excluded` addresses (server, routers,
    /// network and broadcast addresses) are never allocated from a pool.
    pub fn new(
        pools: Vec<Vec<(Ipv4Addr, Ipv4Addr)>>,
        excluded: impl IntoIterator<Item = Ipv4Addr>,
        max_entries: usize,
    ) -> Self {
        let mut index = Vec::new();
        let pools = pools
            .into_iter()
            .enumerate()
            .map(|(i, ranges)| {
                let mut ranges: Vec<(u32, u32)> = ranges
                    .into_iter()
                    .map(|(a, b)| (u32::from(a), u32::from(b)))
                    .filter(|(a, b)| a <= b)
                    .collect();
                ranges.sort_unstable();
                index.extend(ranges.iter().map(|&(a, b)| (a, b, i)));
                Pool {
                    range: 0,
                    next: ranges.first().map_or(0, |r| u64::from(r.0)),
                    ranges,
                    free: VecDeque::new(),
                }
            })
            .collect();
        index.sort_unstable();
        LeaseTable {
            by_ip: HashMap::new(),
            by_key: HashMap::new(),
            timers: BinaryHeap::new(),
            pools,
            index,
            excluded: excluded.into_iter().map(u32::from).collect(),
            max_entries: max_entries.max(1),
        }
    }

    /// The subnet index whose pool contains `ip`.
    pub fn pool_of(&self, ip: Ipv4Addr) -> Option<usize> {
        let ip = u32::from(ip);
        let i = self.index.partition_point(|&(start, _, _)| start <= ip);
        let &(start, end, pool) = self.index.get(i.checked_sub(1)?)?;
        (start <= ip && ip <= end).then_some(pool)
    }

    /// Whether `ip` is excluded from allocation.
    pub fn is_excluded(&self, ip: Ipv4Addr) -> bool {
        self.excluded.contains(&u32::from(ip))
    }

    /// The entry of an address.
    pub fn get(&self, ip: Ipv4Addr) -> Option<&Lease> {
        self.by_ip.get(&u32::from(ip))
    }

    /// The address a client holds or last held, with its entry.
    pub fn by_key(&self, key: &ClientKey) -> Option<(Ipv4Addr, &Lease)> {
        let ip = *self.by_key.get(key)?;
        Some((Ipv4Addr::from(ip), self.by_ip.get(&ip)?))
    }

    /// Number of pending expiry timers (tests: the heap stays bounded).
    pub fn timer_count(&self) -> usize {
        self.timers.len()
    }

    /// Number of entries (all states).
    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    /// Whether the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }

    /// Number of bound leases.
    pub fn bound_count(&self) -> usize {
        self.by_ip
            .values()
            .filter(|l| l.state == LeaseState::Bound)
            .count()
    }

    /// Whether `ip` may go to `key`: unknown to the table, free, or already this client's.
    pub fn available_for(&self, ip: Ipv4Addr, key: &ClientKey) -> bool {
        match self.by_ip.get(&u32::from(ip)) {
            None => true,
            Some(l) if l.state == LeaseState::Declined => false,
            Some(l) if l.state.is_free() => true,
            Some(l) => l.key.as_ref() == Some(key),
        }
    }

    /// Moves every timer that is due: offers and leases expire (the address becomes free but
    /// stays remembered for its client), declined addresses return to the pool.
    pub fn expire(&mut self, now: Secs) {
        while let Some(&Reverse((t, ip))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(l) = self.by_ip.get_mut(&ip) else {
                continue;
            };
            if l.until != t
                || !matches!(
                    l.state,
                    LeaseState::Offered | LeaseState::Bound | LeaseState::Declined
                )
            {
                continue;
            }
            l.state = LeaseState::Expired;
            self.queue_free(ip);
        }
    }

    fn queue_free(&mut self, ip: u32) {
        let Some(pool) = self.pool_of(Ipv4Addr::from(ip)) else {
            return;
        };
        if let Some(l) = self.by_ip.get_mut(&ip) {
            if !l.queued {
                l.queued = true;
                self.pools[pool].free.push_back(ip);
            }
        }
    }

    /// Gives `ip` to `key` in `state` until `until`. The client's previous address (if another)
    /// is freed, and a previous owner of `ip` forgets it. False when the table is full.
    fn attach(
        &mut self,
        ip: Ipv4Addr,
        key: &ClientKey,
        mac: MacAddr,
        state: LeaseState,
        until: Secs,
        hostname: Option<Box<str>>,
    ) -> bool {
        let ipn = u32::from(ip);
        if !self.by_ip.contains_key(&ipn) && self.by_ip.len() >= self.max_entries {
            return false;
        }
        if let Some(&old) = self.by_key.get(key) {
            if old != ipn {
                if let Some(l) = self.by_ip.get_mut(&old) {
                    if matches!(l.state, LeaseState::Offered | LeaseState::Bound) {
                        l.state = LeaseState::Released;
                    }
                    l.key = None;
                }
                self.queue_free(old);
            }
        }
        let (queued, old_key, same_timer) = match self.by_ip.get(&ipn) {
            Some(l) => (
                l.queued,
                l.key.clone(),
                l.until == until && l.state == state && l.key.as_ref() == Some(key),
            ),
            None => (false, None, false),
        };
        if let Some(k) = old_key {
            if &k != key && self.by_key.get(&k) == Some(&ipn) {
                self.by_key.remove(&k);
            }
        }
        let hostname = hostname.or_else(|| {
            self.by_ip
                .get(&ipn)
                .filter(|l| l.key.as_ref() == Some(key))
                .and_then(|l| l.hostname.clone())
        });
        self.by_ip.insert(
            ipn,
            Lease {
                key: Some(key.clone()),
                mac,
                state,
                until,
                hostname,
                queued,
            },
        );
        self.by_key.insert(key.clone(), ipn);
        // A repeated DISCOVER within the same second needs no second timer: keeps the heap
        // bounded under a flood from one client.
        if matches!(state, LeaseState::Offered | LeaseState::Bound) && !same_timer {
            self.timers.push(Reverse((until, ipn)));
        }
        true
    }

    /// Holds `ip` for `key` until `until`. False when the table is full.
    pub fn offer(&mut self, ip: Ipv4Addr, key: &ClientKey, mac: MacAddr, until: Secs) -> bool {
        self.attach(ip, key, mac, LeaseState::Offered, until, None)
    }

    /// Binds `ip` to `key` until `expires` and returns the record to persist, or `None` when the
    /// table is full.
    pub fn bind(
        &mut self,
        ip: Ipv4Addr,
        key: &ClientKey,
        mac: MacAddr,
        expires: Secs,
        hostname: Option<Box<str>>,
    ) -> Option<LeaseRecord> {
        if !self.attach(ip, key, mac, LeaseState::Bound, expires, hostname) {
            return None;
        }
        let hostname = self.get(ip).and_then(|l| l.hostname.clone());
        Some(LeaseRecord {
            ip,
            state: RecordState::Bound,
            key: key.clone(),
            mac,
            until: expires,
            hostname,
        })
    }

    /// A client gave `ip` back. The entry stays remembered for it.
    pub fn release(&mut self, ip: Ipv4Addr, now: Secs) -> Option<LeaseRecord> {
        let ipn = u32::from(ip);
        let l = self.by_ip.get_mut(&ipn)?;
        if !matches!(l.state, LeaseState::Bound | LeaseState::Offered) {
            return None;
        }
        l.state = LeaseState::Released;
        l.until = now;
        let rec = LeaseRecord {
            ip,
            state: RecordState::Released,
            key: l.key.clone()?,
            mac: l.mac,
            until: now,
            hostname: None,
        };
        self.queue_free(ipn);
        Some(rec)
    }

    /// A client found `ip` in use: keep it out of the pool until `until`.
    pub fn decline(
        &mut self,
        ip: Ipv4Addr,
        key: &ClientKey,
        mac: MacAddr,
        until: Secs,
    ) -> Option<LeaseRecord> {
        let ipn = u32::from(ip);
        if !self.by_ip.contains_key(&ipn) && self.by_ip.len() >= self.max_entries {
            return None;
        }
        if let Some(k) = self.by_ip.get(&ipn).and_then(|l| l.key.clone()) {
            if self.by_key.get(&k) == Some(&ipn) {
                self.by_key.remove(&k);
            }
        }
        let queued = self.by_ip.get(&ipn).is_some_and(|l| l.queued);
        self.by_ip.insert(
            ipn,
            Lease {
                key: None,
                mac,
                state: LeaseState::Declined,
                until,
                hostname: None,
                queued,
            },
        );
        self.timers.push(Reverse((until, ipn)));
        Some(LeaseRecord {
            ip,
            state: RecordState::Declined,
            key: key.clone(),
            mac,
            until,
            hostname: None,
        })
    }

    /// The client chose another server: drop the offer we hold for it.
    pub fn cancel_offer(&mut self, key: &ClientKey, now: Secs) {
        if let Some(&ip) = self.by_key.get(key) {
            if let Some(l) = self.by_ip.get_mut(&ip) {
                if l.state == LeaseState::Offered {
                    l.state = LeaseState::Expired;
                    l.until = now;
                    self.queue_free(ip);
                }
            }
        }
    }

    /// A free address of subnet `pool` that `acceptable` agrees to (the caller rejects
    /// addresses reserved for other clients), or `None` when the pool is exhausted.
    pub fn allocate(
        &mut self,
        pool: usize,
        mut acceptable: impl FnMut(Ipv4Addr) -> bool,
    ) -> Option<Ipv4Addr> {
        if pool >= self.pools.len() {
            return None;
        }
        // Addresses never used first: a returning client's old address stays free longest.
        while let Some(ipn) = self.pools[pool].next_fresh() {
            if self.excluded.contains(&ipn) || self.by_ip.contains_key(&ipn) {
                continue;
            }
            let ip = Ipv4Addr::from(ipn);
            if acceptable(ip) {
                return Some(ip);
            }
            // Reserved for someone else: remember it as a free entry at the back of the queue,
            // so it is retried if the reservation goes away.
            if self.by_ip.len() < self.max_entries {
                self.by_ip.insert(
                    ipn,
                    Lease {
                        key: None,
                        mac: MacAddr::default(),
                        state: LeaseState::Expired,
                        until: 0,
                        hostname: None,
                        queued: true,
                    },
                );
                self.pools[pool].free.push_back(ipn);
            }
        }
        let mut probes = 0;
        while probes < MAX_PROBES {
            let Some(ipn) = self.pools[pool].free.pop_front() else {
                break;
            };
            let Some(l) = self.by_ip.get_mut(&ipn) else {
                continue;
            };
            l.queued = false;
            if !l.state.is_free() || self.excluded.contains(&ipn) {
                continue;
            }
            probes += 1;
            let ip = Ipv4Addr::from(ipn);
            if acceptable(ip) {
                return Some(ip);
            }
            l.queued = true;
            self.pools[pool].free.push_back(ipn);
        }
        None
    }

    /// Replays one persisted change (journal replay at start).
    pub fn apply(&mut self, rec: &LeaseRecord) {
        match rec.state {
            RecordState::Bound => {
                self.attach(
                    rec.ip,
                    &rec.key,
                    rec.mac,
                    LeaseState::Bound,
                    rec.until,
                    rec.hostname.clone(),
                );
            }
            RecordState::Released => {
                let ipn = u32::from(rec.ip);
                let mine = self
                    .by_ip
                    .get(&ipn)
                    .is_some_and(|l| l.key.as_ref() == Some(&rec.key));
                if mine {
                    self.release(rec.ip, rec.until);
                }
            }
            RecordState::Declined => {
                self.decline(rec.ip, &rec.key, rec.mac, rec.until);
            }
        }
    }

    /// After a replay: put every free address back in its pool's queue.
    pub fn requeue_free(&mut self) {
        let free: Vec<u32> = self
            .by_ip
            .iter()
            .filter(|(_, l)| l.state.is_free() && !l.queued)
            .map(|(ip, _)| *ip)
            .collect();
        for ip in free {
            self.queue_free(ip);
        }
    }

    /// Every entry.
    pub fn iter(&self) -> impl Iterator<Item = (Ipv4Addr, &Lease)> {
        self.by_ip.iter().map(|(ip, l)| (Ipv4Addr::from(*ip), l))
    }

    /// Records that recreate the live state (bound and declined entries), for compaction.
    pub fn snapshot(&self) -> Vec<LeaseRecord> {
        self.by_ip
            .iter()
            .filter_map(|(ip, l)| {
                let state = match l.state {
                    LeaseState::Bound => RecordState::Bound,
                    LeaseState::Declined => RecordState::Declined,
                    _ => return None,
                };
                Some(LeaseRecord {
                    ip: Ipv4Addr::from(*ip),
                    state,
                    key: l.key.clone().unwrap_or(ClientKey::Mac(l.mac)),
                    mac: l.mac,
                    until: l.until,
                    hostname: l.hostname.clone(),
                })
            })
            .collect()
    }

    /// Checks the internal invariants (tests and fuzzing): every client key points at an entry
    /// that names it, and no two keys share an address.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut seen = HashSet::new();
        for (key, ip) in &self.by_key {
            if !seen.insert(*ip) {
                return Err(format!("{} is mapped from two keys", Ipv4Addr::from(*ip)));
            }
            match self.by_ip.get(ip) {
                Some(l) if l.key.as_ref() == Some(key) => {}
                _ => {
                    return Err(format!(
                        "key {key:?} points at {} which is not its",
                        Ipv4Addr::from(*ip)
                    ))
                }
            }
        }
        for (ip, l) in &self.by_ip {
            if matches!(l.state, LeaseState::Offered | LeaseState::Bound) {
                match &l.key {
                    Some(k) if self.by_key.get(k) == Some(ip) => {}
                    _ => {
                        return Err(format!(
                            "{} is held but not by its key",
                            Ipv4Addr::from(*ip)
                        ))
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }
    fn key(n: u8) -> ClientKey {
        ClientKey::Mac(MacAddr([0, 0, 0, 0, 0, n]))
    }
    fn table() -> LeaseTable {
        LeaseTable::new(
            vec![vec![(ip("10.0.0.10"), ip("10.0.0.12"))]],
            [ip("10.0.0.11")],
            100,
        )
    }

    #[test]
    fn allocates_skips_excluded_and_exhausts() {
        let mut t = table();
        let a = t.allocate(0, |_| true).unwrap();
        assert_eq!(a, ip("10.0.0.10"));
        assert!(t.offer(a, &key(1), MacAddr::default(), 100));
        let b = t.allocate(0, |_| true).unwrap();
        assert_eq!(b, ip("10.0.0.12"));
        assert!(t.offer(b, &key(2), MacAddr::default(), 100));
        assert_eq!(t.allocate(0, |_| true), None);
        t.expire(100);
        // Both offers expired: reused oldest first.
        assert_eq!(t.allocate(0, |_| true), Some(a));
        t.check_invariants().unwrap();
    }

    #[test]
    fn reserved_addresses_are_skipped_and_retried() {
        let mut t = table();
        let reserved = ip("10.0.0.10");
        let a = t.allocate(0, |x| x != reserved).unwrap();
        assert_eq!(a, ip("10.0.0.12"));
        t.offer(a, &key(1), MacAddr::default(), 100);
        assert_eq!(t.allocate(0, |x| x != reserved), None);
        // The reservation went away: the parked address is handed out.
        assert_eq!(t.allocate(0, |_| true), Some(reserved));
    }

    #[test]
    fn bind_release_affinity_and_move() {
        let mut t = table();
        let a = ip("10.0.0.10");
        let r = t
            .bind(a, &key(1), MacAddr::default(), 50, Some("n1".into()))
            .unwrap();
        assert_eq!(r.state, RecordState::Bound);
        assert!(!t.available_for(a, &key(2)));
        assert!(t.available_for(a, &key(1)));
        t.release(a, 10).unwrap();
        assert!(t.available_for(a, &key(2)));
        assert_eq!(t.by_key(&key(1)).unwrap().0, a);
        // Someone else takes it: key 1 forgets it.
        t.bind(a, &key(2), MacAddr::default(), 60, None).unwrap();
        assert!(t.by_key(&key(1)).is_none());
        // Key 2 moves to another address: the old one is freed.
        t.bind(ip("10.0.0.12"), &key(2), MacAddr::default(), 60, None)
            .unwrap();
        assert!(t.get(a).unwrap().state.is_free());
        t.check_invariants().unwrap();
    }

    #[test]
    fn expiry_uses_the_latest_timer_only() {
        let mut t = table();
        let a = ip("10.0.0.10");
        t.bind(a, &key(1), MacAddr::default(), 50, None).unwrap();
        t.bind(a, &key(1), MacAddr::default(), 150, None).unwrap();
        t.expire(100);
        assert_eq!(t.get(a).unwrap().state, LeaseState::Bound);
        t.expire(150);
        assert_eq!(t.get(a).unwrap().state, LeaseState::Expired);
    }

    #[test]
    fn decline_quarantines() {
        let mut t = table();
        let a = ip("10.0.0.10");
        t.bind(a, &key(1), MacAddr::default(), 50, None).unwrap();
        t.decline(a, &key(1), MacAddr::default(), 600).unwrap();
        assert!(!t.available_for(a, &key(1)));
        assert!(t.by_key(&key(1)).is_none());
        assert_eq!(t.allocate(0, |_| true), Some(ip("10.0.0.12")));
        t.expire(600);
        assert!(t.available_for(a, &key(2)));
        t.check_invariants().unwrap();
    }

    #[test]
    fn repeated_offers_in_one_second_share_a_timer() {
        let mut t = table();
        for _ in 0..1000 {
            t.offer(ip("10.0.0.10"), &key(1), MacAddr::default(), 30);
        }
        assert_eq!(t.timer_count(), 1);
    }

    #[test]
    fn capacity_is_capped() {
        let mut t = LeaseTable::new(vec![vec![(ip("10.0.0.1"), ip("10.0.0.100"))]], [], 2);
        assert!(t.offer(ip("10.0.0.1"), &key(1), MacAddr::default(), 10));
        assert!(t.offer(ip("10.0.0.2"), &key(2), MacAddr::default(), 10));
        assert!(!t.offer(ip("10.0.0.3"), &key(3), MacAddr::default(), 10));
    }

    #[test]
    fn pool_lookup() {
        let t = LeaseTable::new(
            vec![
                vec![
                    (ip("10.0.0.10"), ip("10.0.0.20")),
                    (ip("10.0.0.30"), ip("10.0.0.40")),
                ],
                vec![(ip("10.1.0.10"), ip("10.1.0.20"))],
            ],
            [],
            10,
        );
        assert_eq!(t.pool_of(ip("10.0.0.10")), Some(0));
        assert_eq!(t.pool_of(ip("10.0.0.25")), None);
        assert_eq!(t.pool_of(ip("10.0.0.40")), Some(0));
        assert_eq!(t.pool_of(ip("10.1.0.15")), Some(1));
        assert_eq!(t.pool_of(ip("9.0.0.0")), None);
    }
}
