//! The binary, run as a user runs it: `herald serve` as a child process on a free port, and
//! `herald pub`, `sub` and `token` against it.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn herald(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .env_remove("HERALD_HUB")
        .env_remove("HERALD_TOKEN")
        .output()
        .expect("run herald")
}

/// A `herald serve` child process; killed on drop.
struct Server {
    child: Child,
    url: String,
    /// What it printed on stderr before the ready line.
    banner: Vec<String>,
    /// What it printed on stderr after it (its log).
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    fn start(args: &[&str], envs: &[(&str, &str)]) -> Server {
        // Tests run side by side: each gets its own history unless it names one.
        let store: &[&str] = if args.contains(&"--store") {
            &[]
        } else {
            &["--store", "memory"]
        };
        let listen: &[&str] = if args.contains(&"--listen") {
            &[]
        } else {
            &["--listen", "127.0.0.1:0"]
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
            .arg("serve")
            .args(listen)
            .args(store)
            .args(args)
            .envs(envs.iter().copied())
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start herald serve");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut banner = Vec::new();
        let url = loop {
            let line = lines.next().expect("herald serve exited early").unwrap();
            if let Some(url) = line.strip_prefix("herald listening on ") {
                break url.to_owned();
            }
            banner.push(line);
        };
        // Keep draining stderr so the child never blocks on a full pipe.
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                kept.lock().unwrap().push(line);
            }
        });
        Server {
            child,
            url,
            banner,
            log,
        }
    }

    /// Waits until a line of the log contains `needle`; panics after 10 s.
    fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.log.lock().unwrap().iter().any(|l| l.contains(needle)) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the log: {:?}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn hub(&self) -> String {
        format!("{}/.well-known/mercure", self.url)
    }

    /// What the banner printed after `label` (a token), trimmed.
    fn printed(&self, label: &str) -> String {
        self.banner
            .iter()
            .find_map(|l| l.strip_prefix(label).map(|t| t.trim().to_owned()))
            .unwrap_or_else(|| panic!("no {label} in {:?}", self.banner))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `herald ARGS` and asserts that it fails with exit code 1 and says each of `says` on
/// stderr; returns the stderr.
fn assert_fails_with(args: &[&str], says: &[&str]) -> String {
    let out = herald(args);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "herald {args:?}: {err}");
    for wanted in says {
        assert!(
            err.contains(wanted),
            "herald {args:?} does not say {wanted:?}: {err}"
        );
    }
    err
}

#[test]
fn help_lists_every_planned_subcommand() {
    let out = herald(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for sub in ["serve", "pub", "sub", "token", "bench"] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(sub)),
            "`herald --help` does not list {sub}:\n{help}"
        );
    }
}

#[test]
fn unknown_subcommand_is_a_usage_error() {
    let out = herald(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("frobnicate"));
}

