//! The dataset write path on a real mount: nothing acknowledged is lost, versions are group commits of closed
//! states, and the mount stays usable under pressure (small cache, full disk, kill -9, big copies, huge holes).
//!
//! What these tests hold the mount to:
//! - once `close()` or `fsync()` returned success, the bytes are in the dataset after `kill -9` of the daemon and a
//!   remount with the same store; errors (ENOSPC, EIO) come from `write`, `close` or `fsync`, never a success
//!   followed by a loss; blocks of open and just-closed files survive a small `--cache-size`;
//! - a file enters a version only once closed or fsynced (never empty from its create, never half written); a rename
//!   enters with its source's closed content; the mount commits after `--commit-delay` of quiet, at least every
//!   `--commit-interval`, on fsync, on `ipfs-mount dataset commit`, at unmount, and when `user.ipfs.cid` of the
//!   dataset root is read;
//! - `ipfs-mount dataset log|list [--json]` (options anywhere, through the mount's control socket while mounted);
//!   a damaged HEAD is reported, never overwritten;
//! - `truncate -s 1T` is instant and reads zeros; `stat`/`readdir` stay fast during a big `cp`.
//!
//! Each test collects every problem it finds and fails at the end with the whole list. The tests take a file-wide
//! lock so that they run one at a time: several measure time (latency, truncate) or fill a disk, and the machines
//! running them have few cores.

mod common;

use common::datasets::*;
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;

// ---------------------------------------------------------------------------------------------------------------
// Local helpers (the style of tests/datasets.rs)
// ---------------------------------------------------------------------------------------------------------------

/// One test of this file at a time (see the module doc); a failed test does not block the others.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Commits what is pending (by reading `user.ipfs.cid` of the dataset root) and returns the root CID.
fn commit_now(ds: &Path, secs: u64) -> Result<String, String> {
    xattr(ds, "user.ipfs.cid", secs)
}

fn python_can_import(module: &str) -> bool {
    run(Command::new("python3").args(["-c", &format!("import {module}")]))
        .status
        .success()
}

/// `ipfs-mount <args>` with a timeout: Ok(stdout), or Err naming the command, its status and stderr.
fn cli<S: AsRef<OsStr>>(args: &[S], secs: u64) -> Result<String, String> {
    let args: Vec<OsString> = args.iter().map(|a| a.as_ref().to_owned()).collect();
    let what = format!(
        "ipfs-mount {}",
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut cmd = Command::new(BIN);
    cmd.args(&args).stdin(Stdio::null());
    match run_with_timeout(secs, move || run(&mut cmd)) {
        None => Err(format!("{what}: no answer within {secs} s")),
        Some(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).into_owned()),
        Some(o) => Err(format!(
            "{what}: {}: {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        )),
    }
}

/// `--json` output: one object per line (a single JSON array is accepted too).
fn json_records(text: &str) -> Result<Vec<serde_json::Value>, String> {
    if let Ok(serde_json::Value::Array(a)) = serde_json::from_str::<serde_json::Value>(text.trim())
    {
        return Ok(a);
    }
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .filter(|v| v.is_object())
                .ok_or_else(|| format!("not a JSON object: {l:?}"))
        })
        .collect()
}

/// `ipfs-mount dataset log <name> --json --store <store>` (through the control socket when mounted), newest first.
fn log_json(store: &Path, name: &str) -> Result<Vec<serde_json::Value>, String> {
    let out = cli(
        &[
            OsStr::new("dataset"),
            OsStr::new("log"),
            OsStr::new(name),
            OsStr::new("--json"),
            OsStr::new("--store"),
            store.as_os_str(),
        ],
        120,
    )?;
    json_records(&out).map_err(|e| format!("ipfs-mount dataset log {name} --json: {e}"))
}

/// `ipfs-mount dataset list --json --store <store>`.
fn list_json(store: &Path) -> Result<Vec<serde_json::Value>, String> {
    let out = cli(
        &[
            OsStr::new("dataset"),
            OsStr::new("list"),
            OsStr::new("--json"),
            OsStr::new("--store"),
            store.as_os_str(),
        ],
        120,
    )?;
    json_records(&out).map_err(|e| format!("ipfs-mount dataset list --json: {e}"))
}

fn s<'a>(v: &'a serde_json::Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(|x| x.as_str())
}

/// Seconds since the epoch of an RFC 3339 date-time (`2025-01-02T03:04:05.678Z`, `...+01:00`).
fn parse_rfc3339(t: &str) -> Result<i64, String> {
    let bad = || format!("{t:?} is not an RFC 3339 date-time");
    let b = t.as_bytes();
    if b.len() < 20 {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64, String> {
        let p = t.get(r).ok_or_else(bad)?;
        if !p.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        p.parse().map_err(|_| bad())
    };
    if b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(bad());
    }
    let (y, mo, d, h, mi, sec) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return Err(bad());
    }
    let mut i = 19;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return Err(bad());
        }
    }
    let offset = match &t[i..] {
        "Z" | "z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) && &o[3..4] == ":" => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            let v = oh * 3600 + om * 60;
            if o.starts_with('-') {
                -v
            } else {
                v
            }
        }
        _ => return Err(bad()),
    };
    // days from civil (Howard Hinnant)
    let (yy, mm) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * mm + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(days * 86_400 + h * 3600 + mi * 60 + sec - offset)
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Checks a `dataset log --json` listing (newest first) against the commit records: the fields are there, `version`
/// goes down by one per line, each commit record (`/ipfs/<commit>`) names the line's root and seq and links the next
/// line's commit as `prev` (the last one none), times are RFC 3339 and never increase, and `/ipfs/<root>` of the
/// newest `max_roots` versions (and of the oldest) lists.
fn verify_log(
    m: &Mount,
    entries: &[serde_json::Value],
    label: &str,
    max_roots: usize,
) -> Vec<String> {
    let mut errs = Vec::new();
    if entries.is_empty() {
        errs.push(format!("{label}: dataset log --json printed no version"));
        return errs;
    }
    let mut last_time: Option<i64> = None;
    for (i, e) in entries.iter().enumerate() {
        if errs.len() > 20 {
            errs.push(format!("{label}: (stopped after 20 problems)"));
            break;
        }
        let (Some(version), Some(root), Some(commit), Some(time)) = (
            e.get("version").and_then(|v| v.as_u64()),
            s(e, "root"),
            s(e, "commit"),
            s(e, "time"),
        ) else {
            errs.push(format!(
                "{label}: log line {i} lacks version/root/commit/time: {e}"
            ));
            continue;
        };
        if !e
            .get("message")
            .is_some_and(|m| m.is_string() || m.is_null())
        {
            errs.push(format!(
                "{label}: log line {i} (v{version}) lacks a message field: {e}"
            ));
        }
        match parse_rfc3339(time) {
            Ok(t) => {
                if t > now_secs() + 300 || t < 1_600_000_000 {
                    errs.push(format!(
                        "{label}: v{version}: time {time} is not around now"
                    ));
                }
                if last_time.is_some_and(|lt| t > lt) {
                    errs.push(format!(
                        "{label}: v{version}: time {time} is later than the newer version's"
                    ));
                }
                last_time = Some(t);
            }
            Err(err) => errs.push(format!("{label}: v{version}: {err}")),
        }
        let next = entries.get(i + 1);
        if let Some(n) = next {
            match n.get("version").and_then(|v| v.as_u64()) {
                Some(nv) if nv + 1 == version => {}
                other => errs.push(format!(
                    "{label}: v{version} is followed by version {other:?} (expected v{})",
                    version.wrapping_sub(1)
                )),
            }
        }
        match read_commit(m, commit) {
            Ok(c) => {
                if c.get("root").and_then(link).as_deref() != Some(root) {
                    errs.push(format!(
                        "{label}: v{version}: commit {commit} has root {}, the log says {root}",
                        c["root"]
                    ));
                }
                if c.get("seq").and_then(|x| x.as_u64()) != Some(version) {
                    errs.push(format!(
                        "{label}: v{version}: commit {commit} has seq {}",
                        c["seq"]
                    ));
                }
                let prev = c.get("prev").and_then(link);
                let want = next.and_then(|n| s(n, "commit")).map(str::to_owned);
                if prev != want {
                    errs.push(format!("{label}: v{version}: commit {commit} has prev {prev:?}, the next log line is {want:?}"));
                }
            }
            Err(err) => errs.push(format!("{label}: v{version}: {err}")),
        }
        if i < max_roots || i + 1 == entries.len() {
            let p = m.ipfs(root);
            if let Err(err) = run_with_timeout(30, move || fs::read_dir(&p).map(|rd| rd.count()))
                .unwrap_or_else(|| Err(std::io::Error::other("no answer within 30 s")))
            {
                errs.push(format!(
                    "{label}: v{version}: /ipfs/{root} unreadable: {err}"
                ));
            }
        }
    }
    errs
}

/// Waits for a child with a deadline; kills it (by its PID, through the handle) if it has not exited by then. A child
/// blocked in a FUSE request the daemon is still working on cannot die before the daemon answers (or the mount goes
/// away), so this does not wait for the kill to take effect: it polls a few seconds, then leaves the child to be
/// reaped when it exits (the Mount guard's stop ends the daemon, which ends the request).
/// Returns (the exit status if it exited by itself in time, whether it is gone now).
fn wait_or_kill(child: &mut Child, secs: u64) -> (Option<std::process::ExitStatus>, bool) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(secs) {
        if let Ok(Some(st)) = child.try_wait() {
            return (Some(st), true);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3) {
        if let Ok(Some(_)) = child.try_wait() {
            return (None, true);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "pid {} killed but still in the kernel (a FUSE request in progress); not waiting for it",
        child.id()
    );
    (None, false)
}

/// Collects a child's stdout lines on a thread; `first` is set once a line starting with `marker` arrived.
fn collect_lines(
    child: &mut Child,
    marker: &'static str,
) -> (
    Arc<Mutex<Vec<String>>>,
    Arc<AtomicBool>,
    std::thread::JoinHandle<()>,
) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let first = Arc::new(AtomicBool::new(false));
    let out = child.stdout.take().expect("piped stdout");
    let (l, f) = (lines.clone(), first.clone());
    let h = std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if line.starts_with(marker) {
                f.store(true, Ordering::SeqCst);
            }
            l.lock().unwrap().push(line);
        }
    });
    (lines, first, h)
}

fn read_stderr(child: &mut Child) -> String {
    let mut err = String::new();
    if let Some(mut s) = child.stderr.take() {
        use std::io::Read;
        let _ = s.read_to_string(&mut err);
    }
    err
}

