//! UDP in batches: many datagrams for one system call, both ways, for the UDP front ends.
//!
//! An [`Inbox`] takes every datagram waiting on a socket, up to its number of slots, with one
//! `recvmmsg`; [`send_all`] hands a list of datagrams, each to its own address, to `sendmmsg`
//! [`SEND_BATCH`] at a time. So one wake-up of a service serves many datagrams, and a chat
//! line's copies to every member leave in one call. A batch changes nothing but the number of
//! system calls: the datagrams are the same, each is received once and sent once, in order.
//!
//! The system calls are nix's safe wrappers (the workspace forbids `unsafe`). quinn-udp, the
//! model for batched UDP on tokio, sends one destination per call (with GSO) and sets the
//! socket up for QUIC (no fragmentation, GRO merging datagrams into one buffer), which would
//! change what these services do; here a batch goes to many addresses and the socket stays as
//! it was bound.
//!
//! Sending goes through [`Outbox`], so that what a socket may do to a batch — send only part
//! of it, have no room for now, refuse one datagram — can be made to happen in tests.

use std::future::Future;
use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use nix::sys::socket::{
    recvmmsg, sendmmsg, sendmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage,
};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Datagrams an [`Inbox`] takes in one call, at most, unless made with another number.
pub(crate) const RECV_BATCH: usize = 32;

/// Datagrams handed to one `sendmmsg`, at most; a longer list takes several calls.
pub(crate) const SEND_BATCH: usize = 64;

/// What one `recvmmsg` brought: the datagrams, each in its own slot, with their senders.
#[derive(Debug)]
pub(crate) struct Inbox {
    /// `slots` slots of `slot_len` bytes, one after the other.
    buf: Vec<u8>,
    slot_len: usize,
    /// Per datagram received by the last call, in the order received: its sender and length.
    got: Vec<(SocketAddr, usize)>,
}

impl Inbox {
    /// An inbox for up to `slots` datagrams a call (at least one), each of up to `slot_len`
    /// bytes (a longer one is cut to `slot_len`, as `recv_from` would cut it).
    pub(crate) fn new(slots: usize, slot_len: usize) -> Inbox {
        let slots = slots.max(1);
        Inbox {
            buf: vec![0; slots * slot_len],
            slot_len,
            got: Vec::with_capacity(slots),
        }
    }

    /// Waits until a datagram is there, then takes all that are waiting, up to the number of
    /// slots, in one system call; how many it took. What an earlier call took is gone.
    ///
    /// A call that finds fewer datagrams than slots has emptied the socket, so the socket's
    /// readiness is cleared with it: the next call waits for the next datagram at once, without
    /// a call that finds nothing first.
    ///
    /// Cancel-safe: the datagrams are taken in the same poll that completes it.
    ///
    /// # Errors
    /// What the system says, such as an ICMP error reported for an earlier send: the inbox is
    /// then empty and the socket may be used again.
    pub(crate) async fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        self.got.clear();
        let slots = self.slots();
        loop {
            socket.readable().await?;
            let taken = socket.try_io(Interest::READABLE, || {
                let taken = self.recv_now(socket.as_raw_fd(), MsgFlags::MSG_DONTWAIT)?;
                if taken < slots {
                    // Emptied: "would block" clears the readiness; what was taken stays here.
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(taken)
            });
            match taken {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    if !self.got.is_empty() {
                        return Ok(self.got.len());
                    }
                }
                done => return done,
            }
        }
    }

    /// The same on a blocking socket, into the first `most` slots alone (at least one): waits
    /// for the first datagram as long as the socket's read timeout allows (then
    /// [`io::ErrorKind::WouldBlock`] or [`io::ErrorKind::TimedOut`]), and takes the others that
    /// are waiting with it. A caller whose batches have been single datagrams asks for one, so
    /// that the call ends with it instead of first looking for a second ([`Appetite`]).
    ///
    /// # Errors
    /// As [`recv`](Inbox::recv), and the timeout.
    pub(crate) fn recv_blocking_up_to(
        &mut self,
        socket: &std::net::UdpSocket,
        most: usize,
    ) -> io::Result<usize> {
        self.recv_into(socket.as_raw_fd(), MsgFlags::MSG_WAITFORONE, most.max(1))
    }

    fn slots(&self) -> usize {
        self.buf.len() / self.slot_len.max(1)
    }

    /// One `recvmmsg` into every slot, with `flags`.
    fn recv_now(&mut self, fd: RawFd, flags: MsgFlags) -> io::Result<usize> {
        self.recv_into(fd, flags, usize::MAX)
    }

    /// One `recvmmsg` into the first `most` slots, with `flags`.
    fn recv_into(&mut self, fd: RawFd, flags: MsgFlags, most: usize) -> io::Result<usize> {
        let Inbox { buf, slot_len, got } = self;
        got.clear();
        let mut slices: Vec<[IoSliceMut<'_>; 1]> = buf
            .chunks_exact_mut(*slot_len)
            .take(most)
            .map(|slot| [IoSliceMut::new(slot)])
            .collect();
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(slices.len(), None);
        let received =
            recvmmsg(fd, &mut headers, slices.iter_mut(), flags, None).map_err(io::Error::from)?;
        for message in received {
            // A UDP datagram always has a sender; one without is skipped.
            if let Some(from) = message.address.as_ref().and_then(socket_addr) {
                got.push((from, message.bytes.min(*slot_len)));
            }
        }
        Ok(got.len())
    }

    /// How many datagrams the last call took.
    pub(crate) fn len(&self) -> usize {
        self.got.len()
    }

    /// The datagrams the last call took, in the order they arrived, with their senders.
    pub(crate) fn datagrams(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> + '_ {
        self.got
            .iter()
            .zip(self.buf.chunks_exact(self.slot_len))
            .map(|(&(from, len), slot)| (from, &slot[..len]))
    }

    /// The same, each datagram's bytes open to change in place (to answer with them).
    pub(crate) fn datagrams_mut(&mut self) -> impl Iterator<Item = (SocketAddr, &mut [u8])> + '_ {
        self.got
            .iter()
            .zip(self.buf.chunks_exact_mut(self.slot_len))
            .map(|(&(from, len), slot)| (from, &mut slot[..len]))
    }
}

