//! The framed protocol over TLS, on real sockets: every operation and pipelining through an
//! encrypted stream; whom a client trusts (a pinned fingerprint, a CA made by `openssl`, the
//! known-servers file); plain and TLS peers meeting each other; and a machine in the middle
//! that cannot reuse a key login.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{frame, read_reply, TestServer};
use sockit::auth::keys::Identity;
use sockit::auth::users::{hash_password, Account, UsersFile};
use sockit::client::{Connect, SaveOptions, Target, Tls};
use sockit::config::TlsIdentity;
use sockit::proto::ErrorCode;
use sockit::server::ServiceKind;
use sockit::tls::{
    Fingerprint, KnownServers, KnownServersError, ServerIdentity, Trust, TrustError,
};
use sockit::{Client, ClientError, OutputStream};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

const PASSWORD: &str = "correct horse battery staple";

/// A server with only the framed listener over TLS (and `users`, when given).
async fn tls_server(users: Option<PathBuf>) -> TestServer {
    TestServer::start_with(|config| {
        config.listeners[0].service = ServiceKind::FramedTls;
        config.users = users;
    })
    .await
}

fn tls_addr(server: &TestServer) -> String {
    server.addr(ServiceKind::FramedTls).to_string()
}

/// A client pinned to the server's certificate.
async fn pinned_client(server: &TestServer) -> Client<Tls> {
    let trust = Trust::Fingerprint(server.fingerprint.expect("a TLS server"));
    Client::connect_with(Tls::new(&tls_addr(server), trust).unwrap())
        .await
        .unwrap()
}

/// A users file with `alice`, who has [`PASSWORD`] and `key`.
fn users_file(dir: &Path, key: &Identity) -> PathBuf {
    let mut file = UsersFile::default();
    file.users.insert(
        "alice".into(),
        Account {
            password: Some(hash_password(PASSWORD).unwrap()),
            keys: vec![key.public_key("alice@test").to_string()],
        },
    );
    let path = dir.join("users.toml");
    file.save(&path).unwrap();
    path
}

#[tokio::test]
async fn every_file_operation_works_over_tls() {
    let server = tls_server(None).await;
    let mut client = pinned_client(&server).await;
    client.ping().await.unwrap();
    assert_eq!(&client.echo(b"over tls").await.unwrap()[..], b"over tls");

    // A body far larger than a TLS record, both ways.
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..6_000_000u32).map(|i| (i * 31 % 251) as u8).collect();
    let local = dir.path().join("big");
    std::fs::write(&local, &data).unwrap();
    let put = client
        .put_file(&local, "big", false, &mut |_| {})
        .await
        .unwrap();
    assert_eq!(put.hash, blake3::hash(&data).to_hex().to_string());
    assert_eq!(std::fs::read(server.root().join("big")).unwrap(), data);

    let out = dir.path().join("back");
    let target = Target::resolve(Some(&out), "big", false).unwrap();
    client
        .get_to("big", &target, SaveOptions::default(), &mut |_, _| {})
        .await
        .unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), data);

    let names: Vec<_> = client
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|file| file.name)
        .collect();
    assert_eq!(names, ["big"]);
    client.rename("big", "moved", false).await.unwrap();
    let moved = client.stat("moved", None).await.unwrap();
    assert_eq!(moved.length, Some(data.len() as u64));
    client.delete("moved").await.unwrap();
    assert!(!client.stat("moved", None).await.unwrap().exists);
}

