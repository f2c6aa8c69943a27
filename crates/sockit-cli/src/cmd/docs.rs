//! `sockit completions SHELL` and `sockit manpage`: generated from the command line's own
//! definition, so they never fall behind it.

use std::io::Write;

use clap_complete::Shell;

use super::{out, CmdResult};

#[derive(Debug, clap::Args)]
pub(crate) struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: Shell,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ManpageArgs {
    /// A subcommand's page (`sockit-put`), instead of the page of sockit.
    #[arg(value_name = "SUBCOMMAND")]
    subcommand: Option<String>,
}

/// Prints the completion script for `args.shell`, for the command line `command`.
pub(crate) fn completions(args: CompletionsArgs, mut command: clap::Command) -> CmdResult {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "sockit", &mut script);
    write(&script)
}

/// Prints the man page (roff) of `command`, or of one of its subcommands.
pub(crate) fn manpage(args: ManpageArgs, mut command: clap::Command) -> CmdResult {
    command.build(); // gives every subcommand the global options
    let page = match &args.subcommand {
        None => command,
        Some(name) => {
            let sub = command
                .find_subcommand(name)
                .ok_or_else(|| format!("no subcommand {name:?}; see sockit --help"))?;
            sub.clone()
                .name(format!("sockit-{}", sub.get_name()))
                .version(env!("CARGO_PKG_VERSION"))
        }
    };
    let mut roff = Vec::new();
    clap_mangen::Man::new(page).render(&mut roff)?;
    write(&roff)
}

fn write(bytes: &[u8]) -> CmdResult {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(out::failed)
}
