//! Temporary pins: each method on both stores, protection under heavy eviction, persistence across a clean reopen
//! and a crash, the schema migration of an older store, ENOSPC.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use cid::Cid;
use common::*;
use ipfs_mount_store::{BlockStore, DiskStore, MemoryStore, StoreError};

fn stores(dir: &Path, cap: u64) -> Vec<(&'static str, Box<dyn BlockStore>)> {
    vec![
        ("disk", Box::new(open(dir, cap))),
        ("memory", Box::new(MemoryStore::new(cap))),
    ]
}

/// `n` blocks of `len` bytes, numbered from `seed`.
fn blocks(seed: u64, n: u64, len: usize) -> Vec<(Cid, Bytes)> {
    (0..n)
        .map(|i| {
            let d = block(seed + i, len);
            (cid_of(&d), Bytes::from(d))
        })
        .collect()
}

/// Puts `total` bytes of unpinned blocks of `len` bytes, numbered from `seed`: forces eviction.
fn noise(s: &dyn BlockStore, seed: u64, total: usize, len: usize) {
    for (c, d) in blocks(seed, (total / len) as u64, len) {
        s.put(&c, &d).unwrap();
    }
}

fn all_present(s: &dyn BlockStore, bs: &[(Cid, Bytes)]) -> bool {
    bs.iter()
        .all(|(c, d)| s.get(c).unwrap().as_ref() == Some(d))
}

#[test]
fn temp_pin_ids_are_unique_also_across_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, s) in stores(tmp.path(), 1 << 20) {
        let a = s.temp_pin("a").unwrap();
        let b = s.temp_pin("a").unwrap();
        let c = s.temp_pin("b").unwrap();
        assert!(a != b && b != c && a != c, "{name}");
        // Releasing the newest does not make its id available again.
        assert!(s.release_temp(c).unwrap(), "{name}");
        let d = s.temp_pin("b").unwrap();
        assert!(d != c && d != a && d != b, "{name}");
    }
    let mut ids = HashSet::new();
    for round in 0..3 {
        let s = open(tmp.path(), 1 << 20);
        for _ in 0..3 {
            let id = s.temp_pin("r").unwrap();
            assert!(ids.insert(id), "id {id} handed out twice (round {round})");
            s.release_temp(id).unwrap();
        }
        if round == 1 {
            s.abandon();
        }
    }
}

#[test]
fn put_temp_protects_and_release_makes_evictable() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, s) in stores(tmp.path(), 1000) {
        let s = s.as_ref();
        let t = s.temp_pin("dataset:x").unwrap();
        let bs = blocks(100, 8, 300); // 2400 bytes, far beyond the capacity
        s.put_temp(t, &bs).unwrap();
        noise(s, 10_000, 5000, 250);
        assert!(
            all_present(s, &bs),
            "{name}: a temp-pinned block was evicted"
        );
        for (c, _) in &bs {
            assert!(s.is_pinned(c).unwrap(), "{name}");
        }
        let st = s.stats().unwrap();
        assert_eq!(
            (st.temp_pinned_blocks, st.temp_pinned_bytes),
            (8, 2400),
            "{name}: {st:?}"
        );
        assert_eq!(
            (st.pinned_blocks, st.pinned_bytes),
            (8, 2400),
            "{name}: temp-pinned bytes count as pinned"
        );
        assert!(
            st.unpinned_bytes() <= 1000,
            "{name}: temp-pinned bytes do not count against the capacity: {st:?}"
        );
        assert_eq!(s.temp_pins("dataset:x").unwrap(), vec![t], "{name}");
        assert!(
            s.pins().unwrap().is_empty(),
            "{name}: a temporary pin is not a pin"
        );

        assert!(s.release_temp(t).unwrap(), "{name}");
        assert!(!s.release_temp(t).unwrap(), "{name}: second release");
        assert!(!s.release_temp(t + 1000).unwrap(), "{name}: unknown id");
        assert!(s.temp_pins("dataset:x").unwrap().is_empty(), "{name}");
        let st = s.stats().unwrap();
        assert_eq!((st.temp_pinned_bytes, st.pinned_bytes), (0, 0), "{name}");
        assert!(
            st.unpinned_bytes() <= 1000,
            "{name}: release evicts what is beyond the capacity: {st:?}"
        );
        assert!(
            !all_present(s, &bs),
            "{name}: released blocks are ordinary cache again"
        );
        for (c, _) in &bs {
            assert!(!s.is_pinned(c).unwrap(), "{name}");
        }
    }
}

