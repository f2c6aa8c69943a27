//! `sockit echo`: send text, print what comes back.

use std::io::{Read, Write};

use super::{CmdResult, ConnectArgs, ServerArg, TimeoutArg};
use crate::cmd::CmdError;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Words to send, joined by spaces; with none, standard input is sent as it is.
    text: Vec<String>,
    #[command(flatten)]
    server: ServerArg,
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    pub(crate) timeout: TimeoutArg,
}

pub(crate) async fn run(args: Args) -> CmdResult {
    let from_stdin = args.text.is_empty();
    let body = if from_stdin {
        let limit = sockit_proto::DEFAULT_MAX_BUFFERED_BODY;
        let mut body = Vec::new();
        std::io::stdin()
            .lock()
            .take(limit + 1)
            .read_to_end(&mut body)
            .map_err(|err| CmdError::failed("cannot read standard input", err))?;
        if body.len() as u64 > limit {
            return Err(format!("standard input is over the echo limit of {limit} bytes").into());
        }
        body
    } else {
        args.text.join(" ").into_bytes()
    };
    let mut client = super::connect(&args.server, &args.connect).await?;
    let echoed = client.echo(&body).await?;
    let mut stdout = std::io::stdout().lock();
    let written = stdout
        .write_all(&echoed)
        .and_then(|()| {
            if from_stdin {
                Ok(())
            } else {
                stdout.write_all(b"\n")
            }
        })
        .and_then(|()| stdout.flush());
    written.map_err(super::out::failed)
}
