//! `sockit chat`: join the UDP chat room; standard input lines go out, room lines come in.
//!
//! It first proves to the room that its address receives (`/confirm TOKEN`, the room's
//! reflection rule), so that what it is sent is not capped; that exchange is not shown.
//!
//! On a terminal, lines are typed in a line editor and room lines are printed above it, so
//! what is being typed is never garbled. In a pipe, every input line is sent and every room line
//! is printed as it arrives; after the input ends, lines still arriving for `--wait` seconds
//! are printed before leaving.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::time::Duration;

use rustyline::{DefaultEditor, ExternalPrinter};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use sockit::chat::confirm::{asked_token, CONFIRMED};

use super::{CmdResult, ServerArg};
use crate::cmd::CmdError;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Your name in the room (default: your address).
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// The room to join (default: lobby).
    #[arg(long, value_name = "ROOM")]
    room: Option<String>,
    /// Seconds to keep printing room lines after standard input ends.
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    wait: f64,
    #[command(flatten)]
    server: ServerArg,
}

pub(crate) async fn run(args: Args) -> CmdResult {
    let wait = Duration::try_from_secs_f64(args.wait)
        .map_err(|_| CmdError::Usage(format!("--wait {} is not a number of seconds", args.wait)))?;
    let server = resolve(&args.server.server).await?;
    let local: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().expect("valid")
    } else {
        "[::]:0".parse().expect("valid")
    };
    let socket = UdpSocket::bind(local)
        .await
        .map_err(|err| CmdError::failed("cannot open a UDP socket", err))?;
    socket
        .connect(server)
        .await
        .map_err(|err| CmdError::failed(format!("cannot reach {server}"), err))?;

    // The first datagram joins the room and proves that this address receives (`/confirm`).
    // The name and the room are asked for one at a time, and each answer awaited: a name or
    // room refused ends the chat before anything is said.
    let mut opening = Vec::new();
    let answered = async {
        confirm(&socket, &mut opening).await?;
        if let Some(name) = &args.name {
            let asked = format!("/nick {name}");
            ask(&socket, &asked, &mut opening, |line| {
                nick_answer(line, name).map(|refusal| {
                    refusal.map_err(|why| format!("the room refused --name {name}: {why}"))
                })
            })
            .await?;
        }
        if let Some(room) = &args.room {
            let asked = format!("/join {room}");
            ask(&socket, &asked, &mut opening, |line| {
                join_answer(line, room).map(|refusal| {
                    refusal.map_err(|why| format!("the room refused --room {room}: {why}"))
                })
            })
            .await?;
        }
        if args.name.is_none() && args.room.is_none() {
            ask(&socket, "/who", &mut opening, who_answer).await?;
        }
        Ok::<(), CmdError>(())
    }
    .await;
    // What the room said so far, the first line included, before any editor starts.
    {
        let mut stdout = std::io::stdout().lock();
        for line in opening.iter().filter(|line| !is_bookkeeping(line)) {
            let _ = writeln!(stdout, "{line}");
        }
        let _ = stdout.flush();
    }
    if let Err(err) = answered {
        let _ = send(&socket, "/leave").await;
        return Err(err);
    }

    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let (lines, mut typed) = mpsc::channel::<String>(64);
    let mut show: Box<Show> = if interactive {
        let mut editor = DefaultEditor::new()
            .map_err(|err| CmdError::failed("cannot start the line editor", err))?;
        let mut printer = editor
            .create_external_printer()
            .map_err(|err| CmdError::failed("cannot start the line editor", err))?;
        std::thread::spawn(move || read_edited(editor, lines));
        Box::new(move |line| {
            let _ = printer.print(line.to_owned());
            Ok(())
        })
    } else {
        std::thread::spawn(move || read_piped(lines));
        Box::new(|line| {
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "{line}").and_then(|()| stdout.flush())
        })
    };

    let mut buf = vec![0u8; 65_536];
    let mut input_open = true;
    // Why standard output failed (its reader went away), which ends the chat.
    let mut closed = None;
    // Whether a `/confirm` this command sent by itself awaits its answer, not to be shown.
    let mut confirming = false;
    while closed.is_none() {
        tokio::select! {
            line = typed.recv(), if input_open => match line {
                Some(line) => send(&socket, &line).await?,
                None => input_open = false,
            },
            received = socket.recv(&mut buf) => match received {
                Ok(len) => {
                    let line = printable_line(&buf[..len]);
                    // Asked again (the room forgot this address, and it joined anew): answer.
                    if let Some(token) = asked_token(&line) {
                        send(&socket, &format!("/confirm {token}")).await?;
                        confirming = true;
                    } else if confirming && line == CONFIRMED {
                        confirming = false;
                    } else {
                        closed = show(&line).err();
                    }
                }
                // An ICMP "port unreachable" for something we sent: nobody listens there.
                Err(err) if err.kind() == std::io::ErrorKind::ConnectionRefused => {
                    return Err(format!("no chat room at {server}: connection refused").into());
                }
                Err(err) => closed = show(&format!("! {err}")).err(),
            },
            () = tokio::time::sleep(wait), if !input_open => break,
        }
    }
    send(&socket, "/leave").await?;
    closed.map_or(Ok(()), |err| Err(super::out::failed(err)))
}

