//! One server's rooms on the bus: the [`BusLink`] the room task holds, and the task that
//! carries its traffic to and from Redis.
//!
//! The room task never waits on Redis. [`BusLink::publish`] puts a line in a bounded queue
//! (dropping and counting it when the queue is full), and [`BusLink::receive`] takes lines the
//! node task put in another bounded queue. The node task holds one RESP3 connection, subscribed
//! to the chat channel: what the channel brings is handled as it arrives, in the connection's own
//! task, and handed straight to the room (a line the room cannot take at once is dropped and
//! counted, so nothing piles up anywhere); the node task publishes queued lines on the same
//! connection in batches, one round trip each, and keeps the presence.
//!
//! Presence: the node keeps its members' list under its own key with an expiry of the presence
//! TTL, rewrites it (and publishes it) whenever it changes, and refreshes it every third of
//! the TTL; as often it reads every other node's key. A node that dies stops refreshing, its
//! key expires, and the next read drops its members: within the TTL plus a third of it.
//!
//! Lines dropped while connected (the room or the bus behind) are logged at most once every
//! third of the TTL, with their count.
//!
//! Faults: any error or a call slower than the timeout ends the session. The outage is logged
//! once, the other servers' members are forgotten (they cannot be reached), lines queued
//! meanwhile are dropped and counted, and the node reconnects with a backoff from 100 ms up to
//! 5 s. Back on the bus it logs how many lines were dropped, writes its presence and reads the
//! others' at once.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Msg, ProtocolVersion, PushInfo, PushKind};
use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;

use super::wire::{presence_key, Message, CHANNEL, NODES};
use super::{BusError, BusSettings};
use crate::chat::{Presence, RoomLine, RoomLink, Roster};

/// The first wait before reconnecting.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait before reconnecting.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Most queued lines published in one round trip.
const BATCH: usize = 256;
/// The most members of other nodes kept, over all of them.
const MAX_REMOTE_MEMBERS: usize = 65_536;

/// The room task's end of the bus: a [`RoomLink`] that never waits.
#[derive(Debug)]
pub struct BusLink {
    out: mpsc::Sender<RoomLine>,
    incoming: mpsc::Receiver<RoomLine>,
    here: watch::Sender<Vec<Presence>>,
    others: watch::Receiver<Arc<Roster>>,
    dropped: Arc<AtomicU64>,
}

impl RoomLink for BusLink {
    fn publish(&mut self, said: RoomLine) {
        if self.out.try_send(said).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn receive(&mut self) -> Option<RoomLine> {
        self.incoming.recv().await
    }

    fn present(&mut self, here: Vec<Presence>) {
        self.here.send_replace(here);
    }

    fn others(&mut self) -> Option<Arc<Roster>> {
        if self.others.has_changed().unwrap_or(false) {
            Some(Arc::clone(&self.others.borrow_and_update()))
        } else {
            None
        }
    }
}

/// A link for a room task and the node task that serves it, which runs until `stop`.
pub(super) fn start(
    client: redis::Client,
    settings: BusSettings,
    stop: CancellationToken,
) -> (BusLink, impl Future<Output = ()> + Send + 'static) {
    let (out_tx, out_rx) = mpsc::channel(settings.backlog);
    let (in_tx, in_rx) = mpsc::channel(settings.backlog);
    let (here_tx, here_rx) = watch::channel(Vec::new());
    let (others_tx, others_rx) = watch::channel(Arc::default());
    let dropped = Arc::new(AtomicU64::new(0));
    let link = BusLink {
        out: out_tx,
        incoming: in_rx,
        here: here_tx,
        others: others_rx,
        dropped: Arc::clone(&dropped),
    };
    // Pushes (the channel's messages) come on the command connection only with RESP3.
    let info = client.get_connection_info().clone();
    let resp3 = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    let client = redis::Client::open(info.set_redis_settings(resp3))
        .expect("the address of a client already made");
    let node = Node {
        id: node_id(),
        client,
        settings,
        out: out_rx,
        here: here_rx,
        heard: Arc::new(Heard {
            incoming: in_tx,
            others: others_tx,
            remote: Mutex::default(),
            dropped: Arc::clone(&dropped),
            refused: AtomicU64::new(0),
        }),
        dropped,
        conn: None,
    };
    (link, node.run(stop))
}

/// A fresh random id for a node.
fn node_id() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the system's random source");
    hex::encode(bytes)
}

/// The node task's state.
struct Node {
    id: String,
    client: redis::Client,
    settings: BusSettings,
    out: mpsc::Receiver<RoomLine>,
    here: watch::Receiver<Vec<Presence>>,
    heard: Arc<Heard>,
    /// Lines dropped on the way out or in, over the node's life.
    dropped: Arc<AtomicU64>,
    /// The command connection of the session under way, for the last words on stop.
    conn: Option<MultiplexedConnection>,
}

/// What the channel's messages update, from the connection's task.
struct Heard {
    incoming: mpsc::Sender<RoomLine>,
    others: watch::Sender<Arc<Roster>>,
    /// Other nodes' members, by node.
    remote: Mutex<HashMap<String, Vec<(String, String)>>>,
    dropped: Arc<AtomicU64>,
    /// Messages from the bus refused as malformed; the first is logged.
    refused: AtomicU64,
}

