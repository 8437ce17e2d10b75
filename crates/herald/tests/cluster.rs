//! The services tier: several `herald serve` nodes sharing one engine (a real `redis-server` or
//! `nats-server -js`, started here on a free loopback port with a temporary data directory).
//! One suite, run once per backend. Ignored by the unit tier; `scripts/test.sh services` runs
//! them (`cargo nextest run -p herald --test cluster --run-ignored only`).

mod common;

use common::{
    Serve, TestDir, publish, publish_form, publisher_token, request, send_signal, tempdir,
};
use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KEY: &str = "cluster-key";

#[derive(Clone, Copy, Debug)]
enum Backend {
    Redis,
    Nats,
}

/// A running engine process on a fixed port and data directory, so it can be restarted.
struct Engine {
    backend: Backend,
    port: u16,
    dir: TestDir,
    child: Option<Child>,
}

impl Engine {
    fn start(backend: Backend, name: &str) -> Engine {
        let dir = tempdir(&format!("cluster-{backend:?}-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut engine = Engine {
            backend,
            port: free_port(),
            dir,
            child: None,
        };
        engine.spawn();
        engine
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let dir = self.dir.to_str().unwrap();
        let mut command = match self.backend {
            // Durable as the deployment guide says: AOF, fsync'd on every write.
            Backend::Redis => {
                let mut c = Command::new("redis-server");
                c.args(["--port", &port, "--bind", "127.0.0.1", "--dir", dir])
                    .args([
                        "--appendonly",
                        "yes",
                        "--appendfsync",
                        "always",
                        "--save",
                        "",
                    ]);
                c
            }
            // JetStream with file storage in `dir`, so that a restart keeps the stream.
            Backend::Nats => {
                let mut c = Command::new("nats-server");
                c.args(["-js", "-a", "127.0.0.1", "-p", &port, "-sd", dir]);
                c
            }
        };
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the {:?} server: {e}", self.backend));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "{:?} did not start",
                self.backend
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the engine cleanly (SIGTERM), as an operator restarting it would.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            send_signal(&child, "-TERM");
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        match self.backend {
            Backend::Redis => format!("redis://127.0.0.1:{}/0?stream=test", self.port),
            Backend::Nats => format!("nats://127.0.0.1:{}?stream=TEST", self.port),
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One `herald serve` node on the engine.
struct Node {
    serve: Serve,
    addr: String,
}

impl Node {
    fn start(engine: &Engine) -> Node {
        Node::start_with(engine, &["--history-size", "100000"])
    }

    fn start_with(engine: &Engine, extra: &[&str]) -> Node {
        let url = engine.url();
        let mut args = vec!["--store", url.as_str()];
        args.extend_from_slice(extra);
        let serve = Serve::start(KEY, &args);
        let addr = serve.addr.clone();
        Node { serve, addr }
    }

    fn kill(&mut self) {
        self.serve.kill("-KILL");
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn token() -> String {
    publisher_token(KEY)
}

fn ready(addr: &str) -> Option<u16> {
    request(addr, "GET /readyz HTTP/1.1\r\n", "").map(|(status, _)| status)
}

/// A live subscriber on a background thread, collecting the ids it receives.
struct Subscriber {
    ids: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Subscriber {
    /// Subscribes to every topic on `addr`, after `last_event_id` if given; returns once the
    /// response has started (so updates published after this call reach it).
    fn connect(addr: &str, last_event_id: Option<&str>) -> Subscriber {
        Subscriber::open(addr, "topic=*", last_event_id)
    }

    /// Subscribes with the given query (anonymous).
    fn connect_to(addr: &str, query: &str) -> Subscriber {
        Subscriber::open(addr, query, None)
    }

    fn open(addr: &str, query: &str, last_event_id: Option<&str>) -> Subscriber {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let resume = last_event_id
            .map(|id| format!("last-event-id: {id}\r\n"))
            .unwrap_or_default();
        write!(
            stream,
            "GET /.well-known/mercure?{query} HTTP/1.1\r\nhost: {addr}\r\n{resume}\r\n"
        )
        .unwrap();
        let ids = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let thread = {
            let (ids, stop) = (ids.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut started = Some(started_tx);
                let mut pending = String::new();
                let mut buf = [0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    match stream.read(&mut buf) {
                        Ok(0) => return,
                        Ok(n) => pending.push_str(&String::from_utf8_lossy(&buf[..n])),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
                        Err(_) => return,
                    }
                    // Chunk-size lines never start with "id: ", so they need no decoding.
                    while let Some(end) = pending.find('\n') {
                        let line: String = pending.drain(..=end).collect();
                        // The blank line after the response head: the stream has started.
                        if line == "\r\n"
                            && let Some(tx) = started.take()
                        {
                            let _ = tx.send(());
                        }
                        if let Some(id) = line.trim_end().strip_prefix("id: ") {
                            ids.lock().unwrap().push(id.to_owned());
                        }
                    }
                }
            })
        };
        started_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the subscription started");
        Subscriber {
            ids,
            stop,
            thread: Some(thread),
        }
    }

    fn ids(&self) -> Vec<String> {
        self.ids.lock().unwrap().clone()
    }

    /// Waits until `n` ids arrived (or panics after `within`).
    fn wait_for(&self, n: usize, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        loop {
            let ids = self.ids();
            if ids.len() >= n {
                return ids;
            }
            assert!(
                Instant::now() < deadline,
                "got {} of {n} updates: {ids:?}",
                ids.len(),
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Disconnects and returns what was received.
    fn close(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.ids()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Every update published concurrently on every node reaches every subscriber on every node,
/// once, in one order shared by all.
fn three_nodes_deliver_everything_once_in_one_order(backend: Backend) {
    let engine = Engine::start(backend, "fanout");
    let nodes: Vec<Node> = (0..3).map(|_| Node::start(&engine)).collect();
    let subscribers: Vec<Subscriber> = nodes
        .iter()
        .flat_map(|n| {
            [
                Subscriber::connect(&n.addr, None),
                Subscriber::connect(&n.addr, None),
            ]
        })
        .collect();
    let token = token();
    const PER_NODE: usize = 40;
    let publishers: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let (addr, token) = (node.addr.clone(), token.clone());
            std::thread::spawn(move || {
                for k in 0..PER_NODE {
                    let id = format!("n{i}-{k}");
                    assert_eq!(publish(&addr, &token, &id), Some(200), "publish {id}");
                }
            })
        })
        .collect();
    for p in publishers {
        p.join().unwrap();
    }
    let expected = 3 * PER_NODE;
    let first = subscribers[0].wait_for(expected, Duration::from_secs(20));
    let unique: HashSet<&String> = first.iter().collect();
    assert_eq!(unique.len(), expected, "no duplicates");
    for node in 0..3 {
        let mine: Vec<&String> = first
            .iter()
            .filter(|id| id.starts_with(&format!("n{node}-")))
            .collect();
        let in_order: Vec<String> = (0..PER_NODE).map(|k| format!("n{node}-{k}")).collect();
        assert_eq!(
            mine,
            in_order.iter().collect::<Vec<_>>(),
            "each publisher's order kept"
        );
    }
    for (i, s) in subscribers.into_iter().enumerate() {
        s.wait_for(expected, Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            s.close(),
            first,
            "subscriber {i} saw the same updates in the same order"
        );
    }
}

/// Cut on node A, updates published on node B, resumed on node C with `Last-Event-ID`:
/// exactly the missed updates, then live ones.
fn resume_on_another_node(backend: Backend) {
    let engine = Engine::start(backend, "resume");
    let (a, b, c) = (
        Node::start(&engine),
        Node::start(&engine),
        Node::start(&engine),
    );
    let token = token();
    let on_a = Subscriber::connect(&a.addr, None);
    for k in 0..5 {
        assert_eq!(publish(&b.addr, &token, &format!("r{k}")), Some(200));
    }
    let seen = on_a.wait_for(5, Duration::from_secs(10));
    drop(on_a.close());
    for k in 5..12 {
        assert_eq!(publish(&b.addr, &token, &format!("r{k}")), Some(200));
    }
    let on_c = Subscriber::connect(&c.addr, Some(seen.last().unwrap()));
    let missed: Vec<String> = (5..12).map(|k| format!("r{k}")).collect();
    assert_eq!(on_c.wait_for(7, Duration::from_secs(10)), missed);
    assert_eq!(publish(&a.addr, &token, "r12"), Some(200));
    let all = on_c.wait_for(8, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(on_c.close().len(), 8, "then live, no duplicate: {all:?}");
}

/// A node killed with SIGKILL under concurrent publishing loses nothing it acknowledged, and a
/// node started on the same engine afterwards serves all of it.
fn node_crash_loses_nothing_acknowledged(backend: Backend) {
    let engine = Engine::start(backend, "crash");
    let survivor = Node::start(&engine);
    let watcher = Subscriber::connect(&survivor.addr, None);
    let mut victim = Node::start(&engine);
    let token = token();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let publishers: Vec<_> = (0..4)
        .map(|p| {
            let (addr, token, acked) = (victim.addr.clone(), token.clone(), acked.clone());
            std::thread::spawn(move || {
                for k in 0.. {
                    let id = format!("k{p}-{k}");
                    match publish(&addr, &token, &id) {
                        Some(200) => acked.lock().unwrap().push(id),
                        Some(status) => panic!("publish {id} answered {status}"),
                        None => return,
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(800));
    victim.kill();
    for p in publishers {
        p.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 20,
        "publishing ran before the kill: {}",
        acked.len()
    );
    let restarted = Node::start(&engine);
    let replay = Subscriber::connect(&restarted.addr, Some("earliest"));
    let replayed: HashSet<String> = replay
        .wait_for(acked.len(), Duration::from_secs(20))
        .into_iter()
        .collect();
    let live: HashSet<String> = watcher
        .wait_for(acked.len(), Duration::from_secs(20))
        .into_iter()
        .collect();
    for id in &acked {
        assert!(
            replayed.contains(id),
            "{id} acknowledged but not in history"
        );
        assert!(
            live.contains(id),
            "{id} acknowledged but not delivered live on the survivor"
        );
    }
}

/// The engine stops while publishing: publishes answer 503 quickly, `/readyz` says not ready,
/// subscribers stay connected; once it is back, nothing acknowledged is lost and subscribers
/// get everything without a gap or a duplicate, without restarting the node.
fn engine_restart_loses_nothing_acknowledged(backend: Backend) {
    let mut engine = Engine::start(backend, "outage");
    let node = Node::start(&engine);
    let subscriber = Subscriber::connect(&node.addr, None);
    let token = token();
    let mut acked = Vec::new();
    for k in 0..20 {
        let id = format!("o{k}");
        assert_eq!(publish(&node.addr, &token, &id), Some(200));
        acked.push(id);
    }
    engine.stop();
    let started = Instant::now();
    let status = publish(&node.addr, &token, "during-outage");
    assert_eq!(status, Some(503), "a publish without the engine is refused");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "and quickly: {:?}",
        started.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while ready(&node.addr) != Some(503) {
        assert!(Instant::now() < deadline, "/readyz reports the outage");
        std::thread::sleep(Duration::from_millis(50));
    }
    engine.spawn();
    let deadline = Instant::now() + Duration::from_secs(20);
    while ready(&node.addr) != Some(200) {
        assert!(
            Instant::now() < deadline,
            "/readyz recovers without a node restart"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for k in 20..30 {
        let id = format!("o{k}");
        assert_eq!(publish(&node.addr, &token, &id), Some(200));
        acked.push(id);
    }
    let got = subscriber.wait_for(acked.len(), Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        subscriber.close(),
        acked,
        "the same subscriber, no gap, no duplicate"
    );
    assert_eq!(got.len(), acked.len());
    let replay = Subscriber::connect(&node.addr, Some("earliest"));
    assert_eq!(
        replay.wait_for(acked.len(), Duration::from_secs(10)),
        acked,
        "history kept everything acknowledged, and only that"
    );
}

/// After an engine outage, once `/readyz` says ready, the very first publish is stored and
/// delivered: every connection the node publishes on is back, not only the tail's. Two
/// outages: one nobody published through (the publishing connection died unnoticed), one with
/// a publish refused during it (the node already tried, and failed, to reconnect).
fn first_publish_after_an_outage_succeeds(backend: Backend) {
    let mut engine = Engine::start(backend, "outage-first");
    let node = Node::start(&engine);
    let subscriber = Subscriber::connect(&node.addr, None);
    let token = token();
    let publish_with_body = |id: &str| {
        let head = format!(
            "POST /.well-known/mercure HTTP/1.1\r\ncontent-type: application/x-www-form-urlencoded\r\nauthorization: Bearer {token}\r\n"
        );
        request(&node.addr, &head, &format!("topic=t&data={id}&id={id}"))
    };
    let mut acked = Vec::new();
    assert_eq!(publish(&node.addr, &token, "before"), Some(200));
    acked.push("before".to_owned());
    for (outage, publish_during) in [(0, false), (1, true)] {
        engine.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        while ready(&node.addr) != Some(503) {
            assert!(Instant::now() < deadline, "/readyz reports outage {outage}");
            std::thread::sleep(Duration::from_millis(50));
        }
        if publish_during {
            let status = publish(&node.addr, &token, &format!("during-{outage}"));
            assert_eq!(status, Some(503), "a publish without the engine is refused");
            // Long enough for the node's own reconnect attempts to have failed before the
            // engine is back.
            std::thread::sleep(Duration::from_secs(1));
        }
        engine.spawn();
        let deadline = Instant::now() + Duration::from_secs(20);
        while ready(&node.addr) != Some(200) {
            assert!(
                Instant::now() < deadline,
                "/readyz recovers after outage {outage}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let id = format!("after-{outage}");
        let answer = publish_with_body(&id);
        assert_eq!(
            answer.as_ref().map(|(status, _)| *status),
            Some(200),
            "the first publish once ready after outage {outage}: {answer:?}"
        );
        acked.push(id);
        assert_eq!(
            subscriber.wait_for(acked.len(), Duration::from_secs(10)),
            acked,
            "and it is delivered"
        );
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(subscriber.close(), acked, "nothing else, nothing twice");
}

/// The engine stops and comes back while publishers keep publishing: every publish answers
/// `200` or `503`, every acknowledged update is kept and delivered once to the subscriber that
/// stayed connected, in history's order. (A publish in flight when the engine stopped may have
/// been stored although it got `503`, the usual ambiguity of a lost reply; an identical retry
/// would store nothing twice. So history may hold refused ids, never unknown ones.)
fn engine_restart_under_concurrent_publishing(backend: Backend) {
    let mut engine = Engine::start(backend, "outage-live");
    let node = Node::start(&engine);
    let subscriber = Subscriber::connect(&node.addr, None);
    let token = token();
    let stop = Arc::new(AtomicBool::new(false));
    let publishers: Vec<_> = (0..2)
        .map(|p| {
            let (addr, token, stop) = (node.addr.clone(), token.clone(), stop.clone());
            std::thread::spawn(move || {
                let (mut acked, mut refused) = (Vec::new(), Vec::new());
                let mut k = 0;
                while !stop.load(Ordering::Relaxed) {
                    let id = format!("c{p}-{k}");
                    k += 1;
                    match publish(&addr, &token, &id) {
                        Some(200) => acked.push(id),
                        Some(503) => refused.push(id),
                        other => panic!("publish {id}: {other:?}"),
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                (acked, refused)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    engine.stop();
    std::thread::sleep(Duration::from_millis(1500));
    engine.spawn();
    let deadline = Instant::now() + Duration::from_secs(20);
    while ready(&node.addr) != Some(200) {
        assert!(Instant::now() < deadline, "/readyz recovers");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let (mut acked, mut refused) = (HashSet::new(), HashSet::new());
    for p in publishers {
        let (a, r) = p.join().unwrap();
        acked.extend(a);
        refused.extend(r);
    }
    assert!(
        !refused.is_empty(),
        "publishes during the outage were refused"
    );
    assert!(
        acked.len() > 20,
        "and accepted before and after: {}",
        acked.len()
    );
    let replay = Subscriber::connect(&node.addr, Some("earliest"));
    let history = replay.wait_for(acked.len(), Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(300));
    let history = {
        let all = replay.close();
        assert!(all.len() >= history.len());
        all
    };
    let stored: HashSet<&String> = history.iter().collect();
    assert_eq!(stored.len(), history.len(), "no id twice in history");
    for id in &acked {
        assert!(stored.contains(id), "{id} acknowledged but lost");
    }
    for id in &history {
        assert!(
            acked.contains(id) || refused.contains(id),
            "{id} was never published"
        );
    }
    let live = subscriber.wait_for(history.len(), Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(live.len(), history.len());
    assert_eq!(
        subscriber.close(),
        history,
        "live: history's order, no gap, no duplicate"
    );
}

/// A node that joins a stream with history starts live at its end: a new subscriber without
/// `Last-Event-ID` gets only what is published after it connected, also when it falls behind
/// (a queue of one update) and catches up from history.
fn a_joining_node_starts_at_the_end(backend: Backend) {
    let engine = Engine::start(backend, "join");
    let first = Node::start(&engine);
    let token = token();
    for k in 0..10 {
        assert_eq!(publish(&first.addr, &token, &format!("j{k}")), Some(200));
    }
    let second = Node::start_with(&engine, &["--history-size", "100000", "--queue-size", "1"]);
    let subscriber = Subscriber::connect(&second.addr, None);
    let publishers: Vec<_> = (0..4)
        .map(|p| {
            let (addr, token) = (first.addr.clone(), token.clone());
            std::thread::spawn(move || {
                for k in 0..10 {
                    assert_eq!(publish(&addr, &token, &format!("j{p}-{k}")), Some(200));
                }
            })
        })
        .collect();
    for p in publishers {
        p.join().unwrap();
    }
    subscriber.wait_for(40, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(200));
    let got = subscriber.close();
    assert_eq!(
        got.len(),
        40,
        "only the updates published after it joined: {got:?}"
    );
    assert!(got.iter().all(|id| id.contains('-')));
}

/// Ids may repeat (Mercure 1.0: they resolve to the earliest), across nodes too: the same
/// update again through another node is a retry and stores nothing; the same id with other
/// data is a new update; `Last-Event-ID` resumes after the earliest.
fn repeated_ids_across_the_cluster(backend: Backend) {
    let engine = Engine::start(backend, "repeated");
    let (a, b) = (Node::start(&engine), Node::start(&engine));
    let token = token();
    assert_eq!(publish(&a.addr, &token, "d1"), Some(200));
    let live = Subscriber::connect(&a.addr, None);
    assert_eq!(publish(&b.addr, &token, "d1"), Some(200), "a retry");
    assert_eq!(
        publish_form(&b.addr, &token, "topic=t&data=changed&id=d1"),
        Some(200)
    );
    assert_eq!(publish(&a.addr, &token, "after"), Some(200));
    assert_eq!(
        live.wait_for(2, Duration::from_secs(10)),
        ["d1", "after"],
        "the changed one, once; the retry is not delivered"
    );
    let resumed = Subscriber::connect(&b.addr, Some("d1"));
    assert_eq!(
        resumed.wait_for(2, Duration::from_secs(10)),
        ["d1", "after"],
        "after the earliest: the changed one and the next"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(live.close().len(), 2);
    assert_eq!(resumed.close().len(), 2);
}

/// The subscriptions API of any node lists the subscribers of every node, and their ends.
fn subscriptions_are_listed_cluster_wide(backend: Backend) {
    let engine = Engine::start(backend, "subscriptions");
    let args = ["--history-size", "100000", "--subscriptions"];
    let (a, b) = (
        Node::start_with(&engine, &args),
        Node::start_with(&engine, &args),
    );
    let api_token = {
        let out = Command::new(env!("CARGO_BIN_EXE_herald"))
            .args([
                "token",
                "--key",
                KEY,
                "--subscribe",
                "/.well-known/mercure/subscriptions{/topic}{/subscriber}",
            ])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let list = |addr: &str| -> Vec<String> {
        let head = format!(
            "GET /.well-known/mercure/subscriptions HTTP/1.1\r\nauthorization: Bearer {api_token}\r\n"
        );
        let (status, body) = request(addr, &head, "").expect("the API answers");
        assert_eq!(status, 200, "{body}");
        let list: serde_json::Value = serde_json::from_str(&body).unwrap();
        let mut topics: Vec<String> = list["subscriptions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["topic"].as_str().unwrap().to_owned())
            .collect();
        topics.sort();
        topics
    };
    let wait_for = |addr: &str, want: &[&str]| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = list(addr);
            if got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{addr} lists {got:?}, expected {want:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let on_a = Subscriber::connect_to(&a.addr, "topic=on-a");
    let on_b = Subscriber::connect_to(&b.addr, "topic=on-b");
    wait_for(&a.addr, &["on-a", "on-b"]);
    wait_for(&b.addr, &["on-a", "on-b"]);
    drop(on_a.close());
    wait_for(&b.addr, &["on-b"]);
    // A node started now learns the existing subscriptions from history.
    let c = Node::start_with(&engine, &args);
    wait_for(&c.addr, &["on-b"]);
    drop(on_b.close());
    wait_for(&c.addr, &[]);
    // A node stopped gracefully (a rolling restart) announces the end of its subscriptions
    // before it exits.
    let mut d = Node::start_with(&engine, &args);
    let on_d = Subscriber::connect_to(&d.addr, "topic=on-d");
    wait_for(&a.addr, &["on-d"]);
    d.serve.kill("-TERM");
    wait_for(&a.addr, &[]);
    drop(on_d);
}

/// Waits until replaying history from `earliest` gives exactly `want`.
fn wait_for_history(addr: &str, want: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let replay = Subscriber::connect(addr, Some("earliest"));
        std::thread::sleep(Duration::from_millis(300));
        let got = replay.close();
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "history holds {got:?}, expected {want:?}"
        );
    }
}

/// `--history-max-age`: updates older than that leave history (and resuming before them says
/// `earliest`), on every node.
fn retention_by_age(backend: Backend) {
    let engine = Engine::start(backend, "age");
    let node = Node::start_with(
        &engine,
        &["--history-size", "100000", "--history-max-age", "1"],
    );
    let token = token();
    for k in 0..3 {
        assert_eq!(publish(&node.addr, &token, &format!("old{k}")), Some(200));
    }
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(publish(&node.addr, &token, "new"), Some(200));
    wait_for_history(&node.addr, &["new"]);
}

/// `--history-size` and `--history-max-bytes`: the oldest updates beyond either leave history,
/// counted by the engine.
fn retention_by_count_and_bytes(backend: Backend) {
    let engine = Engine::start(backend, "bytes");
    // Updates of 2,000 bytes of data: three fit in 7,500 bytes with what each stores besides
    // its data, four do not.
    let node = Node::start_with(
        &engine,
        &["--history-size", "4", "--history-max-bytes", "7500"],
    );
    let token = token();
    for k in 0..6 {
        assert_eq!(publish(&node.addr, &token, &format!("s{k}")), Some(200));
    }
    wait_for_history(&node.addr, &["s2", "s3", "s4", "s5"]);
    let data = "x".repeat(2000);
    for k in 0..4 {
        let form = format!("topic=t&data={data}&id=b{k}");
        assert_eq!(publish_form(&node.addr, &token, &form), Some(200));
    }
    wait_for_history(&node.addr, &["b1", "b2", "b3"]);
}

/// Writes an entry that is not a Herald update into the engine, as a foreign program or
/// another version might, speaking the engine's own protocol.
fn inject_foreign_entry(engine: &Engine) {
    let mut stream = TcpStream::connect(("127.0.0.1", engine.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let request = match engine.backend {
        // The next position, without the counter (which must then catch up with it).
        Backend::Redis => {
            let args = ["XADD", "test", "4-0", "u", "not json"];
            let mut r = format!("*{}\r\n", args.len());
            for a in args {
                r.push_str(&format!("${}\r\n{a}\r\n", a.len()));
            }
            r
        }
        Backend::Nats => {
            "CONNECT {\"verbose\":false}\r\nPUB TEST.u.bforeign 8\r\nnot json\r\nPING\r\n"
                .to_owned()
        }
    };
    stream.write_all(request.as_bytes()).unwrap();
    // Redis answers the new entry's id; NATS its INFO, then PONG once the publish is in.
    let done = match engine.backend {
        Backend::Redis => "\r\n",
        Backend::Nats => "PONG",
    };
    let mut buf = [0u8; 512];
    let mut reply = String::new();
    while !reply.contains(done) {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "the engine closed the connection: {reply}");
        reply.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(!reply.contains("ERR"), "the engine took the entry: {reply}");
}

/// An entry that is not a Herald update (another program, another version) is skipped by
/// every node without stopping the feed, and resuming across it works. (On Redis, written
/// past the position counter: publishing goes on after it.)
fn foreign_entries_are_skipped(backend: Backend) {
    let engine = Engine::start(backend, "foreign");
    let node = Node::start(&engine);
    let live = Subscriber::connect(&node.addr, None);
    let token = token();
    for k in 0..3 {
        assert_eq!(publish(&node.addr, &token, &format!("f{k}")), Some(200));
    }
    inject_foreign_entry(&engine);
    for k in 3..6 {
        assert_eq!(publish(&node.addr, &token, &format!("f{k}")), Some(200));
    }
    let all: Vec<String> = (0..6).map(|k| format!("f{k}")).collect();
    assert_eq!(live.wait_for(6, Duration::from_secs(10)), all);
    let replay = Subscriber::connect(&node.addr, Some("f1"));
    assert_eq!(replay.wait_for(4, Duration::from_secs(10)), &all[2..]);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(replay.close().len(), 4, "and stays open, with nothing more");
    assert_eq!(ready(&node.addr), Some(200));
}

/// A streamed publish (issue 16) on one node: every event stored through the engine, in order,
/// delivered on another node.
fn a_streamed_publish_reaches_every_node(backend: Backend) {
    let engine = Engine::start(backend, "stream");
    let (a, b) = (Node::start(&engine), Node::start(&engine));
    let on_b = Subscriber::connect(&b.addr, None);
    let ids: Vec<String> = (0..50).map(|k| format!("s{k}")).collect();
    let body: String = ids
        .iter()
        .map(|id| format!("id: {id}\ndata: {id}\n\n"))
        .collect();
    let head = format!(
        "POST /.well-known/mercure?topic=t HTTP/1.1\r\ncontent-type: text/event-stream\r\n\
         authorization: Bearer {}\r\n",
        token()
    );
    let (status, answer) = request(&a.addr, &head, &body).expect("an answer");
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("event: done\ndata: 50\n"), "{answer}");
    assert_eq!(on_b.wait_for(50, Duration::from_secs(10)), ids);
}

/// Retained updates across a cluster: a value published on one node is the latest value on
/// every node, also on a node started afterwards (loaded from the engine), and the engine's
/// bounds apply.
fn retained_updates_across_the_cluster(backend: Backend) {
    let engine = Engine::start(backend, "retained");
    let a = Node::start_with(&engine, &["--history-size", "3", "--retained-topics", "2"]);
    let retained = |addr: &str| Subscriber::connect_to(addr, "topic=%2A&retained=1");
    let b = Node::start_with(&engine, &["--history-size", "3", "--retained-topics", "2"]);
    let token = token();
    for (topic, id, retain) in [
        ("old", "dropped-by-the-bound", true),
        ("p1", "p1-v1", true),
        ("p2", "p2-v1", true),
        ("p1", "p1-v2", true),
        ("p3", "not-retained", false),
    ] {
        let mut form = format!("topic={topic}&data={id}&id={id}");
        if retain {
            form.push_str("&retain=on");
        }
        assert_eq!(publish_form(&a.addr, &token, &form), Some(200));
    }
    // On the other node at once, and on a node started afterwards.
    let on_b = retained(&b.addr);
    assert_eq!(
        on_b.wait_for(2, Duration::from_secs(10)),
        ["p2-v1", "p1-v2"]
    );
    let c = Node::start_with(&engine, &["--history-size", "3", "--retained-topics", "2"]);
    let on_c = retained(&c.addr);
    assert_eq!(
        on_c.wait_for(2, Duration::from_secs(10)),
        ["p2-v1", "p1-v2"]
    );
    // Then live.
    assert_eq!(publish(&a.addr, &token, "live"), Some(200));
    assert_eq!(on_c.wait_for(3, Duration::from_secs(10))[2], "live");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(on_b.close().len(), 3, "no duplicate");
}

/// Conflation (issue 16) on a cluster: updates published on one node, and a subscriber on
/// another that resumes with `Last-Event-ID` from the engine's history gets only the newest
/// update of each conflated topic it is owed, and every update of the others, in order; also
/// on a node started after they were published.
fn conflation_across_the_cluster(backend: Backend) {
    let engine = Engine::start(backend, "conflate");
    let conflate = ["--conflate", "p/{symbol}"];
    let (a, b) = (
        Node::start_with(&engine, &conflate),
        Node::start_with(&engine, &conflate),
    );
    // Updates are dispatched on `b` in the engine's order: once the last news is here, `b`
    // has seen every price.
    let news_on_b = Subscriber::connect_to(&b.addr, "topic=news");
    let token = token();
    assert_eq!(
        publish_form(&a.addr, &token, "topic=news&data=first&id=first"),
        Some(200)
    );
    let mut expected = Vec::new();
    for n in 0..10 {
        for (topic, id) in [
            ("p/a", format!("a{n}")),
            ("p/b", format!("b{n}")),
            ("news", format!("n{n}")),
        ] {
            let form = format!("topic={topic}&data={id}&id={id}");
            assert_eq!(publish_form(&a.addr, &token, &form), Some(200));
            if topic == "news" || n == 9 {
                expected.push(id);
            }
        }
    }
    assert_eq!(
        news_on_b
            .wait_for(11, Duration::from_secs(10))
            .last()
            .map(String::as_str),
        Some("n9")
    );
    let resumed = Subscriber::open(&b.addr, "topic=news&topic=p%2F%7Bsymbol%7D", Some("first"));
    assert_eq!(resumed.wait_for(12, Duration::from_secs(10)), expected);
    // A node that joins afterwards never dispatched these prices: its catch-up from the
    // engine conflates them within each read (the first read is small, so a stale price or
    // two may go out before the newest): every news, in order, the newest prices last, and
    // most of the older prices skipped.
    let c = Node::start_with(&engine, &conflate);
    let on_c = Subscriber::open(&c.addr, "topic=news&topic=p%2F%7Bsymbol%7D", Some("first"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !on_c.ids().iter().any(|id| id == "n9") {
        assert!(Instant::now() < deadline, "caught up: {:?}", on_c.ids());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(resumed.close().len(), 12, "nothing more");
    let got = on_c.close();
    let news: Vec<&String> = got.iter().filter(|id| id.starts_with('n')).collect();
    assert_eq!(
        news,
        expected
            .iter()
            .filter(|id| id.starts_with('n'))
            .collect::<Vec<_>>()
    );
    assert!(got.ends_with(&expected[9..]), "newest prices last: {got:?}");
    assert!(
        got.len() <= 20,
        "at least 10 of 20 old prices skipped: {got:?}"
    );
}

/// Runs the suite for one backend.
macro_rules! suite {
    ($module:ident, $backend:expr) => {
        mod $module {
            #[test]
            #[ignore = "services tier: scripts/test.sh services"]
            fn three_nodes_deliver_everything_once_in_one_order() {
                super::three_nodes_deliver_everything_once_in_one_order($backend)
            }
            #[test]
            #[ignore = "services tier: scripts/test.sh services"]
            fn a_streamed_publish_reaches_every_node() {
                super::a_streamed_publish_reaches_every_node($backend)
            }
            #[test]
            #[ignore = "services tier: scripts/test.sh services"]
            fn retained_updates_across_the_cluster() {
                super::retained_updates_across_the_cluster($backend)
            }
            #[test]
            #[ignore = "services tier: scripts/test.sh services"]
            fn conflation_across_the_cluster() {
                super::conflation_across_the_cluster($backend)
            }
            #[test]
            #[ignore = "services tier: scripts/test.sh services"]
            fn resume_on_another_node() {
                super::resume_on_another_node($backend)
            }
            #[test]
            #[ignore = "services tier: scripts/test.sh services"]
            fn node_crash_loses_nothing_acknowledged() {
                super::node_crash_loses_nothing_acknowledged($backend)
            }
            #[test]
            #[ignore = "services tier: scripts/test.sh services"]
            fn engine_restart_loses_nothing_acknowledged() {
                super::engine_restart_loses_nothing_acknowledged($backend)
            }
            #[test]
            #[ignore = "services tier: scripts/test.sh services"]
            fn a_joining_node_starts_at_the_end() {
                super::a_joining_node_starts_at_the_end($backend)
            }
            #[test]
            #[ignore = "services tier: scripts/test.sh services"]
            fn repeated_ids_across_the_cluster() {
                super::repeated_ids_across_the_cluster($backend)
            }
            #[test]
            #[ignore = "services tier: scripts/test.sh services"]
            fn subscriptions_are_listed_cluster_wide() {
                super::subscriptions_are_listed_cluster_wide($backend)
            }
            #[test]
            #[ignore = "services tier: scripts/test.sh services"]
            fn first_publish_after_an_outage_succeeds() {
                super::first_publish_after_an_outage_succeeds($backend)
            }
            #[test]
            #[ignore = "services tier: scripts/test.sh services"]
            fn engine_restart_under_concurrent_publishing() {
                super::engine_restart_under_concurrent_publishing($backend)
            }
            #[test]
            #[ignore = "services tier: scripts/test.sh services"]
            fn foreign_entries_are_skipped() {
                super::foreign_entries_are_skipped($backend)
            }
            #[test]
            #[ignore = "services tier: scripts/test.sh services"]
            fn retention_by_age() {
                super::retention_by_age($backend)
            }
            #[test]
            #[ignore = "services tier: scripts/test.sh services"]
            fn retention_by_count_and_bytes() {
                super::retention_by_count_and_bytes($backend)
            }
        }
    };
}

suite!(redis, super::Backend::Redis);
suite!(nats, super::Backend::Nats);

/// Sends one command to the Redis engine on a connection of its own; the raw reply.
fn redis_call(engine: &Engine, args: &[&str]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", engine.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut request = format!("*{}\r\n", args.len());
    for a in args {
        request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    stream.write_all(request.as_bytes()).unwrap();
    let mut buf = [0u8; 512];
    let n = stream.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Redis closes connections idle for longer than its `timeout` setting: a node that published
/// nothing for that long still answers its next publish with `200` (its publishing connection
/// is kept busy, or replaced, before a publish needs it).
#[test]
#[ignore = "services tier: scripts/test.sh services"]
fn redis_idle_timeout_does_not_fail_the_next_publish() {
    let engine = Engine::start(Backend::Redis, "idle");
    let node = Node::start(&engine);
    let subscriber = Subscriber::connect(&node.addr, None);
    let token = token();
    assert_eq!(publish(&node.addr, &token, "i0"), Some(200));
    let reply = redis_call(&engine, &["CONFIG", "SET", "timeout", "2"]);
    assert!(reply.starts_with("+OK"), "{reply}");
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(ready(&node.addr), Some(200));
    assert_eq!(publish(&node.addr, &token, "i1"), Some(200));
    assert_eq!(
        subscriber.wait_for(2, Duration::from_secs(10)),
        ["i0", "i1"],
        "both delivered"
    );
}

/// The balancer configuration in `deploy/nginx.conf`, as shipped (only addresses, TLS and
/// file paths changed for the test), in front of three nodes: events stream through it at
/// once, and after nodes die a client resumes through it on whichever node is left, with its
/// `Last-Event-ID`, no stickiness needed.
#[test]
#[ignore = "services tier: scripts/test.sh services"]
fn deploy_nginx_config_balances_without_sticky_sessions() {
    let engine = Engine::start(Backend::Redis, "nginx");
    let mut nodes: Vec<Node> = (0..3).map(|_| Node::start(&engine)).collect();
    let dir = tempdir("cluster-nginx");
    std::fs::create_dir_all(&dir).unwrap();
    // nginx's workers drop to an unprivileged user when it runs as root: they must reach the
    // directory through its private parent too.
    let _ = Command::new("chmod")
        .arg("755")
        .arg(dir.parent().unwrap())
        .arg(&*dir)
        .status();
    let port = free_port();
    let shipped = include_str!("../../../deploy/nginx.conf");
    let d = dir.display();
    let mut conf = shipped.to_owned();
    let mut edit = |from: &str, to: &str| {
        assert!(
            conf.contains(from),
            "deploy/nginx.conf no longer has {from:?}"
        );
        conf = conf.replacen(from, to, 1);
    };
    edit(
        "worker_processes auto;",
        &format!("worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;"),
    );
    edit("worker_rlimit_nofile 200000;", "");
    edit("worker_connections 100000;", "worker_connections 1024;");
    edit(
        "http {",
        &format!(
            "http {{\n    access_log off;\n    client_body_temp_path {d}/body;\n    \
             proxy_temp_path {d}/proxy;\n    fastcgi_temp_path {d}/fastcgi;\n    \
             uwsgi_temp_path {d}/uwsgi;\n    scgi_temp_path {d}/scgi;"
        ),
    );
    edit(
        "listen 443 ssl http2;",
        &format!("listen 127.0.0.1:{port};"),
    );
    for (i, node) in nodes.iter().enumerate() {
        edit(
            &format!("server 10.0.0.1{}:8080", i + 1),
            &format!("server {}", node.addr),
        );
    }
    conf = conf
        .lines()
        .filter(|l| !l.contains("ssl_certificate"))
        .collect::<Vec<_>>()
        .join("\n");
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let mut nginx = Command::new("nginx")
        .arg("-p")
        .arg(&*dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(&conf_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx starts (apt-get install nginx)");
    let balancer = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(&balancer).is_err() {
        assert!(Instant::now() < deadline, "nginx did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let token = token();

    let subscriber = Subscriber::connect(&balancer, None);
    for k in 0..5 {
        assert_eq!(publish(&balancer, &token, &format!("b{k}")), Some(200));
    }
    // Within a second: nothing between hub and client holds small events back (nginx's
    // proxy_buffering is off, and the hub says `X-Accel-Buffering: no` too).
    let seen = subscriber.wait_for(5, Duration::from_secs(1));
    drop(subscriber.close());
    nodes[0].kill();
    nodes[1].kill();
    for k in 5..10 {
        assert_eq!(
            publish(&balancer, &token, &format!("b{k}")),
            Some(200),
            "publishes reach the node that is left"
        );
    }
    let resumed = Subscriber::connect(&balancer, Some(seen.last().unwrap()));
    let missed: Vec<String> = (5..10).map(|k| format!("b{k}")).collect();
    assert_eq!(resumed.wait_for(5, Duration::from_secs(10)), missed);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(resumed.close().len(), 5, "nothing twice");
    send_signal(&nginx, "-TERM");
    let _ = nginx.wait();
    drop(nodes);
}
