//! What an upload reads, end to end over real loopback sockets: `/proc` files, FIFOs (with a
//! writer that comes late), character devices, directories, and regular files that change
//! while they are read. Everything local lives in a temp dir; the only outside file read is
//! `/proc/self/status`.

mod common;

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, SystemTime};

use common::TestServer;
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use sockit::client::{Source, SourceError, SourceKind};
use sockit::{Client, ClientError};

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(37).wrapping_add(seed))
        .collect()
}

fn blake3_hex(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

async fn client(server: &TestServer) -> Client {
    Client::connect(&server.tcp().to_string()).await.unwrap()
}

fn partials(root: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(root.join(".sockit/partial"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect()
}

/// A FIFO in `dir`.
fn fifo(dir: &Path) -> PathBuf {
    let path = dir.join("fifo");
    nix::unistd::mkfifo(&path, Mode::from_bits_truncate(0o600)).unwrap();
    path
}

/// Opens `fifo` for writing (waiting for its reader) after `delay`, writes `data` in uneven
/// pieces and closes it.
fn write_fifo_later(fifo: PathBuf, data: Vec<u8>, delay: Duration) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        let mut writer = OpenOptions::new().write(true).open(&fifo).unwrap();
        let mut rest = &data[..];
        let mut piece = 1;
        while !rest.is_empty() {
            let (now, after) = rest.split_at(piece.min(rest.len()));
            writer.write_all(now).unwrap();
            rest = after;
            piece = piece * 7 + 3;
        }
    })
}

#[tokio::test]
async fn a_proc_file_is_read_to_its_end_not_stored_empty() {
    let server = TestServer::start().await;
    let source = Source::open(Path::new("/proc/self/status")).await.unwrap();
    assert_eq!(source.kind(), SourceKind::Stream);
    assert_eq!(source.length(), None);
    let put = client(&server)
        .await
        .put_source(&source, "status", false, &mut |_| {})
        .await
        .unwrap();
    let stored = std::fs::read(server.root().join("status")).unwrap();
    assert!(stored.starts_with(b"Name:"), "{stored:?}");
    assert_eq!(put.length, stored.len() as u64);
    assert_eq!(put.hash, blake3_hex(&stored));
    assert!(!put.changed);
}

#[tokio::test]
async fn a_fifo_is_streamed_byte_for_byte() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let fifo = fifo(dir.path());
    let data = pattern(2 * 1024 * 1024 + 333, 1);
    let writer = write_fifo_later(fifo.clone(), data.clone(), Duration::ZERO);
    let put = client(&server)
        .await
        .put_file(&fifo, "from-fifo", false, &mut |_| {})
        .await
        .unwrap();
    writer.join().unwrap();
    assert_eq!(put.length, data.len() as u64);
    assert_eq!(put.hash, blake3_hex(&data));
    assert!(std::fs::read(server.root().join("from-fifo")).unwrap() == data);
    assert!(partials(server.root()).is_empty());
}

