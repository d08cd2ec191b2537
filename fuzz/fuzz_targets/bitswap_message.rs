#![no_main]
//! Decoding a bitswap message from arbitrary bytes never panics, and whatever decodes
//! re-encodes to a message that decodes to the same thing (blocks keep their CID prefixes).

use ipfs_mount_p2p::bitswap::message::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = Message::decode(data) else {
        return;
    };
    let enc = m.encode();
    assert_eq!(enc.len(), m.encoded_len());
    let again = Message::decode(&enc).expect("re-encoded message decodes");
    assert_eq!(again, m);
});
