//! Promises of `doc/SEMANTICS.md` that no other test shows: `--offline` contacts nothing, and a
//! commit replaces a dataset's `HEAD` atomically and durably (a temporary file fsynced, renamed
//! over `HEAD`, the directory fsynced, after the store was synced).

mod common;

use std::io::ErrorKind;
use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::datasets::*;
use common::*;

/// Connections (TCP) or datagrams (UDP) that reached a listener since it was bound.
fn contacts(tcp: &TcpListener, udp: Option<&UdpSocket>) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        match tcp.accept() {
            Ok((_, from)) => seen.push(format!("TCP connection from {from}")),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("accept: {e}"),
        }
    }
    if let Some(u) = udp {
        let mut buf = [0u8; 2048];
        loop {
            match u.recv_from(&mut buf) {
                Ok((n, from)) => seen.push(format!("{n}-byte datagram from {from}")),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("recv_from: {e}"),
            }
        }
    }
    seen
}

fn listener() -> TcpListener {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    l
}

/// An IPNS name nobody here holds (a key made in a store of its own).
fn foreign_name(dir: &Path) -> String {
    let s = dir.to_str().unwrap();
    run_ok(Command::new(BIN).args(["dataset", "create", "z", "--store", s]));
    let out = String::from_utf8(run_ok(
        Command::new(BIN).args(["key", "list", "--store", s]),
    ))
    .unwrap();
    out.split('\t').nth(1).unwrap().trim().to_string()
}

