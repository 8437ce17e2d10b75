//! Durable history (`--store file:PATH`), with the built binary as a child process: restart,
//! and SIGKILL at random moments under concurrent publishers.

mod common;

use common::{Serve, publish, publisher_token, tempdir};
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
        Some(409),
        "ids from before the restart are still known"
    );
    let all = history_after(&hub.addr, "earliest");
    assert_eq!(all.len(), 31);
    assert_eq!(all.last().map(String::as_str), Some("r31"));
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
