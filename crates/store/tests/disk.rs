mod common;

use std::collections::HashSet;
use std::fs;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use ipfs_mount_store::{
    BlockStore, DiskStore, MemoryStore, Opened, RecoveryStats, StoreConfig, StoreError,
    LAYOUT_VERSION,
};

fn stores(dir: &std::path::Path, cap: u64) -> Vec<(&'static str, Box<dyn BlockStore>)> {
    vec![
        ("disk", Box::new(open(dir, cap))),
        ("memory", Box::new(MemoryStore::new(cap))),
    ]
}

#[test]
fn put_get_has_idempotent() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, s) in stores(tmp.path(), 1 << 30) {
        let data = block(1, 5000);
        let cid = cid_of(&data);
        assert!(!s.has(&cid).unwrap(), "{name}");
        assert_eq!(s.get(&cid).unwrap(), None, "{name}");
        s.put(&cid, &data).unwrap();
        s.put(&cid, &data).unwrap();
        assert!(s.has(&cid).unwrap(), "{name}");
        assert_eq!(
            s.get(&cid).unwrap().unwrap(),
            Bytes::from(data.clone()),
            "{name}"
        );
        let st = s.stats().unwrap();
        assert_eq!(
            (st.blocks, st.bytes, st.pinned_blocks),
            (1, 5000, 0),
            "{name}"
        );
        // put_many with duplicates and an already present block
        let b2 = block(2, 100);
        let batch = vec![
            (cid, Bytes::from(data.clone())),
            (cid_of(&b2), Bytes::from(b2.clone())),
            (cid_of(&b2), Bytes::from(b2.clone())),
        ];
        s.put_many(&batch).unwrap();
        assert_eq!(s.stats().unwrap().blocks, 2, "{name}");
        assert_eq!(s.get(&cid_of(&b2)).unwrap().unwrap(), b2, "{name}");
        // empty block
        s.put(&cid_of(b""), b"").unwrap();
        assert_eq!(s.get(&cid_of(b"")).unwrap().unwrap().len(), 0, "{name}");
    }
}

#[test]
fn layout_on_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), 1 << 30);
    let data = block(7, 1234);
    let cid = cid_of(&data);
    s.put(&cid, &data).unwrap();
    let p = expected_path(tmp.path(), &cid);
    assert_eq!(s.block_path(&cid).unwrap(), p);
    assert_eq!(fs::read(&p).unwrap(), data);
    assert!(
        p.file_name().unwrap().to_str().unwrap().starts_with("CIQ"),
        "sha2-256 keys start with CIQ like flatfs"
    );
    assert_eq!(
        fs::read_to_string(tmp.path().join("VERSION"))
            .unwrap()
            .trim(),
        LAYOUT_VERSION.to_string()
    );
    assert!(tmp.path().join("index.sqlite").exists());
    assert!(tmp.path().join("LOCK").exists());
}

#[test]
fn cid_v0_and_v1_share_one_entry() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, s) in stores(tmp.path(), 1 << 30) {
        let data = block(3, 300);
        s.put(&cid_v0_of(&data), &data).unwrap();
        assert_eq!(s.get(&cid_of(&data)).unwrap().unwrap(), data, "{name}");
        s.put(&cid_of(&data), &data).unwrap();
        assert_eq!(s.stats().unwrap().blocks, 1, "{name}");
        s.pin(&cid_of(&data), "x", &mut std::iter::empty()).unwrap();
        assert!(s.is_pinned(&cid_v0_of(&data)).unwrap(), "{name}");
    }
}

#[test]
fn identity_cids_are_never_stored() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, s) in stores(tmp.path(), 1 << 30) {
        let cid = identity_cid(b"inline");
        s.put(&cid, b"inline").unwrap();
        s.put_many(&[(cid, Bytes::from_static(b"inline"))]).unwrap();
        assert_eq!(s.get(&cid).unwrap(), None, "{name}");
        assert!(!s.has(&cid).unwrap(), "{name}");
        assert_eq!(s.stats().unwrap().blocks, 0, "{name}");
        s.pin(&cid, "id", &mut std::iter::once(cid)).unwrap();
        assert!(!s.is_pinned(&cid).unwrap(), "{name}");
        assert_eq!(s.pins().unwrap().len(), 1, "{name}");
    }
}

