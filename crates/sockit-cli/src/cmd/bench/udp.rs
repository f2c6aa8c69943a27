//! `sockit bench udp`: round trips to `serve --udp-echo` over `-c` sockets, `-n` in all. Each
//! datagram carries its own number; a round trip counts when the reply is the datagram with
//! its ASCII letters upper-cased. A reply that does not come within `--reply-timeout` is an
//! error; a late reply to an earlier datagram is skipped, not counted twice.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::UdpSocket;

use super::stats::{Report, Tally};
use super::{measure, Budget, Load, Payloads, WorkerEnd};
use crate::cmd::CmdError;

/// Round trips when neither `-n` nor `--duration` is given.
const DEFAULT_REQUESTS: u64 = 1000;
/// How long a reply may take, unless `--reply-timeout` says: a datagram lost is lost.
const REPLY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);
/// The largest datagram payload over IPv4.
const MAX_DATAGRAM: u64 = 65_507;

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
}

impl Worker {
    async fn run(self) -> WorkerEnd {
        let mut tally = Tally::default();
        let mut request = Vec::with_capacity(self.size);
        let mut expected = Vec::with_capacity(self.size);
        let mut reply = vec![0; self.size + 1];
        loop {
            let batch = self.budget.claim(1);
            if batch.is_empty() {
                return WorkerEnd::done(tally);
            }
            self.payloads.fill(batch.start, &mut request);
            expected.clear();
            expected.extend_from_slice(&request);
            expected.make_ascii_uppercase(); // what comes back
            let started = Instant::now();
            if let Err(err) = self.socket.send(&request).await {
                tally.failed(1, &err);
                continue;
            }
            match self.await_reply(&expected, &mut reply, started).await {
                Ok(()) => tally.verified(self.size as u64, started.elapsed()),
                Err(why) => tally.failed(1, &why),
            }
        }
    }

    /// Waits for the reply to the datagram whose reply should be `expected`, skipping late
    /// replies to earlier ones; why it failed when it is not right.
    async fn await_reply(
        &self,
        expected: &[u8],
        buf: &mut [u8],
        started: Instant,
    ) -> Result<(), String> {
        let deadline = tokio::time::Instant::from_std(started + self.timeout);
        loop {
            let len = match tokio::time::timeout_at(deadline, self.socket.recv(buf)).await {
                Ok(Ok(len)) => len,
                // E.g. refused: nothing listens there.
                Ok(Err(err)) => return Err(format!("cannot receive: {err}")),
                Err(_) => return Err("no reply within --reply-timeout".to_owned()),
            };
            let got = &buf[..len];
            if got == expected {
                return Ok(());
            }
            if is_earlier(got, expected) {
                continue;
            }
            return Err("a reply differs from the datagram upper-cased".to_owned());
        }
    }
}

/// Whether `got` is a late reply to an earlier datagram than the one `expected` answers: its
/// number (the first 20 bytes) is lower, and the rest the same.
fn is_earlier(got: &[u8], expected: &[u8]) -> bool {
    got.len() == expected.len()
        && got.len() >= 20
        && got[..20] < expected[..20]
        && got[20..] == expected[20..]
}