/// The length the first datagram is padded to (with spaces, which the room ignores): the room
/// answers an address it never heard from with no more bytes than it sent, and the answer to
/// `/confirm` is the line with the token.
const CONFIRM_PADDING: usize = 128;

/// Proves to the room that this address receives what it is sent: asks for the token and sends
/// it back, so that the room's budget for unproven addresses does not apply (see `/confirm` in
/// docs/PROTOCOL.md). The room's lines meanwhile go into `received`, these two included.
async fn confirm(socket: &UdpSocket, received: &mut Vec<String>) -> CmdResult {
    let asking = format!("{:<CONFIRM_PADDING$}", "/confirm");
    ask(socket, &asking, received, |line| {
        if asked_token(line).is_some() || line == CONFIRMED {
            Some(Ok(()))
        } else {
            refusal(line, &["! room full"])
        }
    })
    .await?;
    let answer = received.last().map(String::as_str).unwrap_or_default();
    let Some(token) = asked_token(answer).map(str::to_owned) else {
        return Ok(()); // confirmed already
    };
    ask(socket, &format!("/confirm {token}"), received, |line| {
        (line == CONFIRMED).then_some(Ok(()))
    })
    .await
}

/// Whether `line` is the room's part of `/confirm`, which the command answers by itself.
fn is_bookkeeping(line: &str) -> bool {
    asked_token(line).is_some() || line == CONFIRMED
}

/// How many times an opening line is sent, and how long each waits for its answer.
const ASK_TRIES: u32 = 3;
const ASK_WAIT: Duration = Duration::from_secs(1);

/// The answer to an opening line: `Ok` if the room did it, `Err` with the room's reason if it
/// refused, `None` for a line that is no answer to it.
type Answer = Option<Result<(), String>>;

/// Sends `line` and waits for its answer (as `answer` reads lines), sending it again when none
/// comes (UDP may lose either). Every line received meanwhile goes into `received`.
async fn ask(
    socket: &UdpSocket,
    line: &str,
    received: &mut Vec<String>,
    answer: impl Fn(&str) -> Answer,
) -> CmdResult {
    let mut buf = vec![0u8; 65_536];
    for _ in 0..ASK_TRIES {
        send(socket, line).await?;
        let deadline = tokio::time::Instant::now() + ASK_WAIT;
        loop {
            let len = match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
                Err(_) => break,
                Ok(Ok(len)) => len,
                Ok(Err(err)) => return Err(unreachable_room(socket, err)),
            };
            let text = printable_line(&buf[..len]);
            match answer(&text) {
                // The refusal is said once, in the error that ends the chat.
                Some(Err(why)) => return Err(CmdError::Usage(why)),
                Some(Ok(())) => {
                    received.push(text);
                    return Ok(());
                }
                None => received.push(text),
            }
        }
    }
    let at = socket
        .peer_addr()
        .map_or_else(|_| "the server".to_owned(), |addr| addr.to_string());
    Err(format!("no answer from a chat room at {at}").into())
}

