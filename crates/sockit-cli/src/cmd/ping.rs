//! `sockit ping`: round-trip times over one connection, then a summary: sent, received, loss,
//! and min/avg/median/max.

use std::time::{Duration, Instant};

use super::out::{outln, statusln};
use super::{CmdResult, ConnectArgs, ServerArg, TimeoutArg};
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
    /// For scripts: only the summary, as one JSON object on standard output.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArg,
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    pub(crate) timeout: TimeoutArg,
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
    let mut client = super::connect(&args.server, &args.connect).await?;
    let report = !args.json;
    if report {
        statusln!("PING {addr}: connected in {}", millis(started.elapsed()))?;
    }

    let mut times = Vec::with_capacity(args.count as usize);
    let mut sent = 0;
    let mut failure = None;
    for seq in 1..=args.count {
        if seq > 1 {
            tokio::time::sleep(interval).await;
        }
        let start = Instant::now();
        sent += 1;
        if let Err(err) = client.ping().await {
            // The connection is gone: what was measured is still reported, then the error.
            failure = Some(err);
            break;
        }
        let rtt = start.elapsed();
        if report {
            statusln!("reply from {addr}: seq={seq} time={}", millis(rtt))?;
        }
        times.push(rtt);
    }

    let summary = Summary::new(sent, &mut times);
    if report {
        statusln!("--- {addr} ping statistics ---")?;
        statusln!("{}", summary.line())?;
    } else {
        outln!("{}", summary.json(addr))?;
    }
    match failure {
        Some(err) => Err(err.into()),
        None => Ok(()),
    }
}

/// What a run of pings measured.
#[derive(Debug, Clone, PartialEq)]
struct Summary {
    sent: u32,
    received: u32,
    /// Pings without a reply, in percent of those sent.
    loss_percent: f64,
    /// Round trips in milliseconds, when any reply came: min, avg, median, max.
    times_ms: Option<[f64; 4]>,
}

impl Summary {
    fn new(sent: u32, times: &mut [Duration]) -> Summary {
        times.sort_unstable();
        let received = times.len() as u32;
        let loss_percent = match sent {
            0 => 0.0,
            sent => f64::from(sent - received) * 100.0 / f64::from(sent),
        };
        let times_ms = (!times.is_empty()).then(|| {
            let total: Duration = times.iter().sum();
            [
                times[0],
                total / received,
                median(times),
                times[times.len() - 1],
            ]
            .map(as_millis)
        });
        Summary {
            sent,
            received,
            loss_percent,
            times_ms,
        }
    }

    /// The `--json` object: `server`, `sent`, `received`, `loss_percent`, and `min_ms`,
    /// `avg_ms`, `median_ms`, `max_ms` (null when no reply came), the times to the
    /// microsecond and the loss to a thousandth of a percent, as the text line has them.
    fn json(&self, server: &str) -> serde_json::Value {
        let [min, avg, median, max] = match self.times_ms {
            Some(times) => times.map(|ms| Some(thousandths(ms))),
            None => [None; 4],
        };
        serde_json::json!({
            "server": server,
            "sent": self.sent,
            "received": self.received,
            "loss_percent": thousandths(self.loss_percent),
            "min_ms": min,
            "avg_ms": avg,
            "median_ms": median,
            "max_ms": max,
        })
    }

    /// `3 sent, 3 received, 0% loss, min/avg/median/max = 0.047/0.055/0.048/0.069 ms`.
    fn line(&self) -> String {
        let counts = format!(
            "{} sent, {} received, {}% loss",
            self.sent,
            self.received,
            percent(self.loss_percent)
        );
        match self.times_ms {
            Some([min, avg, median, max]) => {
                format!("{counts}, min/avg/median/max = {min:.3}/{avg:.3}/{median:.3}/{max:.3} ms")
            }
            None => counts,
        }
    }
}

/// A percentage as a whole number when it is one, else with one decimal (`33.3`).
fn percent(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

/// `value` rounded to three decimals, so that JSON shows `1.874`, not `1.8739810000000001`.
fn thousandths(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

/// The median of sorted durations.
fn median(sorted: &[Duration]) -> Duration {
    let mid = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Summary;

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|&v| Duration::from_millis(v)).collect()
    }

    #[test]
    fn json_times_are_rounded_to_the_microsecond() {
        let mut times = vec![
            Duration::from_nanos(1_873_981),
            Duration::from_nanos(1_000_400),
            Duration::from_nanos(2_000_600),
        ];
        let json = Summary::new(3, &mut times).json("s").to_string();
        assert!(
            json.contains(r#""avg_ms":1.625,"loss_percent":0.0,"max_ms":2.001,"median_ms":1.874,"min_ms":1.0,"#),
            "{json}"
        );
        let json = Summary::new(3, &mut ms(&[1])).json("s").to_string();
        assert!(json.contains(r#""loss_percent":66.667,"#), "{json}");
    }

    #[test]
    fn summary_line_has_loss_and_average() {
        let summary = Summary::new(3, &mut ms(&[3, 1, 8]));
        assert_eq!(
            summary.line(),
            "3 sent, 3 received, 0% loss, min/avg/median/max = 1.000/4.000/3.000/8.000 ms"
        );
        let summary = Summary::new(4, &mut ms(&[2, 4]));
        assert_eq!(
            summary.line(),
            "4 sent, 2 received, 50% loss, min/avg/median/max = 2.000/3.000/3.000/4.000 ms"
        );
        assert_eq!(
            Summary::new(3, &mut ms(&[1, 1])).line(),
            "3 sent, 2 received, 33.3% loss, min/avg/median/max = 1.000/1.000/1.000/1.000 ms"
        );
        assert_eq!(
            Summary::new(1, &mut []).line(),
            "1 sent, 0 received, 100% loss"
        );
    }
}
