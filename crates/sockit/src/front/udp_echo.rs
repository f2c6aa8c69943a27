//! `--udp-echo`: every datagram goes back to its sender, ASCII letters upper-cased, as the
//! tutorials' `socketserver.ThreadingUDPServer` example does.
//!
//! An echo service is the classic reflector: a source address can be forged, and a datagram
//! that claims to come from another echo service (or from this one) would bounce between the two
//! forever. So the echo answers only what a client could have sent ([`refused_source`]), and
//! what it sends is metered ([`Guard`]): a token bucket per source address, kept in a table of
//! bounded size, and one over all sources. Two echo services made to face each other stop as
//! soon as either bucket is empty, so one forged datagram costs a bounded number of replies.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::udp_batch::{send_all_gso_blocking, Appetite, Gso, Inbox, RECV_BATCH};
use crate::config::UdpEchoConfig;
use crate::rate::TokenBucket;
use crate::source::Source;

/// The receive buffer's size: the largest length a UDP header can declare, so that no datagram
/// (IPv6 allows payloads up to 65,527 bytes) is truncated before it is echoed.
const RECEIVE_BUFFER: usize = 65_535;

/// What one datagram costs at least, in bytes of the buckets: a stream of empty or tiny
/// datagrams is metered too.
pub(crate) const MIN_COST: u64 = 64;

/// How much a bucket holds: this long at its rate.
pub(crate) const BURST: Duration = Duration::from_millis(250);

/// Source ports of services that answer whatever they are sent, above the well-known ports
/// (all of which, below 1024, are refused): MS SQL browser, SSDP, Apple Remote Desktop,
/// WS-Discovery, mDNS, CoAP, Ubiquiti discovery, memcached, DVR discovery.
const REFLECTOR_PORTS: [u16; 9] = [1434, 1900, 3283, 3702, 5353, 5683, 10001, 11211, 37810];

/// How often the echo's thread looks whether it should stop, while no datagram comes.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// Echoes datagrams until `stop`, upper-casing each in place, within `limits`.
///
/// The echo is one thread of the blocking pool that waits in the receive call itself, as a
/// plain `recvfrom`/`sendto` loop does, so a datagram costs no wake-up of the runtime: every
/// datagram waiting is taken in one call and the answers go out together, those to one
/// address as one UDP GSO send where the system has it (see [`udp_batch`](super::udp_batch)).
/// Each is admitted or refused by the guard in the order received, exactly as one at a time.
/// The thread ends within [`STOP_CHECK`] of `stop`, or of this future being dropped.
pub(crate) async fn serve(socket: UdpSocket, limits: UdpEchoConfig, stop: CancellationToken) {
    let Ok(local) = socket.local_addr() else {
        tracing::warn!("udp-echo: the socket has no local address; not serving");
        return;
    };
    let socket = match blocking(socket) {
        Ok(socket) => socket,
        Err(err) => {
            tracing::warn!(%err, "udp-echo: cannot make the socket blocking; not serving");
            return;
        }
    };
    let thread_stop = stop.child_token();
    let _stop_thread = thread_stop.clone().drop_guard();
    let echo = tokio::task::spawn_blocking(move || echo_loop(&socket, local, limits, &thread_stop));
    if let Err(err) = echo.await {
        tracing::warn!(%err, "udp-echo: the echo's thread failed");
    }
}

/// `socket` as a blocking socket that gives up waiting after [`STOP_CHECK`].
fn blocking(socket: UdpSocket) -> io::Result<std::net::UdpSocket> {
    let socket = socket.into_std()?;
    socket.set_nonblocking(false)?;
    socket.set_read_timeout(Some(STOP_CHECK))?;
    Ok(socket)
}

/// The echo itself, on a blocking socket, until `stop`.
fn echo_loop(
    socket: &std::net::UdpSocket,
    local: SocketAddr,
    limits: UdpEchoConfig,
    stop: &CancellationToken,
) {
    let mut guard = Guard::new(local, limits, Instant::now());
    let mut inbox = Inbox::new(RECV_BATCH, RECEIVE_BUFFER);
    let mut gso = Gso::new();
    let mut appetite = Appetite::new(RECV_BATCH);
    while !stop.is_cancelled() {
        match inbox.recv_blocking_up_to(socket, appetite.want()) {
            Ok(took) => appetite.took(took),
            // Nothing came within STOP_CHECK: look at `stop` again.
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            // An ICMP error from an earlier send, or a transient shortage: keep serving.
            Err(err) => {
                tracing::debug!(%err, "udp receive failed");
                continue;
            }
        }
        let replies = answers(&mut guard, &mut inbox, Instant::now());
        send_all_gso_blocking(socket, &replies, &mut gso);
    }
}