/// Why receiving failed, in words.
fn unreachable_room(socket: &UdpSocket, err: std::io::Error) -> CmdError {
    let at = socket
        .peer_addr()
        .map_or_else(|_| "the server".to_owned(), |addr| addr.to_string());
    if err.kind() == std::io::ErrorKind::ConnectionRefused {
        // An ICMP "port unreachable" for something we sent: nobody listens there.
        format!("no chat room at {at}: connection refused").into()
    } else {
        CmdError::failed(format!("cannot reach {at}"), err)
    }
}

/// The room's answer to `/nick NAME`.
fn nick_answer(line: &str, name: &str) -> Answer {
    if let Some(now) = line.strip_prefix("* you are now ") {
        return Some(if now.eq_ignore_ascii_case(name) {
            Ok(())
        } else {
            Err(format!("it named you {now}"))
        });
    }
    refusal(
        line,
        &["! the name ", "! cannot use that name", "! room full"],
    )
}

/// The room's answer to `/join ROOM`.
fn join_answer(line: &str, room: &str) -> Answer {
    let joined = line
        .strip_prefix("* you are in ")
        .and_then(|rest| rest.split(' ').next())
        .or_else(|| line.strip_prefix("* you are already in "));
    if joined == Some(room) {
        return Some(Ok(()));
    }
    refusal(line, &["! cannot join that room", "! room full"])
}

/// The room's answer to `/who`.
fn who_answer(line: &str) -> Answer {
    if line.starts_with("* ") && line.contains(": ") && !line.starts_with("* commands") {
        return Some(Ok(()));
    }
    refusal(line, &["! room full"])
}

/// `line` as a refusal, when it starts with one of `refusals`: the room's words after `! `.
fn refusal(line: &str, refusals: &[&str]) -> Answer {
    refusals
        .iter()
        .any(|start| line.starts_with(start))
        .then(|| Err(line.trim_start_matches("! ").to_owned()))
}

/// Prints one room line; an error is our standard output failing.
type Show = dyn FnMut(&str) -> std::io::Result<()> + Send;

async fn resolve(addr: &str) -> Result<SocketAddr, CmdError> {
    tokio::net::lookup_host(addr)
        .await
        .map_err(|err| CmdError::failed(format!("cannot resolve {addr}"), err))?
        .next()
        .ok_or_else(|| CmdError::Usage(format!("cannot resolve {addr}")))
}

async fn send(socket: &UdpSocket, line: &str) -> CmdResult {
    socket
        .send(line.as_bytes())
        .await
        .map(drop)
        .map_err(|err| CmdError::failed("cannot send", err))
}

/// A received line, without its newline, safe to print on a terminal.
fn printable_line(data: &[u8]) -> String {
    let text = String::from_utf8_lossy(data);
    sockit::client::printable(text.trim_end_matches(['\n', '\r']))
}

/// Reads lines from a terminal through the line editor, until Ctrl-D, Ctrl-C or `/quit`.
fn read_edited(mut editor: DefaultEditor, lines: mpsc::Sender<String>) {
    loop {
        match editor.readline("> ") {
            Ok(line) if line.trim() == "/quit" => return,
            Ok(line) if line.is_empty() => {}
            Ok(line) => {
                let _ = editor.add_history_entry(line.as_str());
                if lines.blocking_send(line).is_err() {
                    return;
                }
            }
            // Ctrl-D, Ctrl-C, or the terminal went away.
            Err(_) => return,
        }
    }
}

/// Reads lines from a pipe until it ends.
fn read_piped(lines: mpsc::Sender<String>) {
    for line in std::io::stdin().lines() {
        let Ok(line) = line else { return };
        if !line.is_empty() && lines.blocking_send(line).is_err() {
            return;
        }
    }
}
