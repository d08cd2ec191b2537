#![no_main]
//! dag-pb decoding never panics; whatever decodes re-encodes to something that decodes
//! to the same node.

use ipfs_mount_ipld::{dagpb, unixfs};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(node) = dagpb::decode(data) {
        let enc = dagpb::encode(&node);
        assert_eq!(enc.len(), dagpb::encoded_len(&node));
        assert_eq!(dagpb::decode(&enc).as_ref(), Ok(&node));
        if let Some(d) = &node.data {
            if let Ok(u) = unixfs::decode_data(d) {
                assert_eq!(unixfs::decode_data(&unixfs::encode_data(&u)), Ok(u));
            }
        }
    }
});
