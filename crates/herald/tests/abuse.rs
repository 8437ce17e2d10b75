//! The abuse tier (`scripts/test.sh abuse`): the hardening review's attacks replayed against the
//! built `herald serve` over loopback, each asserting the bound that now holds (memory growth
//! read from `/proc`, an exact subscriber's latency, `/healthz` answering, timeouts firing).
//! Each test is bounded in time (well under a minute). Ignored by the unit tier: they load the
//! machine and measure the process, so they run alone.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const KEY: &str = "abuse-tier-key";

/// `VmRSS` and `VmHWM` (peak) of a process, in bytes.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .map_or(0, |kb: u64| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

const MB: u64 = 1 << 20;

/// Opens a subscription and returns the socket once the response head arrived, with its
/// status line.
fn subscribe(addr: &str, query: &str, recv_buffer: Option<usize>) -> (TcpStream, String) {
    let stream = match recv_buffer {
        None => TcpStream::connect(addr).unwrap(),
        Some(size) => {
            let socket =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            socket.set_recv_buffer_size(size).unwrap();
            let addr: std::net::SocketAddr = addr.parse().unwrap();
            socket.connect(&addr.into()).unwrap();
            socket.into()
        }
    };
    let mut stream = stream;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /.well-known/mercure?{query} HTTP/1.1\r\nhost: {addr}\r\n\r\n"
    )
    .unwrap();
    let mut head = vec![0u8; 2048];
    let n = stream.read(&mut head).unwrap_or(0);
    let head = String::from_utf8_lossy(&head[..n]);
    let status = head.lines().next().unwrap_or("").to_owned();
    (stream, status)
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Finding 1: ten requests of 100 selectors `{a:64}` x 13 took the hub from 31 MB to 1.25 GB.
/// They are refused now. Distinct selectors of the costliest shape still allowed are charged
/// against the template budget (32 MiB here): connections that would pass it get `503`, and
/// the hub grows by about the budget, not by what clients ask for.
#[test]
#[ignore = "abuse tier: scripts/test.sh abuse"]
fn template_selectors_cannot_blow_up_memory() {
    let hub = Serve::start(KEY, &["--store", "memory", "--template-budget", "33554432"]);
    let pid = hub.child.id();
    let token = publisher_token(KEY);
    let (before, _) = memory(pid);
    let attack: Vec<String> = (0..100)
        .map(|i| format!("topic={}", encode(&format!("{}/{i}", "{a:64}".repeat(13)))))
        .collect();
    for _ in 0..10 {
        let (_, status) = subscribe(&hub.addr, &attack.join("&"), None);
        assert!(status.contains("400"), "{status}");
    }
    let mut held = Vec::new();
    let mut over_budget = 0;
    for c in 0..20 {
        let query: Vec<String> = (0..100)
            .map(|i| {
                format!(
                    "topic={}",
                    encode(&format!("{}/{c}/{i}", "{a:16}".repeat(4)))
                )
            })
            .collect();
        let (stream, status) = subscribe(&hub.addr, &query.join("&"), None);
        if status.contains("503") {
            over_budget += 1;
        } else {
            assert!(status.contains("200"), "{status}");
            held.push(stream);
        }
    }
    // Exact topics cost no template budget.
    let (_exact, status) = subscribe(&hub.addr, "topic=t", None);
    assert!(status.contains("200"), "{status}");
    for i in 0..20 {
        assert_eq!(publish(&hub.addr, &token, &format!("u{i}")), Some(200));
    }
    let (after, _) = memory(pid);
    let growth = after.saturating_sub(before);
    eprintln!(
        "template selectors: {} connections of 100 distinct templates held, {over_budget} \
         refused over budget; RSS {} MB -> {} MB",
        held.len(),
        before / MB,
        after / MB
    );
    assert!(over_budget > 0, "the budget is reached");
    assert!(!held.is_empty());
    assert!(growth < 64 * MB, "grew by {} MB", growth / MB);
}