/// A socket address as the system spells it, as a [`SocketAddr`]; `None` for other families.
fn socket_addr(storage: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = storage.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    storage
        .as_sockaddr_in6()
        .map(|v6| SocketAddr::V6((*v6).into()))
}

/// The bytes of a datagram to send.
pub(crate) trait Payload {
    /// The datagram.
    fn bytes(&self) -> &[u8];
}

impl Payload for &[u8] {
    fn bytes(&self) -> &[u8] {
        self
    }
}

impl Payload for &mut [u8] {
    fn bytes(&self) -> &[u8] {
        self
    }
}

impl Payload for Arc<str> {
    fn bytes(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl Payload for Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }
}

/// Where [`send_all`] and [`send_all_blocking`] send: a socket, or in tests a stand-in that
/// does what a socket may.
pub(crate) trait Outbox {
    /// Sends the first datagrams of `datagrams` (not empty) in order, each to its address: how
    /// many went, at least one.
    ///
    /// # Errors
    /// Why the first could not go: [`io::ErrorKind::WouldBlock`] when there is no room for it
    /// now, anything else when it never will.
    fn try_send<P: Payload>(&self, datagrams: &[(SocketAddr, P)]) -> io::Result<usize>;
}

/// An [`Outbox`] that can wait for room.
pub(crate) trait AsyncOutbox: Outbox {
    /// Waits until there may be room to send.
    fn writable(&self) -> impl Future<Output = io::Result<()>> + Send;
}

