//! `sockit bench` counts what it claims: exact request counts against a real `sockit serve`,
//! and exact errors and verified requests against servers written here that corrupt, refuse,
//! drop or close on purpose.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Serve, SOCKIT};
use serde_json::Value;

/// Runs `sockit bench ARGS --json` and returns its one line of JSON, after checking that the
/// line has every field and that `rate` is exactly `requests / seconds`.
fn bench_json(args: &[&str], env: &[(&str, &str)]) -> Value {
    let output = Command::new(SOCKIT)
        .arg("bench")
        .arg(args[0])
        .arg("--json") // before any `--`, after which words are a remote command's
        .args(&args[1..])
        .envs(env.iter().copied())
        .env_remove("SOCKIT_IDENTITY")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(output.status.success(), "{args:?}: {output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let json: Value = serde_json::from_str(&stdout).unwrap();
    for field in [
        "requests",
        "errors",
        "bytes",
        "seconds",
        "rate",
        "p50_ms",
        "p99_ms",
        "max_ms",
        "cpu_us_per_request",
    ] {
        assert!(json.get(field).is_some(), "{field} missing: {json}");
    }
    let requests = json["requests"].as_u64().unwrap();
    let seconds = json["seconds"].as_f64().unwrap();
    assert!(seconds > 0.0, "{json}");
    // Unrounded: equal but for the last bit JSON's decimal form may cost.
    let rate = json["rate"].as_f64().unwrap();
    let expected = requests as f64 / seconds;
    assert!((rate - expected).abs() <= expected * 1e-15, "{json}");
    if requests > 0 {
        let [p50, p99, max] = ["p50_ms", "p99_ms", "max_ms"].map(|key| json[key].as_f64().unwrap());
        assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{json}");
    }
    json
}

/// `(requests, errors, bytes)` of a report.
fn counts(json: &Value) -> (u64, u64, u64) {
    let get = |key: &str| json[key].as_u64().unwrap();
    (get("requests"), get("errors"), get("bytes"))
}

#[test]
fn echo_makes_exactly_n_verified_requests_over_several_connections() {
    let serve = Serve::start(&[]);
    let json = bench_json(
        &[
            "echo",
            "--server",
            &serve.tcp(),
            "-n",
            "1001",
            "-c",
            "3",
            "-P",
            "8",
        ],
        &[],
    );
    assert_eq!(counts(&json), (1001, 0, 1001 * 32), "{json}");
    assert_eq!(json["workload"], "echo");
    let json = bench_json(
        &["echo", "--server", &serve.tcp(), "-n", "7", "-d", "1000"],
        &[],
    );
    assert_eq!(counts(&json), (7, 0, 7000), "{json}");
    // 16 MiB asked in flight: sent in windows, so that neither end blocks on its writes.
    let json = bench_json(
        &[
            "echo",
            "--server",
            &serve.tcp(),
            "-n",
            "300",
            "-P",
            "256",
            "-d",
            "65536",
            "--reply-timeout",
            "3",
        ],
        &[],
    );
    assert_eq!(counts(&json), (300, 0, 300 * 65536), "{json}");
}

#[test]
fn echo_with_a_duration_runs_that_long_and_no_longer() {
    let serve = Serve::start(&[]);
    let started = Instant::now();
    let json = bench_json(
        &[
            "echo",
            "--server",
            &serve.tcp(),
            "--duration",
            "1",
            "-c",
            "2",
            "-P",
            "4",
        ],
        &[],
    );
    let seconds = json["seconds"].as_f64().unwrap();
    assert!((1.0..3.0).contains(&seconds), "{json}");
    assert!(started.elapsed() < Duration::from_secs(20));
    let (requests, errors, bytes) = counts(&json);
    assert!(requests > 0, "{json}");
    assert_eq!((errors, bytes), (0, requests * 32), "{json}");
}

/// What the broken echo server does with its connections' requests.
#[derive(Clone, Copy)]
enum AtTenth {
    /// Closes the connection without a reply.
    Close,
    /// Never replies, and keeps the connection open.
    Silent,
}

/// A framed echo server that misbehaves on purpose. On every connection, request number
/// `i` (from 1) gets: at 3, the body of request 2 (a reply to the wrong request); at 4 and 8,
/// its body with the last byte changed; at 6, an error reply; at 10, `at_tenth`; otherwise its
/// own body. So every ten requests on a connection make 5 verified replies and 5 errors.
fn broken_echo_server(at_tenth: AtTenth) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(1000) {
            let Ok(stream) = stream else { return };
            std::thread::spawn(move || serve_broken(stream, at_tenth));
        }
    });
    addr
}

