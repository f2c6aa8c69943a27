//! `sockit bench exec`: `-c` logged-in connections run a command (default `true`) `-n` times
//! in all; a run counts only when the command exits with status 0. Its output is read and
//! dropped; the server kills a command still running after `--reply-timeout`.

use std::time::Instant;

use sockit::ClientError;

use super::stats::{Report, Tally};
use super::{measure, Budget, Load, WorkerEnd};
use crate::cmd::exec::shell_words;
use crate::cmd::remote::{self, LoginArgs};
use crate::cmd::{CmdError, Conn};

/// Runs when neither `-n` nor `--duration` is given.
const DEFAULT_REQUESTS: u64 = 100;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(super) load: Load,
    #[command(flatten)]
    login: LoginArgs,
    /// The command and its arguments after `--` (default: `true`).
    #[arg(value_name = "CMD", last = true)]
    words: Vec<String>,
}

pub(crate) async fn run(args: &Args) -> Result<(Report, usize), CmdError> {
    let cmd = if args.words.is_empty() {
        "true".to_owned()
    } else {
        shell_words(&args.words)
    };
    let budget = std::sync::Arc::new(args.load.budget(DEFAULT_REQUESTS));
    let mut workers = Vec::new();
    for _ in 0..args.load.connections_or(1) {
        let client = remote::connect(&args.login).await?;
        workers.push(worker(
            client,
            cmd.clone(),
            budget.clone(),
            args.load.reply_timeout(),
        ));
    }
    measure("exec", workers).await
}

/// Runs the command on one connection while the budget lasts.
async fn worker(
    mut client: Conn,
    cmd: String,
    budget: std::sync::Arc<Budget>,
    limit: std::time::Duration,
) -> WorkerEnd {
    let mut tally = Tally::default();
    while !budget.claim(1).is_empty() {
        let started = Instant::now();
        match client.exec(&cmd, Some(limit), |_, _| Ok(())).await {
            Ok(outcome) if outcome.status() == 0 => tally.verified(0, started.elapsed()),
            Ok(outcome) => tally.failed(1, &format!("the command ended with {:?}", outcome.exit)),
            Err(err @ ClientError::Remote { .. }) => tally.failed(1, &err),
            Err(err) => {
                tally.failed(1, &err);
                if let Err(err) = client.reconnect().await {
                    return WorkerEnd::lost(tally, err);
                }
            }
        }
    }
    WorkerEnd::done(tally)
}
