//! The UDP chat room (`--udp`): datagrams in, through the rules of [`room`], datagrams out.
//!
//! One task owns the room. It receives a datagram, applies it, and sends what results before
//! receiving the next, so lines are never duplicated and each sender's lines go out in the
//! order they came in. UDP itself may lose datagrams; the room promises nothing more.

pub mod room;

use std::io::Write;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use room::{Effects, RoomConfig, Rooms, MAX_DATAGRAM};

/// How often silent members are looked for.
const EXPIRY_TICK: Duration = Duration::from_secs(1);

/// Serves the room on `socket` until `stop`. Lines from `operator`, when given, are said to the
/// room as `<server> text`, and the room's traffic is printed on standard output.
pub(crate) async fn serve(
    socket: UdpSocket,
    config: RoomConfig,
    mut operator: Option<mpsc::Receiver<String>>,
    stop: CancellationToken,
) {
    let mut rooms = Rooms::new(config, Instant::now().into_std());
    rooms.echo_to_console = operator.is_some();
    // One byte more than the limit, so that an oversize datagram is seen as one.
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut tick = tokio::time::interval(EXPIRY_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let fx = tokio::select! {
            () = stop.cancelled() => return,
            received = socket.recv_from(&mut buf) => match received {
                Ok((len, from)) => rooms.datagram(from, &buf[..len], Instant::now().into_std()),
                // An ICMP error from an earlier send, or a transient shortage: keep serving.
                Err(err) => {
                    tracing::debug!(%err, "udp receive failed");
                    continue;
                }
            },
            _ = tick.tick() => rooms.expire(Instant::now().into_std()),
            line = recv_operator(&mut operator) => match line {
                Some(line) => rooms.operator(&line),
                None => {
                    operator = None;
                    continue;
                }
            },
        };
        apply(&socket, fx).await;
    }
}

/// The next operator line; pending forever when there is no operator.
async fn recv_operator(operator: &mut Option<mpsc::Receiver<String>>) -> Option<String> {
    match operator {
        Some(lines) => lines.recv().await,
        None => std::future::pending().await,
    }
}

async fn apply(socket: &UdpSocket, fx: Effects) {
    if !fx.console.is_empty() {
        let mut stdout = std::io::stdout().lock();
        for line in &fx.console {
            let _ = writeln!(stdout, "{line}");
        }
        let _ = stdout.flush();
    }
    for out in fx.out {
        if let Err(err) = socket.send_to(out.line.as_bytes(), out.to).await {
            tracing::debug!(%err, to = %out.to, "udp send failed");
        }
    }
}
