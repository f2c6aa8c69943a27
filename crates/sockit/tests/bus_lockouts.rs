//! Login lockouts counted in a real Redis ([`sockit::bus::SharedLockouts`]): the same rules as
//! on one server — free failures, doubling lockouts up to a cap, a success giving its failure
//! back — and a clear error, never a hang, when Redis is gone.

mod common;

use std::net::{IpAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sockit::auth::penalty::PenaltyPolicy;
use sockit::bus::{Bus, BusConfig, BusError};

/// A `redis-server` on a free loopback port with nothing kept on disk, killed when dropped.
struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Option<Redis> {
        let installed = Command::new("redis-server")
            .arg("--version")
            .output()
            .is_ok_and(|out| out.status.success());
        if !installed {
            common::skip("redis-server is not installed");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Redis {
            child,
            port,
            _dir: dir,
        })
    }

    fn bus(&self) -> Bus {
        Bus::new(&BusConfig::new(format!("redis://127.0.0.1:{}", self.port))).unwrap()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const POLICY: PenaltyPolicy = PenaltyPolicy {
    free_failures: 2,
    base: Duration::from_millis(400),
    max: Duration::from_millis(800),
    forget_after: Duration::from_secs(60),
};

const SOURCE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// The lockout `wait` is, within what a round trip to Redis and the clock's steps take.
fn about(wait: Duration, expected: Duration) -> bool {
    wait <= expected && wait + Duration::from_millis(150) >= expected
}

#[tokio::test]
async fn free_failures_then_doubling_lockouts_up_to_the_cap_and_two_servers_agree() {
    let Some(redis) = Redis::start() else { return };
    let (a, b) = (redis.bus().lockouts(), redis.bus().lockouts());
    for _ in 0..3 {
        assert!(a
            .reserve(&POLICY, SOURCE, Some("alice"))
            .await
            .unwrap()
            .is_ok());
    }
    // The third failure locked both the source and the name, on every server.
    let wait = b.reserve(&POLICY, SOURCE, None).await.unwrap().unwrap_err();
    assert!(about(wait, POLICY.base), "{wait:?}");
    let other: IpAddr = "127.0.0.2".parse().unwrap();
    let wait = b
        .reserve(&POLICY, other, Some("alice"))
        .await
        .unwrap()
        .unwrap_err();
    assert!(about(wait, POLICY.base), "locked by name: {wait:?}");
    assert!(b
        .reserve(&POLICY, other, Some("bob"))
        .await
        .unwrap()
        .is_ok());

    tokio::time::sleep(POLICY.base).await;
    assert!(b.reserve(&POLICY, SOURCE, None).await.unwrap().is_ok());
    let wait = a.reserve(&POLICY, SOURCE, None).await.unwrap().unwrap_err();
    assert!(about(wait, POLICY.base * 2), "doubled: {wait:?}");
    tokio::time::sleep(POLICY.base * 2).await;
    assert!(a.reserve(&POLICY, SOURCE, None).await.unwrap().is_ok());
    let wait = a.reserve(&POLICY, SOURCE, None).await.unwrap().unwrap_err();
    assert!(about(wait, POLICY.max), "capped: {wait:?}");
}

#[tokio::test]
async fn a_success_gives_its_failure_back_and_forgets_the_name() {
    let Some(redis) = Redis::start() else { return };
    let shared = redis.bus().lockouts();
    let mut reserved = Vec::new();
    for _ in 0..3 {
        let reservation = shared
            .reserve(&POLICY, SOURCE, Some("alice"))
            .await
            .unwrap();
        reserved.push(reservation.unwrap());
    }
    assert!(shared
        .reserve(&POLICY, SOURCE, None)
        .await
        .unwrap()
        .is_err());
    // The third was the right password after all.
    shared
        .give_back(&POLICY, SOURCE, Some("alice"), reserved[2])
        .await
        .unwrap();
    assert!(shared
        .reserve(&POLICY, SOURCE, Some("alice"))
        .await
        .unwrap()
        .is_ok());
    let wait = shared
        .reserve(&POLICY, SOURCE, None)
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        about(wait, POLICY.base),
        "the source still has its two free failures used: {wait:?}"
    );
}

#[tokio::test]
async fn a_success_after_a_lockout_arms_no_lockout_of_its_own() {
    let Some(redis) = Redis::start() else { return };
    let (a, b) = (redis.bus().lockouts(), redis.bus().lockouts());
    for _ in 0..3 {
        assert!(a.reserve(&POLICY, SOURCE, None).await.unwrap().is_ok());
    }
    tokio::time::sleep(POLICY.base).await;
    // Past the lockout, five right logins in a row: each reserves the failure that would lock
    // for twice as long, and gives it back, leaving no lockout for the next.
    for round in 0..5 {
        let server = if round % 2 == 0 { &a } else { &b };
        let reservation = server
            .reserve(&POLICY, SOURCE, Some("alice"))
            .await
            .unwrap();
        let reservation = reservation.unwrap_or_else(|wait| panic!("round {round}: {wait:?}"));
        server
            .give_back(&POLICY, SOURCE, Some("alice"), reservation)
            .await
            .unwrap();
    }
    // A wrong guess then is the fourth failure, as it would have been.
    assert!(a.reserve(&POLICY, SOURCE, None).await.unwrap().is_ok());
    let wait = b.reserve(&POLICY, SOURCE, None).await.unwrap().unwrap_err();
    assert!(about(wait, POLICY.base * 2), "{wait:?}");
}

#[tokio::test]
async fn giving_back_one_of_parallel_reservations_leaves_the_state_as_if_never_counted() {
    let Some(redis) = Redis::start() else { return };
    let shared = redis.bus().lockouts();
    let reserve = || async {
        shared
            .reserve(&POLICY, SOURCE, None)
            .await
            .unwrap()
            .map_err(|wait| {
                assert!(about(wait, POLICY.base), "{wait:?}");
            })
    };
    // One free failure, then two in flight at once: the second (the third failure) locks.
    reserve().await.unwrap();
    let first = reserve().await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = reserve().await.unwrap();
    assert!(reserve().await.is_err());
    // The first was right: the second is the second failure now, free, so no lockout.
    shared
        .give_back(&POLICY, SOURCE, None, first)
        .await
        .unwrap();
    let third = reserve()
        .await
        .expect("no lockout after the first is given back");
    assert!(reserve().await.is_err(), "the third failure locks again");
    // The second and third were right too: one failure left, so two more are free.
    for reservation in [second, third] {
        shared
            .give_back(&POLICY, SOURCE, None, reservation)
            .await
            .unwrap();
    }
    reserve().await.unwrap();
    reserve().await.unwrap();
    assert!(reserve().await.is_err());
}

#[tokio::test]
async fn giving_back_a_reservation_made_after_a_lockout_ran_out_keeps_the_later_ones() {
    let Some(redis) = Redis::start() else { return };
    let shared = redis.bus().lockouts();
    let policy = PenaltyPolicy {
        base: Duration::from_millis(200),
        max: Duration::from_secs(10),
        ..POLICY
    };
    let reserve = || async { shared.reserve(&policy, SOURCE, None).await.unwrap() };
    // Three failures lock for 0.2 s; A, after it, locks for 0.4 s; B, after that, for 0.8 s.
    for _ in 0..3 {
        reserve().await.unwrap();
    }
    tokio::time::sleep(policy.base).await;
    let a = reserve().await.unwrap();
    tokio::time::sleep(policy.base * 2).await;
    let b = reserve().await.unwrap();
    // A was right: B is the fourth failure, which locks for 0.4 s from when it was counted.
    shared.give_back(&policy, SOURCE, None, a).await.unwrap();
    let wait = reserve().await.unwrap_err();
    assert!(about(wait, policy.base * 2), "{wait:?}");
    // B was right too: three failures, whose lockout ran out long ago.
    shared.give_back(&policy, SOURCE, None, b).await.unwrap();
    assert!(reserve().await.is_ok());
}

#[tokio::test]
async fn redis_gone_is_an_error_in_time_never_a_hang() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let shared = redis.bus().lockouts();
    assert!(shared.reserve(&POLICY, SOURCE, None).await.unwrap().is_ok());
    let _ = redis.child.kill();
    let _ = redis.child.wait();
    let started = Instant::now();
    let err = shared.reserve(&POLICY, SOURCE, None).await.unwrap_err();
    assert!(matches!(err, BusError::Redis(_)), "{err:?}");
    // A second call within the second after a failed connection does not try again.
    let err = shared.reserve(&POLICY, SOURCE, None).await.unwrap_err();
    assert!(matches!(err, BusError::Waiting), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
}
