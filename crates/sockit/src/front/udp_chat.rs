//! `--udp`: the chat room over UDP. Datagrams in, through the room's rules, datagrams out.
//!
//! The rules ([`crate::chat::room`]) know members by [`MemberId`]; this front end keeps the map
//! between member ids and the UDP addresses they speak from. A datagram from an address it has
//! no id for arrives as a newcomer under a fresh id, named after the address (`ip:port`), as
//! the tutorials' clients and `nc -u` expect.
//!
//! One task owns the room. It receives a datagram, applies it, and sends what results before
//! receiving the next, so lines are never duplicated and each sender's lines go out in the
//! order they came in. UDP itself may lose datagrams; the room promises nothing more.
//!
//! The reflection rule is about addresses, so it is kept here. A source address can be forged,
//! so the room never amplifies toward an address that has not proven that it receives:
//! - what answers a datagram from an address never heard from (or from one that does not
//!   join) is no larger than that datagram, lines that do not fit being left out;
//! - until an address proves itself, everything sent to it stays within
//!   [`RoomConfig::unconfirmed_bytes`], and everything sent to all unproven addresses together
//!   within [`RoomConfig::unconfirmed_rate`] in any one second ([`SecondWindow`]);
//! - the first line an unproven member can be sent is the ask
//!   ([`confirm::ask_line`](crate::chat::confirm::ask_line)); the line `/confirm TOKEN` back
//!   proves the address, and from then on no budget applies to it. The token is a MAC of the
//!   address ([`ConfirmKey`]), so nothing is kept for an address before it is a member.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::udp_batch::{send_all, Inbox, RECV_BATCH};
use crate::chat::confirm::{ask_line, ConfirmKey, CONFIRMED};
use crate::chat::line::{parse_line, Line};
use crate::chat::room::{Effects, MemberId, Outgoing, RoomConfig, Rooms, MAX_LINE};
use crate::chat::MemberMap;
use crate::chat::{now, RoomHost, RoomLink};
use crate::front::chat_hub::HubMembers;

/// Serves the rooms of `host` on `socket` until `stop`, keeping the reflection rule with the
/// budgets of `config`. The members of `hub` (browsers' WebSockets) share the rooms.
pub(crate) async fn serve<L: RoomLink>(
    socket: UdpSocket,
    mut host: RoomHost<L>,
    config: RoomConfig,
    mut hub: HubMembers,
    stop: CancellationToken,
) {
    let key = match ConfirmKey::random() {
        Ok(key) => key,
        Err(err) => {
            tracing::error!(%err, "udp chat room: no random key for /confirm tokens; not serving");
            return;
        }
    };
    let mut addresses = Addresses::new(key, &config, now());
    // One byte more than the limit in each slot, so that an oversize datagram is seen as one.
    let mut inbox = Inbox::new(RECV_BATCH, MAX_LINE + 1);
    // The datagrams to send for one batch, in the order the room said them.
    let mut sends = Vec::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            received = inbox.recv(&socket) => match received {
                Ok(_) => addresses.batch(&mut host, &mut hub, inbox.datagrams(), &mut sends),
                // An ICMP error from an earlier send, or a transient shortage: keep serving.
                Err(err) => {
                    tracing::debug!(%err, "udp receive failed");
                    continue;
                }
            },
            mut fx = host.next() => {
                addresses.settle(&mut host, &mut hub, &mut fx, now(), &mut sends);
            }
            event = hub.next() => {
                let mut fx = hub.apply(host.rules(), event);
                addresses.settle(&mut host, &mut hub, &mut fx, now(), &mut sends);
            }
        };
        send_all(&socket, &sends).await;
        sends.clear();
    }
}

/// The datagrams to send, each to its address.
type Sends = Vec<(SocketAddr, Arc<str>)>;

/// Whether an address has proven that it receives what the room sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trust {
    /// Not yet: `sent` bytes so far; `asked` once the ask line went out (or when there is
    /// nothing to ask, the address not being a member).
    Unproven { sent: usize, asked: bool },
    /// It sent back its token: no budget applies.
    Proven,
}

/// A member's address and what may be sent to it.
#[derive(Debug)]
struct Peer {
    addr: SocketAddr,
    trust: Trust,
}