fn serve_broken(mut stream: TcpStream, at_tenth: AtTenth) {
    let mut previous = Vec::new();
    for i in 1.. {
        let Some(body) = read_request(&mut stream) else {
            return;
        };
        let reply = match i {
            3 => Some(previous.clone()),
            4 | 8 => {
                let mut body = body.clone();
                if let Some(last) = body.last_mut() {
                    *last ^= 0x20;
                }
                Some(body)
            }
            6 => None,
            10 => match at_tenth {
                AtTenth::Close => return,
                AtTenth::Silent => {
                    std::thread::sleep(Duration::from_secs(30));
                    return;
                }
            },
            _ => Some(body.clone()),
        };
        let header = match &reply {
            Some(body) => format!(r#"{{"ok":true,"size":{}}}"#, body.len()),
            None => r#"{"ok":false,"code":"bad_request","error":"on purpose"}"#.to_owned(),
        };
        let mut frame = (header.len() as i32).to_le_bytes().to_vec();
        frame.extend_from_slice(header.as_bytes());
        frame.extend_from_slice(reply.as_deref().unwrap_or_default());
        if stream.write_all(&frame).is_err() {
            return;
        }
        previous = body;
    }
}

/// Reads one request frame (`i32 LE` header length, JSON header, body of `size` bytes).
fn read_request(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0; 4];
    stream.read_exact(&mut len).ok()?;
    let len = usize::try_from(i32::from_le_bytes(len))
        .ok()
        .filter(|&len| len <= 4096)?;
    let mut header = vec![0; len];
    stream.read_exact(&mut header).ok()?;
    let header: Value = serde_json::from_slice(&header).ok()?;
    assert_eq!(header["op"], "echo", "{header}");
    let size = header["size"].as_u64().unwrap_or(0);
    assert!(size <= 1 << 20);
    let mut body = vec![0; size as usize];
    stream.read_exact(&mut body).ok()?;
    Some(body)
}

#[test]
fn echo_counts_each_wrong_refused_or_lost_reply_as_one_error_and_goes_on() {
    let addr = broken_echo_server(AtTenth::Close);
    // Ten connections of ten requests: 5 verified and 5 errors on each.
    for pipeline in ["1", "5"] {
        let json = bench_json(
            &["echo", "--server", &addr, "-n", "100", "-P", pipeline],
            &[],
        );
        assert_eq!(counts(&json), (50, 50, 50 * 32), "-P {pipeline}: {json}");
    }
    // Nine whole connections (45 and 45), then requests 1 to 5 of a tenth: 3 and 4 fail.
    let json = bench_json(&["echo", "--server", &addr, "-n", "95"], &[]);
    assert_eq!(counts(&json), (48, 47, 48 * 32), "{json}");
}

#[test]
fn echo_counts_a_reply_that_never_comes_as_one_error() {
    let addr = broken_echo_server(AtTenth::Silent);
    let json = bench_json(
        &[
            "echo",
            "--server",
            &addr,
            "-n",
            "20",
            "-P",
            "2",
            "--reply-timeout",
            "0.3",
        ],
        &[],
    );
    assert_eq!(counts(&json), (10, 10, 10 * 32), "{json}");
}

#[test]
fn udp_counts_round_trips_exactly() {
    let serve = Serve::start(&["--udp-echo", "127.0.0.1:0"]);
    let addr = serve.addr("udp-echo").to_string();
    let json = bench_json(&["udp", "--server", &addr, "-n", "50", "-c", "2"], &[]);
    assert_eq!(counts(&json), (50, 0, 50 * 32), "{json}");
}

