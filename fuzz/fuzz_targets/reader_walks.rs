#![no_main]
//! The UnixFS planners (file range, listing, path walk, DAG walk) over an arbitrary block map
//! never panic, never ask for a block twice, end, and give the same results whatever order
//! blocks arrive in. The input is interpreted by `reader::fuzzing::blocks_from_bytes`: links
//! only go to blocks made before, so any DAG shape and any sharing can come out, with garbage,
//! truncated and missing blocks. A walk that explodes on shared children shows as a timeout.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ipfs_mount_ipld::reader::fuzzing::fuzz_one(data);
});
