//! Real servers for tests of notifications, on loopback: an SMTP server (aiosmtpd from the
//! test virtualenv, writing a maildir) and a webhook receiver (axum) that records requests.

use std::collections::VecDeque;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use url::Url;

/// A free port on 127.0.0.1 (free when asked).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A webhook receiver that records each request and answers from a script, then 200.
#[derive(Clone, Default)]
pub struct Receiver {
    seen: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    script: Arc<Mutex<VecDeque<(u16, Duration)>>>,
}

impl Receiver {
    /// The requests received so far: headers and body.
    pub fn requests(&self) -> Vec<(HeaderMap, Bytes)> {
        self.seen.lock().unwrap().clone()
    }
}

async fn hook(
    State(receiver): State<Receiver>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    receiver.seen.lock().unwrap().push((headers, body));
    let next = receiver.script.lock().unwrap().pop_front();
    let (status, delay) = next.unwrap_or((200, Duration::ZERO));
    tokio::time::sleep(delay).await;
    (StatusCode::from_u16(status).unwrap(), "answer from the receiver")
}

/// Starts a receiver on 127.0.0.1; its URL carries a secret token in the query.
pub async fn start_receiver(script: &[(u16, Duration)]) -> (Url, Receiver) {
    let receiver = Receiver::default();
    receiver.script.lock().unwrap().extend(script.iter().copied());
    let app = Router::new().route("/hook", post(hook)).with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (Url::parse(&format!("http://{address}/hook?token=s3cret")).unwrap(), receiver)
}

/// aiosmtpd with its Mailbox handler on 127.0.0.1, killed when dropped.
pub struct SmtpServer {
    child: Child,
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
}

impl SmtpServer {
    /// Starts `python -m aiosmtpd -n -l 127.0.0.1:PORT EXTRA... -c
    /// aiosmtpd.handlers.Mailbox DIR/maildir` and waits until it accepts connections.
    pub fn start(extra: &[&str]) -> SmtpServer {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("aiosmtpd.log")).unwrap();
        let python = tarn_lake::test_util::python();
        let child = Command::new(&python)
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            .args(extra)
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(dir.path().join("maildir"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {}: {e}; set TARN_TEST_PYTHON to a Python with aiosmtpd",
                    python.display()
                )
            });
        let mut server = SmtpServer { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("aiosmtpd exited with {status}: {}", server.log());
            }
            assert!(Instant::now() < deadline, "aiosmtpd did not listen: {}", server.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What aiosmtpd printed.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("aiosmtpd.log")).unwrap_or_default()
    }

    /// The messages in the maildir's `new/`.
    pub fn messages(&self) -> Vec<String> {
        let new = self.dir.path().join("maildir").join("new");
        let mut messages: Vec<String> = std::fs::read_dir(&new)
            .map(|entries| {
                entries.map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap()).collect()
            })
            .unwrap_or_default();
        messages.sort();
        messages
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The headers of a message, unfolded, and its body.
pub fn split_message(raw: &str) -> (Vec<String>, String) {
    let raw = raw.replace("\r\n", "\n");
    let (head, body) = raw.split_once("\n\n").unwrap();
    let mut headers: Vec<String> = Vec::new();
    for line in head.lines() {
        match headers.last_mut() {
            Some(last) if line.starts_with([' ', '\t']) => last.push_str(line),
            _ => headers.push(line.to_string()),
        }
    }
    (headers, body.to_string())
}

/// The value of a header of a message split by [`split_message`].
pub fn header<'a>(headers: &'a [String], name: &str) -> &'a str {
    let prefix = format!("{}:", name.to_lowercase());
    let line = headers
        .iter()
        .find(|h| h.to_lowercase().starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {name} header in {headers:?}"));
    line[prefix.len()..].trim()
}
