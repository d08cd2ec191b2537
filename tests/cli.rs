//! The command line in scripts (issue 9): every command exits quietly when the reader of its
//! output goes away (`| head -1`), the store options and `-v` are accepted anywhere on the line,
//! and the logs say what happened (a new store is created, not recovered; a prefetch cut short
//! by an unmount is no warning).

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// A store with dataset `a` and a long history, made through the binary.
fn store_with_history(dir: &Path, versions: usize) {
    let s = dir.to_str().unwrap();
    run_ok(Command::new(BIN).args(["dataset", "create", "a", "--store", s]));
    for i in 0..versions {
        run_ok(Command::new(BIN).args([
            "dataset",
            "commit",
            "a",
            "-m",
            &format!("version {i} {}", "x".repeat(500)),
            "--store",
            s,
        ]));
    }
}

/// Runs the binary with its standard output a pipe whose reader is already gone.
fn run_into_closed_pipe(args: &[&str]) -> Output {
    let mut fds = [0; 2];
    assert_eq!(
        unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) },
        0,
        "pipe2"
    );
    // SAFETY: both descriptors were just made by pipe2 and are owned here alone.
    let (reader, writer) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(reader);
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped());
    let child = scrubbed_spawn(&mut cmd);
    with_timeout(60, "command into a closed pipe", move || {
        child.wait_with_output().unwrap()
    })
}