impl Node {
    async fn run(mut self, stop: CancellationToken) {
        let mut backoff = MIN_BACKOFF;
        let mut outage: Option<(Instant, u64)> = None;
        loop {
            let mut connected = false;
            let ended = tokio::select! {
                () = stop.cancelled() => break,
                ended = self.session(&mut connected, &mut outage) => ended,
            };
            self.conn = None;
            self.heard.forget_others();
            if connected {
                backoff = MIN_BACKOFF;
            }
            if outage.is_none() {
                tracing::warn!(
                    error = %ended,
                    "chat bus down: the rooms go on with this server's members alone; reconnecting"
                );
                outage = Some((Instant::now(), self.dropped.load(Ordering::Relaxed)));
            }
            if !self.wait_dropping(backoff, &stop).await {
                break;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        self.leave().await;
    }

    /// Waits `backoff`, dropping (and counting) lines queued meanwhile; `false` on stop.
    async fn wait_dropping(&mut self, backoff: Duration, stop: &CancellationToken) -> bool {
        let sleep = tokio::time::sleep(backoff);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = stop.cancelled() => return false,
                () = &mut sleep => return true,
                line = self.out.recv() => match line {
                    Some(_) => {
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    None => return false,
                },
            }
        }
    }

    /// One connection to Redis, from connecting until it fails. Sets `connected` once
    /// subscribed, and ends the `outage` then.
    async fn session(
        &mut self,
        connected: &mut bool,
        outage: &mut Option<(Instant, u64)>,
    ) -> BusError {
        let timeout = self.settings.timeout;
        // Fresh for each connection, so that the end of an old one cannot end this one.
        let closed = Arc::new(Notify::new());
        let on_push = {
            let (closed, heard, id) = (
                Arc::clone(&closed),
                Arc::clone(&self.heard),
                self.id.clone(),
            );
            move |push: PushInfo| -> Result<(), std::convert::Infallible> {
                if push.kind == PushKind::Disconnection {
                    closed.notify_one();
                } else if let Some(msg) = Msg::from_push_info(push) {
                    heard.message(&id, msg.get_payload_bytes());
                }
                Ok(())
            }
        };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_push_sender(on_push);
        let mut conn = match self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(conn) => conn,
            Err(err) => return err.into(),
        };
        if let Err(err) = within(timeout, async { Ok(conn.subscribe(CHANNEL).await?) }).await {
            return err;
        }
        *connected = true;
        if let Some((since, dropped_before)) = outage.take() {
            tracing::info!(
                after = ?since.elapsed(),
                dropped = self.dropped.load(Ordering::Relaxed) - dropped_before,
                "chat bus back"
            );
        }
        self.conn = Some(conn.clone());
        let talking = talk(
            &self.id,
            &mut conn,
            &mut self.out,
            &mut self.here,
            &self.heard,
            self.settings,
        );
        tokio::select! {
            () = closed.notified() => BusError::Closed,
            err = talking => err,
        }
    }

    /// Takes this node's members off the bus, if it can at once.
    async fn leave(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let mut pipe = redis::pipe();
        pipe.del(presence_key(&self.id)).ignore();
        pipe.srem(NODES, &self.id).ignore();
        let empty = Message::Presence {
            from: self.id.clone(),
            members: Vec::new(),
        };
        pipe.publish(CHANNEL, empty.encode()).ignore();
        let _ = within(self.settings.timeout, async {
            Ok(pipe.query_async::<()>(&mut conn).await?)
        })
        .await;
    }
}

/// The command half of a session: publishes queued lines, writes this node's presence when it
/// changes and every third of the TTL, and reads the others' as often.
async fn talk(
    id: &str,
    conn: &mut MultiplexedConnection,
    out: &mut mpsc::Receiver<RoomLine>,
    here: &mut watch::Receiver<Vec<Presence>>,
    heard: &Heard,
    settings: BusSettings,
) -> BusError {
    let timeout = settings.timeout;
    let mut refresh = tokio::time::interval(settings.presence_ttl / 3);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = Vec::with_capacity(BATCH);
    let mut dropped_before = heard.dropped.load(Ordering::Relaxed);
    loop {
        let done = tokio::select! {
            n = out.recv_many(&mut batch, BATCH) => {
                if n == 0 {
                    return BusError::Closed;
                }
                let mut pipe = redis::pipe();
                for said in batch.drain(..) {
                    let message = Message::Line {
                        from: id.to_owned(),
                        room: said.room.to_string(),
                        line: said.line.to_string(),
                    };
                    pipe.publish(CHANNEL, message.encode()).ignore();
                }
                within(timeout, async { Ok(pipe.query_async::<()>(conn).await?) }).await
            }
            changed = here.changed() => {
                if changed.is_err() {
                    return BusError::Closed;
                }
                let members = here.borrow_and_update().clone();
                within(timeout, write_presence(conn, id, members, settings.presence_ttl)).await
            }
            _ = refresh.tick() => {
                let dropped = heard.dropped.load(Ordering::Relaxed);
                if dropped > dropped_before {
                    tracing::warn!(
                        dropped = dropped - dropped_before,
                        "chat bus: lines dropped since the last look; the room or the bus is behind"
                    );
                    dropped_before = dropped;
                }
                let members = here.borrow_and_update().clone();
                let synced = async {
                    write_presence(conn, id, members, settings.presence_ttl).await?;
                    read_presence(conn, id, heard).await
                };
                within(timeout, synced).await
            }
        };
        if let Err(err) = done {
            return err;
        }
    }
}

