//! Chat members that are not UDP addresses (the browser's WebSockets): how they reach the room
//! task, and how the room's lines reach them.
//!
//! A front end holding a stream to its peer (TCP proves the peer's address, so the reflection
//! rule has nothing to guard) gets a [`ChatHub`] and, for each peer, a [`HubMember`]: it sends
//! the peer's lines in and receives the room's lines out. The room task owns the other end,
//! [`HubMembers`]: it waits on [`HubMembers::next`] beside its socket and its host, applies
//! each event to the rules like a datagram, and hands every [`Effects`] to
//! [`HubMembers::deliver`] as well as to its own members. A member's lines out go into a
//! bounded queue that the room never waits on: a peer that does not read loses lines, and the
//! room goes on.
//!
//! When there is no UDP room, [`serve_alone`] is the room task.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::chat::room::{Effects, MemberId, Rooms};
use crate::chat::{now, RoomHost, RoomLink};

/// Lines waiting for one hub member before more are dropped.
pub(crate) const MEMBER_BACKLOG: usize = 256;
/// Events waiting for the room task before their senders wait.
const EVENT_BACKLOG: usize = 1024;

/// What a hub member's connection tells the room.
#[derive(Debug)]
pub(crate) enum Event {
    /// A peer connected, to be named `name` when it joins; the room's lines go to `lines`.
    Open {
        key: u64,
        name: String,
        lines: mpsc::Sender<Arc<str>>,
    },
    /// One line from the peer.
    Line { key: u64, data: Vec<u8> },
    /// The peer is still there (it answered a ping), though it said nothing.
    Alive { key: u64 },
    /// The peer went away.
    Close { key: u64 },
}

/// The way in for front ends whose members are streams.
#[derive(Debug, Clone)]
pub(crate) struct ChatHub {
    events: mpsc::Sender<Event>,
    keys: Arc<AtomicU64>,
}

/// One peer's place in the room, from its connection's side. Dropped, the peer leaves.
#[derive(Debug)]
pub(crate) struct HubMember {
    key: u64,
    events: mpsc::Sender<Event>,
    /// The room's lines for this peer, each ending in `\n`.
    pub(crate) lines: mpsc::Receiver<Arc<str>>,
}

impl ChatHub {
    /// A peer named `name` (until it says `/nick`) takes part; `None` when the room is gone.
    pub(crate) async fn connect(&self, name: String) -> Option<HubMember> {
        let key = self.keys.fetch_add(1, Ordering::Relaxed);
        let (lines, incoming) = mpsc::channel(MEMBER_BACKLOG);
        self.events
            .send(Event::Open { key, name, lines })
            .await
            .ok()?;
        Some(HubMember {
            key,
            events: self.events.clone(),
            lines: incoming,
        })
    }
}

impl HubMember {
    /// Hands one line from the peer to the room; `false` when the room is gone.
    pub(crate) async fn say(&self, data: Vec<u8>) -> bool {
        let key = self.key;
        self.events.send(Event::Line { key, data }).await.is_ok()
    }
}

impl HubMember {
    /// Tells the room the peer is still there, so that a member who only listens is not
    /// dropped as silent; never waits (a room too busy to hear it now will hear the next).
    pub(crate) fn alive(&self) {
        let _ = self.events.try_send(Event::Alive { key: self.key });
    }
}

impl Drop for HubMember {
    fn drop(&mut self) {
        let key = self.key;
        if self.events.try_send(Event::Close { key }).is_err() {
            // The room is behind: tell it when it has room, without holding anyone up.
            let events = self.events.clone();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = events.send(Event::Close { key }).await;
                });
            }
        }
    }
}

/// A hub peer, from the room's side.
#[derive(Debug)]
struct Peer {
    name: String,
    lines: mpsc::Sender<Arc<str>>,
    /// Its member id while it is a member (or is being answered as a newcomer).
    id: Option<MemberId>,
}

/// The room task's end of the hub: the peers, by their key and by member id.
#[derive(Debug)]
pub(crate) struct HubMembers {
    events: mpsc::Receiver<Event>,
    peers: HashMap<u64, Peer>,
    keys: HashMap<MemberId, u64>,
}

/// A hub and the room task's end of it.
pub(crate) fn hub() -> (ChatHub, HubMembers) {
    let (events, incoming) = mpsc::channel(EVENT_BACKLOG);
    let hub = ChatHub {
        events,
        keys: Arc::new(AtomicU64::new(0)),
    };
    let members = HubMembers {
        events: incoming,
        peers: HashMap::new(),
        keys: HashMap::new(),
    };
    (hub, members)
}

impl HubMembers {
    /// The next event from a hub peer, for [`apply`](HubMembers::apply). Pending for ever once
    /// every [`ChatHub`] is gone. Cancel-safe.
    pub(crate) async fn next(&mut self) -> Event {
        match self.events.recv().await {
            Some(event) => event,
            None => std::future::pending().await,
        }
    }

