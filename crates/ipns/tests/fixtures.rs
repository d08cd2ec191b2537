//! Every `*.ipns-record` in the gateway-conformance fixtures (`../shared/fixtures/gateway-conformance`,
//! read in place, never copied) is accepted or rejected as its file name says:
//! `<name>_<variant>.ipns-record` in `ipns_records/` (the spec's test vectors), `<name>.ipns-record`
//! elsewhere (records the gateway tests resolve, so valid).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipfs_mount_ipns::{validate, IpnsError, Name, Record};

/// `$IPFS_MOUNT_SHARED` (else `../shared` beside the repository)`/fixtures/gateway-conformance`
/// when it is there; otherwise the test skips with a printed reason, or fails under
/// `IPFS_MOUNT_REQUIRE_PEERS=1` (CI), as the root crate's `tests/common/env.rs` decides.
fn fixtures() -> Option<PathBuf> {
    let shared = std::env::var_os("IPFS_MOUNT_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    let dir = shared.join("fixtures").join("gateway-conformance");
    if dir.join("INDEX.md").exists() {
        return Some(dir);
    }
    let why = format!("{} is missing (set IPFS_MOUNT_SHARED)", dir.display());
    if matches!(
        std::env::var("IPFS_MOUNT_REQUIRE_PEERS").as_deref(),
        Ok("1") | Ok("true") | Ok("yes")
    ) {
        panic!("{why} (IPFS_MOUNT_REQUIRE_PEERS=1, so this is a failure, not a skip)");
    }
    eprintln!("SKIPPED: {why}");
    None
}

fn records(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "ipns-record") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Validates now; if the record has expired since it was made, again just before its EOL.
fn validate_before_eol(name: &Name, bytes: &[u8]) -> Result<Record, IpnsError> {
    match validate(name, bytes, SystemTime::now()) {
        Err(IpnsError::Expired { eol }) => {
            let t =
                time::OffsetDateTime::parse(&eol, &time::format_description::well_known::Rfc3339)
                    .unwrap();
            let eol = UNIX_EPOCH + Duration::from_nanos(t.unix_timestamp_nanos() as u64);
            eprintln!("note: record expired at {t}; validating as of 1 s before");
            validate(name, bytes, eol - Duration::from_secs(1))
        }
        other => other,
    }
}

#[derive(Debug, PartialEq)]
enum Expect {
    Valid,
    Invalid(IpnsError),
}

fn expectation(variant: Option<&str>) -> Expect {
    match variant {
        None | Some("v2" | "v1-v2" | "v1-v2-broken-signature-v1") => Expect::Valid,
        Some("v1") => Expect::Invalid(IpnsError::MissingSignatureV2),
        Some("v1-v2-broken-v1-value") => {
            Expect::Invalid(IpnsError::DataMismatch { field: "Value" })
        }
        Some("v1-v2-broken-signature-v2") => Expect::Invalid(IpnsError::BadSignature),
        Some(other) => panic!("unknown fixture variant {other:?}"),
    }
}

#[test]
fn every_fixture_record_is_judged_as_its_name_says() {
    let Some(dir) = fixtures() else { return };
    let files = records(&dir);
    assert!(
        files.len() >= 12,
        "expected at least the 12 known records, found {}",
        files.len()
    );
    let (mut accepted, mut rejected) = (0, 0);
    for file in &files {
        let stem = file.file_stem().unwrap().to_str().unwrap();
        let (name, variant) = match stem.split_once('_') {
            Some((n, v)) => (n, Some(v)),
            None => (stem, None),
        };
        let name = Name::parse(name).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let bytes = std::fs::read(file).unwrap();
        let got = validate_before_eol(&name, &bytes);
        let rel = file.strip_prefix(&dir).unwrap().display();
        match (expectation(variant), got) {
            (Expect::Valid, Ok(r)) => {
                accepted += 1;
                eprintln!(
                    "accepted {rel}: {} seq {} ttl {:?}",
                    r.value, r.sequence, r.ttl
                );
                assert_eq!(r.raw.as_ref(), bytes.as_slice());
                assert!(
                    r.value.starts_with("/ipfs/") || r.value.starts_with("/ipns/"),
                    "{rel}: {}",
                    r.value
                );
            }
            (Expect::Invalid(want), Err(e)) => {
                rejected += 1;
                eprintln!("rejected {rel}: {e}");
                assert_eq!(e, want, "{rel}: rejected for the wrong reason");
            }
            (want, got) => panic!("{rel}: expected {want:?}, got {got:?}"),
        }
    }
    assert_eq!(rejected, 3, "the three broken spec vectors");
    assert_eq!(accepted, files.len() - 3);
}

/// The values the spec's "Test Vectors" section gives.
#[test]
fn spec_test_vector_values() {
    let Some(dir) = fixtures() else { return };
    let dir = dir.join("ipns_records");
    let check = |stem: &str, value: &str| {
        let name = Name::parse(stem.split_once('_').unwrap().0).unwrap();
        let bytes = std::fs::read(dir.join(format!("{stem}.ipns-record"))).unwrap();
        let r = validate_before_eol(&name, &bytes).unwrap();
        assert_eq!(r.value, value);
        r
    };
    let r = check(
        "k51qzi5uqu5dlkw8pxuw9qmqayfdeh4kfebhmreauqdc6a7c3y7d5i9fi8mk9w_v1-v2",
        "/ipfs/bafkqaddwgevxmmraojswg33smq",
    );
    assert!(
        r.validity > UNIX_EPOCH + Duration::from_secs(4_000_000_000),
        "valid for 100 years"
    );
    check(
        "k51qzi5uqu5dilgf7gorsh9vcqqq4myo6jd4zmqkuy9pxyxi5fua3uf7axph4y_v1-v2-broken-signature-v1",
        "/ipfs/bafkqahtwgevxmmrao5uxi2bamjzg623fnyqhg2lhnzqxi5lsmuqhmmi",
    );
}

/// A fixture is only valid for its own name.
#[test]
fn fixtures_are_rejected_under_another_name() {
    let Some(dir) = fixtures() else { return };
    let v2 = std::fs::read(dir.join(
        "ipns_records/k51qzi5uqu5dit2ku9mutlfgwyz8u730on38kd10m97m36bjt66my99hb6103f_v2.ipns-record",
    ))
    .unwrap();
    let other =
        Name::parse("k51qzi5uqu5dlkw8pxuw9qmqayfdeh4kfebhmreauqdc6a7c3y7d5i9fi8mk9w").unwrap();
    assert_eq!(
        validate(&other, &v2, SystemTime::now()),
        Err(IpnsError::BadSignature)
    );

    // The RSA record carries its key; under an Ed25519 name the key does not match.
    let rsa = std::fs::read(
        dir.join("subdomain_gateway/QmVujd5Vb7moysJj8itnGufN7MEtPRCNHkKpNuA4onsRa3.ipns-record"),
    )
    .unwrap();
    assert_eq!(
        validate(&other, &rsa, SystemTime::now()),
        Err(IpnsError::KeyMismatch)
    );
    let rsa_name = Name::parse("QmVujd5Vb7moysJj8itnGufN7MEtPRCNHkKpNuA4onsRa3").unwrap();
    assert!(rsa_name.to_string().starts_with("k2k4r8"), "{rsa_name}");
    validate_before_eol(&rsa_name, &rsa).unwrap();
    // The same name in its CID form.
    validate_before_eol(&Name::parse(&rsa_name.to_string()).unwrap(), &rsa).unwrap();
}
