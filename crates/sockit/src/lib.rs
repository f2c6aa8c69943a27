//! sockit: the framed socket protocol of the Python tutorials, served properly on tokio.
//!
//! The wire format lives in [`sockit_proto`]; this crate adds the I/O:
//!
//! - [`connection`]: a socket with its read and write buffers, deadlines and graceful close;
//!   reads headers and (streamed or whole) bodies, writes replies in batches.
//! - [`server`]: binds the listeners of `sockit serve`, runs the accept loops with connection
//!   limits, and shuts down gracefully.
//! - `core`: what each operation means (files, login, exec, the access check), with no
//!   frames, sockets or HTTP; `front/framed` runs it over the framed protocol.
//! - [`auth`]: the users file, keys, and the server's login checks.
//! - [`command`]: remote commands in their own process group, with caps and deadlines.
//! - [`chat`]: the chat room with no sockets: its rules, members known by id, the operator's
//!   console and the link to other servers.
//! - [`bus`]: several servers as one through Redis (`--bus`): shared chat rooms and login
//!   lockouts.
//! - `front`: the front ends that only translate between a socket and the rules: the framed
//!   protocol, the chat room over UDP, and the tutorials' raw services (upper-case echo over
//!   TCP and UDP, raw remote commands).
//! - [`config`] and [`defaults`]: what `sockit serve` can be told, and its defaults, each
//!   written once.
//! - [`client`]: the client side used by the `sockit` commands.
//! - [`source`]: who the per-address limits count as one client (an IPv6 address's /64).

pub mod auth;
pub mod bus;
pub mod chat;
pub mod client;
pub mod command;
pub mod config;
pub mod connection;
mod core;
pub mod defaults;
mod front;
mod rate;
pub mod server;
pub mod source;
pub mod store;
pub mod tls;
mod transfer;

pub use client::{Client, ClientError, ClientOptions, ExecOutcome};
pub use command::{Exit, OutputStream};
pub use config::ServerConfig;
pub use connection::{ConnError, Connection, Deadlines};
pub use server::{Server, ServiceKind};
pub use sockit_proto as proto;
