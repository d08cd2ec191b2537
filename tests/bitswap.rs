//! ipfs-mount as a libp2p/bitswap peer (issue 4), on real mounts with the real reference peers (Kubo 0.22,
//! Helia 7; `../shared/peers`), all on loopback:
//!
//! - fetching with no gateway at all (`--no-gateway --peer ...`): a 256 MiB file and a HAMT directory from Kubo,
//!   files and a HAMT from Helia with both import profiles; byte for byte (SHA-256 streamed) and tree compare;
//! - serving: a dataset written with `cp` (both profiles) is downloaded by Kubo and fetched by Helia, same bytes,
//!   same CIDs;
//! - two of our own nodes holding different halves of one DAG, a third reads it whole;
//! - a provider killed mid-transfer (Kubo; Helia holds the same CIDs): the read completes or fails with EIO in
//!   time, and the mount answers `stat`/`statfs` at once meanwhile;
//! - a misbehaving peer (`common::p2p::TestPeer`, wrong bytes under the right CID prefix): EIO, its bytes never
//!   served nor stored; with an honest peer beside it the read succeeds;
//! - the server side on the wire, driven by an independent bitswap client (HAVE, DONT_HAVE, blocks and prefixes);
//! - a Kademlia DHT of three of our nodes (+ Kubo) where a node that knows only one bootstrap peer finds content
//!   that only a third node holds; delegated routing over HTTP;
//! - no socket of any process off loopback (`common::loopback`).
//!
//! Each test collects every problem it finds and fails at the end with the whole list, so one run shows every
//! product bug a test can see. Tests skip (or fail under `IPFS_MOUNT_REQUIRE_PEERS=1`) without FUSE or peers.

mod common;

use common::p2p::*;
use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

// ---------------------------------------------------------------------------------------------------------------
// Local helpers
// ---------------------------------------------------------------------------------------------------------------

/// Fails the test with every collected problem (and the tail of each mount's log).
fn finish(test: &str, mounts: &[&Mount], problems: &[String]) {
    if problems.is_empty() {
        return;
    }
    let mut msg = format!(
        "{test}: {} problem(s):\n- {}",
        problems.len(),
        problems.join("\n- ")
    );
    for m in mounts {
        let log = m.log();
        let lines: Vec<&str> = log.lines().collect();
        msg.push_str(&format!(
            "\n--- ipfs-mount log {} (last 60 lines):\n{}",
            m.log_path.display(),
            lines[lines.len().saturating_sub(60)..].join("\n")
        ));
    }
    panic!("{msg}");
}

/// Streams `path` through SHA-256 with a time limit; Err names the errno.
fn read_sha(path: &Path, secs: u64) -> Result<(u64, String, Duration), String> {
    let p = path.to_path_buf();
    let t = Instant::now();
    match run_with_timeout(secs, move || sha256_file(&p)) {
        None => Err(format!(
            "read {}: no answer within {secs} s",
            path.display()
        )),
        Some(Err(e)) => Err(format!(
            "read {}: {} ({e}) after {:.1} s",
            path.display(),
            errno_name(e.raw_os_error().unwrap_or(-1)),
            t.elapsed().as_secs_f64()
        )),
        Some(Ok((n, h))) => Ok((n, h, t.elapsed())),
    }
}

/// Reads a file through the mount and checks length and SHA-256 against the source's.
fn check_file(what: &str, path: &Path, len: u64, sha: &str, secs: u64, problems: &mut Vec<String>) {
    match read_sha(path, secs) {
        Ok((n, h, dt)) => {
            eprintln!(
                "{what}: {n} bytes in {:.2} s ({:.0} MiB/s)",
                dt.as_secs_f64(),
                n as f64 / MIB as f64 / dt.as_secs_f64().max(1e-6)
            );
            if n != len || h != sha {
                problems.push(format!(
                    "{what}: {} read {n} bytes with SHA-256 {h}; the source has {len} bytes, {sha}",
                    path.display()
                ));
            }
        }
        Err(e) => problems.push(format!("{what}: {e}")),
    }
}

/// `compare_trees` with a time limit.
fn check_tree(
    what: &str,
    src: &Path,
    mounted: &Path,
    sl: Symlinks,
    secs: u64,
    problems: &mut Vec<String>,
) {
    let (s, m) = (src.to_path_buf(), mounted.to_path_buf());
    let t = Instant::now();
    match run_with_timeout(secs, move || compare_trees(&s, &m, sl)) {
        None => problems.push(format!(
            "{what}: tree compare of {} did not finish in {secs} s",
            mounted.display()
        )),
        Some(Ok(n)) => eprintln!(
            "{what}: {n} entries equal to the source ({:.1} s)",
            t.elapsed().as_secs_f64()
        ),
        Some(Err(e)) => problems.push(format!(
            "{what}: {} differs from the source:\n{e}",
            mounted.display()
        )),
    }
}

/// The link named `name` of a dag-pb block.
fn link_cid(block: &[u8], name: &str) -> Option<String> {
    dagpb_links(block)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, c)| c)
}

/// Checks on the peer's own gateway that `dir_cid`'s entry `name` is a HAMT shard (UnixFS type 5); returns its CID.
fn expect_hamt(
    gateway: &str,
    dir_cid: &str,
    name: &str,
    problems: &mut Vec<String>,
) -> Option<String> {
    let root = gateway_block(gateway, dir_cid)?;
    let Some(c) = link_cid(&root, name) else {
        problems.push(format!("{dir_cid} has no link {name:?}"));
        return None;
    };
    match gateway_block(gateway, &c).map(|b| dagpb_unixfs_type(&b)) {
        Some((Some(5), links)) => {
            eprintln!("{dir_cid}/{name} = {c}: HAMT shard with {links} links");
            Some(c)
        }
        other => {
            problems.push(format!(
                "test set-up: {dir_cid}/{name} = {c} is not a HAMT shard ({other:?}); the peer did not shard"
            ));
            Some(c)
        }
    }
}

/// `/ip4/.../tcp/N/p2p/ID` without the `/p2p/ID`.
fn strip_p2p(maddr: &str) -> String {
    maddr.split("/p2p/").next().unwrap_or(maddr).to_string()
}

fn pids(list: &[Option<u32>]) -> Vec<u32> {
    list.iter().flatten().copied().collect()
}

