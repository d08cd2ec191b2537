//! HTTP to loopback only, through curl (which CI installs).

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