/// Up to [`SEND_BATCH`] of `datagrams` in one `sendmmsg` on `fd`, with `flags`.
fn sendmmsg_on<P: Payload>(
    fd: RawFd,
    datagrams: &[(SocketAddr, P)],
    flags: MsgFlags,
) -> io::Result<usize> {
    let datagrams = &datagrams[..datagrams.len().min(SEND_BATCH)];
    let slices: Vec<[IoSlice<'_>; 1]> = datagrams
        .iter()
        .map(|(_, payload)| [IoSlice::new(payload.bytes())])
        .collect();
    let addrs: Vec<Option<SockaddrStorage>> = datagrams
        .iter()
        .map(|(to, _)| Some(SockaddrStorage::from(*to)))
        .collect();
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(slices.len(), None);
    let sent = sendmmsg(fd, &mut headers, &slices, &addrs, [], flags).map_err(io::Error::from)?;
    Ok(sent.count())
}

impl Outbox for UdpSocket {
    /// Up to [`SEND_BATCH`] datagrams in one `sendmmsg`, without waiting.
    fn try_send<P: Payload>(&self, datagrams: &[(SocketAddr, P)]) -> io::Result<usize> {
        self.try_io(Interest::WRITABLE, || {
            sendmmsg_on(self.as_raw_fd(), datagrams, MsgFlags::MSG_DONTWAIT)
        })
    }
}

impl AsyncOutbox for UdpSocket {
    fn writable(&self) -> impl Future<Output = io::Result<()>> + Send {
        UdpSocket::writable(self)
    }
}

impl Outbox for std::net::UdpSocket {
    /// Up to [`SEND_BATCH`] datagrams in one `sendmmsg`, waiting for room as the socket does.
    fn try_send<P: Payload>(&self, datagrams: &[(SocketAddr, P)]) -> io::Result<usize> {
        sendmmsg_on(self.as_raw_fd(), datagrams, MsgFlags::empty())
    }
}

/// What became of a list of datagrams handed to [`send_all`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sent {
    /// Datagrams the system took.
    pub(crate) sent: usize,
    /// Datagrams it refused (each logged), left out.
    pub(crate) failed: usize,
}

/// Sends every datagram of `datagrams` in order, each once: after a call that sent only some,
/// the next resumes from the first not sent; when the socket has no room, it waits; a datagram
/// the system refuses is logged and left out, and the rest go on. So a batch is the same
/// datagrams as one `send_to` each, in the same order.
pub(crate) async fn send_all<O: AsyncOutbox, P: Payload>(
    out: &O,
    datagrams: &[(SocketAddr, P)],
) -> Sent {
    let mut done = Sent::default();
    let mut rest = datagrams;
    while !send_now(out, &mut rest, &mut done) {
        if let Err(err) = out.writable().await {
            tracing::debug!(%err, "udp socket not writable; the batch's rest is dropped");
            done.failed += rest.len();
            break;
        }
    }
    done
}

/// [`send_all`] on a blocking socket, which waits for room itself: should it give up (a send
/// timeout), the rest of the batch is dropped.
pub(crate) fn send_all_blocking<O: Outbox, P: Payload>(
    out: &O,
    datagrams: &[(SocketAddr, P)],
) -> Sent {
    let mut done = Sent::default();
    let mut rest = datagrams;
    if !send_now(out, &mut rest, &mut done) {
        tracing::debug!("udp socket has no room; the batch's rest is dropped");
        done.failed += rest.len();
    }
    done
}

/// How many datagrams a blocking receiver asks for: as many as came last time when that was
/// fewer than asked, twice as many when it was all it asked for. From one, it asks for more only
/// after [`APPETITE_PROBE`] calls in a row each brought one: a receiver answered one datagram
/// at a time then pays for looking further only once in a while.
#[derive(Debug)]
pub(crate) struct Appetite {
    want: usize,
    most: usize,
    full: u32,
}

/// Calls in a row that each brought the one datagram asked for, before asking for two.
const APPETITE_PROBE: u32 = 8;

impl Appetite {
    /// Asking for `most` at first.
    pub(crate) fn new(most: usize) -> Appetite {
        let most = most.max(1);
        Appetite {
            want: most,
            most,
            full: 0,
        }
    }

    /// How many to ask for now.
    pub(crate) fn want(&self) -> usize {
        self.want
    }

    /// The last call brought `took`.
    pub(crate) fn took(&mut self, took: usize) {
        if took < self.want {
            self.full = 0;
            self.want = took.max(1);
            return;
        }
        self.full += 1;
        if self.want > 1 || self.full >= APPETITE_PROBE {
            self.full = 0;
            self.want = (self.want * 2).min(self.most);
        }
    }
}

/// Datagrams one GSO send may carry at most (the kernel's limit, `UDP_MAX_SEGMENTS`).
const GSO_MAX_SEGMENTS: usize = 64;

/// Bytes one GSO send may carry at most: one UDP datagram's payload over IPv4.
const GSO_MAX_BYTES: usize = 65_507;

/// The longest datagram sent by GSO: within any path's MTU, so that the kernel never refuses
/// a run for its segment size (longer ones go datagram by datagram).
const GSO_MAX_SEGMENT: usize = 1200;