/// Finding 3: 500 subscribers with a 4 KiB receive buffer that never read, while 1 MB updates
/// are published at 20/s, took the hub to 1.77 GB, and to 8.2 GB (peak) once they read again.
/// Here 300 such subscribers, 1 MB updates at 20/s for 10 s, then they all read: the peak stays
/// within a bound set by the configuration (history of 32 updates, the owed-bytes budget),
/// not by the number of subscribers times what they missed.
#[test]
#[ignore = "abuse tier: scripts/test.sh abuse"]
fn slow_consumers_cannot_blow_up_memory() {
    let hub = Serve::start(
        KEY,
        &[
            "--store",
            "memory",
            "--history-size",
            "32",
            "--max-body",
            "2000000",
            "--max-owed-bytes",
            "268435456",
        ],
    );
    let pid = hub.child.id();
    let token = publisher_token(KEY);
    let (before, _) = memory(pid);
    let mut slow: Vec<TcpStream> = (0..300)
        .map(|_| {
            let (stream, status) = subscribe(&hub.addr, "topic=t", Some(4096));
            assert!(status.contains("200"), "{status}");
            stream
        })
        .collect();
    let data = "x".repeat(1 << 20);
    let started = Instant::now();
    let mut published = 0;
    while started.elapsed() < Duration::from_secs(10) {
        let tick = Instant::now();
        let body = format!("topic=t&data={data}");
        assert_eq!(publish_form(&hub.addr, &token, &body), Some(200));
        published += 1;
        // /healthz answers promptly throughout.
        let health = Instant::now();
        assert_eq!(
            request(&hub.addr, "GET /healthz HTTP/1.1\r\n", "").map(|r| r.0),
            Some(200)
        );
        let took = health.elapsed();
        assert!(took < Duration::from_secs(2), "/healthz took {took:?}");
        std::thread::sleep(Duration::from_millis(50).saturating_sub(tick.elapsed()));
    }
    let (during, _) = memory(pid);
    // Now they all read, as fast as they can, for a few seconds.
    let readers: Vec<_> = slow
        .drain(..)
        .map(|mut stream| {
            std::thread::spawn(move || {
                stream
                    .set_read_timeout(Some(Duration::from_secs(3)))
                    .unwrap();
                let mut sink = vec![0u8; 1 << 16];
                let mut total = 0usize;
                while let Ok(n) = stream.read(&mut sink) {
                    if n == 0 {
                        break;
                    }
                    total += n;
                }
                total
            })
        })
        .collect();
    let read: usize = readers.into_iter().map(|r| r.join().unwrap()).sum();
    let (_, peak) = memory(pid);
    eprintln!(
        "slow consumers: {published} updates of 1 MB; RSS {} MB before, {} MB while they \
         did not read, peak {} MB; they then read {} MB in all",
        before / MB,
        during / MB,
        peak / MB,
        read as u64 / MB
    );
    // History (32 x ~2 MB of data and encoded bytes) plus the owed-bytes budget (256 MiB),
    // plus the publishes in flight: well under 1 GB, whatever the number of subscribers.
    assert!(
        peak.saturating_sub(before) < 700 * MB,
        "peak grew by {} MB",
        peak.saturating_sub(before) / MB
    );
}

/// Finding 6: with every descriptor taken by idle subscribers, `/healthz` and publishers timed
/// out. Under a low open-file limit the hub now keeps connections for them: surplus
/// subscribers get `503` at once.
#[test]
#[ignore = "abuse tier: scripts/test.sh abuse"]
fn descriptors_are_kept_for_health_checks_and_publishers() {
    // The hub raises its soft limit to the hard one, so lower the hard one for it.
    let hub = Serve::start_with_nofile(KEY, &["--store", "memory"], 600);
    let token = publisher_token(KEY);
    let mut held = Vec::new();
    let (mut ok, mut refused) = (0, 0);
    for _ in 0..600 {
        let Ok(stream) = TcpStream::connect(&hub.addr) else {
            break;
        };
        drop(stream);
        let (stream, status) = subscribe(&hub.addr, "topic=t", None);
        if status.contains("200") {
            ok += 1;
            held.push(stream);
        } else {
            assert!(status.contains("503"), "{status}");
            refused += 1;
            if refused > 20 {
                break;
            }
        }
    }
    eprintln!("descriptors: {ok} subscribers held, then {refused} refused with 503");
    // 600 descriptors - 128 for files - 64 kept = 408 subscribers.
    assert_eq!(ok, 408);
    let started = Instant::now();
    assert_eq!(
        request(&hub.addr, "GET /healthz HTTP/1.1\r\n", "").map(|r| r.0),
        Some(200)
    );
    assert_eq!(publish(&hub.addr, &token, "still-served"), Some(200));
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// Finding 5: 500 connections sending a long head a byte every 10 s were held indefinitely.
/// With a 2 s header timeout, 300 such connections are all closed within seconds, and the
/// hub's memory comes back.
#[test]
#[ignore = "abuse tier: scripts/test.sh abuse"]
fn slow_heads_are_cut_off() {
    let hub = Serve::start(KEY, &["--store", "memory", "--header-timeout", "2"]);
    let pid = hub.child.id();
    let (before, _) = memory(pid);
    let mut slow: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut stream = TcpStream::connect(&hub.addr).unwrap();
            // A first request on the keep-alive connection, then a second head that never ends.
            write!(
                stream,
                "GET /healthz HTTP/1.1\r\nhost: h\r\n\r\nGET /healthz HTTP/1.1\r\nx: "
            )
            .unwrap();
            stream
        })
        .collect();
    let started = Instant::now();
    let mut open = slow.len();
    while open > 0 && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(500));
        open = 0;
        for stream in &mut slow {
            // Keep trickling, as the attacker did; a closed connection refuses the byte.
            if stream.write_all(b"y").is_ok() {
                open += 1;
            }
        }
    }
    let (after, _) = memory(pid);
    eprintln!(
        "slow heads: all closed after {:?}; RSS {} MB -> {} MB",
        started.elapsed(),
        before / MB,
        after / MB
    );
    assert_eq!(open, 0, "every slow head is cut off");
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// A hub on the file store holding 1,248 updates of 64 KB (80 MB, more than the tail cache),
/// published by 8 publishers at once (group commit). Returns the hub and the ids in order.
fn hub_with_80_mb_on_disk(name: &str) -> (Serve, common::TestDir, Vec<String>) {
    let dir = tempdir(name);
    let store = format!("file:{}", dir.display());
    let hub = Serve::start(
        KEY,
        &[
            "--store",
            &store,
            "--history-size",
            "100000",
            "--write-timeout",
            "30",
            "--max-body",
            "200000",
        ],
    );
    let token = publisher_token(KEY);
    let data = "x".repeat(64 << 10);
    std::thread::scope(|scope| {
        for p in 0..8 {
            let (addr, token, data) = (&hub.addr, &token, &data);
            scope.spawn(move || {
                for i in 0..156 {
                    let id = format!("d{p}-{i}");
                    let body = format!("topic=t&id={id}&data={data}");
                    assert_eq!(publish_form(addr, token, &body), Some(200));
                }
            });
        }
    });
    let ids = (0..156)
        .flat_map(|i| (0..8).map(move |p| format!("d{p}-{i}")))
        .collect();
    (hub, dir, ids)
}

