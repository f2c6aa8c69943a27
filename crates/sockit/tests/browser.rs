//! The page in a real browser: headless Chromium driven through chromedriver (WebDriver). It
//! logs in through the form, uploads a file through the file input and sees it listed,
//! downloads it and compares the bytes, and chats with a UDP member both ways. Outside CI,
//! without `chromium` and `chromedriver`, it says it was skipped.
//!
//! With `SOCKIT_WEB_SCREENSHOT=PATH` it also saves a screenshot of the page there (that is how
//! `docs/web.png` is made).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::{skip, TestServer, UdpMember};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sockit::auth::users::{hash_password, Account, UsersFile};
use sockit::server::ServiceKind;
use tokio::process::{Child, Command};

const PASSWORD: &str = "open sesame, but longer";
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver on a free loopback port, killed when dropped.
struct Driver {
    _child: Child,
    url: String,
    _profile: tempfile::TempDir,
}

impl Driver {
    async fn start() -> Option<Driver> {
        if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
            skip("chromium and chromedriver are needed (apt-get install chromium chromium-driver)");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Some(Driver {
            _child: child,
            url: format!("http://{addr}"),
            _profile: tempfile::tempdir().unwrap(),
        })
    }

    async fn browser(&self) -> Client {
        let profile = self._profile.path().display().to_string();
        let capabilities = json!({
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1280,900", "--no-first-run", "--disable-extensions",
                    format!("--user-data-dir={profile}"),
                ],
            }
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("a Chromium session")
    }
}

fn users_file(dir: &Path) -> PathBuf {
    let mut file = UsersFile::default();
    file.users.insert(
        "alice".into(),
        Account {
            password: Some(hash_password(PASSWORD).unwrap()),
            keys: Vec::new(),
        },
    );
    let path = dir.join("users.toml");
    file.save(&path).unwrap();
    path
}

async fn wait_css(browser: &Client, css: &str) -> fantoccini::elements::Element {
    browser
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|err| panic!("{css}: {err}"))
}

/// Waits until `script` (a function body returning a boolean) is true in the page.
async fn wait_true(browser: &Client, script: &str) {
    for _ in 0..200 {
        if browser.execute(script, vec![]).await.unwrap() == Value::Bool(true) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never true: {script}");
}

#[tokio::test]
async fn the_page_logs_in_uploads_lists_downloads_and_chats_with_udp_members() {
    let Some(driver) = Driver::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path());
    let server = TestServer::start_with(|config| {
        config.add_listener(ServiceKind::Chat, "127.0.0.1:0".parse().unwrap());
        config.add_listener(ServiceKind::Http, "127.0.0.1:0".parse().unwrap());
        config.users = Some(users);
    })
    .await;
    let base = format!("http://{}", server.addr(ServiceKind::Http));
    let browser = driver.browser().await;

    // Log in through the form.
    browser.goto(&format!("{base}/")).await.unwrap();
    wait_css(&browser, "#login-form").await;
    wait_true(
        &browser,
        "return !document.getElementById('login-panel').hidden;",
    )
    .await;
    let user = browser.find(Locator::Id("login-user")).await.unwrap();
    user.send_keys("alice").await.unwrap();
    let password = browser.find(Locator::Id("login-password")).await.unwrap();
    password.send_keys(PASSWORD).await.unwrap();
    browser
        .find(Locator::Css("#login-form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_true(
        &browser,
        "return !document.getElementById('workspace').hidden;",
    )
    .await;

    // Upload through the file input; the file is listed, stored whole, and downloads the same.
    let data: Vec<u8> = (0..700_000u32).map(|i| (i * 31 % 251) as u8).collect();
    let local = dir.path().join("from the browser.bin");
    std::fs::write(&local, &data).unwrap();
    let picker = browser.find(Locator::Id("picker")).await.unwrap();
    picker
        .send_keys(&local.display().to_string())
        .await
        .unwrap();
    let row = wait_css(&browser, "tr[data-name='from the browser.bin']").await;
    let link = row.find(Locator::Css("a")).await.unwrap();
    assert_eq!(
        link.attr("href").await.unwrap().as_deref(),
        Some("/files/from%20the%20browser.bin")
    );
    assert_eq!(
        std::fs::read(server.root().join("from the browser.bin")).unwrap(),
        data
    );
    let digest = browser
        .execute_async(
            "const done = arguments[arguments.length - 1];
             fetch(document.querySelector(\"tr[data-name='from the browser.bin'] a\").href)
               .then((r) => r.arrayBuffer())
               .then((b) => crypto.subtle.digest('SHA-256', b))
               .then((d) => done(Array.from(new Uint8Array(d)).map((x) => x.toString(16).padStart(2, '0')).join('')))
               .catch((e) => done('error: ' + e));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(digest, Value::String(hex::encode(Sha256::digest(&data))));
    wait_true(
        &browser,
        "return [...document.querySelectorAll('#uploads .done')].length === 1;",
    )
    .await;

    // Chat: a UDP member hears the page, and the page hears it.
    let udp = UdpMember::join(server.addr(ServiceKind::Chat), Duration::from_secs(20)).await;
    let udp_name = udp.name();
    browser
        .find(Locator::Id("chat-nick"))
        .await
        .unwrap()
        .send_keys("webby")
        .await
        .unwrap();
    browser
        .find(Locator::Id("chat-connect"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_true(
        &browser,
        "return !document.getElementById('chat-line').disabled;",
    )
    .await;
    let line = browser.find(Locator::Id("chat-line")).await.unwrap();
    line.send_keys("hello from chromium").await.unwrap();
    browser
        .find(Locator::Id("chat-send"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    udp.expect("<webby> hello from chromium\n").await;
    udp.send("hello page").await;
    let heard = format!("<{udp_name}> hello page");
    wait_true(
        &browser,
        &format!(
            "return [...document.querySelectorAll('#chat-lines li')].some((li) => li.textContent === {heard:?});"
        ),
    )
    .await;
    wait_true(
        &browser,
        &format!(
            "return [...document.querySelectorAll('#chat-who li')].map((li) => li.textContent).join(',') === {:?};",
            {
                let mut names = [udp_name.clone(), "webby".to_owned()];
                names.sort();
                names.join(",")
            }
        ),
    )
    .await;

    let screenshot = browser.screenshot().await.unwrap();
    assert_eq!(&screenshot[..8], b"\x89PNG\r\n\x1a\n");
    if let Some(path) = std::env::var_os("SOCKIT_WEB_SCREENSHOT") {
        std::fs::write(path, &screenshot).unwrap();
    }

    // A phone's width: one column, nothing wider than the screen.
    browser.set_window_size(390, 844).await.unwrap();
    wait_true(
        &browser,
        "return document.documentElement.scrollWidth <= window.innerWidth;",
    )
    .await;

    browser.close().await.unwrap();
    server.shutdown().await;
}
