//! CAR files in and out of the store (the `import` and `export` commands are in `cmd::car`).
//!
//! Import streams each CAR through the incremental decoder, verifies every block against its
//! CID, stores blocks in batches and pins each root with the blocks the CAR brought. Every
//! block is stored through one temporary pin (owner [`IMPORT_TEMP_OWNER`]), so nothing of the
//! import can be evicted before the roots are pinned, even for a CAR far larger than the cache;
//! the last root's pin takes over the temporary pin in the same store transaction. A block
//! that fails verification stops that CAR's import, nothing of it is pinned and the temporary
//! pin is released (its blocks become ordinary cache). The temporary pins of an import that
//! crashed are released the next time the store is opened ([`release_leftovers`]).
//! Export walks the DAG depth-first from the root and writes a CARv1 with each block once.

use std::io::{IsTerminal, Read, Write};
use std::ops::ControlFlow;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use cid::Cid;
use indicatif::{ProgressBar, ProgressStyle};
use ipfs_mount_ipld::reader::dag::{DagWalk, Scope};
use ipfs_mount_ipld::reader::{self, Limits};
use ipfs_mount_ipld::{car, cids};
use ipfs_mount_store::{BlockStore, StoreError, TempPinId};

use crate::blocks::BlockService;

const BATCH: usize = 256;

/// Owner of the temporary pins of imports.
pub const IMPORT_TEMP_OWNER: &str = "import";

/// Releases the temporary pins that an import which did not finish (a crash, a kill) left in the
/// store. Call right after opening the store, before any import of this process starts.
pub fn release_leftovers(store: &dyn BlockStore) -> Result<u64, StoreError> {
    let n = store.release_temp_owner(IMPORT_TEMP_OWNER)?;
    if n > 0 {
        tracing::info!(
            temp_pins = n,
            "released the temporary pins of an unfinished import"
        );
    }
    Ok(n)
}

/// A progress bar on standard error when it is a terminal, else a hidden one.
pub fn progress(len: Option<u64>, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = match len {
        Some(l) => ProgressBar::new(l).with_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{msg} {spinner} {pos} blocks, {bytes}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    pb.set_message(what.to_string());
    pb
}

/// Imports one CAR; returns its roots.
pub fn import_one(store: &BlockService, path: &Path) -> Result<Vec<Cid>> {
    let temp = store
        .temp_pin(IMPORT_TEMP_OWNER)
        .context("creating the import's temporary pin")?;
    let result = import_into(store, path, temp);
    if result.is_err() {
        // Nothing is pinned: what was stored becomes ordinary cache.
        if let Err(e) = store.release_temp(temp) {
            tracing::warn!("cannot release the temporary pin of a failed import: {e}");
        }
    }
    result
}

/// [`import_one`] with every block stored through the temporary pin `temp`, which the last
/// root's pin takes over.
fn import_into(store: &BlockService, path: &Path, temp: TempPinId) -> Result<Vec<Cid>> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let len = file.metadata().ok().map(|m| m.len());
    let pb = progress(len, &path.display().to_string());
    let mut decoder = car::CarDecoder::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut batch: Vec<(Cid, Bytes)> = Vec::with_capacity(BATCH);
    let mut seen: Vec<Cid> = Vec::new();
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        pb.inc(n as u64);
        decoder.push(&buf[..n]);
        while let Some((cid, data)) = decoder
            .next_block()
            .map_err(|e| anyhow!("malformed CAR: {e}"))?
        {
            cids::verify(&cid, &data)
                .map_err(|e| anyhow!("block {cid} failed verification: {e}"))?;
            seen.push(cid);
            if cids::identity_data(&cid).is_none() {
                batch.push((cid, data));
            }
            if batch.len() >= BATCH {
                store.put_temp(temp, &batch).context("storing blocks")?;
                batch.clear();
            }
        }
    }
    decoder
        .finish()
        .map_err(|e| anyhow!("malformed or truncated CAR: {e}"))?;
    if !batch.is_empty() {
        store.put_temp(temp, &batch).context("storing blocks")?;
    }
    pb.finish_and_clear();
    let roots = decoder
        .header()
        .map(|h| h.roots.clone())
        .unwrap_or_default();
    // Every root is pinned with the blocks the CAR brought, while the temporary pin still holds
    // them; the last pin takes the temporary pin over in one transaction.
    match roots.split_last() {
        Some((last, rest)) => {
            for root in rest {
                store
                    .pin(root, "import", &mut seen.iter().copied())
                    .with_context(|| format!("pinning {root}"))?;
            }
            store
                .pin_with_temps(last, "import", &mut seen.iter().copied(), &[temp])
                .with_context(|| format!("pinning {last}"))?;
        }
        None => {
            // A CAR without roots pins nothing: its blocks are ordinary cache, as before.
            store
                .release_temp(temp)
                .context("releasing the import's temporary pin")?;
        }
    }
    tracing::info!(blocks = seen.len(), "imported {}", path.display());
    Ok(roots)
}

