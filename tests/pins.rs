//! Named pins, garbage collection and dataset prune (issue 12) on real mounts, on loopback:
//!
//! - `pin add` through a mount's control socket fetches a whole DAG from another instance's
//!   gateway (`--serve`), names it, and keeps it: after `gc` and with the source gone, an
//!   `--offline` remount reads every byte; what was only cached is gone. A name moves to a new
//!   CID; `pin rm` removes names and pins.
//! - `pin add` on an unmounted store is resumable: blocks already stored are not fetched again.
//! - `gc` racing reads of pinned files and dataset writes loses nothing held.
//! - `dataset prune` then `gc` frees the old versions' own blocks; the head stays readable and
//!   the commit chain complete, `dataset log` marks pruned versions.
//!
//! Each test collects every problem it finds and fails at the end with the whole list.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// Runs `ipfs-mount <args> --store <store>`; (success, stdout, stderr).
fn cli(store: &Path, args: &[&str]) -> (bool, String, String) {
    let out = run(Command::new(BIN).args(args).arg("--store").arg(store));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `cli` that must succeed; its stdout.
fn cli_ok(store: &Path, args: &[&str], problems: &mut Vec<String>) -> String {
    let (ok, out, err) = cli(store, args);
    if !ok {
        problems.push(format!("ipfs-mount {args:?} failed: {err}"));
    }
    out
}

/// The pins of `pin ls --json`: (cid, names).
fn pin_list(store: &Path, problems: &mut Vec<String>) -> Vec<(String, Vec<String>)> {
    cli_ok(store, &["pin", "ls", "--json"], problems)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| {
            let names = v["names"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|n| n.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            (v["cid"].as_str().unwrap_or_default().to_string(), names)
        })
        .collect()
}

/// Bytes freed as `gc` reports them.
fn freed_bytes(text: &str) -> Option<u64> {
    text.split_whitespace()
        .skip_while(|w| *w != "freed")
        .nth(1)
        .and_then(|n| n.parse().ok())
}

fn finish(test: &str, problems: &[String]) {
    if !problems.is_empty() {
        panic!(
            "{test}: {} problem(s):\n- {}",
            problems.len(),
            problems.join("\n- ")
        );
    }
}

/// A store holding two imported directories (each several multi-block files), served read-only
/// by a mount's gateway; returns the mount, its gateway URL and the two roots with their files.
#[allow(clippy::type_complexity)]
fn source(tmp: &Path) -> (Mount, String, [(String, Vec<(String, Vec<u8>)>); 2]) {
    let store = tmp.join("source-store");
    fs::create_dir_all(&store).unwrap();
    let make = |seed: u64, n: usize| -> Vec<(String, Vec<u8>)> {
        (0..n)
            .map(|i| {
                (
                    format!("f{i}.bin"),
                    random_bytes(100_000 + 37_000 * i, seed + i as u64),
                )
            })
            .collect()
    };
    let sets = [make(1, 4), make(50, 3)];
    let mut roots = Vec::new();
    for (i, files) in sets.iter().enumerate() {
        let car = tmp.join(format!("set{i}.car"));
        let refs: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(n, d)| (n.as_str(), d.as_slice()))
            .collect();
        let root = car::write_dir_car(&car, &refs, 16 * 1024);
        let imported = import_car(&store, &[&car]);
        assert_eq!(imported, vec![root.clone()]);
        roots.push(root);
    }
    let port = free_port();
    let m = Mount::start_with_store(
        &store,
        &[
            "--offline",
            "--no-p2p",
            "--serve",
            &format!("127.0.0.1:{port}"),
        ],
    );
    let [a, b] = sets;
    let mut r = roots.into_iter();
    (
        m,
        format!("http://127.0.0.1:{port}"),
        [(r.next().unwrap(), a), (r.next().unwrap(), b)],
    )
}