/// The room's members as UDP addresses, both ways, and the reflection rule's accounts.
#[derive(Debug)]
struct Addresses {
    ids: HashMap<SocketAddr, MemberId>,
    peers: MemberMap<Peer>,
    key: ConfirmKey,
    /// Bytes an address may be sent in all until proven.
    budget: usize,
    /// What all unproven addresses were sent in the last second.
    unproven: SecondWindow,
    /// The member whose datagram is being answered.
    answering: Option<MemberId>,
    /// When that member was never heard from before: the bytes its answer may still take.
    first: Option<(MemberId, usize)>,
}

impl Addresses {
    fn new(key: ConfirmKey, config: &RoomConfig, now: Instant) -> Addresses {
        Addresses {
            ids: HashMap::new(),
            peers: MemberMap::default(),
            key,
            budget: config.unconfirmed_bytes,
            unproven: SecondWindow::new(config.unconfirmed_rate, now),
            answering: None,
            first: None,
        }
    }

    /// Hands each datagram of a batch to the rules in the order received, and adds what
    /// results for each to `sends`: the same as one datagram at a time.
    fn batch<'a, L: RoomLink>(
        &mut self,
        host: &mut RoomHost<L>,
        hub: &mut HubMembers,
        datagrams: impl Iterator<Item = (SocketAddr, &'a [u8])>,
        sends: &mut Sends,
    ) {
        for (from, data) in datagrams {
            let now = now();
            let mut fx = self.datagram(host.rules(), from, data, now);
            self.settle(host, hub, &mut fx, now, sends);
        }
    }

    /// Shares `fx` through the host, hands the browsers' lines to the hub, adds the lines the
    /// reflection rule allows to `sends`, then forgets the members the room let go.
    fn settle<L: RoomLink>(
        &mut self,
        host: &mut RoomHost<L>,
        hub: &mut HubMembers,
        fx: &mut Effects,
        now: Instant,
        sends: &mut Sends,
    ) {
        host.share(fx);
        hub.deliver(fx);
        self.route(fx, now, sends);
        self.forget(&fx.gone);
    }

    /// Hands one datagram from `from` to the rules, and answers a `/confirm` in it. An address
    /// that is not a member afterwards is among the effects' `gone`, to be forgotten once its
    /// answer is sent.
    fn datagram(
        &mut self,
        rooms: &mut Rooms,
        from: SocketAddr,
        data: &[u8],
        now: Instant,
    ) -> Effects {
        let (id, mut fx) = match self.ids.get(&from) {
            Some(&id) => (id, rooms.receive(id, data, now)),
            None => {
                let id = rooms.new_member_id();
                self.ids.insert(from, id);
                let trust = Trust::Unproven {
                    sent: 0,
                    asked: false,
                };
                self.peers.insert(id, Peer { addr: from, trust });
                self.first = Some((id, data.len()));
                (id, rooms.arrive(id, from.to_string(), data, now))
            }
        };
        self.answering = Some(id);
        if !rooms.is_member(id) {
            if let Some(Peer {
                trust: Trust::Unproven { asked, .. },
                ..
            }) = self.peers.get_mut(&id)
            {
                *asked = true; // nothing to confirm for an address that is not a member
            }
            if !fx.gone.contains(&id) {
                fx.gone.push(id);
            }
            return fx;
        }
        if let Ok(Line::Command {
            verb: "confirm",
            arg,
        }) = parse_line(data)
        {
            self.confirm(id, arg, &mut fx);
        }
        fx
    }