    /// Applies an event from a hub peer to `rooms`, as a datagram is applied.
    pub(crate) fn apply(&mut self, rooms: &mut Rooms, event: Event) -> Effects {
        self.apply_event(rooms, event).unwrap_or_default()
    }

    fn apply_event(&mut self, rooms: &mut Rooms, event: Event) -> Option<Effects> {
        match event {
            Event::Open { key, name, lines } => {
                self.peers.insert(
                    key,
                    Peer {
                        name,
                        lines,
                        id: None,
                    },
                );
                None
            }
            Event::Line { key, data } => {
                let peer = self.peers.get_mut(&key)?;
                let now = now();
                let fx = match peer.id.filter(|id| rooms.is_member(*id)) {
                    Some(id) => rooms.receive(id, &data, now),
                    None => {
                        let id = rooms.new_member_id();
                        peer.id = Some(id);
                        self.keys.insert(id, key);
                        let mut fx = rooms.arrive(id, peer.name.clone(), &data, now);
                        if !rooms.is_member(id) && !fx.gone.contains(&id) {
                            fx.gone.push(id); // answered, then forgotten until its next line
                        }
                        fx
                    }
                };
                Some(fx)
            }
            Event::Alive { key } => {
                if let Some(id) = self.peers.get(&key).and_then(|peer| peer.id) {
                    rooms.touch(id, now());
                }
                None
            }
            Event::Close { key } => {
                let peer = self.peers.remove(&key)?;
                let id = peer.id.filter(|id| rooms.is_member(*id))?;
                let mut fx = rooms.receive(id, b"/leave", now());
                fx.out.retain(|out| out.to != id);
                Some(fx)
            }
        }
    }

    /// Queues each line of `fx` meant for a hub peer, then forgets the members the room let
    /// go (their peers stay connected, and join again with their next line).
    pub(crate) fn deliver(&mut self, fx: &Effects) {
        for out in &fx.out {
            let Some(peer) = self.keys.get(&out.to).and_then(|key| self.peers.get(key)) else {
                continue;
            };
            // A full queue: the peer is not reading; the line is dropped, never waited for.
            let _ = peer.lines.try_send(Arc::clone(&out.line));
        }
        for id in &fx.gone {
            if let Some(key) = self.keys.remove(id) {
                if let Some(peer) = self.peers.get_mut(&key) {
                    peer.id = None;
                }
            }
        }
    }
}

/// The room task when the rooms have no UDP socket: hub peers only.
pub(crate) async fn serve_alone<L: RoomLink>(
    mut host: RoomHost<L>,
    mut members: HubMembers,
    stop: CancellationToken,
) {
    loop {
        let mut fx = tokio::select! {
            () = stop.cancelled() => return,
            event = members.next() => members.apply(host.rules(), event),
            fx = host.next() => fx,
        };
        host.share(&mut fx);
        members.deliver(&fx);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::chat::room::RoomConfig;

    /// Applies every event waiting in the hub.
    fn apply_waiting(members: &mut HubMembers, rooms: &mut Rooms) -> Vec<Effects> {
        let mut all = Vec::new();
        while let Ok(event) = members.events.try_recv() {
            let fx = members.apply(rooms, event);
            members.deliver(&fx);
            all.push(fx);
        }
        all
    }

    #[tokio::test(start_paused = true)]
    async fn a_member_who_only_listens_stays_while_alive_and_leaves_when_gone() {
        let config = RoomConfig {
            idle: Duration::from_secs(5),
            ..RoomConfig::default()
        };
        let mut rooms = Rooms::new(config, now());
        let (hub, mut members) = hub();
        let mut talker = hub.connect("talker".into()).await.unwrap();
        let mut listener = hub.connect("listener".into()).await.unwrap();
        assert!(listener.say(b"hi".to_vec()).await);
        assert!(talker.say(b"hello".to_vec()).await);
        apply_waiting(&mut members, &mut rooms);
        assert_eq!(
            listener.lines.try_recv().unwrap().as_ref(),
            "* talker joined\n"
        );
        assert_eq!(
            listener.lines.try_recv().unwrap().as_ref(),
            "<talker> hello\n"
        );

        // The listener only answers pings; the talker keeps talking.
        for _ in 0..4 {
            tokio::time::advance(Duration::from_secs(2)).await;
            listener.alive();
            assert!(talker.say(b"still here".to_vec()).await);
            apply_waiting(&mut members, &mut rooms);
            let fx = rooms.expire(now());
            assert!(fx.gone.is_empty(), "{fx:?}");
        }
        assert_eq!(rooms.len(), 2);

        drop(listener);
        apply_waiting(&mut members, &mut rooms);
        assert_eq!(rooms.len(), 1);
        let mut heard = Vec::new();
        while let Ok(line) = talker.lines.try_recv() {
            heard.push(line.to_string());
        }
        assert_eq!(heard.last().map(String::as_str), Some("* listener left\n"));
    }
}