/// `pin add` through the control socket of a mount, a name that moves, `gc`, and the pinned
/// DAG read back offline after the source is gone.
#[test]
fn pin_add_keeps_a_dag_offline_through_gc() {
    let test = "pin_add_keeps_a_dag_offline_through_gc";
    if !require_fuse(test) {
        return;
    }
    let mut problems = Vec::new();
    let tmp = tempdir(test);
    let (mut src, url, [(root_a, files_a), (root_b, files_b)]) = source(tmp.path());
    let mut b = Mount::start(&["--no-p2p", "--gateway", &url]);

    // Read one of B's files without pinning: cached only.
    let cached = b.ipfs(&root_b).join(&files_b[0].0);
    match fs::read(&cached) {
        Ok(d) if d == files_b[0].1 => {}
        other => b.fail(&format!(
            "reading {}: {:?}",
            cached.display(),
            other.map(|d| d.len())
        )),
    }

    let out = cli_ok(
        &b.store,
        &["pin", "add", &format!("/ipfs/{root_a}"), "--name", "data"],
        &mut problems,
    );
    if !out.starts_with(&root_a) || !out.contains("\tdata\t") {
        problems.push(format!("pin add printed {out:?}"));
    }
    let listed = pin_list(&b.store, &mut problems);
    if listed != vec![(root_a.clone(), vec!["data".to_string()])] {
        problems.push(format!("pin ls after add: {listed:?}"));
    }
    // Unknown targets and names are refused with a message, and change nothing.
    for bad in [
        &["pin", "add", "not-a-cid"][..],
        &["pin", "rm", "nosuchname"],
        &["pin", "add", &root_a, "--name", "a,b"],
    ] {
        let (ok, _, err) = cli(&b.store, bad);
        if ok || err.is_empty() {
            problems.push(format!("{bad:?} was accepted (stderr {err:?})"));
        }
    }

    let dry = cli_ok(&b.store, &["gc", "--dry-run"], &mut problems);
    let gc = cli_ok(&b.store, &["gc"], &mut problems);
    match (
        freed_bytes(&gc),
        dry.split_whitespace()
            .nth(2)
            .and_then(|n| n.parse::<u64>().ok()),
    ) {
        (Some(f), Some(d)) if f > 0 && f == d => {}
        other => problems.push(format!(
            "gc freed nothing or not what --dry-run said: {other:?} ({dry:?} / {gc:?})"
        )),
    }
    let again = cli_ok(&b.store, &["gc"], &mut problems);
    if freed_bytes(&again) != Some(0) {
        problems.push(format!("a second gc freed something: {again:?}"));
    }

    // The source goes away; an offline remount has every pinned byte, and nothing else.
    src.stop();
    b.restart_with(&["--offline"]);
    for (name, data) in &files_a {
        match fs::read(b.ipfs(&root_a).join(name)) {
            Ok(d) if &d == data => {}
            other => problems.push(format!(
                "pinned {name} offline: {:?}",
                other.map(|d| d.len())
            )),
        }
    }
    let p = cached.clone();
    match run_with_timeout(20, move || fs::read(&p)) {
        Some(Err(_)) => {}
        other => problems.push(format!(
            "collected {} still readable offline: {:?}",
            cached.display(),
            other.map(|r| r.map(|d| d.len()))
        )),
    }

    // The name moves to another CID (already local: a file of the pinned DAG).
    let file_cid =
        getfattr_cid(&b.ipfs(&root_a).join(&files_a[1].0)).unwrap_or_else(|e| b.fail(&e));
    let out = cli_ok(
        &b.store,
        &["pin", "add", "--name", "data", &file_cid],
        &mut problems,
    );
    if !out.contains(&format!("moved from {root_a}")) {
        problems.push(format!("moving the name printed {out:?}"));
    }
    let listed = pin_list(&b.store, &mut problems);
    if listed != vec![(file_cid.clone(), vec!["data".to_string()])] {
        problems.push(format!("pin ls after the move: {listed:?}"));
    }
    cli_ok(
        &b.store,
        &["pin", "add", &file_cid, "--name", "second"],
        &mut problems,
    );
    cli_ok(&b.store, &["pin", "rm", "data"], &mut problems);
    let listed = pin_list(&b.store, &mut problems);
    if listed != vec![(file_cid.clone(), vec!["second".to_string()])] {
        problems.push(format!(
            "pin ls after removing one of two names: {listed:?}"
        ));
    }
    cli_ok(&b.store, &["pin", "rm", &file_cid], &mut problems);
    if !pin_list(&b.store, &mut problems).is_empty() {
        problems.push("pins left after pin rm <cid>".into());
    }
    let gc = cli_ok(&b.store, &["gc"], &mut problems);
    if freed_bytes(&gc).unwrap_or(0) < files_a.iter().map(|f| f.1.len() as u64).sum::<u64>() {
        problems.push(format!("gc after unpinning freed too little: {gc:?}"));
    }
    b.stop();
    finish(test, &problems);
}