#[test]
fn pub_and_sub_through_a_served_hub() {
    let server = Server::start(&["--jwt-key", "s3cret", "--anonymous"], &[]);
    let hub = server.hub();
    let mut sub = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "sub",
            "https://example.com/books/{id}",
            "--json",
            "--hub",
            &hub,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let token = text(&herald(&["token", "--key", "s3cret", "--publish", "*"]).stdout);
    let token = token.trim();
    // The subscriber connects asynchronously: publish until it has seen something.
    let mut stdout = BufReader::new(sub.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        while stdout.read_line(&mut line).unwrap_or(0) > 0 {
            let _ = tx.send(std::mem::take(&mut line));
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut attempt = 0;
    let line = loop {
        assert!(Instant::now() < deadline, "herald sub printed nothing");
        attempt += 1;
        let out = herald(&[
            "pub",
            "https://example.com/books/1",
            "--data",
            "two\nlines",
            "--id",
            // A new id each attempt: an identical repeat would be a retry, not delivered.
            &format!("id-{attempt}"),
            "--hub",
            &hub,
            "--token",
            token,
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(300)) {
            break line;
        }
    };
    let json: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(json["data"], "two\nlines");
    assert_eq!(json["type"], "message");
    assert!(json["id"].as_str().unwrap().starts_with("id-"));
    let _ = sub.kill();
    let _ = sub.wait();
}

#[test]
fn pub_reads_data_from_stdin_and_prints_the_id() {
    let server = Server::start(&["--jwt-key", "k"], &[]);
    let token = text(&herald(&["token", "--key", "k", "--publish", "*"]).stdout);
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["pub", "t", "--data", "-", "--hub", &server.hub()])
        .env("HERALD_TOKEN", token.trim())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from stdin")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(text(&out.stdout).trim().starts_with("urn:uuid:"));
    // Replayed from history: the data is exactly what stdin held.
    let sub_token = text(&herald(&["token", "--key", "k", "--subscribe", "*"]).stdout);
    let mut sub = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "sub",
            "t",
            "--last-event-id",
            "earliest",
            "--hub",
            &server.hub(),
            "--token",
            sub_token.trim(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut got = String::new();
    let mut stdout = sub.stdout.take().unwrap();
    let mut buf = [0u8; 256];
    while !got.ends_with("\n\n") {
        let n = stdout.read(&mut buf).unwrap();
        assert!(n > 0);
        got.push_str(&text(&buf[..n]));
    }
    assert!(got.contains("data: from stdin\n\n"), "{got}");
    let _ = sub.kill();
    let _ = sub.wait();
}

#[test]
fn pub_reports_the_hubs_error() {
    let server = Server::start(&["--jwt-key", "k"], &[]);
    assert_fails_with(
        &[
            "pub",
            "t",
            "--data",
            "x",
            "--hub",
            &server.hub(),
            "--token",
            "forged",
        ],
        &["401", "JWT"],
    );
}

#[test]
fn serve_without_a_key_prints_working_tokens() {
    let server = Server::start(&[], &[]);
    let banner = server.banner.join("\n");
    let publisher = server.printed("publisher token (24 h):");
    let out = herald(&[
        "pub",
        "t",
        "--data",
        "x",
        "--hub",
        &server.hub(),
        "--token",
        &publisher,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let _subscriber = server.printed("subscriber token (24 h):");
    // What a user needs comes first, not a log line.
    assert!(
        server.banner[0].starts_with(&format!(
            "herald {}, a Mercure hub",
            env!("CARGO_PKG_VERSION")
        )),
        "{banner}"
    );
    for wanted in [
        "console: http://127.0.0.1:",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(banner.contains(wanted), "{wanted} in {banner}");
    }
}

/// The key a hub makes is kept with its file store: tokens printed at one start work after a
/// restart (they stopped working, `401 ... InvalidSignature`, as the key changed every start).
/// A second hub on the same store is told what is wrong (it said `FjallError: Locked`).
#[test]
fn a_generated_key_is_kept_with_the_store_and_reused() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("data");
    let store = format!("file:{}", dir.display());
    let first = Server::start(&["--store", &store], &[]);
    let banner = first.banner.join("\n");
    let key_file = dir.join("jwt.key");
    assert!(
        banner.contains(&format!("kept in {}", key_file.display())),
        "{banner}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "the key file is readable by its owner only"
        );
    }
    let token = first.printed("publisher token (24 h):");

    assert_fails_with(
        &["serve", "--listen", "127.0.0.1:0", "--store", &store],
        &[
            "another process (another herald serve?) is using the history store",
            "--store file:",
        ],
    );
    drop(first);

    let again = Server::start(&["--store", &store], &[]);
    assert!(
        again
            .banner
            .join("\n")
            .contains("the one this hub made earlier"),
        "{:?}",
        again.banner
    );
    let out = herald(&[
        "pub",
        "t",
        "--data",
        "x",
        "--hub",
        &again.hub(),
        "--token",
        &token,
    ]);
    assert!(
        out.status.success(),
        "a token from before the restart: {}",
        text(&out.stderr)
    );
    drop(again);
}

/// `--listen localhost:PORT` said only `invalid socket address syntax`; `herald sub` refused
/// for want of a token did not mention `--token`.
#[test]
fn first_mistakes_get_answers_that_say_what_to_do() {
    let server = Server::start(&["--listen", "localhost:0"], &[]);
    assert!(
        server.url.starts_with("http://127.0.0.1:"),
        "{}",
        server.url
    );
    assert_fails_with(
        &["sub", "t", "--hub", &server.hub()],
        &["pass --token", "401"],
    );
    drop(server);

    for (listen, says) in [
        ("localhost", "has no port"),
        (
            "no-such-host.invalid:80",
            "is not an address this machine has",
        ),
    ] {
        assert_fails_with(
            &["serve", "--store", "memory", "--listen", listen],
            &[says, "HOST:PORT"],
        );
    }
}

#[test]
fn config_file_env_and_flags_in_order_of_precedence() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    let file = dir.join("herald.toml");
    std::fs::write(
        &file,
        "jwt_key = \"from-file\"\nanonymous = true\nheartbeat = 0\n",
    )
    .unwrap();
    let server = Server::start(&["--config", file.to_str().unwrap()], &[]);
    let signed = |key: &str| {
        text(&herald(&["token", "--key", key, "--publish", "*"]).stdout)
            .trim()
            .to_owned()
    };
    let publish = |server: &Server, key: &str| {
        herald(&[
            "pub",
            "t",
            "--data",
            "x",
            "--hub",
            &server.hub(),
            "--token",
            &signed(key),
        ])
        .status
        .success()
    };
    assert!(publish(&server, "from-file"));
    drop(server);
    let server = Server::start(
        &["--config", file.to_str().unwrap()],
        &[("HERALD_JWT_KEY", "from-env")],
    );
    assert!(publish(&server, "from-env") && !publish(&server, "from-file"));
    drop(server);
    let server = Server::start(
        &["--config", file.to_str().unwrap(), "--jwt-key", "from-flag"],
        &[("HERALD_JWT_KEY", "from-env")],
    );
    assert!(publish(&server, "from-flag") && !publish(&server, "from-env"));
}

#[test]
fn bad_configuration_is_a_clear_error() {
    assert_fails_with(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--store",
            "postgres://x",
        ],
        &["unknown --store"],
    );
    for (args, says) in [
        (
            &["--store-memory", "1000"][..],
            "--store-memory 1000 is too small",
        ),
        (
            &["--store", "memory", "--store-memory", "8388608"][..],
            "--store-memory applies to the file store",
        ),
    ] {
        assert_fails_with(
            &[&["serve", "--listen", "127.0.0.1:0"][..], args].concat(),
            &[says],
        );
    }
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "jwt_kee = \"typo\"\n").unwrap();
    assert_fails_with(&["serve", "--config", file.to_str().unwrap()], &["jwt_kee"]);
}

