#![no_main]
//! decode_node never panics for any codec; the first byte picks the codec.

use bytes::Bytes;
use ipfs_mount_ipld::{cid, cids, codec, unixfs, Cid};
use libfuzzer_sys::fuzz_target;

const CODECS: [u64; 7] = [
    codec::DAG_PB,
    codec::RAW,
    codec::DAG_CBOR,
    codec::DAG_JSON,
    codec::CBOR,
    codec::JSON,
    0x300,
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, block)) = data.split_first() else {
        return;
    };
    let c = CODECS[sel as usize % CODECS.len()];
    let cid = Cid::new_v1(
        c,
        *cids::compute(cid::Version::V1, codec::RAW, 0x12, b"")
            .unwrap()
            .hash(),
    );
    let a = unixfs::decode_node(&cid, block);
    let b = unixfs::decode_node_shared(&cid, &Bytes::copy_from_slice(block));
    assert_eq!(a, b);
    if let Ok(unixfs::Node::File(f)) = &a {
        let sum: u64 = f.children.iter().map(|(_, s)| *s).sum::<u64>() + f.inline.len() as u64;
        assert_eq!(sum, f.size);
    }
    if let Ok(d) = unixfs::decode_data(block) {
        assert_eq!(unixfs::decode_data(&unixfs::encode_data(&d)), Ok(d));
    }
    let _ = unixfs::is_safe_name(block);
    if let Ok(s) = std::str::from_utf8(block) {
        let _ = cids::parse(s);
    }
});