#[test]
fn put_temp_is_idempotent_and_covers_present_blocks() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, s) in stores(tmp.path(), 1 << 20) {
        let s = s.as_ref();
        let bs = blocks(200, 4, 500);
        // two already present unpinned, one identity CID, duplicates in the batch
        s.put(&bs[0].0, &bs[0].1).unwrap();
        s.put_many(&bs[1..2]).unwrap();
        let t = s.temp_pin("w").unwrap();
        let id = identity_cid(b"inline");
        let mut batch = bs.clone();
        batch.push(bs[2].clone());
        batch.push((id, Bytes::from_static(b"inline")));
        s.put_temp(t, &batch).unwrap();
        let st = s.stats().unwrap();
        assert_eq!(
            (
                st.blocks,
                st.bytes,
                st.temp_pinned_blocks,
                st.temp_pinned_bytes
            ),
            (4, 2000, 4, 2000),
            "{name}"
        );
        s.put_temp(t, &batch).unwrap();
        s.put_temp(t, &[]).unwrap();
        assert_eq!(s.stats().unwrap(), st, "{name}: idempotent");
        assert!(all_present(s, &bs), "{name}");
        assert!(!s.has(&id).unwrap() && !s.is_pinned(&id).unwrap(), "{name}");
        // The same blocks in a second temporary pin: both must be released before they are unprotected.
        let t2 = s.temp_pin("w").unwrap();
        s.put_temp(t2, &bs[..2]).unwrap();
        assert_eq!(
            s.stats().unwrap().temp_pinned_bytes,
            2000,
            "{name}: a block counts once"
        );
        s.release_temp(t).unwrap();
        assert!(
            s.is_pinned(&bs[0].0).unwrap() && s.is_pinned(&bs[1].0).unwrap(),
            "{name}"
        );
        assert!(!s.is_pinned(&bs[2].0).unwrap(), "{name}");
        assert_eq!(s.stats().unwrap().temp_pinned_bytes, 1000, "{name}");
    }
}

#[test]
fn unknown_temp_pin_is_an_error_and_stores_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, s) in stores(tmp.path(), 1 << 20) {
        let s = s.as_ref();
        let bs = blocks(300, 3, 100);
        match s.put_temp(4242, &bs) {
            Err(StoreError::UnknownTempPin(4242)) => {}
            other => panic!("{name}: expected UnknownTempPin, got {other:?}"),
        }
        assert_eq!(s.stats().unwrap().blocks, 0, "{name}");
        assert!(matches!(
            s.temp_pin_add(4242, &mut bs.iter().map(|b| b.0)),
            Err(StoreError::UnknownTempPin(4242))
        ));
        let t = s.temp_pin("x").unwrap();
        s.release_temp(t).unwrap();
        assert!(
            matches!(s.put_temp(t, &bs), Err(StoreError::UnknownTempPin(_))),
            "{name}: released id"
        );
        assert_eq!(s.stats().unwrap().blocks, 0, "{name}");
        let msg = StoreError::UnknownTempPin(7).to_string();
        assert!(msg.contains("temporary pin 7"), "{msg}");
    }
    // No temporary file is left behind by the refused put.
    let leftovers: Vec<_> = walk(&tmp.path().join("blocks"));
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn temp_pin_add_protects_present_and_future_blocks() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, s) in stores(tmp.path(), 1000) {
        let s = s.as_ref();
        let bs = blocks(400, 6, 300);
        s.put(&bs[0].0, &bs[0].1).unwrap(); // present
        let t = s.temp_pin("reuse").unwrap();
        // present block 0, absent 1 and 2 (arrive later through a plain put), 0 twice, an identity CID
        let mut cids = vec![bs[0].0, bs[1].0, bs[2].0, bs[0].0, identity_cid(b"x")].into_iter();
        s.temp_pin_add(t, &mut cids).unwrap();
        s.temp_pin_add(t, &mut std::iter::once(bs[1].0)).unwrap();
        let st = s.stats().unwrap();
        assert_eq!(
            (st.temp_pinned_blocks, st.temp_pinned_bytes),
            (1, 300),
            "{name}: only present blocks count"
        );
        for (c, d) in &bs[1..] {
            s.put(c, d).unwrap();
        }
        noise(s, 20_000, 4000, 200);
        assert!(
            all_present(s, &bs[..3]),
            "{name}: blocks added to the temporary pin were evicted"
        );
        assert!(
            !s.has(&bs[5].0).unwrap(),
            "{name}: unprotected block survived the noise"
        );
        let st = s.stats().unwrap();
        assert_eq!(
            (st.temp_pinned_blocks, st.temp_pinned_bytes),
            (3, 900),
            "{name}"
        );
        s.release_temp(t).unwrap();
        assert_eq!(s.stats().unwrap().temp_pinned_bytes, 0, "{name}");
    }
}

