//! `sockit keygen`: an ed25519 key pair for key login.

use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

use sockit::auth::keys::{public_key_path, Identity};

use super::remote::{default_identity_path, local_user};
use super::CmdResult;
use crate::cmd::CmdError;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Where to write the secret key (the public key goes to FILE.pub).
    /// Default: ~/.config/sockit/id_ed25519.
    #[arg(
        long,
        short = 'i',
        value_name = "FILE",
        env = "SOCKIT_IDENTITY",
        hide_env_values = true
    )]
    identity: Option<PathBuf>,
    /// Comment stored with the public key (default: user@host).
    #[arg(long, short = 'C', value_name = "TEXT")]
    comment: Option<String>,
    /// Replace an existing key pair (the old key stops working wherever it was authorised).
    #[arg(long)]
    force: bool,
}

pub(crate) fn run(args: Args) -> CmdResult {
    let path = match args.identity {
        Some(path) => path,
        None => default_identity_path()
            .ok_or("no home directory for the default key; use --identity FILE")?,
    };
    let public_path = public_key_path(&path);
    if path.exists() && !args.force {
        return Err(format!("{} exists; use --force to replace it", path.display()).into());
    }
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|err| CmdError::failed(dir.display().to_string(), err))?;
    }
    if args.force {
        for old in [&path, &public_path] {
            match std::fs::remove_file(old) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                    return Err(format!("{}: {err}", old.display()).into())
                }
                _ => {}
            }
        }
    }
    let comment = args.comment.unwrap_or_else(default_comment);
    let identity = Identity::generate()?;
    identity.save(&path, &comment)?;
    let public = identity.public_key(&comment);
    super::out::note!(
        "secret key: {} (mode 0600)\npublic key: {}",
        path.display(),
        public_path.display()
    );
    super::out::outln!("{public}")?;
    super::out::note!(
        "authorise it on the server with:\n  sockit user add-key {} '{public}' --users FILE",
        local_user().unwrap_or_else(|| "NAME".into())
    );
    Ok(())
}

fn default_comment() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|host| host.trim().to_owned())
        .unwrap_or_default();
    match (local_user(), host.is_empty()) {
        (Some(user), false) => format!("{user}@{host}"),
        (Some(user), true) => user,
        (None, _) => host,
    }
}