/// Found by the soak (bench/soak.sh): 500 slow readers resuming with `Last-Event-ID` from a
/// position only the disk still holds each read their own copy of history (1 MiB steps) and
/// held it while blocked, under a budget too large to stop them: RSS +1.2 GB. Here 300 such
/// readers (4 KiB receive buffers) resume from the same old position of 80 MB of history: the
/// owed-bytes budget and small catch-up steps bound what they hold, and the store's read cache
/// gives them one shared copy of what they read (each decoded its own before: +73 MB here).
#[test]
#[ignore = "abuse tier: scripts/test.sh abuse"]
fn slow_readers_resuming_from_disk_cannot_blow_up_memory() {
    let (hub, _dir, _) = hub_with_80_mb_on_disk("abuse-disk");
    let pid = hub.child.id();
    let (before, before_peak) = memory(pid);
    let readers: Vec<TcpStream> = (0..300)
        .map(|_| {
            let (stream, status) = subscribe(&hub.addr, "topic=t&lastEventID=d0-0", Some(4096));
            assert!(status.contains("200"), "{status}");
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_secs(5));
    let (during, peak) = memory(pid);
    let health = Instant::now();
    assert_eq!(
        request(&hub.addr, "GET /healthz HTTP/1.1\r\n", "").map(|r| r.0),
        Some(200)
    );
    eprintln!(
        "slow readers from disk: RSS {} MB (peak {} MB) after 80 MB of history; {} MB with 300 \
         readers blocked, peak {} MB; /healthz in {:?}",
        before / MB,
        before_peak / MB,
        during / MB,
        peak / MB,
        health.elapsed()
    );
    drop(readers);
    let grew = peak.saturating_sub(before_peak.max(before));
    assert!(grew < 32 * MB, "peak grew by {} MB", grew / MB);
}

/// The soak's second finding: after 500 slow readers had been served from disk and closed,
/// RSS stayed at its peak (+83 MB), because the allocator kept what they had freed. Here 200
/// readers resume from 200 different old positions (no sharing: each reads its own), block,
/// and leave; the hub must give the memory back within a few trim periods.
#[test]
#[ignore = "abuse tier: scripts/test.sh abuse"]
fn memory_freed_by_departed_readers_goes_back_to_the_system() {
    let (hub, _dir, ids) = hub_with_80_mb_on_disk("abuse-trim");
    let pid = hub.child.id();
    std::thread::sleep(Duration::from_secs(12)); // a trim after the publishes: a clean baseline
    let before = memory(pid).0;
    let readers: Vec<TcpStream> = (0..200)
        .map(|k| {
            let query = format!("topic=t&lastEventID={}", ids[k * 6]);
            let (stream, status) = subscribe(&hub.addr, &query, Some(4096));
            assert!(status.contains("200"), "{status}");
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    let during = memory(pid).0;
    drop(readers);
    let gone = Instant::now();
    let mut after = memory(pid).0;
    // What may stay: the store's read cache and block cache, which these reads filled (a
    // quarter of --store-memory each: 16 + 16 MiB) and the allocator's own slack; without
    // the trim the growth stayed (+75 MB of +77).
    while after > before + 48 * MB && gone.elapsed() < Duration::from_secs(25) {
        std::thread::sleep(Duration::from_millis(500));
        after = memory(pid).0;
    }
    eprintln!(
        "readers at distinct positions: RSS {} MB before, {} MB while they were blocked, {} MB \
         {:?} after they left",
        before / MB,
        during / MB,
        after / MB,
        gone.elapsed()
    );
    assert!(
        during > before + 32 * MB,
        "they did hold memory: {} MB",
        during / MB
    );
    assert!(
        after <= before + 48 * MB,
        "RSS stayed at {} MB after the readers left (from {} MB before them)",
        after / MB,
        before / MB
    );
}