#[test]
fn owners_list_and_release_their_temp_pins() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, s) in stores(tmp.path(), 500) {
        let s = s.as_ref();
        let a1 = s.temp_pin("dataset:a").unwrap();
        let b1 = s.temp_pin("dataset:b").unwrap();
        let a2 = s.temp_pin("dataset:a").unwrap();
        s.put_temp(a1, &blocks(500, 2, 300)).unwrap();
        s.put_temp(a2, &blocks(510, 2, 300)).unwrap();
        s.put_temp(b1, &blocks(520, 2, 300)).unwrap();
        assert_eq!(s.temp_pins("dataset:a").unwrap(), vec![a1, a2], "{name}");
        assert_eq!(s.temp_pins("dataset:b").unwrap(), vec![b1], "{name}");
        assert!(s.temp_pins("nobody").unwrap().is_empty(), "{name}");
        assert_eq!(s.release_temp_owner("dataset:a").unwrap(), 2, "{name}");
        assert_eq!(s.release_temp_owner("dataset:a").unwrap(), 0, "{name}");
        assert_eq!(s.release_temp_owner("nobody").unwrap(), 0, "{name}");
        assert!(s.temp_pins("dataset:a").unwrap().is_empty(), "{name}");
        let st = s.stats().unwrap();
        assert_eq!(
            st.temp_pinned_bytes, 600,
            "{name}: b's blocks stay protected"
        );
        assert!(
            st.unpinned_bytes() <= 500,
            "{name}: a's blocks are evicted down to the capacity: {st:?}"
        );
        assert!(all_present(s, &blocks(520, 2, 300)), "{name}");
    }
}