    /// `/confirm TOKEN` from member `id`: with its token (or from an address proven already)
    /// the address is proven and told so; otherwise it is asked again.
    fn confirm(&mut self, id: MemberId, token: &str, fx: &mut Effects) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let proven = peer.trust == Trust::Proven || self.key.verify(&peer_bytes(peer.addr), token);
        if proven {
            peer.trust = Trust::Proven;
            fx.out.push(Outgoing {
                to: id,
                line: format!("{CONFIRMED}\n").into(),
            });
        } else if let Trust::Unproven { asked, .. } = &mut peer.trust {
            *asked = false;
        }
    }

    /// Adds the datagrams to send for `fx` to `sends`, as the reflection rule allows: every
    /// line to a proven address; to an unproven one, the ask line first, then what fits its
    /// budgets. The member just answered is asked even when nothing else is sent to it.
    fn route(&mut self, fx: &Effects, now: Instant, sends: &mut Sends) {
        sends.reserve(fx.out.len());
        for out in &fx.out {
            self.admit(out.to, &out.line, now, sends);
        }
        if let Some(id) = self.answering.take() {
            if !fx.gone.contains(&id) {
                self.ask_if_due(id, now, sends);
            }
        }
        self.first = None;
    }

    /// Adds `line` for member `to` to `sends` if the rule allows, after the ask line if due.
    fn admit(&mut self, to: MemberId, line: &Arc<str>, now: Instant, sends: &mut Sends) {
        let Some(peer) = self.peers.get(&to) else {
            return;
        };
        let addr = peer.addr;
        if peer.trust != Trust::Proven {
            self.ask_if_due(to, now, sends);
            if !self.spend(to, line.len(), now) {
                return;
            }
        }
        sends.push((addr, Arc::clone(line)));
    }

    /// Adds the ask line for member `id` to `sends`, if it has not been sent and fits.
    fn ask_if_due(&mut self, id: MemberId, now: Instant, sends: &mut Sends) {
        let Some(peer) = self.peers.get(&id) else {
            return;
        };
        if !matches!(peer.trust, Trust::Unproven { asked: false, .. }) {
            return;
        }
        let addr = peer.addr;
        let ask: Arc<str> = format!("{}\n", ask_line(&self.key.token(&peer_bytes(addr)))).into();
        if !self.spend(id, ask.len(), now) {
            return;
        }
        if let Some(Peer {
            trust: Trust::Unproven { asked, .. },
            ..
        }) = self.peers.get_mut(&id)
        {
            *asked = true;
        }
        sends.push((addr, ask));
    }

    /// Pays for `len` bytes to member `id` from its budgets, if they all have room: its own,
    /// its first answer's when it was never heard from, and all unproven addresses' together.
    fn spend(&mut self, id: MemberId, len: usize, now: Instant) -> bool {
        let Some(peer) = self.peers.get_mut(&id) else {
            return false;
        };
        let Trust::Unproven { sent, .. } = &mut peer.trust else {
            return true;
        };
        let first = self.first.as_mut().filter(|(first, _)| *first == id);
        let fits = *sent + len <= self.budget
            && first.as_ref().is_none_or(|(_, left)| len <= *left)
            && len <= self.unproven.room(now);
        if fits {
            *sent += len;
            if let Some((_, left)) = first {
                *left -= len;
            }
            self.unproven.spend(len, now);
        }
        fits
    }

    /// Forgets members the room has let go.
    fn forget(&mut self, gone: &[MemberId]) {
        for id in gone {
            if let Some(peer) = self.peers.remove(id) {
                self.ids.remove(&peer.addr);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.ids.len()
    }
}

/// An address as the bytes its token is made from: the IP's octets, then the port.
fn peer_bytes(addr: SocketAddr) -> Vec<u8> {
    let mut bytes = match addr.ip() {
        std::net::IpAddr::V4(ip) => ip.octets().to_vec(),
        std::net::IpAddr::V6(ip) => ip.octets().to_vec(),
    };
    bytes.extend_from_slice(&addr.port().to_be_bytes());
    bytes
}

/// The width of one slot of a [`SecondWindow`].
const SLOT: Duration = Duration::from_millis(10);
/// Slots in one second.
const SLOTS_PER_SECOND: u64 = 100;

/// Bytes sent in the last second, counted in slots of 10 ms. A send is allowed while the slots
/// of the last second and one slot more hold no more than the limit, so that no second,
/// wherever it starts, holds more.
#[derive(Debug)]
struct SecondWindow {
    limit: usize,
    origin: Instant,
    /// (slot number, bytes sent in it), oldest first; at most 101.
    slots: VecDeque<(u64, usize)>,
    total: usize,
}

impl SecondWindow {
    fn new(limit: usize, now: Instant) -> SecondWindow {
        SecondWindow {
            limit,
            origin: now,
            slots: VecDeque::new(),
            total: 0,
        }
    }

    fn slot(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.origin);
        u64::try_from(since.as_nanos() / SLOT.as_nanos()).unwrap_or(u64::MAX)
    }

    /// Bytes that may still be sent now.
    fn room(&mut self, now: Instant) -> usize {
        let slot = self.slot(now);
        while let Some(&(oldest, bytes)) = self.slots.front() {
            if oldest.saturating_add(SLOTS_PER_SECOND) >= slot {
                break;
            }
            self.slots.pop_front();
            self.total -= bytes;
        }
        self.limit.saturating_sub(self.total)
    }

    fn spend(&mut self, bytes: usize, now: Instant) {
        let slot = self.slot(now);
        match self.slots.back_mut() {
            Some((last, sent)) if *last == slot => *sent += bytes,
            _ => self.slots.push_back((slot, bytes)),
        }
        self.total += bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// The lines each address receives, in order.
    fn lines_to(sent: &[(SocketAddr, String)], to: SocketAddr) -> Vec<&str> {
        sent.iter()
            .filter(|(addr, _)| *addr == to)
            .map(|(_, line)| line.as_str())
            .collect()
    }

    fn bytes_to(sent: &[(SocketAddr, String)], to: SocketAddr) -> usize {
        lines_to(sent, to).iter().map(|line| line.len()).sum()
    }

    /// The room and its addresses, without a socket: what [`serve`] does with each datagram.
    struct Room {
        rooms: Rooms,
        addresses: Addresses,
        now: Instant,
    }

    impl Room {
        fn new(config: RoomConfig) -> Room {
            let now = Instant::now();
            let key = ConfirmKey::random().unwrap();
            Room {
                rooms: Rooms::new(config, now),
                addresses: Addresses::new(key, &config, now),
                now,
            }
        }

        /// The datagrams sent for one datagram from `from`.
        fn send(&mut self, from: u16, data: &[u8]) -> Vec<(SocketAddr, String)> {
            let fx = self
                .addresses
                .datagram(&mut self.rooms, addr(from), data, self.now);
            let mut sends = Vec::new();
            self.addresses.route(&fx, self.now, &mut sends);
            self.addresses.forget(&fx.gone);
            sends
                .into_iter()
                .map(|(to, line)| (to, line.to_string()))
                .collect()
        }

        fn say(&mut self, from: u16, line: &str) -> Vec<(SocketAddr, String)> {
            self.send(from, line.as_bytes())
        }

        /// The line that asks the address with `port` to confirm.
        fn ask(&self, port: u16) -> String {
            let token = self.addresses.key.token(&peer_bytes(addr(port)));
            format!("{}\n", ask_line(&token))
        }

        /// Member `port` proves its address.
        fn confirm(&mut self, port: u16) {
            let token = self.addresses.key.token(&peer_bytes(addr(port)));
            let sent = self.say(port, &format!("/confirm {token}"));
            assert_eq!(lines_to(&sent, addr(port)), ["* confirmed\n"]);
        }
    }

    #[test]
    fn first_datagram_joins_under_its_address_and_lines_reach_everyone_else_once() {
        let mut room = Room::new(RoomConfig::default());
        assert!(
            room.say(1, "hi\n").is_empty(),
            "alone, and the ask is longer"
        );
        let sent = room.say(2, "hello");
        let ask = room.ask(1);
        assert_eq!(
            lines_to(&sent, addr(1)),
            [&ask, "* 127.0.0.1:2 joined\n", "<127.0.0.1:2> hello\n"]
        );
        assert!(
            lines_to(&sent, addr(2)).is_empty(),
            "never back to the sender, and the ask is longer than its datagram"
        );
        let sent = room.say(1, "welcome");
        assert_eq!(
            sent,
            [
                (addr(2), room.ask(2)),
                (addr(2), "<127.0.0.1:1> welcome\n".to_owned())
            ]
        );
        let sent = room.say(1, "again");
        assert_eq!(
            sent,
            [(addr(2), "<127.0.0.1:1> again\n".to_owned())],
            "asked once"
        );
    }

    #[test]
    fn bad_datagrams_get_a_short_error_or_nothing() {
        let mut room = Room::new(RoomConfig::default());
        assert!(room.say(1, "").is_empty());
        let invalid = room.send(1, b"\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8\xf7\xf6\xf5\xf4");
        assert_eq!(invalid, [(addr(1), "! not UTF-8\n".to_owned())]);
        let short_invalid = room.send(1, b"\xff");
        assert!(
            short_invalid.is_empty(),
            "a stranger gets no more bytes than it sent"
        );
        let huge = vec![b'x'; 65_507];
        let sent = room.send(1, &huge);
        assert_eq!(
            sent,
            [(
                addr(1),
                "! message too long (limit 4096 bytes)\n".to_owned()
            )]
        );
        assert!(room.rooms.is_empty(), "invalid datagrams do not join");
        assert_eq!(room.addresses.len(), 0, "nor are they remembered");
    }

    #[test]
    fn strangers_never_get_more_than_they_sent_nor_an_ask() {
        let mut room = Room::new(RoomConfig {
            max_members: 1,
            ..RoomConfig::default()
        });
        room.say(1, "a");
        let sent = room.say(2, "hi");
        assert!(sent.is_empty(), "\"! room full\" is longer than \"hi\"");
        let sent = room.say(2, &"a much longer line than the refusal".repeat(4));
        assert_eq!(sent, [(addr(2), "! room full\n".to_owned())]);
    }

    #[test]
    fn a_fresh_address_is_answered_within_its_datagram_however_big_the_room() {
        let mut room = Room::new(RoomConfig {
            unconfirmed_rate: usize::MAX,
            ..RoomConfig::default()
        });
        for port in 1000..1190 {
            room.say(port, &format!("/nick member-{port}"));
        }
        let sent = room.say(1, "/who");
        assert_eq!(
            bytes_to(&sent, addr(1)),
            0,
            "the list is 4 KB, the datagram 4 bytes"
        );
        let sent = room.say(2, "/help and some more");
        assert!(bytes_to(&sent, addr(2)) <= 19);
        // A client that wants its token at once pads its first datagram to hold the ask.
        let padded = format!("/confirm{}", " ".repeat(120));
        let sent = room.say(3, &padded);
        assert_eq!(lines_to(&sent, addr(3)), [room.ask(3)]);
        assert!(room.ask(3).len() <= 128);
    }

    #[test]
    fn an_unproven_member_gets_its_budget_at_most_and_confirming_lifts_it() {
        let mut room = Room::new(RoomConfig {
            unconfirmed_bytes: 1000,
            rate: 1e6,
            burst: 1e6,
            ..RoomConfig::default()
        });
        room.say(1, "listening");
        let mut heard = bytes_to(&room.say(2, "talking"), addr(1));
        room.confirm(2);
        for n in 0..100 {
            heard += bytes_to(&room.say(2, &format!("line number {n:03}")), addr(1));
        }
        assert!(heard <= 1000, "{heard} bytes");
        assert!(heard > 1000 - 30, "{heard} bytes: the budget is used");
        // Its ask came first; it confirms, and hears everything from then on.
        room.confirm(1);
        let sent = room.say(2, "now you hear me");
        assert_eq!(
            lines_to(&sent, addr(1)),
            ["<127.0.0.1:2> now you hear me\n"]
        );
    }

    #[test]
    fn a_wrong_token_is_answered_with_the_ask_again() {
        let mut room = Room::new(RoomConfig::default());
        room.say(1, "hello");
        let sent = room.say(1, "/confirm 0000000000000000");
        assert_eq!(lines_to(&sent, addr(1)), [room.ask(1)]);
        let sent = room.say(1, "/confirm 0000000000000000");
        assert_eq!(lines_to(&sent, addr(1)), [room.ask(1)], "and again");
        let other = room.addresses.key.token(&peer_bytes(addr(2)));
        let sent = room.say(1, &format!("/confirm {other}"));
        assert_eq!(
            lines_to(&sent, addr(1)),
            [room.ask(1)],
            "another address's token"
        );
        room.confirm(1);
        room.confirm(1); // and again: still confirmed
    }

    #[test]
    fn all_unproven_addresses_together_get_the_rate_at_most_in_any_second() {
        let mut room = Room::new(RoomConfig {
            unconfirmed_rate: 5000,
            rate: 1e6,
            burst: 1e6,
            ..RoomConfig::default()
        });
        room.say(1, "talking");
        room.confirm(1);
        for port in 100..150 {
            room.say(port, "listening");
        }
        let line = "x".repeat(200);
        let mut heard = 0;
        for _ in 0..20 {
            let sent = room.say(1, &line);
            heard += sent.iter().map(|(_, line)| line.len()).sum::<usize>();
        }
        // The joins above were sent in the same second, and count too.
        assert!(heard <= 5000, "{heard} bytes");
        room.now += Duration::from_millis(1011);
        let sent = room.say(1, &line);
        let heard: usize = sent.iter().map(|(_, line)| line.len()).sum();
        assert!(
            heard > 4000 && heard <= 5000,
            "{heard} bytes a second later"
        );
    }

    #[test]
    fn no_second_of_the_window_holds_more_than_its_limit() {
        let start = Instant::now();
        let mut window = SecondWindow::new(1000, start);
        let mut sends = Vec::new();
        // Try 100 bytes every 7 ms for three seconds.
        for step in 0..430u64 {
            let now = start + Duration::from_millis(step * 7);
            if window.room(now) >= 100 {
                window.spend(100, now);
                sends.push(step * 7);
            }
        }
        for &from in &sends {
            let in_second = sends
                .iter()
                .filter(|&&t| t >= from && t < from + 1000)
                .count();
            assert!(
                in_second <= 10,
                "{in_second} sends in the second from {from} ms"
            );
        }
        assert!(sends.len() >= 25, "{} sends in three seconds", sends.len());
    }

    #[tokio::test]
    async fn a_batch_is_answered_as_its_datagrams_one_at_a_time() {
        use crate::chat::LocalLink;
        // Each member may send five lines, and earns no more during the test.
        let config = RoomConfig {
            rate: 1e-9,
            burst: 5.0,
            ..RoomConfig::default()
        };
        let mut host = RoomHost::new(config, LocalLink, None);
        let mut hub = crate::front::chat_hub::hub().1;
        let mut addresses = Addresses::new(ConfirmKey::random().unwrap(), &config, now());
        let mut sends = Vec::new();
        let (a, b) = (addr(1), addr(2));
        for (from, data) in [(a, "/nick a".to_owned()), (b, "/nick b".to_owned())] {
            addresses.batch(
                &mut host,
                &mut hub,
                [(from, data.as_bytes())].into_iter(),
                &mut sends,
            );
        }
        for from in [a, b] {
            let token = addresses.key.token(&peer_bytes(from));
            let line = format!("/confirm {token}");
            addresses.batch(
                &mut host,
                &mut hub,
                [(from, line.as_bytes())].into_iter(),
                &mut sends,
            );
        }
        sends.clear();
        // Two lines each are spent; a has three left, b three.
        let batch: [(SocketAddr, &[u8]); 9] = [
            (a, b"a1"),
            (b, b"b1"),
            (a, b"a2"),
            (a, b"a3"),
            (a, b"a4"), // refused by a's rate: warned once
            (b, b"b2"),
            (a, b"a5"), // refused, silently this time
            (b, b"b3"),
            (b, b"\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8\xf7\xf6\xf5\xf4"), // malformed, last
        ];
        addresses.batch(&mut host, &mut hub, batch.into_iter(), &mut sends);
        let sent: Vec<(SocketAddr, &str)> = sends.iter().map(|(to, line)| (*to, &**line)).collect();
        assert_eq!(
            sent,
            [
                (b, "<a> a1\n"),
                (a, "<b> b1\n"),
                (b, "<a> a2\n"),
                (b, "<a> a3\n"),
                (a, "! slow down: lines are being dropped\n"),
                (a, "<b> b2\n"),
                (a, "<b> b3\n"),
                (b, "! not UTF-8\n"),
            ]
        );
    }

    #[test]
    fn an_address_that_left_is_forgotten_and_arrives_anew() {
        let mut room = Room::new(RoomConfig::default());
        room.say(1, "a");
        room.say(2, "b");
        let sent = room.say(2, "/leave");
        assert_eq!(lines_to(&sent, addr(2)), ["* bye\n"]);
        assert_eq!(room.addresses.len(), 1);
        let sent = room.say(2, "back");
        assert_eq!(
            lines_to(&sent, addr(1)),
            ["* 127.0.0.1:2 joined\n", "<127.0.0.1:2> back\n"]
        );
    }
}