#[tokio::test]
async fn pipelined_requests_come_back_in_order_over_tls() {
    let server = tls_server(None).await;
    let mut client = pinned_client(&server).await;
    let bodies: Vec<Vec<u8>> = (0..500u32)
        .map(|i| {
            format!("request {i}")
                .repeat(1 + i as usize % 40)
                .into_bytes()
        })
        .collect();
    for body in &bodies {
        client
            .queue(&sockit::proto::message::Request::Echo, body)
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
    for body in &bodies {
        let reply = client.read_reply().await.unwrap();
        assert_eq!(&reply.body[..], &body[..]);
    }
}

#[tokio::test]
async fn key_login_and_exec_work_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let key = Identity::generate().unwrap();
    let server = tls_server(Some(users_file(dir.path(), &key))).await;
    let mut client = pinned_client(&server).await;
    client.login_key("alice", &key).await.unwrap();
    let mut stdout = Vec::new();
    let outcome = client
        .exec("echo encrypted; exit 3", None, |stream, data| {
            assert_eq!(stream, OutputStream::Stdout);
            stdout.extend_from_slice(data);
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(stdout, b"encrypted\n");
    assert_eq!(outcome.exit, sockit::Exit::Code(3));
    // A reconnection binds the new TLS session, and logs in again by itself.
    client.reconnect().await.unwrap();
    client.exec(":", None, |_, _| Ok(())).await.unwrap();
}

#[tokio::test]
async fn plain_frames_on_the_tls_port_get_tls_required_then_the_connection_closes() {
    let server = tls_server(None).await;
    let mut stream = TcpStream::connect(tls_addr(&server)).await.unwrap();
    stream
        .write_all(&frame(r#"{"op":"ping","id":7}"#, b""))
        .await
        .unwrap();
    let (header, body) = read_reply(&mut stream).await;
    assert_eq!(header["ok"], false);
    assert_eq!(header["code"], "tls_required");
    assert!(body.is_empty());
    common::assert_closed(&mut stream).await;
}

#[tokio::test]
async fn a_plain_frame_whose_length_starts_like_a_tls_record_still_gets_tls_required() {
    let server = tls_server(None).await;
    let mut stream = TcpStream::connect(tls_addr(&server)).await.unwrap();
    // A 790-byte header: its length prefix is 16 03 00 00, the first two bytes of a TLS record.
    let padding = "x".repeat(790 - r#"{"op":"ping","pad":""}"#.len());
    let header = format!(r#"{{"op":"ping","pad":"{padding}"}}"#);
    assert_eq!(header.len(), 790);
    stream.write_all(&frame(&header, b"")).await.unwrap();
    let (reply, _) = read_reply(&mut stream).await;
    assert_eq!(reply["code"], "tls_required", "{reply}");
}

/// TCP to the server, saying nothing of where it leads: as a connection through a proxy would.
struct Opaque(sockit::client::Tcp);

impl Connect for Opaque {
    type Stream = TcpStream;

    async fn connect(&self) -> Result<TcpStream, ClientError> {
        self.0.connect().await
    }
}

#[tokio::test]
async fn a_password_is_not_sent_in_the_clear_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let key = Identity::generate().unwrap();
    let users = users_file(dir.path(), &key);
    let server = TestServer::start_with(|config| config.users = Some(users)).await;
    let tcp = sockit::client::Tcp::new(&server.tcp().to_string());
    let mut client = Client::connect_with(Opaque(tcp)).await.unwrap();
    assert!(!client.is_private());
    let err = client.login_password("alice", PASSWORD).await.unwrap_err();
    assert!(matches!(err, ClientError::ClearPassword { .. }), "{err:?}");
    assert!(err.to_string().contains("in the clear"), "{err}");
    // Nothing was sent: the connection is still in step, and allowed, the same login works.
    client.ping().await.unwrap();
    client.allow_clear_passwords(true);
    client.login_password("alice", PASSWORD).await.unwrap();

    // Loopback and TLS are private.
    assert!(Client::connect(&server.tcp().to_string())
        .await
        .unwrap()
        .is_private());
    let tls = tls_server(Some(users_file(dir.path(), &key))).await;
    let mut pinned = pinned_client(&tls).await;
    assert!(pinned.is_private());
    pinned.login_password("alice", PASSWORD).await.unwrap();
}

#[tokio::test]
async fn a_tls_client_at_a_plain_server_fails_at_once_saying_so() {
    let server = TestServer::start().await;
    let started = Instant::now();
    let trust = Trust::Fingerprint(Fingerprint::of(b"anything"));
    let err = Client::connect_with(Tls::new(&server.tcp().to_string(), trust).unwrap())
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        matches!(&err, ClientError::Tls(tls) if matches!(**tls, TrustError::NotTls { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("does not speak TLS"), "{err}");
}

#[tokio::test]
async fn a_certificate_other_than_the_pinned_one_is_refused() {
    let server = tls_server(None).await;
    let pinned = Fingerprint::of(b"some other certificate");
    let err =
        Client::connect_with(Tls::new(&tls_addr(&server), Trust::Fingerprint(pinned)).unwrap())
            .await
            .unwrap_err();
    let ClientError::Tls(tls) = &err else {
        panic!("{err:?}")
    };
    match &**tls {
        TrustError::NotPinned {
            pinned: asked,
            presented,
            ..
        } => {
            assert_eq!(*asked, pinned);
            assert_eq!(Some(*presented), server.fingerprint);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn first_use_records_the_server_and_a_changed_certificate_is_refused() {
    let server = tls_server(None).await;
    let dir = tempfile::tempdir().unwrap();
    let known = KnownServers::at(dir.path().join("known_servers"));
    let addr = tls_addr(&server);
    let connect = || async {
        let tls = Tls::new(&addr, Trust::FirstUse(known.clone())).unwrap();
        Client::connect_with(tls).await
    };
    let mut client = connect().await.unwrap();
    client.ping().await.unwrap();
    let recorded = std::fs::read_to_string(known.path()).unwrap();
    assert_eq!(
        recorded,
        format!("{addr} {}\n", server.fingerprint.unwrap())
    );
    connect().await.unwrap().ping().await.unwrap();

    // The same address now presents another certificate.
    let other = Fingerprint::of(b"the certificate that was there before");
    std::fs::write(known.path(), format!("# kept by hand\n{addr} {other}\n")).unwrap();
    let err = connect().await.unwrap_err();
    let ClientError::Tls(tls) = &err else {
        panic!("{err:?}")
    };
    match &**tls {
        TrustError::Known(KnownServersError::Changed { line, recorded, .. }) => {
            assert_eq!(*line, 2);
            assert_eq!(*recorded, other);
        }
        other => panic!("{other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains("known_servers line 2"), "{message}");
}

/// `openssl`, or a loud skip.
fn openssl() -> bool {
    let found = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|out| out.status.success());
    if !found {
        common::skip("no `openssl` to make a CA and a server certificate");
    }
    found
}

fn run_openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(output.status.success(), "openssl {args:?}: {output:?}");
}

/// A CA (`name.pem`) and a certificate for `localhost` it issued (`name-server.pem`, key
/// `name-server.key`), made by `openssl` in `dir`.
fn openssl_ca(dir: &Path, name: &str) {
    let (ca_key, ca_pem) = (format!("{name}.key"), format!("{name}.pem"));
    let (key, csr, pem) = (
        format!("{name}-server.key"),
        format!("{name}-server.csr"),
        format!("{name}-server.pem"),
    );
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        &ca_key,
        "-out",
        &ca_pem,
        "-days",
        "2",
        "-subj",
        "/CN=sockit test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    run_openssl(dir, &ca);
    let mut request = vec!["req"];
    request.extend(ec);
    request.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=localhost"]);
    run_openssl(dir, &request);
    let ext = dir.join(format!("{name}.ext"));
    std::fs::write(
        &ext,
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run_openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            ext.to_str().unwrap(),
        ],
    );
}

#[tokio::test]
async fn a_ca_issued_certificate_is_trusted_by_its_ca_and_host_name_only() {
    if !openssl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    openssl_ca(dir.path(), "ca");
    openssl_ca(dir.path(), "stranger");
    let (cert, key) = (
        dir.path().join("ca-server.pem"),
        dir.path().join("ca-server.key"),
    );
    let server = TestServer::start_with(|config| {
        config.listeners[0].service = ServiceKind::FramedTls;
        config.tls = TlsIdentity::Files { cert, key };
    })
    .await;
    let port = server.addr(ServiceKind::FramedTls).port();
    let ca = Trust::Ca(dir.path().join("ca.pem"));

    let tls = Tls::new(&format!("localhost:{port}"), ca.clone()).unwrap();
    Client::connect_with(tls)
        .await
        .unwrap()
        .ping()
        .await
        .unwrap();

    // The right CA, the wrong name; the right name, another CA.
    for (addr, trust) in [
        (format!("127.0.0.1:{port}"), ca),
        (
            format!("localhost:{port}"),
            Trust::Ca(dir.path().join("stranger.pem")),
        ),
    ] {
        let err = Client::connect_with(Tls::new(&addr, trust).unwrap())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ClientError::Tls(tls) if matches!(**tls, TrustError::Handshake { .. })),
            "{addr}: {err:?}"
        );
    }
}

/// A machine in the middle: it accepts TLS with a certificate of its own (which the client has
/// been made to pin) and relays everything to the real server over a second TLS session.
async fn relay(server: &TestServer) -> (String, Fingerprint) {
    let dir = tempfile::tempdir().unwrap();
    let (identity, _) = ServerIdentity::kept_in(dir.path()).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(identity.server_config().unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let upstream = Arc::new(
        Tls::new(
            &tls_addr(server),
            Trust::Fingerprint(server.fingerprint.unwrap()),
        )
        .unwrap(),
    );
    tokio::spawn(async move {
        let _keep = dir;
        while let Ok((client, _)) = listener.accept().await {
            let (acceptor, upstream) = (acceptor.clone(), Arc::clone(&upstream));
            tokio::spawn(async move {
                let mut client = acceptor.accept(client).await.unwrap();
                let mut server = upstream.connect().await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    (addr, identity.fingerprint())
}

#[tokio::test]
async fn a_key_login_relayed_by_a_machine_in_the_middle_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = Identity::generate().unwrap();
    let server = tls_server(Some(users_file(dir.path(), &key))).await;
    let (relay_addr, relay_fingerprint) = relay(&server).await;

    // The relay works: requests that need no login pass through it.
    let tls = Tls::new(&relay_addr, Trust::Fingerprint(relay_fingerprint)).unwrap();
    let mut through_relay = Client::connect_with(tls).await.unwrap();
    through_relay.ping().await.unwrap();
    // The proof the client signs is bound to its TLS session with the relay, not the relay's
    // session with the server.
    let err = through_relay.login_key("alice", &key).await.unwrap_err();
    assert_eq!(err.remote_code(), Some(ErrorCode::Unauthorized), "{err}");

    // The same key, straight to the server, logs in.
    pinned_client(&server)
        .await
        .login_key("alice", &key)
        .await
        .unwrap();
}