#[tokio::test]
async fn a_fifo_whose_writer_comes_late_is_waited_for_off_the_runtime() {
    // The test runtime has one thread, which also runs the server: an open that blocked it
    // would stop the ticker below (and everything else) until the writer came.
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let fifo = fifo(dir.path());
    let mut client = client(&server).await;
    let ticks = Arc::new(AtomicUsize::new(0));
    let ticker = tokio::spawn({
        let ticks = Arc::clone(&ticks);
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                ticks.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let data = b"late, but here\n".to_vec();
    let writer = write_fifo_later(fifo.clone(), data.clone(), Duration::from_millis(1200));
    let put = client
        .put_file(&fifo, "late", false, &mut |_| {})
        .await
        .unwrap();
    ticker.abort();
    writer.join().unwrap();
    assert!(
        ticks.load(Ordering::Relaxed) >= 10,
        "the runtime was blocked while the FIFO waited for its writer ({} ticks)",
        ticks.load(Ordering::Relaxed)
    );
    assert_eq!(put.length, data.len() as u64);
    assert_eq!(std::fs::read(server.root().join("late")).unwrap(), data);
}

#[tokio::test]
async fn a_connection_the_server_closed_while_a_fifo_waited_is_made_again() {
    let server = TestServer::start_with(|config| {
        config.header_timeout = Duration::from_millis(300);
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let fifo = fifo(dir.path());
    // Connected before the source is opened, as `sockit put` is; the server gives up on the
    // silent connection long before the writer comes.
    let mut client = client(&server).await;
    let writer = write_fifo_later(
        fifo.clone(),
        b"worth the wait".to_vec(),
        Duration::from_secs(1),
    );
    let put = client
        .put_file(&fifo, "patient", false, &mut |_| {})
        .await
        .unwrap();
    writer.join().unwrap();
    assert_eq!(put.length, 14);
    assert_eq!(
        std::fs::read(server.root().join("patient")).unwrap(),
        b"worth the wait"
    );
}

#[tokio::test]
async fn each_read_of_a_stream_is_sent_at_once() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let fifo = fifo(dir.path());
    let (sent, progressed) = mpsc::channel::<u64>();
    // The writer sends 10 bytes and waits until the client has sent them before it goes on:
    // a client that waited to fill a buffer would never get there.
    let writer = std::thread::spawn({
        let fifo = fifo.clone();
        move || {
            let mut writer = OpenOptions::new().write(true).open(&fifo).unwrap();
            writer.write_all(b"0123456789").unwrap();
            let waited = std::time::Instant::now();
            while progressed
                .recv_timeout(Duration::from_secs(10))
                .expect("the first 10 bytes were sent")
                < 10
            {}
            writer.write_all(b"abc").unwrap();
            waited.elapsed()
        }
    });
    let put = client(&server)
        .await
        .put_file(&fifo, "paced", false, &mut |done| {
            let _ = sent.send(done);
        })
        .await
        .unwrap();
    writer.join().unwrap();
    assert_eq!(put.length, 13);
    assert_eq!(
        std::fs::read(server.root().join("paced")).unwrap(),
        b"0123456789abc"
    );
}

#[tokio::test]
async fn a_character_device_is_an_empty_stream_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let null = dir.path().join("null");
    let dev = makedev(1, 3);
    if let Err(err) = mknod(&null, SFlag::S_IFCHR, Mode::from_bits_truncate(0o600), dev) {
        common::skip(&format!("mknod: {err} (needs root)"));
        return;
    }
    let server = TestServer::start().await;
    let source = Source::open(&null).await.unwrap();
    assert_eq!(source.kind(), SourceKind::Stream);
    let mut client = client(&server).await;
    let put = tokio::time::timeout(
        Duration::from_secs(10),
        client.put_source(&source, "null", false, &mut |_| {}),
    )
    .await
    .expect("no hang")
    .unwrap();
    assert_eq!(
        (put.length, put.hash.as_str()),
        (0, blake3_hex(b"").as_str())
    );
    assert_eq!(std::fs::read(server.root().join("null")).unwrap(), b"");
}

#[tokio::test]
async fn a_directory_is_refused_in_words() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut client = client(&server).await;
    let err = client
        .put_file(dir.path(), "dir", false, &mut |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            ClientError::Source {
                source: SourceError::Directory,
                ..
            }
        ),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.starts_with(&dir.path().display().to_string())
            && message.contains("is a directory"),
        "{message}"
    );
    assert!(!server.root().join("dir").exists());
    client.ping().await.unwrap();
}

