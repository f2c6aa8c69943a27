//! The room task's state, apart from how members are reached: the rules, and everything that
//! reaches the room other than members' lines — the expiry clock, the operator's console, and
//! the other servers through a [`RoomLink`].
//!
//! A front end owns a [`RoomHost`] and drives it from its one task: it hands members' lines to
//! [`rules`](RoomHost::rules), waits on [`next`](RoomHost::next) for everything else, passes
//! every [`Effects`] through [`share`](RoomHost::share), and delivers what is left to its
//! members before handling the next event.

use std::time::Duration;

use tokio::time::{Interval, MissedTickBehavior};

use super::console::Console;
use super::link::RoomLink;
use super::now;
use super::room::{Effects, RoomConfig, Rooms};

/// How often silent members are looked for.
const EXPIRY_TICK: Duration = Duration::from_secs(1);

/// The rooms of this server, with their links to the outside.
#[derive(Debug)]
pub struct RoomHost<L> {
    rules: Rooms,
    link: L,
    link_open: bool,
    /// The [`Rooms::presence_version`] last told to the link.
    presence_told: Option<u64>,
    console: Option<Console>,
    /// Made on the first [`next`](RoomHost::next), inside the runtime that drives the clock.
    expiry: Option<Interval>,
}

impl<L: RoomLink> RoomHost<L> {
    /// Rooms with `config`'s limits, joined to other servers through `link`, with the
    /// operator's `console` when there is one.
    pub fn new(config: RoomConfig, link: L, console: Option<Console>) -> Self {
        let mut rules = Rooms::new(config, now());
        rules.echo_to_console = console.is_some();
        RoomHost {
            rules,
            link,
            link_open: true,
            presence_told: None,
            console,
            expiry: None,
        }
    }

    /// The rules, for the lines members send; they know who is in the rooms elsewhere as the
    /// link last heard.
    pub fn rules(&mut self) -> &mut Rooms {
        if let Some(others) = self.link.others() {
            self.rules.set_others(others);
        }
        &mut self.rules
    }

    /// Waits for the next thing that happens to the room other than a member's line: the
    /// expiry clock's tick, a line the operator typed, a line from another server.
    ///
    /// Cancel-safe: dropped before it completes, it loses nothing.
    pub async fn next(&mut self) -> Effects {
        let expiry = self.expiry.get_or_insert_with(|| {
            let mut expiry = tokio::time::interval(EXPIRY_TICK);
            expiry.set_missed_tick_behavior(MissedTickBehavior::Delay);
            expiry
        });
        loop {
            if let Some(others) = self.link.others() {
                self.rules.set_others(others);
            }
            tokio::select! {
                _ = expiry.tick() => return self.rules.expire(now()),
                typed = next_typed(&mut self.console) => return self.rules.operator(&typed),
                said = self.link.receive(), if self.link_open => match said {
                    Some(said) => return self.rules.remote(&said),
                    None => {
                        tracing::warn!("the link to other servers closed; the rooms go on here");
                        self.link_open = false;
                    }
                },
            }
        }
    }

    /// Publishes the lines `fx` shares with other servers (and who is here, when that changed)
    /// and shows its traffic on the operator's console. What is left is the front end's to
    /// deliver.
    pub fn share(&mut self, fx: &mut Effects) {
        for said in fx.shared.drain(..) {
            self.link.publish(said);
        }
        let version = self.rules.presence_version();
        if self.presence_told != Some(version) {
            self.presence_told = Some(version);
            self.link.present(self.rules.presence());
        }
        if let Some(console) = &mut self.console {
            for line in fx.console.drain(..) {
                console.show(line);
            }
            if !console.is_read() {
                self.rules.echo_to_console = false;
            }
        }
    }
}