/// Whether to hand runs of datagrams to the kernel as one UDP GSO send: on until the system
/// says it cannot, then off for good.
#[derive(Debug)]
pub(crate) struct Gso {
    enabled: bool,
}

impl Gso {
    /// GSO tried first.
    pub(crate) fn new() -> Gso {
        Gso { enabled: true }
    }
}

/// The runs of `datagrams` that one GSO send can carry, in order: consecutive datagrams to
/// the same address, all of the same length (the last may be shorter, as GSO allows), within
/// [`GSO_MAX_SEGMENTS`], [`GSO_MAX_BYTES`] and [`GSO_MAX_SEGMENT`]. Every datagram is in
/// exactly one run.
pub(crate) fn gso_runs<P: Payload>(datagrams: &[(SocketAddr, P)]) -> Vec<std::ops::Range<usize>> {
    let mut runs = Vec::new();
    let mut start = 0;
    while start < datagrams.len() {
        let (to, first) = (&datagrams[start].0, datagrams[start].1.bytes().len());
        let mut end = start + 1;
        let mut bytes = first;
        while end < datagrams.len()
            && end - start < GSO_MAX_SEGMENTS
            && datagrams[end].0 == *to
            && (1..=GSO_MAX_SEGMENT).contains(&first)
            && datagrams[end - 1].1.bytes().len() == first
            && datagrams[end].1.bytes().len() <= first
            && !datagrams[end].1.bytes().is_empty()
            && bytes + datagrams[end].1.bytes().len() <= GSO_MAX_BYTES
        {
            bytes += datagrams[end].1.bytes().len();
            end += 1;
        }
        runs.push(start..end);
        start = end;
    }
    runs
}

/// [`send_all_blocking`], with each run of datagrams to one address (see [`gso_runs`]) handed
/// to the kernel as one UDP GSO send, which cuts it into the same datagrams. A run the kernel
/// does not take that way goes datagram by datagram, as [`send_all_blocking`] sends; when the
/// system cannot do GSO at all, `gso` is turned off.
pub(crate) fn send_all_gso_blocking<P: Payload>(
    socket: &std::net::UdpSocket,
    datagrams: &[(SocketAddr, P)],
    gso: &mut Gso,
) -> Sent {
    if !gso.enabled {
        return send_all_blocking(socket, datagrams);
    }
    let mut done = Sent::default();
    for run in gso_runs(datagrams) {
        let run = &datagrams[run];
        if run.len() > 1 && gso.enabled {
            match send_gso(socket, run) {
                Ok(()) => {
                    done.sent += run.len();
                    continue;
                }
                Err(err) => {
                    if matches!(
                        err.raw_os_error(),
                        Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT | libc::EOPNOTSUPP)
                    ) {
                        tracing::debug!(%err, "udp: no GSO here; datagram by datagram from now on");
                        gso.enabled = false;
                    }
                }
            }
        }
        let sent = send_all_blocking(socket, run);
        done.sent += sent.sent;
        done.failed += sent.failed;
    }
    done
}

/// One run (not empty) as one `sendmsg` with `UDP_SEGMENT` set to its first datagram's length.
fn send_gso<P: Payload>(socket: &std::net::UdpSocket, run: &[(SocketAddr, P)]) -> io::Result<()> {
    let segment = u16::try_from(run[0].1.bytes().len())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let slices: Vec<IoSlice<'_>> = run
        .iter()
        .map(|(_, payload)| IoSlice::new(payload.bytes()))
        .collect();
    let to = SockaddrStorage::from(run[0].0);
    sendmsg(
        socket.as_raw_fd(),
        &slices,
        &[ControlMessage::UdpGsoSegments(&segment)],
        MsgFlags::empty(),
        Some(&to),
    )
    .map_err(io::Error::from)?;
    Ok(())
}