// ---------------------------------------------------------------------------------------------------------------
// 1. A small block cache: cp into a dataset and import of a CAR keep every block
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn cache_pressure_cp_and_import() {
    let test = "cache_pressure_cp_and_import";
    if !require_fuse(test) {
        return;
    }
    let _serial = serial();
    let t0 = Instant::now();
    let tmp = tempdir("dsw-cache");
    let big = tmp.path().join("big.bin");
    let second = tmp.path().join("second.bin");
    write_random_file(&big, 32 * MIB, 0xC0FFEE);
    write_random_file(&second, 12 * MIB + 12_345, 0xBEEF);
    // Two CARs of ~32 MiB (a directory with a file of 256 KiB raw leaves), by the tests' own CAR writer.
    let mut cars = Vec::new();
    for (k, seed) in [("a", 0xA11CE_u64), ("b", 0xB0B)] {
        let local = tmp.path().join(format!("car-{k}.bin"));
        write_random_file(&local, 32 * MIB + 777, seed);
        let data = fs::read(&local).unwrap();
        let note = format!("car {k}\n");
        let car = tmp.path().join(format!("{k}.car"));
        let root = car::write_dir_car(
            &car,
            &[("data.bin", &data), ("note.txt", note.as_bytes())],
            256 * 1024,
        );
        cars.push((car, root, local));
    }
    let opts = ["--offline", "--cache-size", "8MiB"];
    let mut m = Mount::start(&opts);
    let ds = mkds(&m, "cache");
    let mut failures = Vec::new();

    // cp of 32 MiB (then 12 MiB) through an 8 MiB cache of unpinned blocks
    let script = format!(
        "cp big.bin '{0}/big.bin' && cp second.bin '{0}/second.bin'",
        ds.display()
    );
    if let Err(e) = bash(tmp.path(), &script, NOENV, 600) {
        failures.push(format!("cp into the dataset: {e}"));
    }
    for (src, name) in [(&big, "big.bin"), (&second, "second.bin")] {
        if let Err(e) = compare_file_bytes(src, &ds.join(name)) {
            failures.push(format!("right after cp, {name}: {e}"));
        }
    }
    // import of CAR a through the running mount (control socket; the mount's 8 MiB cache)
    let (car_a, root_a, local_a) = &cars[0];
    match cli(
        &[
            OsStr::new("import"),
            OsStr::new("--store"),
            m.store.as_os_str(),
            OsStr::new("--cache-size"),
            OsStr::new("8MiB"),
            car_a.as_os_str(),
        ],
        600,
    ) {
        Ok(out) if out.lines().any(|l| l.trim() == root_a) => {}
        Ok(out) => failures.push(format!(
            "import a.car (mounted): printed {out:?}, expected the root {root_a}"
        )),
        Err(e) => failures.push(format!("import a.car while mounted: {e}")),
    }
    if let Err(e) = compare_file_bytes(local_a, &m.ipfs(root_a).join("data.bin")) {
        failures.push(format!("/ipfs/<a.car root>/data.bin while mounted: {e}"));
    }
    let ds_root = match commit_now(&ds, 300) {
        Ok(r) => Some(r),
        Err(e) => {
            failures.push(e);
            None
        }
    };
    m.stop();

    // import of CAR b with the store unmounted, with an 8 MiB cache of its own
    let (car_b, root_b, local_b) = &cars[1];
    match cli(
        &[
            OsStr::new("import"),
            OsStr::new("--store"),
            m.store.as_os_str(),
            OsStr::new("--cache-size"),
            OsStr::new("8MiB"),
            car_b.as_os_str(),
        ],
        600,
    ) {
        Ok(out) if out.lines().any(|l| l.trim() == root_b) => {}
        Ok(out) => failures.push(format!(
            "import b.car (unmounted): printed {out:?}, expected the root {root_b}"
        )),
        Err(e) => failures.push(format!("import b.car (unmounted): {e}")),
    }

    // offline remount: every byte must come from the store
    m.restart_with(&opts);
    let ds = m.mnt.join("datasets/cache");
    for (src, name) in [(&big, "big.bin"), (&second, "second.bin")] {
        if let Err(e) = compare_file_bytes(src, &ds.join(name)) {
            failures.push(format!(
                "after an --offline remount, datasets/cache/{name}: {e}"
            ));
        }
        if let Some(r) = &ds_root {
            if let Err(e) = compare_file_bytes(src, &m.ipfs(r).join(name)) {
                failures.push(format!(
                    "after an --offline remount, /ipfs/<dataset root>/{name}: {e}"
                ));
            }
        }
    }
    for (label, root, local) in [
        ("a.car (imported mounted)", root_a, local_a),
        ("b.car (imported unmounted)", root_b, local_b),
    ] {
        if let Err(e) = compare_file_bytes(local, &m.ipfs(root).join("data.bin")) {
            failures.push(format!(
                "after an --offline remount, /ipfs/<{label} root>/data.bin: {e}"
            ));
        }
    }
    // the whole DAGs are in the store: export walks every block
    let mut roots: Vec<(&str, String)> = vec![("a.car", root_a.clone()), ("b.car", root_b.clone())];
    if let Some(r) = &ds_root {
        roots.push(("dataset root", r.clone()));
    }
    for (label, root) in roots {
        let out = tmp.path().join("export.car");
        if let Err(e) = cli(
            &[
                OsStr::new("export"),
                OsStr::new("--store"),
                m.store.as_os_str(),
                OsStr::new("--offline"),
                OsStr::new(&root),
                OsStr::new("-o"),
                out.as_os_str(),
            ],
            600,
        ) {
            failures.push(format!(
                "export of the {label} ({root}) from the store: {e}"
            ));
        }
    }
    eprintln!("{test}: {:?}", t0.elapsed());
    finish(&m, test, &failures);
}

// ---------------------------------------------------------------------------------------------------------------
// 2. A full disk: ENOSPC from write/close, committed data intact, space back after rm
// ---------------------------------------------------------------------------------------------------------------

/// Writes `size` bytes in 1 MiB pieces, then fsync, then close; prints JSON: where it failed and with which errno.
const FILL_WRITER: &str = r#"
import os, sys, json
path, size = sys.argv[1], int(sys.argv[2])
res = {"failed_in": None, "errno": None, "written": 0}
try:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
except OSError as e:
    print(json.dumps({"failed_in": "open", "errno": e.errno, "written": 0})); sys.exit(0)
try:
    while res["written"] < size:
        # Fresh bytes each time: repeated chunks would be stored once (one leaf), and fit.
        piece = os.urandom(1 << 20)
        n = os.write(fd, piece[: min(len(piece), size - res["written"])])
        res["written"] += n
except OSError as e:
    res["failed_in"], res["errno"] = "write", e.errno
if res["failed_in"] is None:
    try:
        os.fsync(fd)
    except OSError as e:
        res["failed_in"], res["errno"] = "fsync", e.errno
try:
    os.close(fd)
except OSError as e:
    if res["failed_in"] is None:
        res["failed_in"], res["errno"] = "close", e.errno
print(json.dumps(res))
"#;