#[test]
fn token_has_the_mercure_claim() {
    let out = herald(&[
        "token",
        "--key",
        "k",
        "--publish",
        "https://a/{id}",
        "--subscribe",
        "*",
        "--payload",
        r#"{"user":"u1"}"#,
        "--ttl",
        "60",
    ]);
    assert!(out.status.success());
    let token = text(&out.stdout);
    let payload = token.trim().split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&base64url(payload)).unwrap();
    assert_eq!(claims["mercure"]["publish"][0], "https://a/{id}");
    assert_eq!(claims["mercure"]["subscribe"][0], "*");
    assert_eq!(claims["mercure"]["payload"]["user"], "u1");
    assert!(claims["exp"].as_u64().unwrap() > 0);
    assert_fails_with(
        &["token", "--key", "k", "--payload", "{not json"],
        &["--payload"],
    );
}

fn base64url(s: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        _ => 63,
    };
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for &c in s.as_bytes() {
        acc = (acc << 6) | u32::from(value(c));
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[test]
fn sigterm_ends_streams_cleanly_and_exits_0() {
    use std::io::Write;
    let mut server = Server::start(&["--jwt-key", "k", "--anonymous"], &[]);
    let addr = server.url.trim_start_matches("http://").to_owned();
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /.well-known/mercure?topic=t HTTP/1.1\r\nhost: {addr}\r\n\r\n"
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !text(&got).contains(":\n") {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "stream ended early: {}", text(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let started = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    loop {
        let n = stream
            .read(&mut buf)
            .expect("the hub closes the stream, it does not hang");
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        text(&got).ends_with("0\r\n\r\n"),
        "a clean end of the chunked stream: {:?}",
        text(&got)
    );
    let exit = server.child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn public_key_jwts_with_key_files() {
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/../hub/tests/data");
    let public = format!("{data}/es256-public.pem");
    let server = Server::start(
        &[
            "--jwt-alg",
            "ES256",
            "--publisher-jwt-key-file",
            &public,
            "--subscriber-jwt-key-file",
            &public,
        ],
        &[],
    );
    let private = std::fs::read(format!("{data}/es256-private.pem")).unwrap();
    let claims = serde_json::json!({"mercure": {"publish": ["*"]}});
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
        &claims,
        &jsonwebtoken::EncodingKey::from_ec_pem(&private).unwrap(),
    )
    .unwrap();
    let out = herald(&[
        "pub",
        "t",
        "--data",
        "x",
        "--hub",
        &server.hub(),
        "--token",
        &token,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let hmac = text(&herald(&["token", "--key", "k", "--publish", "*"]).stdout);
    let out = herald(&[
        "pub",
        "t",
        "--data",
        "x",
        "--hub",
        &server.hub(),
        "--token",
        hmac.trim(),
    ]);
    assert_eq!(out.status.code(), Some(1), "an HS256 token is refused");
    // A public-key algorithm without key files is a clear startup error.
    assert_fails_with(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--jwt-alg",
            "RS256",
            "--jwt-key",
            "secret",
        ],
        &["key-file"],
    );
}

#[test]
fn bench_floor_measures_loopback_writes() {
    let out = herald(&[
        "bench", "floor", "--conns", "20", "--rounds", "10", "--size", "64", "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["writes"], 200);
    assert!(
        report["cpu_us_per_write"].as_f64().unwrap() > 0.0,
        "{report}"
    );
}

#[test]
fn bench_store_runs_small() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("store");
    let out = herald(&[
        "bench",
        "store",
        "--dir",
        dir.to_str().unwrap(),
        "--seconds",
        "1",
        "--history",
        "2000",
        "--replay",
        "500",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "appends_per_s_1_publishers",
        "appends_per_s_8_publishers",
        "appends_per_s_64_publishers",
        "replay_ms",
    ] {
        assert!(report[key].as_f64().unwrap() > 0.0, "{key}: {report}");
    }
    assert!(!dir.exists(), "the bench cleans up its stores");
}

/// The bench's smoke run: a few seconds against a real hub, auth on, observed through /proc.
#[test]
fn bench_idle_holds_subscriptions_and_measures_the_server() {
    let server = Server::start(&["--jwt-key", "bench-secret"], &[]);
    let pid = server.child.id().to_string();
    let out = herald(&[
        "bench",
        "idle",
        "--url",
        &server.url,
        "--jwt-key",
        "bench-secret",
        "--conns",
        "200",
        "--hold",
        "1",
        "--sources",
        "3",
        "--server-pid",
        &pid,
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["target"], "herald");
    assert_eq!(report["connected"], 200, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(report["dropped"], 0, "{report}");
    let server_report = &report["server"];
    assert!(server_report["rss_after"].as_u64().unwrap() > 0, "{report}");
    assert!(server_report["pss_after"].as_u64().unwrap() > 0, "{report}");
    assert!(server_report["rss_per_conn"].is_number(), "{report}");
}

#[test]
fn bench_idle_reports_refused_subscriptions() {
    // Without a subscriber JWT the hub (anonymous off) answers 401: counted, not hidden.
    let server = Server::start(&["--jwt-key", "bench-secret"], &[]);
    let out = herald(&[
        "bench",
        "idle",
        "--url",
        &server.url,
        "--conns",
        "10",
        "--hold",
        "0",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["connected"], 0, "{report}");
    assert_eq!(report["failed"], 10, "{report}");
    assert_eq!(report["failures"]["HTTP 401"], 10, "{report}");
}

/// `bench fanout --h2-streams`: the subscribers are HTTP/2 streams, several per TLS
/// connection, and every delivery is counted as over HTTP/1.1.
/// A self-signed certificate for localhost, as PEM files `name.crt` and `name.key` in `dir`.
fn certificate_pair(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

#[test]
fn bench_fanout_over_http_2_streams() {
    let scratch = tempfile::tempdir().unwrap();
    let (cert, key) = certificate_pair(scratch.path(), "hub");
    let server = Server::start(
        &[
            "--jwt-key",
            "bench-secret",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &[],
    );
    assert!(server.url.starts_with("https://"), "{}", server.url);
    let out = herald(&[
        "bench",
        "fanout",
        "--url",
        &server.url,
        "--jwt-key",
        "bench-secret",
        "--conns",
        "30",
        "--h2-streams",
        "10",
        "--rate",
        "200",
        "--messages",
        "50",
        "--floor-us",
        "5",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["transport"], "h2", "{report}");
    assert_eq!(report["subscribers"], 30, "{report}");
    assert_eq!(report["delivered"], 1500, "{report}");
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["duplicates"], 0, "{report}");
}

#[test]
fn bench_fanout_counts_every_delivery_and_its_latency() {
    let server = Server::start(&["--jwt-key", "bench-secret"], &[]);
    let pid = server.child.id().to_string();
    let out = herald(&[
        "bench",
        "fanout",
        "--url",
        &server.url,
        "--jwt-key",
        "bench-secret",
        "--conns",
        "30",
        "--rate",
        "200",
        "--messages",
        "100",
        "--size",
        "120",
        "--floor-us",
        "5",
        "--server-pid",
        &pid,
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["subscribers"], 30, "{report}");
    assert_eq!(report["expected"], 3000, "{report}");
    assert_eq!(report["delivered"], 3000, "{report}");
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["duplicates"], 0, "{report}");
    // Not `reordered`: the bench's publishes are concurrent requests, and on a loaded machine
    // one may overtake another before the hub orders them.
    assert!(report["reordered"].as_u64().is_some(), "{report}");
    assert_eq!(report["malformed"], 0, "{report}");
    assert_eq!(report["publish_errors"], 0, "{report}");
    let latency = &report["latency_ms"];
    let (p50, p99, max) = (
        latency["p50"].as_f64().unwrap(),
        latency["p99"].as_f64().unwrap(),
        latency["max"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{report}");
    assert!(
        report["deliveries_per_s"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    assert!(
        report["server"]["cpu_us_per_delivery"].is_number(),
        "{report}"
    );
}

#[test]
fn bench_fanout_without_a_key_says_what_to_pass() {
    let server = Server::start(&["--jwt-key", "bench-secret"], &[]);
    let out = herald(&["bench", "fanout", "--url", &server.url, "--floor-us", "5"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--jwt-key"),
        "{}",
        text(&out.stderr)
    );
}

/// `--tls-self-signed`: HTTPS (HTTP/2 by ALPN) with a certificate made once, kept with the
/// store and printed with its fingerprints; a plaintext listener beside it for an internal
/// address; the same certificate again at the next start.
#[test]
fn a_self_signed_certificate_serves_https_and_is_kept() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("data");
    let store = format!("file:{}", dir.display());
    let args = [
        "--store",
        &store,
        "--tls-self-signed",
        "--listen",
        "127.0.0.1:0",
        "--listen",
        "http://127.0.0.1:0",
    ];
    let first = Server::start(&args, &[]);
    assert!(first.url.starts_with("https://localhost:"), "{}", first.url);
    let cert = dir.join("tls").join("cert.pem");
    let banner = first.banner.join("\n");
    assert!(
        banner.contains(&format!("(made now): {}", cert.display())),
        "{banner}"
    );
    let fingerprint = first.printed("  SHA-256 fingerprint:");
    assert_eq!(fingerprint.len(), 32 * 3 - 1, "{fingerprint}");
    let plain = first.printed("also:");
    assert!(plain.starts_with("http://127.0.0.1:"), "{plain}");
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10"])
            .args(args)
            .output()
            .expect("curl runs");
        assert!(out.status.success(), "curl {args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    let cacert = cert.to_str().unwrap();
    let healthz = format!("{}/healthz", first.url);
    // Trusted through the printed file, and spoken in HTTP/2.
    let version = curl(&[
        "--cacert",
        cacert,
        "-o",
        "/dev/null",
        "-w",
        "%{http_version}",
        &healthz,
    ]);
    assert_eq!(version, "2");
    assert_eq!(
        curl(&["--cacert", cacert, "--http1.1", &healthz]).trim(),
        "ok"
    );
    assert_eq!(curl(&[&format!("{}healthz", plain)]).trim(), "ok");
    // `herald pub` over HTTPS: trusting the printed certificate, or with checks off; not
    // trusting it, refused with a message that says so.
    let token = first.printed("publisher token (24 h):");
    let hub = first.hub();
    let publish = |extra: &[&str]| {
        let mut args = vec!["pub", "--hub", &hub, "--token", &token, "t", "--data", "x"];
        args.extend_from_slice(extra);
        herald(&args)
    };
    let trusted = publish(&["--ca-file", cacert]);
    assert!(trusted.status.success(), "{}", text(&trusted.stderr));
    assert!(text(&trusted.stdout).starts_with("urn:uuid:"));
    assert!(publish(&["--insecure"]).status.success());
    let untrusted = publish(&[]);
    assert!(!untrusted.status.success());
    let said = format!("{:#}", text(&untrusted.stderr)).to_lowercase();
    assert!(said.contains("certificate"), "{said}");
    drop(first);
    let second = Server::start(&args, &[]);
    let banner = second.banner.join("\n");
    assert!(banner.contains("(made at an earlier start)"), "{banner}");
    assert_eq!(second.printed("  SHA-256 fingerprint:"), fingerprint);
}

/// A renewed certificate is taken on SIGHUP (as nginx does): new connections get it, a
/// subscription open before goes on receiving over its connection.
#[test]
fn sighup_reloads_the_certificate_under_a_live_subscription() {
    let scratch = tempfile::tempdir().unwrap();
    let pair = |name: &str| certificate_pair(scratch.path(), name);
    let (cert, key) = pair("served");
    let old = scratch.path().join("old.crt");
    std::fs::copy(&cert, &old).unwrap();
    let server = Server::start(
        &[
            "--anonymous",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &[],
    );
    let healthz = format!("{}/healthz", server.url);
    let curl_with = |ca: &std::path::Path| {
        Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert", ca.to_str().unwrap()])
            .arg(&healthz)
            .output()
            .expect("curl runs")
            .status
            .success()
    };
    assert!(curl_with(&old));
    // A live subscription, over the old certificate.
    let mut live = Command::new("curl")
        .args([
            "-sSN",
            "--max-time",
            "30",
            "--cacert",
            old.to_str().unwrap(),
        ])
        .arg(format!("{}?topic=t", server.hub()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("curl runs");
    let (got_tx, got) = std::sync::mpsc::channel();
    let mut out = BufReader::new(live.stdout.take().unwrap());
    std::thread::spawn(move || {
        let mut line = String::new();
        while out.read_line(&mut line).is_ok_and(|n| n > 0) {
            let _ = got_tx.send(std::mem::take(&mut line));
        }
    });
    assert_eq!(
        got.recv_timeout(Duration::from_secs(10)).unwrap(),
        ":\n",
        "the subscription is open"
    );
    // Renewed in place, then SIGHUP.
    let (next_cert, next_key) = pair("next");
    std::fs::copy(&next_cert, &cert).unwrap();
    std::fs::copy(&next_key, &key).unwrap();
    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    server.wait_for_log("SIGHUP: TLS certificate reloaded");
    assert!(curl_with(&next_cert), "new connections get the new one");
    assert!(!curl_with(&old), "the old one is no longer presented");
    // The subscription still receives.
    let hub = server.hub();
    let token = server.printed("publisher token (24 h):");
    let ca = next_cert.to_str().unwrap();
    let published = herald(&[
        "pub",
        "--hub",
        &hub,
        "--token",
        &token,
        "--ca-file",
        ca,
        "t",
        "--data",
        "renewed",
    ]);
    assert!(published.status.success(), "{}", text(&published.stderr));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let line = got
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the update reaches the subscription opened before the reload");
        if line == "data: renewed\n" {
            break;
        }
    }
    let _ = live.kill();
    let _ = live.wait();
}

/// HTTPS settings that cannot work are refused at start, saying what to fix.
#[test]
fn bad_tls_settings_are_refused_at_start() {
    let scratch = tempfile::tempdir().unwrap();
    let missing = scratch.path().join("missing.pem");
    let missing = missing.to_str().unwrap();
    assert_fails_with(
        &["serve", "--store", "memory", "--tls-cert", missing],
        &["--tls-cert needs --tls-key"],
    );
    assert_fails_with(
        &[
            "serve",
            "--store",
            "memory",
            "--tls-cert",
            missing,
            "--tls-key",
            missing,
        ],
        &[
            "cannot serve HTTPS",
            "cannot read certificate",
            "missing.pem",
        ],
    );
    assert_fails_with(
        &[
            "serve",
            "--store",
            "memory",
            "--listen",
            "https://127.0.0.1:0",
        ],
        &["serves HTTPS", "--tls-self-signed"],
    );
}

/// `herald pub --stream` sends standard input as one streaming publish while it is still
/// being written, printing each id as the hub stores it; a refused event fails the command
/// with the hub's reason, after the ids stored before it.
#[test]
fn pub_stream_publishes_every_event_of_stdin() {
    use std::io::Write;
    let server = Server::start(&["--jwt-key", "k"], &[]);
    let token = text(&herald(&["token", "--key", "k", "--publish", "*"]).stdout);
    let run = || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["pub", "--stream", "answer", "--hub", &server.hub()])
            .env("HERALD_TOKEN", token.trim())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        (
            child,
            move |chunk: &[u8]| stdin.write_all(chunk).unwrap(),
            move || {
                let mut line = String::new();
                stdout.read_line(&mut line).unwrap();
                line
            },
        )
    };
    let (mut child, mut write, mut read_line) = run();
    // The first id is printed while stdin is still open: the request is streamed.
    write(b"id: t1\ndata: Hel\n\n");
    assert_eq!(read_line(), "t1\n");
    write(b"id: t2\ndata: lo\n\ndata: !\n\n");
    assert_eq!(read_line(), "t2\n");
    assert!(read_line().starts_with("urn:uuid:"));
    drop(write); // end of input
    assert!(child.wait().unwrap().success());

    let (mut child, mut write, mut read_line) = run();
    write(b"id: u1\ndata: ok\n\nid: earliest\ndata: no\n\n");
    drop(write);
    assert_eq!(read_line(), "u1\n");
    let status = child.wait().unwrap();
    assert!(!status.success());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("refused an event: 400 event 2"), "{err}");
}

#[test]
fn bench_publish_compares_streamed_and_per_request() {
    let server = Server::start(&["--jwt-key", "bench-secret"], &[]);
    let pid = server.child.id().to_string();
    let out = herald(&[
        "bench",
        "publish",
        "--url",
        &server.url,
        "--jwt-key",
        "bench-secret",
        "--messages",
        "300",
        "--server-pid",
        &pid,
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let modes: Vec<&str> = report
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mode"].as_str().unwrap())
        .collect();
    assert_eq!(modes, ["request-per-update", "streamed"]);
    for mode in report.as_array().unwrap() {
        assert_eq!(mode["updates"], 300, "{report}");
        assert!(mode["delivered_per_s"].as_f64().unwrap() > 0.0, "{report}");
        assert!(mode["server_cpu_us_per_update"].is_number(), "{report}");
    }
}

/// `herald bench ticker` against a conflating hub, small: fast readers lose nothing, slow
/// readers get current values after reading again and far fewer updates than were published.
#[test]
fn bench_ticker_measures_conflation() {
    let server = Server::start(
        &[
            "--jwt-key",
            "bench-secret",
            "--conflate",
            "https://bench.herald.invalid/prices/{symbol}",
        ],
        &[],
    );
    let pid = server.child.id().to_string();
    let out = herald(&[
        "bench",
        "ticker",
        "--url",
        &server.url,
        "--jwt-key",
        "bench-secret",
        "--symbols",
        "20",
        "--watch",
        "5",
        "--subscribers",
        "12",
        "--slow",
        "4",
        "--size",
        "1000",
        "--seconds",
        "6",
        "--pause",
        "2",
        "--read",
        "1.5",
        "--slow-bandwidth",
        "0",
        "--drain",
        "2",
        "--server-pid",
        &pid,
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r["publisher"].is_null(), "{r}");
    assert_eq!(r["fast"]["lost"], 0, "{r}");
    assert_eq!(r["fast"]["counts"]["duplicates_or_reordered"], 0, "{r}");
    let slow = &r["slow_readers"];
    assert_eq!(slow["counts"]["duplicates_or_reordered"], 0, "{r}");
    assert!(slow["resumptions"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(slow["never_current"], 0, "{r}");
    assert!(slow["received_share"].as_f64().unwrap() < 0.9, "{r}");
    assert!(
        r["hub_metrics"]["herald_updates_conflated_total"]
            .as_f64()
            .unwrap()
            > 0.0,
        "{r}"
    );
    assert!(
        r["server"]["rss_mb_every_s"].as_array().unwrap().len() >= 5,
        "{r}"
    );
}

/// `herald pub --retain` keeps an update as its topic's latest value; `herald sub --retained`
/// prints it first.
#[test]
fn pub_retain_and_sub_retained() {
    let server = Server::start(&["--jwt-key", "k"], &[]);
    let token = text(&herald(&["token", "--key", "k", "--publish", "*"]).stdout);
    let hub = server.hub();
    for (value, retain) in [("1", true), ("2", true), ("3 not kept", false)] {
        let mut args = vec!["pub", "price", "--data", value, "--hub", &hub];
        if retain {
            args.push("--retain");
        }
        let out = Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(&args)
            .env("HERALD_TOKEN", token.trim())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let sub_token = text(&herald(&["token", "--key", "k", "--subscribe", "*"]).stdout);
    let mut sub = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["sub", "price", "--retained", "--hub", &server.hub()])
        .args(["--token", sub_token.trim()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut got = String::new();
    let mut stdout = sub.stdout.take().unwrap();
    let mut buf = [0u8; 256];
    while !got.contains("\n\n") {
        let n = stdout.read(&mut buf).unwrap();
        assert!(n > 0);
        got.push_str(&text(&buf[..n]));
    }
    assert!(got.contains("data: 2\n\n"), "{got}");
    let _ = sub.kill();
    let _ = sub.wait();
}
