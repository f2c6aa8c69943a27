//! The chat room's rules, with no sockets and no clock: lines in, lines out.
//!
//! Members are [`MemberId`]s the rules hand out ([`Rooms::new_member_id`]); a front end maps its
//! own peers to them. [`Rooms::arrive`] takes a newcomer's first line and [`Rooms::receive`] a
//! member's next; each returns the [`Effects`]: the lines to deliver, the lines to share with
//! other servers, what the operator's console shows, and the members the room has let go.
//! [`Rooms::remote`] delivers a line said on another server, and [`Rooms::set_others`] tells the
//! rules who is in the rooms elsewhere (for `/who`, and so that `/nick` keeps names unique across
//! servers); [`Rooms::presence`] is who is here, for the other servers. So the rules are tested exactly, and
//! whoever feeds them one line at a time and delivers the result before the next never sends a
//! line twice, and relays each sender's lines in the order they arrived.
//!
//! Safety rules kept here:
//! - Text and names are sanitised: control characters (the start of every terminal escape) and
//!   bidirectional-text overrides never leave the server.
//! - Joins are rate-limited overall, so a flood of newcomers cannot turn into a flood of join
//!   notices.
//! - Each member has a token bucket; lines beyond it are dropped (with one warning), while
//!   everyone else is still served.
//!
//! What may be sent to a peer whose address can be forged (the reflection rule: no more than it
//! sent until it is a member, within a budget until it proves that it receives) is a rule about
//! addresses, kept by the UDP front end; the rules only know `/confirm` as a command that is
//! the front end's to answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::link::{Presence, RoomLine, Roster};
pub use super::member::MemberId;
use super::member::{MemberIds, MemberMap};
use crate::defaults;
use crate::rate::TokenBucket;

pub use super::line::MAX_LINE;
use super::line::{parse_line, Line};
/// Longest nick or room name, in characters.
pub const MAX_NAME_CHARS: usize = 24;
/// The room everyone starts in.
pub const DEFAULT_ROOM: &str = "lobby";
/// The name the server operator speaks under.
pub const OPERATOR: &str = "server";

/// Limits of the room.
#[derive(Debug, Clone, Copy)]
pub struct RoomConfig {
    /// A member silent for this long is dropped.
    pub idle: Duration,
    /// Lines per second a member may send, on average.
    pub rate: f64,
    /// Lines a member may send in a burst.
    pub burst: f64,
    /// Most members at once.
    pub max_members: usize,
    /// New members per second over the whole room, on average (bursts of ten times that).
    pub join_rate: f64,
    /// Bytes a front end whose peers' addresses can be forged (UDP) sends one peer in all until
    /// it proves that it receives them (`/confirm`).
    pub unconfirmed_bytes: usize,
    /// Bytes a second such a front end sends all peers that have not proved it together.
    pub unconfirmed_rate: usize,
}

impl Default for RoomConfig {
    fn default() -> Self {
        RoomConfig {
            idle: defaults::CHAT_IDLE,
            rate: defaults::CHAT_RATE,
            burst: defaults::CHAT_RATE * defaults::CHAT_BURST_PER_RATE,
            max_members: defaults::CHAT_MAX_MEMBERS,
            join_rate: defaults::CHAT_JOIN_RATE,
            unconfirmed_bytes: defaults::CHAT_UNCONFIRMED_BYTES,
            unconfirmed_rate: defaults::CHAT_UNCONFIRMED_RATE,
        }
    }
}

/// A line to deliver to one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// To whom.
    pub to: MemberId,
    /// One line, ending in `\n`; a line said to a whole room is shared by all its deliveries.
    pub line: Arc<str>,
}

#[derive(Debug)]
struct Member {
    name: String,
    room: Arc<str>,
    last_seen: Instant,
    bucket: TokenBucket,
    warned: bool,
}

/// Every room and its members.
#[derive(Debug)]
pub struct Rooms {
    config: RoomConfig,
    members: MemberMap<Member>,
    ids: MemberIds,
    joins: TokenBucket,
    /// Who is in the rooms on other servers.
    others: Arc<Roster>,
    /// Counts changes of who is here, and where, under which name.
    presence_version: u64,
    /// Lines relayed to the operator's console, when there is one.
    pub echo_to_console: bool,
}

