//! Property tests: round trips, and no panics on arbitrary or mutated input.

mod shared;

use bytes::Bytes;
use ipfs_mount_ipld::car::{self, CarDecoder};
use ipfs_mount_ipld::dagpb::{self, PbLink, PbNode};
use ipfs_mount_ipld::unixfs::{self, DataType, UnixFsData, UnixTime};
use ipfs_mount_ipld::{cid, cids, codec, hamt, mh, Cid};
use proptest::prelude::*;

fn arb_cid() -> impl Strategy<Value = Cid> {
    (
        any::<bool>(),
        prop::sample::select(vec![codec::RAW, codec::DAG_PB, codec::DAG_CBOR, 0x0129]),
        any::<[u8; 32]>(),
    )
        .prop_map(|(v0, c, digest)| {
            let mh = cid::multihash::Multihash::<64>::wrap(mh::SHA2_256, &digest).unwrap();
            if v0 {
                Cid::new_v0(mh).unwrap()
            } else {
                Cid::new_v1(c, mh)
            }
        })
}

fn arb_link() -> impl Strategy<Value = PbLink> {
    (
        arb_cid(),
        prop::option::of(prop::collection::vec(any::<u8>(), 0..20)),
        prop::option::of(any::<u64>()),
    )
        .prop_map(|(cid, name, tsize)| PbLink { cid, name, tsize })
}

fn arb_pbnode() -> impl Strategy<Value = PbNode> {
    (
        prop::collection::vec(arb_link(), 0..6),
        prop::option::of(prop::collection::vec(any::<u8>(), 0..64)),
    )
        .prop_map(|(links, data)| PbNode {
            links,
            data: data.map(Bytes::from),
        })
}

fn arb_type() -> impl Strategy<Value = DataType> {
    prop::sample::select(vec![
        DataType::Raw,
        DataType::Directory,
        DataType::File,
        DataType::Metadata,
        DataType::Symlink,
        DataType::HamtShard,
    ])
}

fn arb_unixfs() -> impl Strategy<Value = UnixFsData> {
    (
        arb_type(),
        prop::option::of(prop::collection::vec(any::<u8>(), 0..64)),
        prop::option::of(any::<u64>()),
        prop::collection::vec(any::<u64>(), 0..6),
        prop::option::of(any::<u64>()),
        prop::option::of(any::<u64>()),
        prop::option::of(any::<u32>()),
        prop::option::of((any::<i64>(), prop::option::of(0u32..1_000_000_000))),
    )
        .prop_map(
            |(data_type, data, filesize, blocksizes, hash_type, fanout, mode, mtime)| UnixFsData {
                data_type,
                data: data.map(Bytes::from),
                filesize,
                blocksizes,
                hash_type,
                fanout,
                mode,
                mtime: mtime.map(|(secs, nanos)| UnixTime { secs, nanos }),
            },
        )
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Truncate(usize),
}

fn arb_mutations() -> impl Strategy<Value = Vec<Mutation>> {
    prop::collection::vec(
        prop_oneof![
            (any::<usize>(), 1u8..).prop_map(|(i, x)| Mutation::Flip(i, x)),
            (any::<usize>(), any::<u8>()).prop_map(|(i, x)| Mutation::Insert(i, x)),
            any::<usize>().prop_map(Mutation::Delete),
            any::<usize>().prop_map(Mutation::Truncate),
        ],
        1..4,
    )
}

fn mutate(mut b: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        let n = b.len();
        match *m {
            Mutation::Flip(i, x) if n > 0 => b[i % n] ^= x,
            Mutation::Insert(i, x) => b.insert(i % (n + 1), x),
            Mutation::Delete(i) if n > 0 => {
                b.remove(i % n);
            }
            Mutation::Truncate(i) => b.truncate(i % (n + 1)),
            _ => {}
        }
    }
    b
}

const CODECS: [u64; 6] = [
    codec::DAG_PB,
    codec::RAW,
    codec::DAG_CBOR,
    codec::DAG_JSON,
    codec::CBOR,
    codec::JSON,
];

