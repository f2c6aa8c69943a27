//! `exec` in frames: output frames `{"ok":true,"stream":"stdout"|"stderr","size":n}` + n
//! bytes as the command writes them, then one final frame with how it ended.
//!
//! Unlike every other reply, output is flushed as it is produced: the client must see it while
//! the command still runs. If the client goes away meanwhile, the command is killed.

use std::io;

use sockit_proto::message::{ExecFrame, ExecRequest};
use sockit_proto::Header;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::timeout_at;

use super::{answer, refuse, start_reply, Flow};
use crate::connection::{ConnError, Connection};
use crate::core::exec::{self, ExecEvent};
use crate::core::{Core, Session};

/// Runs `exec`, streaming its output back.
pub(super) async fn exec<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    header: &Header,
    core: &Core,
    session: &Session,
    request: &ExecRequest<'_>,
) -> Result<Flow, ConnError> {
    let mut command = match exec::start(core, session, request) {
        Ok(command) => command,
        Err(err) => return refuse(conn, header, &err).await,
    };
    let send_by = command.send_by();
    loop {
        let event = tokio::select! {
            event = command.next() => event,
            () = conn.peer_gone() => {
                tracing::info!(user = command.user(), "client left while its command ran; command killed");
                return Err(ConnError::Io(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "client left while its command ran",
                )));
            }
        };
        match event {
            ExecEvent::Output(stream, data) => {
                start_reply(conn, header)
                    .fields(&ExecFrame::Output { stream })
                    .finish(data.len() as u64)
                    .expect("an output frame always encodes");
                let sent = timeout_at(send_by, async {
                    conn.write_body(&data).await?;
                    conn.flush().await
                });
                sent.await.map_err(|_| {
                    ConnError::Io(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the command's time ran out while the client was not reading",
                    ))
                })??;
            }
            ExecEvent::Exit(exit) => {
                answer(conn, header, &exit);
                return Ok(Flow::Continue);
            }
        }
    }
}