/// What one line (or one expiry, or one operator line) produced.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// Lines to deliver, in order.
    pub out: Vec<Outgoing>,
    /// Lines said in a room here, for the other servers' members of that room.
    pub shared: Vec<RoomLine>,
    /// Room traffic for the operator's console (`[room] line`).
    pub console: Vec<String>,
    /// Members the room has let go (they left or fell silent), once their last lines in
    /// [`out`](Effects::out) are delivered.
    pub gone: Vec<MemberId>,
}

impl Rooms {
    /// An empty set of rooms.
    pub fn new(config: RoomConfig, now: Instant) -> Rooms {
        Rooms {
            config,
            members: MemberMap::default(),
            ids: MemberIds::default(),
            joins: TokenBucket::full(config.join_rate * 10.0, now),
            others: Arc::default(),
            presence_version: 0,
            echo_to_console: false,
        }
    }

    /// Who is in the rooms on other servers, from now on.
    pub fn set_others(&mut self, others: Arc<Roster>) {
        self.others = others;
    }

    /// Every member here: its room and name, for the other servers.
    pub fn presence(&self) -> Vec<Presence> {
        self.members
            .values()
            .map(|member| Presence {
                room: Arc::clone(&member.room),
                name: member.name.clone(),
            })
            .collect()
    }

    /// A number that changes whenever [`presence`](Rooms::presence) does.
    pub fn presence_version(&self) -> u64 {
        self.presence_version
    }

    /// How many members there are.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there are no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Whether `id` is a member now.
    pub fn is_member(&self, id: MemberId) -> bool {
        self.members.contains_key(&id)
    }

    /// An id for a newcomer, never handed out before.
    pub fn new_member_id(&mut self) -> MemberId {
        self.ids.next()
    }

    /// The first line from `id`, a newcomer: it joins the default room as `name`, if the line
    /// is valid, the room has space and joins are not arriving too fast. Whether it did is
    /// [`is_member`](Rooms::is_member). From an id that is a member already, this is
    /// [`receive`](Rooms::receive).
    pub fn arrive(&mut self, id: MemberId, name: String, data: &[u8], now: Instant) -> Effects {
        let mut fx = Effects::default();
        self.handle(id, Some(name), data, now, &mut fx);
        fx
    }

    /// A line from member `from`. From an id that is not a member, nothing happens.
    pub fn receive(&mut self, from: MemberId, data: &[u8], now: Instant) -> Effects {
        let mut fx = Effects::default();
        if self.is_member(from) {
            self.handle(from, None, data, now, &mut fx);
        }
        fx
    }

    /// Drops members silent for longer than the idle time.
    pub fn expire(&mut self, now: Instant) -> Effects {
        let idle = self.config.idle;
        let gone: Vec<MemberId> = self
            .members
            .iter()
            .filter(|(_, m)| now.saturating_duration_since(m.last_seen) > idle)
            .map(|(id, _)| *id)
            .collect();
        let mut fx = Effects::default();
        for id in gone {
            if let Some(member) = self.members.remove(&id) {
                self.presence_version += 1;
                self.tell_room(
                    &member.room,
                    None,
                    &format!("* {} left", member.name),
                    &mut fx,
                );
                fx.gone.push(id);
            }
        }
        fx
    }

    /// Notes that member `id` is still there though it said nothing: for a front end whose
    /// peers show that they are alive another way (a WebSocket's pongs), so that a member who
    /// only listens is not dropped as silent.
    pub fn touch(&mut self, id: MemberId, now: Instant) {
        if let Some(member) = self.members.get_mut(&id) {
            member.last_seen = now;
        }
    }

    /// A line typed by the server's operator: to every member, as `<server> text`.
    pub fn operator(&mut self, text: &str) -> Effects {
        let mut fx = Effects::default();
        let text = sanitize(text);
        if text.trim().is_empty() {
            return fx;
        }
        let line: Arc<str> = format!("<{OPERATOR}> {text}\n").into();
        for id in self.members.keys() {
            fx.out.push(Outgoing {
                to: *id,
                line: Arc::clone(&line),
            });
        }
        fx
    }