/// A UDP echo that upper-cases like `--udp-echo`, but drops every 5th datagram and changes
/// a byte of every 7th reply.
fn broken_udp_echo() -> String {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut buf = [0; 2048];
        for i in 1..=1000 {
            let Ok((len, from)) = socket.recv_from(&mut buf) else {
                return;
            };
            let reply = &mut buf[..len];
            reply.make_ascii_uppercase();
            if i % 5 == 0 {
                continue;
            }
            if i % 7 == 0 {
                reply[len - 1] = b'!';
            }
            let _ = socket.send_to(reply, from);
        }
    });
    addr
}

#[test]
fn udp_counts_dropped_and_wrong_replies_as_errors() {
    let addr = broken_udp_echo();
    // Of 20: 5, 10, 15 and 20 dropped, 7 and 14 wrong.
    let json = bench_json(
        &[
            "udp",
            "--server",
            &addr,
            "-n",
            "20",
            "--reply-timeout",
            "0.2",
        ],
        &[],
    );
    assert_eq!(counts(&json), (14, 6, 14 * 32), "{json}");
}

/// A UDP echo that upper-cases, but answers only once it holds `batch` datagrams, and then
/// answers them last first: only a client with `batch` in flight gets every reply.
fn batching_udp_echo(batch: usize) -> String {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let addr = socket.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        let mut buf = [0; 2048];
        while let Ok((len, from)) = socket.recv_from(&mut buf) {
            held.push((buf[..len].to_ascii_uppercase(), from));
            if held.len() == batch {
                for (reply, to) in held.drain(..).rev() {
                    let _ = socket.send_to(&reply, to);
                }
            }
        }
    });
    addr
}

#[test]
fn udp_keeps_its_window_in_flight_and_counts_replies_in_any_order() {
    let addr = batching_udp_echo(8);
    let json = bench_json(
        &["udp", "--server", &addr, "-n", "32", "--window", "8"],
        &[],
    );
    assert_eq!(counts(&json), (32, 0, 32 * 32), "{json}");
    // With fewer in flight, the server never answers.
    let addr = batching_udp_echo(8);
    let json = bench_json(
        &[
            "udp",
            "--server",
            &addr,
            "-n",
            "7",
            "--window",
            "7",
            "--reply-timeout",
            "0.2",
        ],
        &[],
    );
    assert_eq!(counts(&json), (0, 7, 0), "{json}");
}

#[test]
fn udp_with_a_window_counts_dropped_and_wrong_replies_once_each() {
    let addr = broken_udp_echo();
    // Of 20: 5, 10, 15 and 20 dropped, 7 and 14 wrong, whatever the window.
    let json = bench_json(
        &[
            "udp",
            "--server",
            &addr,
            "-n",
            "20",
            "--window",
            "4",
            "--reply-timeout",
            "0.2",
        ],
        &[],
    );
    assert_eq!(counts(&json), (14, 6, 14 * 32), "{json}");
}

#[test]
fn udp_with_a_window_against_sockit_counts_every_round_trip() {
    let serve = Serve::start(&["--udp-echo", "127.0.0.1:0"]);
    let addr = serve.addr("udp-echo").to_string();
    let json = bench_json(
        &["udp", "--server", &addr, "-n", "200", "--window", "32"],
        &[],
    );
    assert_eq!(counts(&json), (200, 0, 200 * 32), "{json}");
}

#[test]
fn conns_holds_idle_connections_while_it_measures_pings() {
    let serve = Serve::start(&[]);
    let json = bench_json(
        &["conns", "--server", &serve.tcp(), "-c", "40", "-n", "30"],
        &[],
    );
    assert_eq!(counts(&json), (30, 0, 0), "{json}");
    assert_eq!(json["asked"], 40);
    assert_eq!(json["held"], 40);
    assert_eq!(json["held_after"], 40);
}

