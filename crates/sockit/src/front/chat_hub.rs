//! Chat members that are not UDP addresses (the browser's WebSockets): how they reach the room
//! task, and how the room's lines reach them.
//!
//! A front end holding a stream to its peer (TCP proves the peer's address, so the reflection
//! rule has nothing to guard) gets a [`ChatHub`] and, for each peer, a [`HubMember`]: it sends
//! the peer's lines in and receives the room's lines out. The room task owns the other end,
//! [`HubMembers`]: it waits on [`HubMembers::next`] beside its socket and its host, applies
//! each event to the rules like a datagram, and hands every [`Effects`] to
//! [`HubMembers::deliver`] as well as to its own members. A member's lines out go into a
//! queue bounded in lines and in bytes ([`MEMBER_BACKLOG`], [`MEMBER_BACKLOG_BYTES`]), as a
//! socket's buffer is, that the room never waits on: a peer that does not read loses lines, and
//! the room goes on.
//!
//! When there is no UDP room, [`serve_alone`] is the room task.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::chat::room::{Effects, MemberId, Rooms};
use crate::chat::{now, RoomHost, RoomLink};

/// Lines waiting for one hub member before more are dropped.
pub(crate) const MEMBER_BACKLOG: usize = 4096;
/// Bytes of lines waiting for one hub member before more are dropped: what a peer that does
/// not read can hold in memory (lines shared with other members counted for each). Enough for
/// a quarter of a second of a busy room (20,000 short lines a second), so that a reader the
/// machine did not run for a moment loses nothing.
pub(crate) const MEMBER_BACKLOG_BYTES: usize = 256 * 1024;
/// Events waiting for the room task before their senders wait.
const EVENT_BACKLOG: usize = 1024;

/// What a hub member's connection tells the room.
#[derive(Debug)]
pub(crate) enum Event {
    /// A peer connected, to be named `name` when it joins; the room's lines go to `lines`.
    Open {
        key: u64,
        name: String,
        lines: LinesIn,
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

/// One peer's place in the room, from its connection's side: its way in and its lines out,
/// which a connection may hand to two tasks (one reading the peer, one writing to it).
#[derive(Debug)]
pub(crate) struct HubMember {
    /// The peer's lines and signs of life to the room. Dropped, the peer leaves.
    pub(crate) voice: HubVoice,
    /// The room's lines for this peer, each ending in `\n`.
    pub(crate) lines: HubLines,
}

/// The room's lines on their way to one hub peer, from the peer's side.
#[derive(Debug)]
pub(crate) struct HubLines {
    lines: mpsc::Receiver<Arc<str>>,
    /// Bytes of the lines in `lines`.
    queued: Arc<AtomicUsize>,
}

/// The same queue from the room's side.
#[derive(Debug)]
pub(crate) struct LinesIn {
    lines: mpsc::Sender<Arc<str>>,
    queued: Arc<AtomicUsize>,
}

/// A queue of lines for one peer, bounded by [`MEMBER_BACKLOG`] and [`MEMBER_BACKLOG_BYTES`].
fn lines_queue() -> (LinesIn, HubLines) {
    let (lines, incoming) = mpsc::channel(MEMBER_BACKLOG);
    let queued = Arc::new(AtomicUsize::new(0));
    let sender = LinesIn {
        lines,
        queued: Arc::clone(&queued),
    };
    (
        sender,
        HubLines {
            lines: incoming,
            queued,
        },
    )
}

impl LinesIn {
    /// Queues `line` unless the queue is full, in lines or in bytes: then the line is dropped.
    /// Never waits.
    fn offer(&self, line: &Arc<str>) {
        let len = line.len();
        // Counted before it is queued, so that the peer never takes away more than was added.
        let before = self.queued.fetch_add(len, Ordering::Relaxed);
        if before + len > MEMBER_BACKLOG_BYTES || self.lines.try_send(Arc::clone(line)).is_err() {
            self.queued.fetch_sub(len, Ordering::Relaxed);
        }
    }
}

impl HubLines {
    /// Waits for lines, then takes those waiting, up to `limit`, onto the end of `into`; 0
    /// when the room is gone. Cancel-safe.
    pub(crate) async fn recv_many(&mut self, into: &mut Vec<Arc<str>>, limit: usize) -> usize {
        let from = into.len();
        let taken = self.lines.recv_many(into, limit).await;
        let bytes: usize = into[from..].iter().map(|line| line.len()).sum();
        self.queued.fetch_sub(bytes, Ordering::Relaxed);
        taken
    }

    /// The next line if one is waiting.
    #[cfg(test)]
    fn try_recv(&mut self) -> Option<Arc<str>> {
        let line = self.lines.try_recv().ok()?;
        self.queued.fetch_sub(line.len(), Ordering::Relaxed);
        Some(line)
    }
}

/// A hub peer's way in to the room. Dropped, the peer leaves.
#[derive(Debug)]
pub(crate) struct HubVoice {
    key: u64,
    events: mpsc::Sender<Event>,
}

impl ChatHub {
    /// A peer named `name` (until it says `/nick`) takes part; `None` when the room is gone.
    pub(crate) async fn connect(&self, name: String) -> Option<HubMember> {
        let key = self.keys.fetch_add(1, Ordering::Relaxed);
        let (lines, incoming) = lines_queue();
        self.events
            .send(Event::Open { key, name, lines })
            .await
            .ok()?;
        Some(HubMember {
            voice: HubVoice {
                key,
                events: self.events.clone(),
            },
            lines: incoming,
        })
    }
}

impl HubVoice {
    /// Hands one line from the peer to the room; `false` when the room is gone.
    pub(crate) async fn say(&self, data: Vec<u8>) -> bool {
        let key = self.key;
        self.events.send(Event::Line { key, data }).await.is_ok()
    }

    /// Tells the room the peer is still there, so that a member who only listens is not
    /// dropped as silent; never waits (a room too busy to hear it now will hear the next).
    pub(crate) fn alive(&self) {
        let _ = self.events.try_send(Event::Alive { key: self.key });
    }
}

impl Drop for HubVoice {
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
    lines: LinesIn,
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
            peer.lines.offer(&out.line);
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
        assert!(listener.voice.say(b"hi".to_vec()).await);
        assert!(talker.voice.say(b"hello".to_vec()).await);
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
            listener.voice.alive();
            assert!(talker.voice.say(b"still here".to_vec()).await);
            apply_waiting(&mut members, &mut rooms);
            let fx = rooms.expire(now());
            assert!(fx.gone.is_empty(), "{fx:?}");
        }
        assert_eq!(rooms.len(), 2);

        drop(listener);
        apply_waiting(&mut members, &mut rooms);
        assert_eq!(rooms.len(), 1);
        let mut heard = Vec::new();
        while let Some(line) = talker.lines.try_recv() {
            heard.push(line.to_string());
        }
        assert_eq!(heard.last().map(String::as_str), Some("* listener left\n"));
    }

