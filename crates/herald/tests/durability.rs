//! Durable history (`--store file:PATH`), with the built binary as a child process: restart,
//! and SIGKILL at random moments under concurrent publishers.

mod common;

use common::{Serve, publish, publish_form, publisher_token, tempdir};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KEY: &str = "durability-key";

/// A hub on the file store in `dir`.
fn start_hub(dir: &Path, extra: &[&str]) -> Serve {
    let store = format!("file:{}", dir.display());
    let mut args = vec!["--store", store.as_str()];
    args.extend_from_slice(extra);
    Serve::start(KEY, &args)
}

fn token() -> String {
    publisher_token(KEY)
}

/// Every id in history after `last_event_id`, read until `quiet` passes without data.
fn history_after(addr: &str, last_event_id: &str) -> Vec<String> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    write!(
        stream,
        "GET /.well-known/mercure?topic=*&lastEventID={last_event_id} HTTP/1.1\r\nhost: {addr}\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    // Chunk-size lines never start with "id: ", so they need no decoding here.
    String::from_utf8_lossy(&raw)
        .lines()
        .filter_map(|l| l.strip_prefix("id: ").map(str::to_owned))
        .collect()
}

#[test]
fn restart_resumes_from_a_middle_id_and_positions_continue() {
    let dir = tempdir("restart");
    let token = token();
    let mut hub = start_hub(&dir, &[]);
    for i in 1..=30 {
        assert_eq!(publish(&hub.addr, &token, &format!("r{i}")), Some(200));
    }
    hub.kill("-TERM");
    let hub = start_hub(&dir, &[]);
    let expected: Vec<String> = (16..=30).map(|i| format!("r{i}")).collect();
    assert_eq!(history_after(&hub.addr, "r15"), expected);
    assert_eq!(publish(&hub.addr, &token, "r31"), Some(200));
    assert_eq!(
        publish(&hub.addr, &token, "r5"),
        Some(200),
        "a retry of an update from before the restart"
    );
    let all = history_after(&hub.addr, "earliest");
    assert_eq!(all.len(), 31, "the retry stored nothing");
    assert_eq!(all.last().map(String::as_str), Some("r31"));
    // The same id with other data is stored; the id still resumes after the earliest.
    assert_eq!(
        publish_form(&hub.addr, &token, "topic=t&data=changed&id=r5"),
        Some(200)
    );
    assert_eq!(history_after(&hub.addr, "r5").len(), 27);
}

#[test]
fn sigkill_never_loses_an_acknowledged_update() {
    let dir = tempdir("crash");
    let token = token();
    const PUBLISHERS: usize = 8;
    let mut acknowledged: Vec<Vec<String>> = vec![Vec::new(); PUBLISHERS];
    for round in 0..4 {
        let mut hub = start_hub(&dir, &["--history-size", "1000000"]);
        let acked = Arc::new(Mutex::new(vec![Vec::new(); PUBLISHERS]));
        let stop = Instant::now() + Duration::from_secs(5);
        let threads: Vec<_> = (0..PUBLISHERS)
            .map(|p| {
                let (addr, token, acked) = (hub.addr.clone(), token.clone(), acked.clone());
                std::thread::spawn(move || {
                    for k in 0.. {
                        let id = format!("c{round}-{p}-{k}");
                        match publish(&addr, &token, &id) {
                            Some(200) => acked.lock().unwrap()[p].push(id),
                            Some(status) => panic!("publish {id} answered {status}"),
                            None => return, // the hub is gone
                        }
                        if Instant::now() > stop {
                            return;
                        }
                    }
                })
            })
            .collect();
        // Kill at a random moment of each round, while publishes are in flight.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let delay = 100 + u64::from(nanos) % 700;
        eprintln!("round {round}: SIGKILL after {delay} ms");
        std::thread::sleep(Duration::from_millis(delay));
        hub.kill("-KILL");
        for t in threads {
            t.join().unwrap();
        }
        for (p, ids) in acked.lock().unwrap().iter().enumerate() {
            acknowledged[p].extend(ids.iter().cloned());
        }
    }
    let hub = start_hub(&dir, &["--history-size", "1000000"]);
    let history = history_after(&hub.addr, "earliest");
    let mut seen = std::collections::HashSet::new();
    for id in &history {
        assert!(seen.insert(id), "{id} is in history twice");
    }
    let total: usize = acknowledged.iter().map(Vec::len).sum();
    assert!(
        total > 50,
        "the test published too little to mean anything: {total}"
    );
    for (p, ids) in acknowledged.iter().enumerate() {
        // This publisher's acknowledged updates are all there, in the order it published them.
        let mine: std::collections::HashSet<&String> = ids.iter().collect();
        let in_history: Vec<&String> = history.iter().filter(|id| mine.contains(id)).collect();
        assert_eq!(
            in_history.len(),
            ids.len(),
            "publisher {p} lost acknowledged updates"
        );
        assert!(
            in_history.iter().zip(ids).all(|(a, b)| *a == b),
            "publisher {p}: order changed"
        );
    }
}

