//! Load generator for framed `echo`, plain or over TLS, used by `bench/tls.py`.
//!
//! ```text
//! cargo run --release --example echo_load -- ADDR CONNS SECONDS [BYTES] [sha256:FINGERPRINT]
//! ```
//!
//! Opens CONNS connections to ADDR (loopback only; over TLS, pinned to FINGERPRINT, when one is
//! given), each sending `echo` of BYTES (default 32) and waiting for its reply, one at a time,
//! for SECONDS. Every reply is checked. Prints one line of JSON: requests, errors, seconds,
//! rate.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sockit::client::{Connect, Endpoint, Tcp, Tls};
use sockit::tls::{Fingerprint, Trust};
use sockit::Client;

async fn run<C: Connect>(mut client: Client<C>, body: Vec<u8>, until: Instant) -> (u64, u64) {
    let (mut done, mut errors) = (0, 0);
    while Instant::now() < until {
        match client.echo(&body).await {
            Ok(_) => done += 1,
            Err(_) => {
                errors += 1;
                break;
            }
        }
    }
    (done, errors)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: echo_load ADDR CONNS SECONDS [BYTES] [sha256:FINGERPRINT]");
        std::process::exit(2);
    }
    let addr: SocketAddr = args[1].parse().expect("ADDR is ip:port");
    assert!(
        addr.ip().is_loopback(),
        "the load generator only targets loopback"
    );
    let conns: usize = args[2].parse().expect("CONNS is a number");
    let seconds: f64 = args[3].parse().expect("SECONDS is a number");
    assert!(seconds > 0.0 && seconds <= 600.0, "SECONDS is at most 600");
    let bytes: usize = args.get(4).map_or(32, |n| n.parse().expect("BYTES"));
    let endpoint = match args.get(5) {
        Some(pin) => {
            let pin: Fingerprint = pin.parse().expect("a sha256: fingerprint");
            Endpoint::Tls(Tls::new(&addr.to_string(), Trust::Fingerprint(pin)).unwrap())
        }
        None => Endpoint::Tcp(Tcp::new(&addr.to_string())),
    };
    let mut clients = Vec::with_capacity(conns);
    for _ in 0..conns {
        clients.push(
            Client::connect_with(endpoint.clone())
                .await
                .expect("connect"),
        );
    }
    let body = vec![b'x'; bytes];
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|client| tokio::spawn(run(client, body.clone(), until)))
        .collect();
    let (mut requests, mut errors) = (0, 0);
    for task in tasks {
        let (done, failed) = task.await.unwrap();
        requests += done;
        errors += failed;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{{\"requests\":{requests},\"errors\":{errors},\"seconds\":{elapsed:.3},\"rate\":{:.1}}}",
        requests as f64 / elapsed
    );
}
