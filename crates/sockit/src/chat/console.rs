//! The server operator's side of the chat room: what they type is said to every member as
//! `<server> text`, and the room's traffic comes back as `[room] line` for them to read.
//!
//! The library never prints: the traffic goes to whoever made the console, through a bounded
//! channel that the room never waits on.

use tokio::sync::mpsc::{self, error::TrySendError};

/// Lines of room traffic a console's reader may fall behind by; further lines are dropped
/// until it catches up, so a stalled terminal never stalls the room.
pub const CONSOLE_BACKLOG: usize = 1024;

/// The operator's console, as the room task holds it.
#[derive(Debug)]
pub struct Console {
    /// What the operator types; `None` once their input has ended.
    typed: Option<mpsc::Receiver<String>>,
    /// The room's traffic; `None` once nobody reads it.
    traffic: Option<mpsc::Sender<String>>,
    /// Lines dropped since the reader last kept up.
    dropped: u64,
}

impl Console {
    /// A console whose operator's lines come from `typed`. The room's traffic arrives on the
    /// returned receiver, for the caller to show.
    pub fn new(typed: mpsc::Receiver<String>) -> (Console, mpsc::Receiver<String>) {
        let (traffic, shown) = mpsc::channel(CONSOLE_BACKLOG);
        let console = Console {
            typed: Some(typed),
            traffic: Some(traffic),
            dropped: 0,
        };
        (console, shown)
    }

    /// The operator's next line; pending forever once their input has ended.
    pub(super) async fn typed(&mut self) -> String {
        loop {
            let Some(typed) = &mut self.typed else {
                return std::future::pending().await;
            };
            match typed.recv().await {
                Some(line) => return line,
                None => self.typed = None,
            }
        }
    }

    /// Whether anyone still reads the traffic.
    pub(super) fn is_read(&self) -> bool {
        self.traffic.is_some()
    }

    /// Hands `line` to the reader, unless it is too far behind (the line is dropped) or gone.
    pub(super) fn show(&mut self, line: String) {
        let Some(traffic) = &self.traffic else { return };
        match traffic.try_send(line) {
            Ok(()) if self.dropped > 0 => {
                tracing::warn!(
                    dropped = self.dropped,
                    "the operator console fell behind; room lines were not shown"
                );
                self.dropped = 0;
            }
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.dropped += 1,
            Err(TrySendError::Closed(_)) => self.traffic = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn traffic_beyond_the_backlog_is_dropped_never_waited_for() {
        let (_typed, typed_lines) = mpsc::channel(1);
        let (mut console, mut shown) = Console::new(typed_lines);
        for i in 0..CONSOLE_BACKLOG + 10 {
            console.show(format!("line {i}"));
        }
        assert_eq!(console.dropped, 10);
        assert_eq!(shown.recv().await.unwrap(), "line 0");
        console.show("after".to_owned());
        assert_eq!(console.dropped, 0, "counted, reported, reset");
        drop(shown);
        console.show("nobody reads".to_owned());
        assert!(!console.is_read());
    }

    #[tokio::test]
    async fn typed_lines_come_until_the_input_ends() {
        let (typed, typed_lines) = mpsc::channel(4);
        let (mut console, _shown) = Console::new(typed_lines);
        typed.send("hello".to_owned()).await.unwrap();
        drop(typed);
        assert_eq!(console.typed().await, "hello");
        let after_the_end =
            tokio::time::timeout(std::time::Duration::from_millis(20), console.typed());
        assert!(after_the_end.await.is_err(), "pending, not spinning");
    }
}