fn scrubbed_spawn(cmd: &mut Command) -> std::process::Child {
    for k in ["IPFS_MOUNT_STORE", "IPFS_GATEWAY", "RUST_LOG"] {
        cmd.env_remove(k);
    }
    cmd.spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Quiet: exit status 0 or 141 (what a shell reports for SIGPIPE), nothing on standard error
/// (no panic message, no "Broken pipe" error).
fn assert_quiet(what: &str, out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let code = out.status.code();
    assert!(
        matches!(code, Some(0) | Some(141)) || out.status.signal() == Some(libc::SIGPIPE),
        "{what}: exit {:?} when its output closed; stderr: {stderr}",
        out.status
    );
    assert!(
        stderr.trim().is_empty(),
        "{what}: printed on standard error when its output closed: {stderr}"
    );
}

#[test]
fn every_command_is_quiet_when_its_output_closes() {
    let tmp = tempdir("cli-pipe");
    let store = tmp.path().join("store");
    store_with_history(&store, 3);
    let s = store.to_str().unwrap();
    let car = tmp.path().join("one.car");
    write_dir_car_file(&car);
    let car_s = car.to_str().unwrap();
    for args in [
        &["dataset", "log", "a", "--store", s][..],
        &["dataset", "log", "a", "--json", "--store", s],
        &["dataset", "list", "--store", s],
        &["dataset", "commit", "a", "--store", s],
        &["key", "list", "--store", s],
        &["key", "export", "a", "--store", s],
        &["id", "--store", s],
        &["id", "--json", "--store", s],
        &["import", car_s, "--store", s],
        &["export", "bafkqaaa", "--offline", "--store", s],
        &["stats", "--store", s],
        &["stats", "--json", "--store", s],
        &["completions", "bash"],
        &["man"],
        &["--help"],
        &["dataset", "--help"],
        &["--version"],
    ] {
        let out = run_into_closed_pipe(args);
        assert_quiet(&format!("ipfs-mount {}", args.join(" ")), &out);
    }
}

/// What scripts actually write: a long `dataset log` into `head -1` (the log is larger than
/// a pipe's buffer, so the writer meets the closed pipe).
#[test]
fn dataset_log_into_head() {
    let tmp = tempdir("cli-head");
    let store = tmp.path().join("store");
    store_with_history(&store, 150);
    let script = format!(
        "{} dataset log a --store {} | head -1",
        BIN,
        store.display()
    );
    let out = run(Command::new("bash").args(["-c", &script]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{script}: {:?}", out.status);
    assert!(stdout.starts_with("v150\t"), "{script}: {stdout}");
    assert_eq!(stdout.lines().count(), 1);
    assert!(
        out.stderr.is_empty(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // PIPESTATUS: the writer itself ended quietly.
    let script = format!("{script} >/dev/null; echo \"${{PIPESTATUS[0]}}\"");
    let out = run(Command::new("bash").args(["-c", &script]));
    let status = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        status == "0" || status == "141",
        "dataset log's status: {status}"
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn write_dir_car_file(path: &Path) -> String {
    common::car::write_dir_car(path, &[("hello.txt", b"hello\n")], 1 << 20)
}

/// `--store`, `--cache-size` and `-v` before the command, after it, after its subcommand and
/// between its operands; options of the mount with a command are refused, not ignored.
#[test]
fn options_anywhere_on_the_line() {
    let tmp = tempdir("cli-options");
    let store = tmp.path().join("store");
    store_with_history(&store, 1);
    let s = store.to_str().unwrap();
    let want = String::from_utf8(run_ok(
        Command::new(BIN).args(["dataset", "log", "a", "--store", s]),
    ))
    .unwrap();
    assert!(want.starts_with("v1\t"), "{want}");
    for args in [
        &["--store", s, "dataset", "log", "a"][..],
        &["dataset", "--store", s, "log", "a"],
        &["dataset", "log", "--store", s, "a"],
        &["dataset", "log", "a", "--cache-size", "1GiB", "--store", s],
        &["-v", "dataset", "log", "a", "--store", s],
    ] {
        let got = String::from_utf8(run_ok(Command::new(BIN).args(args))).unwrap();
        assert_eq!(got, want, "ipfs-mount {}", args.join(" "));
    }
    let keys = String::from_utf8(run_ok(
        Command::new(BIN).args(["key", "list", "--store", s]),
    ))
    .unwrap();
    assert!(keys.starts_with("a\tk51"), "{keys}");
    let keys2 = String::from_utf8(run_ok(
        Command::new(BIN).args(["--store", s, "key", "list"]),
    ))
    .unwrap();
    assert_eq!(keys, keys2);
    let car = tmp.path().join("one.car");
    let root = write_dir_car_file(&car);
    let out = run_ok(
        Command::new(BIN)
            .arg("import")
            .arg(&car)
            .args(["--store", s]),
    );
    assert_eq!(String::from_utf8_lossy(&out).trim(), root);

    for args in [
        &["-f", "dataset", "list", "--store", s][..],
        &[
            "--gateway",
            "http://127.0.0.1:9",
            "dataset",
            "list",
            "--store",
            s,
        ],
        &["dataset", "list", "--offline", "--store", s],
    ] {
        let out = run(Command::new(BIN).args(args));
        assert_eq!(
            out.status.code(),
            Some(2),
            "ipfs-mount {} was accepted",
            args.join(" ")
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// A brand-new store says it was created; only a store left open by a killed process is
/// "recovered after unclean shutdown".
#[test]
fn a_new_store_is_created_not_recovered() {
    let tmp = tempdir("cli-newstore");
    let car = tmp.path().join("one.car");
    write_dir_car_file(&car);
    let out = run(Command::new(BIN)
        .arg("import")
        .arg(&car)
        .arg("-v")
        .arg("--store")
        .arg(tmp.path().join("new")));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("store created"), "{err}");
    assert!(
        !err.contains("recovered"),
        "a new store logged a recovery: {err}"
    );
    // Opened again after an orderly close: neither created nor recovered.
    let out = run(Command::new(BIN)
        .args(["dataset", "list", "-v", "--store"])
        .arg(tmp.path().join("new")));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        !err.contains("store created") && !err.contains("recovered"),
        "{err}"
    );

    if !require_fuse("a_new_store_is_created_not_recovered") {
        return;
    }
    let mut m = Mount::start(&["--offline", "--no-p2p"]);
    let log = m.log();
    assert!(log.contains("store created"), "{log}");
    assert!(!log.contains("recovered after unclean"), "{log}");
    m.kill9();
    fusermount_u(&m.mnt);
    m.start_again();
    let log = m.log();
    let second = &log[log.rfind("=== start #2").expect("second start")..];
    assert!(
        second.contains("store recovered after unclean shutdown"),
        "a killed mount's store is recovered: {second}"
    );
}

/// A trustless gateway on loopback serving `blocks` (raw requests only; CAR requests are
/// refused), which answers a leaf only after `leaf_delay`. Counts requests.
struct SlowGateway {
    url: String,
    requests: Arc<AtomicUsize>,
}

fn slow_gateway(blocks: Vec<common::car::Block>, leaf_delay: Duration) -> SlowGateway {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let map: Arc<HashMap<Vec<u8>, common::car::Block>> = Arc::new(
        blocks
            .into_iter()
            .map(|b| (b.cid.hash().to_bytes(), b))
            .collect(),
    );
    let requests = Arc::new(AtomicUsize::new(0));
    let count = requests.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let map = map.clone();
            let count = count.clone();
            std::thread::spawn(move || {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
                loop {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match conn.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    count.fetch_add(1, Ordering::Relaxed);
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let target = head.split_whitespace().nth(1).unwrap_or("").to_string();
                    let cid = target
                        .strip_prefix("/ipfs/")
                        .and_then(|t| t.split('?').next())
                        .and_then(|c| cid::Cid::try_from(c).ok());
                    let block = cid
                        .filter(|_| target.contains("format=raw"))
                        .and_then(|c| map.get(&c.hash().to_bytes()).cloned());
                    let Some(block) = block else {
                        let _ =
                            conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
                        continue;
                    };
                    if block.cid.codec() == 0x55 {
                        std::thread::sleep(leaf_delay);
                    }
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.ipld.raw\r\nContent-Length: {}\r\n\r\n",
                        block.data.len()
                    );
                    if conn.write_all(resp.as_bytes()).is_err()
                        || conn.write_all(&block.data).is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    SlowGateway { url, requests }
}

/// An unmount while the sequential prefetcher still waits for blocks: the mount stops in
/// time, and nothing it logs is a warning or an error.
#[test]
fn prefetch_in_flight_at_unmount_is_no_warning() {
    if !require_fuse("prefetch_in_flight_at_unmount_is_no_warning") {
        return;
    }
    let data = random_bytes(16 << 20, 9);
    let blocks = common::car::file(&data, 256 << 10);
    let root = blocks[0].cid.to_string();
    let gw = slow_gateway(blocks, Duration::from_secs(4));
    // A private store directory: the store warns about one others can read.
    let tmp = tempdir("cli-prefetch");
    let store = tmp.path().join("store");
    std::fs::create_dir(&store).unwrap();
    std::fs::set_permissions(&store, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let mut m = Mount::start_with_store(
        &store,
        &["--gateway", gw.url.as_str(), "--no-p2p", "--timeout", "60"],
    );
    let path = m.ipfs(&root);
    // Sequential reads of the first leaves: each waits for its leaf; the prefetcher then asks
    // for the following ones.
    let got = with_timeout(60, "reading the first leaves", move || {
        let mut f = std::fs::File::open(&path).unwrap();
        let mut buf = vec![0u8; 512 << 10];
        f.read_exact(&mut buf).unwrap();
        buf
    });
    assert_eq!(got[..], data[..512 << 10]);
    let asked = gw.requests.load(Ordering::Relaxed);
    assert!(
        asked > 3,
        "the prefetcher asked for more leaves ({asked} requests)"
    );
    let t = Instant::now();
    m.stop();
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "the unmount waited for the prefetch ({:?})",
        t.elapsed()
    );
    let log = m.log();
    let bad: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("panicked"))
        .collect();
    assert!(
        bad.is_empty(),
        "warnings at an unmount during prefetch:\n{}\n--- log:\n{log}",
        bad.join("\n")
    );
}
