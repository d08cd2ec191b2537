//! Import parity: directory trees built on disk are imported by the reference peers (Kubo 0.22 and Helia 7 /
//! ipfs-unixfs-importer 17, loopback only, from `../shared/peers`) and by our builder
//! (`ipfs_mount_ipld::builder`: `build_file` for files, `build_directory_auto` for directories, bottom-up); the
//! root CIDs must be equal. That covers chunking, the balanced layout, plain directories, the sharding decision
//! (estimate rule and `>=` versus `>` at the threshold) and the HAMT block layout.
//!
//! Without `../shared/peers` the tests print why and skip, except under `IPFS_MOUNT_REQUIRE_PEERS=1`, where that is
//! a failure. (No FUSE needed: nothing is mounted here.)

mod common;

use common::*;
use ipfs_mount_ipld::builder::{
    build_directory_auto, build_file, Built, ImportProfile, ShardEstimate,
};
use ipfs_mount_ipld::Cid;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// `../shared/peers` with both up-scripts, or None after printing why (a failure under
/// `IPFS_MOUNT_REQUIRE_PEERS=1`).
fn peers(test: &str) -> Option<PathBuf> {
    let dir = shared_dir().join("peers");
    if dir.join("kubo-up.sh").exists() && dir.join("helia-up.sh").exists() {
        return Some(dir);
    }
    let why = format!(
        "reference peers not found at {} (set IPFS_MOUNT_SHARED)",
        dir.display()
    );
    if strict() {
        panic!("{test}: {why} (IPFS_MOUNT_REQUIRE_PEERS=1, so this is a failure, not a skip)");
    }
    eprintln!("SKIPPED {test}: {why}");
    None
}

/// How a directory's entries enter the sharding estimate.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Count {
    /// Every entry (Kubo; also what `build_directory_auto` does).
    All,
    /// Files and empty directories only (a non-empty subdirectory has no CID yet while Helia's importer decides).
    LeavesOnly,
}

/// Our import of `path` (a file or a directory tree; no symlinks), with directory entries sorted by name bytes as
/// both peers sort them.
fn build_path(path: &Path, profile: &ImportProfile, count: Count) -> Built {
    let meta = fs::symlink_metadata(path).unwrap();
    if meta.is_file() {
        return build_file(&fs::read(path).unwrap(), profile);
    }
    assert!(
        meta.is_dir(),
        "{}: only files and directories",
        path.display()
    );
    let mut entries: Vec<(Vec<u8>, Cid, u64)> = Vec::new();
    let mut counted: Vec<bool> = Vec::new();
    for e in fs::read_dir(path).unwrap() {
        let e = e.unwrap();
        let child = build_path(&e.path(), profile, count);
        let nonempty_dir =
            e.file_type().unwrap().is_dir() && fs::read_dir(e.path()).unwrap().next().is_some();
        entries.push((e.file_name().as_bytes().to_vec(), child.root, child.tsize));
        counted.push(!nonempty_dir);
    }
    match count {
        Count::All => build_directory_auto(&entries, profile),
        Count::LeavesOnly => {
            let leaves: Vec<Vec<u8>> = entries
                .iter()
                .zip(&counted)
                .filter(|(_, c)| **c)
                .map(|(e, _)| e.0.clone())
                .collect();
            ipfs_mount_ipld::builder::build_directory_auto_counting(&entries, profile, |e| {
                leaves.contains(&e.0)
            })
        }
    }
}

fn is_hamt(built: &Built) -> bool {
    let (cid, block) = built.blocks.last().unwrap();
    matches!(
        ipfs_mount_ipld::unixfs::decode_node(cid, block).unwrap(),
        ipfs_mount_ipld::unixfs::Node::HamtShard(_)
    )
}

/// `name` padded with `c` to exactly `len` bytes.
fn padded(name: String, len: usize, c: char) -> String {
    let mut s = name;
    while s.len() < len {
        s.push(c);
    }
    assert_eq!(s.len(), len, "{s}");
    s
}

