#![no_main]
//! HAMT shard decoding and lookup never panic. Input: 1 byte name length, name, then a
//! dag-pb block.

use ipfs_mount_ipld::{cids, codec, hamt, unixfs, Cid};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = (n as usize).min(rest.len());
    let (name, block) = rest.split_at(n);
    let Ok(cid) = cids::compute(
        ipfs_mount_ipld::cid::Version::V0,
        codec::DAG_PB,
        0x12,
        block,
    ) else {
        return;
    };
    let cid: Cid = cid;
    if let Ok(unixfs::Node::HamtShard(node)) = unixfs::decode_node(&cid, block) {
        for depth in [0u32, 1, 2, 7, 8, 63, 64, u32::MAX] {
            if let Ok(hamt::Step::Found { cid: found, .. }) = hamt::lookup_step(&node, name, depth)
            {
                assert!(node.links.iter().any(|l| l.cid() == &found));
            }
        }
        for l in &node.links {
            if let hamt::HamtLink::Entry { name, cid, .. } = l {
                // an entry is found at the depth whose bucket matches its index
                for depth in 0..8 {
                    if hamt::bucket_index(name, depth, node.fanout).ok() == Some(l.index()) {
                        assert!(matches!(
                            hamt::lookup_step(&node, name, depth),
                            Ok(hamt::Step::Found { cid: c, .. }) if &c == cid
                        ));
                    }
                }
            }
        }
    }
});