fn exercise_block(block: &[u8]) {
    let _ = dagpb::decode(block);
    let _ = unixfs::decode_data(block);
    let h = cids::compute(cid::Version::V1, codec::RAW, mh::SHA2_256, b"").unwrap();
    for c in CODECS {
        let cid = Cid::new_v1(c, *h.hash());
        if let Ok(unixfs::Node::HamtShard(n)) = unixfs::decode_node(&cid, block) {
            for d in 0..10 {
                let _ = hamt::lookup_step(&n, b"name", d);
            }
        }
    }
}

fn run_car(data: &[u8], chunks: &[usize]) -> (Vec<(Cid, Bytes)>, Option<car::CarError>, bool) {
    let mut d = CarDecoder::new();
    let mut out = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    loop {
        let step = if chunks.is_empty() {
            data.len()
        } else {
            chunks[i % chunks.len()].max(1)
        };
        i += 1;
        let end = (pos + step).min(data.len());
        d.push(&data[pos..end]);
        pos = end;
        loop {
            match d.next_block() {
                Ok(Some(b)) => out.push(b),
                Ok(None) => break,
                Err(e) => return (out, Some(e), false),
            }
        }
        if pos >= data.len() {
            break;
        }
    }
    let fin = d.finish().is_ok();
    (out, None, fin)
}

fn sample_car() -> Vec<u8> {
    let mut blocks = Vec::new();
    for i in 0..6u32 {
        let data = vec![i as u8; (i as usize) * 37];
        blocks.push((
            cids::compute(cid::Version::V1, codec::RAW, mh::SHA2_256, &data).unwrap(),
            data,
        ));
    }
    let mut out = car::encode_header_v1(&[blocks[0].0]);
    for (c, d) in &blocks {
        out.extend_from_slice(&car::encode_section(c, d));
    }
    out
}

/// A fixture file's bytes; None when the shared fixtures are absent (the test skips, or fails
/// under `IPFS_MOUNT_REQUIRE_PEERS=1`).
fn fixture(rel: &str) -> Option<Vec<u8>> {
    shared::fixture(rel)
}