#[test]
fn pins_survive_eviction_and_repin_replaces() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, s) in stores(tmp.path(), 1000) {
        let blocks: Vec<Vec<u8>> = (0..10).map(|i| block(100 + i, 300)).collect();
        let cids: Vec<_> = blocks.iter().map(|b| cid_of(b)).collect();
        let root = cids[0];
        // pin first (blocks not yet present), then put: they arrive protected
        s.pin(&root, "dataset:foo", &mut cids[1..4].iter().copied())
            .unwrap();
        for (c, b) in cids.iter().zip(&blocks) {
            s.put(c, b).unwrap();
        }
        for c in &cids[..4] {
            assert!(s.has(c).unwrap(), "{name}: pinned block evicted");
            assert!(s.is_pinned(c).unwrap(), "{name}");
        }
        let st = s.stats().unwrap();
        assert_eq!((st.pinned_blocks, st.pinned_bytes), (4, 1200), "{name}");
        assert!(st.unpinned_bytes() <= 1000, "{name}: {st:?}");
        let pins = s.pins().unwrap();
        assert_eq!(pins.len(), 1);
        assert_eq!(
            (
                pins[0].root,
                pins[0].label.as_str(),
                pins[0].blocks,
                pins[0].bytes
            ),
            (root, "dataset:foo", 4, 1200)
        );

        // re-pin with a different set: block 1 is no longer protected, 5 is
        s.pin(
            &root,
            "dataset:foo v2",
            &mut [cids[2], cids[3], cids[2]].into_iter(),
        )
        .unwrap();
        assert!(!s.is_pinned(&cids[1]).unwrap(), "{name}");
        assert_eq!(s.pins().unwrap()[0].blocks, 3, "{name}");
        // two pins sharing a block: unpinning one keeps it protected
        s.pin(&cids[9], "other", &mut std::iter::once(cids[2]))
            .unwrap();
        assert!(s.unpin(&root).unwrap(), "{name}");
        assert!(!s.unpin(&root).unwrap(), "{name}");
        assert!(s.is_pinned(&cids[2]).unwrap(), "{name}");
        assert!(!s.is_pinned(&cids[3]).unwrap(), "{name}");
        assert_eq!(s.pins().unwrap().len(), 1, "{name}");
    }
    // pins persist across reopen
    let s = open(tmp.path(), 1000);
    assert_eq!(s.pins().unwrap().len(), 1);
    assert!(s.is_pinned(&cid_of(&block(102, 300))).unwrap());
}

/// capacity 350 with 100-byte blocks: putting a 4th block evicts down to 315, i.e. exactly the LRU block.
#[test]
fn lru_order_access_refreshes_recency() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, s) in stores(tmp.path(), 350) {
        let b: Vec<Vec<u8>> = (0..6).map(|i| block(200 + i, 100)).collect();
        let c: Vec<_> = b.iter().map(|x| cid_of(x)).collect();
        for i in 0..3 {
            s.put(&c[i], &b[i]).unwrap();
        }
        s.get(&c[0]).unwrap().unwrap(); // a is now newer than b and c
        s.put(&c[3], &b[3]).unwrap(); // evicts b
        assert!(!s.has(&c[1]).unwrap(), "{name}");
        assert!(
            s.has(&c[0]).unwrap() && s.has(&c[2]).unwrap() && s.has(&c[3]).unwrap(),
            "{name}"
        );
        s.put(&c[2], &b[2]).unwrap(); // re-put refreshes too: order now a, d, c
        s.put(&c[4], &b[4]).unwrap(); // evicts a
        assert!(!s.has(&c[0]).unwrap(), "{name}");
        assert_eq!(s.stats().unwrap().bytes, 300, "{name}");
    }
}

#[test]
fn lru_order_survives_flush_and_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let b: Vec<Vec<u8>> = (0..6).map(|i| block(300 + i, 100)).collect();
    let c: Vec<_> = b.iter().map(|x| cid_of(x)).collect();
    {
        let s = open(tmp.path(), 350);
        for i in 0..3 {
            s.put(&c[i], &b[i]).unwrap();
        }
        s.get(&c[0]).unwrap().unwrap();
        s.flush().unwrap();
        s.abandon(); // crash right after the flush: only what flush persisted counts
    }
    {
        let s = open(tmp.path(), 350);
        s.put(&c[3], &b[3]).unwrap();
        assert!(
            !s.has(&c[1]).unwrap(),
            "b was least recently used before the reopen"
        );
        assert!(s.has(&c[0]).unwrap() && s.has(&c[2]).unwrap());
        s.get(&c[2]).unwrap().unwrap();
        // orderly close persists pending accesses too
    }
    let s = open(tmp.path(), 350);
    s.put(&c[4], &b[4]).unwrap(); // order was a, d, c: evicts a
    assert!(!s.has(&c[0]).unwrap());
    assert!(s.has(&c[2]).unwrap() && s.has(&c[3]).unwrap());
}

