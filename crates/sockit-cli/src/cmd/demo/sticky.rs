//! `sockit demo sticky`: the sticky-packet problem, shown on a real loopback socket, then fixed.
//!
//! Part 1 sends small messages back to back over raw TCP to a receiver that reads a little
//! later, and one large message to a receiver reading in fixed-size pieces; it reports what each
//! `read` really returned. Part 2 sends the same messages as sockit frames and feeds the very
//! same kind of reads to a [`Decoder`], which gives back every message whole. Nothing is canned:
//! every number printed was measured on the socket.

use std::io::{self, Write};
use std::time::Duration;

use bytes::BytesMut;
use sockit_proto::message::Request;
use sockit_proto::{Decoder, Event, HeaderWriter, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// The small messages sent back to back.
const SMALL: [&str; 4] = ["hello", "world", "sticky", "packet"];
/// Size of the large message.
const LARGE_LEN: usize = 200_000;
/// The tutorials' `recv(1024)`.
const SMALL_READ: usize = 1024;
/// Read size for the large message.
const LARGE_READ: usize = 64 * 1024;
/// How long the receiver dawdles before its first read, as the tutorials' `time.sleep(1)`.
const RECEIVER_PAUSE: Duration = Duration::from_millis(100);

/// Runs the demonstration, writing the report to `out`.
///
/// # Errors
///
/// When the loopback socket cannot be set up or writing the report fails.
pub(crate) async fn sticky(out: &mut impl Write) -> io::Result<()> {
    let large = large_message();

    writeln!(
        out,
        "== 1. Raw TCP: a byte stream has no message boundaries =="
    )?;
    let small: Vec<Vec<u8>> = SMALL.iter().map(|m| m.as_bytes().to_vec()).collect();
    let run = exchange(small.clone(), large.clone()).await?;
    report_writes(out, "write", &small, &large)?;
    report_raw_reads(out, &run)?;

    writeln!(out)?;
    writeln!(
        out,
        "== 2. sockit frames: 4-byte length, JSON header, body =="
    )?;
    let small_frames: Vec<Vec<u8>> = small.iter().map(|m| encode_echo(m)).collect();
    let large_frame = encode_echo(&large);
    let run = exchange(small_frames.clone(), large_frame.clone()).await?;
    report_writes(out, "frame", &small_frames, &large_frame)?;
    report_framed_reads(out, &run, &small, &large)?;
    Ok(())
}

/// What the receiver saw: the size and bytes of each read, for both phases.
struct Exchange {
    small_reads: Vec<Vec<u8>>,
    large_reads: Vec<Vec<u8>>,
}

/// Sends `small` as separate writes, then `large` in one, to a receiver on loopback that
/// pauses before reading the small ones and reads the large one in `LARGE_READ` pieces.
async fn exchange(small: Vec<Vec<u8>>, large: Vec<u8>) -> io::Result<Exchange> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (go_on, go) = oneshot::channel::<()>();
    let small_total: usize = small.iter().map(Vec::len).sum();
    let large_total = large.len();

    let sender = tokio::spawn(async move {
        let mut stream = TcpStream::connect(addr).await?;
        for message in &small {
            stream.write_all(message).await?;
        }
        let _ = go.await;
        stream.write_all(&large).await?;
        stream.shutdown().await
    });

    let (mut stream, _) = listener.accept().await?;
    tokio::time::sleep(RECEIVER_PAUSE).await;
    let small_reads = read_pieces(&mut stream, SMALL_READ, small_total).await?;
    let _ = go_on.send(());
    let large_reads = read_pieces(&mut stream, LARGE_READ, large_total).await?;
    sender.await.map_err(io::Error::other)??;
    Ok(Exchange {
        small_reads,
        large_reads,
    })
}

