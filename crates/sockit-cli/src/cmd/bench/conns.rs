//! `sockit bench conns`: opens `-c` connections and proves each accepted with one ping, holds
//! them idle, and meanwhile measures ping latency on one more connection (`-n` pings or
//! `--duration`). It reports how many of the idle connections the server accepted (`held`)
//! and how many still answered a ping after the measurement (`held_after`).

use std::time::Instant;

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use tokio::task::JoinSet;

use super::stats::{Report, Tally};
use super::{measure, Load, WorkerEnd};
use crate::cmd::{CmdError, Conn, ConnectArgs, ServerArg};

/// Pings when neither `-n` nor `--duration` is given.
const DEFAULT_REQUESTS: u64 = 1000;
/// Idle connections when `-c` is not given.
const DEFAULT_IDLE: u32 = 100;
/// Idle connections opened (or checked) at once.
const OPENING_AT_ONCE: usize = 64;
/// Descriptors kept for what is not an idle connection.
const SPARE_FILES: u64 = 64;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(super) load: Load,
    #[command(flatten)]
    server: ServerArg,
    #[command(flatten)]
    connect: ConnectArgs,
}

pub(crate) async fn run(args: &Args) -> Result<(Report, usize), CmdError> {
    let idle = args.load.connections_or(DEFAULT_IDLE);
    raise_open_files(u64::from(idle) + SPARE_FILES);
    let endpoint = args.connect.endpoint(&args.server.server)?;
    let reply_timeout = args.load.reply_timeout();
    let connect = move || {
        let endpoint = endpoint.clone();
        async move { Conn::connect_with_reply_timeout(endpoint, reply_timeout).await }
    };
    // The measuring connection first, so that a server at its limit still lets it in.
    let mut probe = connect().await?;
    let held = open_idle(idle as usize, &connect).await;
    let accepted = held.len() as u64;

    let budget = args.load.budget(DEFAULT_REQUESTS);
    let worker = async move {
        let mut tally = Tally::default();
        while !budget.claim(1).is_empty() {
            let started = Instant::now();
            match probe.ping().await {
                Ok(()) => tally.verified(0, started.elapsed()),
                Err(err @ sockit::ClientError::Remote { .. }) => tally.failed(1, &err),
                Err(err) => {
                    tally.failed(1, &err);
                    if let Err(err) = probe.reconnect().await {
                        return WorkerEnd::lost(tally, err);
                    }
                }
            }
        }
        WorkerEnd::done(tally)
    };
    let (mut report, lost) = measure("conns", vec![worker]).await?;
    let still = ping_all(held).await;
    report.extra = vec![
        ("asked", u64::from(idle)),
        ("held", accepted),
        ("held_after", still),
    ];
    Ok((report, lost))
}

/// Opens `count` connections, [`OPENING_AT_ONCE`] at a time, keeping those that answer a ping.
async fn open_idle<F, Fut>(count: usize, connect: &F) -> Vec<Conn>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Conn, sockit::ClientError>> + Send + 'static,
{
    let mut held = Vec::with_capacity(count);
    let mut opening = JoinSet::new();
    let mut started = 0;
    while started < count || !opening.is_empty() {
        while started < count && opening.len() < OPENING_AT_ONCE {
            let conn = connect();
            opening.spawn(async move {
                let mut conn = conn.await.ok()?;
                conn.ping().await.ok()?;
                Some(conn)
            });
            started += 1;
        }
        if let Some(Ok(Some(conn))) = opening.join_next().await {
            held.push(conn);
        }
    }
    held
}

/// Pings every held connection, [`OPENING_AT_ONCE`] at a time: how many answered.
async fn ping_all(held: Vec<Conn>) -> u64 {
    let mut answered = 0;
    let mut pinging = JoinSet::new();
    let mut held = held.into_iter();
    loop {
        while pinging.len() < OPENING_AT_ONCE {
            let Some(mut conn) = held.next() else { break };
            pinging.spawn(async move { conn.ping().await.is_ok() });
        }
        match pinging.join_next().await {
            Some(Ok(true)) => answered += 1,
            Some(_) => {}
            None => return answered,
        }
    }
}

/// Raises the soft limit of open files towards `needed`, never past the hard limit.
fn raise_open_files(needed: u64) {
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let wanted = needed.min(hard);
        if wanted > soft && setrlimit(Resource::RLIMIT_NOFILE, wanted, hard).is_err() {
            tracing::warn!(soft, wanted, "the open-files limit could not be raised");
        }
    }
}
