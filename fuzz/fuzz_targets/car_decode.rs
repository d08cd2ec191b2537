#![no_main]
//! The CAR decoder never panics, and chunking the input does not change the outcome.
//! The first byte picks the chunk size.

use ipfs_mount_ipld::car::CarDecoder;
use libfuzzer_sys::fuzz_target;

fn run(data: &[u8], chunk: usize) -> (Vec<(ipfs_mount_ipld::Cid, Vec<u8>)>, bool, bool) {
    let mut d = CarDecoder::new();
    let mut blocks = Vec::new();
    let mut failed = false;
    'outer: for c in data.chunks(chunk.max(1)) {
        d.push(c);
        loop {
            match d.next_block() {
                Ok(Some((cid, b))) => blocks.push((cid, b.to_vec())),
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    break 'outer;
                }
            }
        }
    }
    let finished = !failed && d.finish().is_ok();
    (blocks, failed, finished)
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, car)) = data.split_first() else {
        return;
    };
    let whole = run(car, car.len());
    let chunked = run(car, sel as usize + 1);
    assert_eq!(whole, chunked);
});
