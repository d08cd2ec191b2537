#![no_main]
//! IPNS records (what gateways, routers and the DHT hand us) never panic the validator.
//! The first input byte picks what the rest is:
//! - even: a whole record (protobuf), validated for a fixed name (key inlined in the name) and
//!   for a name from the rest (`Name::parse`, `Name::from_routing_key`);
//! - odd: the signed `data` (DAG-CBOR) of a record that this target signs itself with the
//!   name's key, so validation gets past the signature to the field checks, `check_v1`, the
//!   RFC 3339 validity and the value. A record that validates keeps its bytes and agrees with
//!   itself under `compare`.

use std::time::{Duration, UNIX_EPOCH};

use ipfs_mount_ipns::{compare, validate, Name, SIGNATURE_V2_PREFIX};
use libfuzzer_sys::fuzz_target;
use libp2p_identity::Keypair;

fn key() -> Keypair {
    Keypair::ed25519_from_bytes([7u8; 32]).expect("a valid Ed25519 seed")
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn bytes_field(field: u64, b: &[u8], out: &mut Vec<u8>) {
    varint((field << 3) | 2, out);
    varint(b.len() as u64, out);
    out.extend_from_slice(b);
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let key = key();
    let name = Name::from_public_key(&key.public());
    // Before the end of 2030: fixture-like EOLs are still valid then.
    let now = UNIX_EPOCH + Duration::from_secs(1_900_000_000);
    let bytes = if mode % 2 == 0 {
        if let Ok(text) = std::str::from_utf8(rest) {
            if let Ok(n) = Name::parse(text) {
                let _ = validate(&n, rest, now);
                assert_eq!(Name::from_routing_key(&n.to_routing_key()).ok(), Some(n));
            }
        }
        if let Ok(n) = Name::from_routing_key(rest) {
            let _ = validate(&n, rest, now);
        }
        rest.to_vec()
    } else {
        // IpnsEntry { signatureV2 = 8, data = 9 }, signed over "ipns-signature:" ‖ data.
        let mut signed = SIGNATURE_V2_PREFIX.to_vec();
        signed.extend_from_slice(rest);
        let sig = key.sign(&signed).expect("Ed25519 signs");
        let mut out = Vec::new();
        bytes_field(8, &sig, &mut out);
        bytes_field(9, rest, &mut out);
        out
    };
    if let Ok(record) = validate(&name, &bytes, now) {
        assert_eq!(&record.raw[..], &bytes[..]);
        assert!(record.validity > now);
        assert_eq!(compare(&record, &record), std::cmp::Ordering::Equal);
    }
});