/// The operator's next line; pending forever when there is no operator.
async fn next_typed(console: &mut Option<Console>) -> String {
    match console {
        Some(console) => console.typed().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::link::{LocalLink, Presence, RoomLine, Roster};
    use crate::chat::room::MemberId;
    use std::sync::Arc;
    use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

    /// A link whose other servers are the test.
    struct ChannelLink {
        published: UnboundedSender<RoomLine>,
        incoming: UnboundedReceiver<RoomLine>,
    }

    impl RoomLink for ChannelLink {
        fn publish(&mut self, said: RoomLine) {
            let _ = self.published.send(said);
        }

        async fn receive(&mut self) -> Option<RoomLine> {
            self.incoming.recv().await
        }
    }

    /// The next effects that deliver something, past the expiry clock's empty ticks.
    async fn next_delivery<L: RoomLink>(host: &mut RoomHost<L>) -> Effects {
        loop {
            let fx = host.next().await;
            if !fx.out.is_empty() {
                return fx;
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn lines_said_here_go_out_and_lines_from_elsewhere_come_in() {
        let (published, mut other_servers) = unbounded_channel();
        let (remote, incoming) = unbounded_channel();
        let link = ChannelLink {
            published,
            incoming,
        };
        let mut host = RoomHost::new(RoomConfig::default(), link, None);
        let alice = host.rules().new_member_id();
        let mut fx = host.rules().arrive(alice, "alice".into(), b"hello", now());
        host.share(&mut fx);
        assert!(fx.shared.is_empty(), "handed to the link");
        let lines: Vec<String> = std::iter::from_fn(|| other_servers.try_recv().ok())
            .map(|said| format!("[{}] {}", said.room, said.line))
            .collect();
        assert_eq!(
            lines,
            ["[lobby] * alice joined\n", "[lobby] <alice> hello\n"]
        );

        remote
            .send(RoomLine {
                room: "lobby".into(),
                line: "<bob> hi alice\n".into(),
            })
            .unwrap();
        let fx = next_delivery(&mut host).await;
        assert_eq!(fx.out.len(), 1);
        assert_eq!(
            (fx.out[0].to, &*fx.out[0].line),
            (alice, "<bob> hi alice\n")
        );
    }

    /// A link that records who is here and says who is elsewhere.
    #[derive(Default)]
    struct PresenceLink {
        told: Vec<Vec<Presence>>,
        others: Option<Arc<Roster>>,
    }

    impl RoomLink for PresenceLink {
        fn publish(&mut self, _said: RoomLine) {}

        async fn receive(&mut self) -> Option<RoomLine> {
            std::future::pending().await
        }

        fn present(&mut self, here: Vec<Presence>) {
            self.told.push(here);
        }

        fn others(&mut self) -> Option<Arc<Roster>> {
            self.others.take()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn who_is_here_goes_out_when_it_changes_and_who_is_elsewhere_comes_in() {
        let mut host = RoomHost::new(RoomConfig::default(), PresenceLink::default(), None);
        let alice = host.rules().new_member_id();
        let mut fx = host.rules().arrive(alice, "alice".into(), b"hi", now());
        host.share(&mut fx);
        let mut fx = host.rules().receive(alice, b"just talking", now());
        host.share(&mut fx);
        let mut fx = host.rules().receive(alice, b"/nick al", now());
        host.share(&mut fx);
        let lobby = |name: &str| Presence {
            room: "lobby".into(),
            name: name.into(),
        };
        assert_eq!(
            host.link.told,
            [vec![lobby("alice")], vec![lobby("al")]],
            "told on joining and renaming, not for a line"
        );

        host.link.others = Some(Arc::new(Roster::new([lobby("bob")])));
        let fx = host.rules().receive(alice, b"/who", now());
        assert_eq!(&*fx.out[0].line, "* lobby: al, bob\n");
    }

    #[tokio::test(start_paused = true)]
    async fn the_operator_speaks_and_reads_the_traffic_through_the_console() {
        let (typed, typed_lines) = tokio::sync::mpsc::channel(4);
        let (console, mut traffic) = Console::new(typed_lines);
        let mut host = RoomHost::new(RoomConfig::default(), LocalLink, Some(console));
        let (alice, bob) = (host.rules().new_member_id(), host.rules().new_member_id());
        let mut fx = host.rules().arrive(alice, "alice".into(), b"hi", now());
        host.share(&mut fx);
        let mut fx = host.rules().arrive(bob, "bob".into(), b"hello", now());
        host.share(&mut fx);
        assert!(fx.console.is_empty(), "handed to the console");
        let shown: Vec<String> = std::iter::from_fn(|| traffic.try_recv().ok()).collect();
        assert_eq!(
            shown,
            [
                "[lobby] * alice joined",
                "[lobby] <alice> hi",
                "[lobby] * bob joined",
                "[lobby] <bob> hello"
            ]
        );

        typed.send("closing soon".to_owned()).await.unwrap();
        let fx = next_delivery(&mut host).await;
        let heard: Vec<(MemberId, &str)> = fx.out.iter().map(|out| (out.to, &*out.line)).collect();
        assert_eq!(heard.len(), 2);
        assert!(heard.contains(&(alice, "<server> closing soon\n")));
        assert!(heard.contains(&(bob, "<server> closing soon\n")));
    }

    #[tokio::test(start_paused = true)]
    async fn the_rooms_go_on_when_the_link_closes() {
        let (published, _other_servers) = unbounded_channel();
        let (remote, incoming) = unbounded_channel::<RoomLine>();
        let link = ChannelLink {
            published,
            incoming,
        };
        let config = RoomConfig {
            idle: Duration::from_secs(5),
            ..RoomConfig::default()
        };
        let mut host = RoomHost::new(config, link, None);
        let (alice, bob) = (host.rules().new_member_id(), host.rules().new_member_id());
        host.rules().arrive(alice, "alice".into(), b"hi", now());
        host.rules().arrive(bob, "bob".into(), b"hi", now());
        drop(remote);
        tokio::time::advance(Duration::from_secs(3)).await;
        host.rules().receive(bob, b"still here", now());
        let fx = next_delivery(&mut host).await;
        assert_eq!(fx.gone, [alice], "the expiry clock still runs");
    }
}