/// `n` small files (0-299 bytes) named by `name(i)`.
fn many_files(dir: &Path, n: usize, seed: u64, name: impl Fn(usize) -> String) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    let mut rng = Rng::new(seed);
    for i in 0..n {
        let len = rng.below(300);
        write_random_file(&dir.join(name(i)), len, seed.wrapping_mul(7919) + i as u64);
    }
    dir.to_path_buf()
}

/// The trees every test imports, under `root`.
struct Trees {
    /// Nested dirs, empty dir and files, unicode and odd names, edge sizes, a multi-chunk file (make_tree).
    small: PathBuf,
    /// 3700 files with 40-byte names: above 256 KiB in both estimates (v0 links-bytes 274 KiB, v1 block-bytes
    /// ~307 KiB), so it shards at the default threshold.
    wide: PathBuf,
    /// 1200 files with unicode names (~80 KiB links-bytes): plain at 256 KiB, a HAMT at 64 KiB.
    medium: PathBuf,
    /// v0 links-bytes estimate exactly 65536: Kubo 0.22 shards it at 64 KiB (`>=`), js does not (`>`).
    boundary: PathBuf,
    /// An empty directory.
    empty: PathBuf,
    /// A parent with a sub-directory that shards (HAMT inside a plain directory) and plain siblings.
    nested: PathBuf,
}

fn make_trees(root: &Path) -> Trees {
    let small = make_tree(
        &root.join("small"),
        &TreeSpec::helia(11, 3 * 1024 * 1024 + 17),
    );
    let wide = many_files(&root.join("wide"), 3700, 21, |i| {
        padded(format!("wide-entry-{i:05}-"), 40, 'w')
    });
    let medium = many_files(&root.join("medium"), 1200, 31, |i| {
        format!("ünïcødé-{i:04}-名前-{}", "ß".repeat(i % 7))
    });
    // 808 links of 47 + 34 bytes and one of 54 + 34: 65448 + 88 = 65536
    let boundary = many_files(&root.join("boundary"), 808, 41, |i| {
        padded(format!("boundary-{i:04}-"), 47, 'b')
    });
    write_random_file(
        &boundary.join(padded("boundary-last-".into(), 54, 'z')),
        10,
        42,
    );
    let empty = root.join("empty");
    fs::create_dir_all(&empty).unwrap();
    let nested = root.join("nested");
    many_files(&nested.join("inner").join("deep-medium"), 1200, 51, |i| {
        padded(format!("deep-{i:04}-"), 30, 'd')
    });
    fs::write(nested.join("inner").join("note.txt"), b"inner note\n").unwrap();
    fs::create_dir_all(nested.join("empty-sibling")).unwrap();
    fs::write(nested.join("top.txt"), b"top\n").unwrap();
    Trees {
        small,
        wide,
        medium,
        boundary,
        empty,
        nested,
    }
}

/// Compares a peer's CID with ours; returns a line for the report (and whether it matched).
fn check(what: &str, theirs: &str, ours: &Built, failures: &mut Vec<String>) {
    let line = format!(
        "{what}: peer {theirs}, ours {} ({})",
        ours.root,
        if is_hamt(ours) { "HAMT" } else { "plain/file" }
    );
    if theirs == ours.root.to_string() {
        eprintln!("MATCH    {line}");
    } else {
        eprintln!("MISMATCH {line}");
        failures.push(line);
    }
}

fn v0_with(threshold: u64, at_threshold: bool) -> ImportProfile {
    let mut p = ImportProfile::unixfs_v0_2015();
    p.shard_threshold = Some(threshold);
    p.shard_at_threshold = at_threshold;
    p
}