#[test]
fn capacity_respected_with_amortized_eviction() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, s) in stores(tmp.path(), 10_000) {
        let mut evictions = 0;
        let mut last_blocks = 0;
        for i in 0..200u64 {
            let data = block(400 + i, 1000);
            s.put(&cid_of(&data), &data).unwrap();
            let st = s.stats().unwrap();
            assert!(st.unpinned_bytes() <= 10_000, "{name}: {st:?}");
            if st.blocks < last_blocks {
                evictions += 1;
                assert!(st.bytes <= 9_000, "{name}: evicts down to 90%: {st:?}");
            }
            last_blocks = st.blocks;
        }
        assert!(
            evictions <= 200 / 2,
            "{name}: eviction should be amortized, ran {evictions} times"
        );
        let batch: Vec<(cid::Cid, Bytes)> = (0..50u64)
            .map(|i| {
                let d = block(1000 + i, 700);
                (cid_of(&d), Bytes::from(d))
            })
            .collect();
        s.put_many(&batch).unwrap();
        assert!(s.stats().unwrap().unpinned_bytes() <= 10_000, "{name}");
        let e = s.evict().unwrap();
        assert_eq!(e.blocks, 0, "{name}: nothing to evict when under capacity");
    }
}

#[test]
fn corrupt_size_is_detected_and_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), 1 << 30);
    let data = block(5, 4096);
    let cid = cid_of(&data);
    s.put(&cid, &data).unwrap();
    let p = s.block_path(&cid).unwrap();
    fs::write(&p, &data[..100]).unwrap(); // truncated behind the store's back
    assert_eq!(s.get(&cid).unwrap(), None);
    assert!(!s.has(&cid).unwrap());
    assert!(!p.exists());
    assert_eq!(s.stats().unwrap().blocks, 0);
    // a file deleted behind the store's back is reported absent too
    s.put(&cid, &data).unwrap();
    fs::remove_file(&p).unwrap();
    assert_eq!(s.get(&cid).unwrap(), None);
    assert!(!s.has(&cid).unwrap());
    // and can be stored again
    s.put(&cid, &data).unwrap();
    assert_eq!(s.get(&cid).unwrap().unwrap(), data);
}

