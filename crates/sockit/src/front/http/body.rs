//! A request body as a [`BodySource`], so that an HTTP upload goes through the same pipeline
//! (recycled buffers, one thread hashing, one writing) as a framed `put`.
//!
//! Each wait for the next piece of the body ends after the idle timeout, and the body as a
//! whole keeps the transfer pace (`--transfer-min-rate` over `--transfer-rate-window`) as a
//! framed body does: a client that sends slower is cut, and the upload is not stored.

use std::time::Duration;

use axum::body::Body;
use bytes::{Buf, Bytes};
use http_body_util::BodyExt;
use tokio::time::Instant;

use crate::connection::{MinRate, Pace};
use crate::transfer::BodySource;

/// Why a request body could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    /// The client sent nothing for the idle timeout.
    #[error("the request body stopped for {0:?}")]
    Idle(Duration),
    /// The client sent slower than the transfer pace.
    #[error("the request body came slower than {0}")]
    TooSlow(MinRate),
    /// The connection ended (or broke) before the body did.
    #[error("the request body was cut off: {0}")]
    Cut(String),
    /// More bytes came than the request said.
    #[error("the request body is longer than it said")]
    TooLong,
}

/// An HTTP request body being read into an upload.
pub(crate) struct RequestBody {
    body: Body,
    pending: Bytes,
    /// Bytes the request said are left to come, when it said (`Content-Length`).
    left: Option<u64>,
    ended: bool,
    idle: Duration,
    pace: Option<Pace>,
}

impl RequestBody {
    /// `body`, of `length` bytes when the request said so, held to `idle` and `pace`.
    pub(crate) fn new(
        body: Body,
        length: Option<u64>,
        idle: Duration,
        pace: Option<MinRate>,
    ) -> RequestBody {
        RequestBody {
            body,
            pending: Bytes::new(),
            left: length,
            ended: false,
            idle,
            pace: pace.map(Pace::new),
        }
    }

    /// The next data of the body; empty at its end.
    async fn next_data(&mut self) -> Result<Bytes, BodyError> {
        loop {
            let idle_deadline = Instant::now() + self.idle;
            let pace_deadline = self.pace.as_mut().map(Pace::deadline);
            let deadline = pace_deadline.map_or(idle_deadline, |pace| pace.min(idle_deadline));
            let frame = match tokio::time::timeout_at(deadline, self.body.frame()).await {
                Ok(frame) => frame,
                Err(_) => {
                    return Err(match (self.pace, pace_deadline) {
                        (Some(pace), Some(at)) if at <= idle_deadline => {
                            BodyError::TooSlow(pace.rule)
                        }
                        _ => BodyError::Idle(self.idle),
                    })
                }
            };
            match frame {
                None => {
                    self.ended = true;
                    return Ok(Bytes::new());
                }
                Some(Err(err)) => return Err(BodyError::Cut(err.to_string())),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if !data.is_empty() {
                            if let Some(pace) = &mut self.pace {
                                pace.count(data.len());
                            }
                            return Ok(data);
                        }
                    }
                }
            }
        }
    }
}

impl BodySource for RequestBody {
    type Error = BodyError;

    fn remaining(&self) -> u64 {
        match self.left {
            Some(left) => left,
            None if self.ended => 0,
            None => u64::MAX,
        }
    }

    async fn read_into(&mut self, buf: &mut [u8]) -> Result<usize, BodyError> {
        if self.pending.is_empty() {
            self.pending = self.next_data().await?;
            if self.pending.is_empty() {
                return match self.left {
                    Some(left) if left > 0 => Err(BodyError::Cut(format!(
                        "it ended {left} bytes short of what it said"
                    ))),
                    _ => Ok(0),
                };
            }
        }
        let mut len = buf.len().min(self.pending.len());
        if let Some(left) = &mut self.left {
            if self.pending.len() as u64 > *left {
                return Err(BodyError::TooLong);
            }
            len = len.min(usize::try_from(*left).unwrap_or(usize::MAX));
            *left -= len as u64;
        }
        buf[..len].copy_from_slice(&self.pending[..len]);
        self.pending.advance(len);
        Ok(len)
    }
}
