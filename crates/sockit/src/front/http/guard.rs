//! A stream that notes when bytes last moved, so that a connection silent both ways for the
//! idle timeout can be closed whatever hyper is waiting for (the next request, a client that
//! stopped reading a download, a body that stopped coming); and how many bytes it wrote, so that
//! a download that a client takes slower than the transfer pace is cut ([`Activity::too_slow`]).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::connection::MinRate;

/// When bytes last moved on a connection, as milliseconds since it opened.
#[derive(Debug, Clone)]
pub(crate) struct Activity {
    opened: Instant,
    last: Arc<AtomicU64>,
    /// Bytes written in all.
    written: Arc<AtomicU64>,
    /// Downloads being sent.
    sending: Arc<AtomicUsize>,
}

/// A download being sent on a connection: while one is, the connection keeps the pace.
#[derive(Debug)]
pub(crate) struct Sending(Arc<AtomicUsize>);

impl Drop for Sending {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            last: Arc::new(AtomicU64::new(0)),
            written: Arc::new(AtomicU64::new(0)),
            sending: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Marks a download as being sent until the returned guard is dropped.
    pub(crate) fn sending(&self) -> Sending {
        self.sending.fetch_add(1, Ordering::Relaxed);
        Sending(Arc::clone(&self.sending))
    }

    /// Completes when, over a whole window of `pace` during which a download was being sent,
    /// the connection wrote fewer bytes than the pace asks for; never without a pace.
    pub(super) async fn too_slow(&self, pace: Option<MinRate>) {
        let Some(pace) = pace else {
            return std::future::pending().await;
        };
        let per_window = pace.per_window();
        let mut window = tokio::time::interval(pace.window);
        window.reset();
        let mut start = None;
        loop {
            window.tick().await;
            let written = self.written.load(Ordering::Relaxed);
            let sending = self.sending.load(Ordering::Relaxed) > 0;
            match start {
                Some(before) if sending && written - before < per_window => return,
                _ => start = sending.then_some(written),
            }
        }
    }

    /// Notes that `bytes` were written.
    pub(super) fn wrote(&self, bytes: usize) {
        if bytes > 0 {
            self.touch();
            self.written.fetch_add(bytes as u64, Ordering::Relaxed);
        }
    }

    fn touch(&self) {
        let millis = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(millis, Ordering::Relaxed);
    }

    /// Completes once no byte has moved for `idle`.
    pub(super) async fn expired(&self, idle: Duration) {
        loop {
            let last = self.opened + Duration::from_millis(self.last.load(Ordering::Relaxed));
            let deadline = last + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A stream whose reads and writes are noted in its [`Activity`].
#[derive(Debug)]
pub(super) struct Guarded<S> {
    inner: S,
    activity: Activity,
}

impl<S> Guarded<S> {
    pub(super) fn new(inner: S) -> Guarded<S> {
        Guarded {
            inner,
            activity: Activity::new(),
        }
    }

    /// Where this stream notes its activity.
    pub(super) fn activity(&self) -> Activity {
        self.activity.clone()
    }

    /// The stream itself, for what bypasses this wrapper (`sendfile`, which notes what it
    /// wrote with [`Activity::wrote`]).
    pub(super) fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(written)) = polled {
            self.activity.wrote(written);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(written)) = polled {
            self.activity.wrote(written);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