/// Writes files `fill_<i>.bin` (256 KiB + i bytes each) until a call fails: prints `closed <name>` after each
/// successful close, then `error <name> <open|write|close> <errno>`.
const FILL_SMALL: &str = r#"
import os, sys, hashlib
d, n_max = sys.argv[1], int(sys.argv[2])
for i in range(n_max):
    name = f"fill_{i:04}.bin"
    data = (hashlib.sha256(name.encode()).digest() * ((262144 + i) // 32 + 1))[:262144 + i]
    stage, fd = "open", None
    try:
        fd = os.open(os.path.join(d, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        stage = "write"
        off = 0
        while off < len(data):
            off += os.write(fd, data[off:off + 65536])
        stage = "close"
        f, fd = fd, None
        os.close(f)
    except OSError as e:
        print(f"error {name} {stage} {e.errno}", flush=True)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
        break
    print(f"closed {name}", flush=True)
"#;

fn fill_content(name: &str) -> Vec<u8> {
    use sha2::Digest;
    let i: usize = name
        .trim_start_matches("fill_")
        .trim_end_matches(".bin")
        .parse()
        .unwrap();
    let d = sha2::Sha256::digest(name.as_bytes());
    d.iter().cycle().take(262_144 + i).copied().collect()
}

#[test]
fn full_disk_gives_enospc_and_keeps_committed() {
    let test = "full_disk_gives_enospc_and_keeps_committed";
    if !require_fuse(test) {
        return;
    }
    let _serial = serial();
    let t0 = Instant::now();
    let tmp = tempdir("dsw-full");
    // declared before the mount: dropped (unmounted) after it
    let disk = match Tmpfs::mount("48m") {
        Ok(t) => t,
        Err(e) => return skip_or_fail(test, &e),
    };
    let store = disk.dir.join("store");
    fs::create_dir_all(&store).unwrap();
    // Ballast beside the store: removed after the disk was filled with acknowledged (pinned,
    // kept-as-history) files, as an admin would free space, so that the store can open again.
    let ballast = disk.dir.join("ballast");
    fs::write(&ballast, vec![1u8; 4 << 20]).unwrap();
    let mut m = Mount::start_with_store(&store, &["--offline"]);
    let ds = mkds(&m, "full");
    let mut failures = Vec::new();

    // a few small files, committed
    let mut small: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..5u64 {
        let name = format!("small_{i}.bin");
        let data = random_bytes(50_000 + i as usize * 7919, 500 + i);
        if let Err(e) = fs::write(ds.join(&name), &data) {
            m.fail(&format!("writing {name} on an empty 48 MiB disk: {e}"));
        }
        small.push((name, data));
    }
    fs::create_dir(ds.join("sub")).unwrap_or_else(|e| m.fail(&format!("mkdir sub: {e}")));
    fs::write(
        ds.join("sub/note.txt"),
        b"committed before the disk filled\n",
    )
    .unwrap_or_else(|e| m.fail(&format!("write sub/note.txt: {e}")));
    small.push((
        "sub/note.txt".into(),
        b"committed before the disk filled\n".to_vec(),
    ));
    let root0 = commit_now(&ds, 60).unwrap_or_else(|e| m.fail(&e));
    let check_small = |dir: &Path, label: &str, failures: &mut Vec<String>| {
        for (name, data) in &small {
            match read_timeout(&dir.join(name), 30) {
                Ok(got) if &got == data => {}
                Ok(got) => failures.push(format!(
                    "{label}: {name}: {} bytes, differs from the {} written",
                    got.len(),
                    data.len()
                )),
                Err(e) => failures.push(format!("{label}: {name}: {e}")),
            }
        }
    };

    // cp of a file larger than the free space must fail with ENOSPC
    let free = disk.free_bytes();
    let too_big = free + 16 * MIB;
    let src = tmp.path().join("too-big.bin");
    write_random_file(&src, too_big, 4242);
    eprintln!("{test}: {free} bytes free on the store's disk; cp of {too_big} bytes");
    let dst = ds.join("too-big.bin");
    let cp_ok = match bash(
        tmp.path(),
        &format!("cp too-big.bin '{}'", dst.display()),
        NOENV,
        600,
    ) {
        Ok(_) => {
            failures.push(format!(
                "cp of {too_big} bytes onto a disk with {free} bytes free succeeded"
            ));
            true
        }
        Err(e) if e.contains("No space left on device") => false,
        Err(e) => {
            failures.push(format!("cp onto a full disk failed, but not with ENOSPC (\"No space left on device\"): {e}"));
            false
        }
    };
    check_small(&ds, "after the failed cp (live tree)", &mut failures);
    check_small(
        &m.ipfs(&root0),
        "after the failed cp (/ipfs/<committed root>)",
        &mut failures,
    );
    if !cp_ok {
        if let Err(e) = fs::remove_file(&dst) {
            if e.kind() != std::io::ErrorKind::NotFound {
                failures.push(format!("rm of the failed file: {e}"));
            }
        }
    }

    // the same with a writer that reports which call failed: write, fsync or close, with ENOSPC
    let dst2 = ds.join("too-big-2.bin");
    match python(
        FILL_WRITER,
        &[dst2.as_os_str(), OsStr::new(&too_big.to_string())],
        600,
    ) {
        Ok(out) => {
            let v: serde_json::Value =
                serde_json::from_str(out.trim()).unwrap_or(serde_json::Value::Null);
            match (v["failed_in"].as_str(), v["errno"].as_i64()) {
                (Some("write" | "fsync" | "close"), Some(e)) if e == libc::ENOSPC as i64 => {}
                (None, _) => failures.push(format!(
                    "write+fsync+close of {too_big} bytes onto a disk with {free} bytes free all succeeded: {out}"
                )),
                (Some(call), e) => failures.push(format!(
                    "filling the disk: {call} failed with errno {e:?}, expected ENOSPC ({}) from write, fsync or close",
                    libc::ENOSPC
                )),
            }
        }
        Err(e) => failures.push(format!("fill writer: {e}")),
    }
    if let Err(e) = fs::remove_file(&dst2) {
        if e.kind() != std::io::ErrorKind::NotFound {
            failures.push(format!("rm of the second failed file: {e}"));
        }
    }
    check_small(
        &ds,
        "after the failed writes and rm (live tree)",
        &mut failures,
    );

    // the failed files' space is back (their blocks were never acknowledged): a 2 MiB file can be
    // written, committed, and survives a remount
    let after = random_bytes(2 * MIB as usize + 3, 777);
    let wrote = match fs::write(ds.join("after.bin"), &after) {
        Ok(()) => true,
        Err(e) => {
            failures.push(format!(
                "writing a 2 MiB file after rm of the failed files: {e} ({} bytes free on the store's disk)",
                disk.free_bytes()
            ));
            false
        }
    };
    if let Err(e) = commit_now(&ds, 60) {
        failures.push(format!("commit after rm: {e}"));
    }

    // fill the disk with 256 KiB files until one fails; every file whose close returned success must survive kill -9
    let n_max = disk.free_bytes() / (256 * 1024) + 64;
    let mut acked: Vec<String> = Vec::new();
    match python(
        FILL_SMALL,
        &[ds.as_os_str(), OsStr::new(&n_max.to_string())],
        600,
    ) {
        Ok(out) => {
            let mut stopped = None;
            for l in out.lines() {
                let f: Vec<&str> = l.split(' ').collect();
                match f.as_slice() {
                    ["closed", name] => acked.push(name.to_string()),
                    ["error", name, stage, errno] => {
                        stopped = Some((
                            name.to_string(),
                            stage.to_string(),
                            errno.parse::<i32>().unwrap_or(-1),
                        ))
                    }
                    _ => {}
                }
            }
            eprintln!(
                "{test}: {} files of ~256 KiB closed before the disk was full; then {stopped:?}",
                acked.len()
            );
            match stopped {
                Some((_, stage, e)) if e == libc::ENOSPC && ["open", "write", "close"].contains(&stage.as_str()) => {}
                Some((name, stage, e)) => failures.push(format!(
                    "filling the disk with small files: {name}: {stage} failed with {}, expected ENOSPC",
                    errno_name(e)
                )),
                None => failures.push(format!("{n_max} files of ~256 KiB all closed on a disk with room for fewer")),
            }
        }
        Err(e) => failures.push(format!("small-file filler: {e}")),
    }
    m.kill9();
    let _ = fs::remove_file(&ballast);
    m.restart();
    let ds = m.mnt.join("datasets/full");
    let mut lost = Vec::new();
    for name in &acked {
        match read_timeout(&ds.join(name), 30) {
            Ok(got) if got == fill_content(name) => {}
            Ok(got) => lost.push(format!(
                "{name}: {} bytes, not its closed content",
                got.len()
            )),
            Err(e) => lost.push(format!("{name}: {e}")),
        }
    }
    if !lost.is_empty() {
        failures.push(format!(
            "{} of {} files closed successfully on a nearly full disk are lost or wrong after kill -9: {}",
            lost.len(),
            acked.len(),
            lost.iter().take(5).cloned().collect::<Vec<_>>().join("; ")
        ));
    }
    check_small(
        &ds,
        "after filling the disk, kill -9 and a remount",
        &mut failures,
    );
    // rm works on a full disk
    let mut rm_errs = Vec::new();
    if let Ok(rd) = fs::read_dir(&ds) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with("fill_") {
                if let Err(err) = fs::remove_file(e.path()) {
                    rm_errs.push(format!("{n}: {err}"));
                }
            }
        }
    }
    if !rm_errs.is_empty() {
        failures.push(format!(
            "rm of the filler files on a full disk: {} failed, first: {}",
            rm_errs.len(),
            rm_errs[0]
        ));
    }

    // Files acknowledged in the fill are history now (pinned by their versions): their rm
    // works, but gives no space back until history is pruned (not part of this test).
    m.restart();
    let ds = m.mnt.join("datasets/full");
    check_small(&ds, "after a remount", &mut failures);
    if wrote {
        match read_timeout(&ds.join("after.bin"), 30) {
            Ok(got) if got == after => {}
            Ok(got) => failures.push(format!(
                "after a remount, after.bin: {} bytes, not the {} written",
                got.len(),
                after.len()
            )),
            Err(e) => failures.push(format!("after a remount, after.bin: {e}")),
        }
    }
    for n in ["too-big.bin", "too-big-2.bin"] {
        if ds.join(n).exists() && !cp_ok {
            failures.push(format!("after rm and a remount, {n} is back"));
        }
    }
    if cp_ok {
        // cp said yes: then every byte must be there
        if let Err(e) = compare_file_bytes(&src, &ds.join("too-big.bin")) {
            failures.push(format!("cp onto the full disk succeeded, but after a remount: {e} (acknowledged data lost)"));
        }
    }
    eprintln!("{test}: {:?}", t0.elapsed());
    finish(&m, test, &failures);
}

// ---------------------------------------------------------------------------------------------------------------
// 3. kill -9 at random moments of a mixed workload
// ---------------------------------------------------------------------------------------------------------------

/// The workload: generations of self-describing files (header `<name> g=<g> len=<n> sha=<sha256 of payload>`), a
/// write-temp-then-rename, mkdir and rm -r of subtrees, and DuckDB COPY TO parquet on the main thread; meanwhile a
/// second thread appends complete lines to a log and rewrites `side_<k>` files, so that closes and creates of the
/// two threads interleave. Prints `ack <monotonic time> <kind> <name> <g>` only after the call returned: `closed`
/// after close, `renamed` after rename, `appended` (g = line number) after the log's close, `rmstart` before an rm -r
/// starts.
const WORKLOAD: &str = r#"
import os, sys, hashlib, shutil, time, random, threading
d, base, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(seed)
out_lock = threading.Lock()
try:
    import duckdb
    con = duckdb.connect()
except Exception:
    con = None
def ack(kind, name, g):
    t = time.monotonic()
    with out_lock:
        print(f"ack {t:.6f} {kind} {name} {g}", flush=True)
def body(name, g, n):
    p = hashlib.sha256(f"{name}:{g}".encode()).digest()
    p = (p * (n // 32 + 1))[:n]
    return f"{name} g={g} len={n} sha={hashlib.sha256(p).hexdigest()}\n".encode() + p
def size():
    return rnd.randrange(1_000_000, 2_600_000) if rnd.random() < 0.1 else rnd.randrange(0, 300_000)
def write_file(path, data):
    with open(path, "wb") as fh:
        for i in range(0, len(data), 65536):
            fh.write(data[i:i + 65536])
log = os.path.join(d, "log.txt")
g = base
try:
    try:
        with open(log, "rb") as fh:
            seq = fh.read().count(b"\n")
    except FileNotFoundError:
        seq = 0
    for e in sorted(os.listdir(d)):
        if e.startswith("tree_"):
            ack("rmstart", e, 0)
            shutil.rmtree(os.path.join(d, e))
    def side():
        global seq
        srnd = random.Random(seed + 1)
        sg = base
        try:
            while True:
                sg += 1
                seq += 1
                with open(log, "ab") as fh:
                    fh.write(f"log {seq} {hashlib.sha256(str(seq).encode()).hexdigest()[:16]}\n".encode())
                ack("appended", "log.txt", seq)
                name = f"side_{sg % 2}"
                write_file(os.path.join(d, name), body(name, sg, srnd.randrange(0, 200_000)))
                ack("closed", name, sg)
                time.sleep(0.005)
        except Exception as e:
            print(f"side thread stopped at g={sg}: {type(e).__name__}: {e}", file=sys.stderr)
    threading.Thread(target=side, daemon=True).start()
    while True:
        g += 1
        for f in range(3):
            name = f"direct_{f}"
            write_file(os.path.join(d, name), body(name, g, size()))
            ack("closed", name, g)
        for f in range(2):
            name = f"renamed_{f}"
            tmp = os.path.join(d, f".tmp_{name}")
            write_file(tmp, body(name, g, size()))
            ack("closed", f".tmp_{name}", g)
            os.rename(tmp, os.path.join(d, name))
            ack("renamed", name, g)
        os.makedirs(os.path.join(d, f"tree_{g}", "sub"))
        for i in range(2):
            rel = f"tree_{g}/sub/f{i}"
            write_file(os.path.join(d, rel), body(rel, g, rnd.randrange(0, 50_000)))
            ack("closed", rel, g)
        old = f"tree_{g - 2}"
        if os.path.isdir(os.path.join(d, old)):
            ack("rmstart", old, g)
            shutil.rmtree(os.path.join(d, old))
        if con is not None:
            k = g % 2
            rows = 2000 + (g % 7) * 500
            con.execute(f"COPY (select {g}::BIGINT as g, range as i, hash(range + {g}) as h from range({rows})) TO '{d}/q_{k}.parquet' (FORMAT parquet)")
            ack("closed", f"q_{k}.parquet", g)
except Exception as e:
    print(f"workload stopped at g={g}: {type(e).__name__}: {e}", file=sys.stderr)
"#;

/// After a remount: every file must be some complete closed state. Prints JSON {"gens": {path: g}, "log_lines": n,
/// "bad": [...]}.
const WORKLOAD_CHECK: &str = r#"
import os, sys, hashlib, re, json
d = sys.argv[1]
try:
    import duckdb
    con = duckdb.connect()
except Exception:
    con = None
gens, bad, log_lines = {}, [], 0
HDR = re.compile(rb"([^\n ]+) g=(\d+) len=(\d+) sha=([0-9a-f]{64})\n")
def complete(rel, data, want):
    m = HDR.match(data)
    if not m:
        return None, f"{rel}: {len(data)} bytes, not a complete closed version (starts {data[:60]!r})"
    name, g, n, sha = m.group(1).decode(errors="replace"), int(m.group(2)), int(m.group(3)), m.group(4).decode()
    p = data[m.end():]
    if name != want:
        return None, f"{rel}: holds the content of {name!r}"
    if len(p) != n:
        return None, f"{rel}: torn: g={g} has {len(p)} of {n} payload bytes"
    if hashlib.sha256(p).hexdigest() != sha:
        return None, f"{rel}: g={g}: checksum mismatch (mixed or torn content)"
    return g, None
for root, dirs, files in os.walk(d):
    relroot = os.path.relpath(root, d)
    for dn in dirs:
        rel = os.path.normpath(os.path.join(relroot, dn))
        if not re.fullmatch(r"tree_\d+(/sub)?", rel):
            bad.append(f"{rel}/: unexpected directory")
    for fn in files:
        rel = os.path.normpath(os.path.join(relroot, fn))
        p = os.path.join(root, fn)
        try:
            with open(p, "rb") as fh:
                data = fh.read()
            st = os.stat(p)
        except OSError as e:
            bad.append(f"{rel}: {e}")
            continue
        if st.st_size != len(data):
            bad.append(f"{rel}: st_size {st.st_size}, {len(data)} bytes read")
        g, err = None, None
        m = re.fullmatch(r"\.tmp_(renamed_\d)|(direct_\d|renamed_\d|side_\d)|tree_(\d+)/sub/f\d", rel)
        if m and m.group(1):
            g, err = complete(rel, data, m.group(1))
        elif m and m.group(2):
            g, err = complete(rel, data, rel)
        elif m:
            g, err = complete(rel, data, rel)
            if err is None and g != int(m.group(3)):
                err = f"{rel}: holds g={g}"
        elif rel == "log.txt":
            lines = data.split(b"\n")
            if lines[-1] != b"":
                err = f"log.txt: ends with a partial line {lines[-1][:60]!r}"
            for i, line in enumerate(lines[:-1]):
                want = f"log {i + 1} {hashlib.sha256(str(i + 1).encode()).hexdigest()[:16]}".encode()
                if line != want:
                    err = f"log.txt: line {i + 1} is {line[:80]!r}, expected {want!r}"
                    break
            log_lines = len(lines) - 1
        elif rel.endswith(".parquet") and re.fullmatch(r"(tmp_)?q_\d\.parquet", rel):
            if con is None:
                err = f"{rel}: a parquet file, but duckdb is not importable here"
            else:
                try:
                    n, g0, g1 = con.execute(f"select count(*), min(g), max(g) from read_parquet('{p}')").fetchone()
                    if g0 != g1 or n != 2000 + (g0 % 7) * 500:
                        err = f"{rel}: {n} rows of g {g0}..{g1}: not one complete COPY"
                    else:
                        g = g0
                except Exception as e:
                    err = f"{rel}: DuckDB cannot read it: {type(e).__name__}: {str(e)[:200]}"
        else:
            err = f"{rel}: unexpected file ({len(data)} bytes)"
        if err:
            bad.append(err)
        elif g is not None:
            gens[rel] = g
print(json.dumps({"gens": gens, "log_lines": log_lines, "bad": bad}))
"#;

#[test]
fn kill9_random_moments_mixed_workload() {
    let test = "kill9_random_moments_mixed_workload";
    if !require_fuse(test) {
        return;
    }
    let _serial = serial();
    let t0 = Instant::now();
    let rounds: usize = std::env::var("IPFS_MOUNT_KILL9_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(18);
    let seed: u64 = std::env::var("IPFS_MOUNT_TEST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| now_secs() as u64);
    eprintln!("{test}: {rounds} rounds, seed {seed} (IPFS_MOUNT_TEST_SEED={seed} repeats the kill moments)");
    let duckdb = python_can_import("duckdb");
    let mut failures: Vec<String> = Vec::new();
    if !duckdb {
        let why = "duckdb is not importable (pip install duckdb): the workload runs without its COPY TO parquet step";
        if strict() {
            failures.push(format!(
                "{why} (IPFS_MOUNT_REQUIRE_PEERS=1, so this is a failure)"
            ));
        }
        eprintln!("{test}: {why}");
    }
    let mut rng = Rng::new(seed);
    let mut m = ds_mount();
    mkds(&m, "c");
    // name -> the newest generation acknowledged (closed, or renamed into place) before a kill
    let mut expect: BTreeMap<String, u64> = BTreeMap::new();
    let mut log_acked = 0u64;
    let mut log_error_reported = false;
    let mut total_acks = 0usize;
    for round in 0..rounds {
        let ds = m.mnt.join("datasets/c");
        let mut w = Command::new("python3")
            .arg("-c")
            .arg(WORKLOAD)
            .arg(&ds)
            .arg(((round as u64 + 1) * 100_000).to_string())
            .arg(rng.next_u64().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (lines, first, reader) = collect_lines(&mut w, "ack ");
        let t = Instant::now();
        while !first.load(Ordering::SeqCst) && t.elapsed() < Duration::from_secs(60) {
            if let Ok(Some(_)) = w.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if !first.load(Ordering::SeqCst) {
            let err = if wait_or_kill(&mut w, 0).1 {
                read_stderr(&mut w)
            } else {
                "(still running)".into()
            };
            failures.push(format!(
                "round {round}: the workload acknowledged nothing within 60 s: {err}"
            ));
            break;
        }
        // a random moment: sometimes right away, sometimes seconds into the workload
        let delay = Duration::from_millis(rng.below(2500));
        std::thread::sleep(delay);
        let kill_t = monotonic_secs();
        m.kill9();
        let (st, gone) = wait_or_kill(&mut w, 30);
        if st.is_none() {
            failures.push(format!(
                "round {round}: the workload did not stop within 30 s of kill -9 of the daemon"
            ));
        }
        let werr = if gone {
            let _ = reader.join();
            read_stderr(&mut w)
        } else {
            "(did not stop)".into()
        };
        let lines = std::mem::take(&mut *lines.lock().unwrap());
        let mut acked = 0;
        for l in &lines {
            let f: Vec<&str> = l.split(' ').collect();
            let ["ack", ts, kind, name, g] = f.as_slice() else {
                continue;
            };
            let (Ok(ts), Ok(g)) = (ts.parse::<f64>(), g.parse::<u64>()) else {
                continue;
            };
            if ts >= kill_t {
                continue; // after the kill: acknowledged by nobody
            }
            acked += 1;
            match *kind {
                "closed" | "renamed" => {
                    let key = name.trim_start_matches(".tmp_").to_string();
                    let e = expect.entry(key).or_insert(0);
                    *e = (*e).max(g);
                }
                "appended" => log_acked = log_acked.max(g),
                "rmstart" => {
                    let prefix = format!("{name}/");
                    expect.retain(|k, _| !k.starts_with(&prefix));
                }
                _ => {}
            }
        }
        total_acks += acked;
        eprintln!(
            "round {round}: kill -9 after {delay:?} ({acked} acknowledgements before it); workload: {}",
            werr.trim()
        );

        m.restart();
        let ds = m.mnt.join("datasets/c");
        if !ds.is_dir() {
            failures.push(format!(
                "round {round}: dataset c missing after kill -9 and remount"
            ));
            break;
        }
        match python(WORKLOAD_CHECK, &[ds.as_os_str()], 300) {
            Ok(out) => match serde_json::from_str::<serde_json::Value>(out.trim()) {
                Ok(v) => {
                    for b in v["bad"].as_array().into_iter().flatten() {
                        failures.push(format!("round {round}: {}", b.as_str().unwrap_or_default()));
                    }
                    let gens = &v["gens"];
                    let gen_of = |k: &str| gens.get(k).and_then(|x| x.as_u64());
                    for (key, want) in expect.iter_mut() {
                        let got = if key.starts_with("renamed_") {
                            gen_of(key).max(gen_of(&format!(".tmp_{key}")))
                        } else {
                            gen_of(key)
                        };
                        if got.is_none_or(|g| g < *want) {
                            failures.push(format!(
                                "round {round}: {key}: g={want} was acknowledged (close/rename returned) before the kill, \
                                 after the remount it holds {}",
                                got.map(|g| format!("g={g}")).unwrap_or_else(|| "nothing (absent or torn)".into())
                            ));
                            *want = got.unwrap_or(0); // report a loss once
                        }
                    }
                    let log_lines = v["log_lines"].as_u64().unwrap_or(0);
                    if log_lines < log_acked {
                        failures.push(format!(
                            "round {round}: log.txt has {log_lines} complete lines after the remount, {log_acked} appends were acknowledged"
                        ));
                        log_acked = log_lines;
                    }
                }
                Err(e) => failures.push(format!(
                    "round {round}: checker printed no JSON ({e}): {out}"
                )),
            },
            Err(e) => failures.push(format!("round {round}: checker: {e}")),
        }
        // the live tree, committed, reads back under /ipfs
        match commit_now(&ds, 120) {
            Ok(root) => {
                if let Err(e) = compare_trees(&ds, &m.ipfs(&root), Symlinks::Preserve) {
                    failures.push(format!(
                        "round {round}: /ipfs/{root} differs from the live tree:\n{e}"
                    ));
                }
            }
            Err(e) => failures.push(format!("round {round}: {e}")),
        }
        // the history verifies
        match log_json(&m.store, "c") {
            Ok(entries) => {
                let max_roots = if round + 1 == rounds { usize::MAX } else { 30 };
                for e in verify_log(&m, &entries, &format!("round {round}: log"), max_roots) {
                    failures.push(e);
                }
                if round + 1 == rounds {
                    eprintln!(
                        "{test}: {} versions in the log after {rounds} rounds",
                        entries.len()
                    );
                }
            }
            Err(e) if !log_error_reported => {
                log_error_reported = true;
                failures.push(format!("round {round} (and any later): {e}"));
            }
            Err(_) => {}
        }
        if failures.len() > 60 {
            failures.push(format!("(stopped after round {round}: too many problems)"));
            break;
        }
    }
    eprintln!(
        "{test}: {total_acks} acknowledgements checked, {:?}",
        t0.elapsed()
    );
    finish(&m, test, &failures);
}

// ---------------------------------------------------------------------------------------------------------------
// 4. Group commit: cp -r of 3000 files (with renames meanwhile) makes few versions, each of closed states
// ---------------------------------------------------------------------------------------------------------------

/// 200 files written then `mv`ed into place (new_<i> -> mv_<i>) in `$D/ren`, while cp -r runs.
const RENAMER: &str = r#"
mkdir -p "$D/ren"
for i in $(seq 1 200); do
  { printf 'mv file %d\n' "$i"; head -c $((1000 + i * 37)) "$PAD"; } > "$D/ren/new_$i"
  mv "$D/ren/new_$i" "$D/ren/mv_$i"
  sleep 0.02
done
"#;

/// Apparent size (sum of file lengths) of everything under `dir`.
fn tree_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                _ => {}
            }
        }
    }
    total
}

/// One version of the group-commit test's dataset: every `d*/f_*` has its source's size (never empty from its
/// create, never half written), every `ren/new_<i>` or `ren/mv_<i>` has its closed content, and no rename is seen
/// half done (both names).
fn check_group_version(
    base: &Path,
    sizes: &BTreeMap<String, u64>,
    mv_content: &dyn Fn(usize) -> Vec<u8>,
) -> Vec<String> {
    let mut errs: Vec<String> = Vec::new();
    let rd = |p: &Path, errs: &mut Vec<String>| -> Vec<(String, fs::Metadata)> {
        match fs::read_dir(p) {
            Ok(rd) => rd
                .flatten()
                .filter_map(|e| {
                    Some((
                        e.file_name().to_string_lossy().into_owned(),
                        fs::symlink_metadata(e.path()).ok()?,
                    ))
                })
                .collect(),
            Err(e) => {
                errs.push(format!("readdir {}: {e}", p.display()));
                Vec::new()
            }
        }
    };
    for (name, md) in rd(base, &mut errs) {
        if name == "ren" && md.is_dir() {
            let ents = rd(&base.join("ren"), &mut errs);
            let names: BTreeSet<&str> = ents.iter().map(|(n, _)| n.as_str()).collect();
            for (n, _) in &ents {
                let i: Option<usize> = n
                    .strip_prefix("mv_")
                    .or_else(|| n.strip_prefix("new_"))
                    .and_then(|x| x.parse().ok());
                let Some(i) = i.filter(|i| (1..=200).contains(i)) else {
                    errs.push(format!("ren/{n}: unexpected"));
                    continue;
                };
                if n.starts_with("new_") && names.contains(format!("mv_{i}").as_str()) {
                    errs.push(format!(
                        "both ren/new_{i} and ren/mv_{i} (a rename seen half done)"
                    ));
                }
                match fs::read(base.join("ren").join(n)) {
                    Ok(got) if got == mv_content(i) => {}
                    Ok(got) => errs.push(format!(
                        "ren/{n}: {} bytes, not its closed content ({} bytes)",
                        got.len(),
                        mv_content(i).len()
                    )),
                    Err(e) => errs.push(format!("ren/{n}: {e}")),
                }
            }
        } else if name.starts_with('d') && md.is_dir() {
            for (n, fmd) in rd(&base.join(&name), &mut errs) {
                let rel = format!("{name}/{n}");
                match sizes.get(&rel) {
                    Some(&len) if fmd.len() == len => {}
                    Some(&len) => errs.push(format!("{rel}: {} bytes, the closed file has {len} (empty from create, or half written)", fmd.len())),
                    None => errs.push(format!("{rel}: unexpected")),
                }
            }
        } else {
            errs.push(format!("{name}: unexpected"));
        }
    }
    errs
}

#[test]
fn group_commit_cp_r_3000_files() {
    let test = "group_commit_cp_r_3000_files";
    if !require_fuse(test) {
        return;
    }
    let _serial = serial();
    let t0 = Instant::now();
    let tmp = tempdir("dsw-group");
    let src = tmp.path().join("src");
    let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
    let mut rng = Rng::new(3000);
    for i in 0..3000u64 {
        let rel = format!("d{}/f_{i:04}.txt", i % 6);
        let len = 1 + rng.below(4096);
        write_random_file(&src.join(&rel), len, 10_000 + i);
        sizes.insert(rel, len);
    }
    let pad = tmp.path().join("pad.bin");
    write_random_file(&pad, 10_000, 9);
    let pad_bytes = fs::read(&pad).unwrap();
    let mv_content = |i: usize| {
        let mut v = format!("mv file {i}\n").into_bytes();
        v.extend_from_slice(&pad_bytes[..1000 + i * 37]);
        v
    };
    // what the dataset must end up as: the same steps on a local dir
    let expected = tmp.path().join("expected");
    bash(tmp.path(), "cp -r src expected", NOENV, 120).unwrap();
    bash(
        tmp.path(),
        RENAMER,
        &[("D", expected.as_os_str()), ("PAD", pad.as_os_str())],
        120,
    )
    .unwrap_or_else(|e| panic!("renamer on a local dir (test bug): {e}"));

    let m = ds_mount();
    let ds = mkds(&m, "g");
    let mut failures = Vec::new();
    let head0 = xattr(&ds, "user.ipfs.commit", 30).unwrap_or_else(|e| m.fail(&e));
    let store0 = tree_bytes(&m.store);
    let seq0 = read_commit(&m, &head0)
        .ok()
        .and_then(|v| v["seq"].as_u64())
        .unwrap_or_else(|| m.fail("no seq in the new dataset's commit"));

    let (srcd, dsd) = (tmp.path().to_path_buf(), ds.clone());
    let cp = std::thread::spawn(move || {
        bash(
            &srcd,
            &format!("cp -r src/. '{}'", dsd.display()),
            NOENV,
            900,
        )
    });
    let (tmpd, dsd, padp) = (tmp.path().to_path_buf(), ds.clone(), pad.clone());
    let ren = std::thread::spawn(move || {
        bash(
            &tmpd,
            RENAMER,
            &[("D", dsd.as_os_str()), ("PAD", padp.as_os_str())],
            900,
        )
    });
    // meanwhile, force commits at arbitrary moments (reading user.ipfs.cid commits what is pending): each of those
    // versions must hold only closed states too
    let copying = Arc::new(AtomicBool::new(true));
    let (c2, dsd) = (copying.clone(), ds.clone());
    let prober = std::thread::spawn(move || {
        let mut roots = Vec::new();
        let mut errs = Vec::new();
        while c2.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(300));
            match xattr(&dsd, "user.ipfs.cid", 120) {
                Ok(r) => roots.push(r),
                Err(e) => errs.push(e),
            }
        }
        (roots, errs)
    });
    let cp_res = cp.join().unwrap();
    let cp_time = t0.elapsed();
    if let Err(e) = cp_res {
        failures.push(format!("cp -r: {e}"));
    }
    if let Err(e) = ren.join().unwrap() {
        failures.push(format!("mv renames during the copy: {e}"));
    }
    copying.store(false, Ordering::SeqCst);
    let (probed, probe_errs) = prober.join().unwrap();
    if let Some(e) = probe_errs.first() {
        failures.push(format!(
            "forcing commits during the copy: {} failed, first: {e}",
            probe_errs.len()
        ));
    }
    let root = match commit_now(&ds, 300) {
        Ok(r) => r,
        Err(e) => m.fail(&e),
    };
    let head = xattr(&ds, "user.ipfs.commit", 30).unwrap_or_else(|e| m.fail(&e));
    // commits rewrite only the changed paths: the store grows by about the data, not by a tree per version
    let data: u64 =
        sizes.values().sum::<u64>() + (1..=200).map(|i| mv_content(i).len() as u64).sum::<u64>();
    let grown = tree_bytes(&m.store).saturating_sub(store0);
    eprintln!("{test}: {data} bytes of data; the store grew by {grown} bytes");
    if grown > 3 * data + 8 * MIB {
        failures.push(format!(
            "the store grew by {grown} bytes for {data} bytes of data (more than 3x + 8 MiB: directories rewritten per version?)"
        ));
    }
    // the final version is exactly the local result
    let out = run(Command::new("diff")
        .arg("-r")
        .arg(&expected)
        .arg(m.ipfs(&root)));
    if !out.status.success() {
        let s = String::from_utf8_lossy(&out.stdout);
        failures.push(format!(
            "diff -r <local result> /ipfs/{root}: {}\n{}{}",
            out.status,
            s.lines().take(20).collect::<Vec<_>>().join("\n"),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    // the versions: walk the chain back to the dataset's first version
    let mut chain: Vec<(u64, String)> = Vec::new();
    let mut cur = Some(head.clone());
    while let Some(c) = cur.take() {
        if c == head0 || chain.len() > 20_000 {
            break;
        }
        match read_commit(&m, &c) {
            Ok(v) => {
                let (Some(seq), Some(r)) = (v["seq"].as_u64(), v.get("root").and_then(link)) else {
                    failures.push(format!("commit {c} lacks seq or root: {v}"));
                    break;
                };
                chain.push((seq, r));
                cur = link(&v["prev"]);
            }
            Err(e) => {
                failures.push(format!("commit chain: {e}"));
                break;
            }
        }
    }
    let versions = chain.len();
    let seq_n = read_commit(&m, &head)
        .ok()
        .and_then(|v| v["seq"].as_u64())
        .unwrap_or(0);
    eprintln!(
        "{test}: cp -r of 3000 files + 200 mv took {cp_time:?}; {versions} versions (seq {seq0} -> {seq_n})"
    );
    if versions > 300 {
        failures.push(format!(
            "cp -r of 3000 files with 200 renames made {versions} versions: at most ~300 expected (group commits)"
        ));
    }
    match log_json(&m.store, "g") {
        Ok(entries) => {
            let newer = entries
                .iter()
                .filter(|e| e["version"].as_u64().is_some_and(|v| v > seq0))
                .count();
            if newer != versions {
                failures.push(format!("dataset log --json lists {newer} versions after v{seq0}, the chain has {versions}"));
            }
            if s(&entries[0], "root") != Some(root.as_str()) {
                failures.push(format!(
                    "dataset log --json: newest root {:?}, user.ipfs.cid {root}",
                    s(&entries[0], "root")
                ));
            }
        }
        Err(e) => failures.push(e),
    }
    // sample versions (the newest 20 and 20 spread over the rest) and every root the prober made: only closed
    // states, no rename seen twice
    let mut sample: BTreeSet<usize> = (0..versions.min(20)).collect();
    if versions > 20 {
        for k in 0..20 {
            sample.insert(20 + k * (versions - 20) / 20);
        }
    }
    let mut to_check: Vec<(String, String)> = sample
        .iter()
        .map(|&i| (format!("v{}", chain[i].0), chain[i].1.clone()))
        .collect();
    let sampled: BTreeSet<String> = to_check.iter().map(|(_, r)| r.clone()).collect();
    for (k, r) in probed.iter().enumerate() {
        if !sampled.contains(r) {
            to_check.push((format!("probe {k}"), r.clone()));
        }
    }
    let mut version_errs = Vec::new();
    for (label, r) in &to_check {
        let errs = check_group_version(&m.ipfs(r), &sizes, &mv_content);
        if !errs.is_empty() {
            let n = errs.len();
            version_errs.push(format!(
                "{label} (/ipfs/{r}): {n} problem(s): {}",
                errs.into_iter().take(5).collect::<Vec<_>>().join("; ")
            ));
        }
    }
    eprintln!("{test}: checked {} versions ({} of the {versions} in the chain, and the roots of {} commits forced during the copy)", to_check.len(), sample.len(), probed.len());
    let n = version_errs.len();
    failures.extend(version_errs.into_iter().take(15));
    if n > 15 {
        failures.push(format!("... and {} more versions with problems", n - 15));
    }
    eprintln!("{test}: {:?}", t0.elapsed());
    finish(&m, test, &failures);
}

// ---------------------------------------------------------------------------------------------------------------
// 5. stat and readdir stay fast while a big cp runs
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn responsive_during_big_cp() {
    let test = "responsive_during_big_cp";
    if !require_fuse(test) {
        return;
    }
    let _serial = serial();
    let t0 = Instant::now();
    let tmp = tempdir("dsw-resp");
    let big = tmp.path().join("big.bin");
    write_random_file(&big, 512 * MIB, 512);
    let m = ds_mount();
    let ds = mkds(&m, "r");
    let mut failures = Vec::new();
    let other = ds.join("other");
    fs::create_dir(&other).unwrap_or_else(|e| m.fail(&format!("mkdir other: {e}")));
    for i in 0..20 {
        fs::write(other.join(format!("f_{i}")), format!("file {i}\n"))
            .unwrap_or_else(|e| m.fail(&format!("write other/f_{i}: {e}")));
    }
    commit_now(&ds, 60).unwrap_or_else(|e| m.fail(&e));

    // stat (an existing and a never-seen name, so the lookup reaches the daemon) + readdir, in a loop
    let stop = Arc::new(AtomicBool::new(false));
    let lat: Arc<Mutex<Vec<f64>>> = Arc::new(Mutex::new(Vec::new()));
    let errs: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let (st, l, e, o) = (stop.clone(), lat.clone(), errs.clone(), other.clone());
    let sampler = std::thread::spawn(move || {
        let mut i = 0u64;
        while !st.load(Ordering::SeqCst) {
            let t = Instant::now();
            let a = fs::metadata(o.join(format!("f_{}", i % 20)));
            let b = fs::metadata(o.join(format!("missing_{i}")));
            let c = fs::read_dir(&o).map(|rd| rd.count());
            l.lock().unwrap().push(t.elapsed().as_secs_f64() * 1000.0);
            let mut el = e.lock().unwrap();
            if let Err(x) = a {
                el.push(format!("stat other/f_{}: {x}", i % 20));
            }
            if b.is_ok() {
                el.push(format!("stat other/missing_{i}: exists"));
            }
            match c {
                Ok(20) => {}
                other => el.push(format!("readdir other: {other:?}, expected 20 entries")),
            }
            drop(el);
            i += 1;
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let tc = Instant::now();
    let cp = bash(
        tmp.path(),
        &format!("cp big.bin '{}'", ds.join("big.bin").display()),
        NOENV,
        900,
    );
    let cp_time = tc.elapsed();
    // keep sampling through the commit that follows the copy
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    let joined = run_with_timeout(60, move || sampler.join().is_ok());
    if joined != Some(true) {
        failures.push(
            "a stat or readdir in the dataset did not return within 60 s after the cp".into(),
        );
    }
    if let Err(e) = cp {
        failures.push(format!("cp of 512 MiB: {e}"));
    }
    let mut v = lat.lock().unwrap().clone();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| {
        v.get(
            ((p * v.len() as f64).ceil() as usize)
                .saturating_sub(1)
                .min(v.len().saturating_sub(1)),
        )
        .copied()
        .unwrap_or(f64::NAN)
    };
    let (p50, p99, max) = (pct(0.50), pct(0.99), v.last().copied().unwrap_or(f64::NAN));
    eprintln!(
        "{test}: cp of 512 MiB took {cp_time:?} ({:.0} MiB/s); stat+stat+readdir during it: {} samples, p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms",
        512.0 / cp_time.as_secs_f64(),
        v.len()
    );
    if v.len() < 50 {
        failures.push(format!(
            "only {} stat+readdir samples during the cp (each one slow?)",
            v.len()
        ));
    }
    if p99.is_nan() || p99 >= 50.0 {
        failures.push(format!(
            "stat+stat+readdir of another dir during a 512 MiB cp: p99 {p99:.1} ms (p50 {p50:.1}, max {max:.1}, {} samples), expected under 50 ms",
            v.len()
        ));
    }
    let el = errs.lock().unwrap().clone();
    if !el.is_empty() {
        failures.push(format!(
            "{} wrong answers while sampling, first: {}",
            el.len(),
            el[..el.len().min(3)].join("; ")
        ));
    }
    if let Err(e) = compare_file_bytes(&big, &ds.join("big.bin")) {
        failures.push(format!("big.bin after cp: {e}"));
    }
    match commit_now(&ds, 300) {
        Ok(root) => match fs::metadata(m.ipfs(&root).join("big.bin")) {
            Ok(md) if md.len() == 512 * MIB => {}
            Ok(md) => failures.push(format!(
                "/ipfs/<root>/big.bin: {} bytes, expected {}",
                md.len(),
                512 * MIB
            )),
            Err(e) => failures.push(format!("/ipfs/<root>/big.bin: {e}")),
        },
        Err(e) => failures.push(e),
    }
    eprintln!("{test}: {:?}", t0.elapsed());
    finish(&m, test, &failures);
}

// ---------------------------------------------------------------------------------------------------------------
// 6. A damaged HEAD is reported, never overwritten
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn damaged_head_is_reported_not_overwritten() {
    let test = "damaged_head_is_reported_not_overwritten";
    if !require_fuse(test) {
        return;
    }
    let _serial = serial();
    let t0 = Instant::now();
    let mut m = ds_mount();
    for n in ["good", "garbage", "missing"] {
        let d = mkds(&m, n);
        fs::write(d.join("f.txt"), format!("{n}\n"))
            .unwrap_or_else(|e| m.fail(&format!("write {n}/f.txt: {e}")));
        commit_now(&d, 60).unwrap_or_else(|e| m.fail(&e));
    }
    m.stop();
    let mut failures = Vec::new();
    let store = m.store.clone();
    let head_of = |n: &str| store.join("datasets").join(n).join("HEAD");
    // case 1: garbage; case 2: a well-formed CID of a commit the store does not hold
    let garbage: Vec<u8> = b"\x00\xffthis is not a CID\n\x01\x02 garbage".to_vec();
    let absent = {
        use sha2::Digest;
        let d = sha2::Sha256::digest(b"a commit that was never stored");
        cid::Cid::new_v1(0x71, multihash::Multihash::<64>::wrap(0x12, &d).unwrap()).to_string()
    };
    fs::write(head_of("garbage"), &garbage).unwrap();
    fs::write(head_of("missing"), format!("{absent}\n")).unwrap();
    let heads: BTreeMap<&str, Vec<u8>> = [
        ("garbage", fs::read(head_of("garbage")).unwrap()),
        ("missing", fs::read(head_of("missing")).unwrap()),
    ]
    .into();

    m.start_again();
    match list_json(&m.store) {
        Ok(list) => {
            let by_name: BTreeMap<&str, &serde_json::Value> = list
                .iter()
                .filter_map(|v| Some((s(v, "name")?, v)))
                .collect();
            for n in ["garbage", "missing"] {
                match by_name.get(n) {
                    Some(v) if s(v, "state") == Some("damaged") && s(v, "reason").is_some_and(|r| !r.trim().is_empty()) => {
                        eprintln!("{test}: {n}: listed as damaged: {}", s(v, "reason").unwrap());
                    }
                    Some(v) => failures.push(format!("dataset list --json: {n} (HEAD {}): {v}, expected state \"damaged\" with a reason", if n == "garbage" { "garbage" } else { "names a commit not in the store" })),
                    None => failures.push(format!("dataset list --json does not list {n} (damaged HEAD): {list:?}")),
                }
            }
            match by_name.get("good") {
                Some(v) if s(v, "state") == Some("ok") => {}
                other => failures.push(format!(
                    "dataset list --json: good: {other:?}, expected state \"ok\""
                )),
            }
        }
        Err(e) => failures.push(e),
    }
    for n in ["garbage", "missing"] {
        match fs::create_dir(m.mnt.join("datasets").join(n)) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => failures.push(format!(
                "mkdir datasets/{n} (damaged): {e}, expected EEXIST"
            )),
            Ok(()) => failures.push(format!(
                "mkdir datasets/{n} (damaged HEAD) succeeded: expected EEXIST"
            )),
        }
        if fs::read(head_of(n)).ok().as_ref() != heads.get(n) {
            failures.push(format!(
                "{n}/HEAD changed while mounted (after mkdir): {:?}",
                fs::read(head_of(n)).map(|b| String::from_utf8_lossy(&b).into_owned())
            ));
        }
    }
    // the other dataset works: read, write, commit, and a new dataset can be made
    let good = m.mnt.join("datasets/good");
    match fs::read(good.join("f.txt")) {
        Ok(b) if b == b"good\n" => {}
        other => failures.push(format!("good/f.txt: {other:?}")),
    }
    if let Err(e) = fs::write(good.join("g.txt"), b"more\n") {
        failures.push(format!("write good/g.txt: {e}"));
    }
    match commit_now(&good, 60) {
        Ok(root) => {
            if fs::read(m.ipfs(&root).join("g.txt")).ok().as_deref() != Some(b"more\n") {
                failures.push(format!(
                    "/ipfs/{root}/g.txt (good, committed) does not read back"
                ));
            }
        }
        Err(e) => failures.push(e),
    }
    match fs::create_dir(m.mnt.join("datasets/fresh")) {
        Ok(()) => {
            if let Err(e) = fs::write(m.mnt.join("datasets/fresh/x"), b"x") {
                failures.push(format!("write fresh/x: {e}"));
            }
        }
        Err(e) => failures.push(format!("mkdir datasets/fresh beside damaged datasets: {e}")),
    }
    // and nothing rewrites the damaged HEADs at unmount or at the next start
    m.stop();
    for n in ["garbage", "missing"] {
        if fs::read(head_of(n)).ok().as_ref() != heads.get(n) {
            failures.push(format!(
                "{n}/HEAD changed by the mount (after unmount): {:?}",
                fs::read(head_of(n)).map(|b| String::from_utf8_lossy(&b).into_owned())
            ));
        }
    }
    m.start_again();
    if fs::read(m.mnt.join("datasets/good/g.txt")).ok().as_deref() != Some(b"more\n") {
        failures.push("good/g.txt is gone after a remount".into());
    }
    eprintln!("{test}: {:?}", t0.elapsed());
    finish(&m, test, &failures);
}

// ---------------------------------------------------------------------------------------------------------------
// 7. ipfs-mount dataset commit -m, dataset log/list --json, options anywhere, commit at unmount
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn commit_command_and_log_json() {
    let test = "commit_command_and_log_json";
    if !require_fuse(test) {
        return;
    }
    let _serial = serial();
    let t0 = Instant::now();
    // long delays: only the commit command (and the unmount) make versions here
    let opts = [
        "--offline",
        "--commit-delay",
        "60s",
        "--commit-interval",
        "120s",
    ];
    let mut m = Mount::start(&opts);
    let ds = mkds(&m, "cm");
    let store = m.store.clone();
    let st = store.as_os_str();
    let mut failures = Vec::new();
    let newest = |label: &str, failures: &mut Vec<String>| -> Option<serde_json::Value> {
        match log_json(&store, "cm") {
            Ok(e) if !e.is_empty() => Some(e[0].clone()),
            Ok(_) => {
                failures.push(format!("{label}: dataset log --json printed nothing"));
                None
            }
            Err(e) => {
                failures.push(format!("{label}: {e}"));
                None
            }
        }
    };
    let v0 = newest("new dataset", &mut failures);
    fs::write(ds.join("a.txt"), b"alpha\n")
        .unwrap_or_else(|e| m.fail(&format!("write a.txt: {e}")));
    fs::create_dir(ds.join("dir")).unwrap_or_else(|e| m.fail(&format!("mkdir dir: {e}")));
    fs::write(ds.join("dir/b.txt"), b"beta\n")
        .unwrap_or_else(|e| m.fail(&format!("write dir/b.txt: {e}")));
    // within --commit-delay nothing is committed yet
    std::thread::sleep(Duration::from_millis(1500));
    let before = newest("1.5 s after the writes", &mut failures);
    if let (Some(a), Some(b)) = (&v0, &before) {
        if a["commit"] != b["commit"] {
            failures.push(format!(
                "with --commit-delay 60s a version was made 1.5 s after the writes: {b}"
            ));
        }
    }
    match cli(
        &[
            OsStr::new("dataset"),
            OsStr::new("commit"),
            OsStr::new("cm"),
            OsStr::new("-m"),
            OsStr::new("first batch"),
            OsStr::new("--store"),
            st,
        ],
        120,
    ) {
        Ok(_) => {}
        Err(e) => failures.push(format!("dataset commit: {e}")),
    }
    let first = newest("after dataset commit -m \"first batch\"", &mut failures);
    if let Some(v) = &first {
        if s(v, "message") != Some("first batch") {
            failures.push(format!(
                "newest log entry after `dataset commit -m \"first batch\"`: message {:?}",
                v.get("message")
            ));
        }
        if let (Some(a), Some(b)) = (
            v0.as_ref().and_then(|x| x["version"].as_u64()),
            v["version"].as_u64(),
        ) {
            if b != a + 1 {
                failures.push(format!(
                    "dataset commit made version {b}, the previous newest was {a}"
                ));
            }
        }
        match s(v, "time").map(parse_rfc3339) {
            Some(Ok(t)) if (t - now_secs()).abs() <= 300 => {}
            Some(Ok(t)) => failures.push(format!(
                "commit time {} is {} s away from now",
                v["time"],
                t - now_secs()
            )),
            Some(Err(e)) => failures.push(e),
            None => failures.push(format!("log entry without a time: {v}")),
        }
        match (
            xattr(&ds, "user.ipfs.cid", 60),
            xattr(&ds, "user.ipfs.commit", 60),
        ) {
            (Ok(r), Ok(c)) => {
                if s(v, "root") != Some(r.as_str()) || s(v, "commit") != Some(c.as_str()) {
                    failures.push(format!(
                        "newest log entry {v} vs user.ipfs.cid {r}, user.ipfs.commit {c}"
                    ));
                }
            }
            (a, b) => failures.push(format!("xattrs: {a:?} {b:?}")),
        }
        if let Some(r) = s(v, "root") {
            for (p, want) in [("a.txt", "alpha\n"), ("dir/b.txt", "beta\n")] {
                if fs::read_to_string(m.ipfs(r).join(p)).ok().as_deref() != Some(want) {
                    failures.push(format!(
                        "/ipfs/<first batch root>/{p} does not read {want:?}"
                    ));
                }
            }
        }
        // text form: v<seq>\t<root>\t<commit>\t<RFC 3339 time>\t<message>
        match cli(
            &[
                OsStr::new("dataset"),
                OsStr::new("--store"),
                st,
                OsStr::new("log"),
                OsStr::new("cm"),
            ],
            120,
        ) {
            Ok(text) => {
                let line = text.lines().next().unwrap_or_default();
                let f: Vec<&str> = line.split('\t').collect();
                let want_v = v["version"].as_u64().map(|x| format!("v{x}"));
                if f.len() != 5
                    || Some(f[0].to_string()) != want_v
                    || Some(f[1]) != s(v, "root")
                    || Some(f[2]) != s(v, "commit")
                    || parse_rfc3339(f[3]).is_err()
                    || f[4] != "first batch"
                {
                    failures.push(format!(
                        "dataset log (text) first line {line:?}, expected v<seq>\\t<root>\\t<commit>\\t<RFC 3339>\\tfirst batch for {v}"
                    ));
                }
            }
            Err(e) => failures.push(e),
        }
    }
    // a second batch; options before the name, --store last
    fs::write(ds.join("c.txt"), b"gamma\n")
        .unwrap_or_else(|e| m.fail(&format!("write c.txt: {e}")));
    if let Err(e) = cli(
        &[
            OsStr::new("dataset"),
            OsStr::new("commit"),
            OsStr::new("-m"),
            OsStr::new("second batch"),
            OsStr::new("cm"),
            OsStr::new("--store"),
            st,
        ],
        120,
    ) {
        failures.push(format!("dataset commit (options first): {e}"));
    }
    match cli(
        &[
            OsStr::new("dataset"),
            OsStr::new("--store"),
            st,
            OsStr::new("log"),
            OsStr::new("--json"),
            OsStr::new("cm"),
        ],
        120,
    )
    .and_then(|t| json_records(&t))
    {
        Ok(entries) => {
            let msgs: Vec<Option<&str>> = entries.iter().take(2).map(|e| s(e, "message")).collect();
            if msgs != [Some("second batch"), Some("first batch")] {
                failures.push(format!("dataset --store S log --json cm: newest messages {msgs:?}, expected second batch, first batch"));
            }
            failures.extend(verify_log(
                &m,
                &entries,
                "log after two commits",
                usize::MAX,
            ));
            if let Some(v0) = &v0 {
                if entries.len() != v0["version"].as_u64().unwrap_or(0) as usize + 3 {
                    failures.push(format!("{} versions in the log after two commits (a new dataset had {}): {entries:?}", entries.len(), v0["version"]));
                }
            }
        }
        Err(e) => failures.push(format!("dataset --store S log --json cm: {e}")),
    }
    let second = newest("after the second commit", &mut failures);
    // list: both option placements
    for args in [
        vec![
            OsStr::new("dataset"),
            OsStr::new("list"),
            OsStr::new("--json"),
            OsStr::new("--store"),
            st,
        ],
        vec![
            OsStr::new("dataset"),
            OsStr::new("--store"),
            st,
            OsStr::new("list"),
            OsStr::new("--json"),
        ],
    ] {
        let what = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        match cli(&args, 120).and_then(|t| json_records(&t)) {
            Ok(list) => match (list.iter().find(|v| s(v, "name") == Some("cm")), &second) {
                (Some(e), Some(sv))
                    if e["version"] != sv["version"]
                        || e.get("root") != sv.get("root")
                        || s(e, "head") != s(sv, "commit")
                        || s(e, "profile") != Some("unixfs-v1-2025")
                        || s(e, "state") != Some("ok") =>
                {
                    failures.push(format!("{what}: {e}, expected version/root/head of {sv}, profile unixfs-v1-2025, state ok"));
                }
                (None, _) => failures.push(format!("{what}: no entry for cm: {list:?}")),
                _ => {}
            },
            Err(e) => failures.push(format!("{what}: {e}")),
        }
    }
    // a change that only the unmount can commit (the delay is 60 s)
    fs::write(ds.join("d.txt"), b"delta\n")
        .unwrap_or_else(|e| m.fail(&format!("write d.txt: {e}")));
    m.stop();
    match log_json(&store, "cm") {
        Ok(entries) => {
            let newest_root = entries
                .first()
                .and_then(|e| s(e, "root"))
                .map(str::to_owned);
            if entries.first().map(|e| &e["commit"]) == second.as_ref().map(|v| &v["commit"]) {
                failures.push("no version was made at unmount for a pending change (d.txt)".into());
            }
            m.start_again();
            if let Some(r) = newest_root {
                if fs::read_to_string(m.ipfs(&r).join("d.txt")).ok().as_deref() != Some("delta\n") {
                    failures.push(format!(
                        "the version made at unmount (/ipfs/{r}) lacks d.txt"
                    ));
                }
                match xattr(&m.mnt.join("datasets/cm"), "user.ipfs.cid", 60) {
                    Ok(c) if c == r => {}
                    other => failures.push(format!(
                        "after remount, user.ipfs.cid {other:?}, the log's newest root {r}"
                    )),
                }
            }
        }
        Err(e) => {
            failures.push(format!("unmounted store: {e}"));
            m.start_again();
        }
    }
    if fs::read_to_string(m.mnt.join("datasets/cm/d.txt"))
        .ok()
        .as_deref()
        != Some("delta\n")
    {
        failures.push(
            "d.txt (written, closed, then unmount) is not in the dataset after a remount".into(),
        );
    }
    // --commit-interval: under continuous writes (a close every ~50 ms, never quiet for the 1 s delay) a version at
    // least every 2 s, and not one per close
    m.restart_with(&[
        "--offline",
        "--commit-delay",
        "1s",
        "--commit-interval",
        "2s",
    ]);
    let ds = m.mnt.join("datasets/cm");
    let version_now = |failures: &mut Vec<String>| {
        newest("commit interval", failures).and_then(|v| v["version"].as_u64())
    };
    let v_start = version_now(&mut failures);
    let t = Instant::now();
    let mut closes = 0;
    while t.elapsed() < Duration::from_millis(6500) {
        use std::io::Write;
        let r = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(ds.join("stream.txt"))
            .and_then(|mut f| writeln!(f, "line {closes}"));
        if let Err(e) = r {
            failures.push(format!("append to stream.txt: {e}"));
            break;
        }
        closes += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    if let (Some(a), Some(b)) = (v_start, version_now(&mut failures)) {
        let made = b.saturating_sub(a);
        eprintln!("{test}: {closes} appends over 6.5 s with --commit-interval 2s: {made} versions");
        if !(2..=6).contains(&made) {
            failures.push(format!(
                "{closes} closes over 6.5 s of continuous appends with --commit-delay 1s --commit-interval 2s made {made} versions, expected about 3"
            ));
        }
    }
    eprintln!("{test}: {:?}", t0.elapsed());
    finish(&m, test, &failures);
}

// ---------------------------------------------------------------------------------------------------------------
// 8. Holes: truncate -s 1T is instant and reads zeros
// ---------------------------------------------------------------------------------------------------------------

/// Runs a command, failing if it takes longer than `limit` (killed, by PID, after `hard`).
fn timed(cmd: &mut Command, limit: Duration, hard: Duration) -> Result<Duration, String> {
    let what = format!("{cmd:?}");
    let t = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{what}: {e}"))?;
    let st = wait_or_kill(&mut child, hard.as_secs()).0;
    let took = t.elapsed();
    match st {
        None => Err(format!("{what}: still running after {hard:?} (killed)")),
        Some(s) if !s.success() => Err(format!("{what}: {s}: {}", read_stderr(&mut child).trim())),
        Some(_) if took > limit => Err(format!("{what}: took {took:?}, more than {limit:?}")),
        Some(_) => Ok(took),
    }
}

/// Zeros at `off - 4096 .. off`, `mark` at `off`, zeros after it up to `off + 4096` (or EOF).
fn check_mark(path: &Path, off: u64, mark: &[u8]) -> Result<(), String> {
    let start = off.saturating_sub(4096);
    let p = path.to_path_buf();
    let len = 8192 + mark.len();
    let got = run_with_timeout(60, move || pread(&p, start, len))
        .ok_or_else(|| {
            format!(
                "{}: pread at {start}: no answer within 60 s",
                path.display()
            )
        })?
        .map_err(|e| format!("{}: pread at {start}: {e}", path.display()))?;
    let at = (off - start) as usize;
    if got.len() < at + mark.len() {
        return Err(format!(
            "{}: pread at {start} returned {} bytes",
            path.display(),
            got.len()
        ));
    }
    if got[..at].iter().any(|&b| b != 0) {
        return Err(format!(
            "{}: non-zero bytes before offset {off}",
            path.display()
        ));
    }
    if &got[at..at + mark.len()] != mark {
        return Err(format!(
            "{}: at {off}: {:?}, expected {:?}",
            path.display(),
            String::from_utf8_lossy(&got[at..at + mark.len()]),
            String::from_utf8_lossy(mark)
        ));
    }
    if got[at + mark.len()..].iter().any(|&b| b != 0) {
        return Err(format!(
            "{}: non-zero bytes after the mark at {off}",
            path.display()
        ));
    }
    Ok(())
}

#[test]
fn sparse_truncate_is_instant() {
    let test = "sparse_truncate_is_instant";
    if !require_fuse(test) {
        return;
    }
    let _serial = serial();
    let t0 = Instant::now();
    let m = ds_mount();
    let ds = mkds(&m, "holes");
    let mut failures = Vec::new();
    let limit = Duration::from_secs(5);
    let hard = Duration::from_secs(30);
    let head = random_bytes(MIB as usize, 8);
    fs::write(ds.join("grown"), &head).unwrap_or_else(|e| m.fail(&format!("write grown: {e}")));
    // (file, steps: truncate sizes, mark offset, final size)
    let plan: [(&str, &[&str], u64, u64); 4] = [
        ("huge", &["1T"], TIB / 2 + 12_345, TIB),
        ("four", &["4G"], 2 * GIB + 1, 4 * GIB),
        ("grown", &["4G"], 3 * GIB + 7, 4 * GIB),
        ("shrunk", &["1T", "4G"], 2 * GIB - 3, 4 * GIB),
    ];
    let mut marks: Vec<(&str, u64, Vec<u8>, u64)> = Vec::new();
    'files: for (name, sizes, off, size) in plan {
        let p = ds.join(name);
        for sz in sizes {
            match timed(
                Command::new("truncate").args(["-s", sz]).arg(&p),
                limit,
                hard,
            ) {
                Ok(d) => eprintln!("{test}: truncate -s {sz} {name}: {d:?}"),
                Err(e) => {
                    failures.push(e);
                    // the daemon may be busy writing out a terabyte: stop here rather than wait for it
                    break 'files;
                }
            }
        }
        let mark = format!("MARK-{name}").into_bytes();
        let dd = format!(
            "printf '%s' '{}' | dd of='{}' bs=1 seek={off} conv=notrunc status=none",
            String::from_utf8_lossy(&mark),
            p.display()
        );
        // dd is not held to the truncate's 5 s, but a few bytes into a hole must not cost a pass over the file
        match timed(
            Command::new("bash").args(["-c", &dd]),
            Duration::from_secs(30),
            Duration::from_secs(60),
        ) {
            Ok(d) => eprintln!(
                "{test}: dd {} bytes at {off} into {name}: {d:?}",
                mark.len()
            ),
            Err(e) => {
                failures.push(e);
                break 'files;
            }
        }
        match fs::metadata(&p) {
            Ok(md) if md.len() == size => {}
            Ok(md) => failures.push(format!("{name}: st_size {}, expected {size}", md.len())),
            Err(e) => failures.push(format!("stat {name}: {e}")),
        }
        if let Err(e) = check_mark(&p, off, &mark) {
            failures.push(e);
        }
        marks.push((name, off, mark, size));
    }
    // zeros elsewhere, and the old content of "grown" is still there
    for (name, off) in [
        ("huge", 0u64),
        ("huge", TIB - 4096),
        ("four", GIB),
        ("shrunk", 3 * GIB),
        ("grown", 2 * MIB),
    ] {
        if !marks.iter().any(|(n, ..)| *n == name) {
            continue;
        }
        let p = ds.join(name);
        match run_with_timeout(60, move || pread(&p, off, 4096)) {
            Some(Ok(b)) if b.len() == 4096 && b.iter().all(|&x| x == 0) => {}
            other => failures.push(format!(
                "{name}: 4096 bytes at {off} are not zeros: {:?}",
                other.map(|r| r.map(|b| b.len()))
            )),
        }
    }
    if marks.iter().any(|(n, ..)| *n == "grown") {
        match pread(&ds.join("grown"), 0, head.len()) {
            Ok(b) if b == head => {}
            other => failures.push(format!(
                "grown: its first MiB changed after truncate -s 4G: {:?}",
                other.map(|b| b.len())
            )),
        }
    }
    if failures.is_empty() {
        // the committed version has the same sizes and bytes
        let tc = Instant::now();
        match commit_now(&ds, 180) {
            Ok(root) => {
                eprintln!(
                    "{test}: commit of 1 TiB + 3 x 4 GiB of mostly holes: {:?}",
                    tc.elapsed()
                );
                for (name, off, mark, size) in &marks {
                    let p = m.ipfs(&root).join(name);
                    match fs::metadata(&p) {
                        Ok(md) if md.len() == *size => {}
                        Ok(md) => failures.push(format!(
                            "/ipfs/<root>/{name}: {} bytes, expected {size}",
                            md.len()
                        )),
                        Err(e) => failures.push(format!("/ipfs/<root>/{name}: {e}")),
                    }
                    if let Err(e) = check_mark(&p, *off, mark) {
                        failures.push(format!("committed: {e}"));
                    }
                }
                match pread(&m.ipfs(&root).join("grown"), 0, head.len()) {
                    Ok(b) if b == head => {}
                    other => failures.push(format!(
                        "/ipfs/<root>/grown: first MiB differs: {:?}",
                        other.map(|b| b.len())
                    )),
                }
            }
            Err(e) => failures.push(format!("commit of the sparse files: {e}")),
        }
    }
    eprintln!("{test}: {:?}", t0.elapsed());
    finish(&m, test, &failures);
}

// ---------------------------------------------------------------------------------------------------------------
// 9. fsync commits; kill -9 right after it
// ---------------------------------------------------------------------------------------------------------------

/// a.bin: written, fsynced (prints "fsynced"), then more bytes written and never synced; b.bin (existing, closed
/// content "old") reopened with O_TRUNC and rewritten, never closed; c.bin created and written, never closed; d.bin
/// written and closed. Then prints "ready" and waits to be killed.
const FSYNC_THEN_HANG: &str = r#"
import os, sys, time, hashlib
d = sys.argv[1]
def content(name, n):
    p = hashlib.sha256(name.encode()).digest()
    return f"{name} len={n}\n".encode() + (p * (n // 32 + 1))[:n]
a = os.open(os.path.join(d, "a.bin"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
data = content("a.bin", 2_500_000)
for i in range(0, len(data), 65536):
    os.write(a, data[i:i + 65536])
os.fsync(a)
print("fsynced", flush=True)
os.write(a, b"written after the fsync, never synced\n" * 1000)
b = os.open(os.path.join(d, "b.bin"), os.O_WRONLY | os.O_TRUNC)
os.write(b, b"new content, never closed\n" * 100)
c = os.open(os.path.join(d, "c.bin"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
os.write(c, b"created after the fsync, never closed\n" * 100)
dd = os.open(os.path.join(d, "d.bin"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(dd, content("d.bin", 300_000))
os.close(dd)
print("ready", flush=True)
time.sleep(3600)
"#;

fn fsync_content(name: &str, n: usize) -> Vec<u8> {
    use sha2::Digest;
    let p = sha2::Sha256::digest(name.as_bytes());
    let mut v = format!("{name} len={n}\n").into_bytes();
    v.extend(p.iter().cycle().take(n));
    v
}

#[test]
fn fsync_commits_and_survives_kill9() {
    let test = "fsync_commits_and_survives_kill9";
    if !require_fuse(test) {
        return;
    }
    let _serial = serial();
    let t0 = Instant::now();
    let mut m = ds_mount();
    let ds = mkds(&m, "fs");
    let mut failures = Vec::new();
    let old = b"old content of b.bin\n".to_vec();
    fs::write(ds.join("b.bin"), &old).unwrap_or_else(|e| m.fail(&format!("write b.bin: {e}")));
    commit_now(&ds, 60).unwrap_or_else(|e| m.fail(&e));

    let mut w = Command::new("python3")
        .arg("-c")
        .arg(FSYNC_THEN_HANG)
        .arg(&ds)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, ready, reader) = collect_lines(&mut w, "ready");
    let t = Instant::now();
    while !ready.load(Ordering::SeqCst) && t.elapsed() < Duration::from_secs(120) {
        if let Ok(Some(_)) = w.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let was_ready = ready.load(Ordering::SeqCst);
    // at once: no close of a, b, c; d closed just before
    m.kill9();
    let exited = wait_or_kill(&mut w, 0).1;
    if exited {
        let _ = reader.join();
    }
    if !was_ready {
        let got = lines.lock().unwrap().clone();
        let err = if exited {
            read_stderr(&mut w)
        } else {
            "(still running)".into()
        };
        m.restart();
        failures.push(format!(
            "the writer did not get to \"ready\" (printed {got:?}): {}",
            err.trim()
        ));
        return finish(&m, test, &failures);
    }
    m.restart();
    let ds = m.mnt.join("datasets/fs");
    let a = fsync_content("a.bin", 2_500_000);
    let d = fsync_content("d.bin", 300_000);
    match fs::read(ds.join("a.bin")) {
        Ok(got) if got == a => {}
        Ok(got) if got.starts_with(&a) => failures.push(format!(
            "a.bin: {} bytes: the fsynced {} plus bytes written after the fsync and never synced or closed",
            got.len(),
            a.len()
        )),
        Ok(got) => failures.push(format!("a.bin: {} bytes after kill -9, not the {} bytes fsynced", got.len(), a.len())),
        Err(e) => failures.push(format!("a.bin (fsynced before kill -9): {e}")),
    }
    match fs::read(ds.join("b.bin")) {
        Ok(got) if got == old => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Ok(got) => failures.push(format!(
            "b.bin (reopened with O_TRUNC and written, never closed): {} bytes {:?}, expected its old closed content or nothing",
            got.len(),
            String::from_utf8_lossy(&got[..got.len().min(40)])
        )),
        Err(e) => failures.push(format!("b.bin: {e}")),
    }
    match fs::symlink_metadata(ds.join("c.bin")) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Ok(md) => failures.push(format!(
            "c.bin (created, never closed) exists after kill -9 with {} bytes",
            md.len()
        )),
        Err(e) => failures.push(format!("c.bin: {e}")),
    }
    match fs::read(ds.join("d.bin")) {
        Ok(got) if got == d => {}
        Ok(got) => failures.push(format!(
            "d.bin (closed right before kill -9): {} bytes, not the {} closed",
            got.len(),
            d.len()
        )),
        Err(e) => failures.push(format!("d.bin (closed right before kill -9): {e}")),
    }
    match commit_now(&ds, 60) {
        Ok(root) => {
            if fs::read(m.ipfs(&root).join("a.bin")).ok().as_ref() != Some(&a) {
                failures.push(format!(
                    "/ipfs/{root}/a.bin (committed) is not the fsynced content"
                ));
            }
            let mut names: Vec<String> = fs::read_dir(m.ipfs(&root))
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            names.sort();
            if names.iter().any(|n| n == "c.bin") {
                failures.push(format!("/ipfs/{root} holds c.bin, never closed: {names:?}"));
            }
        }
        Err(e) => failures.push(e),
    }
    eprintln!("{test}: {:?}", t0.elapsed());
    finish(&m, test, &failures);
}