/// On an unmounted store, `pin add` fetches only what the store lacks: after pinning one file
/// of a directory, pinning the directory fetches the rest.
#[test]
fn pin_add_resumes_on_an_unmounted_store() {
    let test = "pin_add_resumes_on_an_unmounted_store";
    if !require_fuse(test) {
        return;
    }
    let mut problems = Vec::new();
    let tmp = tempdir(test);
    let (mut src, url, [(root_a, files_a), _]) = source(tmp.path());
    let store = tmp.path().join("cold");
    let fetched = |out: &str| -> Option<(u64, u64)> {
        let f: Vec<&str> = out.lines().next()?.split('\t').collect();
        let n = |s: &str| s.split(' ').next()?.parse::<u64>().ok();
        Some((n(f.get(2)?)?, n(f.get(4)?)?))
    };
    let first = cli_ok(
        &store,
        &[
            "pin",
            "add",
            "--gateway",
            &url,
            &format!("/ipfs/{root_a}/{}", files_a[2].0),
        ],
        &mut problems,
    );
    let whole = cli_ok(
        &store,
        &["pin", "add", "--gateway", &url, &root_a],
        &mut problems,
    );
    match (fetched(&first), fetched(&whole)) {
        // The path walk of the first add stored the directory's block too.
        (Some((b1, f1)), Some((b2, f2))) if f1 == b1 && b2 > b1 + 1 && f2 == b2 - b1 - 1 => {}
        other => problems.push(format!(
            "blocks/fetched of the two adds: {other:?} ({first:?}, {whole:?})"
        )),
    }
    // A DAG ten times the cache is fetched once and kept whole.
    let small = tmp.path().join("small");
    let out = cli_ok(
        &small,
        &[
            "pin",
            "add",
            "--cache-size",
            "64KiB",
            "--gateway",
            &url,
            &root_a,
        ],
        &mut problems,
    );
    match fetched(&out) {
        Some((b, f)) if f == b && b > 20 => {}
        other => problems.push(format!(
            "pin add into a 64 KiB cache: (blocks, fetched) = {other:?} ({out:?})"
        )),
    }
    src.stop();
    let m = Mount::start_with_store(&small, &["--offline", "--cache-size", "64KiB"]);
    for (name, data) in &files_a {
        match fs::read(m.ipfs(&root_a).join(name)) {
            Ok(d) if &d == data => {}
            other => problems.push(format!(
                "{name} offline from the 64 KiB cache store: {:?}",
                other.map(|d| d.len())
            )),
        }
    }
    drop(m);
    // Everything is there without a source: an offline mount reads it all.
    let m = Mount::start_with_store(&store, &["--offline"]);
    for (name, data) in &files_a {
        match fs::read(m.ipfs(&root_a).join(name)) {
            Ok(d) if &d == data => {}
            other => problems.push(format!("{name} offline: {:?}", other.map(|d| d.len()))),
        }
    }
    drop(m);
    finish(test, &problems);
}

