#![no_main]
//! The control socket's request reading and parsing (bytes from a local client): never a
//! panic, and an accepted request encodes back to itself (see
//! `ipfs_mount::control::fuzz_request`).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ipfs_mount::control::fuzz_request(data);
});