    /// A line said in a room on another server: to the members of that room here. It is
    /// sanitised like every line from outside, and not shared again.
    pub fn remote(&mut self, said: &RoomLine) -> Effects {
        let mut fx = Effects::default();
        let text = sanitize(said.line.strip_suffix('\n').unwrap_or(&said.line));
        let line: Arc<str> = format!("{text}\n").into();
        self.deliver_to_room(&said.room, None, &line, &mut fx);
        if self.echo_to_console {
            fx.console
                .push(format!("[{}] {text}", sanitize(&said.room)));
        }
        fx
    }

    /// Applies one line from `from`, which joins as `newcomer` if it is not a member yet.
    fn handle(
        &mut self,
        from: MemberId,
        newcomer: Option<String>,
        data: &[u8],
        now: Instant,
        fx: &mut Effects,
    ) {
        let line = match parse_line(data) {
            // Nothing to say, and nothing may be said back to a stranger.
            Ok(Line::Empty) => return,
            Ok(line) => line,
            Err(err) => {
                reply(fx, from, &format!("! {err}"));
                return;
            }
        };

        if !self.members.contains_key(&from) {
            let Some(name) = newcomer else { return };
            if !self.join(from, name, now, fx) {
                return;
            }
        }
        let (config, member) = (self.config, self.members.get_mut(&from).expect("joined"));
        member.last_seen = now;
        if !member.bucket.take(1.0, config.rate, config.burst, now) {
            if !std::mem::replace(&mut member.warned, true) {
                reply(fx, from, "! slow down: lines are being dropped");
            }
            return;
        }
        member.warned = false;

        match line {
            Line::Command { verb, arg } => self.command(from, verb, arg, fx),
            Line::Empty => {}
            Line::Text(line) => {
                let text = sanitize(line);
                if text.trim().is_empty() {
                    return;
                }
                let member = &self.members[&from];
                let said = format!("<{}> {text}", member.name);
                let room = Arc::clone(&member.room);
                self.tell_room(&room, Some(from), &said, fx);
            }
        }
    }

    /// Makes `from` a member of the default room as `name`, if the room has space and joins
    /// are not arriving too fast.
    fn join(&mut self, from: MemberId, name: String, now: Instant, fx: &mut Effects) -> bool {
        let burst = self.config.join_rate * 10.0;
        if self.members.len() >= self.config.max_members
            || !self.joins.take(1.0, self.config.join_rate, burst, now)
        {
            reply(fx, from, "! room full");
            return false;
        }
        let room: Arc<str> = DEFAULT_ROOM.into();
        let member = Member {
            name,
            room: Arc::clone(&room),
            last_seen: now,
            bucket: TokenBucket::full(self.config.burst, now),
            warned: false,
        };
        let notice = format!("* {} joined", member.name);
        self.members.insert(from, member);
        self.presence_version += 1;
        self.tell_room(&room, Some(from), &notice, fx);
        true
    }

    fn command(&mut self, from: MemberId, verb: &str, arg: &str, fx: &mut Effects) {
        match verb {
            "nick" => self.nick(from, arg, fx),
            "join" => self.join_room(from, arg, fx),
            "who" => {
                let room = &self.members[&from].room;
                let mut names: Vec<&str> = self
                    .members
                    .values()
                    .filter(|m| &m.room == room)
                    .map(|m| m.name.as_str())
                    .chain(self.others.in_room(room).iter().map(String::as_str))
                    .collect();
                names.sort_unstable();
                let line = format!("* {room}: {}", names.join(", "));
                reply(fx, from, &line);
            }
            "leave" => {
                let member = self.members.remove(&from).expect("a member");
                self.presence_version += 1;
                self.tell_room(&member.room, None, &format!("* {} left", member.name), fx);
                reply(fx, from, "* bye");
                fx.gone.push(from);
            }
            "help" => reply(
                fx,
                from,
                "* commands: /nick NAME, /join ROOM, /who, /leave, /confirm TOKEN, /help; anything else is said to the room",
            ),
            // Proof that an address receives what is sent to it: the front end's to answer
            // (a forged address is a matter of the transport, not of the room).
            "confirm" => {}
            _ => reply(fx, from, &format!("! unknown command /{}; try /help", sanitize(verb))),
        }
    }

