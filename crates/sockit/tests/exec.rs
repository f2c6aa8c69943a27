//! Accounts, login and remote commands over real sockets: who may run what, what comes back,
//! and that nothing outlives its command.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{assert_closed, frame, read_reply, send_and_read, TestServer};
use serde_json::{json, Value};
use sockit::auth::keys::Identity;
use sockit::auth::penalty::PenaltyPolicy;
use sockit::auth::users::{hash_password, Account, UsersFile};
use sockit::server::{ServiceKind, StartError};
use sockit::{Client, ClientError, Exit, OutputStream, Server, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PASSWORD: &str = "correct horse battery staple";

/// A users file with `alice` (password [`PASSWORD`] and one key) in a temporary directory.
struct Users {
    dir: tempfile::TempDir,
    alice_key: Identity,
}

impl Users {
    fn new() -> Users {
        let dir = tempfile::tempdir().unwrap();
        let alice_key = Identity::generate().unwrap();
        let mut file = UsersFile::default();
        file.users.insert(
            "alice".into(),
            Account {
                password: Some(hash_password(PASSWORD).unwrap()),
                keys: vec![alice_key.public_key("alice@test").to_string()],
            },
        );
        let users = Users { dir, alice_key };
        file.save(&users.path()).unwrap();
        users
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("users.toml")
    }

    /// A file the tests' commands create to prove that they ran.
    fn marker(&self) -> PathBuf {
        self.dir.path().join("ran")
    }

    async fn server(&self) -> TestServer {
        self.server_with(|_| {}).await
    }

    async fn server_with(&self, configure: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let path = self.path();
        TestServer::start_with(|config| {
            config.users = Some(path);
            configure(config);
        })
        .await
    }
}

async fn logged_in(server: &TestServer) -> Client {
    let mut client = Client::connect(&server.tcp().to_string()).await.unwrap();
    client.login_password("alice", PASSWORD).await.unwrap();
    client
}

/// Runs `cmd`, collecting stdout and stderr.
async fn run(client: &mut Client, cmd: &str) -> (Vec<u8>, Vec<u8>, sockit::ExecOutcome) {
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let outcome = client
        .exec(cmd, None, |stream, data| {
            match stream {
                OutputStream::Stdout => stdout.extend_from_slice(data),
                OutputStream::Stderr => stderr.extend_from_slice(data),
            }
            Ok(())
        })
        .await
        .unwrap();
    (stdout, stderr, outcome)
}

fn remote_code(result: Result<impl std::fmt::Debug, ClientError>) -> String {
    match result {
        Err(ClientError::Remote { code, .. }) => code.to_string(),
        other => panic!("expected an error reply, got {other:?}"),
    }
}

fn touch(marker: &Path) -> String {
    format!("touch '{}'", marker.display())
}

#[tokio::test]
async fn exec_is_refused_before_login_and_nothing_runs() {
    let users = Users::new();
    let server = users.server().await;
    let mut client = Client::connect(&server.tcp().to_string()).await.unwrap();
    let refused = client
        .exec(&touch(&users.marker()), None, |_, _| Ok(()))
        .await;
    assert_eq!(remote_code(refused), "unauthorized");
    // Files need a login too; ping and echo do not.
    assert_eq!(remote_code(client.list().await), "unauthorized");
    client.ping().await.unwrap();
    client.echo(b"still open").await.unwrap();
    assert!(!users.marker().exists(), "the command must not have run");
}

#[tokio::test]
async fn wrong_password_unknown_user_and_bad_keys_are_all_refused_and_nothing_runs() {
    let users = Users::new();
    let server = users.server().await;
    let addr = server.tcp().to_string();
    let stranger = Identity::generate().unwrap();

    let mut client = Client::connect(&addr).await.unwrap();
    assert_eq!(
        remote_code(client.login_password("alice", "wrong").await),
        "unauthorized"
    );
    assert_eq!(
        remote_code(client.login_password("nobody", PASSWORD).await),
        "unauthorized"
    );
    assert_eq!(
        remote_code(client.login_key("alice", &stranger).await),
        "unauthorized"
    );
    assert_eq!(
        remote_code(client.login_key("nobody", &users.alice_key).await),
        "unauthorized"
    );
    let refused = client
        .exec(&touch(&users.marker()), None, |_, _| Ok(()))
        .await;
    assert_eq!(remote_code(refused), "unauthorized");

    // The authorised public key with a signature made by another key.
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    let (reply, _) = send_and_read(&mut stream, &frame(r#"{"op":"challenge"}"#, b"")).await;
    let challenge = challenge_bytes(&reply);
    let forged = json!({
        "op": "login",
        "user": "alice",
        "key": users.alice_key.public_hex(),
        "signature": stranger.sign_login(&challenge, "alice"),
    });
    let (reply, _) = send_and_read(&mut stream, &frame(&forged.to_string(), b"")).await;
    assert_eq!(reply["code"], "unauthorized");
    let exec = json!({"op": "exec", "cmd": touch(&users.marker())}).to_string();
    let (reply, _) = send_and_read(&mut stream, &frame(&exec, b"")).await;
    assert_eq!(reply["code"], "unauthorized");
    assert!(!users.marker().exists(), "no command may have run");
}

fn challenge_bytes(reply: &Value) -> [u8; 32] {
    assert_eq!(reply["ok"], true, "{reply}");
    let mut challenge = [0u8; 32];
    hex::decode_to_slice(reply["challenge"].as_str().unwrap(), &mut challenge).unwrap();
    challenge
}

#[tokio::test]
async fn key_login_works_once_and_a_replayed_proof_does_not() {
    let users = Users::new();
    let server = users.server().await;
    let mut stream = server.connect().await;
    let (reply, _) = send_and_read(&mut stream, &frame(r#"{"op":"challenge"}"#, b"")).await;
    let challenge = challenge_bytes(&reply);
    let proof = json!({
        "op": "login",
        "user": "alice",
        "key": users.alice_key.public_key("").to_string(),
        "signature": users.alice_key.sign_login(&challenge, "alice"),
    })
    .to_string();
    let (reply, _) = send_and_read(&mut stream, &frame(&proof, b"")).await;
    assert_eq!(reply, json!({"ok": true, "user": "alice"}));
    let exec = frame(r#"{"op":"exec","cmd":"echo hi"}"#, b"");
    let (reply, body) = send_and_read(&mut stream, &exec).await;
    assert_eq!(
        (reply["stream"].as_str(), body.as_slice()),
        (Some("stdout"), &b"hi\n"[..])
    );
    let (reply, _) = read_reply(&mut stream).await;
    assert_eq!(reply["exit_code"], 0);

    // The same proof again on the same connection: its challenge is used up.
    let (reply, _) = send_and_read(&mut stream, &frame(&proof, b"")).await;
    assert_eq!(reply["code"], "bad_request", "{reply}");
    // After a new challenge, and on a new connection, the old proof is wrong.
    send_and_read(&mut stream, &frame(r#"{"op":"challenge"}"#, b"")).await;
    let (reply, _) = send_and_read(&mut stream, &frame(&proof, b"")).await;
    assert_eq!(reply["code"], "unauthorized");
    let (reply, _) = send_and_read(&mut stream, &exec).await;
    assert_eq!(
        reply["code"], "unauthorized",
        "a failed login logs the connection out"
    );

    let mut other = server.connect().await;
    send_and_read(&mut other, &frame(r#"{"op":"challenge"}"#, b"")).await;
    let (reply, _) = send_and_read(&mut other, &frame(&proof, b"")).await;
    assert_eq!(reply["code"], "unauthorized");
}

async fn failed_login(stream: &mut TcpStream, user: &str) -> (Value, Vec<u8>, Duration) {
    let request = json!({"op": "login", "user": user, "password": "nope"}).to_string();
    let started = Instant::now();
    let (reply, body) = send_and_read(stream, &frame(&request, b"")).await;
    (reply, body, started.elapsed())
}

#[tokio::test]
async fn unknown_user_and_wrong_password_get_the_same_reply_in_similar_time() {
    let users = Users::new();
    let server = users
        .server_with(|config| config.login.penalties.free_failures = 100)
        .await;
    let mut stream = server.connect().await;
    let mut times = (Vec::new(), Vec::new());
    for _ in 0..2 {
        let (known, known_body, known_time) = failed_login(&mut stream, "alice").await;
        let (unknown, unknown_body, unknown_time) = failed_login(&mut stream, "mallory").await;
        assert_eq!(known, unknown);
        assert_eq!(known_body, unknown_body);
        assert_eq!(known["code"], "unauthorized");
        times.0.push(known_time);
        times.1.push(unknown_time);
    }
    // Both run argon2: neither answer is an order of magnitude quicker than the other.
    let (known, unknown) = (times.0.iter().min().unwrap(), times.1.iter().min().unwrap());
    assert!(
        *unknown * 5 > *known && *known * 5 > *unknown,
        "known {known:?}, unknown {unknown:?}"
    );
}

#[tokio::test]
async fn twenty_bad_passwords_are_rate_limited_and_the_right_one_works_after_the_backoff() {
    let users = Users::new();
    let server = users
        .server_with(|config| {
            config.login.penalties = PenaltyPolicy {
                free_failures: 5,
                base: Duration::from_millis(200),
                max: Duration::from_millis(800),
                ..PenaltyPolicy::default()
            };
        })
        .await;
    let addr = server.tcp().to_string();
    let mut client = Client::connect(&addr).await.unwrap();
    let mut codes = Vec::new();
    for _ in 0..20 {
        let result = client.login_password("alice", "guess").await;
        let code = match &result {
            Err(ClientError::Remote { code, .. }) => code.to_string(),
            Err(ClientError::Closed) | Err(ClientError::Conn(_)) => {
                // The connection was closed after its last allowed failure.
                client = Client::connect(&addr).await.unwrap();
                continue;
            }
            other => panic!("unexpected {other:?}"),
        };
        codes.push(code);
    }
    let unauthorized = codes.iter().filter(|code| *code == "unauthorized").count();
    let limited = codes.iter().filter(|code| *code == "rate_limited").count();
    assert!(unauthorized >= 5, "{codes:?}");
    assert!(limited >= 5, "{codes:?}");

    // Locked out: even the right password is refused, with a time to wait.
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    let right = json!({"op": "login", "user": "alice", "password": PASSWORD}).to_string();
    let (reply, _) = send_and_read(&mut stream, &frame(&right, b"")).await;
    assert_eq!(reply["code"], "rate_limited", "{reply}");
    let wait = reply["retry_after"].as_f64().unwrap();
    assert!(wait > 0.0 && wait <= 0.8, "{reply}");

    tokio::time::sleep(Duration::from_secs_f64(wait + 0.05)).await;
    let (reply, _) = send_and_read(&mut stream, &frame(&right, b"")).await;
    assert_eq!(reply, json!({"ok": true, "user": "alice"}));
}

/// A connection to `server` from the loopback address `127.0.0.<host>`.
async fn connect_from(server: &TestServer, host: u8) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(([127, 0, 0, host], 0).into()).unwrap();
    socket.connect(server.tcp()).await.unwrap()
}

/// Sends 60 wrong passwords for alice at once, one per connection, each from the loopback
/// address `source(guess)`; then, once the first answer is in, the right password from
/// 127.0.0.1. Asserts that the right one is too late and that no more guesses were checked
/// than one after another would have been.
async fn parallel_guesses(source: impl Fn(usize) -> u8) {
    const GUESSES: usize = 60;
    let users = Users::new();
    // The default allowance, 5 free failures, with a first lockout long enough to outlast the
    // test on a loaded machine.
    let server = users
        .server_with(|config| {
            config.login.penalties.base = Duration::from_secs(60);
            config.login.penalties.max = Duration::from_secs(60);
        })
        .await;
    let wrong = frame(
        &json!({"op": "login", "user": "alice", "password": "guess"}).to_string(),
        b"",
    );
    let mut streams = Vec::with_capacity(GUESSES);
    for guess in 0..GUESSES {
        streams.push(connect_from(&server, source(guess)).await);
    }
    for stream in &mut streams {
        stream.write_all(&wrong).await.unwrap();
    }
    let (codes, mut replies) = tokio::sync::mpsc::unbounded_channel();
    for mut stream in streams {
        let codes = codes.clone();
        tokio::spawn(async move {
            let (reply, _) = read_reply(&mut stream).await;
            let _ = codes.send(reply["code"].as_str().unwrap_or("none").to_owned());
        });
    }
    drop(codes);
    let mut codes = vec![replies.recv().await.expect("a reply")];

    // The right password, while the guesses are still being checked: too late.
    let mut stream = connect_from(&server, 1).await;
    let right = json!({"op": "login", "user": "alice", "password": PASSWORD}).to_string();
    let (reply, _) = send_and_read(&mut stream, &frame(&right, b"")).await;
    assert_eq!(reply["code"], "rate_limited", "{reply}");

    while let Some(code) = replies.recv().await {
        codes.push(code);
    }
    assert_eq!(codes.len(), GUESSES);
    let checked = codes.iter().filter(|code| *code == "unauthorized").count();
    let limited = codes.iter().filter(|code| *code == "rate_limited").count();
    // One after another, the five free failures and the one that earns the first lockout are
    // checked; in parallel, no more.
    assert_eq!(checked, 6, "{codes:?}");
    assert_eq!(limited, GUESSES - 6, "{codes:?}");
}

#[tokio::test]
async fn parallel_guesses_from_one_address_get_no_more_checks_than_sequential_ones() {
    parallel_guesses(|_| 1).await;
}

#[tokio::test]
async fn parallel_guesses_for_one_user_from_many_addresses_get_no_more_checks_either() {
    // 127.0.0.2 to 127.0.0.61: each address fails once, the user name sixty times.
    parallel_guesses(|guess| 2 + guess as u8).await;
}

#[tokio::test]
async fn a_right_password_after_the_free_failures_gives_its_reserved_failure_back() {
    let users = Users::new();
    let server = users
        .server_with(|config| config.login.penalties.base = Duration::from_secs(60))
        .await;
    let wrong = json!({"op": "login", "user": "alice", "password": "guess"}).to_string();
    let right = json!({"op": "login", "user": "alice", "password": PASSWORD}).to_string();
    for _ in 0..5 {
        let mut stream = server.connect().await;
        let (reply, _) = send_and_read(&mut stream, &frame(&wrong, b"")).await;
        assert_eq!(reply["code"], "unauthorized", "{reply}");
    }
    // The sixth login reserves the failure that would lock the address out; being right, it
    // gives it back, and the address may go on logging in.
    for _ in 0..3 {
        let mut stream = server.connect().await;
        let (reply, _) = send_and_read(&mut stream, &frame(&right, b"")).await;
        assert_eq!(reply, json!({"ok": true, "user": "alice"}));
    }
}

#[tokio::test]
async fn a_right_password_after_a_lockout_ran_out_arms_no_lockout_for_the_next() {
    let users = Users::new();
    let server = users
        .server_with(|config| {
            config.login.penalties.base = Duration::from_millis(500);
            config.login.penalties.max = Duration::from_secs(60);
        })
        .await;
    let wrong = json!({"op": "login", "user": "alice", "password": "guess"}).to_string();
    let right = json!({"op": "login", "user": "alice", "password": PASSWORD}).to_string();
    // The five free failures and the sixth, which locks for 0.5 s.
    for _ in 0..6 {
        let mut stream = server.connect().await;
        let (reply, _) = send_and_read(&mut stream, &frame(&wrong, b"")).await;
        assert_eq!(reply["code"], "unauthorized", "{reply}");
    }
    let mut stream = server.connect().await;
    let (reply, _) = send_and_read(&mut stream, &frame(&right, b"")).await;
    assert_eq!(reply["code"], "rate_limited", "{reply}");
    let wait = reply["retry_after"].as_f64().unwrap();
    tokio::time::sleep(Duration::from_secs_f64(wait + 0.05)).await;
    // Each right login reserves the seventh failure, which would lock for 1 s, and gives it
    // back: the next, 0.1 s later, is not locked out by it.
    for attempt in 0..5 {
        let mut stream = server.connect().await;
        let (reply, _) = send_and_read(&mut stream, &frame(&right, b"")).await;
        assert_eq!(
            reply,
            json!({"ok": true, "user": "alice"}),
            "attempt {attempt}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A users file with `carol`, who has a password and no key, beside [`Users`]'s alice.
fn add_carol(users: &Users) {
    let mut file = UsersFile::load(&users.path()).unwrap();
    file.users.insert(
        "carol".into(),
        Account {
            password: Some(hash_password(PASSWORD).unwrap()),
            keys: vec![],
        },
    );
    file.save(&users.path()).unwrap();
}

#[tokio::test]
async fn a_key_that_is_not_the_users_tried_before_her_right_password_is_no_failure() {
    let users = Users::new();
    add_carol(&users);
    let server = users
        .server_with(|config| config.login.penalties.base = Duration::from_secs(60))
        .await;
    let addr = server.tcp().to_string();
    // As `sockit` does it: alice's key first, refused for carol, then carol's password; many
    // more times than the free failures.
    for run in 0..10 {
        let mut client = Client::connect(&addr).await.unwrap();
        let by_key = client.login_key("carol", &users.alice_key).await;
        assert_eq!(remote_code(by_key), "unauthorized", "run {run}");
        client
            .login_password("carol", PASSWORD)
            .await
            .unwrap_or_else(|err| panic!("run {run}: {err}"));
    }
    // And a key alone, refused, as often: never a lockout either.
    for run in 0..10 {
        let mut client = Client::connect(&addr).await.unwrap();
        let by_key = client.login_key("carol", &users.alice_key).await;
        assert_eq!(remote_code(by_key), "unauthorized", "run {run}");
    }
    let mut client = Client::connect(&addr).await.unwrap();
    client.login_password("carol", PASSWORD).await.unwrap();
}

#[tokio::test]
async fn a_key_login_with_a_bad_signature_still_counts_as_a_failure() {
    let users = Users::new();
    let server = users
        .server_with(|config| config.login.penalties.base = Duration::from_secs(60))
        .await;
    let proof = json!({
        "op": "login",
        "user": "alice",
        "key": users.alice_key.public_hex(),
        "signature": "00".repeat(64),
    })
    .to_string();
    let mut codes = Vec::new();
    for _ in 0..7 {
        let mut stream = server.connect().await;
        send_and_read(&mut stream, &frame(r#"{"op":"challenge"}"#, b"")).await;
        let (reply, _) = send_and_read(&mut stream, &frame(&proof, b"")).await;
        codes.push(reply["code"].as_str().unwrap().to_owned());
    }
    let mut expected = vec!["unauthorized"; 6];
    expected.push("rate_limited");
    assert_eq!(codes, expected);
}

#[tokio::test]
async fn a_connection_closes_after_its_allowed_failures() {
    let users = Users::new();
    let server = users
        .server_with(|config| {
            config.login.max_tries = 3;
            config.login.penalties.free_failures = 100;
        })
        .await;
    let mut stream = server.connect().await;
    let wrong = frame(r#"{"op":"login","user":"alice","password":"x"}"#, b"");
    for attempt in 1..=3 {
        let (reply, _) = send_and_read(&mut stream, &wrong).await;
        assert_eq!(reply["code"], "unauthorized");
        let closes = reply["error"].as_str().unwrap().contains("closes");
        assert_eq!(closes, attempt == 3, "{reply}");
    }
    assert_closed(&mut stream).await;
}

#[tokio::test]
async fn logging_in_after_the_grace_period_is_refused() {
    let users = Users::new();
    let server = users
        .server_with(|config| config.login.grace = Duration::from_millis(200))
        .await;
    let mut stream = server.connect().await;
    send_and_read(&mut stream, &frame(r#"{"op":"ping"}"#, b"")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let right = json!({"op": "login", "user": "alice", "password": PASSWORD}).to_string();
    let (reply, _) = send_and_read(&mut stream, &frame(&right, b"")).await;
    assert_eq!(reply["code"], "timeout", "{reply}");
    assert_closed(&mut stream).await;
}

#[tokio::test]
async fn stdout_stderr_and_the_exit_code_come_back_separately() {
    let users = Users::new();
    let server = users.server().await;
    let mut client = logged_in(&server).await;
    let (stdout, stderr, outcome) = run(&mut client, "echo out; echo err >&2; exit 3").await;
    assert_eq!(stdout, b"out\n");
    assert_eq!(stderr, b"err\n");
    assert_eq!(outcome.exit, Exit::Code(3));
    assert_eq!(outcome.status(), 3);
    assert!(!outcome.truncated && !outcome.timed_out);

    // The connection takes more commands; the environment names the user; stdin is empty.
    let (stdout, _, _) = run(&mut client, "echo $SOCKIT_USER; cat; echo end").await;
    assert_eq!(stdout, b"alice\nend\n");
    let (_, _, outcome) = run(&mut client, "kill -TERM $$").await;
    assert_eq!(outcome.exit, Exit::Signal(15));
    assert_eq!(outcome.status(), 143);
}

#[tokio::test]
async fn output_is_streamed_as_it_is_produced() {
    let users = Users::new();
    let server = users.server().await;
    let mut stream = server.connect().await;
    let login = json!({"op": "login", "user": "alice", "password": PASSWORD}).to_string();
    send_and_read(&mut stream, &frame(&login, b"")).await;
    // The command cannot go on past its first line until the test, having received that line,
    // writes to a FIFO: a first line that came only at the end never comes.
    let go = users.dir.path().join("go");
    let cmd = format!(
        "mkfifo '{0}'; echo first; read go < '{0}'; echo second",
        go.display()
    );
    let exec = json!({"op": "exec", "cmd": cmd, "id": 7}).to_string();
    let (reply, body) = send_and_read(&mut stream, &frame(&exec, b"")).await;
    assert_eq!(body, b"first\n");
    assert_eq!(reply["id"], 7);
    tokio::task::spawn_blocking(move || std::fs::write(go, b"go\n"))
        .await
        .unwrap()
        .unwrap();
    let (_, body) = read_reply(&mut stream).await;
    assert_eq!(body, b"second\n");
    let (reply, _) = read_reply(&mut stream).await;
    assert_eq!(reply["exit_code"], 0);
    assert_eq!(reply["id"], 7);
}

#[tokio::test]
async fn output_over_the_cap_is_truncated_and_the_command_killed() {
    let users = Users::new();
    let server = users
        .server_with(|config| config.exec.max_output = 1024 * 1024)
        .await;
    let mut client = logged_in(&server).await;
    let started = Instant::now();
    let (stdout, stderr, outcome) = run(&mut client, "yes").await;
    assert_eq!(stdout.len() + stderr.len(), 1024 * 1024);
    assert!(stdout.chunks(2).all(|pair| pair == b"y\n"));
    assert!(outcome.truncated);
    assert_eq!(outcome.exit, Exit::Signal(9));
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_timeout_is_honoured_and_capped_by_the_server() {
    let users = Users::new();
    let server = users
        .server_with(|config| config.exec.max_timeout = Duration::from_secs(1))
        .await;
    let mut client = logged_in(&server).await;
    let started = Instant::now();
    let outcome = client
        .exec(
            "echo before; sleep 30",
            Some(Duration::from_millis(300)),
            |_, _| Ok(()),
        )
        .await
        .unwrap();
    assert!(outcome.timed_out);
    assert_eq!(outcome.exit, Exit::Signal(9));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // Asking for longer than the server allows gets the server's limit.
    let started = Instant::now();
    let outcome = client
        .exec("sleep 30", Some(Duration::from_secs(60)), |_, _| Ok(()))
        .await
        .unwrap();
    assert!(outcome.timed_out);
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn a_huge_timeout_gets_the_servers_limit_instead_of_a_refusal() {
    let users = Users::new();
    let server = users
        .server_with(|config| config.exec.max_timeout = Duration::from_millis(500))
        .await;
    let mut stream = server.connect().await;
    let login = json!({"op": "login", "user": "alice", "password": PASSWORD}).to_string();
    send_and_read(&mut stream, &frame(&login, b"")).await;
    let started = Instant::now();
    let (reply, _) = send_and_read(
        &mut stream,
        &frame(r#"{"op":"exec","cmd":"sleep 30","timeout":1e300}"#, b""),
    )
    .await;
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["timed_out"], true, "{reply}");
    assert_eq!(reply["signal"], 9, "{reply}");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(400) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
}

/// The processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(marker) {
            found.push(format!(
                "{}: {cmdline}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    found
}

async fn wait_until_gone(marker: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = processes_with(marker);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "processes left behind: {left:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_client_that_leaves_mid_command_leaves_no_process_behind() {
    let users = Users::new();
    let server = users.server().await;
    // A number no other process uses, so the check finds only this command's processes.
    let marker = format!(
        "{}.{}",
        4000 + std::process::id() % 1000,
        Instant::now().elapsed().subsec_nanos()
    );
    let mut stream = server.connect().await;
    let login = json!({"op": "login", "user": "alice", "password": PASSWORD}).to_string();
    send_and_read(&mut stream, &frame(&login, b"")).await;
    let cmd = format!("sleep {marker} & (sleep {marker}; true) & echo started; wait");
    let exec = json!({"op": "exec", "cmd": cmd}).to_string();
    let (_, body) = send_and_read(&mut stream, &frame(&exec, b"")).await;
    assert_eq!(body, b"started\n");
    assert!(processes_with(&format!("sleep {marker}")).len() >= 2);
    drop(stream);
    wait_until_gone(&format!("sleep {marker}")).await;
}

#[tokio::test]
async fn background_children_do_not_outlive_a_finished_command() {
    let users = Users::new();
    let server = users.server().await;
    let mut client = logged_in(&server).await;
    let marker = format!("{}.5", 5000 + std::process::id() % 1000);
    let started = Instant::now();
    let (stdout, _, outcome) = run(&mut client, &format!("sleep {marker} & echo done")).await;
    assert_eq!(
        (stdout.as_slice(), outcome.exit),
        (&b"done\n"[..], Exit::Code(0))
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "did not wait for the child"
    );
    wait_until_gone(&format!("sleep {marker}")).await;
}

#[tokio::test]
async fn commands_beyond_the_limit_are_busy() {
    let users = Users::new();
    let server = users
        .server_with(|config| config.exec.max_running = 1)
        .await;
    let mut first = server.connect().await;
    let login = json!({"op": "login", "user": "alice", "password": PASSWORD}).to_string();
    send_and_read(&mut first, &frame(&login, b"")).await;
    let (_, body) = send_and_read(
        &mut first,
        &frame(r#"{"op":"exec","cmd":"echo up; sleep 30"}"#, b""),
    )
    .await;
    assert_eq!(body, b"up\n");
    let mut second = logged_in(&server).await;
    assert_eq!(
        remote_code(second.exec("true", None, |_, _| Ok(())).await),
        "busy"
    );
}

#[tokio::test]
async fn bad_exec_requests_are_refused() {
    let users = Users::new();
    let server = users.server().await;
    let mut stream = server.connect().await;
    let login = json!({"op": "login", "user": "alice", "password": PASSWORD}).to_string();
    send_and_read(&mut stream, &frame(&login, b"")).await;
    for request in [
        r#"{"op":"exec"}"#,
        r#"{"op":"exec","cmd":""}"#,
        r#"{"op":"exec","cmd":"a\u0000b"}"#,
        r#"{"op":"exec","cmd":"true","timeout":0}"#,
        r#"{"op":"exec","cmd":"true","timeout":-1}"#,
        r#"{"op":"exec","cmd":"true","timeout":"soon"}"#,
    ] {
        let (reply, _) = send_and_read(&mut stream, &frame(request, b"")).await;
        assert_eq!(reply["code"], "bad_request", "{request}: {reply}");
    }
}

#[tokio::test]
async fn without_a_users_file_exec_and_login_are_disabled_and_files_are_open() {
    let server = TestServer::start().await;
    let mut client = Client::connect(&server.tcp().to_string()).await.unwrap();
    assert_eq!(
        remote_code(client.exec("true", None, |_, _| Ok(())).await),
        "disabled"
    );
    assert_eq!(
        remote_code(client.login_password("alice", "x").await),
        "disabled"
    );
    assert_eq!(remote_code(client.challenge().await), "disabled");
    client.list().await.unwrap();
}

#[tokio::test]
async fn users_added_while_the_server_runs_can_log_in() {
    let users = Users::new();
    let server = users.server().await;
    let mut file = UsersFile::load(&users.path()).unwrap();
    file.users.insert(
        "bob".into(),
        Account {
            password: Some(hash_password("bob's password").unwrap()),
            keys: vec![],
        },
    );
    file.save(&users.path()).unwrap();
    let mut client = Client::connect(&server.tcp().to_string()).await.unwrap();
    client
        .login_password("bob", "bob's password")
        .await
        .unwrap();
    let (stdout, _, _) = run(&mut client, "echo $SOCKIT_USER").await;
    assert_eq!(stdout, b"bob\n");
}

#[tokio::test]
async fn legacy_exec_answers_one_frame_with_every_size_key() {
    let server = TestServer::start_with(|config| {
        config.add_listener(ServiceKind::LegacyExec, "127.0.0.1:0".parse().unwrap());
    })
    .await;
    let mut stream = TcpStream::connect(server.addr(ServiceKind::LegacyExec))
        .await
        .unwrap();
    stream
        .write_all(b"echo out; echo err >&2; exit 4")
        .await
        .unwrap();
    let (reply, body) = read_reply(&mut stream).await;
    assert_eq!(body, b"out\nerr\n");
    assert_eq!(reply["size"], 8);
    assert_eq!(reply["data_size"], 8);
    assert_eq!(reply["total_size"], 8);
    assert_eq!(reply["exit_code"], 4);
    stream.write_all(b"true").await.unwrap();
    let (reply, body) = read_reply(&mut stream).await;
    assert_eq!((reply["size"].clone(), body.len()), (json!(0), 0));
    stream.shutdown().await.unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
}

#[tokio::test]
async fn legacy_exec_holds_a_command_slot_until_its_whole_output_is_sent() {
    const OUTPUT: usize = 16_000_000;
    let server = TestServer::start_with(|config| {
        config.exec.max_running = 1;
        config.add_listener(ServiceKind::LegacyExec, "127.0.0.1:0".parse().unwrap());
    })
    .await;
    let addr = server.addr(ServiceKind::LegacyExec);
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(format!("head -c {OUTPUT} /dev/zero").as_bytes())
        .await
        .unwrap();
    // The reply has begun: the command is over, and its output, far more than the socket
    // buffers hold, waits for a reader that does not read.
    tokio::time::timeout(Duration::from_secs(10), slow.peek(&mut [0u8; 1]))
        .await
        .expect("the reply begins")
        .unwrap();

    let mut other = TcpStream::connect(addr).await.unwrap();
    other.write_all(b"echo hi").await.unwrap();
    let (reply, body) = read_reply(&mut other).await;
    assert_eq!(reply["exit_code"], 255, "{reply}");
    assert_eq!(body, b"sockit: 1 commands are running already\n");

    let (reply, body) = read_reply(&mut slow).await;
    assert_eq!(
        (reply["size"].as_u64(), body.len()),
        (Some(OUTPUT as u64), OUTPUT)
    );
    other.write_all(b"echo hi").await.unwrap();
    let (reply, body) = read_reply(&mut other).await;
    assert_eq!(
        (reply["exit_code"].clone(), body),
        (json!(0), b"hi\n".to_vec())
    );
}

#[tokio::test]
async fn legacy_exec_refuses_addresses_other_machines_can_reach() {
    let mut config = ServerConfig::loopback();
    let root = tempfile::tempdir().unwrap();
    config.root = root.path().to_path_buf();
    config.add_listener(ServiceKind::LegacyExec, "0.0.0.0:0".parse().unwrap());
    let err = Server::bind(config).await.unwrap_err();
    assert!(matches!(err, StartError::LegacyExecNotLoopback(_)), "{err}");
    assert!(err.to_string().contains("loopback"), "{err}");
}