/// `cp -r <src>/. <dst>` with a time limit.
fn cp_into(src: &Path, dst: &Path, secs: u64) -> Result<(), String> {
    let mut c = Command::new("cp");
    c.arg("-r").arg(format!("{}/.", src.display())).arg(dst);
    let what = format!("cp -r {}/. {}", src.display(), dst.display());
    match run_with_timeout(secs, move || c.output()) {
        None => Err(format!("{what}: timed out after {secs} s")),
        Some(Err(e)) => Err(format!("{what}: {e}")),
        Some(Ok(o)) if o.status.success() => Ok(()),
        Some(Ok(o)) => Err(format!(
            "{what}: {}: {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        )),
    }
}

/// The dataset's root CID (user.ipfs.cid of `<mnt>/datasets/<name>`), and of some entries.
fn cids_of(ds: &Path, rels: &[&str]) -> Result<Vec<String>, String> {
    let mut v = vec![getfattr_cid(ds)?];
    for r in rels {
        v.push(getfattr_cid(&ds.join(r))?);
    }
    Ok(v)
}

/// True if any file under `dir` contains `needle`.
fn dir_contains_bytes(dir: &Path, needle: &[u8]) -> Option<PathBuf> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(m) = fs::symlink_metadata(&p) else {
                continue;
            };
            if m.is_dir() {
                stack.push(p);
            } else if m.is_file() && m.len() < (256 << 20) {
                if let Ok(b) = fs::read(&p) {
                    if b.windows(needle.len()).any(|w| w == needle) {
                        return Some(p);
                    }
                }
            }
        }
    }
    None
}

/// A one-line description of a bitswap message (CIDs of blocks and presences; no bytes).
fn summary(m: &wire::Message) -> String {
    let blocks: Vec<String> = m
        .payload
        .iter()
        .map(|(p, d)| match wire::cid_of(p, d) {
            Some(c) => format!("{c} ({} B)", d.len()),
            None => format!("prefix {p:02x?} ({} B)", d.len()),
        })
        .collect();
    format!(
        "wants {}, blocks [{}], presences {:?}, pending {}",
        m.wants.len(),
        blocks.join(", "),
        m.presences,
        m.pending_bytes
    )
}

/// Loopback check of these PIDs right now, as a problem if violated.
fn loopback_now(what: &str, p: &[u32], problems: &mut Vec<String>) {
    if let Err(e) = check_loopback(p) {
        problems.push(format!("{what}: {e}"));
    }
}