/// The answers to the datagrams in `inbox`, upper-cased in place: those the guard admits, in
/// the order received.
fn answers<'a>(
    guard: &mut Guard,
    inbox: &'a mut Inbox,
    now: Instant,
) -> Vec<(SocketAddr, &'a mut [u8])> {
    let mut replies = Vec::with_capacity(inbox.len());
    for (from, data) in inbox.datagrams_mut() {
        if !guard.admit(from, data.len(), now) {
            tracing::trace!(%from, len = data.len(), "udp-echo: not answered");
            continue;
        }
        data.make_ascii_uppercase();
        replies.push((from, data));
    }
    replies
}

/// Whether a datagram from `from` must go unanswered by the echo bound to `local`, whatever
/// the buckets say: port 0; this service's own port (itself, or another service on the same
/// port); the well-known ports below 1024, where echo (7), discard (9), daytime (13), qotd
/// (17), chargen (19), time (37), DNS, NTP and SNMP answer; the high ports of known reflectors
/// ([`REFLECTOR_PORTS`]); and addresses that are not one host (unspecified, broadcast,
/// multicast).
pub(crate) fn refused_source(from: SocketAddr, local: SocketAddr) -> bool {
    let port = from.port();
    port < 1024
        || port == local.port()
        || REFLECTOR_PORTS.contains(&port)
        || !is_one_host(from.ip())
}

fn is_one_host(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_one_host(IpAddr::V4(v4)),
            None => !(v6.is_unspecified() || v6.is_multicast()),
        },
    }
}

/// A [`TokenBucket`] of bytes: `rate` a second, holding at most [`BURST`]'s worth.
#[derive(Debug, Clone, Copy)]
struct Bucket(TokenBucket);

impl Bucket {
    fn full(rate: u64, now: Instant) -> Bucket {
        Bucket(TokenBucket::full(capacity(rate), now))
    }

    /// Adds what `rate` earned since the last update.
    fn refill(&mut self, rate: u64, now: Instant) {
        self.0.refill(rate as f64, capacity(rate), now);
    }

    /// Whether `cost` can be paid now. A full bucket pays for any one datagram, going into
    /// debt for what is over its capacity, so that a datagram larger than a burst is still
    /// answered, and the rate over time holds all the same.
    fn has(&self, cost: u64, rate: u64) -> bool {
        self.0.tokens() >= cost as f64 || self.is_full(rate)
    }

    fn take(&mut self, cost: u64) {
        self.0.spend(cost as f64);
    }

    fn is_full(&self, rate: u64) -> bool {
        self.0.tokens() >= capacity(rate)
    }
}

fn capacity(rate: u64) -> f64 {
    rate as f64 * BURST.as_secs_f64()
}

/// Decides which datagrams the echo answers.
#[derive(Debug)]
pub(crate) struct Guard {
    local: SocketAddr,
    limits: UdpEchoConfig,
    total: Bucket,
    /// By address alone (an IPv6 address by its /64): forged source ports or addresses of one
    /// network must not buy a victim more buckets.
    sources: HashMap<Source, Bucket>,
    /// When the table of sources was last swept of full buckets.
    swept: Instant,
}

impl Guard {
    pub(crate) fn new(local: SocketAddr, limits: UdpEchoConfig, now: Instant) -> Guard {
        Guard {
            local,
            limits,
            total: Bucket::full(limits.rate, now),
            sources: HashMap::new(),
            swept: now,
        }
    }

    /// Whether to answer `len` bytes from `from` now; if so, the answer is paid for.
    pub(crate) fn admit(&mut self, from: SocketAddr, len: usize, now: Instant) -> bool {
        if refused_source(from, self.local) {
            return false;
        }
        let cost = (len as u64).max(MIN_COST);
        let rate = self.limits.source_rate;
        let ip = Source::of(from.ip());
        if !self.sources.contains_key(&ip) && !self.has_room_for_a_source(now) {
            return false;
        }
        let source = self
            .sources
            .entry(ip)
            .or_insert_with(|| Bucket::full(rate, now));
        source.refill(rate, now);
        self.total.refill(self.limits.rate, now);
        if !(source.has(cost, rate) && self.total.has(cost, self.limits.rate)) {
            return false;
        }
        source.take(cost);
        self.total.take(cost);
        true
    }

    /// Whether one more source fits in the table, after forgetting the sources whose buckets
    /// have filled again (they are as good as new). The sweep runs at most once in the time a
    /// bucket takes to fill, so a flood of new sources cannot make every datagram a sweep.
    fn has_room_for_a_source(&mut self, now: Instant) -> bool {
        if self.sources.len() < self.limits.max_sources {
            return true;
        }
        if now.saturating_duration_since(self.swept) < BURST {
            return false;
        }
        self.swept = now;
        let rate = self.limits.source_rate;
        self.sources.retain(|_, bucket| {
            bucket.refill(rate, now);
            !bucket.is_full(rate)
        });
        self.sources.len() < self.limits.max_sources
    }

