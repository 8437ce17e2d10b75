//! README.md's quick start, run as written: the commands are read from the README itself, so a
//! README that stops working fails this test (its subscribe example once never received
//! anything: curl took the `{id}` of the URI template for its own URL pattern).
//!
//! Only the address (the test's hub listens on a free port, not 8080: in the commands, and as
//! `HERALD_HUB` for `herald pub`/`sub`, which default to 8080) and the path of the binary (the
//! one cargo built for this test) are substituted. Needs `curl` and `sh`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const README: &str = include_str!("../../../README.md");
const WAIT: Duration = Duration::from_secs(20);

/// The quick start's command that starts with `prefix` (continued lines joined).
fn command(prefix: &str) -> String {
    let mut lines = README.lines().skip_while(|l| !l.starts_with(prefix));
    let mut command = String::new();
    for line in lines.by_ref() {
        match line.strip_suffix('\\') {
            Some(part) => command.push_str(part),
            None => {
                command.push_str(line);
                return command;
            }
        }
    }
    panic!("README.md has no command starting with {prefix:?}");
}

/// `command` made to run here: against `url` instead of the README's port, with this build.
fn localize(command: &str, url: &str) -> String {
    command
        .replace("http://127.0.0.1:8080", url)
        .replace("target/release/herald", env!("CARGO_BIN_EXE_herald"))
}

/// Runs `command` with `sh`, the tokens exported as the README says, stdout read line by line.
fn shell(command: &str, tokens: &[(&str, &str)]) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("exec {command}")) // so that killing it kills the command
        .envs(tokens.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run sh");
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Waits for a line containing `wanted`.
fn expect_line(lines: &mpsc::Receiver<String>, wanted: &str, what: &str) {
    let deadline = std::time::Instant::now() + WAIT;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(wanted) => return,
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    panic!("{what} never printed {wanted:?}; it printed {seen:?}");
}

fn metric(url: &str, name: &str) -> Option<f64> {
    let addr = url.trim_start_matches("http://");
    let (_, body) = common::request(addr, "GET /metrics HTTP/1.1\r\n", "")?;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn the_quick_start_works_as_written() {
    // `herald serve` with embedded defaults, in a fresh directory, as a newcomer runs it.
    let dir = common::tempdir("readme");
    std::fs::create_dir_all(&dir).unwrap();
    let serve = command("cargo run --release -p herald -- serve");
    let args: Vec<&str> = serve
        .split('#')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(args[..5], ["cargo", "run", "--release", "-p", "herald"]);
    let mut hub = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(&args[6..])
        .args(["--listen", "127.0.0.1:0"])
        .current_dir(&dir)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut banner = BufReader::new(hub.stderr.take().unwrap()).lines();
    let (mut publisher, mut subscriber, mut url) = (None, None, None);
    while url.is_none() {
        let line = banner.next().expect("herald serve exited early").unwrap();
        let token = |label: &str| line.strip_prefix(label).map(|t| t.trim().to_owned());
        publisher = publisher.or(token("publisher token (24 h):"));
        subscriber = subscriber.or(token("subscriber token (24 h):"));
        url = line.strip_prefix("herald listening on ").map(str::to_owned);
    }
    std::thread::spawn(move || banner.for_each(drop));
    let (url, publisher, subscriber) = (
        url.unwrap(),
        publisher.expect("a publisher token is printed"),
        subscriber.expect("a subscriber token is printed"),
    );
    let hub_url = format!("{url}/.well-known/mercure");
    let tokens = [
        ("PUB", publisher.as_str()),
        ("SUB", subscriber.as_str()),
        ("HERALD_HUB", hub_url.as_str()),
    ];

    let (mut curl, curl_lines) = shell(&localize(&command("curl "), &url), &tokens);
    let subscribed = std::time::Instant::now();
    while metric(&url, "herald_subscribers") != Some(1.0) {
        assert!(subscribed.elapsed() < WAIT, "curl never subscribed");
        std::thread::sleep(Duration::from_millis(50));
    }

    let published = Command::new("sh")
        .arg("-c")
        .arg(localize(&command("target/release/herald pub "), &url))
        .envs(tokens)
        .output()
        .unwrap();
    assert!(
        published.status.success(),
        "{}",
        String::from_utf8_lossy(&published.stderr)
    );
    let id = String::from_utf8(published.stdout).unwrap();
    assert!(
        id.trim().starts_with("urn:uuid:"),
        "pub prints the id: {id}"
    );
    expect_line(
        &curl_lines,
        r#"data: {"title":"Dune"}"#,
        "the README's curl",
    );

    let (mut sub, sub_lines) = shell(
        &localize(&command("target/release/herald sub "), &url),
        &tokens,
    );
    expect_line(
        &sub_lines,
        r#"data: {"title":"Dune"}"#,
        "the README's herald sub",
    );

    for child in [&mut curl, &mut sub, &mut hub] {
        let _ = child.kill();
        let _ = child.wait();
    }
}
