//! Creating, validating, tampering with and choosing between records; names.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipfs_mount_ipns::{
    better, compare, create, validate, IpnsError, Name, Record, MAX_RECORD_BYTES,
};
use ipld_core::ipld::Ipld;
use libp2p_identity::Keypair;
use prost::Message;

/// An independent description of the `IpnsEntry` protobuf (spec, "Record Serialization Format").
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
    /// Not in the spec: used to pad records to a given size (unknown fields are ignored).
    #[prost(bytes = "vec", optional, tag = "15")]
    padding: Option<Vec<u8>>,
}

fn ed25519(seed: u8) -> Keypair {
    Keypair::ed25519_from_bytes([seed; 32]).unwrap()
}

fn rsa(file: &str) -> Keypair {
    let mut der =
        std::fs::read(format!("{}/tests/data/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    Keypair::rsa_from_pkcs8(&mut der).unwrap()
}

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

const DAY: Duration = Duration::from_secs(86_400);
const TTL: Duration = Duration::from_secs(300);

fn name_of(key: &Keypair) -> Name {
    Name::from_public_key(&key.public())
}

fn decode(bytes: &[u8]) -> Entry {
    Entry::decode(bytes).unwrap()
}

fn signed_data(key: &Keypair, data: &[u8]) -> Vec<u8> {
    key.sign(&[&b"ipns-signature:"[..], data].concat()).unwrap()
}

/// A V2-only record over arbitrary `data` fields, correctly signed.
fn v2_record(key: &Keypair, fields: Vec<(&str, Ipld)>) -> Vec<u8> {
    let map: BTreeMap<String, Ipld> = fields
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let data = serde_ipld_dagcbor::to_vec(&Ipld::Map(map)).unwrap();
    Entry {
        signature_v2: Some(signed_data(key, &data)),
        data: Some(data),
        ..Default::default()
    }
    .encode_to_vec()
}

fn good_fields() -> Vec<(&'static str, Ipld)> {
    vec![
        ("Value", Ipld::Bytes(b"/ipfs/bafkqaaa".to_vec())),
        ("Validity", Ipld::Bytes(b"2100-01-01T00:00:00Z".to_vec())),
        ("ValidityType", Ipld::Integer(0)),
        ("Sequence", Ipld::Integer(7)),
        ("TTL", Ipld::Integer(TTL.as_nanos() as i128)),
    ]
}

fn with(
    mut fields: Vec<(&'static str, Ipld)>,
    key: &'static str,
    value: Option<Ipld>,
) -> Vec<(&'static str, Ipld)> {
    fields.retain(|(k, _)| *k != key);
    if let Some(v) = value {
        fields.push((key, v));
    }
    fields
}

#[test]
fn ed25519_round_trip() {
    let key = ed25519(1);
    let name = name_of(&key);
    assert!(name.to_string().starts_with("k51qzi5uqu5"), "{name}");
    let eol = now() + 2 * DAY + Duration::from_nanos(123_456_789);
    let raw = create(
        &key,
        "/ipfs/bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi/a/b",
        42,
        eol,
        TTL,
    )
    .unwrap();
    let r = validate(&name, &raw, now()).unwrap();
    assert_eq!(
        r.value,
        "/ipfs/bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi/a/b"
    );
    assert_eq!((r.sequence, r.validity, r.ttl), (42, eol, TTL));
    assert_eq!(r.raw, raw);
    // Like Kubo: V1 fields present, the key inlined in the name rather than embedded.
    let e = decode(&raw);
    assert!(e.value.is_some() && e.signature_v1.is_some() && e.ttl == Some(300_000_000_000));
    assert_eq!(e.validity_type, Some(0));
    assert_eq!(e.pub_key, None);
    assert!(raw.len() < 450, "{} bytes", raw.len());
}

#[test]
fn rsa_round_trip_embeds_the_key() {
    for file in ["rsa2048-a.pk8", "rsa3072-b.pk8"] {
        let key = rsa(file);
        let name = name_of(&key);
        assert!(
            name.peer_id().to_base58().starts_with("Qm"),
            "RSA peer ids are sha2-256 multihashes"
        );
        assert!(name.to_string().starts_with("k2k4r8"), "{name}");
        let raw = create(&key, "/ipns/example.org/x", 1, now() + DAY, TTL).unwrap();
        let e = decode(&raw);
        assert_eq!(
            e.pub_key.as_deref(),
            Some(key.public().encode_protobuf().as_slice())
        );
        let r = validate(&name, &raw, now()).unwrap();
        assert_eq!(r.value, "/ipns/example.org/x");
        // Also found from the base58 peer id form.
        validate(
            &Name::parse(&name.peer_id().to_base58()).unwrap(),
            &raw,
            now(),
        )
        .unwrap();

        // Without pubKey the name (a hash) gives no key.
        let mut no_key = e.clone();
        no_key.pub_key = None;
        assert_eq!(
            validate(&name, &no_key.encode_to_vec(), now()),
            Err(IpnsError::MissingPublicKey)
        );
        // Another key, even a correct one for its own records, does not belong to this name.
        let other = rsa(if file == "rsa2048-a.pk8" {
            "rsa3072-b.pk8"
        } else {
            "rsa2048-a.pk8"
        });
        let mut swapped = e.clone();
        swapped.pub_key = Some(other.public().encode_protobuf());
        assert_eq!(
            validate(&name, &swapped.encode_to_vec(), now()),
            Err(IpnsError::KeyMismatch)
        );
        let mut garbage = e.clone();
        garbage.pub_key = Some(vec![8, 0, 18, 3, 1, 2, 3]);
        assert!(matches!(
            validate(&name, &garbage.encode_to_vec(), now()),
            Err(IpnsError::BadPublicKey(_))
        ));
    }
}

#[test]
fn ed25519_record_with_a_foreign_pubkey_is_a_key_mismatch() {
    let (key, other) = (ed25519(1), ed25519(2));
    let mut e = decode(&create(&key, "/ipfs/bafkqaaa", 1, now() + DAY, TTL).unwrap());
    e.pub_key = Some(other.public().encode_protobuf());
    assert_eq!(
        validate(&name_of(&key), &e.encode_to_vec(), now()),
        Err(IpnsError::KeyMismatch)
    );
    // An embedded key that is the name's own is fine (redundant but allowed).
    e.pub_key = Some(key.public().encode_protobuf());
    validate(&name_of(&key), &e.encode_to_vec(), now()).unwrap();
}

#[test]
fn a_record_is_valid_only_for_its_own_name() {
    let raw = create(&ed25519(1), "/ipfs/bafkqaaa", 1, now() + DAY, TTL).unwrap();
    assert_eq!(
        validate(&name_of(&ed25519(2)), &raw, now()),
        Err(IpnsError::BadSignature)
    );
    // An RSA name without pubKey in the record: no key to check with.
    assert_eq!(
        validate(&name_of(&rsa("rsa2048-a.pk8")), &raw, now()),
        Err(IpnsError::MissingPublicKey)
    );
}

#[test]
fn tampering_with_each_field() {
    let key = ed25519(3);
    let name = name_of(&key);
    let raw = create(&key, "/ipfs/bafkqaaa", 5, now() + DAY, TTL).unwrap();
    let good = decode(&raw);
    let check = |what: &str, f: &dyn Fn(&mut Entry), want: Result<(), IpnsError>| {
        let mut e = good.clone();
        f(&mut e);
        let got = validate(&name, &e.encode_to_vec(), now()).map(|_| ());
        assert_eq!(got, want, "{what}");
    };
    check("untouched", &|_| {}, Ok(()));
    check(
        "V1 value",
        &|e| e.value = Some(b"/ipfs/bafkqaab".to_vec()),
        Err(IpnsError::DataMismatch { field: "Value" }),
    );
    check(
        "V1 validity",
        &|e| e.validity = Some(b"2200-01-01T00:00:00Z".to_vec()),
        Err(IpnsError::DataMismatch { field: "Validity" }),
    );
    check(
        "V1 validity type",
        &|e| e.validity_type = Some(1),
        Err(IpnsError::DataMismatch {
            field: "ValidityType",
        }),
    );
    check(
        "V1 sequence",
        &|e| e.sequence = Some(6),
        Err(IpnsError::DataMismatch { field: "Sequence" }),
    );
    check(
        "V1 TTL",
        &|e| e.ttl = Some(1),
        Err(IpnsError::DataMismatch { field: "TTL" }),
    );
    // With value/signatureV1 present, absent V1 copies count as their defaults (as in boxo).
    check(
        "V1 TTL absent",
        &|e| e.ttl = None,
        Err(IpnsError::DataMismatch { field: "TTL" }),
    );
    check(
        "V1 sequence absent",
        &|e| e.sequence = None,
        Err(IpnsError::DataMismatch { field: "Sequence" }),
    );
    // Without value and signatureV1, a stray V1 copy must still match.
    check(
        "only a wrong V1 TTL",
        &|e| {
            *e = Entry {
                ttl: Some(1),
                signature_v2: e.signature_v2.clone(),
                data: e.data.clone(),
                ..Default::default()
            }
        },
        Err(IpnsError::DataMismatch { field: "TTL" }),
    );
    check(
        "V2 only",
        &|e| {
            *e = Entry {
                signature_v2: e.signature_v2.clone(),
                data: e.data.clone(),
                ..Default::default()
            }
        },
        Ok(()),
    );
    // signatureV1 is never verified: garbage or missing changes nothing.
    check(
        "signatureV1 garbage",
        &|e| e.signature_v1 = Some(vec![0; 64]),
        Ok(()),
    );
    check("signatureV1 absent", &|e| e.signature_v1 = None, Ok(()));
    check(
        "signatureV2 flipped",
        &|e| e.signature_v2.as_mut().unwrap()[10] ^= 1,
        Err(IpnsError::BadSignature),
    );
    check(
        "signatureV2 short",
        &|e| e.signature_v2 = Some(b"invalid stuff".to_vec()),
        Err(IpnsError::BadSignature),
    );
    check(
        "signatureV2 empty",
        &|e| e.signature_v2 = Some(vec![]),
        Err(IpnsError::MissingSignatureV2),
    );
    check(
        "signatureV2 absent",
        &|e| e.signature_v2 = None,
        Err(IpnsError::MissingSignatureV2),
    );
    check(
        "data absent",
        &|e| e.data = None,
        Err(IpnsError::MissingData),
    );
    check(
        "data empty",
        &|e| e.data = Some(vec![]),
        Err(IpnsError::MissingData),
    );
    check(
        "data byte changed",
        &|e| {
            let d = e.data.as_mut().unwrap();
            let at = d.windows(5).position(|w| w == b"bafkq").unwrap();
            d[at + 4] = b'r';
        },
        Err(IpnsError::BadSignature),
    );
    let mut truncated = good.clone();
    truncated.data.as_mut().unwrap().pop();
    assert!(matches!(
        validate(&name, &truncated.encode_to_vec(), now()),
        Err(IpnsError::Cbor(_))
    ));
    check(
        "V1 signed by V1 rules only (the v1 fixture's shape)",
        &|e| {
            e.signature_v2 = None;
            e.data = None;
        },
        Err(IpnsError::MissingSignatureV2),
    );
}

#[test]
fn signed_data_must_hold_the_spec_fields_with_their_types() {
    let key = ed25519(4);
    let name = name_of(&key);
    let v = |fields| validate(&name, &v2_record(&key, fields), now());
    v(good_fields()).unwrap();
    // Extensible data: unknown keys are ignored.
    let mut ext = good_fields();
    ext.push((
        "_custom",
        Ipld::Map(BTreeMap::from([(
            "x".to_string(),
            Ipld::List(vec![Ipld::Null, Ipld::Float(1.5)]),
        )])),
    ));
    ext.push(("Zzz", Ipld::String("hi".into())));
    assert_eq!(v(ext).unwrap().value, "/ipfs/bafkqaaa");
    for k in ["Value", "Validity", "ValidityType", "Sequence", "TTL"] {
        assert_eq!(
            v(with(good_fields(), k, None)),
            Err(IpnsError::MissingField(k)),
            "{k}"
        );
    }
    let invalid = |r: Result<Record, IpnsError>, f: &str| match r {
        Err(IpnsError::InvalidField { field, .. }) if field == f => {}
        other => panic!("{f}: {other:?}"),
    };
    invalid(
        v(with(
            good_fields(),
            "Value",
            Some(Ipld::String("/ipfs/bafkqaaa".into())),
        )),
        "Value",
    );
    invalid(
        v(with(
            good_fields(),
            "Validity",
            Some(Ipld::String("2100-01-01T00:00:00Z".into())),
        )),
        "Validity",
    );
    invalid(
        v(with(
            good_fields(),
            "ValidityType",
            Some(Ipld::Bytes(vec![0])),
        )),
        "ValidityType",
    );
    invalid(
        v(with(good_fields(), "Sequence", Some(Ipld::Integer(-1)))),
        "Sequence",
    );
    invalid(v(with(good_fields(), "TTL", Some(Ipld::Float(1.0)))), "TTL");
    assert_eq!(
        v(with(good_fields(), "ValidityType", Some(Ipld::Integer(1)))),
        Err(IpnsError::UnsupportedValidityType(1))
    );
    assert_eq!(
        v(with(good_fields(), "ValidityType", Some(Ipld::Integer(-1)))),
        Err(IpnsError::UnsupportedValidityType(-1))
    );
    for bad in [
        "tomorrow",
        "2100-01-01",
        "2100-02-30T00:00:00Z",
        "2100-01-01T00:00:00.000000001z",
    ] {
        assert_eq!(
            v(with(
                good_fields(),
                "Validity",
                Some(Ipld::Bytes(bad.into()))
            )),
            Err(IpnsError::InvalidValidity(bad.into()))
        );
    }
    // Helia writes all nine digits, Kubo trims zeros; offsets are allowed.
    for ok in [
        "2100-01-01T00:00:00.000000000Z",
        "2100-01-01T00:00:00.5Z",
        "2100-01-01T02:00:00+02:00",
    ] {
        v(with(
            good_fields(),
            "Validity",
            Some(Ipld::Bytes(ok.into())),
        ))
        .unwrap();
    }
    assert_eq!(
        v(with(
            good_fields(),
            "Value",
            Some(Ipld::Bytes(vec![b'/', 0xff]))
        )),
        Err(IpnsError::InvalidValue)
    );
    // Full uint64 range is read (TTL in nanoseconds).
    let r = v(with(
        with(
            good_fields(),
            "Sequence",
            Some(Ipld::Integer(u64::MAX.into())),
        ),
        "TTL",
        Some(Ipld::Integer(u64::MAX.into())),
    ))
    .unwrap();
    assert_eq!(
        (r.sequence, r.ttl),
        (u64::MAX, Duration::from_nanos(u64::MAX))
    );
}

#[test]
fn data_that_is_not_one_dag_cbor_map() {
    let key = ed25519(5);
    let name = name_of(&key);
    let raw = |data: Vec<u8>| {
        Entry {
            signature_v2: Some(signed_data(&key, &data)),
            data: Some(data),
            ..Default::default()
        }
        .encode_to_vec()
    };
    let good = v2_record(&key, good_fields());
    let good_data = decode(&good).data.unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a list", vec![0x80]),
        ("an integer", vec![0x00]),
        ("trailing bytes", [good_data.clone(), vec![0x00]].concat()),
        ("duplicate key", {
            // {"a": 1, "a": 2}
            vec![0xa2, 0x61, b'a', 0x01, 0x61, b'a', 0x02]
        }),
        ("integer key", vec![0xa1, 0x01, 0x01]),
        ("indefinite-length map", vec![0xbf, 0x61, b'a', 0x01, 0xff]),
        ("unknown tag", vec![0xa1, 0x61, b'a', 0xc1, 0x01]),
        (
            "nesting deeper than the decoder allows",
            [vec![0xa1, 0x61, b'a'], vec![0x81; 5000], vec![0x00]].concat(),
        ),
    ];
    for (what, data) in cases {
        match validate(&name, &raw(data), now()) {
            Err(IpnsError::Cbor(msg)) => eprintln!("{what}: {msg}"),
            other => panic!("{what}: {other:?}"),
        }
    }
}

/// A correctly signed map whose keys are not in DAG-CBOR order is refused: the DAG-CBOR decoder is
/// strict (as the DAG-CBOR spec asks). go-ipld-prime and @ipld/dag-cbor would accept it, but every
/// known producer (go-ipns since V2 signatures, boxo, js-ipns/Helia) sorts the keys.
#[test]
fn signed_map_with_keys_out_of_order() {
    let key = ed25519(6);
    let good = decode(&v2_record(&key, good_fields())).data.unwrap();
    // Canonical: TTL, Value, Sequence, Validity, ValidityType. Move TTL (first entry) to the end.
    let ttl_entry_len = 1 + 3 + 9; // "TTL" key + uint64 value
    let mut data = vec![good[0]];
    data.extend_from_slice(&good[1 + ttl_entry_len..]);
    data.extend_from_slice(&good[1..1 + ttl_entry_len]);
    assert_eq!(data.len(), good.len());
    let raw = Entry {
        signature_v2: Some(signed_data(&key, &data)),
        data: Some(data),
        ..Default::default()
    }
    .encode_to_vec();
    let got = validate(&name_of(&key), &raw, now());
    assert_eq!(got, Err(IpnsError::Cbor("UnorderedKey".into())));
}

#[test]
fn expiry_is_strict() {
    let key = ed25519(7);
    let eol = now() + Duration::from_nanos(1);
    let raw = create(&key, "/ipfs/bafkqaaa", 1, eol, TTL).unwrap();
    let name = name_of(&key);
    validate(&name, &raw, now()).unwrap();
    assert!(matches!(
        validate(&name, &raw, eol),
        Err(IpnsError::Expired { .. })
    ));
    let e = validate(&name, &raw, eol + DAY).unwrap_err();
    assert_eq!(
        e,
        IpnsError::Expired {
            eol: "2023-11-14T22:13:20.000000001Z".into()
        }
    );
    assert_eq!(
        e.to_string(),
        "record expired at 2023-11-14T22:13:20.000000001Z"
    );
}

#[test]
fn size_limit_is_checked_before_parsing() {
    let key = ed25519(8);
    let name = name_of(&key);
    let raw = create(&key, "/ipfs/bafkqaaa", 1, now() + DAY, TTL).unwrap();
    let padded = |total: usize| {
        let mut e = decode(&raw);
        let mut pad = total - raw.len() - 4; // tag + 2-3 length bytes
        loop {
            e.padding = Some(vec![0; pad]);
            let len = e.encoded_len();
            if len == total {
                return e.encode_to_vec();
            }
            pad = pad + total - len;
        }
    };
    let at_limit = padded(MAX_RECORD_BYTES);
    assert_eq!(at_limit.len(), MAX_RECORD_BYTES);
    validate(&name, &at_limit, now()).unwrap();
    let over = padded(MAX_RECORD_BYTES + 1);
    assert_eq!(
        validate(&name, &over, now()),
        Err(IpnsError::TooLarge(MAX_RECORD_BYTES + 1))
    );
    // Garbage over the limit is refused as too large, not as a bad protobuf.
    assert_eq!(
        validate(&name, &[0xff; 20_000], now()),
        Err(IpnsError::TooLarge(20_000))
    );
    assert!(matches!(
        validate(&name, &[0xff; 20], now()),
        Err(IpnsError::Protobuf(_))
    ));
    // create refuses to produce one.
    let big = format!("/ipfs/bafkqaaa/{}", "a".repeat(MAX_RECORD_BYTES));
    assert!(matches!(
        create(&key, &big, 1, now() + DAY, TTL),
        Err(IpnsError::TooLarge(_))
    ));
}

#[test]
fn create_refuses_what_others_could_not_read() {
    let key = ed25519(9);
    let eol = now() + DAY;
    assert!(matches!(
        create(&key, "", 1, eol, TTL),
        Err(IpnsError::Create(_))
    ));
    assert!(matches!(
        create(&key, "/ipfs/bafkqaaa", 1 << 63, eol, TTL),
        Err(IpnsError::Create(_))
    ));
    create(&key, "/ipfs/bafkqaaa", (1 << 63) - 1, eol, TTL).unwrap();
    assert!(matches!(
        create(
            &key,
            "/ipfs/bafkqaaa",
            1,
            eol,
            Duration::from_nanos(1 << 63)
        ),
        Err(IpnsError::Create(_))
    ));
    let year_10000 = UNIX_EPOCH + Duration::from_secs(253_402_300_800);
    assert!(matches!(
        create(&key, "/ipfs/bafkqaaa", 1, year_10000, TTL),
        Err(IpnsError::Create(_))
    ));
    let r = create(
        &key,
        "/ipfs/bafkqaaa",
        1,
        year_10000 - Duration::from_nanos(1),
        TTL,
    )
    .unwrap();
    assert_eq!(
        decode(&r).validity.unwrap(),
        b"9999-12-31T23:59:59.999999999Z"
    );
}

#[test]
fn better_prefers_sequence_then_eol() {
    let key = ed25519(10);
    let name = name_of(&key);
    let rec = |seq, eol_days: u32| {
        validate(
            &name,
            &create(&key, "/ipfs/bafkqaaa", seq, now() + DAY * eol_days, TTL).unwrap(),
            now(),
        )
        .unwrap()
    };
    let (a, b, c) = (rec(1, 10), rec(2, 1), rec(2, 2));
    assert!(
        better(&b, &a) && !better(&a, &b),
        "higher sequence wins even with an earlier EOL"
    );
    assert!(
        better(&c, &b) && !better(&b, &c),
        "same sequence: later EOL wins"
    );
    assert!(!better(&c, &c.clone()), "not better than itself");
    // Equal sequence and EOL (e.g. different values): a deterministic, antisymmetric choice.
    let d = validate(
        &name,
        &create(&key, "/ipfs/bafkqaab", 2, now() + DAY * 2, TTL).unwrap(),
        now(),
    )
    .unwrap();
    assert_ne!(compare(&c, &d), std::cmp::Ordering::Equal);
    assert_eq!(better(&c, &d), !better(&d, &c));
    let best = [a.clone(), c.clone(), b.clone(), d.clone()]
        .into_iter()
        .reduce(|x, y| if better(&y, &x) { y } else { x })
        .unwrap();
    let best2 = [d, b, c, a]
        .into_iter()
        .reduce(|x, y| if better(&y, &x) { y } else { x })
        .unwrap();
    assert_eq!(best, best2, "the choice does not depend on arrival order");
}

#[test]
fn names_in_every_form() {
    let ed = name_of(&ed25519(11));
    let k51 = ed.to_string();
    assert!(k51.starts_with("k51qzi5uqu5"));
    let peer = ed.peer_id().to_base58();
    assert!(peer.starts_with("12D3Koo"));
    let cid = ed.to_cid();
    assert_eq!(cid.codec(), 0x72);
    let b32 = cid.to_string_of_base(multibase::Base::Base32Lower).unwrap();
    let b58 = cid.to_string_of_base(multibase::Base::Base58Btc).unwrap();
    let b16 = cid.to_string_of_base(multibase::Base::Base16Lower).unwrap();
    for form in [
        k51.clone(),
        k51.to_uppercase(),
        b32.clone(),
        b32.to_uppercase(),
        b58,
        b16,
        peer.clone(),
        format!("/ipns/{k51}"),
        format!("/ipns/{peer}"),
    ] {
        let n: Name = form.parse().unwrap_or_else(|e| panic!("{form}: {e}"));
        assert_eq!(n, ed, "{form}");
        assert_eq!(n.to_string(), k51, "{form}");
    }
    let rsa_name = name_of(&rsa("rsa2048-a.pk8"));
    assert_eq!(
        Name::parse(&rsa_name.peer_id().to_base58()).unwrap(),
        rsa_name
    );
    assert_eq!(Name::parse(&rsa_name.to_string()).unwrap(), rsa_name);
    assert!(rsa_name.inline_public_key().is_none());
    assert_eq!(
        ed.inline_public_key().unwrap().unwrap(),
        ed25519(11).public()
    );

    // Known pair from gateway-conformance's dnslink_ipns/dnslink.yml (the same key in both forms).
    let known = Name::parse("12D3KooWLQzUv2FHWGVPXTXSZpdHs7oHbXub2G5WC8Tx4NQhyd2d").unwrap();
    assert_eq!(
        known.to_string(),
        "k51qzi5uqu5dk3v4rmjber23h16xnr23bsggmqqil9z2gduiis5se8dht36dam"
    );

    // Routing key: "/ipns/" + binary peer id.
    let rk = ed.to_routing_key();
    assert_eq!(&rk[..6], b"/ipns/");
    assert_eq!(&rk[6..], ed.peer_id().to_bytes().as_slice());
    assert_eq!(Name::from_routing_key(&rk).unwrap(), ed);
    assert!(Name::from_routing_key(&rk[1..]).is_err());
    assert!(Name::from_routing_key(b"/ipns/").is_err());

    let raw_cid = cid::Cid::new_v1(0x55, *cid.hash()).to_string();
    let dag_pb = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi";
    let long_identity =
        cid::Cid::new_v1(0x72, multihash::Multihash::<64>::wrap(0, &[1; 43]).unwrap()).to_string();
    let blake3 = cid::Cid::new_v1(
        0x72,
        multihash::Multihash::<64>::wrap(0x1e, &[1; 32]).unwrap(),
    )
    .to_string();
    for bad in [
        String::new(),
        "/ipns/".into(),
        "example.com".into(),
        "k51".into(),
        k51[..k51.len() - 1].to_string(),
        format!("{k51}0"),
        format!("{peer}x"),
        peer[..peer.len() - 2].to_string(),
        "QmInvalid0OIl".into(),
        raw_cid,
        dag_pb.into(),
        "QmWvY6FaqFMS89YAQ9NAPjVP4WZKA1qbHbicc9HeSKQTgtXX".into(),
        long_identity,
        blake3,
        format!(" {k51}"),
        "k".repeat(300),
    ] {
        assert!(
            matches!(Name::parse(&bad), Err(IpnsError::BadName(_))),
            "{bad:?} should be a bad name"
        );
    }
}