#[test]
fn second_open_is_locked() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), 1 << 20);
    match DiskStore::open(config(tmp.path(), 1 << 20)) {
        Err(StoreError::Locked { pid, path }) => {
            assert_eq!(pid, Some(std::process::id()));
            assert_eq!(path, tmp.path());
            let msg = StoreError::Locked { pid, path }.to_string();
            assert!(msg.contains(&std::process::id().to_string()), "{msg}");
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(s);
    open(tmp.path(), 1 << 20);
}

#[test]
fn unknown_version_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    drop(open(tmp.path(), 1 << 20));
    fs::write(tmp.path().join("VERSION"), "99\n").unwrap();
    match DiskStore::open(config(tmp.path(), 1 << 20)) {
        Err(StoreError::UnsupportedVersion { found, .. }) => assert_eq!(found, "99"),
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
    fs::remove_file(tmp.path().join("VERSION")).unwrap();
    assert!(matches!(
        DiskStore::open(config(tmp.path(), 1 << 20)),
        Err(StoreError::UnsupportedVersion { .. })
    ));
}

#[test]
fn recovery_after_simulated_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let b: Vec<Vec<u8>> = (0..4).map(|i| block(500 + i, 2000 + i as usize)).collect();
    let c: Vec<_> = b.iter().map(|x| cid_of(x)).collect();
    {
        let s = open(tmp.path(), 1 << 20);
        for i in 0..3 {
            s.put(&c[i], &b[i]).unwrap();
        }
        s.pin(&c[0], "p", &mut std::iter::empty()).unwrap();
        s.abandon();
    }
    // leftover temp file of a dead writer
    let p0 = expected_path(tmp.path(), &c[0]);
    let tmpfile = p0.with_file_name(format!(
        "{}.999999.1.tmp",
        p0.file_name().unwrap().to_str().unwrap()
    ));
    fs::write(&tmpfile, b"partial").unwrap();
    // a block file deleted behind the index's back
    fs::remove_file(expected_path(tmp.path(), &c[1])).unwrap();
    // an unindexed (complete) block file, as left by a crash between rename and index commit
    let p3 = expected_path(tmp.path(), &c[3]);
    fs::create_dir_all(p3.parent().unwrap()).unwrap();
    fs::write(&p3, &b[3]).unwrap();
    // a foreign file is left alone
    let foreign = tmp.path().join("blocks").join("README");
    fs::write(&foreign, b"hello").unwrap();

    let s = open(tmp.path(), 1 << 20);
    assert!(!tmpfile.exists(), "temp file removed");
    assert!(!s.has(&c[1]).unwrap(), "row of missing file dropped");
    assert!(s.has(&c[3]).unwrap(), "unindexed file adopted");
    for i in [0, 2, 3] {
        assert_eq!(s.get(&c[i]).unwrap().unwrap(), b[i]);
    }
    let st = s.stats().unwrap();
    assert_eq!((st.blocks, st.bytes), (3, (2000 + 2002 + 2003) as u64));
    assert_eq!((st.pinned_blocks, st.pinned_bytes), (1, 2000));
    assert!(foreign.exists());
    // a clean reopen has nothing to recover
    drop(s);
    let s = open(tmp.path(), 1 << 20);
    assert_eq!(s.recover().unwrap(), Default::default());
    // deleting the index rebuilds it from the block files (pins are lost)
    drop(s);
    for f in ["index.sqlite", "index.sqlite-wal", "index.sqlite-shm"] {
        let _ = fs::remove_file(tmp.path().join(f));
    }
    let s = open(tmp.path(), 1 << 20);
    assert_eq!(s.stats().unwrap().blocks, 3);
    assert_eq!(s.get(&c[3]).unwrap().unwrap(), b[3]);
}

#[test]
fn sync_writes_put_and_put_many() {
    let tmp = tempfile::tempdir().unwrap();
    let s = DiskStore::open(StoreConfig {
        dir: tmp.path().join("a/b"),
        cache_capacity: 1 << 30,
        sync_writes: true,
    })
    .unwrap();
    let d = block(600, 10_000);
    s.put(&cid_of(&d), &d).unwrap();
    // enough blocks to touch more than 32 shard directories (syncfs path)
    let batch: Vec<(cid::Cid, Bytes)> = (0..80u64)
        .map(|i| {
            let d = block(700 + i, 1000);
            (cid_of(&d), Bytes::from(d))
        })
        .collect();
    s.put_many(&batch).unwrap();
    for (c, d) in &batch {
        assert_eq!(&s.get(c).unwrap().unwrap(), d);
    }
    assert_eq!(s.stats().unwrap().blocks, 81);
}

