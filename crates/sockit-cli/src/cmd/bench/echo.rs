//! `sockit bench echo`: `-c` connections each send batches of `-P` echo requests, every one
//! with its own payload of `-d` bytes, then read the batch's replies in order. A reply counts
//! only when its body is exactly the payload of its own request; its latency runs from the
//! moment the request was queued.

use std::collections::VecDeque;
use std::time::Instant;

use sockit::proto::message::Request;
use sockit::ClientError;

use super::stats::{Report, Tally};
use super::{measure, Budget, Load, Payloads, WorkerEnd};
use crate::cmd::{CmdError, Conn, ConnectArgs, ServerArg};

/// Requests when neither `-n` nor `--duration` is given.
const DEFAULT_REQUESTS: u64 = 100_000;
/// Payload bytes a connection has in flight at most: more, and both ends could block writing
/// while neither reads (the sockets' buffers are of this order).
const WINDOW: usize = 256 * 1024;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(super) load: Load,
    /// Requests each connection sends before it reads their replies (fewer at a time when
    /// they would have over 256 KiB of payload in flight).
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
    let payloads = std::sync::Arc::new(Payloads::new(args.data_size as usize));
    let mut workers = Vec::with_capacity(connections as usize);
    for _ in 0..connections {
        let target = Target {
            server: args.server.server.clone(),
            endpoint: args.connect.endpoint(&args.server.server)?,
            reply_timeout: args.load.reply_timeout(),
        };
        // Every connection is made before the clock starts.
        let client =
            Conn::connect_with_reply_timeout(target.endpoint.clone(), target.reply_timeout).await?;
        let worker = Worker {
            target,
            budget: budget.clone(),
            pipeline: args.pipeline,
            size: args.data_size as usize,
            payloads: payloads.clone(),
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
    /// Shared by every connection: one template of `size` bytes.
    payloads: std::sync::Arc<Payloads>,
}

impl Worker {
    async fn run(self, mut client: Conn) -> WorkerEnd {
        let mut tally = Tally::default();
        let mut body = Vec::with_capacity(self.size);
        let mut reply_body = Vec::with_capacity(self.size);
        let mut in_flight = VecDeque::with_capacity(self.pipeline as usize);
        loop {
            let batch = self.budget.claim(self.pipeline);
            if batch.is_empty() {
                return WorkerEnd::done(tally);
            }
            let outcome = self
                .send_batch(
                    &mut client,
                    batch,
                    &mut body,
                    &mut reply_body,
                    &mut in_flight,
                    &mut tally,
                )
                .await;
            if let Err(unanswered) = outcome {
                tally.failed(unanswered.count, &unanswered.why);
                in_flight.clear();
                match self.target.connect().await {
                    Ok(fresh) => client = fresh,
                    Err(err) => return WorkerEnd::lost(tally, err),
                }
            }
        }
    }

    /// Sends the requests of `batch` and reads all their replies, counting each. Replies are
    /// read early whenever [`WINDOW`] bytes of payload are in flight, so that neither end
    /// waits on the other's writes. When the connection breaks, the requests of the batch not
    /// answered yet.
    async fn send_batch(
        &self,
        client: &mut Conn,
        batch: std::ops::Range<u64>,
        body: &mut Vec<u8>,
        reply_body: &mut Vec<u8>,
        in_flight: &mut VecDeque<(u64, Instant)>,
        tally: &mut Tally,
    ) -> Result<(), Unanswered> {
        let window = (WINDOW / self.size.max(1)).max(1);
        let end = batch.end;
        // The requests of a batch are queued together, in one go: one clock reading for all
        // of them, and another whenever replies had to be read in between.
        let mut queued = Instant::now();
        for seq in batch {
            if in_flight.len() >= window {
                self.read_reply(client, reply_body, in_flight, tally)
                    .await
                    .map_err(|why| Unanswered::new(in_flight.len() as u64 + end - seq, why))?;
                queued = Instant::now();
            }
            self.payloads.fill(seq, body);
            in_flight.push_back((seq, queued));
            if let Err(err) = client.queue(&Request::Echo, body).await {
                return Err(Unanswered::new(in_flight.len() as u64 + end - seq - 1, err));
            }
        }
        while !in_flight.is_empty() {
            self.read_reply(client, reply_body, in_flight, tally)
                .await
                .map_err(|why| Unanswered::new(in_flight.len() as u64, why))?;
        }
        Ok(())
    }

    /// Reads the reply to the oldest request in flight and counts it; the error when the
    /// connection broke (the request stays in flight, unanswered).
    async fn read_reply(
        &self,
        client: &mut Conn,
        reply_body: &mut Vec<u8>,
        in_flight: &mut VecDeque<(u64, Instant)>,
        tally: &mut Tally,
    ) -> Result<(), ClientError> {
        let reply = client.read_reply_into(reply_body).await;
        let (seq, queued) = match reply {
            // An error reply leaves the connection in step: the next reply is the next
            // request's.
            Ok(_) | Err(ClientError::Remote { .. }) => in_flight.pop_front().expect("in flight"),
            Err(err) => return Err(err),
        };
        match reply {
            Ok(_) if self.payloads.matches(seq, reply_body) => {
                tally.verified(self.size as u64, queued.elapsed());
            }
            Ok(_) => tally.failed(1, &"an echo reply differs from its request"),
            Err(err) => tally.failed(1, &err),
        }
        Ok(())
    }
}

/// Requests lost with their connection, and why.
struct Unanswered {
    count: u64,
    why: ClientError,
}

impl Unanswered {
    fn new(count: u64, why: ClientError) -> Unanswered {
        Unanswered { count, why }
    }
}