    #[tokio::test]
    async fn a_peer_that_does_not_read_loses_lines_past_its_backlog_of_bytes_and_no_more() {
        let config = RoomConfig {
            rate: 1e6,
            burst: 1e6,
            ..RoomConfig::default()
        };
        let mut rooms = Rooms::new(config, now());
        let (hub, mut members) = hub();
        let talker = hub.connect("talker".into()).await.unwrap();
        let mut reader = hub.connect("reader".into()).await.unwrap();
        assert!(reader.voice.say(b"/nick reader".to_vec()).await);
        assert!(talker.voice.say(b"/nick talker".to_vec()).await);
        apply_waiting(&mut members, &mut rooms);
        let mut batch = Vec::new();
        reader.lines.recv_many(&mut batch, MEMBER_BACKLOG).await;
        assert_eq!(reader.lines.queued.load(Ordering::Relaxed), 0);

        // 100 lines of 3,000 bytes, relayed as `<talker> N xxx…\n`: the reader takes none.
        let said = |n: usize| format!("{n:03} {}", "x".repeat(2996));
        let relayed_len = "<talker> ".len() + 3000 + 1;
        for n in 0..100 {
            assert!(talker.voice.say(said(n).into_bytes()).await);
        }
        apply_waiting(&mut members, &mut rooms);
        let fits = MEMBER_BACKLOG_BYTES / relayed_len;
        assert!(fits < 100);
        assert_eq!(
            reader.lines.queued.load(Ordering::Relaxed),
            fits * relayed_len
        );
        batch.clear();
        assert_eq!(reader.lines.recv_many(&mut batch, 1000).await, fits);
        for (n, line) in batch.iter().enumerate() {
            assert_eq!(line.as_ref(), format!("<talker> {}\n", said(n)));
        }
        assert_eq!(reader.lines.queued.load(Ordering::Relaxed), 0);

        // Taken, the lines make room again: the next one is queued.
        assert!(talker.voice.say(said(100).into_bytes()).await);
        apply_waiting(&mut members, &mut rooms);
        assert_eq!(
            reader.lines.try_recv().unwrap().as_ref(),
            format!("<talker> {}\n", said(100))
        );
        assert!(reader.lines.try_recv().is_none());
    }
}
