#![no_main]
//! The `--serve` gateway's request parsing (content path, query, `Accept` negotiation,
//! `entity-bytes`, `Range`, `?filename=` → `Content-Disposition`) on arbitrary request parts:
//! never a panic, and what is accepted obeys its rules (see `ipfs_mount::serve::fuzz_request`).
//! Input: 8 bytes of content size, then path, query, Accept and Range separated by `\n`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let size = u64::from_le_bytes(data[..8].try_into().unwrap()) % (1 << 40);
    let text = String::from_utf8_lossy(&data[8..]);
    let mut parts = text.splitn(4, '\n');
    let path = parts.next().unwrap_or_default();
    let query = parts.next();
    let accept = parts.next();
    let range = parts.next();
    ipfs_mount::serve::fuzz_request(path, query, accept, range, size);
});
