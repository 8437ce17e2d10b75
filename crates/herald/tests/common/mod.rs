//! What the tests that run the built `herald` binary share: a `herald serve` child process,
//! tokens, and plain HTTP/1.1 requests over fresh loopback connections.
#![allow(dead_code)] // each test binary uses its own part

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `herald serve` child process on a free loopback port; killed when dropped.
pub struct Serve {
    pub child: Child,
    pub addr: String,
}

impl Serve {
    /// Starts `herald serve --listen 127.0.0.1:0 --jwt-key KEY --anonymous ARGS…` and waits for
    /// the address it listens on.
    pub fn start(key: &str, args: &[&str]) -> Serve {
        Serve::spawn(Command::new(env!("CARGO_BIN_EXE_herald")), key, args)
    }

    /// [`Serve::start`] with an open-file limit (soft and hard) of `nofile`.
    pub fn start_with_nofile(key: &str, args: &[&str], nofile: u32) -> Serve {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("ulimit -n {nofile} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_herald"));
        Serve::spawn(command, key, args)
    }

    /// Runs `command` (which ends up executing the binary) as `serve` on a free port.
    fn spawn(mut command: Command, key: &str, args: &[&str]) -> Serve {
        let mut child = command
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--jwt-key",
                key,
                "--anonymous",
            ])
            .args(args)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = loop {
            let line = lines.next().expect("herald serve exited early").unwrap();
            if let Some(url) = line.strip_prefix("herald listening on http://") {
                break url.to_owned();
            }
        };
        std::thread::spawn(move || lines.for_each(drop));
        Serve { child, addr }
    }

    /// Sends `signal` (`-TERM`, `-KILL`, …) and waits for the process to end.
    pub fn kill(&mut self, signal: &str) {
        send_signal(&self.child, signal);
        let _ = self.child.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn send_signal(child: &Child, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status();
}

/// A publisher token for every topic, signed with `key`.
pub fn publisher_token(key: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["token", "--key", key, "--publish", "*"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// One HTTP/1.1 request on a fresh connection: the status and body, `None` if the connection
/// failed or broke.
pub fn request(addr: &str, head: &str, body: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let request = format!(
        "{head}host: {addr}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.get(9..12)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

/// Publishes an update with this id (and the id as its data) on topic `t`; the status.
pub fn publish(addr: &str, token: &str, id: &str) -> Option<u16> {
    publish_form(addr, token, &format!("topic=t&data={id}&id={id}"))
}

/// Publishes the form `body` with `token`; the status.
pub fn publish_form(addr: &str, token: &str, body: &str) -> Option<u16> {
    let head = format!(
        "POST /.well-known/mercure HTTP/1.1\r\ncontent-type: application/x-www-form-urlencoded\r\nauthorization: Bearer {token}\r\n"
    );
    request(addr, &head, body).map(|(status, _)| status)
}

/// A fresh, absent path for one test's store, in a temporary directory of its own that is
/// removed with everything in it (the store and the record beside it) when this is dropped.
pub struct TestDir {
    path: PathBuf,
    _parent: tempfile::TempDir,
}

impl std::ops::Deref for TestDir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.path
    }
}

impl AsRef<std::path::Path> for TestDir {
    fn as_ref(&self) -> &std::path::Path {
        &self.path
    }
}

pub fn tempdir(name: &str) -> TestDir {
    let parent = tempfile::Builder::new()
        .prefix("herald-test-")
        .tempdir()
        .expect("a temporary directory");
    TestDir {
        path: parent.path().join(name),
        _parent: parent,
    }
}