    fn nick(&mut self, from: MemberId, wanted: &str, fx: &mut Effects) {
        let name = sanitize(wanted);
        if let Err(why) = valid_nick(&name) {
            reply(fx, from, &format!("! cannot use that name: {why}"));
            return;
        }
        let taken = name.eq_ignore_ascii_case(OPERATOR)
            || self.others.has_name(&name)
            || self
                .members
                .iter()
                .any(|(id, m)| *id != from && m.name.to_lowercase() == name.to_lowercase());
        if taken {
            reply(fx, from, &format!("! the name {name} is taken"));
            return;
        }
        let member = self.members.get_mut(&from).expect("a member");
        let old = std::mem::replace(&mut member.name, name.clone());
        self.presence_version += 1;
        let room = Arc::clone(&member.room);
        self.tell_room(&room, Some(from), &format!("* {old} is now {name}"), fx);
        reply(fx, from, &format!("* you are now {name}"));
    }

    fn join_room(&mut self, from: MemberId, wanted: &str, fx: &mut Effects) {
        if let Err(why) = valid_room(wanted) {
            reply(fx, from, &format!("! cannot join that room: {why}"));
            return;
        }
        let member = self.members.get_mut(&from).expect("a member");
        if &*member.room == wanted {
            reply(fx, from, &format!("* you are already in {wanted}"));
            return;
        }
        let new: Arc<str> = wanted.into();
        let old = std::mem::replace(&mut member.room, Arc::clone(&new));
        let name = member.name.clone();
        self.presence_version += 1;
        self.tell_room(&old, Some(from), &format!("* {name} left"), fx);
        self.tell_room(&new, Some(from), &format!("* {name} joined"), fx);
        let count = self.members.values().filter(|m| m.room == new).count()
            + self.others.in_room(&new).len();
        reply(fx, from, &format!("* you are in {wanted} ({count} here)"));
    }

    /// Says `line` in `room`: to every member here except `except`, and to the other servers.
    fn tell_room(&self, room: &Arc<str>, except: Option<MemberId>, line: &str, fx: &mut Effects) {
        let shared: Arc<str> = format!("{line}\n").into();
        self.deliver_to_room(room, except, &shared, fx);
        fx.shared.push(RoomLine {
            room: Arc::clone(room),
            line: shared,
        });
        if self.echo_to_console {
            fx.console.push(format!("[{room}] {line}"));
        }
    }

    /// Delivers `line` to every member of `room` here except `except`.
    fn deliver_to_room(
        &self,
        room: &str,
        except: Option<MemberId>,
        line: &Arc<str>,
        fx: &mut Effects,
    ) {
        for (id, member) in &self.members {
            if *member.room == *room && Some(*id) != except {
                fx.out.push(Outgoing {
                    to: *id,
                    line: Arc::clone(line),
                });
            }
        }
    }
}

fn reply(fx: &mut Effects, to: MemberId, line: &str) {
    fx.out.push(Outgoing {
        to,
        line: format!("{line}\n").into(),
    });
}

/// Text with control characters (C0, DEL, C1: every terminal escape starts with one) and
/// bidirectional-text overrides removed; tabs become spaces.
pub fn sanitize(text: &str) -> String {
    text.chars()
        .filter_map(|c| match c {
            '\t' => Some(' '),
            c if c.is_control() => None,
            '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' => None,
            c => Some(c),
        })
        .collect()
}

fn valid_nick(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err("it is longer than 24 characters");
    }
    if name
        .chars()
        .any(|c| c.is_whitespace() || matches!(c, '<' | '>' | '*' | '!' | ','))
    {
        return Err("it may not contain spaces or < > * ! ,");
    }
    Ok(())
}

