//! Shared test helpers of the `sockit` binary's tests: a `sockit serve` on loopback, and
//! skipping a test where it can be seen.
#![allow(dead_code)] // each test file uses its own share of the helpers

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The binary under test.
pub(crate) const SOCKIT: &str = env!("CARGO_BIN_EXE_sockit");

/// A `sockit serve` process on loopback with its store in a temp dir, killed when dropped.
pub(crate) struct Serve {
    child: Child,
    addrs: Vec<(String, SocketAddr)>,
    /// The `fingerprint` line's `sha256:HEX`, under `--tls`.
    fingerprint: Option<String>,
    root: tempfile::TempDir,
}

impl Serve {
    /// Starts `sockit serve --listen 127.0.0.1:0` with `extra` flags (the UDP room off unless
    /// `extra` says `--udp`), no users file from the environment, and reads the listening
    /// lines of every listener it was given.
    pub(crate) fn start(extra: &[&str]) -> Serve {
        Serve::start_with_env(extra, &[])
    }

    /// As [`Serve::start`], with `env` set for the server.
    pub(crate) fn start_with_env(extra: &[&str], env: &[(&str, &Path)]) -> Serve {
        let root = tempfile::tempdir().unwrap();
        let mut command = Command::new(SOCKIT);
        command.args(["serve", "--listen", "127.0.0.1:0"]);
        if !extra.contains(&"--udp") {
            command.args(["--udp", "off"]);
        }
        let mut child = command
            .args(extra)
            .arg("--root")
            .arg(root.path())
            .env_remove("SOCKIT_USERS")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let listeners = ["--udp", "--legacy-echo", "--legacy-exec", "--udp-echo"];
        let expected = 1 + extra
            .windows(2)
            .filter(|pair| listeners.contains(&pair[0]) && pair[1] != "off")
            .count();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut addrs = Vec::new();
        while addrs.len() < expected {
            let line = lines.next().expect("a listening line").unwrap();
            let mut words = line.split(' ');
            assert_eq!(words.next(), Some("listening"), "{line}");
            let service = words.next().unwrap().to_owned();
            let addr: SocketAddr = words.next().unwrap().parse().unwrap();
            addrs.push((service, addr));
        }
        let fingerprint = extra.contains(&"--tls").then(|| {
            let line = lines.next().expect("a fingerprint line").unwrap();
            let fingerprint = line
                .strip_prefix("fingerprint ")
                .expect("a fingerprint line");
            fingerprint.to_owned()
        });
        Serve {
            child,
            addrs,
            fingerprint,
            root,
        }
    }

    /// The framed TCP listener's address, `host:port`.
    pub(crate) fn tcp(&self) -> String {
        self.addr("tcp").to_string()
    }

    /// The TLS certificate's fingerprint, `sha256:HEX`, as the server printed it.
    pub(crate) fn fingerprint(&self) -> &str {
        self.fingerprint.as_deref().expect("a TLS server")
    }

    /// The address of the listener of `service` (`tcp`, `udp`, …).
    pub(crate) fn addr(&self, service: &str) -> SocketAddr {
        self.addrs
            .iter()
            .find(|(name, _)| name == service)
            .unwrap_or_else(|| panic!("no {service} listener"))
            .1
    }

    /// The store's directory.
    pub(crate) fn root(&self) -> &Path {
        self.root.path()
    }

    /// Every listener it announced, by service.
    pub(crate) fn services(&self) -> Vec<&str> {
        self.addrs.iter().map(|(name, _)| name.as_str()).collect()
    }

    /// Sends SIGTERM and returns the exit status code once it has exited (within 15 s).
    pub(crate) fn terminate(mut self) -> Option<i32> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(15),
                "serve did not exit"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Kills the server now.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `program` when it is installed (it answers `--version`); else `None`, and the calling test
/// skips, saying `reason`.
pub(crate) fn tool(program: &'static str, reason: &str) -> Option<&'static str> {
    let found = Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if !found {
        skip(reason);
    }
    found.then_some(program)
}

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
