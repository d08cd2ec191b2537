//! Property tests: validation never panics on any input, no single-byte change to a record makes
//! it say something else, create/validate round trips, timestamps agree with the `time` crate.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipfs_mount_ipns::{create, validate, IpnsError, Name, Record, MAX_RECORD_BYTES};
use ipld_core::ipld::Ipld;
use libp2p_identity::Keypair;
use proptest::prelude::*;
use prost::Message;

#[derive(Clone, PartialEq, Message)]
struct Entry {
    #[prost(bytes = "vec", optional, tag = "1")]
    value: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "2")]
    signature_v1: Option<Vec<u8>>,
    #[prost(int32, optional, tag = "3")]
    validity_type: Option<i32>,
    #[prost(bytes = "vec", optional, tag = "4")]
    validity: Option<Vec<u8>>,
    #[prost(uint64, optional, tag = "5")]
    sequence: Option<u64>,
    #[prost(uint64, optional, tag = "6")]
    ttl: Option<u64>,
    #[prost(bytes = "vec", optional, tag = "7")]
    pub_key: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "8")]
    signature_v2: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "9")]
    data: Option<Vec<u8>>,
}

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn key(seed: u8) -> Keypair {
    Keypair::ed25519_from_bytes([seed; 32]).unwrap()
}

fn rsa_key() -> Keypair {
    let mut der = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/rsa2048-a.pk8"
    ))
    .unwrap();
    Keypair::rsa_from_pkcs8(&mut der).unwrap()
}

fn sign_data(key: &Keypair, data: &[u8]) -> Vec<u8> {
    key.sign(&[&b"ipns-signature:"[..], data].concat()).unwrap()
}

/// Any IPLD value, a few levels deep.
fn ipld() -> impl Strategy<Value = Ipld> {
    let leaf = prop_oneof![
        Just(Ipld::Null),
        any::<bool>().prop_map(Ipld::Bool),
        any::<i64>().prop_map(|i| Ipld::Integer(i.into())),
        any::<u64>().prop_map(|i| Ipld::Integer(i.into())),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Ipld::Float),
        ".{0,12}".prop_map(Ipld::String),
        proptest::collection::vec(any::<u8>(), 0..24).prop_map(Ipld::Bytes),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Ipld::List),
            proptest::collection::btree_map(".{0,6}", inner, 0..4).prop_map(Ipld::Map),
        ]
    })
}

/// A spec field: usually well-formed, sometimes of a wrong type or absent.
fn spec_field(good: BoxedStrategy<Ipld>) -> impl Strategy<Value = Option<Ipld>> {
    prop_oneof![40 => good.prop_map(Some), 1 => ipld().prop_map(Some), 1 => Just(None)]
}

fn validity_text() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => Just(b"2100-01-01T00:00:00Z".to_vec()),
        8 => Just(b"2100-01-01T00:00:00.123456789+01:00".to_vec()),
        1 => Just(b"2000-01-01T00:00:00.123456789Z".to_vec()),
        2 => "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,12})?(Z|[+-][0-9]{2}:[0-9]{2})"
            .prop_map(String::into_bytes),
        1 => proptest::collection::vec(any::<u8>(), 0..40),
    ]
}

/// A signed data map built from (mostly) plausible fields plus extras.
fn data_map() -> impl Strategy<Value = BTreeMap<String, Ipld>> {
    (
        spec_field(
            prop_oneof![
                8 => "/ipfs/[a-z0-9]{1,20}".prop_map(|s| Ipld::Bytes(s.into_bytes())),
                1 => proptest::collection::vec(any::<u8>(), 0..20).prop_map(Ipld::Bytes),
            ]
            .boxed(),
        ),
        spec_field(validity_text().prop_map(Ipld::Bytes).boxed()),
        spec_field(
            prop_oneof![20 => Just(0i128), 1 => any::<i64>().prop_map(i128::from)]
                .prop_map(Ipld::Integer)
                .boxed(),
        ),
        spec_field(any::<u64>().prop_map(|i| Ipld::Integer(i.into())).boxed()),
        spec_field(any::<u64>().prop_map(|i| Ipld::Integer(i.into())).boxed()),
        proptest::collection::btree_map("_?[A-Za-z]{1,8}", ipld(), 0..3),
    )
        .prop_map(|(value, validity, vt, seq, ttl, extra)| {
            let mut m = extra;
            for (k, v) in [
                ("Value", value),
                ("Validity", validity),
                ("ValidityType", vt),
                ("Sequence", seq),
                ("TTL", ttl),
            ] {
                match v {
                    Some(v) => m.insert(k.to_string(), v),
                    None => m.remove(k),
                };
            }
            m
        })
}