#[test]
fn pin_with_temps_takes_over_in_one_step() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, s) in stores(tmp.path(), 600) {
        let s = s.as_ref();
        let leaves1 = blocks(600, 3, 200);
        let leaves2 = blocks(610, 3, 200);
        let extra = blocks(620, 1, 200); // given explicitly, not in any temporary pin
        let root = blocks(630, 1, 100);
        let t1 = s.temp_pin("dataset:v").unwrap();
        let t2 = s.temp_pin("dataset:v").unwrap();
        let other = s.temp_pin("dataset:other").unwrap();
        s.put_temp(t1, &leaves1).unwrap();
        s.put_temp(t2, &leaves2).unwrap();
        s.put_temp(t2, &root).unwrap();
        s.put(&extra[0].0, &extra[0].1).unwrap();
        s.put_temp(other, &leaves1[..1]).unwrap();

        // An unknown id fails and changes nothing.
        let err = s.pin_with_temps(&root[0].0, "v1", &mut std::iter::empty(), &[t1, 999_999]);
        assert!(
            matches!(err, Err(StoreError::UnknownTempPin(999_999))),
            "{name}: {err:?}"
        );
        assert!(s.pins().unwrap().is_empty(), "{name}");
        assert_eq!(s.temp_pins("dataset:v").unwrap(), vec![t1, t2], "{name}");

        s.pin_with_temps(
            &root[0].0,
            "v1",
            &mut extra.iter().map(|b| b.0),
            &[t1, t2, t1],
        )
        .unwrap();
        assert!(
            s.temp_pins("dataset:v").unwrap().is_empty(),
            "{name}: temporary pins released"
        );
        assert_eq!(s.temp_pins("dataset:other").unwrap(), vec![other], "{name}");
        let pins = s.pins().unwrap();
        assert_eq!(pins.len(), 1, "{name}");
        assert_eq!(
            (pins[0].root, pins[0].label.as_str()),
            (root[0].0, "v1"),
            "{name}"
        );
        assert_eq!(
            (pins[0].blocks, pins[0].bytes),
            (8, 7 * 200 + 100),
            "{name}: root + 6 leaves + extra"
        );
        let st = s.stats().unwrap();
        assert_eq!((st.pinned_blocks, st.pinned_bytes), (8, 1500), "{name}");
        assert_eq!(
            (st.temp_pinned_blocks, st.temp_pinned_bytes),
            (1, 200),
            "{name}: only `other` is left"
        );
        noise(s, 30_000, 3000, 150);
        for set in [&leaves1, &leaves2, &extra, &root] {
            assert!(all_present(s, set), "{name}");
        }
        // The pin and the remaining temporary pin share a block: each keeps it alone.
        assert!(s.unpin(&root[0].0).unwrap(), "{name}");
        assert!(s.is_pinned(&leaves1[0].0).unwrap(), "{name}");
        assert!(!s.is_pinned(&leaves1[1].0).unwrap(), "{name}");
        s.release_temp(other).unwrap();
        assert!(!s.is_pinned(&leaves1[0].0).unwrap(), "{name}");
        let st = s.stats().unwrap();
        assert_eq!(st.pinned_bytes, 0, "{name}");
        assert!(st.unpinned_bytes() <= 600, "{name}: {st:?}");
        // With no temporary pin at all it is a plain pin; re-pinning replaces the set.
        s.pin_with_temps(&root[0].0, "v2", &mut std::iter::once(extra[0].0), &[])
            .unwrap();
        assert_eq!(s.pins().unwrap()[0].blocks, 2, "{name}");
    }
}

/// The issue-8 scenario: capacity 64 KiB, 4 MiB put through one temporary pin in 256 KiB blocks with unpinned noise
/// in between; every block must be there, then pinned with `pin_with_temps`, and still there after a reopen.
#[test]
fn temp_pin_protects_far_more_than_the_capacity() {
    const CAP: u64 = 64 * 1024;
    const BLOCK: usize = 256 * 1024;
    let tmp = tempfile::tempdir().unwrap();
    let data = blocks(1_000_000, 16, BLOCK);
    let root = blocks(2_000_000, 1, 1000);
    for (name, s) in stores(tmp.path(), CAP) {
        let s = s.as_ref();
        let t = s.temp_pin("import").unwrap();
        for (i, chunk) in data.chunks(2).enumerate() {
            s.put_temp(t, chunk).unwrap();
            // 256 KiB of unpinned noise after each 512 KiB: eviction runs again and again
            noise(s, 3_000_000 + i as u64 * 100, 256 * 1024, 16 * 1024);
            let st = s.stats().unwrap();
            assert!(st.unpinned_bytes() <= CAP, "{name}: {st:?}");
            assert_eq!(st.temp_pinned_bytes, ((i + 1) * 2 * BLOCK) as u64, "{name}");
        }
        assert!(
            all_present(s, &data),
            "{name}: a temp-pinned block was evicted"
        );
        s.put_temp(t, &root).unwrap();
        s.pin_with_temps(&root[0].0, "import", &mut std::iter::empty(), &[t])
            .unwrap();
        noise(s, 4_000_000, 512 * 1024, 16 * 1024);
        assert!(
            all_present(s, &data) && all_present(s, &root),
            "{name}: a pinned block was evicted"
        );
        let st = s.stats().unwrap();
        assert_eq!(st.pinned_bytes, 16 * BLOCK as u64 + 1000, "{name}");
        assert_eq!(st.temp_pinned_bytes, 0, "{name}");
        assert!(st.unpinned_bytes() <= CAP, "{name}: {st:?}");
    }
    let s = open(tmp.path(), CAP);
    noise(&s, 5_000_000, 512 * 1024, 16 * 1024);
    assert!(
        all_present(&s, &data) && all_present(&s, &root),
        "pinned blocks after reopen"
    );
    assert_eq!(s.pins().unwrap()[0].blocks, 17);
    assert!(s.temp_pins("import").unwrap().is_empty());
}

