//! `sockit bench echo`: `-c` connections each send batches of `-P` echo requests, every one
//! with its own payload of `-d` bytes, then read the batch's replies in order. A reply counts
//! only when its body is exactly the payload of its own request; its latency runs from the
//! moment the request was queued.

use std::time::Instant;

use sockit::proto::message::Request;
use sockit::ClientError;

use super::stats::{Report, Tally};
use super::{measure, Budget, Load, Payloads, WorkerEnd};
use crate::cmd::{CmdError, Conn, ConnectArgs, ServerArg};

/// Requests when neither `-n` nor `--duration` is given.
const DEFAULT_REQUESTS: u64 = 100_000;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(super) load: Load,
    /// Requests each connection sends before it reads their replies.
    #[arg(short = 'P', long, value_name = "PIPELINE", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=65536))]
    pipeline: u64,
    /// Payload bytes of each request.
    #[arg(short = 'd', long = "data-size", value_name = "BYTES", default_value_t = 32,
          value_parser = clap::value_parser!(u64).range(0..=sockit_proto::DEFAULT_MAX_BUFFERED_BODY))]
    data_size: u64,
    #[command(flatten)]
    server: ServerArg,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// How one worker reaches the server, again after a connection breaks.
struct Target {
    server: String,
    endpoint: sockit::client::Endpoint,
    reply_timeout: std::time::Duration,
}

impl Target {
    /// Makes the connection again, after it broke.
    async fn connect(&self) -> Result<Conn, CmdError> {
        Conn::connect_with_reply_timeout(self.endpoint.clone(), self.reply_timeout)
            .await
            .map_err(|err| CmdError::failed(format!("lost the connection to {}", self.server), err))
    }
}

pub(crate) async fn run(args: &Args) -> Result<(Report, usize), CmdError> {
    let budget = std::sync::Arc::new(args.load.budget(DEFAULT_REQUESTS));
    let connections = args.load.connections_or(1);
    let mut workers = Vec::with_capacity(connections as usize);
    for _ in 0..connections {
        let target = Target {
            server: args.server.server.clone(),
            endpoint: args.connect.endpoint(&args.server.server)?,
            reply_timeout: args.load.reply_timeout,
        };
        // Every connection is made before the clock starts.
        let client =
            Conn::connect_with_reply_timeout(target.endpoint.clone(), target.reply_timeout).await?;
        let worker = Worker {
            target,
            budget: budget.clone(),
            pipeline: args.pipeline,
            size: args.data_size as usize,
            payloads: Payloads::new(args.data_size as usize),
        };
        workers.push(worker.run(client));
    }
    measure("echo", workers).await
}

/// One connection's share of the run.
struct Worker {
    target: Target,
    budget: std::sync::Arc<Budget>,
    pipeline: u64,
    size: usize,
    payloads: Payloads,
}

impl Worker {
    async fn run(self, mut client: Conn) -> WorkerEnd {
        let mut tally = Tally::default();
        let mut body = Vec::with_capacity(self.size);
        let mut sent: Vec<(u64, Instant)> = Vec::with_capacity(self.pipeline as usize);
        loop {
            let batch = self.budget.claim(self.pipeline);
            if batch.is_empty() {
                return WorkerEnd::done(tally);
            }
            let count = batch.end - batch.start;
            sent.clear();
            let mut broken = false;
            for seq in batch {
                self.payloads.fill(seq, &mut body);
                sent.push((seq, Instant::now()));
                if let Err(err) = client.queue(&Request::Echo, &body).await {
                    tally.failed(count, &err);
                    broken = true;
                    break;
                }
            }
            if !broken {
                broken = self.read_replies(&mut client, &sent, &mut tally).await;
            }
            if broken {
                match self.target.connect().await {
                    Ok(fresh) => client = fresh,
                    Err(err) => return WorkerEnd::lost(tally, err),
                }
            }
        }
    }

    /// Reads one reply per request of `sent`, in order, and counts each. Whether the
    /// connection broke; every request still unanswered then is one error.
    async fn read_replies(
        &self,
        client: &mut Conn,
        sent: &[(u64, Instant)],
        tally: &mut Tally,
    ) -> bool {
        for (answered, &(seq, queued)) in sent.iter().enumerate() {
            match client.read_reply().await {
                Ok(reply) => {
                    if self.payloads.matches(seq, &reply.body) {
                        tally.verified(self.size as u64, queued.elapsed());
                    } else {
                        tally.failed(1, &"an echo reply differs from its request");
                    }
                }
                // An error reply leaves the connection in step: the next reply is the next
                // request's.
                Err(err @ ClientError::Remote { .. }) => tally.failed(1, &err),
                Err(err) => {
                    tally.failed((sent.len() - answered) as u64, &err);
                    return true;
                }
            }
        }
        false
    }
}