fn check_record_matches_data(r: &Record, m: &BTreeMap<String, Ipld>) {
    assert_eq!(
        m.get("Value"),
        Some(&Ipld::Bytes(r.value.as_bytes().to_vec()))
    );
    assert_eq!(m.get("Sequence"), Some(&Ipld::Integer(r.sequence.into())));
    assert_eq!(m.get("TTL"), Some(&Ipld::Integer(r.ttl.as_nanos() as i128)));
    assert_eq!(m.get("ValidityType"), Some(&Ipld::Integer(0)));
    assert!(r.validity > now());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..(MAX_RECORD_BYTES + 64)), seed in 0u8..3) {
        let _ = validate(&Name::from_public_key(&key(seed).public()), &bytes, now());
    }

    /// Arbitrary `data` bytes, correctly signed: exercises the DAG-CBOR decoder and field checks.
    #[test]
    fn signed_arbitrary_data_never_panics(data in proptest::collection::vec(any::<u8>(), 1..600)) {
        let k = key(1);
        let raw = Entry { signature_v2: Some(sign_data(&k, &data)), data: Some(data), ..Default::default() }.encode_to_vec();
        let _ = validate(&Name::from_public_key(&k.public()), &raw, now());
    }

    /// Random, correctly signed maps with random V1 copies: never panics, and whenever the record
    /// is accepted it says exactly what the signed map says.
    #[test]
    fn signed_structured_records(
        m in data_map(),
        v1_value in proptest::option::weighted(0.2, proptest::collection::vec(any::<u8>(), 0..8)),
        v1_sig in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
        v1_seq in proptest::option::weighted(0.2, 0u64..3),
        copy_v1 in any::<bool>(),
    ) {
        let k = key(2);
        let data = serde_ipld_dagcbor::to_vec(&Ipld::Map(m.clone())).unwrap();
        let bytes_of = |key: &str| match m.get(key) { Some(Ipld::Bytes(b)) => Some(b.clone()), _ => None };
        let int_of = |key: &str| match m.get(key) { Some(Ipld::Integer(i)) => u64::try_from(*i).ok(), _ => None };
        let entry = if copy_v1 {
            Entry {
                value: bytes_of("Value"),
                signature_v1: v1_sig,
                validity_type: Some(0),
                validity: bytes_of("Validity"),
                sequence: int_of("Sequence"),
                ttl: int_of("TTL"),
                ..Default::default()
            }
        } else {
            Entry { value: v1_value, signature_v1: v1_sig, sequence: v1_seq, ..Default::default() }
        };
        let raw = Entry { signature_v2: Some(sign_data(&k, &data)), data: Some(data), ..entry.clone() }.encode_to_vec();
        match validate(&Name::from_public_key(&k.public()), &raw, now()) {
            Ok(r) => {
                check_record_matches_data(&r, &m);
                // Accepted V1 copies equal the signed values.
                if let Some(v) = &entry.value { prop_assert_eq!(v.as_slice(), r.value.as_bytes()); }
                if let Some(s) = entry.sequence { prop_assert_eq!(s, r.sequence); }
            }
            Err(e) => prop_assert!(!matches!(e, IpnsError::BadSignature | IpnsError::TooLarge(_) | IpnsError::Protobuf(_)), "{e:?}"),
        }
    }

    /// No single-byte change to a valid record (Ed25519 or RSA) makes it valid with other content.
    #[test]
    fn one_byte_changes_never_change_what_a_record_says(rsa in any::<bool>(), at in any::<prop::sample::Index>(), xor in 1u8..=255) {
        let k = if rsa { rsa_key() } else { key(3) };
        let name = Name::from_public_key(&k.public());
        let raw = create(&k, "/ipfs/bafkqaaa/x", 9, now() + Duration::from_secs(3600), Duration::from_secs(60)).unwrap();
        let orig = validate(&name, &raw, now()).unwrap();
        let mut bad = raw.to_vec();
        let i = at.index(bad.len());
        bad[i] ^= xor;
        if let Ok(r) = validate(&name, &bad, now()) {
            prop_assert_eq!((&r.value, r.sequence, r.validity, r.ttl), (&orig.value, orig.sequence, orig.validity, orig.ttl));
        }
    }

    #[test]
    fn create_validate_round_trip(
        seed in any::<u8>(),
        value in "/ip[fn]s/[a-zA-Z0-9]{1,60}(/[^\\x00]{0,20})?",
        sequence in 0..=(i64::MAX as u64),
        eol_secs in 0u64..(253_402_300_799 - 1_700_000_000),
        eol_sub in 1u32..1_000_000_000,
        ttl_ns in 0..=(i64::MAX as u64),
    ) {
        let k = key(seed);
        let name = Name::from_public_key(&k.public());
        let eol = now() + Duration::new(eol_secs, eol_sub);
        let raw = create(&k, &value, sequence, eol, Duration::from_nanos(ttl_ns)).unwrap();
        let r = validate(&name, &raw, now()).unwrap();
        prop_assert_eq!(&r.value, &value);
        prop_assert_eq!((r.sequence, r.validity, r.ttl), (sequence, eol, Duration::from_nanos(ttl_ns)));
        prop_assert_eq!(r.raw, raw.clone());

        // The Validity text we write is RFC 3339 for the `time` crate too, and the same instant.
        let text = String::from_utf8(Entry::decode(raw.as_ref()).unwrap().validity.unwrap()).unwrap();
        let t = time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339).unwrap();
        prop_assert_eq!(t.unix_timestamp_nanos(), eol.duration_since(UNIX_EPOCH).unwrap().as_nanos() as i128);
        prop_assert!(!text.contains(".") || !text.trim_end_matches('Z').ends_with('0'), "{}", text);

        // Display/parse of names round trips.
        prop_assert_eq!(Name::parse(&name.to_string()).unwrap(), name);
        prop_assert_eq!(Name::parse(&name.peer_id().to_base58()).unwrap(), name);
    }

    /// Any instant (years 0000-9999) written by the `time` crate, with any offset, is read back
    /// as the same instant.
    #[test]
    fn validity_written_by_time_is_read_back(
        secs in -62_167_219_200i64..253_402_300_799,
        nanos in 0u32..1_000_000_000,
        offset_min in -(23 * 60 + 59)..=(23 * 60 + 59i32),
    ) {
        let k = key(4);
        let t = time::OffsetDateTime::from_unix_timestamp(secs).unwrap() + time::Duration::nanoseconds(nanos.into());
        let off = time::UtcOffset::from_whole_seconds(offset_min * 60).unwrap();
        let Ok(text) = t.to_offset(off).format(&time::format_description::well_known::Rfc3339) else {
            return Ok(()); // the local date is outside 0000-9999
        };
        let mut m: BTreeMap<String, Ipld> = BTreeMap::new();
        m.insert("Value".into(), Ipld::Bytes(b"/ipfs/bafkqaaa".to_vec()));
        m.insert("Validity".into(), Ipld::Bytes(text.clone().into_bytes()));
        m.insert("ValidityType".into(), Ipld::Integer(0));
        m.insert("Sequence".into(), Ipld::Integer(0));
        m.insert("TTL".into(), Ipld::Integer(0));
        let data = serde_ipld_dagcbor::to_vec(&Ipld::Map(m)).unwrap();
        let raw = Entry { signature_v2: Some(sign_data(&k, &data)), data: Some(data), ..Default::default() }.encode_to_vec();
        // Validate as of just before the EOL: accepted, and the EOL is exactly the instant.
        let eol = if secs >= 0 {
            UNIX_EPOCH + Duration::new(secs as u64, nanos)
        } else {
            UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + Duration::from_nanos(nanos.into())
        };
        let r = validate(&Name::from_public_key(&k.public()), &raw, eol - Duration::from_nanos(1)).unwrap();
        prop_assert_eq!(r.validity, eol, "{}", text);
        let expired = matches!(validate(&Name::from_public_key(&k.public()), &raw, eol), Err(IpnsError::Expired { .. }));
        prop_assert!(expired, "not expired at its EOL: {}", text);
    }

    #[test]
    fn name_parse_never_panics(s in "\\PC{0,80}") {
        let _ = Name::parse(&s);
    }

    #[test]
    fn name_parse_of_multibase_like_strings(s in "[kbBzfFQ1][a-zA-Z0-9]{0,70}") {
        if let Ok(n) = Name::parse(&s) {
            prop_assert_eq!(Name::parse(&n.to_string()).unwrap(), n);
        }
    }
}

/// Deep nesting in a signed `data` is refused by the decoder's depth limit, even on a small stack.
#[test]
fn deep_nesting_on_a_small_stack() {
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(|| {
            let k = key(5);
            let data = [vec![0xa1, 0x61, b'a'], vec![0x81; 9000], vec![0x00]].concat();
            let raw = Entry {
                signature_v2: Some(sign_data(&k, &data)),
                data: Some(data),
                ..Default::default()
            }
            .encode_to_vec();
            assert!(raw.len() <= MAX_RECORD_BYTES);
            assert!(matches!(
                validate(&Name::from_public_key(&k.public()), &raw, now()),
                Err(IpnsError::Cbor(_))
            ));
            let maps = [[0xa1, 0x61, b'a'].repeat(3000), vec![0x00]].concat();
            let raw = Entry {
                signature_v2: Some(sign_data(&k, &maps)),
                data: Some(maps),
                ..Default::default()
            }
            .encode_to_vec();
            assert!(matches!(
                validate(&Name::from_public_key(&k.public()), &raw, now()),
                Err(IpnsError::Cbor(_))
            ));
        })
        .unwrap()
        .join()
        .unwrap();
}
