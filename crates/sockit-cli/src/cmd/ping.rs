//! `sockit ping`: round-trip times over one connection, then min/median/max.

use std::time::{Duration, Instant};

use sockit::Client;

use super::out::outln;
use super::{CmdResult, ServerArg};
use crate::cmd::CmdError;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Number of pings.
    #[arg(short = 'n', long = "count", value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..))]
    count: u32,
    /// Seconds between pings.
    #[arg(long, value_name = "SECS", default_value_t = 0.2)]
    interval: f64,
    #[command(flatten)]
    server: ServerArg,
}

pub(crate) async fn run(args: Args) -> CmdResult {
    let addr = &args.server.server;
    let interval = Duration::try_from_secs_f64(args.interval).map_err(|_| {
        CmdError::Usage(format!(
            "--interval {} is not a number of seconds",
            args.interval
        ))
    })?;
    let started = Instant::now();
    let mut client = Client::connect(addr).await?;
    outln!("PING {addr}: connected in {}", millis(started.elapsed()))?;

    let mut times = Vec::with_capacity(args.count as usize);
    for seq in 1..=args.count {
        if seq > 1 {
            tokio::time::sleep(interval).await;
        }
        let sent = Instant::now();
        client.ping().await?;
        let rtt = sent.elapsed();
        outln!("reply from {addr}: seq={seq} time={}", millis(rtt))?;
        times.push(rtt);
    }

    times.sort_unstable();
    outln!("--- {addr} ping statistics ---")?;
    outln!(
        "{count} sent, {count} received, min/median/max = {:.3}/{:.3}/{:.3} ms",
        as_millis(times[0]),
        as_millis(median(&times)),
        as_millis(times[times.len() - 1]),
        count = times.len(),
    )
}

/// The median of sorted durations.
fn median(sorted: &[Duration]) -> Duration {
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 0 {
        (sorted[mid - 1] + sorted[mid]) / 2
    } else {
        sorted[mid]
    }
}

fn as_millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn millis(duration: Duration) -> String {
    format!("{:.3} ms", as_millis(duration))
}