/// Publishes `n` updates of about 500 bytes from 8 concurrent publishers (so the journal fills
/// with group commits), then stops the hub cleanly. Positions are then exactly 1..=n.
fn fill(dir: &Path, n: usize) {
    let mut hub = start_hub(dir, &["--history-size", "1000000"]);
    let token = token();
    let data = "x".repeat(500);
    let threads: Vec<_> = (0..8)
        .map(|p| {
            let (addr, token, data) = (hub.addr.clone(), token.clone(), data.clone());
            std::thread::spawn(move || {
                for k in (p..n).step_by(8) {
                    let body = format!("topic=t&id=f{k}&data={data}");
                    let status = common::publish_form(&addr, &token, &body);
                    assert_eq!(status, Some(200), "publish f{k}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    hub.kill("-TERM");
}

/// Runs `herald serve` on the store in `dir`, expecting it to refuse to start: its stderr.
fn refused(dir: &Path, extra: &[&str]) -> String {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--listen", "127.0.0.1:0", "--jwt-key", KEY])
        .arg("--store")
        .arg(format!("file:{}", dir.display()))
        .args(extra)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stderr = String::new();
    for line in std::io::BufRead::lines(std::io::BufReader::new(child.stderr.take().unwrap())) {
        let line = line.unwrap();
        if line.starts_with("herald listening on") {
            let _ = child.kill();
            let _ = child.wait();
            panic!("herald started on a damaged store; it said:\n{stderr}");
        }
        stderr.push_str(&line);
        stderr.push('\n');
    }
    let status = child.wait().unwrap();
    assert!(!status.success(), "exited successfully: {stderr}");
    assert!(
        stderr.contains("--accept-history-loss"),
        "the refusal says how to go on: {stderr}"
    );
    stderr
}

/// After an accepted loss: the hub serves what is left, takes new updates, and later starts
/// without the flag. Returns what history held after the accepting start.
fn accept_then_restart(dir: &Path) -> Vec<String> {
    let token = token();
    let mut hub = start_hub(dir, &["--accept-history-loss"]);
    let left = history_after(&hub.addr, "earliest");
    assert_eq!(publish(&hub.addr, &token, "after-loss"), Some(200));
    hub.kill("-TERM");
    let hub = start_hub(dir, &[]);
    let mut expected = left.clone();
    expected.push("after-loss".into());
    assert_eq!(history_after(&hub.addr, "earliest"), expected);
    left
}

const FILLED: usize = 2000;

#[test]
fn a_truncated_journal_is_refused_until_the_loss_is_accepted() {
    let dir = tempdir("truncated");
    fill(&dir, FILLED);
    let mut journals = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "jnl") {
            // fjall preallocates journals (64 MiB of zeros): halve what is written, or
            // nothing would be cut.
            let bytes = std::fs::read(&path).unwrap();
            let used = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
            let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            file.set_len(used as u64 / 2).unwrap();
            journals += 1;
        }
    }
    assert!(journals > 0, "no journal in {}", dir.display());
    let message = refused(&dir, &[]);
    assert!(
        message.contains(&format!(
            "but {}.head records that updates up to position {FILLED} were acknowledged",
            dir.display()
        )) && message.contains("recovered positions 1..="),
        "{message}"
    );
    let left = accept_then_restart(&dir);
    assert!(
        !left.is_empty() && left.len() < FILLED,
        "{} left",
        left.len()
    );
}

#[test]
fn a_deleted_keyspace_catalogue_is_refused_until_the_loss_is_accepted() {
    let dir = tempdir("catalogue");
    fill(&dir, FILLED);
    // fjall's keyspace 0 names the others; without it, fjall deletes them all as unreferenced.
    std::fs::remove_dir_all(dir.join("keyspaces/0")).unwrap();
    let message = refused(&dir, &[]);
    assert!(
        message.contains("recovered no updates")
            && message.contains(&format!("positions 1..={FILLED} are missing")),
        "{message}"
    );
    assert_eq!(accept_then_restart(&dir), Vec::<String>::new());
}

#[test]
fn a_deleted_store_directory_is_refused_until_the_loss_is_accepted() {
    let dir = tempdir("deleted");
    fill(&dir, 100);
    std::fs::remove_dir_all(&dir).unwrap();
    let message = refused(&dir, &[]);
    assert!(
        message.contains(&format!(
            "the history store directory {} is missing, but {}.head records that updates up to \
             position 100 were acknowledged",
            dir.display(),
            dir.display()
        )),
        "{message}"
    );
    assert!(!dir.exists(), "a refused start does not make the directory");
    assert_eq!(accept_then_restart(&dir), Vec::<String>::new());
}

#[test]
fn retention_and_restarts_are_not_taken_for_loss() {
    let token = token();
    // By count, with a smaller limit on the next start, and across a SIGKILL.
    let dir = tempdir("retained");
    let mut hub = start_hub(&dir, &["--history-size", "50"]);
    for i in 1..=120 {
        assert_eq!(publish(&hub.addr, &token, &format!("k{i}")), Some(200));
    }
    std::thread::sleep(Duration::from_millis(700)); // a retention pass or two
    hub.kill("-TERM");
    let mut hub = start_hub(&dir, &["--history-size", "20"]);
    let kept = history_after(&hub.addr, "earliest");
    assert_eq!(kept.last().map(String::as_str), Some("k120"), "{kept:?}");
    std::thread::sleep(Duration::from_millis(1500)); // retention, then the record follows
    for i in 121..=130 {
        assert_eq!(publish(&hub.addr, &token, &format!("k{i}")), Some(200));
    }
    hub.kill("-KILL");
    let hub = start_hub(&dir, &["--history-size", "20"]);
    std::thread::sleep(Duration::from_millis(700)); // retention catches up on what it had not done
    let kept = history_after(&hub.addr, "earliest");
    assert_eq!(kept.first().map(String::as_str), Some("k111"), "{kept:?}");
    assert_eq!(kept.len(), 20);
    drop(hub);

    // By age: everything dropped, only the head is left.
    let dir = tempdir("aged");
    let mut hub = start_hub(&dir, &["--history-max-age", "1"]);
    for i in 1..=20 {
        assert_eq!(publish(&hub.addr, &token, &format!("a{i}")), Some(200));
    }
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(history_after(&hub.addr, "earliest"), Vec::<String>::new());
    hub.kill("-TERM");
    let hub = start_hub(&dir, &["--history-max-age", "1"]);
    assert_eq!(publish(&hub.addr, &token, "a21"), Some(200));
    assert_eq!(history_after(&hub.addr, "earliest"), ["a21"]);
}