/// Deepest block an export follows (dag-cbor chains can be long; UnixFS is a few levels).
const EXPORT_MAX_DEPTH: u32 = 4096;

/// Writes the whole DAG below `root` as a CARv1: depth-first, pre-order, each block once
/// (dag-pb, dag-cbor and dag-json links), through the ipld DAG-walk planner, which keeps a
/// window of fetches in flight and bounds the depth.
pub fn write_car(
    blocks: &BlockService,
    rt: &tokio::runtime::Handle,
    root: &Cid,
    out: &mut dyn Write,
    pb: &ProgressBar,
) -> Result<()> {
    out.write_all(&car::encode_header_v1(&[*root]))?;
    let mut walk = DagWalk::new(
        *root,
        Scope::All,
        Limits::default().with_max_depth(EXPORT_MAX_DEPTH),
    );
    let mut write_error = None;
    rt.block_on(reader::drive::run(&mut walk, blocks, |v| {
        if let Err(e) = out.write_all(&car::encode_section(&v.cid, &v.block)) {
            write_error = Some(e);
            return ControlFlow::Break(());
        }
        pb.inc(1);
        pb.inc_length(v.block.len() as u64);
        ControlFlow::Continue(())
    }))
    .map_err(|e| anyhow!("{e}"))?;
    if let Some(e) = write_error {
        return Err(e.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipfs_mount_ipld::builder::{build_file, Built, ImportProfile};
    use ipfs_mount_store::{DiskStore, StoreConfig};
    use std::sync::Arc;

    const CAP: u64 = 1024 * 1024;

    fn open(dir: &Path) -> Arc<DiskStore> {
        Arc::new(
            DiskStore::open(StoreConfig {
                dir: dir.to_path_buf(),
                cache_capacity: CAP,
                sync_writes: false,
            })
            .unwrap(),
        )
    }

    /// [`import_one`] through an offline block service over `store`.
    fn import(store: &Arc<DiskStore>, path: &Path) -> Result<Vec<Cid>> {
        import_one(
            &BlockService::new(store.clone(), vec![], true, 8 << 20),
            path,
        )
    }

    /// A UnixFS file of `len` deterministic bytes in 64 KiB raw leaves.
    fn file(seed: u64, len: usize) -> Built {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut data = Vec::with_capacity(len + 8);
        while data.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            data.extend_from_slice(&x.to_le_bytes());
        }
        data.truncate(len);
        let mut profile = ImportProfile::unixfs_v1_2025();
        profile.chunk_size = 64 * 1024;
        build_file(&data, &profile)
    }

    fn write_car(path: &Path, roots: &[Cid], blocks: &[(Cid, Bytes)]) {
        let mut out = car::encode_header_v1(roots);
        for (c, d) in blocks {
            out.extend_from_slice(&car::encode_section(c, d));
        }
        std::fs::write(path, out).unwrap();
    }

    fn noise(store: &dyn BlockStore, seed: u64, total: usize) {
        let f = file(seed, total);
        store.put_many(&f.blocks).unwrap();
    }

    fn all_readable(store: &dyn BlockStore, blocks: &[(Cid, Bytes)]) -> bool {
        blocks
            .iter()
            .all(|(c, d)| store.get(c).unwrap().as_ref() == Some(d))
    }

    /// Issue 8: a CAR 4x larger than the cache keeps every block (it used to lose most of them
    /// to eviction before the final pin), also after more traffic and a reopen.
    #[test]
    fn import_of_a_car_larger_than_the_cache_keeps_every_block() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let f = file(1, 4 * CAP as usize);
        assert!(f.blocks.len() > 64, "{} blocks", f.blocks.len());
        let car_path = tmp.path().join("big.car");
        write_car(&car_path, &[f.root], &f.blocks);
        assert!(std::fs::metadata(&car_path).unwrap().len() >= 4 * CAP);
        {
            let store = open(&dir);
            let roots = import(&store, &car_path).unwrap();
            assert_eq!(roots, vec![f.root]);
            assert!(
                all_readable(&*store, &f.blocks),
                "imported blocks were evicted"
            );
            let st = store.stats().unwrap();
            let total: u64 = f.blocks.iter().map(|(_, d)| d.len() as u64).sum();
            assert_eq!(st.pinned_bytes, total, "{st:?}");
            assert_eq!(st.temp_pinned_bytes, 0, "{st:?}");
            assert!(store.temp_pins(IMPORT_TEMP_OWNER).unwrap().is_empty());
            let pins = store.pins().unwrap();
            assert_eq!(pins.len(), 1);
            assert_eq!(
                (pins[0].root, pins[0].label.as_str(), pins[0].blocks),
                (f.root, "import", f.blocks.len() as u64)
            );
            noise(&*store, 2, 3 * CAP as usize);
            assert!(all_readable(&*store, &f.blocks));
            assert!(store.stats().unwrap().unpinned_bytes() <= CAP);
        }
        let store = open(&dir);
        noise(&*store, 3, 2 * CAP as usize);
        assert!(
            all_readable(&*store, &f.blocks),
            "imported blocks lost after reopen"
        );
    }

    /// A CAR with two roots pins both; a CAR whose last block is forged imports nothing pinned
    /// and leaves no temporary pin; leftovers of a crashed import are released.
    #[test]
    fn import_roots_failures_and_leftovers() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(&tmp.path().join("store"));
        let a = file(10, 1024 * 1024 + 5);
        let b = file(11, 2 * 1024 * 1024);
        let both = tmp.path().join("both.car");
        let mut all = a.blocks.clone();
        all.extend(b.blocks.iter().cloned());
        write_car(&both, &[a.root, b.root], &all);
        assert_eq!(import(&store, &both).unwrap(), vec![a.root, b.root]);
        assert_eq!(store.pins().unwrap().len(), 2);
        noise(&*store, 12, 3 * CAP as usize);
        assert!(all_readable(&*store, &all));
        assert!(store.temp_pins(IMPORT_TEMP_OWNER).unwrap().is_empty());

        let c = file(13, 3 * 1024 * 1024);
        let mut forged = c.blocks.clone();
        let last = forged.len() - 1;
        forged[last].1 = Bytes::from_static(b"not the block");
        let bad = tmp.path().join("bad.car");
        write_car(&bad, &[c.root], &forged);
        let err = import(&store, &bad).unwrap_err();
        assert!(
            format!("{err:#}").contains("failed verification"),
            "{err:#}"
        );
        assert_eq!(
            store.pins().unwrap().len(),
            2,
            "nothing of the bad CAR is pinned"
        );
        assert!(store.temp_pins(IMPORT_TEMP_OWNER).unwrap().is_empty());
        let st = store.stats().unwrap();
        assert_eq!(st.temp_pinned_bytes, 0);
        assert!(
            st.unpinned_bytes() <= CAP,
            "the failed import's blocks are ordinary cache: {st:?}"
        );

        // What a killed import leaves: a temporary pin of the import owner.
        let t = store.temp_pin(IMPORT_TEMP_OWNER).unwrap();
        store.put_temp(t, &c.blocks[..4]).unwrap();
        assert_eq!(release_leftovers(&*store).unwrap(), 1);
        assert_eq!(release_leftovers(&*store).unwrap(), 0);
        assert_eq!(store.stats().unwrap().temp_pinned_bytes, 0);
    }

    /// Export writes each block once, in depth-first pre-order, a file of repeated chunks
    /// included (its shared leaf once), and fails on a missing block.
    #[test]
    fn export_writes_each_block_once_in_pre_order() {
        use ipfs_mount_ipld::dagpb;
        use ipfs_mount_store::MemoryStore;
        let mut profile = ImportProfile::unixfs_v1_2025();
        profile.chunk_size = 1024;
        profile.max_links = 4;
        let mut data = vec![0u8; 40 * 1024];
        data[20_000] = 1;
        let f = build_file(&data, &profile);
        let store = Arc::new(MemoryStore::new(1 << 30));
        store.put_many(&f.blocks).unwrap();
        let service = BlockService::new(store, vec![], true, 8 << 20);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut out = Vec::new();
        super::write_car(
            &service,
            rt.handle(),
            &f.root,
            &mut out,
            &ProgressBar::hidden(),
        )
        .unwrap();
        let mut dec = car::CarDecoder::new();
        dec.push(&out);
        let mut got = Vec::new();
        while let Some((c, _)) = dec.next_block().unwrap() {
            got.push(c);
        }
        // expected: recursive pre-order, first occurrence only
        let map: std::collections::HashMap<Cid, Bytes> = f.blocks.iter().cloned().collect();
        fn pre(c: Cid, map: &std::collections::HashMap<Cid, Bytes>, seen: &mut Vec<Cid>) {
            if seen.contains(&c) {
                return;
            }
            seen.push(c);
            if c.codec() == 0x70 {
                for l in dagpb::decode(&map[&c]).unwrap().links {
                    pre(l.cid, map, seen);
                }
            }
        }
        let mut want = Vec::new();
        pre(f.root, &map, &mut want);
        assert_eq!(got, want);
        assert_eq!(got.len(), f.blocks.len());
        // a missing block is an error
        let store = Arc::new(MemoryStore::new(1 << 30));
        store.put_many(&f.blocks[f.blocks.len() - 1..]).unwrap();
        let service = BlockService::new(store, vec![], true, 8 << 20);
        let mut out = Vec::new();
        assert!(super::write_car(
            &service,
            rt.handle(),
            &f.root,
            &mut out,
            &ProgressBar::hidden()
        )
        .is_err());
    }
}
