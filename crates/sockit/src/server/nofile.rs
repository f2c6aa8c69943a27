//! The open-files limit: a server of thousands of connections needs thousands of descriptors,
//! and many systems start processes with a soft limit of 1,024 under a far higher hard limit.
//! [`Server::bind`](super::Server::bind) raises the soft limit towards what `--max-conns`
//! needs, never past the hard limit, and warns when that is still short.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Descriptors kept for what is not a connection: listeners, files being stored or served,
/// command pipes (three per running command), the users file.
pub(crate) const RESERVED: u64 = 512;

/// Raises the soft limit of open files so that `max_conns` connections and [`RESERVED`] fit,
/// up to the hard limit. Returns the soft limit in force afterwards, when it can be read.
pub(crate) fn raise_for(max_conns: usize) -> Option<u64> {
    let needed = u64::try_from(max_conns)
        .unwrap_or(u64::MAX)
        .saturating_add(RESERVED);
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    let Some(raised) = raised_soft_limit(soft, hard, needed) else {
        return Some(soft);
    };
    match setrlimit(Resource::RLIMIT_NOFILE, raised, hard) {
        Ok(()) => {
            tracing::debug!(from = soft, to = raised, "open-files limit raised");
            Some(raised)
        }
        Err(err) => {
            tracing::warn!(%err, soft, "open-files limit could not be raised");
            Some(soft)
        }
    }
}

/// The soft limit to set, if it should change: enough for `needed`, never past `hard`, never
/// lower than now.
fn raised_soft_limit(soft: u64, hard: u64, needed: u64) -> Option<u64> {
    let wanted = needed.min(hard);
    (wanted > soft).then_some(wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_rises_to_what_is_needed_within_the_hard_limit() {
        assert_eq!(raised_soft_limit(1024, 524_288, 8704), Some(8704));
        assert_eq!(raised_soft_limit(1024, 4096, 8704), Some(4096));
        assert_eq!(
            raised_soft_limit(20_000, 524_288, 8704),
            None,
            "never lowered"
        );
        assert_eq!(raised_soft_limit(4096, 4096, 8704), None);
    }
}