#[test]
fn kubo_default_threshold() {
    let Some(peers) = peers("kubo_default_threshold") else {
        return;
    };
    let tmp = tempdir("parity-kubo");
    let t = make_trees(tmp.path());
    let kubo = Kubo::start(&peers);
    let p = ImportProfile::unixfs_v0_2015();
    let mut failures = Vec::new();
    for (what, dir, hamt) in [
        ("small", &t.small, false),
        ("wide", &t.wide, true),
        ("medium", &t.medium, false),
        ("empty", &t.empty, false),
        ("nested", &t.nested, false),
    ] {
        let ours = build_path(dir, &p, Count::All);
        assert_eq!(is_hamt(&ours), hamt, "{what}: sharding decision");
        check(
            &format!("kubo v0 {what}"),
            &kubo.add_path(dir),
            &ours,
            &mut failures,
        );
    }
    // one multi-chunk file on its own
    let big = t.small.join("big.bin");
    check(
        "kubo v0 big.bin",
        &kubo.add_path(&big),
        &build_path(&big, &p, Count::All),
        &mut failures,
    );
    assert!(
        failures.is_empty(),
        "CID mismatches:\n{}",
        failures.join("\n")
    );
}

#[test]
fn kubo_lowered_threshold() {
    let Some(peers) = peers("kubo_lowered_threshold") else {
        return;
    };
    let tmp = tempdir("parity-kubo64");
    let t = make_trees(tmp.path());
    let kubo = Kubo::start_with(&peers, Some("64KiB"));
    // Kubo 0.22: links-bytes, shard at estimate >= threshold
    let p = v0_with(64 * 1024, true);
    let mut failures = Vec::new();
    for (what, dir, hamt) in [
        ("medium", &t.medium, true),
        ("boundary (estimate == threshold)", &t.boundary, true),
        ("wide", &t.wide, true),
        ("nested", &t.nested, false),
        ("small", &t.small, false),
    ] {
        let ours = build_path(dir, &p, Count::All);
        assert_eq!(is_hamt(&ours), hamt, "{what}: sharding decision");
        check(
            &format!("kubo v0 64KiB {what}"),
            &kubo.add_path(dir),
            &ours,
            &mut failures,
        );
    }
    assert_eq!(
        p.directory_estimate(&dir_entries(&t.boundary, &p)),
        65536,
        "the boundary fixture sits exactly on the threshold"
    );
    // the same directory built with js's `>` would be plain, and must then differ from Kubo's
    let js = build_path(&t.boundary, &v0_with(64 * 1024, false), Count::All);
    assert!(!is_hamt(&js));
    assert_ne!(js.root.to_string(), kubo.add_path(&t.boundary));
    assert!(
        failures.is_empty(),
        "CID mismatches:\n{}",
        failures.join("\n")
    );
}

/// The `(name, cid, tsize)` entries of one directory, as our builder sees them.
fn dir_entries(dir: &Path, p: &ImportProfile) -> Vec<(Vec<u8>, Cid, u64)> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let b = build_path(&e.path(), p, Count::All);
            (e.file_name().as_bytes().to_vec(), b.root, b.tsize)
        })
        .collect()
}

