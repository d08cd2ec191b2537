//! HTTP to loopback only, through curl (which CI installs), and a recording proxy in front
//! of a loopback gateway.

use super::*;

use std::fs;
use std::process::Command;

/// Percent-encodes a query component.
pub fn urlencode(s: &[u8]) -> String {
    let mut out = String::new();
    for &b in s {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn assert_loopback(url: &str) {
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("only http:// loopback URLs: {url}"));
    assert!(
        rest.starts_with("127.") || rest.starts_with("localhost:") || rest.starts_with("[::1]"),
        "refusing a non-loopback URL: {url}"
    );
}

/// HTTP request through curl: returns (status, body).
pub fn http(method: &str, url: &str, timeout_secs: u64) -> (u16, Vec<u8>) {
    assert_loopback(url);
    let tmp = tempfile::NamedTempFile::new().unwrap();
    let out = run(Command::new("curl")
        .args([
            "-sS",
            "--noproxy",
            "*",
            "-X",
            method,
            "--max-time",
            &timeout_secs.to_string(),
            "-o",
        ])
        .arg(tmp.path())
        .args(["-w", "%{http_code}", url]));
    let code: u16 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    let body = fs::read(tmp.path()).unwrap_or_default();
    if code == 0 {
        return (0, out.stderr);
    }
    (code, body)
}

pub(super) fn http_json(method: &str, url: &str, timeout_secs: u64) -> serde_json::Value {
    let (code, body) = http(method, url, timeout_secs);
    if code != 200 {
        panic!(
            "{method} {url}: HTTP {code}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{url}: bad JSON ({e}): {}", String::from_utf8_lossy(&body)))
}

/// An HTTP proxy on loopback in front of one loopback gateway: it records the target of every
/// request (GET and HEAD only, which have no body) and can drop `entity-bytes` from the query,
/// making the gateway behind it one that ignores byte ranges.
pub struct RecordingProxy {
    pub url: String,
    targets: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl RecordingProxy {
    pub fn start(upstream: &str, drop_entity_bytes: bool) -> RecordingProxy {
        use std::io::{Read, Write};
        use std::net::{TcpListener, TcpStream};
        assert_loopback(upstream);
        let upstream_addr = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let targets = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = targets.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(mut client) = client else { return };
                let Ok(mut server) = TcpStream::connect(&upstream_addr) else {
                    continue;
                };
                let log = log.clone();
                let (mut back_from, mut back_to) = match (server.try_clone(), client.try_clone()) {
                    (Ok(s), Ok(c)) => (s, c),
                    _ => continue,
                };
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut back_from, &mut back_to);
                    let _ = back_to.shutdown(std::net::Shutdown::Both);
                });
                std::thread::spawn(move || loop {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match client.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            _ => {
                                let _ = server.shutdown(std::net::Shutdown::Both);
                                return;
                            }
                        }
                    }
                    let text = String::from_utf8_lossy(&head).into_owned();
                    let mut parts = text.splitn(3, ' ');
                    let (method, target, rest) = (
                        parts.next().unwrap_or(""),
                        parts.next().unwrap_or(""),
                        parts.next().unwrap_or(""),
                    );
                    log.lock().unwrap().push(target.to_string());
                    let target = if drop_entity_bytes {
                        without_param(target, "entity-bytes")
                    } else {
                        target.to_string()
                    };
                    let out = format!("{method} {target} {rest}");
                    if server.write_all(out.as_bytes()).is_err() {
                        return;
                    }
                });
            }
        });
        RecordingProxy { url, targets }
    }

    /// The request targets so far (path and query), in order of arrival.
    pub fn targets(&self) -> Vec<String> {
        self.targets.lock().unwrap().clone()
    }
}

/// `target` without the query parameter `name`.
fn without_param(target: &str, name: &str) -> String {
    let Some((path, query)) = target.split_once('?') else {
        return target.to_string();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|kv| kv.split('=').next() != Some(name))
        .collect();
    if kept.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", kept.join("&"))
    }
}
