//! Shared test helpers of the `sockit` binary's tests.

/// Says that the calling test skips, and why, where `cargo test` shows it: `SKIPPED <test>:
/// <reason>` written straight to standard error, which the test harness does not capture (the
/// test thread is named after the test). In CI (`CI` set) a skip fails the test instead: CI
/// must have everything the tests need.
pub(crate) fn skip(reason: &str) {
    use std::io::Write;
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} cannot run in CI: {reason}"
    );
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
}