/// Keeps `members` under this node's key with the presence TTL, and tells the other nodes.
async fn write_presence(
    conn: &mut MultiplexedConnection,
    id: &str,
    members: Vec<Presence>,
    ttl: Duration,
) -> Result<(), BusError> {
    let message = Message::Presence {
        from: id.to_owned(),
        members: members
            .into_iter()
            .map(|member| (member.room.to_string(), member.name))
            .collect(),
    }
    .encode();
    let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
    let mut pipe = redis::pipe();
    pipe.cmd("SET")
        .arg(presence_key(id))
        .arg(&message)
        .arg("PX")
        .arg(millis)
        .ignore();
    pipe.sadd(NODES, id).ignore();
    pipe.publish(CHANNEL, &message).ignore();
    pipe.query_async::<()>(conn).await?;
    Ok(())
}

/// Reads every other node's presence: those whose key expired are gone.
async fn read_presence(
    conn: &mut MultiplexedConnection,
    id: &str,
    heard: &Heard,
) -> Result<(), BusError> {
    let nodes: Vec<String> = redis::cmd("SMEMBERS").arg(NODES).query_async(conn).await?;
    let nodes: Vec<String> = nodes.into_iter().filter(|node| node != id).collect();
    let kept: Vec<Option<Vec<u8>>> = if nodes.is_empty() {
        Vec::new()
    } else {
        let keys: Vec<String> = nodes.iter().map(|node| presence_key(node)).collect();
        redis::cmd("MGET").arg(&keys).query_async(conn).await?
    };
    let mut live = HashMap::new();
    let mut gone = Vec::new();
    for (node, kept) in nodes.into_iter().zip(kept) {
        match kept.map(|bytes| Message::decode(&bytes)) {
            Some(Ok(Message::Presence { from, members })) if from == node => {
                live.insert(node, members);
            }
            Some(_) => heard.refuse("a presence key that is not the node's presence"),
            None => gone.push(node),
        }
    }
    if !gone.is_empty() {
        redis::cmd("SREM")
            .arg(NODES)
            .arg(&gone)
            .query_async::<()>(conn)
            .await?;
    }
    heard.replace_others(live);
    Ok(())
}

impl Heard {
    /// One message from the channel.
    fn message(&self, id: &str, bytes: &[u8]) {
        let message = match Message::decode(bytes) {
            Ok(message) => message,
            Err(err) => {
                self.refuse(&err.to_string());
                return;
            }
        };
        if message.from() == id {
            return;
        }
        match message {
            Message::Line { room, line, .. } => {
                let said = RoomLine {
                    room: room.into(),
                    line: line.into(),
                };
                if self.incoming.try_send(said).is_err() {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            Message::Presence { from, members } => {
                let mut remote = self.remote.lock().unwrap_or_else(PoisonError::into_inner);
                if members.is_empty() {
                    remote.remove(&from);
                } else {
                    remote.insert(from, members);
                }
                self.publish_others(&remote);
            }
        }
    }

    /// Counts a message refused; logs the first.
    fn refuse(&self, why: &str) {
        if self.refused.fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::warn!(
                why,
                "a message on the chat bus was refused (later ones are only counted)"
            );
        }
    }

    /// The other nodes are exactly `live`.
    fn replace_others(&self, live: HashMap<String, Vec<(String, String)>>) {
        let mut remote = self.remote.lock().unwrap_or_else(PoisonError::into_inner);
        *remote = live;
        self.publish_others(&remote);
    }

    /// The other nodes cannot be reached: nobody is there.
    fn forget_others(&self) {
        self.replace_others(HashMap::new());
    }

    /// Tells the room task who is on the other nodes, if that changed.
    fn publish_others(&self, remote: &HashMap<String, Vec<(String, String)>>) {
        let mut seen = HashSet::new();
        let members = remote
            .values()
            .flatten()
            .filter(|(room, name)| seen.insert((room.as_str(), name.as_str())))
            .take(MAX_REMOTE_MEMBERS)
            .map(|(room, name)| Presence {
                room: room.as_str().into(),
                name: name.clone(),
            });
        let roster = Roster::new(members);
        self.others.send_if_modified(|others| {
            if **others == roster {
                false
            } else {
                *others = Arc::new(roster);
                true
            }
        });
    }
}

/// `call`, or [`BusError::Timeout`] after `limit`.
async fn within<T>(
    limit: Duration,
    call: impl Future<Output = Result<T, BusError>>,
) -> Result<T, BusError> {
    tokio::time::timeout(limit, call)
        .await
        .unwrap_or(Err(BusError::Timeout(limit)))
}