/// Sends from the front of `rest` until it is empty (`true`) or the socket has no room
/// (`false`), counting in `done`.
fn send_now<O: Outbox, P: Payload>(
    out: &O,
    rest: &mut &[(SocketAddr, P)],
    done: &mut Sent,
) -> bool {
    loop {
        let current = *rest;
        let Some(((to, _), _)) = current.split_first() else {
            return true;
        };
        match out.try_send(current) {
            Ok(sent) => {
                // At least one, by the contract; never stay in place if a stand-in says 0.
                let sent = sent.clamp(1, current.len());
                done.sent += sent;
                *rest = &current[sent..];
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return false,
            Err(err) => {
                tracing::debug!(%err, %to, "udp send failed");
                done.failed += 1;
                *rest = &current[1..];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::time::Duration;

    use super::*;

    /// A stand-in socket: each call sends at most `per_call`, every `block_every`-th call has
    /// no room, and datagrams whose bytes are `refused` fail.
    struct Flaky {
        per_call: usize,
        block_every: usize,
        refused: &'static [u8],
        calls: Cell<usize>,
        waits: Cell<usize>,
        wire: RefCell<Vec<(SocketAddr, Vec<u8>)>>,
    }

    impl Flaky {
        fn new(per_call: usize, block_every: usize, refused: &'static [u8]) -> Flaky {
            Flaky {
                per_call,
                block_every,
                refused,
                calls: Cell::new(0),
                waits: Cell::new(0),
                wire: RefCell::new(Vec::new()),
            }
        }
    }

    impl Outbox for Flaky {
        fn try_send<P: Payload>(&self, datagrams: &[(SocketAddr, P)]) -> io::Result<usize> {
            assert!(!datagrams.is_empty(), "never called with nothing to send");
            let call = self.calls.get() + 1;
            self.calls.set(call);
            if call.is_multiple_of(self.block_every) {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut sent = 0;
            for (to, payload) in datagrams.iter().take(self.per_call) {
                if payload.bytes() == self.refused {
                    if sent == 0 {
                        return Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
                    }
                    break; // as sendmmsg: the count so far, the error on the next call
                }
                self.wire.borrow_mut().push((*to, payload.bytes().to_vec()));
                sent += 1;
            }
            Ok(sent)
        }
    }

    impl AsyncOutbox for Flaky {
        fn writable(&self) -> impl Future<Output = io::Result<()>> + Send {
            self.waits.set(self.waits.get() + 1);
            std::future::ready(Ok(()))
        }
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn numbered(count: usize) -> Vec<(SocketAddr, Vec<u8>)> {
        (0..count)
            .map(|n| (addr(1000 + (n % 3) as u16), format!("d{n}").into_bytes()))
            .collect()
    }

    #[tokio::test]
    async fn a_partial_send_resumes_from_the_first_datagram_not_sent() {
        let datagrams = numbered(20);
        let out = Flaky::new(3, usize::MAX, b"");
        let done = send_all(&out, &datagrams).await;
        assert_eq!(
            done,
            Sent {
                sent: 20,
                failed: 0
            }
        );
        assert_eq!(*out.wire.borrow(), datagrams, "each once, in order");
        assert_eq!(out.calls.get(), 7, "3 a call");
    }

    #[tokio::test]
    async fn no_room_waits_and_sends_the_same_datagrams_again() {
        let datagrams = numbered(10);
        let out = Flaky::new(4, 2, b"");
        let done = send_all(&out, &datagrams).await;
        assert_eq!(
            done,
            Sent {
                sent: 10,
                failed: 0
            }
        );
        assert_eq!(*out.wire.borrow(), datagrams);
        assert_eq!(out.waits.get(), 2, "every other call had no room");
    }

    #[tokio::test]
    async fn a_refused_datagram_is_left_out_and_the_rest_go_on_in_order() {
        let mut datagrams = numbered(9);
        datagrams[4].1 = b"too big".to_vec();
        let out = Flaky::new(3, usize::MAX, b"too big");
        let done = send_all(&out, &datagrams).await;
        assert_eq!(done, Sent { sent: 8, failed: 1 });
        let mut expected = datagrams.clone();
        expected.remove(4);
        assert_eq!(*out.wire.borrow(), expected);
        // The batch may end in the refused one too.
        let out = Flaky::new(8, usize::MAX, b"too big");
        let done = send_all(&out, &datagrams[..5]).await;
        assert_eq!(done, Sent { sent: 4, failed: 1 });
        assert_eq!(*out.wire.borrow(), datagrams[..4]);
    }

    async fn loopback() -> UdpSocket {
        UdpSocket::bind("127.0.0.1:0").await.unwrap()
    }

    #[tokio::test]
    async fn an_inbox_takes_every_waiting_datagram_in_one_call_in_order_per_sender() {
        let server = loopback().await;
        let to = server.local_addr().unwrap();
        let (a, b) = (loopback().await, loopback().await);
        for n in 0..5 {
            a.send_to(format!("a{n}").as_bytes(), to).await.unwrap();
            b.send_to(format!("b{n}").as_bytes(), to).await.unwrap();
        }
        // Loopback queues them at once; let the last one land.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut inbox = Inbox::new(RECV_BATCH, 16);
        assert_eq!(inbox.recv(&server).await.unwrap(), 10, "one call");
        let got: Vec<(SocketAddr, String)> = inbox
            .datagrams()
            .map(|(from, data)| (from, String::from_utf8(data.to_vec()).unwrap()))
            .collect();
        let (a, b) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let expected: Vec<(SocketAddr, String)> = (0..5)
            .flat_map(|n| [(a, format!("a{n}")), (b, format!("b{n}"))])
            .collect();
        assert_eq!(got, expected);
    }

    #[tokio::test]
    async fn an_inbox_takes_no_more_than_its_slots_and_leaves_the_rest_waiting() {
        let server = loopback().await;
        let to = server.local_addr().unwrap();
        let client = loopback().await;
        for n in 0..7u8 {
            client.send_to(&[n; 3], to).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut inbox = Inbox::new(4, 2);
        let mut got = Vec::new();
        while got.len() < 7 {
            let took = inbox.recv(&server).await.unwrap();
            assert!(took <= 4);
            got.extend(inbox.datagrams().map(|(_, data)| data.to_vec()));
        }
        let expected: Vec<Vec<u8>> = (0..7u8).map(|n| vec![n; 2]).collect();
        assert_eq!(got, expected, "each once, cut to its slot like recv_from");
    }

    #[tokio::test]
    async fn a_datagram_after_a_short_batch_still_wakes_the_inbox() {
        let server = loopback().await;
        let to = server.local_addr().unwrap();
        let client = loopback().await;
        let mut inbox = Inbox::new(RECV_BATCH, 16);
        for n in 0..3u8 {
            client.send_to(&[n], to).await.unwrap();
            let took = tokio::time::timeout(Duration::from_secs(5), inbox.recv(&server))
                .await
                .expect("woken for the datagram")
                .unwrap();
            assert_eq!(took, 1);
            let got: Vec<&[u8]> = inbox.datagrams().map(|(_, data)| data).collect();
            assert_eq!(got, [&[n][..]]);
        }
    }

    #[test]
    fn a_blocking_socket_takes_a_batch_and_sends_one_and_times_out_when_idle() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        server
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let to = server.local_addr().unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for n in 0..5u8 {
            client.send_to(&[b'a' + n], to).unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
        let mut inbox = Inbox::new(RECV_BATCH, 16);
        assert_eq!(inbox.recv_blocking_up_to(&server, usize::MAX).unwrap(), 5);
        let replies: Vec<(SocketAddr, &[u8])> = inbox.datagrams().collect();
        assert_eq!(
            send_all_blocking(&server, &replies),
            Sent { sent: 5, failed: 0 }
        );
        let mut buf = [0u8; 16];
        for n in 0..5u8 {
            let (len, from) = client.recv_from(&mut buf).unwrap();
            assert_eq!((from, &buf[..len]), (to, &[b'a' + n][..]));
        }
        let idle = inbox.recv_blocking_up_to(&server, usize::MAX).unwrap_err();
        assert!(
            matches!(
                idle.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            "{idle}"
        );
    }

    #[test]
    fn a_blocking_send_that_gives_up_drops_the_rest_of_the_batch() {
        let datagrams = numbered(10);
        let out = Flaky::new(4, 2, b"");
        let done = send_all_blocking(&out, &datagrams);
        assert_eq!(done, Sent { sent: 4, failed: 6 });
        assert_eq!(*out.wire.borrow(), datagrams[..4]);
    }

    #[test]
    fn appetite_shrinks_to_what_comes_and_grows_when_full() {
        let mut appetite = Appetite::new(32);
        appetite.took(1);
        assert_eq!(appetite.want(), 1, "one at a time: ask for one");
        for _ in 0..APPETITE_PROBE - 1 {
            appetite.took(1);
            assert_eq!(appetite.want(), 1);
        }
        appetite.took(1);
        assert_eq!(appetite.want(), 2, "a look further once in a while");
        appetite.took(2);
        appetite.took(4);
        appetite.took(8);
        appetite.took(16);
        assert_eq!(appetite.want(), 32);
        appetite.took(32);
        assert_eq!(appetite.want(), 32, "never more than the slots");
        appetite.took(5);
        assert_eq!(appetite.want(), 5);
    }

    #[test]
    fn gso_runs_are_same_address_same_length_and_cover_every_datagram_once() {
        let d = |port: u16, len: usize| (addr(port), vec![b'x'; len]);
        let datagrams = [
            d(1, 32),
            d(1, 32),
            d(1, 10), // shorter last: same run
            d(1, 32), // a new run: the one before was shorter
            d(2, 32), // another address
            d(2, 40), // longer: a new run
            d(2, 40),
        ];
        assert_eq!(gso_runs(&datagrams), [0..3, 3..4, 4..5, 5..7]);
        let many: Vec<_> = (0..150).map(|_| d(1, 8)).collect();
        assert_eq!(
            gso_runs(&many),
            [0..64, 64..128, 128..150],
            "64 segments at most"
        );
        let full: Vec<_> = (0..60).map(|_| d(1, 1200)).collect();
        assert_eq!(
            gso_runs(&full),
            [0..54, 54..60],
            "one datagram's bytes at most"
        );
        let big: Vec<_> = (0..2).map(|_| d(1, 1201)).collect();
        assert_eq!(
            gso_runs(&big),
            [0..1, 1..2],
            "longer than a segment may be: alone"
        );
        let empty: Vec<_> = (0..3).map(|_| d(1, 0)).collect();
        assert_eq!(gso_runs(&empty), [0..1, 1..2, 2..3], "empty ones alone");
    }

    #[test]
    fn a_gso_batch_arrives_as_the_same_datagrams_each_once_in_order() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let from = server.local_addr().unwrap();
        let members = [
            std::net::UdpSocket::bind("127.0.0.1:0").unwrap(),
            std::net::UdpSocket::bind("127.0.0.1:0").unwrap(),
        ];
        for member in &members {
            member
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
        }
        let to: Vec<SocketAddr> = members.iter().map(|m| m.local_addr().unwrap()).collect();
        let mut datagrams = Vec::new();
        for n in 0..40 {
            datagrams.push((to[0], format!("first {n:03}").into_bytes()));
        }
        datagrams.push((to[0], b"end".to_vec()));
        for n in 0..5 {
            datagrams.push((to[1], format!("second {n:03}").into_bytes()));
        }
        let mut gso = Gso::new();
        let done = send_all_gso_blocking(&server, &datagrams, &mut gso);
        assert_eq!(
            done,
            Sent {
                sent: 46,
                failed: 0
            }
        );
        let mut buf = [0u8; 64];
        for (to, data) in &datagrams {
            let member = &members[usize::from(*to == members[1].local_addr().unwrap())];
            let (len, sender) = member.recv_from(&mut buf).unwrap();
            assert_eq!((sender, &buf[..len]), (from, data.as_slice()));
        }
        for member in &members {
            member.set_nonblocking(true).unwrap();
            assert!(member.recv_from(&mut buf).is_err(), "nothing twice");
        }
    }

    #[tokio::test]
    async fn a_socket_sends_a_batch_to_many_addresses_and_a_long_one_in_several_calls() {
        let server = loopback().await;
        let members = [loopback().await, loopback().await, loopback().await];
        let mut datagrams = Vec::new();
        for n in 0..SEND_BATCH + 10 {
            let to = members[n % 3].local_addr().unwrap();
            datagrams.push((to, format!("line {n}").into_bytes()));
        }
        let done = send_all(&server, &datagrams).await;
        assert_eq!(
            done,
            Sent {
                sent: SEND_BATCH + 10,
                failed: 0
            }
        );
        let from = server.local_addr().unwrap();
        for (i, member) in members.iter().enumerate() {
            let mut buf = [0u8; 64];
            for n in (i..SEND_BATCH + 10).step_by(3) {
                let (len, sender) = member.recv_from(&mut buf).await.unwrap();
                assert_eq!(
                    (sender, &buf[..len]),
                    (from, format!("line {n}").as_bytes())
                );
            }
            assert!(member.try_recv_from(&mut buf).is_err(), "nothing twice");
        }
    }
}