/// `--offline` with a `--peer`, a `--routing` router, a `--gateway`, a `--dns` server and the
/// DHT on: a dataset is written, committed and published, an absent CID, a foreign IPNS name
/// and a DNSLink domain are looked up, and none of them hears from the mount.
#[test]
fn offline_contacts_nothing() {
    let test = "offline_contacts_nothing";
    if !require_fuse(test) {
        return;
    }
    let tmp = tempdir("offline");
    let name = foreign_name(&tmp.path().join("other"));
    let peer = listener();
    let router = listener();
    let gateway = listener();
    let dns_tcp = listener();
    let dns = UdpSocket::bind(dns_tcp.local_addr().unwrap()).unwrap();
    dns.set_nonblocking(true).unwrap();
    // Any well-formed peer id: nobody answers at that address anyway.
    let peer_addr = format!(
        "/ip4/127.0.0.1/tcp/{}/p2p/12D3KooWCHgDrp6wmDqEfKPGhgDSDKjF595ZqnQsMaNxnoZkWpT5",
        peer.local_addr().unwrap().port()
    );
    let router_url = format!("http://{}", router.local_addr().unwrap());
    let gateway_url = format!("http://{}", gateway.local_addr().unwrap());
    let dns_addr = dns_tcp.local_addr().unwrap().to_string();
    let m = Mount::start(&[
        "--offline",
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--peer",
        &peer_addr,
        "--routing",
        &router_url,
        "--gateway",
        &gateway_url,
        "--dns",
        &dns_addr,
        "--dht",
        "server",
        "--serve",
        &format!("127.0.0.1:{}", free_port()),
    ]);

    // A version, signed and published (kept, not sent).
    let ds = mkds(&m, "off");
    std::fs::write(ds.join("a.txt"), b"written offline\n").unwrap();
    let root = xattr(&ds, "user.ipfs.cid", 60).unwrap_or_else(|e| m.fail(&e));
    assert!(root.starts_with("baf"), "{root}");
    // Lookups that would go out if anything did.
    let absent = raw_cid(b"nobody stores this block");
    for (path, what) in [
        (m.ipfs(&absent), "an absent CID"),
        (m.mnt.join("ipns").join(&name), "a foreign IPNS name"),
        (m.mnt.join("ipns").join("example.org"), "a DNSLink domain"),
    ] {
        let p = path.clone();
        match run_with_timeout(30, move || std::fs::metadata(&p)) {
            Some(Err(_)) => {}
            Some(Ok(_)) => m.fail(&format!("{what} ({}) was found offline", path.display())),
            None => m.fail(&format!("looking up {what} hung offline")),
        }
    }
    // The publisher runs within a second of a version; the peer would be dialed at once.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !m.log().contains("published") {
        if std::time::Instant::now() > deadline {
            m.fail("the dataset was not published (signed) within 30 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));

    let mut heard = Vec::new();
    for (what, l, u) in [
        ("--peer", &peer, None),
        ("--routing", &router, None),
        ("--gateway", &gateway, None),
        ("--dns", &dns_tcp, Some(&dns)),
    ] {
        for c in contacts(l, u) {
            heard.push(format!("{what}: {c}"));
        }
    }
    if !heard.is_empty() {
        m.fail(&format!(
            "--offline contacted what it was given:\n{}",
            heard.join("\n")
        ));
    }
}

/// `ipfs-mount dataset commit` under strace: the store is synced (`syncfs`), then `HEAD.tmp` is
/// written and fsynced, renamed over `HEAD`, and the dataset's directory fsynced.
#[test]
fn head_is_replaced_atomically_with_fsync() {
    let test = "head_is_replaced_atomically_with_fsync";
    let Some(strace) = which("strace") else {
        return skip_or_fail(test, "strace not found (apt-get install strace)");
    };
    let tmp = tempdir("head-fsync");
    let store = tmp.path().join("store");
    let s = store.to_str().unwrap();
    run_ok(Command::new(BIN).args(["dataset", "create", "h", "--store", s]));
    let trace = tmp.path().join("trace");
    let out = run(Command::new(&strace)
        .args(["-f", "-qq", "-o"])
        .arg(&trace)
        .args([
            "-e",
            "trace=openat,fsync,fdatasync,rename,renameat,renameat2,syncfs",
        ])
        .arg(BIN)
        .args(["dataset", "commit", "h", "-m", "durable", "--store", s]));
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("ptrace") || err.contains("Operation not permitted") {
            return skip_or_fail(test, &format!("strace cannot trace here: {err}"));
        }
        panic!("dataset commit under strace failed: {err}");
    }
    let trace = std::fs::read_to_string(&trace).unwrap();
    let dir = store.join("datasets").join("h");
    let dir_s = dir.to_str().unwrap();
    let head = format!("\"{dir_s}/HEAD\"");
    let head_tmp = format!("\"{dir_s}/HEAD.tmp\"");
    let fd_of = |l: &str| {
        l.rsplit("= ")
            .next()
            .and_then(|n| n.trim().parse::<i64>().ok())
    };
    let arg_fd = |l: &str| {
        l.split_once('(')
            .and_then(|(_, r)| r.split(')').next())
            .and_then(|n| n.trim().parse::<i64>().ok())
    };
    // The steps, in order: syncfs, open HEAD.tmp (fd t), fsync(t), rename(HEAD.tmp, HEAD),
    // open the directory (fd d), fsync(d).
    let mut step = 0;
    let (mut tmp_fd, mut dir_fd) = (None, None);
    for l in trace.lines() {
        let call = l.split_whitespace().nth(1).unwrap_or("");
        match step {
            0 if call.starts_with("syncfs(") => step = 1,
            1 if call.starts_with("openat(") && l.contains(&head_tmp) => {
                tmp_fd = fd_of(l);
                step = 2;
            }
            2 if call.starts_with("fsync(") && arg_fd(call) == tmp_fd => step = 3,
            3 if call.starts_with("rename") && l.contains(&head_tmp) && l.contains(&head) => {
                step = 4
            }
            4 if call.starts_with("openat(") && l.contains(&format!("\"{dir_s}\"")) => {
                dir_fd = fd_of(l);
                step = 5;
            }
            5 if call.starts_with("fsync(") && arg_fd(call) == dir_fd => {
                step = 6;
                break;
            }
            _ => {}
        }
    }
    let steps = [
        "syncfs of the store",
        "open HEAD.tmp",
        "fsync HEAD.tmp",
        "rename HEAD.tmp over HEAD",
        "open the dataset directory",
        "fsync the directory",
    ];
    assert_eq!(
        step,
        6,
        "HEAD replacement stopped before \"{}\"; trace:\n{trace}",
        steps[step.min(5)]
    );
}