#[tokio::test]
async fn a_file_that_grew_after_it_was_opened_is_stored_as_it_was_and_reported() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("growing.log");
    let first = pattern(1_500_000, 2);
    std::fs::write(&path, &first).unwrap();
    let source = Source::open(&path).await.unwrap();
    assert_eq!(
        (source.kind(), source.length()),
        (SourceKind::File, Some(first.len() as u64))
    );
    OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(&pattern(100_000, 3))
        .unwrap();
    let put = client(&server)
        .await
        .put_source(&source, "growing.log", false, &mut |_| {})
        .await
        .unwrap();
    assert!(put.changed, "the growth was not noticed");
    assert_eq!(put.length, first.len() as u64);
    assert_eq!(put.hash, blake3_hex(&first));
    assert!(std::fs::read(server.root().join("growing.log")).unwrap() == first);
}

#[tokio::test]
async fn a_file_rewritten_in_place_is_reported_changed() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("same-size");
    std::fs::write(&path, b"before").unwrap();
    // An old modification time, so that the rewrite surely changes it.
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000))
        .unwrap();
    drop(file);
    let source = Source::open(&path).await.unwrap();
    std::fs::write(&path, b"after!").unwrap();
    let put = client(&server)
        .await
        .put_source(&source, "same-size", false, &mut |_| {})
        .await
        .unwrap();
    assert!(put.changed, "the rewrite was not noticed");
    assert_eq!(put.length, 6);

    // An unchanged file is not reported.
    let quiet = dir.path().join("quiet");
    std::fs::write(&quiet, b"still").unwrap();
    let put = client(&server)
        .await
        .put_file(&quiet, "quiet", false, &mut |_| {})
        .await
        .unwrap();
    assert!(!put.changed);
}

#[tokio::test]
async fn a_file_that_shrank_while_being_sent_fails_naming_it() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shrinking.bin");
    std::fs::write(&path, pattern(8_000_000, 4)).unwrap();
    let source = Source::open(&path).await.unwrap();
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(3_000_000)
        .unwrap();
    let mut client = client(&server).await;
    let err = client
        .put_source(&source, "shrinking.bin", false, &mut |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            ClientError::Source {
                source: SourceError::Shrank {
                    read: 3_000_000,
                    expected: 8_000_000
                },
                ..
            }
        ),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.starts_with(&path.display().to_string()) && message.contains("shrank"),
        "{message}"
    );
    assert!(!server.root().join("shrinking.bin").exists());
    // Nothing was stored, and nothing is kept either: the megabytes that arrived would
    // otherwise wait as a partial for a resume that cannot come.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !partials(server.root()).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "partial kept: {:?}",
            partials(server.root())
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    client.ping().await.unwrap();
}

#[tokio::test]
async fn a_name_taken_while_a_stream_was_sent_is_exists_in_the_clients_words() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let fifo = fifo(dir.path());
    let (release, released) = mpsc::channel::<()>();
    let writer = std::thread::spawn({
        let fifo = fifo.clone();
        move || {
            let mut writer = OpenOptions::new().write(true).open(&fifo).unwrap();
            writer.write_all(b"the loser's bytes").unwrap();
            released.recv().unwrap();
        }
    });
    let addr = server.tcp().to_string();
    let upload = tokio::spawn({
        let fifo = fifo.clone();
        async move {
            let mut client = Client::connect(&addr).await.unwrap();
            client.put_file(&fifo, "race", false, &mut |_| {}).await
        }
    });
    // The stream's upload has begun on the server: the name was free when it was checked.
    let root = server.root().to_path_buf();
    for _ in 0..500 {
        if !partials(&root).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        partials(&root).len(),
        1,
        "the stream's upload did not begin"
    );
    let winner = dir.path().join("winner");
    std::fs::write(&winner, b"the winner's bytes").unwrap();
    client(&server)
        .await
        .put_file(&winner, "race", false, &mut |_| {})
        .await
        .unwrap();
    release.send(()).unwrap();
    writer.join().unwrap();
    let err = upload.await.unwrap().unwrap_err();
    assert_eq!(
        err.remote_code(),
        Some(sockit::proto::ErrorCode::Exists),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("a file named \"race\" already exists on the server"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(root.join("race")).unwrap(),
        b"the winner's bytes"
    );
    assert!(partials(&root).is_empty());
}
