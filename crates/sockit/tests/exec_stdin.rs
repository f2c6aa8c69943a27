//! `exec` with its standard input forwarded, over real sockets: the input reaches the command
//! while its output comes back, a command that stops reading ends cleanly, and the connection
//! stays in step for the next request.

mod common;

use std::io::Cursor;

use common::TestServer;
use sockit::auth::users::{hash_password, Account, UsersFile};
use sockit::{Client, ClientError, Exit, OutputStream};

const PASSWORD: &str = "correct horse battery staple";

/// A server whose users file has `alice` with [`PASSWORD`].
async fn server(dir: &tempfile::TempDir) -> TestServer {
    let path = dir.path().join("users.toml");
    let mut file = UsersFile::default();
    file.users.insert(
        "alice".into(),
        Account {
            password: Some(hash_password(PASSWORD).unwrap()),
            keys: Vec::new(),
        },
    );
    file.save(&path).unwrap();
    TestServer::start_with(|config| config.users = Some(path)).await
}

/// Runs `cmd` with `input`; its stdout, and how it ended.
async fn run(client: &mut Client, cmd: &str, input: &[u8]) -> (Vec<u8>, Exit) {
    let mut stdout = Vec::new();
    let outcome = client
        .exec_with_input(cmd, None, &mut Cursor::new(input), |stream, data| {
            if stream == OutputStream::Stdout {
                stdout.extend_from_slice(data);
            }
            Ok(())
        })
        .await
        .unwrap();
    (stdout, outcome.exit)
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[tokio::test]
async fn input_reaches_the_command_while_its_output_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir).await;
    let mut client = Client::connect(&server.tcp().to_string()).await.unwrap();
    client.login_password("alice", PASSWORD).await.unwrap();

    // Far more than the socket buffers hold, both ways at once: nothing may wait on the other.
    let big = data(8 << 20);
    let (echoed, exit) = run(&mut client, "cat", &big).await;
    assert_eq!(exit, Exit::Code(0));
    assert!(echoed == big, "cat gave {} bytes back", echoed.len());

    let (counted, _) = run(&mut client, "wc -c", &big).await;
    assert_eq!(
        String::from_utf8(counted).unwrap().trim(),
        big.len().to_string()
    );

    let (empty, exit) = run(&mut client, "cat; exit 7", b"").await;
    assert_eq!((empty.as_slice(), exit), (&b""[..], Exit::Code(7)));

    // A command that stops reading and ends: the rest of the input is dropped, and the
    // connection goes on.
    let (head, exit) = run(&mut client, "head -c 5", &big).await;
    assert_eq!((head.as_slice(), exit), (&big[..5], Exit::Code(0)));
    let (head, _) = run(&mut client, "exec 0<&-; echo closed", &big).await;
    assert_eq!(head, b"closed\n");
    client.ping().await.unwrap();
    let (again, _) = run(&mut client, "cat", b"still in step").await;
    assert_eq!(again, b"still in step");
}

#[tokio::test]
async fn exec_with_input_is_refused_before_login_and_the_stream_stays_in_step() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir).await;
    let mut client = Client::connect(&server.tcp().to_string()).await.unwrap();
    let refused = client
        .exec_with_input("cat", None, &mut Cursor::new(data(1 << 20)), |_, _| Ok(()))
        .await;
    assert!(
        matches!(refused, Err(ClientError::Remote { .. })),
        "{refused:?}"
    );
    client.ping().await.unwrap();
}