#[test]
fn helia_profiles_and_thresholds() {
    let Some(peers) = peers("helia_profiles_and_thresholds") else {
        return;
    };
    let tmp = tempdir("parity-helia");
    let t = make_trees(tmp.path());
    let helia = Helia::start(&peers);
    let mut failures = Vec::new();
    let add = |dir: &Path, profile: &'static str, threshold: Option<u64>| {
        let mut o = HeliaAdd::profile(profile);
        o.shard_split_threshold = threshold;
        helia.add_path(dir, &o)
    };

    // unixfs-v1-2025: CIDv1, raw leaves, 1 MiB chunks, 1024 links, block-bytes > 256 KiB
    let v1 = ImportProfile::unixfs_v1_2025();
    for (what, dir, hamt) in [
        ("small", &t.small, false),
        ("wide", &t.wide, true),
        ("medium", &t.medium, false),
        ("empty", &t.empty, false),
        ("nested", &t.nested, false),
    ] {
        let ours = build_path(dir, &v1, Count::All);
        assert_eq!(is_hamt(&ours), hamt, "v1 {what}: sharding decision");
        check(
            &format!("helia v1 {what}"),
            &add(dir, "unixfs-v1-2025", None),
            &ours,
            &mut failures,
        );
    }
    // v1 with a lowered threshold: block-bytes compared with `>`, probed exactly at the plain block's size
    let mut low = v1.clone();
    low.shard_threshold = Some(64 * 1024);
    for (what, dir) in [("medium", &t.medium), ("nested", &t.nested)] {
        let ours = build_path(dir, &low, Count::All);
        assert!(is_hamt(&ours) || what == "nested");
        check(
            &format!("helia v1 64KiB {what}"),
            &add(dir, "unixfs-v1-2025", Some(64 * 1024)),
            &ours,
            &mut failures,
        );
    }
    let est = v1.directory_estimate(&dir_entries(&t.boundary, &v1));
    for (threshold, hamt) in [(est, false), (est - 1, true)] {
        let mut p = v1.clone();
        p.shard_threshold = Some(threshold);
        let ours = build_path(&t.boundary, &p, Count::All);
        assert_eq!(is_hamt(&ours), hamt);
        check(
            &format!("helia v1 boundary block-bytes {est} vs threshold {threshold}"),
            &add(&t.boundary, "unixfs-v1-2025", Some(threshold)),
            &ours,
            &mut failures,
        );
    }

    // unixfs-v0-2015 through Helia: CIDv0, dag-pb leaves, links-bytes compared with `>`
    let v0js = v0_with(256 * 1024, false);
    for (what, dir, hamt) in [
        ("small", &t.small, false),
        ("wide", &t.wide, true),
        ("empty", &t.empty, false),
        ("nested", &t.nested, false),
    ] {
        let ours = build_path(dir, &v0js, Count::All);
        assert_eq!(is_hamt(&ours), hamt, "v0 {what}: sharding decision");
        check(
            &format!("helia v0 {what}"),
            &add(dir, "unixfs-v0-2015", None),
            &ours,
            &mut failures,
        );
    }
    for (threshold, hamt) in [(65536, false), (65535, true)] {
        let ours = build_path(&t.boundary, &v0_with(threshold, false), Count::All);
        assert_eq!(is_hamt(&ours), hamt);
        check(
            &format!("helia v0 boundary links-bytes 65536 vs threshold {threshold}"),
            &add(&t.boundary, "unixfs-v0-2015", Some(threshold)),
            &ours,
            &mut failures,
        );
    }
    let ours = build_path(&t.medium, &v0_with(64 * 1024, false), Count::All);
    check(
        "helia v0 64KiB medium",
        &add(&t.medium, "unixfs-v0-2015", Some(64 * 1024)),
        &ours,
        &mut failures,
    );

    // Which entries does Helia count? A directory of non-empty subdirectories: counting every link it is far above
    // the threshold, counting only leaves (files, empty dirs) it is far below.
    let subdirs = tmp.path().join("subdirs");
    for i in 0..40 {
        let d = subdirs.join(padded(format!("subdir-{i:02}-"), 30, 's'));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("f.txt"), format!("{i}\n")).unwrap();
    }
    fs::write(subdirs.join("only-file.txt"), b"x\n").unwrap();
    let mut p = v0_with(1000, false);
    p.shard_estimate = ShardEstimate::LinksBytes;
    let all = build_path(&subdirs, &p, Count::All);
    let leaves = build_path(&subdirs, &p, Count::LeavesOnly);
    assert!(is_hamt(&all) && !is_hamt(&leaves));
    let theirs = add(&subdirs, "unixfs-v0-2015", Some(1000));
    eprintln!(
        "helia counts {} (subdirs dir: peer {theirs}, all-links {}, leaves-only {})",
        if theirs == all.root.to_string() {
            "every link"
        } else if theirs == leaves.root.to_string() {
            "only leaves"
        } else {
            "neither"
        },
        all.root,
        leaves.root
    );
    check(
        "helia v0 1000B subdirs (count every link)",
        &theirs,
        &all,
        &mut failures,
    );

    assert!(
        failures.is_empty(),
        "CID mismatches:\n{}",
        failures.join("\n")
    );
}