fn fixture_blocks() -> Vec<(Cid, Bytes)> {
    let mut v = Vec::new();
    for rel in [
        "trustless_gateway_car/single-layer-hamt-with-multi-block-files.car",
        "path_gateway_unixfs/symlink.car",
        "path_gateway_dag/dag-cbor-traversal.car",
        "path_gateway_dag/dag-json-traversal.car",
        "trustless_gateway_car/subdir-with-mixed-block-files.car",
    ] {
        if let Some(b) = fixture(rel) {
            let (blocks, err, _) = run_car(&b, &[]);
            assert!(err.is_none());
            v.extend(blocks);
        }
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn dagpb_roundtrip(node in arb_pbnode()) {
        let enc = dagpb::encode(&node);
        prop_assert_eq!(enc.len(), dagpb::encoded_len(&node));
        prop_assert_eq!(dagpb::decode(&enc), Ok(node.clone()));
        prop_assert_eq!(dagpb::decode_shared(&Bytes::from(enc.clone())), Ok(node));
        // canonical: decode then encode is the identity on encoder output
        prop_assert_eq!(dagpb::encode(&dagpb::decode(&enc).unwrap()), enc);
    }

    #[test]
    fn unixfs_roundtrip(d in arb_unixfs()) {
        let enc = unixfs::encode_data(&d);
        prop_assert_eq!(unixfs::decode_data(&enc), Ok(d.clone()));
        prop_assert_eq!(unixfs::encode_data(&unixfs::decode_data(&enc).unwrap()), enc);
    }

    #[test]
    fn decoders_never_panic_on_arbitrary_bytes(block in prop::collection::vec(any::<u8>(), 0..512)) {
        exercise_block(&block);
        let _ = run_car(&block, &[]);
        let _ = run_car(&block, &[1]);
        let mut v2 = car::CARV2_PRAGMA.to_vec();
        v2.extend_from_slice(&block);
        let _ = run_car(&v2, &[3]);
        let mut v1 = car::encode_header_v1(&[]);
        v1.extend_from_slice(&block);
        let _ = run_car(&v1, &[]);
    }

    #[test]
    fn cid_parse_never_panics(s in ".{0,80}", t in "[bfkmzQ][a-zA-Z0-9]{0,70}") {
        let _ = cids::parse(&s);
        let _ = cids::parse(&t);
    }

    #[test]
    fn decoders_never_panic_on_mutated_valid_blocks(node in arb_pbnode(), d in arb_unixfs(), muts in arb_mutations()) {
        let mut n = node;
        n.data = Some(Bytes::from(unixfs::encode_data(&d)));
        let enc = dagpb::encode(&n);
        exercise_block(&mutate(enc, &muts));
        exercise_block(&mutate(unixfs::encode_data(&d), &muts));
    }

    #[test]
    fn car_mutations_never_panic(muts in arb_mutations(), chunks in prop::collection::vec(1usize..64, 0..4)) {
        let data = mutate(sample_car(), &muts);
        let whole = run_car(&data, &[]);
        let split = run_car(&data, &chunks);
        prop_assert_eq!(whole, split);
    }

    #[test]
    fn car_chunking_is_transparent(chunks in prop::collection::vec(1usize..300, 1..8)) {
        let data = sample_car();
        let (whole, err, fin) = run_car(&data, &[]);
        prop_assert!(err.is_none() && fin);
        prop_assert_eq!(whole.len(), 6);
        let (split, err, fin) = run_car(&data, &chunks);
        prop_assert!(err.is_none() && fin);
        prop_assert_eq!(&split, &whole);
        // truncated anywhere inside => error at finish (or earlier), never a panic
        for cut in [1, data.len() / 2, data.len() - 1] {
            let (_, err, fin) = run_car(&data[..cut], &chunks);
            prop_assert!(err.is_some() || !fin);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn fixture_car_chunking(chunks in prop::collection::vec(1usize..2000, 1..6)) {
        let Some(data) = fixture("trustless_gateway_car/single-layer-hamt-with-multi-block-files.car") else { return Ok(()) };
        let (whole, err, fin) = run_car(&data, &[]);
        prop_assert!(err.is_none() && fin);
        let (split, err, fin) = run_car(&data, &chunks);
        prop_assert!(err.is_none() && fin);
        prop_assert_eq!(split, whole);
    }

    #[test]
    fn fixture_car_v2_chunking(chunks in prop::collection::vec(1usize..2000, 1..6), pad in 0usize..100) {
        let Some(v1) = fixture("path_gateway_unixfs/dir-with-files.car") else { return Ok(()) };
        let (whole, _, _) = run_car(&v1, &[]);
        let mut v2 = car::CARV2_PRAGMA.to_vec();
        let data_offset = (11 + 40 + pad) as u64;
        v2.extend_from_slice(&[0u8; 16]);
        v2.extend_from_slice(&data_offset.to_le_bytes());
        v2.extend_from_slice(&(v1.len() as u64).to_le_bytes());
        v2.extend_from_slice(&0u64.to_le_bytes());
        v2.extend(std::iter::repeat_n(0xee, pad));
        v2.extend_from_slice(&v1);
        v2.extend_from_slice(b"trailing index bytes");
        let (split, err, fin) = run_car(&v2, &chunks);
        prop_assert!(err.is_none() && fin);
        prop_assert_eq!(split, whole);
    }

    #[test]
    fn mutated_fixture_blocks_never_panic(idx in any::<prop::sample::Index>(), muts in arb_mutations()) {
        let blocks = fixture_blocks();
        if blocks.is_empty() { return Ok(()) }
        let (cid, b) = idx.get(&blocks);
        let m = mutate(b.to_vec(), &muts);
        exercise_block(&m);
        let _ = unixfs::decode_node(cid, &m);
        let _ = cids::verify(cid, &m);
    }
}
