//! `sockit user`: edit the users file (argon2id password hashes and authorised keys).

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};

use sockit::auth::keys::{BadKey, PublicKey};
use sockit::auth::users::{check_user_name, hash_password, Account, UsersFile};

use super::CmdResult;
use crate::cmd::CmdError;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum User {
    /// Add a user with a password (asked twice without echo, or read from standard input).
    Add(PasswordArgs),
    /// Change a user's password.
    Passwd(PasswordArgs),
    /// Remove a user and all its keys.
    Del(NameArgs),
    /// List the users, with whether each has a password and its keys' fingerprints.
    List(ListArgs),
    /// Authorise a public key (the line `sockit keygen` printed, or its .pub file) for a user;
    /// a user that does not exist yet is created without a password.
    AddKey(AddKeyArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct FileArg {
    /// The users file (created when missing).
    #[arg(
        long,
        value_name = "FILE",
        env = "SOCKIT_USERS",
        hide_env_values = true
    )]
    users: PathBuf,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ListArgs {
    /// The users file (never created by `list`: `user add` and `user add-key` make it).
    #[arg(
        long,
        value_name = "FILE",
        env = "SOCKIT_USERS",
        hide_env_values = true
    )]
    users: PathBuf,
}

#[derive(Debug, clap::Args)]
pub(crate) struct NameArgs {
    /// The user name.
    name: String,
    #[command(flatten)]
    file: FileArg,
}

#[derive(Debug, clap::Args)]
pub(crate) struct PasswordArgs {
    #[command(flatten)]
    user: NameArgs,
    /// Read the password from the first line of standard input instead of asking.
    #[arg(long)]
    password_stdin: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct AddKeyArgs {
    #[command(flatten)]
    user: NameArgs,
    /// The public key line (quoted or as separate words), or a file holding it.
    #[arg(value_name = "PUBKEY", required = true, num_args = 1..)]
    key: Vec<String>,
}

pub(crate) fn run(command: User) -> CmdResult {
    match command {
        User::Add(args) => set_password(args, true),
        User::Passwd(args) => set_password(args, false),
        User::Del(args) => delete(args),
        User::List(args) => list(&args.users),
        User::AddKey(args) => add_key(args),
    }
}

fn load(path: &Path) -> Result<UsersFile, CmdError> {
    Ok(UsersFile::load_or_empty(path)?)
}

fn set_password(args: PasswordArgs, adding: bool) -> CmdResult {
    let NameArgs { name, file } = args.user;
    check_user_name(&name)?;
    let mut users = load(&file.users)?;
    match (adding, users.users.contains_key(&name)) {
        (true, true) => {
            return Err(format!(
                "user {name} exists; change its password with `sockit user passwd {name}`"
            )
            .into())
        }
        (false, false) => return Err(format!("no user {name} in {}", file.users.display()).into()),
        _ => {}
    }
    let password = if args.password_stdin {
        password_from_stdin()?
    } else {
        password_from_prompt(&name)?
    };
    let hash = hash_password(&password)?;
    users.users.entry(name.clone()).or_default().password = Some(hash);
    users.save(&file.users)?;
    let done = if adding {
        "added"
    } else {
        "password changed for"
    };
    super::out::note!("{done} {name} in {}", file.users.display());
    Ok(())
}

fn password_from_stdin() -> Result<String, CmdError> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|err| CmdError::failed("cannot read the password", err))?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    Ok(password.strip_suffix('\r').unwrap_or(password).to_owned())
}

fn password_from_prompt(name: &str) -> Result<String, CmdError> {
    if !std::io::stdin().is_terminal() {
        return Err("no terminal to ask for the password on; use --password-stdin".into());
    }
    let ask = |prompt: &str| {
        rpassword::prompt_password(prompt)
            .map_err(|err| CmdError::failed("cannot read the password", err))
    };
    let first = ask(&format!("New password for {name}: "))?;
    let second = ask("Again: ")?;
    if first != second {
        return Err("the passwords differ; nothing changed".into());
    }
    Ok(first)
}

fn delete(args: NameArgs) -> CmdResult {
    let mut users = load(&args.file.users)?;
    if users.users.remove(&args.name).is_none() {
        return Err(format!("no user {} in {}", args.name, args.file.users.display()).into());
    }
    users.save(&args.file.users)?;
    super::out::note!("removed {}", args.name);
    Ok(())
}

fn list(path: &Path) -> CmdResult {
    if !path.exists() {
        return Err(CmdError::Usage(format!(
            "{}: no such users file (`sockit user add` creates it)",
            sockit::client::printable(&path.display().to_string())
        )));
    }
    let users = UsersFile::load(path)?;
    for (name, account) in &users.users {
        super::out::outln!("{name}\t{account}")?;
        for key in &account.keys {
            if let Ok(key) = key.parse::<PublicKey>() {
                super::out::outln!("\tkey {} {}", key.fingerprint(), key.comment())?;
            }
        }
    }
    Ok(())
}

fn add_key(args: AddKeyArgs) -> CmdResult {
    let NameArgs { name, file } = args.user;
    check_user_name(&name)?;
    // The key text is never repeated in an error: it may be a secret key given by mistake.
    let key: PublicKey = match args.key.as_slice() {
        [path] if Path::new(path).is_file() => {
            let text = std::fs::read_to_string(path)
                .map_err(|err| CmdError::failed(path.to_string(), err))?;
            let line = text.lines().next().unwrap_or_default();
            line.parse()
                .map_err(|err| CmdError::Usage(format!("{path}: {err}")))?
        }
        words => words
            .join(" ")
            .parse()
            .map_err(|err: BadKey| CmdError::Usage(err.to_string()))?,
    };
    let mut users = load(&file.users)?;
    let created = !users.users.contains_key(&name);
    let account: &mut Account = users.users.entry(name.clone()).or_default();
    let known = account
        .keys
        .iter()
        .filter_map(|line| line.parse::<PublicKey>().ok())
        .any(|existing| existing.verifying_key() == key.verifying_key());
    if known {
        return Err(format!("that key is already authorised for {name}").into());
    }
    account.keys.push(key.to_string());
    users.save(&file.users)?;
    let created = if created {
        " (new user, key login only)"
    } else {
        ""
    };
    eprintln!("key {} authorised for {name}{created}", key.fingerprint());
    Ok(())
}
