#![no_main]
//! dag-cbor, cbor, dag-json and json blocks (any content a gateway or peer hands us, shown as
//! documents under /ipfs and by `--serve`) render as dag-json without panicking, and what
//! renders is dag-json that reads back. The first input byte picks the codec.

use ipfs_mount_ipld::cids::compute;
use ipfs_mount_ipld::cid::Version;
use ipfs_mount_ipld::{codec, docjson};
use libfuzzer_sys::fuzz_target;

const CODECS: [u64; 4] = [codec::DAG_CBOR, codec::CBOR, codec::DAG_JSON, codec::JSON];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, block)) = data.split_first() else {
        return;
    };
    let c = CODECS[usize::from(pick) % CODECS.len()];
    let cid = compute(Version::V1, c, 0x12, block).expect("sha2-256 CID");
    let _ = docjson::decode(c, block);
    if let Ok(json) = docjson::render(&cid, block) {
        // Not necessarily the same again: an integer outside i64/u64 (CBOR has them down to
        // -2^64) reads back from JSON text as a float.
        docjson::decode(codec::DAG_JSON, &json)
            .unwrap_or_else(|e| panic!("rendered dag-json does not read back: {e}"));
    }
});
