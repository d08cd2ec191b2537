//! File import for datasets: the streaming [`FileWriter`] of the builder, whose root CID equals
//! a whole-file import's, so appends that reuse an old version's full leaves give the CID Kubo
//! and Helia would compute for the whole new file.

pub use ipfs_mount_ipld::builder::{FileWriter, Leaf};

#[cfg(test)]
mod tests {
    use super::*;
    use ipfs_mount_ipld::builder::{build_file, ImportProfile};

    #[test]
    fn streaming_matches_whole_file_builder() {
        let data: Vec<u8> = (0..3_333_333u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let mut odd = ImportProfile::unixfs_v0_2015();
        odd.chunk_size = 100_000;
        odd.max_links = 7;
        for p in [
            ImportProfile::unixfs_v0_2015(),
            ImportProfile::unixfs_v1_2025(),
            odd,
        ] {
            for len in [0usize, 1, 100_000, 262_144, 3_333_333] {
                let mut w = FileWriter::new(&p);
                for piece in data[..len].chunks(77_777) {
                    w.write(piece);
                }
                let root = w.finish();
                let whole = build_file(&data[..len], &p);
                assert_eq!(root.cid, whole.root, "len {len}");
                assert_eq!(root.tsize, whole.tsize);
                assert_eq!(root.size, len as u64);
            }
        }
    }

    #[test]
    fn appending_with_reused_leaves_gives_the_same_cid() {
        let mut p = ImportProfile::unixfs_v1_2025();
        p.chunk_size = 1000;
        p.max_links = 4;
        let data: Vec<u8> = (0..25_500u32).map(|i| i as u8).collect();
        let mut w = FileWriter::new(&p);
        w.write(&data[..20_000]);
        let _ = w.finish();
        // The old version's 20 full leaves, then the appended bytes.
        let mut old = FileWriter::new(&p);
        old.write(&data[..20_000]);
        let leaves: Vec<Leaf> = old.leaves().collect();
        let mut again = FileWriter::new(&p);
        for l in leaves {
            again.push_leaf(l);
        }
        again.write(&data[20_000..]);
        assert_eq!(again.finish().cid, build_file(&data, &p).root);
    }
}
