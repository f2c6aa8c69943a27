//! How every client command reaches its server: `--server`, `--connect-timeout`, and TLS
//! (`--tls`, `--fingerprint`, `--ca`, the known-servers file).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sockit::client::{Endpoint, Tcp, Tls, REPLY_TIMEOUT};
use sockit::tls::{Fingerprint, KnownServers, Trust};
use sockit::Client;

use super::serve::parse_seconds;
use super::CmdError;

/// A connection to the server, plain or TLS as asked.
pub(crate) type Conn = Client<Endpoint>;

/// Where a client command connects.
#[derive(Debug, clap::Args)]
pub(crate) struct ServerArg {
    /// Server address: HOST:PORT, or HOST for port 9000, or :PORT for 127.0.0.1.
    #[arg(
        long,
        value_name = "ADDR",
        env = "SOCKIT_SERVER",
        hide_env_values = true,
        default_value = sockit::defaults::ADDR,
        value_parser = super::parse_server
    )]
    pub(crate) server: String,
}

/// How a client command connects: how long it waits, and whether and how it uses TLS.
#[derive(Debug, clap::Args)]
pub(crate) struct ConnectArgs {
    /// Seconds connecting (and the TLS handshake) may take.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_seconds)]
    pub(crate) connect_timeout: Duration,
    /// Connect with TLS. Without --fingerprint or --ca, the server is trusted on first use and
    /// its fingerprint recorded in the known-servers file ($SOCKIT_KNOWN_SERVERS, default
    /// ~/.config/sockit/known_servers).
    #[arg(long, env = "SOCKIT_TLS", hide_env_values = true,
          value_parser = clap::builder::BoolishValueParser::new())]
    tls: bool,
    /// Trust exactly the server certificate with this fingerprint, as `serve --tls` prints it
    /// (implies --tls).
    #[arg(long, value_name = "sha256:HEX")]
    fingerprint: Option<Fingerprint>,
    /// Trust a server certificate for the server's host name issued by a CA in this PEM file
    /// (implies --tls).
    #[arg(long, value_name = "FILE", conflicts_with = "fingerprint")]
    ca: Option<PathBuf>,
}

impl ConnectArgs {
    /// Whether the connection uses TLS.
    pub(crate) fn uses_tls(&self) -> bool {
        self.tls || self.fingerprint.is_some() || self.ca.is_some()
    }

    /// How to reach `server` as these options say.
    pub(crate) fn endpoint(&self, server: &str) -> Result<Endpoint, CmdError> {
        let tcp = Tcp::new(server).connect_timeout(self.connect_timeout);
        if !self.uses_tls() {
            return Ok(Endpoint::Tcp(tcp));
        }
        let trust = match (&self.fingerprint, &self.ca) {
            (Some(fingerprint), _) => Trust::Fingerprint(*fingerprint),
            (None, Some(ca)) => Trust::Ca(ca.clone()),
            (None, None) => Trust::FirstUse(KnownServers::at(known_servers_path()?)),
        };
        let tls = Tls::new(server, trust)
            .map_err(sockit::ClientError::from)?
            .connect_timeout(self.connect_timeout)
            .on_first_use(Arc::new(|server, fingerprint, file| {
                eprintln!(
                    "sockit: first TLS connection to {server}: trusting its certificate {fingerprint}, now recorded in {}",
                    sockit::client::shown_path(file)
                );
            }));
        Ok(Endpoint::Tls(tls))
    }

    /// Connects to `server`.
    pub(crate) async fn connect(&self, server: &str) -> Result<Conn, CmdError> {
        let endpoint = self.endpoint(server)?;
        Ok(Client::connect_with_reply_timeout(endpoint, REPLY_TIMEOUT).await?)
    }
}

/// `$SOCKIT_KNOWN_SERVERS`, else `known_servers` in sockit's configuration directory.
fn known_servers_path() -> Result<PathBuf, CmdError> {
    if let Some(path) = std::env::var_os("SOCKIT_KNOWN_SERVERS").filter(|path| !path.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    config_dir()
        .map(|dir| dir.join("known_servers"))
        .ok_or_else(|| "no home directory for the known-servers file: set SOCKIT_KNOWN_SERVERS, or use --fingerprint".into())
}

/// `$XDG_CONFIG_HOME/sockit`, else `~/.config/sockit`.
pub(crate) fn config_dir() -> Option<PathBuf> {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    Some(config.join("sockit"))
}