/// Reads with a `piece`-byte buffer until `total` bytes have come, recording every read.
async fn read_pieces(
    stream: &mut TcpStream,
    piece: usize,
    total: usize,
) -> io::Result<Vec<Vec<u8>>> {
    let mut reads = Vec::new();
    let mut buf = vec![0u8; piece];
    let mut got = 0;
    while got < total {
        let n = stream.read(&mut buf[..piece.min(total - got)]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        got += n;
        reads.push(buf[..n].to_vec());
    }
    Ok(reads)
}

fn report_writes(
    out: &mut impl Write,
    what: &str,
    small: &[Vec<u8>],
    large: &[u8],
) -> io::Result<()> {
    writeln!(
        out,
        "sender, {} separate writes, back to back:",
        small.len()
    )?;
    for (i, message) in small.iter().enumerate() {
        writeln!(
            out,
            "  {what} #{}: {:>6} bytes{}",
            i + 1,
            message.len(),
            show(message)
        )?;
    }
    writeln!(out, "sender, then one large write:")?;
    writeln!(
        out,
        "  {what} #{}: {:>6} bytes",
        small.len() + 1,
        large.len()
    )?;
    Ok(())
}

fn report_raw_reads(out: &mut impl Write, run: &Exchange) -> io::Result<()> {
    writeln!(
        out,
        "receiver, after a {} ms pause, reading {SMALL_READ} bytes at a time:",
        RECEIVER_PAUSE.as_millis()
    )?;
    for (i, read) in run.small_reads.iter().enumerate() {
        writeln!(
            out,
            "  read #{}: {:>6} bytes{}",
            i + 1,
            read.len(),
            show(read)
        )?;
    }
    writeln!(
        out,
        "  => {} messages came out of {} read(s); nothing marks where one ends and the next begins.",
        SMALL.len(),
        run.small_reads.len()
    )?;
    writeln!(out, "receiver, reading up to {LARGE_READ} bytes at a time:")?;
    for (i, read) in run.large_reads.iter().enumerate() {
        writeln!(out, "  read #{}: {:>6} bytes", i + 1, read.len())?;
    }
    writeln!(
        out,
        "  => 1 message came out of {} read(s); one recv() would have returned a fragment.",
        run.large_reads.len()
    )?;
    Ok(())
}

fn report_framed_reads(
    out: &mut impl Write,
    run: &Exchange,
    small: &[Vec<u8>],
    large: &[u8],
) -> io::Result<()> {
    let mut decoder = Decoder::new(Limits::default());
    let mut buf = BytesMut::new();
    let mut frames: Vec<(String, Vec<u8>)> = Vec::new();

    writeln!(
        out,
        "receiver, same pause, same {SMALL_READ}-byte reads, each fed to a sockit decoder:"
    )?;
    for (i, read) in run.small_reads.iter().enumerate() {
        writeln!(out, "  read #{}: {:>6} bytes", i + 1, read.len())?;
        feed(out, &mut decoder, &mut buf, read, &mut frames)?;
    }
    writeln!(out, "receiver, same {LARGE_READ}-byte reads:")?;
    for (i, read) in run.large_reads.iter().enumerate() {
        writeln!(out, "  read #{}: {:>6} bytes", i + 1, read.len())?;
        feed(out, &mut decoder, &mut buf, read, &mut frames)?;
    }
    let sent: Vec<&[u8]> = small.iter().map(Vec::as_slice).chain([large]).collect();
    let intact =
        frames.len() == sent.len() && frames.iter().zip(&sent).all(|((_, got), want)| got == want);
    writeln!(
        out,
        "  => {} messages sent, {} frames decoded, {}.",
        sent.len(),
        frames.len(),
        if intact {
            "every one whole and byte-for-byte identical"
        } else {
            "BUT THEY DIFFER from what was sent"
        }
    )?;
    Ok(())
}

/// Feeds one read to the decoder and reports every frame it completes.
fn feed(
    out: &mut impl Write,
    decoder: &mut Decoder,
    buf: &mut BytesMut,
    read: &[u8],
    frames: &mut Vec<(String, Vec<u8>)>,
) -> io::Result<()> {
    buf.extend_from_slice(read);
    while let Some(event) = decoder.decode(buf).map_err(io::Error::from)? {
        match event {
            Event::Header(header) => {
                let json = String::from_utf8_lossy(header.json()).into_owned();
                frames.push((json, Vec::new()));
            }
            Event::Body(chunk) => frames
                .last_mut()
                .expect("a body follows its header")
                .1
                .extend_from_slice(&chunk),
        }
        let (json, body) = frames.last().expect("just pushed");
        if decoder.body_remaining() == 0 {
            writeln!(
                out,
                "      frame #{} complete: header {json}, body {} bytes{}",
                frames.len(),
                body.len(),
                show(body)
            )?;
        }
    }
    if decoder.body_remaining() > 0 {
        let (_, body) = frames.last().expect("a body is in progress");
        writeln!(
            out,
            "      frame #{} in progress: {} of {} body bytes so far",
            frames.len(),
            body.len(),
            body.len() as u64 + decoder.body_remaining()
        )?;
    }
    Ok(())
}

fn encode_echo(body: &[u8]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    let mut header = HeaderWriter::new(&mut buf);
    Request::Echo.write(&mut header);
    header
        .finish(body.len() as u64)
        .expect("a small header always encodes");
    buf.extend_from_slice(body);
    buf.to_vec()
}

fn large_message() -> Vec<u8> {
    b"0123456789abcdefghijklmnopqrstuvwxyz"
        .iter()
        .copied()
        .cycle()
        .take(LARGE_LEN)
        .collect()
}

/// Short content as `  "escaped"` to follow a byte count; nothing for long content.
fn show(bytes: &[u8]) -> String {
    const MAX: usize = 60;
    if bytes.len() > MAX {
        return String::new();
    }
    format!("  \"{}\"", bytes.escape_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn demo_reports_real_reads_and_whole_frames() {
        let mut out = Vec::new();
        sticky(&mut out).await.unwrap();
        let report = String::from_utf8(out).unwrap();
        assert!(
            report.contains("write #1:      5 bytes  \"hello\""),
            "{report}"
        );
        assert!(report.contains("write #5: 200000 bytes"), "{report}");
        assert!(
            report.contains("5 messages sent, 5 frames decoded, every one whole"),
            "{report}"
        );
        assert!(report.contains("body 200000 bytes"), "{report}");
    }
}
