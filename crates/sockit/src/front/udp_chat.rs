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
//! The reflection rule is about addresses, so it is kept here: a source address can be forged,
//! so an address that is not (or no longer) a member never gets back more bytes than the
//! datagram it sent, and the room cannot amplify a spoofed-source flood.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use crate::chat::room::{Effects, MemberId, Rooms, MAX_LINE};
use crate::chat::MemberMap;
use crate::chat::{now, RoomHost, RoomLink};

/// Serves the rooms of `host` on `socket` until `stop`.
pub(crate) async fn serve<L: RoomLink>(
    socket: UdpSocket,
    mut host: RoomHost<L>,
    stop: CancellationToken,
) {
    let mut addresses = Addresses::default();
    // One byte more than the limit, so that an oversize datagram is seen as one.
    let mut buf = vec![0u8; MAX_LINE + 1];
    loop {
        let mut fx = tokio::select! {
            () = stop.cancelled() => return,
            received = socket.recv_from(&mut buf) => match received {
                Ok((len, from)) => addresses.datagram(host.rules(), from, &buf[..len], now()),
                // An ICMP error from an earlier send, or a transient shortage: keep serving.
                Err(err) => {
                    tracing::debug!(%err, "udp receive failed");
                    continue;
                }
            },
            fx = host.next() => fx,
        };
        host.share(&mut fx);
        deliver(&socket, &mut addresses, fx).await;
    }
}

/// Sends each line to its member's address, then forgets the members the room let go.
async fn deliver(socket: &UdpSocket, addresses: &mut Addresses, fx: Effects) {
    for out in &fx.out {
        let Some(to) = addresses.addr(out.to) else {
            continue;
        };
        if let Err(err) = socket.send_to(out.line.as_bytes(), to).await {
            tracing::debug!(%err, %to, "udp send failed");
        }
    }
    addresses.forget(&fx.gone);
}

/// The room's members as UDP addresses, both ways.
#[derive(Debug, Default)]
struct Addresses {
    ids: HashMap<SocketAddr, MemberId>,
    addrs: MemberMap<SocketAddr>,
}

impl Addresses {
    /// Hands one datagram from `from` to the rules. Lines for `from` are cut to the bytes it
    /// sent when it is not a member afterwards; an address that did not join is among the
    /// effects' `gone`, to be forgotten once its reply is sent.
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
                self.addrs.insert(id, from);
                (id, rooms.arrive(id, from.to_string(), data, now))
            }
        };
        if !rooms.is_member(id) {
            let mut budget = data.len();
            fx.out.retain(|out| {
                if out.to != id {
                    return true;
                }
                let fits = out.line.len() <= budget;
                budget = budget.saturating_sub(out.line.len());
                fits
            });
            if !fx.gone.contains(&id) {
                fx.gone.push(id);
            }
        }
        fx
    }

    /// Where member `id`'s lines go.
    fn addr(&self, id: MemberId) -> Option<SocketAddr> {
        self.addrs.get(&id).copied()
    }

    /// Forgets members the room has let go.
    fn forget(&mut self, gone: &[MemberId]) {
        for id in gone {
            if let Some(addr) = self.addrs.remove(id) {
                self.ids.remove(&addr);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.ids.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::room::RoomConfig;

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

    /// The room and its addresses, without a socket: what [`serve`] does with each datagram.
    struct Room {
        rooms: Rooms,
        addresses: Addresses,
        now: Instant,
    }

    impl Room {
        fn new(config: RoomConfig) -> Room {
            let now = Instant::now();
            Room {
                rooms: Rooms::new(config, now),
                addresses: Addresses::default(),
                now,
            }
        }

        /// The datagrams sent for one datagram from `from`.
        fn send(&mut self, from: u16, data: &[u8]) -> Vec<(SocketAddr, String)> {
            let fx = self
                .addresses
                .datagram(&mut self.rooms, addr(from), data, self.now);
            let sent = fx
                .out
                .iter()
                .filter_map(|out| Some((self.addresses.addr(out.to)?, out.line.to_string())))
                .collect();
            self.addresses.forget(&fx.gone);
            sent
        }

        fn say(&mut self, from: u16, line: &str) -> Vec<(SocketAddr, String)> {
            self.send(from, line.as_bytes())
        }
    }

    #[test]
    fn first_datagram_joins_under_its_address_and_lines_reach_everyone_else_once() {
        let mut room = Room::new(RoomConfig::default());
        assert!(room.say(1, "hi\n").is_empty(), "alone: nobody to tell");
        let sent = room.say(2, "hello");
        assert_eq!(
            lines_to(&sent, addr(1)),
            ["* 127.0.0.1:2 joined\n", "<127.0.0.1:2> hello\n"]
        );
        assert!(
            lines_to(&sent, addr(2)).is_empty(),
            "never back to the sender"
        );
        let sent = room.say(1, "welcome");
        assert_eq!(sent, [(addr(2), "<127.0.0.1:1> welcome\n".to_owned())]);
    }

    #[test]
    fn bad_datagrams_get_a_short_error_or_nothing() {
        let mut room = Room::new(RoomConfig::default());
        assert!(room.say(1, "").is_empty());
        let invalid = room.send(1, b"\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8\xf7\xf6\xf5\xf4");
        assert_eq!(lines_to(&invalid, addr(1)), ["! not UTF-8\n"]);
        let short_invalid = room.send(1, b"\xff");
        assert!(
            short_invalid.is_empty(),
            "a stranger gets no more bytes than it sent"
        );
        let huge = vec![b'x'; 65_507];
        let sent = room.send(1, &huge);
        assert_eq!(
            lines_to(&sent, addr(1)),
            ["! message too long (limit 4096 bytes)\n"]
        );
        assert!(room.rooms.is_empty(), "invalid datagrams do not join");
        assert_eq!(room.addresses.len(), 0, "nor are they remembered");
    }

    #[test]
    fn strangers_never_get_more_than_they_sent() {
        let mut room = Room::new(RoomConfig {
            max_members: 1,
            ..RoomConfig::default()
        });
        room.say(1, "a");
        let sent = room.say(2, "hi");
        assert!(sent.is_empty(), "\"! room full\" is longer than \"hi\"");
        let sent = room.say(2, "a much longer line than the refusal");
        assert_eq!(lines_to(&sent, addr(2)), ["! room full\n"]);
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