#[test]
fn concurrent_put_get_evict_pin() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Arc::new(open(tmp.path(), 64 * 1024));
    let pool: Arc<Vec<(cid::Cid, Vec<u8>)>> = Arc::new(
        (0..96u64)
            .map(|i| {
                let d = block(800 + i, 1024 + (i as usize * 97) % 7000);
                (cid_of(&d), d)
            })
            .collect(),
    );
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let s = Arc::clone(&s);
            let pool = Arc::clone(&pool);
            std::thread::spawn(move || {
                let mut x = t * 7919 + 1;
                for n in 0..400u64 {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let (c, d) = &pool[(x >> 33) as usize % pool.len()];
                    match n % 10 {
                        0..=3 => s.put(c, d).unwrap(),
                        4..=7 => {
                            if let Some(got) = s.get(c).unwrap() {
                                assert_eq!(&got[..], &d[..]);
                            }
                        }
                        8 => {
                            s.evict().unwrap();
                        }
                        _ => {
                            // thread-owned pin over 4 blocks: pin, put, then they must stay while others evict
                            let set: Vec<_> = (0..4)
                                .map(|k| pool[(t as usize * 4 + k) % pool.len()].0)
                                .collect();
                            let root = set[0];
                            s.pin(&root, &format!("t{t}"), &mut set.iter().copied())
                                .unwrap();
                            for k in 0..4 {
                                let (c, d) = &pool[(t as usize * 4 + k) % pool.len()];
                                s.put(c, d).unwrap();
                            }
                            std::thread::yield_now();
                            for c in &set {
                                assert!(s.has(c).unwrap(), "pinned block evicted");
                            }
                            if n % 20 == 9 {
                                s.unpin(&root).unwrap();
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    s.evict().unwrap();
    let st = s.stats().unwrap();
    assert!(st.unpinned_bytes() <= 64 * 1024, "{st:?}");
    let (mut n, mut bytes) = (0, 0);
    for (c, d) in pool.iter() {
        if s.has(c).unwrap() {
            assert_eq!(s.get(c).unwrap().unwrap(), *d);
            n += 1;
            bytes += d.len() as u64;
        }
    }
    assert_eq!((st.blocks, st.bytes), (n, bytes));
    let pinned: HashSet<_> = s.pins().unwrap().into_iter().map(|p| p.root).collect();
    for r in &pinned {
        assert!(s.is_pinned(r).unwrap());
    }
}

/// The writes of a crash child, from block `round * 100_000` on: plain puts, pinned batches,
/// batches through temporary pins, reads and unpins. Runs until `ops` blocks are written (for
/// ever when None: the child is killed).
fn crash_workload(s: &DiskStore, round: u64, ops: Option<u64>) {
    let first = round * 100_000;
    let mut i = first;
    while ops.is_none_or(|n| i < first + n) {
        let d = block(i, 1000 + (i as usize * 131) % 60_000);
        if i % 5 == 0 {
            let batch: Vec<(cid::Cid, Bytes)> = (i..i + 5)
                .map(|j| {
                    let d = block(j, 1000 + (j as usize * 131) % 60_000);
                    (cid_of(&d), Bytes::from(d))
                })
                .collect();
            if i % 10 == 0 {
                s.put_many(&batch).unwrap();
                s.pin(&batch[0].0, "crash", &mut batch.iter().map(|b| b.0))
                    .unwrap();
            } else {
                // through a temporary pin, as writers and imports do
                let t = s.temp_pin("crash").unwrap();
                s.put_temp(t, &batch[..3]).unwrap();
                s.put_temp(t, &batch[2..]).unwrap();
                s.pin_with_temps(&batch[0].0, "crash", &mut std::iter::empty(), &[t])
                    .unwrap();
            }
            i += 5;
        } else {
            s.put(&cid_of(&d), &d).unwrap();
            i += 1;
        }
        if i % 7 == 0 {
            s.get(&cid_of(&block(
                i - 3,
                1000 + ((i - 3) as usize * 131) % 60_000,
            )))
            .unwrap();
        }
        if i % 50 == 0 {
            s.unpin(&cid_of(&block(
                i - 40,
                1000 + ((i - 40) as usize * 131) % 60_000,
            )))
            .unwrap();
        }
    }
}

/// What must hold of a store the crash workload wrote, killed or not: every block the index
/// lists has a file whose bytes match its hash, no temporary file is left, at most one
/// temporary pin (the one being filled) is held and releasing it frees its blocks, and the
/// unpinned cache is within its capacity. Returns the number of blocks present.
fn check_crash_store(s: &DiskStore, dir: &std::path::Path, round: u64) -> u64 {
    let st = s.stats().unwrap();
    let mut found = 0;
    for shard in fs::read_dir(dir.join("blocks")).unwrap() {
        for f in fs::read_dir(shard.unwrap().path()).unwrap() {
            let name = f.unwrap().file_name().into_string().unwrap();
            assert!(!name.ends_with(".tmp"), "temp files are cleaned up at open");
            let stem = name.strip_suffix(".data").unwrap();
            let mh = multihash::Multihash::<64>::from_bytes(
                &multibase::Base::Base32Upper.decode(stem).unwrap(),
            )
            .unwrap();
            let c = cid::Cid::new_v1(0x55, mh);
            if s.has(&c).unwrap() {
                let data = s.get(&c).unwrap().expect("present block reads back");
                assert_eq!(mh_of(&data), mh, "block {c} has the right bytes");
                found += 1;
            }
        }
    }
    assert_eq!(
        st.blocks, found,
        "every indexed block is one the workload wrote"
    );
    assert!(found > 0, "the workload wrote something in round {round}");
    // A temporary pin the child was filling when it was killed is still held; releasing it frees its blocks.
    let held = s.temp_pins("crash").unwrap();
    assert!(held.len() <= 1, "at most the one being filled: {held:?}");
    assert_eq!(s.release_temp_owner("crash").unwrap(), held.len() as u64);
    let st = s.stats().unwrap();
    assert_eq!(st.temp_pinned_bytes, 0, "{st:?}");
    assert!(st.unpinned_bytes() <= 512 * 1024, "{st:?}");
    found
}

/// Child side of `kill9_at_any_moment` when the parent sets STORE_CRASH_DIR: writes until it
/// is killed. On a normal run it writes a bounded amount into a store of its own, closes it,
/// and checks what the parent checks after a kill, plus that the reopened store was closed in
/// order (nothing to recover).
#[test]
fn crash_child() {
    if let Ok(dir) = std::env::var("STORE_CRASH_DIR") {
        let round: u64 = std::env::var("STORE_CRASH_ROUND").unwrap().parse().unwrap();
        let s = open(std::path::Path::new(&dir), 512 * 1024);
        crash_workload(&s, round, None);
        unreachable!("the crash workload runs until it is killed");
    }
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), 512 * 1024);
    assert_eq!(
        s.opened(),
        Opened::Created {
            rebuilt: RecoveryStats::default()
        }
    );
    crash_workload(&s, 0, Some(400));
    let pinned = s.stats().unwrap().pinned_blocks;
    assert!(pinned > 0, "the workload pins");
    drop(s);
    let s = open(tmp.path(), 512 * 1024);
    assert_eq!(s.opened(), Opened::Clean);
    assert_eq!(s.recover().unwrap(), RecoveryStats::default());
    assert_eq!(s.stats().unwrap().pinned_blocks, pinned);
    assert!(check_crash_store(&s, tmp.path(), 0) >= pinned);
}

#[test]
fn kill9_at_any_moment() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    for round in 0..4u64 {
        let mut child = std::process::Command::new(&exe)
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env("STORE_CRASH_DIR", tmp.path())
            .env("STORE_CRASH_ROUND", round.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300 + 150 * round));
        assert!(
            child.try_wait().unwrap().is_none(),
            "the crash child of round {round} ended before it was killed"
        );
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let s = open(tmp.path(), 512 * 1024);
        assert!(
            matches!(s.opened(), Opened::Recovered(_)),
            "a killed store is recovered: {:?}",
            s.opened()
        );
        check_crash_store(&s, tmp.path(), round);
    }
}

/// A new store is created, not recovered; one closed in order is clean; one dropped without
/// the orderly close is recovered; one whose index was deleted is rebuilt from its files.
#[test]
fn open_tells_new_clean_and_recovered_apart() {
    let tmp = tempfile::tempdir().unwrap();
    let data = block(9, 700);
    let cid = cid_of(&data);
    let s = open(tmp.path(), 1 << 20);
    assert_eq!(
        s.opened(),
        Opened::Created {
            rebuilt: RecoveryStats::default()
        }
    );
    s.put(&cid, &data).unwrap();
    drop(s);
    let s = open(tmp.path(), 1 << 20);
    assert_eq!(s.opened(), Opened::Clean);
    s.abandon();
    let s = open(tmp.path(), 1 << 20);
    assert!(
        matches!(s.opened(), Opened::Recovered(_)),
        "{:?}",
        s.opened()
    );
    drop(s);
    for f in ["index.sqlite", "index.sqlite-wal", "index.sqlite-shm"] {
        let _ = fs::remove_file(tmp.path().join(f));
    }
    let s = open(tmp.path(), 1 << 20);
    assert_eq!(
        s.opened(),
        Opened::Created {
            rebuilt: RecoveryStats {
                files_adopted: 1,
                ..Default::default()
            }
        }
    );
    assert!(s.has(&cid).unwrap());
}

/// The store directory (and missing parents), `blocks/` and its shards are created mode 0700;
/// an existing directory keeps its mode.
#[test]
fn created_directories_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("parent").join("store");
    let s = open(&dir, 1 << 30);
    let data = block(3, 100);
    let cid = cid_of(&data);
    s.put(&cid, &data).unwrap();
    let shard = expected_path(&dir, &cid).parent().unwrap().to_path_buf();
    for d in [
        tmp.path().join("parent"),
        dir.clone(),
        dir.join("blocks"),
        shard,
    ] {
        assert_eq!(mode(&d), 0o700, "{}", d.display());
    }
    drop(s);
    let shared = tmp.path().join("shared");
    fs::create_dir(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o750)).unwrap();
    drop(open(&shared, 1 << 30));
    assert_eq!(mode(&shared), 0o750);
}