fn valid_room(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err("a room name has 1 to 24 characters");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err("a room name has only letters, digits, _ and -");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Member number `n`, whose name is `127.0.0.1:n` until it picks one (as the UDP front end
    /// names a newcomer after its address).
    fn member(n: u16) -> MemberId {
        MemberId::from_number(n.into())
    }

    /// The lines each member receives, in order.
    fn lines_to(fx: &Effects, to: MemberId) -> Vec<&str> {
        fx.out
            .iter()
            .filter(|o| o.to == to)
            .map(|o| &*o.line)
            .collect()
    }

    struct Room {
        rooms: Rooms,
        now: Instant,
    }

    impl Room {
        fn new(config: RoomConfig) -> Room {
            let now = Instant::now();
            Room {
                rooms: Rooms::new(config, now),
                now,
            }
        }

        /// A line from member `from`, which arrives with it if it is not a member yet.
        fn say(&mut self, from: u16, line: &str) -> Effects {
            self.send(from, line.as_bytes())
        }

        fn send(&mut self, from: u16, data: &[u8]) -> Effects {
            if self.rooms.is_member(member(from)) {
                self.rooms.receive(member(from), data, self.now)
            } else {
                let name = format!("127.0.0.1:{from}");
                self.rooms.arrive(member(from), name, data, self.now)
            }
        }
    }

    #[test]
    fn first_datagram_joins_and_lines_reach_everyone_else_once() {
        let mut room = Room::new(RoomConfig::default());
        assert!(room.say(1, "hi\n").out.is_empty(), "alone: nobody to tell");
        let fx = room.say(2, "hello");
        assert_eq!(
            lines_to(&fx, member(1)),
            ["* 127.0.0.1:2 joined\n", "<127.0.0.1:2> hello\n"]
        );
        assert!(
            lines_to(&fx, member(2)).is_empty(),
            "never back to the sender"
        );
        let fx = room.say(1, "welcome");
        assert_eq!(lines_to(&fx, member(2)), ["<127.0.0.1:1> welcome\n"]);
        assert_eq!(fx.out.len(), 1);
    }

    #[test]
    fn nick_who_and_collisions() {
        let mut room = Room::new(RoomConfig::default());
        room.say(1, "/nick alice");
        room.say(2, "x");
        let fx = room.say(2, "/nick ALICE");
        assert_eq!(lines_to(&fx, member(2)), ["! the name ALICE is taken\n"]);
        let fx = room.say(2, "/nick server");
        assert_eq!(lines_to(&fx, member(2)), ["! the name server is taken\n"]);
        let fx = room.say(2, "/nick bob");
        assert_eq!(lines_to(&fx, member(1)), ["* 127.0.0.1:2 is now bob\n"]);
        assert_eq!(lines_to(&fx, member(2)), ["* you are now bob\n"]);
        let fx = room.say(1, "/who");
        assert_eq!(lines_to(&fx, member(1)), ["* lobby: alice, bob\n"]);
        let fx = room.say(1, "/nick a b");
        assert!(lines_to(&fx, member(1))[0].starts_with("! cannot use that name"));
    }

    #[test]
    fn help_lists_confirm_which_the_rules_leave_to_the_front_end() {
        let mut room = Room::new(RoomConfig::default());
        room.say(1, "a");
        let fx = room.say(1, "/help");
        assert_eq!(
            lines_to(&fx, member(1)),
            ["* commands: /nick NAME, /join ROOM, /who, /leave, /confirm TOKEN, /help; anything else is said to the room\n"]
        );
        assert!(room.say(1, "/confirm 0123456789abcdef").out.is_empty());
        let fx = room.say(2, "/confirm");
        assert!(lines_to(&fx, member(2)).is_empty());
        assert_eq!(
            lines_to(&fx, member(1)),
            ["* 127.0.0.1:2 joined\n"],
            "a newcomer joins with it"
        );
        assert!(room.rooms.is_member(member(2)));
    }

    #[test]
    fn rooms_are_separate() {
        let mut room = Room::new(RoomConfig::default());
        room.say(1, "a");
        room.say(2, "b");
        room.say(3, "c");
        let fx = room.say(3, "/join kitchen");
        assert_eq!(lines_to(&fx, member(1)), ["* 127.0.0.1:3 left\n"]);
        assert_eq!(
            lines_to(&fx, member(3)),
            ["* you are in kitchen (1 here)\n"]
        );
        let fx = room.say(1, "lobby only");
        assert_eq!(lines_to(&fx, member(2)).len(), 1);
        assert!(lines_to(&fx, member(3)).is_empty());
        let fx = room.say(3, "/join bad room");
        assert!(lines_to(&fx, member(3))[0].starts_with("! cannot join that room"));
    }

    #[test]
    fn leave_and_idle_expiry() {
        let mut room = Room::new(RoomConfig {
            idle: Duration::from_secs(60),
            ..RoomConfig::default()
        });
        room.say(1, "a");
        room.say(2, "b");
        let fx = room.say(2, "/leave");
        assert_eq!(lines_to(&fx, member(1)), ["* 127.0.0.1:2 left\n"]);
        assert_eq!(lines_to(&fx, member(2)), ["* bye\n"]);
        assert_eq!(room.rooms.len(), 1);
        room.say(3, "c");
        room.now += Duration::from_secs(30);
        room.say(3, "still here");
        room.now += Duration::from_secs(31);
        let fx = room.rooms.expire(room.now);
        assert_eq!(lines_to(&fx, member(3)), ["* 127.0.0.1:1 left\n"]);
        assert_eq!(room.rooms.len(), 1);
    }

    #[test]
    fn text_and_names_are_sanitised() {
        let mut room = Room::new(RoomConfig::default());
        room.say(1, "a");
        let fx = room.say(2, "/nick \x1b[31mevil\x07");
        assert_eq!(
            lines_to(&fx, member(1)),
            ["* 127.0.0.1:2 joined\n", "* 127.0.0.1:2 is now [31mevil\n"]
        );
        let fx = room.say(2, "red \x1b[31malert\x1b[0m \u{202E}txt\r\n");
        assert_eq!(
            lines_to(&fx, member(1)),
            ["<[31mevil> red [31malert[0m txt\n"]
        );
    }

    #[test]
    fn bad_lines_get_a_short_error_and_never_join() {
        let mut room = Room::new(RoomConfig::default());
        assert!(room.say(1, "").out.is_empty());
        let fx = room.send(1, b"\xff");
        assert_eq!(lines_to(&fx, member(1)), ["! not UTF-8\n"]);
        let fx = room.send(1, &vec![b'x'; 65_507]);
        assert_eq!(
            lines_to(&fx, member(1)),
            ["! message too long (limit 4096 bytes)\n"]
        );
        assert!(room.rooms.is_empty(), "invalid lines do not join");
    }

    #[test]
    fn a_full_room_turns_newcomers_away() {
        let mut room = Room::new(RoomConfig {
            max_members: 1,
            ..RoomConfig::default()
        });
        room.say(1, "a");
        let fx = room.say(2, "hi");
        assert_eq!(lines_to(&fx, member(2)), ["! room full\n"]);
        assert!(!room.rooms.is_member(member(2)));
    }

    #[test]
    fn members_who_leave_or_fall_silent_are_reported_gone() {
        let mut room = Room::new(RoomConfig {
            idle: Duration::from_secs(60),
            ..RoomConfig::default()
        });
        room.say(1, "a");
        room.say(2, "b");
        assert_eq!(room.say(2, "/leave").gone, [member(2)]);
        assert!(room.say(1, "still here").gone.is_empty());
        room.now += Duration::from_secs(61);
        assert_eq!(room.rooms.expire(room.now).gone, [member(1)]);
        assert!(room.rooms.is_empty());
        assert!(
            room.rooms
                .receive(member(1), b"back", room.now)
                .out
                .is_empty(),
            "a member let go must arrive again"
        );
    }

    #[test]
    fn a_flooding_member_is_throttled_and_others_still_get_through() {
        let mut room = Room::new(RoomConfig {
            rate: 1.0,
            burst: 5.0,
            ..RoomConfig::default()
        });
        room.say(1, "listener");
        room.say(2, "flooder");
        room.say(3, "polite");
        let mut relayed = 0;
        let mut warnings = 0;
        for i in 0..100 {
            let fx = room.say(2, &format!("spam {i}"));
            relayed += lines_to(&fx, member(1)).len();
            warnings += lines_to(&fx, member(2)).len();
        }
        assert_eq!(relayed, 4, "burst of 5, one used to join");
        assert_eq!(warnings, 1, "one warning per episode");
        let fx = room.say(3, "still heard");
        assert_eq!(lines_to(&fx, member(1)), ["<127.0.0.1:3> still heard\n"]);
        room.now += Duration::from_secs(2);
        assert_eq!(
            lines_to(&room.say(2, "later"), member(1)).len(),
            1,
            "tokens refill"
        );
    }

    #[test]
    fn joins_are_rate_limited_overall() {
        let mut room = Room::new(RoomConfig {
            join_rate: 1.0,
            ..RoomConfig::default()
        });
        for port in 1..=30 {
            room.say(port, "hello there, let me in");
        }
        assert_eq!(room.rooms.len(), 10, "a burst of ten times the rate");
    }

    #[test]
    fn lines_said_in_a_room_are_shared_and_replies_are_not() {
        let mut room = Room::new(RoomConfig::default());
        room.say(1, "a");
        let fx = room.say(1, "hello");
        assert_eq!(
            fx.shared,
            [RoomLine {
                room: "lobby".into(),
                line: "<127.0.0.1:1> hello\n".into()
            }]
        );
        assert!(room.say(1, "/who").shared.is_empty());
        let fx = room.say(1, "/join kitchen");
        let shared: Vec<(&str, &str)> = fx
            .shared
            .iter()
            .map(|said| (&*said.room, &*said.line))
            .collect();
        assert_eq!(
            shared,
            [
                ("lobby", "* 127.0.0.1:1 left\n"),
                ("kitchen", "* 127.0.0.1:1 joined\n")
            ]
        );
    }

    #[test]
    fn a_line_from_another_server_reaches_that_room_here_sanitised_and_is_not_shared_back() {
        let mut room = Room::new(RoomConfig::default());
        room.say(1, "a");
        room.say(2, "/join kitchen");
        let fx = room.rooms.remote(&RoomLine {
            room: "kitchen".into(),
            line: "<carol> hi \x1b[31mthere\n".into(),
        });
        assert_eq!(lines_to(&fx, member(2)), ["<carol> hi [31mthere\n"]);
        assert!(lines_to(&fx, member(1)).is_empty(), "another room");
        assert!(fx.shared.is_empty());
    }

    #[test]
    fn members_elsewhere_are_listed_and_their_names_are_taken() {
        let mut room = Room::new(RoomConfig::default());
        room.say(1, "/nick alice");
        let version = room.rooms.presence_version();
        room.rooms.set_others(Arc::new(Roster::new([
            Presence {
                room: "lobby".into(),
                name: "Bob".into(),
            },
            Presence {
                room: "kitchen".into(),
                name: "carol".into(),
            },
        ])));
        let fx = room.say(1, "/who");
        assert_eq!(lines_to(&fx, member(1)), ["* lobby: Bob, alice\n"]);
        let fx = room.say(1, "/nick bob");
        assert_eq!(lines_to(&fx, member(1)), ["! the name bob is taken\n"]);
        assert_eq!(room.rooms.presence_version(), version, "no change");
        let fx = room.say(1, "/join kitchen");
        assert_eq!(
            lines_to(&fx, member(1)),
            ["* you are in kitchen (2 here)\n"]
        );
        assert_ne!(room.rooms.presence_version(), version);
        assert_eq!(
            room.rooms.presence(),
            [Presence {
                room: "kitchen".into(),
                name: "alice".into()
            }]
        );
    }

    #[test]
    fn operator_speaks_to_everyone() {
        let mut room = Room::new(RoomConfig::default());
        room.say(1, "a");
        room.say(2, "/join other");
        let fx = room.rooms.operator("hello all\x1b]0;x\x07");
        assert_eq!(lines_to(&fx, member(1)), ["<server> hello all]0;x\n"]);
        assert_eq!(lines_to(&fx, member(2)), ["<server> hello all]0;x\n"]);
    }
}