/// A crash (drop without the orderly close) keeps the temporary pins and their blocks; the owner then frees them.
#[test]
fn temp_pins_survive_a_crash_until_released() {
    const CAP: u64 = 10_000;
    let tmp = tempfile::tempdir().unwrap();
    let kept = blocks(7000, 10, 2000);
    let added = blocks(7100, 2, 2000);
    let finished = blocks(7200, 3, 2000);
    let (t1, t2);
    {
        let s = open(tmp.path(), CAP);
        t1 = s.temp_pin("dataset:crashy").unwrap();
        s.put_temp(t1, &kept[..5]).unwrap();
        s.put_many(&added).unwrap();
        s.temp_pin_add(t1, &mut added.iter().map(|b| b.0)).unwrap();
        t2 = s.temp_pin("dataset:crashy").unwrap();
        s.put_temp(t2, &kept[5..]).unwrap();
        // another writer that finished before the crash
        let t3 = s.temp_pin("dataset:fine").unwrap();
        s.put_temp(t3, &finished).unwrap();
        s.pin_with_temps(&finished[0].0, "fine", &mut std::iter::empty(), &[t3])
            .unwrap();
        s.abandon();
    }
    let s = open(tmp.path(), CAP);
    assert_eq!(s.temp_pins("dataset:crashy").unwrap(), vec![t1, t2]);
    assert!(s.temp_pins("dataset:fine").unwrap().is_empty());
    let st = s.stats().unwrap();
    assert_eq!(
        (st.temp_pinned_blocks, st.temp_pinned_bytes),
        (12, 24_000),
        "{st:?}"
    );
    assert_eq!(st.pinned_bytes, 30_000);
    noise(&s, 8000, 30_000, 1000);
    assert!(
        all_present(&s, &kept) && all_present(&s, &added),
        "temp-pinned blocks evicted after the crash"
    );
    assert!(all_present(&s, &finished));
    // New ids keep growing after the crash.
    let t4 = s.temp_pin("dataset:crashy").unwrap();
    assert!(t4 > t2);
    assert_eq!(s.release_temp_owner("dataset:crashy").unwrap(), 3);
    let st = s.stats().unwrap();
    assert_eq!((st.temp_pinned_blocks, st.temp_pinned_bytes), (0, 0));
    assert_eq!(st.pinned_bytes, 6000);
    assert!(
        st.unpinned_bytes() <= CAP,
        "released blocks are evicted down to the capacity: {st:?}"
    );
    drop(s);
    let s = open(tmp.path(), CAP);
    assert!(
        s.temp_pins("dataset:crashy").unwrap().is_empty(),
        "the release is persistent"
    );
    assert_eq!(s.stats().unwrap().temp_pinned_bytes, 0);
}