/// `gc` in a loop while readers check pinned files and a writer fills a dataset: every pinned
/// byte and every written file reads back the same, during and after, also after a remount.
#[test]
fn gc_racing_reads_and_dataset_writes_loses_nothing_held() {
    let test = "gc_racing_reads_and_dataset_writes_loses_nothing_held";
    if !require_fuse(test) {
        return;
    }
    let mut problems = Vec::new();
    let tmp = tempdir(test);
    let (mut src, url, [(root_a, files_a), (root_b, files_b)]) = source(tmp.path());
    let mut m = Mount::start(&["--no-p2p", "--gateway", &url]);
    cli_ok(&m.store, &["pin", "add", &root_a], &mut problems);
    let ds = m.mnt.join("datasets/race");
    fs::create_dir(&ds).unwrap_or_else(|e| m.fail(&format!("mkdir: {e}")));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));

    let collector = {
        let (store, stop) = (m.store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut runs = 0u32;
            let mut errors = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (ok, _, err) = cli(&store, &["gc"]);
                if !ok {
                    errors.push(err);
                }
                runs += 1;
            }
            (runs, errors)
        })
    };
    let reader = {
        let (dir, stop, files) = (m.ipfs(&root_a), stop.clone(), files_a.clone());
        let (dir_b, files_b) = (m.ipfs(&root_b), files_b.clone());
        std::thread::spawn(move || {
            let mut bad = Vec::new();
            let mut reads = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for (name, data) in &files {
                    match fs::read(dir.join(name)) {
                        Ok(d) if &d == data => reads += 1,
                        other => bad.push(format!("{name}: {:?}", other.map(|d| d.len()))),
                    }
                }
                // Unpinned content: collected and fetched again, never wrong.
                for (name, data) in &files_b {
                    if let Ok(d) = fs::read(dir_b.join(name)) {
                        if &d != data {
                            bad.push(format!("unpinned {name}: wrong bytes"));
                        }
                    }
                }
            }
            (reads, bad)
        })
    };
    // A slow writer: one file open for seconds, 24 MiB in 1 MiB writes (streamed, its blocks
    // staged under a temporary pin long before it is closed and committed).
    let slow_data = random_bytes(24 << 20, 4242);
    let slow = {
        let (path, data) = (ds.join("slow.bin"), slow_data.clone());
        std::thread::spawn(move || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = fs::File::create(path)?;
            for chunk in data.chunks(1 << 20) {
                f.write_all(chunk)?;
                std::thread::sleep(Duration::from_millis(120));
            }
            f.sync_all()
        })
    };
    // The writer: 60 files of varied sizes, some rewritten, during the collections.
    let mut written = std::collections::BTreeMap::new();
    let t0 = Instant::now();
    for i in 0..60u64 {
        let data = random_bytes((i as usize * 7919) % 300_000 + 1, 1000 + i);
        let name = format!("w{}.bin", i % 45);
        if let Err(e) = fs::write(ds.join(&name), &data) {
            problems.push(format!("writing {name}: {e}"));
        }
        written.insert(name, data);
        if i % 10 == 9 {
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    match slow.join() {
        Ok(Ok(())) => {
            written.insert("slow.bin".to_string(), slow_data);
        }
        other => problems.push(format!("the slow writer failed: {other:?}")),
    }
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (runs, errors) = collector.join().unwrap();
    let (reads, bad) = reader.join().unwrap();
    eprintln!(
        "{runs} collections and {reads} pinned reads during {:?} of writes",
        t0.elapsed()
    );
    if runs < 3 {
        problems.push(format!("only {runs} collections ran during the writes"));
    }
    problems.extend(errors.into_iter().map(|e| format!("gc failed: {e}")));
    problems.extend(bad.into_iter().map(|e| format!("read during gc: {e}")));
    // Once more after everything is committed, then offline without the source.
    cli_ok(&m.store, &["dataset", "commit", "race"], &mut problems);
    cli_ok(&m.store, &["gc"], &mut problems);
    src.stop();
    m.restart_with(&["--offline"]);
    let ds = m.mnt.join("datasets/race");
    for (name, data) in &written {
        match fs::read(ds.join(name)) {
            Ok(d) if &d == data => {}
            other => problems.push(format!(
                "dataset file {name} after gc and remount: {:?}",
                other.map(|d| d.len())
            )),
        }
    }
    for (name, data) in &files_a {
        match fs::read(m.ipfs(&root_a).join(name)) {
            Ok(d) if &d == data => {}
            other => problems.push(format!(
                "pinned {name} after gc and remount: {:?}",
                other.map(|d| d.len())
            )),
        }
    }
    m.stop();
    finish(test, &problems);
}

/// The versions `dataset log --json` lists, newest first: (version, root, commit, pruned).
fn log_versions(
    store: &Path,
    name: &str,
    problems: &mut Vec<String>,
) -> Vec<(u64, String, String, bool)> {
    cli_ok(store, &["dataset", "log", name, "--json"], problems)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| {
            (
                v["version"].as_u64().unwrap_or(0),
                v["root"].as_str().unwrap_or_default().to_string(),
                v["commit"].as_str().unwrap_or_default().to_string(),
                v["pruned"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

/// Three versions, each replacing a 1 MiB file; `prune --keep-last 1` then `gc` frees the two
/// replaced files' blocks and nothing of the head, whose files read back (also offline after a
/// remount); the log keeps every version, the older ones marked pruned; later versions and
/// prunes keep working.
#[test]
fn prune_then_gc_frees_old_versions_and_keeps_the_head() {
    let test = "prune_then_gc_frees_old_versions_and_keeps_the_head";
    if !require_fuse(test) {
        return;
    }
    let mut problems = Vec::new();
    let mut m = Mount::start(&["--offline"]);
    let ds = m.mnt.join("datasets/hist");
    fs::create_dir(&ds).unwrap_or_else(|e| m.fail(&format!("mkdir: {e}")));
    let keep = random_bytes(500_000, 7);
    let olds = [random_bytes(1 << 20, 8), random_bytes(1 << 20, 9)];
    let new = random_bytes(1 << 20, 10);
    let write = |name: &str, data: &[u8]| {
        fs::write(ds.join(name), data).unwrap_or_else(|e| m.fail(&format!("{name}: {e}")))
    };
    write("keep.bin", &keep);
    // A time of its own, kept in the version's attributes tree (which prune must keep too).
    let keep_mtime = std::time::UNIX_EPOCH + Duration::new(1_234_567_890, 123_456_789);
    fs::File::options()
        .write(true)
        .open(ds.join("keep.bin"))
        .and_then(|f| f.set_times(fs::FileTimes::new().set_modified(keep_mtime)))
        .unwrap_or_else(|e| m.fail(&format!("set keep.bin's mtime: {e}")));
    write("old0.bin", &olds[0]);
    cli_ok(&m.store, &["dataset", "commit", "hist"], &mut problems);
    fs::remove_file(ds.join("old0.bin")).unwrap();
    write("old1.bin", &olds[1]);
    cli_ok(&m.store, &["dataset", "commit", "hist"], &mut problems);
    fs::remove_file(ds.join("old1.bin")).unwrap();
    write("new.bin", &new);
    cli_ok(&m.store, &["dataset", "commit", "hist"], &mut problems);
    let before = log_versions(&m.store, "hist", &mut problems);
    if before.len() < 3 || before.iter().any(|v| v.3) {
        m.fail(&format!("log before pruning: {before:?}"));
    }
    cli_ok(&m.store, &["gc"], &mut problems);

    let out = cli_ok(
        &m.store,
        &["dataset", "prune", "hist", "--keep-last", "1"],
        &mut problems,
    );
    let released = out.lines().filter(|l| l.starts_with("pruned\t")).count();
    if released != before.len() - 1 {
        problems.push(format!(
            "prune released {released} of {} versions: {out:?}",
            before.len()
        ));
    }
    let after = log_versions(&m.store, "hist", &mut problems);
    let expect: Vec<_> = before
        .iter()
        .enumerate()
        .map(|(i, v)| (v.0, v.1.clone(), v.2.clone(), i > 0))
        .collect();
    if after != expect {
        problems.push(format!("log after pruning: {after:?}, expected {expect:?}"));
    }
    let text = cli_ok(&m.store, &["dataset", "log", "hist"], &mut problems);
    let marked: Vec<bool> = text.lines().map(|l| l.ends_with("\tpruned")).collect();
    if marked.first() != Some(&false) || marked.iter().filter(|p| **p).count() != before.len() - 1 {
        problems.push(format!("dataset log text marks: {text:?}"));
    }
    let gc = cli_ok(&m.store, &["gc"], &mut problems);
    let freed = freed_bytes(&gc).unwrap_or(0);
    let old_bytes = 2 * (1u64 << 20);
    // The two replaced files (and the old directories), not keep.bin or new.bin.
    if freed < old_bytes || freed > old_bytes + 100_000 {
        problems.push(format!("gc after prune freed {freed} bytes, expected the {old_bytes} of the replaced files: {gc:?}"));
    }
    // Pruning again releases nothing; a new version and a prune of it work.
    let again = cli_ok(
        &m.store,
        &["dataset", "prune", "hist", "--keep-within", "1h"],
        &mut problems,
    );
    if again.lines().any(|l| l.starts_with("pruned\t")) {
        problems.push(format!("a second prune released versions: {again:?}"));
    }
    write("later.bin", &olds[0]);
    cli_ok(&m.store, &["dataset", "commit", "hist"], &mut problems);
    cli_ok(
        &m.store,
        &["dataset", "prune", "hist", "--keep-last", "1"],
        &mut problems,
    );
    cli_ok(&m.store, &["gc"], &mut problems);

    m.restart_with(&["--offline"]);
    let ds = m.mnt.join("datasets/hist");
    for (name, data) in [
        ("keep.bin", &keep),
        ("new.bin", &new),
        ("later.bin", &olds[0]),
    ] {
        match fs::read(ds.join(name)) {
            Ok(d) if &d == data => {}
            other => problems.push(format!(
                "head's {name} after prune, gc, remount: {:?}",
                other.map(|d| d.len())
            )),
        }
    }
    match fs::metadata(ds.join("keep.bin")).and_then(|md| md.modified()) {
        Ok(t) if t == keep_mtime => {}
        other => problems.push(format!(
            "keep.bin's mtime after prune, gc, remount: {other:?}, expected {keep_mtime:?}"
        )),
    }
    let old_root = &before[before.len() - 1].1;
    let p = m.ipfs(old_root).join("old0.bin");
    if let Some(Ok(_)) = run_with_timeout(20, move || fs::read(&p)) {
        problems.push("a pruned version's released file is still readable offline".into());
    }
    let final_log = log_versions(&m.store, "hist", &mut problems);
    if final_log.len() != before.len() + 1 || final_log.first().is_some_and(|v| v.3) {
        problems.push(format!("log at the end: {final_log:?}"));
    }
    m.stop();
    finish(test, &problems);
}

/// Polls `f` every 100 ms until it gives `Some` or `limit` passes.
fn poll<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let t = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if t.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// (blocks, fetched) of each "replica: new version" line of a mount's log.
fn replica_fetches(log: &str) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for line in log.lines().filter(|l| l.contains("replica: new version")) {
        // Without the terminal colours the log may carry.
        let mut plain = String::new();
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                for c in chars.by_ref() {
                    if c == 'm' {
                        break;
                    }
                }
            } else {
                plain.push(c);
            }
        }
        let field = |k: &str| -> Option<u64> {
            let rest = &plain[plain.find(&format!(" {k}="))? + k.len() + 2..];
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        };
        if let (Some(b), Some(f)) = (field("blocks"), field("fetched")) {
            out.push((b, f));
        }
    }
    out
}

/// Two mounts on loopback: B follows A's dataset as `/datasets/rep` (read-only), sees A's next
/// version within the record TTL (fetching only its new blocks), lists both versions in
/// `dataset log`, keeps the last one readable after A is gone, through `gc` and an offline
/// remount; `unfollow` removes it and `gc` frees it.
#[test]
fn follow_a_dataset_across_two_mounts() {
    let test = "follow_a_dataset_across_two_mounts";
    if !require_fuse(test) {
        return;
    }
    let mut problems = Vec::new();
    let port = free_port();
    let serve = format!("http://127.0.0.1:{port}");
    let mut a = common::p2p::p2p_mount(&[
        "--no-gateway",
        "--serve",
        &format!("127.0.0.1:{port}"),
        "--ipns-ttl",
        "2s",
    ]);
    let foo = a.mnt.join("datasets/foo");
    fs::create_dir(&foo).unwrap_or_else(|e| a.fail(&format!("mkdir: {e}")));
    let mut files: Vec<(String, Vec<u8>)> = (0..5u64)
        .map(|i| {
            (
                format!("part{i}.bin"),
                random_bytes(200_000 + 50_000 * i as usize, 300 + i),
            )
        })
        .collect();
    for (n, d) in &files {
        fs::write(foo.join(n), d).unwrap_or_else(|e| a.fail(&format!("{n}: {e}")));
    }
    let root1 = common::datasets::xattr(&foo, "user.ipfs.cid", 60).unwrap_or_else(|e| a.fail(&e));
    let name = common::datasets::xattr(&foo, "user.ipfs.name", 10).unwrap_or_else(|e| a.fail(&e));

    let mut b = Mount::start(&["--no-p2p", "--gateway", &serve]);
    // A publishes within about a second of the version: retry until B resolves it.
    let source = format!("/ipns/{name}");
    let followed = poll(Duration::from_secs(20), || {
        let (ok, out, err) = cli(&b.store, &["dataset", "follow", &source, "--as", "rep"]);
        if !ok && !err.contains("cannot follow") {
            return Some(Err(err));
        }
        ok.then_some(Ok(out))
    });
    match followed {
        Some(Ok(out)) if out.contains(&root1) => {}
        other => b.fail(&format!("dataset follow: {other:?}")),
    }
    let rep = b.mnt.join("datasets/rep");
    for (n, d) in &files {
        match fs::read(rep.join(n)) {
            Ok(got) if &got == d => {}
            other => problems.push(format!(
                "B: /datasets/rep/{n}: {:?}",
                other.map(|g| g.len())
            )),
        }
    }
    match fs::read_dir(b.mnt.join("datasets")) {
        Ok(rd) => {
            let listed: Vec<String> = rd
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            if listed != vec!["rep".to_string()] {
                problems.push(format!("B: ls /datasets gives {listed:?}"));
            }
        }
        Err(e) => problems.push(format!("B: ls /datasets: {e}")),
    }
    // Read-only: EROFS for every kind of change inside.
    let erofs = |r: std::io::Result<()>, what: &str, problems: &mut Vec<String>| match r {
        Err(e) if e.raw_os_error() == Some(libc::EROFS) => {}
        other => problems.push(format!(
            "B: {what} in the replica gave {other:?}, want EROFS"
        )),
    };
    erofs(
        fs::write(rep.join("new.txt"), b"x"),
        "creating a file",
        &mut problems,
    );
    erofs(
        fs::OpenOptions::new()
            .append(true)
            .open(rep.join(&files[0].0))
            .map(|_| ()),
        "opening a file for writing",
        &mut problems,
    );
    erofs(
        fs::remove_file(rep.join(&files[1].0)),
        "unlink",
        &mut problems,
    );
    erofs(fs::create_dir(rep.join("d")), "mkdir", &mut problems);
    erofs(
        fs::remove_dir(&rep),
        "rmdir of the replica itself",
        &mut problems,
    );

    // A's next version: one file changed. B shows it within the TTL (2 s) plus publishing.
    let t = Instant::now();
    files[2].1 = random_bytes(250_000, 999);
    fs::write(foo.join(&files[2].0), &files[2].1)
        .unwrap_or_else(|e| a.fail(&format!("rewrite: {e}")));
    let root2 = common::datasets::xattr(&foo, "user.ipfs.cid", 60).unwrap_or_else(|e| a.fail(&e));
    let seen = poll(Duration::from_secs(15), || {
        (fs::read(rep.join(&files[2].0)).ok()? == files[2].1).then_some(())
    });
    match seen {
        Some(()) => eprintln!("B shows A's new version {:?} after the write", t.elapsed()),
        None => {
            let log = b.log();
            let lines: Vec<&str> = log.lines().filter(|l| l.contains("replica")).collect();
            problems.push(format!(
                "B does not show A's new version 15 s after the write; B's replica log: {lines:?}"
            ))
        }
    }
    if t.elapsed() > Duration::from_secs(10) {
        problems.push(format!(
            "B took {:?} to show the new version (TTL 2 s)",
            t.elapsed()
        ));
    }
    // v1 came whole; v2 only its new blocks (the rewritten file and the new root), each
    // fetched once.
    match replica_fetches(&b.log()).as_slice() {
        [(b1, f1), (b2, f2)] if f1 == b1 && f2 == b2 && *b2 > 0 && b2 < b1 => {
            eprintln!("B took {b1} blocks for v1, then {b2} new blocks for v2")
        }
        other => problems.push(format!(
            "B's updates took (blocks, fetched) = {other:?}: v2 should bring only its new blocks"
        )),
    }
    // The two versions' pins hold every block B has: gc frees nothing.
    let gc = cli_ok(&b.store, &["gc"], &mut problems);
    if freed_bytes(&gc) != Some(0) {
        problems.push(format!(
            "B: gc with two replica versions freed something: {gc:?}"
        ));
    }
    let log = log_versions(&b.store, "rep", &mut problems);
    let roots: Vec<&str> = log.iter().map(|v| v.1.as_str()).collect();
    if roots != vec![root2.as_str(), root1.as_str()] {
        problems.push(format!(
            "B: dataset log rep lists {roots:?}, want [{root2}, {root1}]"
        ));
    }
    let list = cli_ok(&b.store, &["dataset", "list"], &mut problems);
    if !list
        .lines()
        .any(|l| l.starts_with("rep\tv2\t") && l.contains(&root2) && l.contains(&name))
    {
        problems.push(format!("B: dataset list: {list:?}"));
    }

    // `pin add` resolves an /ipns path through the mount.
    let out = cli_ok(
        &b.store,
        &[
            "pin",
            "add",
            &format!("{source}/{}", files[2].0),
            "--name",
            "part2",
        ],
        &mut problems,
    );
    let part2 =
        common::datasets::xattr(&rep.join(&files[2].0), "user.ipfs.cid", 10).unwrap_or_default();
    if part2.is_empty() || !out.starts_with(&format!("{part2}\tpart2\t")) {
        problems.push(format!(
            "B: pin add {source}/{} printed {out:?}, want {part2:?}",
            files[2].0
        ));
    }

    // A replica's history is bounded like a dataset's.
    cli_ok(
        &b.store,
        &["dataset", "prune", "rep", "--keep-last", "1"],
        &mut problems,
    );
    let pruned: Vec<bool> = log_versions(&b.store, "rep", &mut problems)
        .iter()
        .map(|v| v.3)
        .collect();
    if pruned != vec![false, true] {
        problems.push(format!(
            "B: after prune --keep-last 1 the replica's log marks {pruned:?}"
        ));
    }

    // A goes away: B keeps the last version, through gc and an offline remount.
    a.stop();
    std::thread::sleep(Duration::from_secs(3));
    cli_ok(&b.store, &["gc"], &mut problems);
    b.restart_with(&["--offline"]);
    let rep = b.mnt.join("datasets/rep");
    for (n, d) in &files {
        match fs::read(rep.join(n)) {
            Ok(got) if &got == d => {}
            other => problems.push(format!(
                "B offline, A gone: /datasets/rep/{n}: {:?}",
                other.map(|g| g.len())
            )),
        }
    }
    if log_versions(&b.store, "rep", &mut problems).len() != 2 {
        problems.push("B offline: dataset log rep lost versions".into());
    }
    // A second follow of the same local name is refused; unfollow removes the replica.
    let (ok, _, _) = cli(&b.store, &["dataset", "follow", &source, "--as", "rep"]);
    if ok {
        problems.push("a second follow --as rep was accepted".into());
    }
    cli_ok(&b.store, &["pin", "rm", "part2"], &mut problems);
    cli_ok(&b.store, &["dataset", "unfollow", "rep"], &mut problems);
    // The kernel may answer from its entry for up to its TTL (1 s).
    if poll(Duration::from_secs(3), || {
        fs::metadata(&rep).is_err().then_some(())
    })
    .is_none()
    {
        problems.push("/datasets/rep still there 3 s after unfollow".into());
    }
    let gc = cli_ok(&b.store, &["gc"], &mut problems);
    let total: u64 = files.iter().map(|f| f.1.len() as u64).sum();
    if freed_bytes(&gc).unwrap_or(0) < total {
        problems.push(format!(
            "gc after unfollow freed less than the replica's {total} bytes: {gc:?}"
        ));
    }
    b.stop();
    finish(test, &problems);
}