    #[cfg(test)]
    fn sources(&self) -> usize {
        self.sources.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: &str = "127.0.0.1:7007";

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn guard(source_rate: u64, rate: u64, max_sources: usize) -> (Guard, Instant) {
        let now = Instant::now();
        let limits = UdpEchoConfig {
            source_rate,
            rate,
            max_sources,
        };
        (Guard::new(addr(LOCAL), limits, now), now)
    }

    #[test]
    fn reflectors_itself_and_non_hosts_are_never_answered() {
        let local = addr(LOCAL);
        for from in [
            "127.0.0.1:7007",  // itself
            "192.0.2.1:7007",  // another service on the same port
            "192.0.2.1:0",     // port 0
            "192.0.2.1:7",     // echo
            "192.0.2.1:9",     // discard
            "192.0.2.1:13",    // daytime
            "192.0.2.1:17",    // qotd
            "192.0.2.1:19",    // chargen
            "192.0.2.1:37",    // time
            "192.0.2.1:53",    // DNS
            "192.0.2.1:123",   // NTP
            "192.0.2.1:1023",  // any well-known port
            "192.0.2.1:1900",  // SSDP
            "192.0.2.1:11211", // memcached
            "0.0.0.0:5000",    // unspecified
            "255.255.255.255:5000",
            "224.0.0.1:5000", // multicast
            "[ff02::1]:5000",
            "[::ffff:224.0.0.1]:5000",
        ] {
            assert!(refused_source(addr(from), local), "{from} answered");
        }
        for from in ["127.0.0.1:1024", "127.0.0.1:54321", "[::1]:40000"] {
            assert!(!refused_source(addr(from), local), "{from} refused");
        }
    }

    #[test]
    fn one_source_draws_its_burst_then_its_rate() {
        let (mut guard, now) = guard(64_000, 1_000_000, 16);
        let from = addr("127.0.0.1:40000");
        // A burst of a quarter second at 64,000 bytes/s: 16,000 bytes, 250 datagrams of 64.
        let answered = (0..1000).take_while(|_| guard.admit(from, 10, now)).count();
        assert_eq!(answered, 250);
        assert!(
            !guard.admit(addr("127.0.0.1:40001"), 10, now),
            "another port of the same address shares its bucket"
        );
        let v6 = addr("[2001:db8::1]:40000");
        let answered = (0..1000).take_while(|_| guard.admit(v6, 10, now)).count();
        assert_eq!(answered, 250);
        assert!(
            !guard.admit(addr("[2001:db8::ffff:2]:40000"), 10, now),
            "another address of the same IPv6 /64 shares its bucket"
        );
        assert!(guard.admit(addr("[2001:db8:0:1::1]:40000"), 10, now));
        assert!(
            guard.admit(addr("127.0.0.2:40000"), 10, now),
            "another address has its own bucket"
        );
        let later = now + Duration::from_millis(100);
        let answered = (0..1000)
            .take_while(|_| guard.admit(from, 640, later))
            .count();
        assert_eq!(answered, 10, "6,400 bytes earned in 100 ms");
    }

    #[test]
    fn all_sources_together_stay_within_the_total() {
        let (mut guard, now) = guard(64_000, 100_000, 10_000);
        // 25,000 bytes in the total's bucket: sources each within their own run it dry.
        let answered = (0..1000u16)
            .filter(|n| {
                guard.admit(
                    addr(&format!("127.0.{}.{}:2000", n / 250, 1 + n % 250)),
                    1000,
                    now,
                )
            })
            .count();
        assert_eq!(answered, 25);
    }

    #[test]
    fn the_table_of_sources_is_bounded_and_forgets_full_buckets() {
        let (mut guard, now) = guard(64_000, 100_000_000, 4);
        for n in 0..4u16 {
            assert!(guard.admit(addr(&format!("127.0.0.{}:2000", 1 + n)), 10, now));
        }
        let newcomer = addr("127.0.0.9:3000");
        assert!(!guard.admit(newcomer, 10, now), "the table is full");
        assert_eq!(guard.sources(), 4);
        let later = now + BURST;
        assert!(
            guard.admit(newcomer, 10, later),
            "full buckets were forgotten"
        );
        assert_eq!(guard.sources(), 1);
    }

    #[test]
    fn a_datagram_larger_than_a_burst_is_answered_and_paid_for_in_debt() {
        let now = Instant::now();
        let limits = UdpEchoConfig::default();
        let mut guard = Guard::new(addr("127.0.0.1:9"), limits, now);
        let from = addr("127.0.0.2:40000");
        assert!(
            guard.admit(from, 65_000, now),
            "a full bucket answers the largest datagram"
        );
        // Its cost is owed, by every port of that address, until paid back at the rate.
        assert!(!guard.admit(from, 100, now));
        assert!(!guard.admit(addr("127.0.0.2:40001"), 100, now));
        let repaid = Duration::from_secs_f64(65_000.0 / limits.source_rate as f64);
        assert!(!guard.admit(from, 100, now + repaid / 2));
        assert!(guard.admit(from, 100, now + repaid));
    }
}