/// A store created before temporary pins existed (no temp tables) gains them on open and keeps its pins.
#[test]
fn older_store_is_migrated() {
    let tmp = tempfile::tempdir().unwrap();
    let b = blocks(9000, 3, 100);
    {
        let s = open(tmp.path(), 1 << 20);
        s.put_many(&b).unwrap();
        s.pin(&b[0].0, "old", &mut std::iter::once(b[1].0)).unwrap();
    }
    {
        let conn = rusqlite::Connection::open(tmp.path().join("index.sqlite")).unwrap();
        conn.execute_batch(
            "DROP TABLE temp_pin_blocks; DROP INDEX temp_pins_owner; DROP TABLE temp_pins;",
        )
        .unwrap();
    }
    let s = open(tmp.path(), 1 << 20);
    assert_eq!(s.pins().unwrap().len(), 1);
    assert!(s.is_pinned(&b[1].0).unwrap());
    let t = s.temp_pin("new").unwrap();
    s.put_temp(t, &b[2..]).unwrap();
    assert!(s.is_pinned(&b[2].0).unwrap());
    drop(s);
    let s = open(tmp.path(), 1 << 20);
    assert_eq!(s.temp_pins("new").unwrap(), vec![t]);
    assert_eq!(s.stats().unwrap().temp_pinned_bytes, 100);
}

