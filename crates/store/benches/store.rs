//! Store benchmark (plain harness): `cargo bench -p ipfs-mount-store --bench store`.
//!
//! 1. `put_many` of STORE_BENCH_PUT_MB MiB (default 1024) in 1 MiB blocks, without and with `sync_writes`
//!    (the synced run uses STORE_BENCH_SYNC_MB, default 256).
//! 2. `get` throughput of 256 KiB and 1 MiB blocks (page cache warm) against `std::fs::read` of the same files,
//!    interleaved rounds, medians and their ratio.
//!
//! STORE_BENCH_DIR chooses the parent directory (default: the system temp dir).

use std::time::{Duration, Instant};

use bytes::Bytes;
use cid::Cid;
use ipfs_mount_store::{BlockStore, DiskStore, StoreConfig};
use multihash::Multihash;
use sha2::{Digest, Sha256};

const MIB: usize = 1 << 20;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn blocks(seed: u64, n: usize, size: usize) -> Vec<(Cid, Bytes)> {
    (0..n)
        .map(|i| {
            let mut x = (seed << 32) ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 1;
            let mut v = Vec::with_capacity(size);
            while v.len() < size {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                v.extend_from_slice(&x.to_le_bytes());
            }
            v.truncate(size);
            let cid = Cid::new_v1(0x55, Multihash::wrap(0x12, &Sha256::digest(&v)).unwrap());
            (cid, Bytes::from(v))
        })
        .collect()
}

fn gib_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / (1u64 << 30) as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn open(parent: &std::path::Path, name: &str, sync: bool) -> DiskStore {
    DiskStore::open(StoreConfig {
        dir: parent.join(name),
        cache_capacity: u64::MAX,
        sync_writes: sync,
    })
    .unwrap()
}

fn bench_put(parent: &std::path::Path, mb: usize, sync: bool) {
    let store = open(parent, if sync { "put-sync" } else { "put" }, sync);
    let mut total = Duration::ZERO;
    // 64 MiB batches, as a CAR import or bulk fetch would hand them over
    for chunk in 0..mb.div_ceil(64) {
        let n = 64.min(mb - chunk * 64);
        let batch = blocks(1000 + chunk as u64 + if sync { 1 << 20 } else { 0 }, n, MIB);
        let t = Instant::now();
        store.put_many(&batch).unwrap();
        total += t.elapsed();
    }
    let t = Instant::now();
    store.flush().unwrap();
    total += t.elapsed();
    // Baseline: the same amount written as plain files (create + write [+ fsync] + close) into 256 directories.
    let base = parent.join(if sync { "plain-sync" } else { "plain" });
    for d in 0..256 {
        std::fs::create_dir_all(base.join(d.to_string())).unwrap();
    }
    let mut plain = Duration::ZERO;
    for chunk in 0..mb.div_ceil(64) {
        let n = 64.min(mb - chunk * 64);
        let batch = blocks(5000 + chunk as u64 + if sync { 1 << 20 } else { 0 }, n, MIB);
        let t = Instant::now();
        for (i, (_, d)) in batch.iter().enumerate() {
            let mut f = std::fs::File::create(
                base.join(((chunk * 64 + i) % 256).to_string())
                    .join(format!("{chunk}-{i}")),
            )
            .unwrap();
            std::io::Write::write_all(&mut f, d).unwrap();
            if sync {
                f.sync_data().unwrap();
            }
        }
        plain += t.elapsed();
    }
    println!(
        "put_many {mb} MiB in 1 MiB blocks, sync_writes={sync}: {:.2} s, {:.0} MiB/s; plain file writes {:.0} MiB/s, ratio {:.2}",
        total.as_secs_f64(),
        mb as f64 / total.as_secs_f64(),
        mb as f64 / plain.as_secs_f64(),
        plain.as_secs_f64() / total.as_secs_f64()
    );
}

fn bench_get(parent: &std::path::Path, block_size: usize, total_mb: usize) {
    let store = open(parent, &format!("get-{block_size}"), false);
    let n = total_mb * MIB / block_size;
    let data = blocks(block_size as u64, n, block_size);
    store.put_many(&data).unwrap();
    let cids: Vec<Cid> = data.iter().map(|b| b.0).collect();
    drop(data);
    let paths: Vec<_> = cids.iter().map(|c| store.block_path(c).unwrap()).collect();
    let bytes = n * block_size;
    // warm the page cache
    for c in &cids {
        std::hint::black_box(store.get(c).unwrap().unwrap());
    }
    let (mut store_r, mut fs_r) = (Vec::new(), Vec::new());
    // Alternate which side runs first so neither profits from the other's cache state.
    for round in 0..12 {
        for side in [round % 2, 1 - round % 2] {
            let t = Instant::now();
            if side == 0 {
                for c in &cids {
                    std::hint::black_box(store.get(c).unwrap().unwrap());
                }
                store_r.push(gib_s(bytes, t.elapsed()));
            } else {
                for p in &paths {
                    std::hint::black_box(std::fs::read(p).unwrap());
                }
                fs_r.push(gib_s(bytes, t.elapsed()));
            }
        }
    }
    let (s, f) = (median(store_r), median(fs_r));
    println!(
        "get {} KiB blocks ({n} blocks, {total_mb} MiB, warm): store.get {s:.2} GiB/s, std::fs::read {f:.2} GiB/s, ratio {:.3}",
        block_size / 1024,
        s / f
    );
}

fn main() {
    // `cargo test --benches` runs this with --bench absent; keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let parent_base = std::env::var_os("STORE_BENCH_DIR")
        .map(Into::into)
        .unwrap_or_else(std::env::temp_dir);
    let parent = tempfile::tempdir_in(parent_base).unwrap();
    if quick {
        bench_get(parent.path(), 256 * 1024, 8);
        return;
    }
    bench_get(parent.path(), 256 * 1024, 256);
    bench_get(parent.path(), MIB, 256);
    if std::env::var_os("STORE_BENCH_GET_ONLY").is_some() {
        return;
    }
    bench_put(parent.path(), env_usize("STORE_BENCH_PUT_MB", 1024), false);
    bench_put(parent.path(), env_usize("STORE_BENCH_SYNC_MB", 256), true);
}