#[test]
fn conns_reports_how_many_idle_connections_the_server_accepted() {
    // The measuring connection takes one of the ten an address may hold.
    let serve = Serve::start(&["--max-conns-per-source", "10"]);
    let json = bench_json(
        &["conns", "--server", &serve.tcp(), "-c", "20", "-n", "10"],
        &[],
    );
    assert_eq!(counts(&json), (10, 0, 0), "{json}");
    assert_eq!(
        (json["asked"].as_u64(), json["held"].as_u64()),
        (Some(20), Some(9)),
        "{json}"
    );
    assert_eq!(json["held_after"], 9, "{json}");
}

#[test]
fn echo_over_tls_counts_exactly() {
    let serve = Serve::start(&["--tls"]);
    let addr = serve.addr("tls").to_string();
    let json = bench_json(
        &[
            "echo",
            "--server",
            &addr,
            "--fingerprint",
            serve.fingerprint(),
            "-n",
            "300",
            "-c",
            "2",
            "-P",
            "7",
        ],
        &[],
    );
    assert_eq!(counts(&json), (300, 0, 300 * 32), "{json}");
}

/// Names in the store's directory (files the store keeps for itself start with a dot).
fn stored(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| !name.starts_with('.'))
        .collect();
    names.sort();
    names
}

#[test]
fn put_and_get_count_verified_transfers_and_leave_nothing_behind() {
    let serve = Serve::start(&[]);
    let json = bench_json(
        &[
            "put",
            "--server",
            &serve.tcp(),
            "-n",
            "6",
            "-c",
            "2",
            "-d",
            "100000",
        ],
        &[],
    );
    assert_eq!(counts(&json), (6, 0, 600_000), "{json}");
    let json = bench_json(
        &[
            "get",
            "--server",
            &serve.tcp(),
            "-n",
            "5",
            "--size",
            "70000",
        ],
        &[],
    );
    assert_eq!(counts(&json), (5, 0, 350_000), "{json}");
    assert_eq!(stored(serve.root()), Vec::<String>::new());
}

const PASSWORD: &str = "a password for the bench test";

/// A users file with `alice`, made by `sockit user add`.
fn users_file(dir: &Path) -> PathBuf {
    let users = dir.join("users.toml");
    let mut add = Command::new(SOCKIT)
        .args(["user", "add", "alice", "--users"])
        .arg(&users)
        .arg("--password-stdin")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    writeln!(add.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    assert!(add.wait().unwrap().success());
    users
}

#[test]
fn exec_counts_only_runs_that_exit_with_status_0() {
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path());
    let serve = Serve::start(&["--users", users.to_str().unwrap()]);
    let env = [
        ("SOCKIT_PASSWORD", PASSWORD),
        ("XDG_CONFIG_HOME", dir.path().to_str().unwrap()),
    ];
    let addr = serve.tcp();
    let run = |words: &[&str]| {
        let mut args = vec![
            "exec", "--server", &addr, "--user", "alice", "-n", "4", "-c", "2",
        ];
        args.extend_from_slice(words);
        bench_json(&args, &env)
    };
    assert_eq!(counts(&run(&[])), (4, 0, 0));
    assert_eq!(counts(&run(&["--", "false"])), (0, 4, 0));
    assert_eq!(counts(&run(&["--", "sh", "-c", "exit 0"])), (4, 0, 0));
}

#[test]
fn the_summary_for_people_and_the_bounds_of_a_run() {
    let serve = Serve::start(&[]);
    let output = Command::new(SOCKIT)
        .args([
            "bench",
            "echo",
            "--server",
            &serve.tcp(),
            "-n",
            "5",
            "-d",
            "10",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(
        lines[0].starts_with("echo: 5 requests, 0 errors in "),
        "{stdout}"
    );
    assert!(lines[1].starts_with("latency: p50 "), "{stdout}");
    assert!(
        lines[2].starts_with("50 payload bytes verified, client CPU "),
        "{stdout}"
    );
    // A count or a duration, not both; no run longer than 600 s.
    for bad in [
        &["-n", "5", "--duration", "1"][..],
        &["--duration", "601"],
        &["--duration", "0"],
        &["-n", "0"],
    ] {
        let output = Command::new(SOCKIT)
            .args(["bench", "echo", "--server", &serve.tcp()])
            .args(bad)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{bad:?}: {output:?}");
    }
}