/// Writers put through temporary pins while other threads put unpinned blocks and evict: no temp-pinned block is
/// ever missing.
#[test]
fn concurrent_put_temp_and_eviction() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Arc::new(open(tmp.path(), 32 * 1024));
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                if t % 2 == 0 {
                    // writer
                    for round in 0..10u64 {
                        let id = s.temp_pin(&format!("w{t}")).unwrap();
                        let bs = blocks(100_000 * (t + 1) + round * 1000, 20, 4096);
                        for chunk in bs.chunks(3) {
                            s.put_temp(id, chunk).unwrap();
                            // a block shared with the noise threads: present or not, it must end up protected
                            s.put_temp(id, &blocks(50, 1, 4096)).unwrap();
                        }
                        for (c, d) in &bs {
                            assert_eq!(
                                s.get(c).unwrap().as_ref(),
                                Some(d),
                                "temp-pinned block missing"
                            );
                        }
                        assert!(s.has(&blocks(50, 1, 4096)[0].0).unwrap());
                        if round % 2 == 0 {
                            s.pin_with_temps(&bs[0].0, "w", &mut std::iter::empty(), &[id])
                                .unwrap();
                            assert!(all_present(s.as_ref(), &bs));
                            s.unpin(&bs[0].0).unwrap();
                        } else {
                            s.release_temp(id).unwrap();
                        }
                    }
                } else {
                    // noise + eviction, including the shared block
                    for n in 0..300u64 {
                        let (c, d) = &blocks(
                            if n % 10 == 0 {
                                50
                            } else {
                                900_000 + t * 10_000 + n
                            },
                            1,
                            4096,
                        )[0];
                        s.put(c, d).unwrap();
                        if n % 25 == 0 {
                            s.evict().unwrap();
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let st = s.stats().unwrap();
    assert_eq!((st.pinned_bytes, st.temp_pinned_bytes), (0, 0), "{st:?}");
    assert!(st.unpinned_bytes() <= 32 * 1024, "{st:?}");
}

/// ENOSPC: a store on a tiny tmpfs reports `NoSpace` (errno ENOSPC) and leaves no partial block file. Needs root to
/// mount the tmpfs; skipped otherwise.
#[test]
fn no_space_is_reported_and_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let Some(_guard) = TmpfsMount::new(&mnt, 1024 * 1024) else {
        eprintln!("skipped: cannot mount a tmpfs here (not root?)");
        return;
    };
    // Space to give back at the end, so that the store can be opened again.
    let ballast = mnt.join("ballast");
    std::fs::write(&ballast, vec![1u8; 256 * 1024]).unwrap();
    let s = open(&mnt.join("store"), 1 << 30);
    let t = s.temp_pin("fill").unwrap();
    let mut stored = Vec::new();
    let mut err = None;
    for (i, b) in blocks(60_000, 40, 64 * 1024).into_iter().enumerate() {
        let r = match i % 3 {
            0 => s.put(&b.0, &b.1),
            1 => s.put_many(std::slice::from_ref(&b)),
            _ => s.put_temp(t, std::slice::from_ref(&b)),
        };
        match r {
            Ok(()) => stored.push(b),
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    let e = err.expect("a 1 MiB file system filled up");
    assert!(e.is_no_space(), "expected NoSpace, got {e:?}");
    assert_eq!(e.errno(), libc::ENOSPC);
    assert!(e.to_string().contains("no space left"), "{e}");
    // a batch fails as a whole too
    let batch = blocks(70_000, 4, 64 * 1024);
    assert!(s.put_many(&batch).unwrap_err().is_no_space());
    assert!(s.put_temp(t, &batch).unwrap_err().is_no_space());
    // nothing half-written: every file under blocks/ is a complete block of the index
    let st = s.stats().unwrap();
    let files = walk(&mnt.join("store/blocks"));
    assert!(
        files
            .iter()
            .all(|p| p.extension().is_some_and(|x| x == "data")),
        "{files:?}"
    );
    assert_eq!(files.len() as u64, st.blocks, "{files:?}");
    assert!(all_present(&s, &stored));
    assert_eq!(st.blocks, stored.len() as u64);
    drop(s);
    // and, with some space back, the store opens again: its index is fine
    std::fs::remove_file(&ballast).unwrap();
    let s = DiskStore::open(config(&mnt.join("store"), 1 << 30)).unwrap();
    assert!(all_present(&s, &stored));
}

struct TmpfsMount(std::path::PathBuf);

impl TmpfsMount {
    fn new(dir: &Path, size: u64) -> Option<Self> {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let target = CString::new(dir.as_os_str().as_bytes()).ok()?;
        let opts = CString::new(format!("size={size}")).ok()?;
        // SAFETY: valid NUL-terminated strings that outlive the call.
        let rc = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                opts.as_ptr().cast(),
            )
        };
        (rc == 0).then(|| TmpfsMount(dir.to_path_buf()))
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        use std::os::unix::ffi::OsStrExt;
        if let Ok(p) = std::ffi::CString::new(self.0.as_os_str().as_bytes()) {
            // SAFETY: a valid NUL-terminated path.
            unsafe { libc::umount2(p.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// `put_temp_many`: several pins' blocks at once (one index transaction on disk), each pin
/// protecting its own; a pin released before the call is skipped and named, the others stored.
#[test]
fn put_temp_many_protects_each_pin_and_skips_released_ones() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, s) in stores(tmp.path(), 64 << 10) {
        let a = s.temp_pin("many").unwrap();
        let b = s.temp_pin("many").unwrap();
        let gone = s.temp_pin("many").unwrap();
        s.release_temp(gone).unwrap();
        let (ba, bb, bg) = (
            blocks(100, 4, 4096),
            blocks(200, 3, 4096),
            blocks(300, 2, 4096),
        );
        // A block shared by two pins is written once and held by both.
        let mut bb_shared = bb.clone();
        bb_shared.push(ba[0].clone());
        let unknown = s
            .put_temp_many(&[(a, &ba[..]), (gone, &bg[..]), (b, &bb_shared[..])])
            .unwrap();
        assert_eq!(unknown, vec![gone], "{name}");
        noise(&*s, 10_000, 512 << 10, 4096);
        assert!(all_present(&*s, &ba), "{name}: pin a's blocks evicted");
        assert!(
            all_present(&*s, &bb_shared),
            "{name}: pin b's blocks evicted"
        );
        // Releasing a leaves the shared block to b.
        s.release_temp(a).unwrap();
        noise(&*s, 20_000, 512 << 10, 4096);
        assert!(
            all_present(&*s, &bb_shared),
            "{name}: a block b shares with a evicted"
        );
        s.release_temp(b).unwrap();
    }
}
