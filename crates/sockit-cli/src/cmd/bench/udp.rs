//! `sockit bench udp`: round trips to `serve --udp-echo` over `-c` sockets, `-n` in all, each
//! socket keeping `--window` datagrams in flight. Each datagram carries its own number; a
//! round trip counts when the reply is a datagram still in flight with its ASCII letters
//! upper-cased. A reply that names a datagram in flight but differs is an error for that
//! datagram; a datagram whose reply does not come within `--reply-timeout` is an error; a
//! reply to no datagram in flight (late, repeated, or unreadable) is skipped. So every
//! datagram counts once, as a round trip or as an error.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::UdpSocket;

use super::stats::{Report, Tally};
use super::{measure, Budget, Load, Payloads, WorkerEnd, SEQ_DIGITS};
use crate::cmd::CmdError;

/// Round trips when neither `-n` nor `--duration` is given.
const DEFAULT_REQUESTS: u64 = 1000;
/// How long a reply may take, unless `--reply-timeout` says: a datagram lost is lost.
const REPLY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);
/// The largest datagram payload over IPv4.
const MAX_DATAGRAM: u64 = 65_507;
/// The most datagrams `--window` may keep in flight on one socket.
const MAX_WINDOW: u64 = 4096;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(super) load: Load,
    /// Payload bytes of each datagram (at least 20, to carry its number).
    #[arg(short = 'd', long = "data-size", value_name = "BYTES", default_value_t = 32,
          value_parser = clap::value_parser!(u64).range(20..=MAX_DATAGRAM))]
    data_size: u64,
    /// The UDP echo's address (`serve --udp-echo ADDR`): HOST:PORT, or :PORT for 127.0.0.1.
    #[arg(long, value_name = "ADDR", value_parser = crate::cmd::parse_server)]
    server: String,
    /// Datagrams each socket keeps in flight: a new one goes out as each reply comes back
    /// (or its wait times out).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=MAX_WINDOW))]
    window: u64,
}

pub(crate) async fn run(args: &Args) -> Result<(Report, usize), CmdError> {
    let server: SocketAddr = tokio::net::lookup_host(&args.server)
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| format!("cannot resolve {}", args.server))?;
    let budget = Arc::new(args.load.budget(DEFAULT_REQUESTS));
    let mut workers = Vec::new();
    for _ in 0..args.load.connections_or(1) {
        let local: SocketAddr = if server.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local).await?;
        socket.connect(server).await?;
        let worker = Worker {
            socket,
            budget: budget.clone(),
            size: args.data_size as usize,
            payloads: Payloads::new(args.data_size as usize),
            timeout: args.load.reply_timeout.unwrap_or(REPLY_TIMEOUT),
            window: args.window as usize,
        };
        workers.push(worker.run());
    }
    measure("udp", workers).await
}

/// One socket's share of the run.
struct Worker {
    socket: UdpSocket,
    budget: Arc<Budget>,
    size: usize,
    payloads: Payloads,
    timeout: std::time::Duration,
    window: usize,
}

/// A datagram sent and not yet answered: its number and when it went.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    seq: u64,
    sent: Instant,
}

impl Worker {
    async fn run(self) -> WorkerEnd {
        let mut tally = Tally::default();
        // By number, which is the order sent: the oldest first.
        let mut in_flight: VecDeque<InFlight> = VecDeque::with_capacity(self.window);
        let mut datagram = Vec::with_capacity(self.size);
        let mut expected = Vec::with_capacity(self.size);
        let mut reply = vec![0; self.size + 1];
        loop {
            while in_flight.len() < self.window {
                let claimed = self.budget.claim(1);
                if claimed.is_empty() {
                    break;
                }
                self.payloads.fill(claimed.start, &mut datagram);
                let sent = Instant::now();
                match self.socket.send(&datagram).await {
                    Ok(_) => in_flight.push_back(InFlight {
                        seq: claimed.start,
                        sent,
                    }),
                    Err(err) => tally.failed(1, &err),
                }
            }
            let Some(oldest) = in_flight.front().copied() else {
                return WorkerEnd::done(tally);
            };
            let deadline = tokio::time::Instant::from_std(oldest.sent + self.timeout);
            match tokio::time::timeout_at(deadline, self.socket.recv(&mut reply)).await {
                Ok(Ok(len)) => {
                    self.settle(&reply[..len], &mut in_flight, &mut expected, &mut tally);
                }
                // E.g. refused: nothing listens there. The oldest datagram is given up.
                Ok(Err(err)) => {
                    in_flight.pop_front();
                    tally.failed(1, &format!("cannot receive: {err}"));
                }
                Err(_) => {
                    in_flight.pop_front();
                    tally.failed(1, &"no reply within --reply-timeout");
                }
            }
        }
    }

    /// Counts `reply`: a round trip if it is the datagram in flight that it names,
    /// upper-cased; an error for that datagram if it differs; nothing if it names none.
    fn settle(
        &self,
        reply: &[u8],
        in_flight: &mut VecDeque<InFlight>,
        expected: &mut Vec<u8>,
        tally: &mut Tally,
    ) {
        let Some(seq) = seq_of(reply) else {
            return;
        };
        let Ok(at) = in_flight.binary_search_by_key(&seq, |sent| sent.seq) else {
            return; // late, after its wait ended, or repeated
        };
        let Some(sent) = in_flight.remove(at) else {
            return;
        };
        self.payloads.fill(seq, expected);
        expected.make_ascii_uppercase(); // what comes back
        if reply == expected.as_slice() {
            tally.verified(self.size as u64, sent.sent.elapsed());
        } else {
            tally.failed(1, &"a reply differs from the datagram upper-cased");
        }
    }
}

/// The number a datagram (or its reply: digits are not letters) starts with.
fn seq_of(datagram: &[u8]) -> Option<u64> {
    let digits = datagram.get(..SEQ_DIGITS)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datagram_is_known_by_the_number_it_starts_with() {
        let payloads = Payloads::new(32);
        let mut datagram = Vec::new();
        payloads.fill(1234, &mut datagram);
        assert_eq!(seq_of(&datagram), Some(1234));
        datagram.make_ascii_uppercase();
        assert_eq!(seq_of(&datagram), Some(1234), "and so is its reply");
        datagram[3] = b'x';
        assert_eq!(seq_of(&datagram), None);
        assert_eq!(seq_of(b"0123"), None, "too short");
    }
}
