//! `sockit ls`: the stored files with their sizes and modification times.

use sockit::Client;

use super::{CmdResult, ServerArg};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Print the listing as JSON, for scripts.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArg,
}

pub(crate) async fn run(args: Args) -> CmdResult {
    let mut client = Client::connect(&args.server.server)
        .await
        .map_err(|err| err.to_string())?;
    let files = client.list().await.map_err(|err| err.to_string())?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&files).expect("entries serialise")
        );
        return Ok(());
    }
    let width = files
        .iter()
        .map(|f| f.length.to_string().len())
        .max()
        .unwrap_or(0);
    for file in &files {
        println!(
            "{:>width$}  {}  {}",
            file.length,
            utc_time(file.modified),
            sockit::client::printable(&file.name)
        );
    }
    Ok(())
}

/// Seconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS` UTC.
fn utc_time(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days to civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_time_matches_known_dates() {
        assert_eq!(super::utc_time(0), "1970-01-01 00:00:00");
        assert_eq!(super::utc_time(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(super::utc_time(1_795_320_267), "2026-11-22 04:04:27");
    }
}