fn loopback_finish(w: LoopbackWatch, problems: &mut Vec<String>) {
    match w.finish() {
        Ok(n) => eprintln!("loopback check: {n} checks, all sockets on loopback"),
        Err(e) => problems.push(format!("socket off loopback: {e}")),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Identity
// ---------------------------------------------------------------------------------------------------------------

/// `ipfs-mount id`: a persistent Ed25519 identity in `<store>/identity.key` (0600), the same peer id after a
/// restart, the real listen address while mounted, and the plain output format.
#[test]
fn identity_is_persistent_and_private() {
    let test = "identity_is_persistent_and_private";
    if !require_fuse(test) {
        return;
    }
    let mut problems = Vec::new();
    let mut m = p2p_mount(&["--no-gateway", "--offline"]);
    let a1 = mount_maddr(&m);
    let id1 = node_id(&m.store).unwrap().id;
    if !id1.starts_with("12D3Koo") {
        problems.push(format!(
            "peer id {id1} is not an Ed25519 peer id (12D3Koo...)"
        ));
    }
    let key = m.store.join("identity.key");
    match fs::metadata(&key) {
        Ok(md) => {
            use std::os::unix::fs::PermissionsExt;
            if md.permissions().mode() & 0o777 != 0o600 {
                problems.push(format!(
                    "{}: mode {:o}, expected 600",
                    key.display(),
                    md.permissions().mode() & 0o777
                ));
            }
        }
        Err(e) => problems.push(format!("{}: {e}", key.display())),
    }
    let plain = run(Command::new(BIN).arg("id").arg("--store").arg(&m.store));
    let text = String::from_utf8_lossy(&plain.stdout).into_owned();
    let mut lines = text.lines();
    if lines.next() != Some(id1.as_str()) {
        problems.push(format!(
            "`ipfs-mount id` (plain): first line is not the peer id {id1}:\n{text}"
        ));
    }
    if !lines.any(|l| l.trim() == a1) {
        problems.push(format!(
            "`ipfs-mount id` (plain) does not list {a1}:\n{text}"
        ));
    }
    m.restart();
    let a2 = mount_maddr(&m);
    let id2 = node_id(&m.store).unwrap().id;
    if id1 != id2 || !a2.ends_with(&id1) {
        problems.push(format!(
            "peer id changed across a restart: {id1} -> {id2} ({a2})"
        ));
    }
    drop(m);
    finish(test, &[], &problems);
}

// ---------------------------------------------------------------------------------------------------------------
// Fetching from the reference peers with no gateway
// ---------------------------------------------------------------------------------------------------------------

/// Kubo 0.22 (CIDv0 classic profile) → mount, `--no-gateway --peer <kubo>`: a 256 MiB file byte for byte, and a
/// HAMT directory of 3000 entries listed and compared with the source.
#[test]
fn kubo_to_mount_256mib_and_hamt() {
    let test = "kubo_to_mount_256mib_and_hamt";
    let Some(peers) = require_peers(test) else {
        return;
    };
    let mut problems = Vec::new();
    let tmp = tempdir(test);
    let big = tmp.path().join("big.bin");
    let sha = write_random_file_sha(&big, 256 * MIB, 401);
    let tree = make_tree(&tmp.path().join("tree"), &TreeSpec::hamt(402, 3000));
    let kubo = Kubo::start_with(&peers, Some("64KiB"));
    let t = Instant::now();
    let big_cid = kubo.add_path(&big);
    eprintln!(
        "kubo add 256 MiB: {big_cid} ({:.1} s)",
        t.elapsed().as_secs_f64()
    );
    fs::remove_file(&big).unwrap();
    let tree_cid = kubo.add_path(&tree);
    let many = expect_hamt(kubo.gateway_url(), &tree_cid, "many", &mut problems);

    let m = p2p_mount(&["--no-gateway", "--peer", &kubo.multiaddr]);
    let watch = LoopbackWatch::start(pids(&[m.pid(), kubo.pid()]), Duration::from_secs(2));
    check_file(
        "256 MiB from Kubo over bitswap",
        &m.ipfs(&big_cid),
        256 * MIB,
        &sha,
        600,
        &mut problems,
    );
    check_tree(
        "HAMT (3000 entries) from Kubo",
        &tree,
        &m.ipfs(&tree_cid),
        Symlinks::Preserve,
        600,
        &mut problems,
    );
    if let Some(many) = many {
        match getfattr_cid(&m.ipfs(&tree_cid).join("many")) {
            Ok(c) if c == many => {}
            other => problems.push(format!(
                "user.ipfs.cid of many/: {other:?}, Kubo says {many}"
            )),
        }
    }
    loopback_finish(watch, &mut problems);
    finish(test, &[&m], &problems);
}

/// Helia → mount with `--no-gateway --peer <helia>`: unixfs-v1-2025 (a 64 MiB file and a 2000-entry HAMT) and
/// unixfs-v0-2015 (a 32 MiB file and a small tree).
#[test]
fn helia_to_mount_both_profiles() {
    let test = "helia_to_mount_both_profiles";
    let Some(peers) = require_peers(test) else {
        return;
    };
    let mut problems = Vec::new();
    let tmp = tempdir(test);
    let f1 = tmp.path().join("v1.bin");
    let sha1 = write_random_file_sha(&f1, 64 * MIB, 501);
    let f0 = tmp.path().join("v0.bin");
    let sha0 = write_random_file_sha(&f0, 32 * MIB, 502);
    let hamt = make_tree(&tmp.path().join("hamt"), &TreeSpec::hamt(503, 2000));
    let small = make_tree(&tmp.path().join("small"), &TreeSpec::helia(504, 0));
    let helia = Helia::start(&peers);
    let v1 = HeliaAdd::profile("unixfs-v1-2025");
    let v0 = HeliaAdd::profile("unixfs-v0-2015");
    let c1 = helia.add_path(&f1, &v1);
    let c0 = helia.add_path(&f0, &v0);
    let hamt_opts = HeliaAdd {
        shard_split_threshold: Some(65536),
        ..v1.clone()
    };
    let chamt = helia.add_path(&hamt, &hamt_opts);
    let csmall = helia.add_path(&small, &v0);
    expect_hamt(helia.gateway_url(), &chamt, "many", &mut problems);
    if !c0.starts_with("Qm") || !csmall.starts_with("Qm") {
        problems.push(format!(
            "test set-up: Helia v0 profile gave {c0}, {csmall} (expected CIDv0)"
        ));
    }

    let m = p2p_mount(&["--no-gateway", "--peer", &helia.multiaddr]);
    let watch = LoopbackWatch::start(pids(&[m.pid(), helia.pid()]), Duration::from_secs(2));
    check_file(
        "64 MiB unixfs-v1-2025 from Helia",
        &m.ipfs(&c1),
        64 * MIB,
        &sha1,
        300,
        &mut problems,
    );
    check_file(
        "32 MiB unixfs-v0-2015 from Helia",
        &m.ipfs(&c0),
        32 * MIB,
        &sha0,
        300,
        &mut problems,
    );
    check_tree(
        "HAMT (2000 entries, v1) from Helia",
        &hamt,
        &m.ipfs(&chamt),
        Symlinks::Follow,
        600,
        &mut problems,
    );
    check_tree(
        "small tree (v0) from Helia",
        &small,
        &m.ipfs(&csmall),
        Symlinks::Follow,
        300,
        &mut problems,
    );
    loopback_finish(watch, &mut problems);
    finish(test, &[&m], &problems);
}

// ---------------------------------------------------------------------------------------------------------------
// Serving: datasets written with cp, fetched by Kubo and Helia
// ---------------------------------------------------------------------------------------------------------------

/// A dataset written through the mount with `cp` (default unixfs-v1-2025, and one created with
/// `--profile unixfs-v0-2015`) is fetched by Helia (`/connect` + `/fetch`, then `/cat` offline) and downloaded by
/// Kubo (`/connect` + `/download`): same bytes, and the peers compute the same CIDs from what they got.
#[test]
fn mount_serves_datasets_to_kubo_and_helia() {
    let test = "mount_serves_datasets_to_kubo_and_helia";
    let Some(peers) = require_peers(test) else {
        return;
    };
    let mut problems = Vec::new();
    let tmp = tempdir(test);
    let src = tmp.path().join("src");
    let file_sha = write_random_file_sha(&src.join("file.bin"), 24 * MIB, 601);
    make_tree(&src.join("tree"), &TreeSpec::helia(602, 0));
    let kubo = Kubo::start(&peers);
    let helia = Helia::start(&peers);
    let m = p2p_mount(&["--no-gateway"]);
    let addr = mount_maddr(&m);
    let watch = LoopbackWatch::start(
        pids(&[m.pid(), kubo.pid(), helia.pid()]),
        Duration::from_secs(2),
    );

    // Write the datasets.
    let mut sets: Vec<(&str, String, String)> = Vec::new(); // (profile, root, file CID)
    let ds1 = m.mnt.join("datasets/served-v1");
    match fs::create_dir(&ds1) {
        Ok(()) => match cp_into(&src, &ds1, 300).and_then(|_| cids_of(&ds1, &["file.bin"])) {
            Ok(c) => sets.push(("unixfs-v1-2025", c[0].clone(), c[1].clone())),
            Err(e) => problems.push(format!("v1 dataset: {e}")),
        },
        Err(e) => problems.push(format!("mkdir {}: {e}", ds1.display())),
    }
    let out = run(Command::new(BIN)
        .args(["dataset", "--store"])
        .arg(&m.store)
        .args(["create", "served-v0", "--profile", "unixfs-v0-2015"]));
    let ds0 = m.mnt.join("datasets/served-v0");
    if !out.status.success() || !ds0.is_dir() {
        problems.push(format!(
            "ipfs-mount dataset create served-v0 --profile unixfs-v0-2015: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    } else {
        match cp_into(&src, &ds0, 300).and_then(|_| cids_of(&ds0, &["file.bin"])) {
            Ok(c) => sets.push(("unixfs-v0-2015", c[0].clone(), c[1].clone())),
            Err(e) => problems.push(format!("v0 dataset: {e}")),
        }
    }
    eprintln!("datasets: {sets:?}; the mount is {addr}");

    // Helia first (before anything puts these blocks into Helia's store by other means).
    match helia.connect_peer(&addr) {
        Err(e) => problems.push(format!("Helia cannot connect to the mount: {e}")),
        Ok(()) => {
            for (profile, root, file_cid) in &sets {
                match helia.fetch_dag(root, 300) {
                    Ok((blocks, bytes, s)) => {
                        eprintln!("Helia fetched {profile} {root}: {blocks} blocks, {bytes} bytes, {s:.2} s")
                    }
                    Err(e) => problems.push(format!(
                        "Helia /fetch {profile} dataset {root} from the mount: {e}"
                    )),
                }
                // Offline: everything must be in Helia's blockstore now.
                match helia.cat(file_cid, false) {
                    Ok(b) => {
                        if sha256_hex(&b) != file_sha {
                            problems.push(format!(
                                "Helia /cat {file_cid} ({profile} file.bin): {} bytes that differ from the source",
                                b.len()
                            ));
                        }
                    }
                    Err(e) => problems.push(format!(
                        "Helia /cat {file_cid} ({profile}) after /fetch: {e}"
                    )),
                }
            }
        }
    }

    // Kubo downloads the whole tree.
    match kubo.connect_peer(&addr) {
        Err(e) => problems.push(format!("Kubo cannot connect to the mount: {e}")),
        Ok(()) => {
            for (profile, root, _) in &sets {
                let dest = tmp.path().join(format!("kubo-{profile}"));
                match kubo.download_to(root, &dest, 300) {
                    Ok(s) => {
                        eprintln!("Kubo downloaded {profile} {root} in {s:.2} s");
                        check_tree(
                            &format!("Kubo's download of {profile}"),
                            &src,
                            &dest,
                            Symlinks::Preserve,
                            300,
                            &mut problems,
                        );
                        // The same CIDs from the bytes Kubo got.
                        let again = if *profile == "unixfs-v0-2015" {
                            kubo.add_path(&dest)
                        } else {
                            helia.add_path(&dest, &HeliaAdd::profile("unixfs-v1-2025"))
                        };
                        if &again != root {
                            problems.push(format!(
                                "{profile}: the dataset root is {root}, the peer computes {again} from Kubo's download"
                            ));
                        }
                    }
                    Err(e) => problems.push(format!(
                        "Kubo /download {profile} dataset {root} from the mount: {e}"
                    )),
                }
            }
        }
    }
    loopback_finish(watch, &mut problems);
    finish(test, &[&m], &problems);
}

// ---------------------------------------------------------------------------------------------------------------
// Two providers, each with half of a DAG
// ---------------------------------------------------------------------------------------------------------------

/// Two of our nodes (`--offline`, serving only) each hold part of one directory DAG, imported from partial CARs:
/// `a.bin` only on A, `b.bin` only on B, and `mixed.bin` with its even leaves on A and its odd leaves on B. A third
/// node with `--peer A --peer B` and no gateway reads the whole directory.
#[test]
fn two_providers_with_halves_of_a_dag() {
    let test = "two_providers_with_halves_of_a_dag";
    if !require_fuse(test) {
        return;
    }
    let mut problems = Vec::new();
    let tmp = tempdir(test);
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let chunk = 256 << 10;
    let a = random_bytes(4 << 20, 701);
    let b = random_bytes(4 << 20, 702);
    let mixed = random_bytes(16 << 20, 703);
    fs::write(src.join("a.bin"), &a).unwrap();
    fs::write(src.join("b.bin"), &b).unwrap();
    fs::write(src.join("mixed.bin"), &mixed).unwrap();
    let (fa, fb, fm) = (
        car::file(&a, chunk),
        car::file(&b, chunk),
        car::file(&mixed, chunk),
    );
    let dir = car::directory(&[
        ("a.bin", fa[0].cid, car::tsize(&fa)),
        ("b.bin", fb[0].cid, car::tsize(&fb)),
        ("mixed.bin", fm[0].cid, car::tsize(&fm)),
    ]);
    let root = dir.cid;
    let mut half_a = vec![dir.clone(), fm[0].clone()];
    let mut half_b = vec![dir.clone(), fm[0].clone()];
    half_a.extend(fa.iter().cloned());
    half_b.extend(fb.iter().cloned());
    for (i, leaf) in fm[1..].iter().enumerate() {
        if i % 2 == 0 {
            half_a.push(leaf.clone());
        } else {
            half_b.push(leaf.clone());
        }
    }
    let mut mounts = Vec::new();
    let mut addrs = Vec::new();
    for (name, half) in [("a", &half_a), ("b", &half_b)] {
        let car_path = tmp.path().join(format!("{name}.car"));
        let mut f = fs::File::create(&car_path).unwrap();
        car::write(&root, half, &mut f).unwrap();
        let store = tmp.path().join(format!("store-{name}"));
        fs::create_dir_all(&store).unwrap();
        let out = run(Command::new(BIN)
            .arg("import")
            .arg("--store")
            .arg(&store)
            .arg(&car_path));
        if !out.status.success() {
            problems.push(format!(
                "ipfs-mount import of a partial DAG ({name}.car: root {root} with {} of its blocks): {}: {}",
                half.len(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
            finish(test, &[], &problems);
            return;
        }
        let m = p2p_mount_with_store(&store, &["--no-gateway", "--offline"]);
        addrs.push(mount_maddr(&m));
        mounts.push(m);
    }
    let c = p2p_mount(&[
        "--no-gateway",
        "--peer",
        &addrs[0],
        "--peer",
        &addrs[1],
        "--timeout",
        "20",
    ]);
    let watch = LoopbackWatch::start(
        pids(&[mounts[0].pid(), mounts[1].pid(), c.pid()]),
        Duration::from_secs(2),
    );
    let t = Instant::now();
    check_tree(
        "a directory split across two providers",
        &src,
        &c.ipfs(&root.to_string()),
        Symlinks::Preserve,
        300,
        &mut problems,
    );
    eprintln!(
        "read from two providers in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    // Each provider still holds only its half (nothing was pushed to it).
    loopback_finish(watch, &mut problems);
    finish(test, &[&c, &mounts[0], &mounts[1]], &problems);
}

// ---------------------------------------------------------------------------------------------------------------
// A provider killed mid-transfer
// ---------------------------------------------------------------------------------------------------------------

/// Kubo and Helia hold the same 64 MiB file (unixfs-v0-2015 on Helia gives Kubo's CIDs). While the mount reads it
/// (paced, so the transfer is still going), Kubo is stopped. The read must complete with the right bytes from Helia
/// or fail with EIO within the timeout; meanwhile `stat` and `statfs` of the mount root answer in < 1 s.
#[test]
fn provider_killed_mid_transfer() {
    let test = "provider_killed_mid_transfer";
    let Some(peers) = require_peers(test) else {
        return;
    };
    let mut problems = Vec::new();
    let tmp = tempdir(test);
    let f = tmp.path().join("f.bin");
    let len = 64 * MIB;
    let sha = write_random_file_sha(&f, len, 801);
    let mut kubo = Kubo::start(&peers);
    let helia = Helia::start(&peers);
    let kcid = kubo.add_path(&f);
    let hcid = helia.add_path(&f, &HeliaAdd::profile("unixfs-v0-2015"));
    if kcid != hcid {
        problems.push(format!(
            "test set-up: Kubo {kcid} and Helia v0 {hcid} differ"
        ));
        finish(test, &[], &problems);
        return;
    }
    let timeout = 10u64;
    let m = p2p_mount(&[
        "--no-gateway",
        "--peer",
        &kubo.multiaddr,
        "--peer",
        &helia.multiaddr,
        "--timeout",
        &timeout.to_string(),
    ]);

    // stat prober: stat + statfs of the root every 100 ms, worst latency kept.
    let done = Arc::new(AtomicBool::new(false));
    let (d, mnt) = (done.clone(), m.mnt.clone());
    let prober = std::thread::spawn(move || {
        let mut worst = Duration::ZERO;
        let mut n = 0;
        let mut errs = Vec::new();
        while !d.load(Ordering::Relaxed) {
            let t = Instant::now();
            let p = mnt.clone();
            match run_with_timeout(10, move || (fs::metadata(&p).map(|_| ()), fuse_answers(&p))) {
                None => {
                    worst = worst.max(Duration::from_secs(10));
                    errs.push("stat/statfs of the root: no answer in 10 s".to_string());
                }
                Some((Err(e), _)) => errs.push(format!("stat of the root: {e}")),
                Some((_, Err(e))) => errs.push(format!("statfs of the root: {}", errno_name(e))),
                _ => {}
            }
            worst = worst.max(t.elapsed());
            n += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
        (worst, n, errs)
    });

    let progress = Arc::new(AtomicU64::new(0));
    let (pr, path) = (progress.clone(), m.ipfs(&kcid));
    let reader = std::thread::spawn(move || {
        let t = Instant::now();
        let r = sha256_file_with(&path, Some(&pr), Duration::from_millis(40));
        (r, t.elapsed())
    });
    let t = Instant::now();
    while progress.load(Ordering::Relaxed) < 8 * MIB
        && !reader.is_finished()
        && t.elapsed() < Duration::from_secs(120)
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    let at = progress.load(Ordering::Relaxed);
    let killed = Instant::now();
    kubo.stop();
    eprintln!(
        "stopped Kubo after {at} bytes of {len} had been read ({:.2} s into the read; stop took {:.2} s)",
        t.elapsed().as_secs_f64(),
        killed.elapsed().as_secs_f64()
    );
    if at >= len {
        problems.push("test set-up: the whole file was read before Kubo could be stopped".into());
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if !reader.is_finished() {
        problems.push(format!(
            "the read did not finish within 300 s after Kubo was stopped (at {} bytes)",
            progress.load(Ordering::Relaxed)
        ));
    } else {
        let (r, total) = reader.join().unwrap();
        let after_kill = killed.elapsed();
        match r {
            Ok((n, h)) if n == len && h == sha => eprintln!(
                "the read completed from the remaining provider: {n} bytes, right SHA-256, {:.1} s in all",
                total.as_secs_f64()
            ),
            Ok((n, h)) => problems.push(format!("the read gave {n} bytes with SHA-256 {h}: wrong bytes")),
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(-1);
                eprintln!("the read failed with {} {:.1} s after Kubo was stopped", errno_name(errno), after_kill.as_secs_f64());
                if errno != libc::EIO {
                    problems.push(format!("the read failed with {} ({e}), expected success or EIO", errno_name(errno)));
                }
                if after_kill > Duration::from_secs(timeout * 3 + 15) {
                    problems.push(format!(
                        "the read failed only {:.1} s after Kubo was stopped (--timeout {timeout})",
                        after_kill.as_secs_f64()
                    ));
                }
            }
        }
    }
    done.store(true, Ordering::Relaxed);
    let (worst, n, errs) = prober.join().unwrap();
    eprintln!(
        "stat/statfs of the root: {n} probes, worst {:.3} s",
        worst.as_secs_f64()
    );
    if worst >= Duration::from_secs(1) {
        problems.push(format!(
            "stat/statfs of the mount root took {:.2} s during the transfer (>= 1 s)",
            worst.as_secs_f64()
        ));
    }
    problems.extend(errs.into_iter().take(5));
    loopback_now(
        "after the transfer",
        &pids(&[m.pid(), helia.pid()]),
        &mut problems,
    );
    finish(test, &[&m], &problems);
}

// ---------------------------------------------------------------------------------------------------------------
// A misbehaving peer
// ---------------------------------------------------------------------------------------------------------------

/// A peer that says HAVE to everything and answers want-blocks with wrong bytes under the wanted CID's prefix:
/// alone, the read fails with EIO within the timeout, the bytes never appear and the store does not keep them;
/// beside an honest Kubo, the read succeeds with the right bytes.
#[test]
fn misbehaving_peer_is_never_trusted() {
    let test = "misbehaving_peer_is_never_trusted";
    let Some(peers) = require_peers(test) else {
        return;
    };
    let mut problems = Vec::new();
    let tmp = tempdir(test);
    let f = tmp.path().join("f.bin");
    let data = random_bytes(1 << 20, 901);
    fs::write(&f, &data).unwrap();
    let kubo = Kubo::start(&peers);
    let cid = kubo.add_path(&f);
    let evil = TestPeer::start(Responder::WrongBytes);
    let timeout = 5u64;
    let ts = timeout.to_string();

    // 1. Only the evil peer.
    let mut m = p2p_mount(&["--no-gateway", "--peer", &evil.multiaddr, "--timeout", &ts]);
    let (ok, _) = evil.wait_for(20, |l| !l.ever_connected.is_empty());
    if !ok {
        problems.push(format!(
            "the mount did not connect to --peer {} within 20 s",
            evil.multiaddr
        ));
    }
    let t = Instant::now();
    let p = m.ipfs(&cid);
    let r = run_with_timeout(120, move || fs::read(&p));
    let dt = t.elapsed();
    match r {
        None => problems.push("evil peer only: the read did not return within 120 s".into()),
        Some(Ok(b)) => problems.push(format!(
            "evil peer only: the read SUCCEEDED with {} bytes (evil marker inside: {})",
            b.len(),
            b.windows(EVIL_MARKER.len()).any(|w| w == EVIL_MARKER)
        )),
        Some(Err(e)) => {
            let errno = e.raw_os_error().unwrap_or(-1);
            eprintln!(
                "evil peer only: read failed with {} after {:.1} s",
                errno_name(errno),
                dt.as_secs_f64()
            );
            if errno != libc::EIO {
                problems.push(format!(
                    "evil peer only: the read failed with {} ({e}), expected EIO",
                    errno_name(errno)
                ));
            }
            if dt > Duration::from_secs(timeout * 3 + 15) {
                problems.push(format!(
                    "evil peer only: EIO came after {:.1} s (--timeout {timeout})",
                    dt.as_secs_f64()
                ));
            }
        }
    }
    let l = evil.log();
    eprintln!(
        "evil peer: {} want-have, {} want-block, {} cancels, {} HAVEs and {} wrong blocks sent, errors {:?}",
        l.want_have, l.want_block, l.cancels, l.haves_sent, l.bad_blocks_sent, l.errors
    );
    if l.bad_blocks_sent == 0 {
        problems.push(format!(
            "the mount never sent a want-block to the evil peer (want-have {}, want-block {}), so the wrong bytes \
             were never offered",
            l.want_have, l.want_block
        ));
    }
    if !l.wanted().iter().any(|c| {
        c.to_string() == cid || c.hash() == cid::Cid::try_from(cid.as_str()).unwrap().hash()
    }) {
        problems.push(format!(
            "the evil peer was never asked for {cid}: {:?}",
            l.wanted()
        ));
    }
    // The store must not keep the wrong bytes, nor serve them after a restart.
    m.stop();
    if let Some(p) = dir_contains_bytes(&m.store, EVIL_MARKER) {
        problems.push(format!(
            "the evil peer's bytes are in the store: {}",
            p.display()
        ));
    }
    let mut args = LISTEN_ANY.to_vec();
    args.extend(["--no-gateway", "--offline"]);
    m.restart_with(&args);
    let p = m.ipfs(&cid);
    match run_with_timeout(60, move || fs::read(&p)) {
        Some(Ok(b)) => problems.push(format!(
            "after a remount --offline, {cid} reads as {} bytes from the store",
            b.len()
        )),
        Some(Err(e)) => eprintln!("after a remount --offline: {e} (good: not in the store)"),
        None => problems.push("after a remount --offline: the read hung for 60 s".into()),
    }

    // 2. The evil peer and an honest one.
    let m2 = p2p_mount(&[
        "--no-gateway",
        "--peer",
        &evil.multiaddr,
        "--peer",
        &kubo.multiaddr,
        "--timeout",
        &ts,
    ]);
    let before = evil.log().bad_blocks_sent;
    let t = Instant::now();
    let p = m2.ipfs(&cid);
    match run_with_timeout(120, move || fs::read(&p)) {
        None => problems.push("evil + Kubo: the read did not return within 120 s".into()),
        Some(Ok(b)) if b == data => eprintln!(
            "evil + Kubo: right bytes in {:.2} s",
            t.elapsed().as_secs_f64()
        ),
        Some(Ok(b)) => problems.push(format!(
            "evil + Kubo: WRONG bytes ({} bytes, evil marker inside: {})",
            b.len(),
            b.windows(EVIL_MARKER.len()).any(|w| w == EVIL_MARKER)
        )),
        Some(Err(e)) => problems.push(format!("evil + Kubo: the read failed: {e}")),
    }
    eprintln!(
        "evil + Kubo: the evil peer sent {} wrong blocks",
        evil.log().bad_blocks_sent - before
    );
    finish(test, &[&m, &m2], &problems);
}

// ---------------------------------------------------------------------------------------------------------------
// The server on the wire
// ---------------------------------------------------------------------------------------------------------------

/// An independent bitswap 1.2.0 client (rust-libp2p, its own codec) asks the mount: want-have of a block it has
/// → HAVE; want-have / want-block of a block it lacks with send-dont-have → DONT_HAVE; want-block → the block,
/// with a prefix that gives back the CID (CIDv1 raw, CIDv1 dag-pb and CIDv0). Replies come on a stream the mount
/// opens itself, as Kubo does.
#[test]
fn server_answers_an_independent_client() {
    let test = "server_answers_an_independent_client";
    if !require_fuse(test) {
        return;
    }
    let mut problems = Vec::new();
    let tmp = tempdir(test);
    let data = random_bytes(1 << 20, 1001);
    let file = car::file(&data, 256 << 10);
    let small = car::raw(b"a small raw block");
    let v0node = {
        let b = car::dagpb(&[], &[0x08, 0x02, 0x12, 0x02, b'h', b'i', 0x18, 0x02]);
        car::Block {
            cid: cid::Cid::new_v0(*b.cid.hash()).unwrap(),
            data: b.data,
        }
    };
    let dir = car::directory(&[
        ("f", file[0].cid, car::tsize(&file)),
        ("s", small.cid, small.data.len() as u64),
        ("v0", v0node.cid, v0node.data.len() as u64),
    ]);
    let mut blocks = vec![dir.clone(), small.clone(), v0node.clone()];
    blocks.extend(file.iter().cloned());
    let car_path = tmp.path().join("s.car");
    let mut f = fs::File::create(&car_path).unwrap();
    car::write(&dir.cid, &blocks, &mut f).unwrap();
    drop(f);
    let store = tmp.path().join("store");
    fs::create_dir_all(&store).unwrap();
    import_car(&store, &[&car_path]);
    let m = p2p_mount_with_store(&store, &["--no-gateway", "--offline"]);
    let addr = mount_maddr(&m);
    let client = TestPeer::start(Responder::Silent);
    let peer = match client.dial(&addr) {
        Ok(p) => p,
        Err(e) => {
            problems.push(format!(
                "an independent libp2p client cannot connect to the mount: {e}"
            ));
            finish(test, &[&m], &problems);
            return;
        }
    };
    let missing = car::raw(b"nobody has this block");
    let missing2 = car::raw(b"nobody has this block either");
    let leaf = file[1].cid;
    let big_leaf = file[2].cid;
    let msg = wire::Message {
        wants: vec![
            wire::WantEntry::have(dir.cid),
            wire::WantEntry::have(big_leaf),
            wire::WantEntry::have(missing.cid),
            wire::WantEntry::block(missing2.cid),
            wire::WantEntry::block(leaf),
            wire::WantEntry::block(dir.cid),
            wire::WantEntry::block(v0node.cid),
            wire::WantEntry::block(small.cid),
        ],
        full: false,
        ..Default::default()
    };
    if let Err(e) = client.send(peer, &msg) {
        problems.push(format!("sending a wantlist to the mount: {e}"));
    }
    let want_blocks = [leaf, dir.cid, v0node.cid, small.cid];
    let (ok, log) = client.wait_for(20, |l| {
        let got: Vec<_> = l
            .received
            .iter()
            .flat_map(|(_, m)| m.payload.iter())
            .filter_map(|(p, d)| wire::cid_of(p, d))
            .collect();
        let pres: Vec<cid::Cid> = l
            .received
            .iter()
            .flat_map(|(_, m)| m.presences.iter())
            .map(|(c, _)| *c)
            .collect();
        want_blocks.iter().all(|c| got.contains(c))
            && [missing.cid, missing2.cid, big_leaf]
                .iter()
                .all(|c| pres.contains(c))
    });
    let from_mount: Vec<&wire::Message> = log
        .received
        .iter()
        .filter(|(p, _)| *p == peer)
        .map(|(_, m)| m)
        .collect();
    let mut got_blocks = Vec::new();
    for msg in &from_mount {
        for (p, d) in &msg.payload {
            match wire::cid_of(p, d) {
                Some(c) => got_blocks.push(c),
                None => problems.push(format!(
                    "a block whose prefix {p:02x?} does not parse as sha2-256"
                )),
            }
        }
        if !msg.raw_blocks.is_empty() {
            problems.push("the mount sent bitswap 1.0.0 `blocks` on a 1.2.0 stream".into());
        }
    }
    for c in &want_blocks {
        if !got_blocks.contains(c) {
            problems.push(format!(
                "want-block {c} (version {:?}, codec {:#x}): no block came back",
                c.version(),
                c.codec()
            ));
        }
    }
    for c in &got_blocks {
        if !want_blocks.contains(c) {
            problems.push(format!("the mount sent a block nobody asked for or whose bytes do not match its prefix: {c}"));
        }
    }
    let presence = |c: &cid::Cid| -> Vec<wire::Presence> {
        from_mount
            .iter()
            .flat_map(|m| m.presences.iter())
            .filter(|(x, _)| x == c)
            .map(|(_, t)| *t)
            .collect()
    };
    // A small block may come instead of HAVE (Kubo does that for blocks up to 1 KiB); dir.cid is wanted as a block
    // too, so only a DONT_HAVE would be wrong here.
    if presence(&dir.cid).contains(&wire::Presence::DontHave) || presence(&dir.cid).len() > 1 {
        problems.push(format!(
            "want-have of a block the mount has: presences {:?}, expected [Have]",
            presence(&dir.cid)
        ));
    }
    if presence(&big_leaf) != vec![wire::Presence::Have] {
        problems.push(format!(
            "want-have of a 256 KiB block the mount has: presences {:?}, expected [Have]",
            presence(&big_leaf)
        ));
    }
    if presence(&missing.cid) != vec![wire::Presence::DontHave] {
        problems.push(format!(
            "want-have (send-dont-have) of a block the mount lacks: presences {:?}, expected [DontHave]",
            presence(&missing.cid)
        ));
    }
    if presence(&missing2.cid) != vec![wire::Presence::DontHave] {
        problems.push(format!(
            "want-block (send-dont-have) of a block the mount lacks: presences {:?}, expected [DontHave]",
            presence(&missing2.cid)
        ));
    }
    if !ok {
        problems.push(format!(
            "not every answer came within 20 s ({} messages from the mount; client errors {:?})",
            from_mount.len(),
            log.errors
        ));
    }
    finish(test, &[&m], &problems);
}

// ---------------------------------------------------------------------------------------------------------------
// Discovery: DHT and delegated routing
// ---------------------------------------------------------------------------------------------------------------

/// Three of our nodes with `--dht server` and Kubo on loopback: C holds a dataset written with cp, B knows C, A
/// knows only B. A reads C's content by CID (found through the DHT: B has none of it). Kubo, connected into the
/// mesh, downloads it too.
#[test]
fn dht_finds_content_beyond_the_bootstrap_peer() {
    let test = "dht_finds_content_beyond_the_bootstrap_peer";
    let Some(peers) = require_peers(test) else {
        return;
    };
    let mut problems = Vec::new();
    let tmp = tempdir(test);
    let src = tmp.path().join("src");
    let sha = write_random_file_sha(&src.join("data.bin"), 6 * MIB, 1101);
    make_tree(&src.join("tree"), &TreeSpec::helia(1102, 0));
    let kubo = Kubo::start(&peers);
    let c = p2p_mount(&["--no-gateway", "--dht", "server"]);
    let ac = mount_maddr(&c);
    let b = p2p_mount(&["--no-gateway", "--dht", "server", "--peer", &ac]);
    let ab = mount_maddr(&b);
    for a in [&ab, &ac] {
        if let Err(e) = kubo.connect_peer(a) {
            problems.push(format!("Kubo cannot connect to {a}: {e}"));
        }
    }
    // Content on C only, written after B joined (so C has a DHT neighbour to announce to).
    let ds = c.mnt.join("datasets/dht");
    let cids = fs::create_dir(&ds)
        .map_err(|e| e.to_string())
        .and_then(|_| cp_into(&src, &ds, 300))
        .and_then(|_| cids_of(&ds, &["data.bin"]));
    let (root, file_cid) = match cids {
        Ok(v) => (v[0].clone(), v[1].clone()),
        Err(e) => {
            problems.push(format!("writing the dataset on C: {e}"));
            finish(test, &[&c], &problems);
            return;
        }
    };
    eprintln!("C {ac} holds {root}; B {ab} knows C");
    let a = p2p_mount(&[
        "--no-gateway",
        "--dht",
        "server",
        "--peer",
        &ab,
        "--timeout",
        "30",
    ]);
    let aa = mount_maddr(&a);
    if let Err(e) = kubo.connect_peer(&aa) {
        problems.push(format!("Kubo cannot connect to A {aa}: {e}"));
    }
    let watch = LoopbackWatch::start(
        pids(&[a.pid(), b.pid(), c.pid(), kubo.pid()]),
        Duration::from_secs(2),
    );
    let t = Instant::now();
    check_file(
        "A reads C's file through the DHT",
        &a.ipfs(&file_cid),
        6 * MIB,
        &sha,
        180,
        &mut problems,
    );
    check_tree(
        "A reads C's dataset through the DHT",
        &src,
        &a.ipfs(&root),
        Symlinks::Preserve,
        300,
        &mut problems,
    );
    eprintln!("A read C's content in {:.1} s", t.elapsed().as_secs_f64());
    let dest = tmp.path().join("kubo-dl");
    match kubo.download_to(&root, &dest, 180) {
        Ok(s) => {
            eprintln!("Kubo downloaded {root} from the mesh in {s:.2} s");
            check_tree(
                "Kubo's download from the mesh",
                &src,
                &dest,
                Symlinks::Preserve,
                120,
                &mut problems,
            );
        }
        Err(e) => problems.push(format!("Kubo /download {root} from the mesh: {e}")),
    }
    loopback_finish(watch, &mut problems);
    finish(test, &[&a, &b, &c], &problems);
}

/// Delegated routing: a tiny HTTP router answers `/routing/v1/providers/{cid}` with Kubo's peer id and address;
/// a mount with `--routing <url>`, no `--peer`, no gateway and no DHT reads Kubo's content.
#[test]
fn delegated_routing_finds_kubo() {
    let test = "delegated_routing_finds_kubo";
    let Some(peers) = require_peers(test) else {
        return;
    };
    let mut problems = Vec::new();
    let tmp = tempdir(test);
    let f = tmp.path().join("f.bin");
    let sha = write_random_file_sha(&f, 8 * MIB, 1201);
    let kubo = Kubo::start(&peers);
    let cid = kubo.add_path(&f);
    let router = RoutingStub::start(vec![(kubo.peer_id(), vec![strip_p2p(&kubo.multiaddr)])]);
    let m = p2p_mount(&[
        "--no-gateway",
        "--dht",
        "off",
        "--routing",
        &router.url,
        "--timeout",
        "20",
    ]);
    let watch = LoopbackWatch::start(pids(&[m.pid(), kubo.pid()]), Duration::from_secs(2));
    check_file(
        "8 MiB found through delegated routing",
        &m.ipfs(&cid),
        8 * MIB,
        &sha,
        180,
        &mut problems,
    );
    let reqs = router.requests();
    eprintln!(
        "router requests: {} (first: {:?})",
        reqs.len(),
        reqs.first()
    );
    let want = cid::Cid::try_from(cid.as_str()).unwrap();
    let asked = reqs.iter().any(|r| {
        r.strip_prefix("/routing/v1/providers/")
            .and_then(|c| cid::Cid::try_from(c.split('?').next().unwrap_or(c)).ok())
            .is_some_and(|c| c.hash() == want.hash())
    });
    if !asked {
        problems.push(format!("the router was never asked for {cid}: {reqs:?}"));
    }
    loopback_finish(watch, &mut problems);
    finish(test, &[&m], &problems);
}

// ---------------------------------------------------------------------------------------------------------------
// The harness itself
// ---------------------------------------------------------------------------------------------------------------

/// The scripted peer of `common::p2p` speaks bitswap as Kubo and Helia understand it (so that a failure of the
/// tests above is the mount's): as a client it gets HAVE, DONT_HAVE and blocks from Kubo; as the misbehaving peer
/// its wrong blocks are refused by Helia.
#[test]
fn harness_peer_agrees_with_kubo_and_helia() {
    let test = "harness_peer_agrees_with_kubo_and_helia";
    let Some(peers) = require_peers(test) else {
        return;
    };
    let mut problems = Vec::new();
    let tmp = tempdir(test);
    let f = tmp.path().join("f.bin");
    let data = random_bytes(600 << 10, 1301);
    fs::write(&f, &data).unwrap();
    let kubo = Kubo::start(&peers);
    let root: cid::Cid = kubo.add_path(&f).parse().unwrap();
    let block = gateway_block(kubo.gateway_url(), &root.to_string()).unwrap();
    let leaf: cid::Cid = dagpb_links(&block)[0].1.parse().unwrap();
    let missing = car::raw(b"kubo does not have this").cid;

    let client = TestPeer::start(Responder::Silent);
    let kpeer = client.dial(&kubo.multiaddr).unwrap();
    let msg = wire::Message {
        wants: vec![
            wire::WantEntry::have(root),
            wire::WantEntry::have(missing),
            wire::WantEntry::block(leaf),
        ],
        ..Default::default()
    };
    client.send(kpeer, &msg).unwrap();
    let (ok, log) = client.wait_for(20, |l| {
        let blocks: Vec<cid::Cid> = l
            .received
            .iter()
            .flat_map(|(_, m)| m.payload.iter())
            .filter_map(|(p, d)| wire::cid_of(p, d))
            .collect();
        let pres: Vec<cid::Cid> = l
            .received
            .iter()
            .flat_map(|(_, m)| m.presences.iter())
            .map(|(c, _)| *c)
            .collect();
        blocks.contains(&leaf)
            && pres.contains(&missing)
            && (blocks.contains(&root) || pres.contains(&root))
    });
    let msgs: Vec<&wire::Message> = log.received.iter().map(|(_, m)| m).collect();
    eprintln!(
        "from Kubo: {}",
        msgs.iter()
            .map(|m| summary(m))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let pres: Vec<(cid::Cid, wire::Presence)> = msgs
        .iter()
        .flat_map(|m| m.presences.iter().cloned())
        .collect();
    let got: Vec<cid::Cid> = msgs
        .iter()
        .flat_map(|m| m.payload.iter())
        .filter_map(|(p, d)| wire::cid_of(p, d))
        .collect();
    if !ok {
        problems.push(format!(
            "Kubo did not answer within 20 s; errors {:?}",
            log.errors
        ));
    }
    // Kubo answers a want-have of a small block (<= 1 KiB) with the block itself.
    if !(pres.contains(&(root, wire::Presence::Have)) || got.contains(&root))
        || !pres.contains(&(missing, wire::Presence::DontHave))
    {
        problems.push(format!("Kubo's presences: {pres:?}"));
    }
    if !got.contains(&leaf) {
        problems.push(format!(
            "Kubo's blocks: {got:?}, expected {leaf} among them"
        ));
    }

    // Helia refuses the misbehaving peer's bytes.
    let helia = Helia::start(&peers);
    let evil = TestPeer::start(Responder::WrongBytes);
    if let Err(e) = helia.connect_peer(&evil.multiaddr) {
        problems.push(format!("Helia cannot connect to the scripted peer: {e}"));
    }
    let r = helia.fetch_dag(&root.to_string(), 12);
    let l = evil.log();
    eprintln!(
        "Helia /fetch from the evil peer: {r:?}; evil peer saw {} want-have, {} want-block, sent {} wrong blocks",
        l.want_have, l.want_block, l.bad_blocks_sent
    );
    if r.is_ok() {
        problems.push(format!("Helia accepted the evil peer's blocks: {r:?}"));
    }
    if l.want_have + l.want_block == 0 {
        problems.push(format!(
            "Helia never asked the scripted peer anything (errors {:?})",
            l.errors
        ));
    }
    finish(test, &[], &problems);
}
