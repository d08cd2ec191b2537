//! IPNS names and records, per the IPNS record spec (<https://specs.ipfs.tech/ipns/ipns-record/>).
//!
//! Pure: no I/O, no clock (the caller passes `now`). A [`Record`] returned by [`validate`] passed
//! every check of the spec's "Record Verification"; keep its `raw` bytes to store or serve it.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use ipfs_mount_ipns::{create, validate, Name};
//!
//! let key = libp2p_identity::Keypair::ed25519_from_bytes([7u8; 32]).unwrap();
//! let name = Name::from_public_key(&key.public());
//! let now = SystemTime::now();
//! let bytes = create(&key, "/ipfs/bafkqaaa", 1, now + Duration::from_secs(3600), Duration::from_secs(300)).unwrap();
//! let record = validate(&name, &bytes, now).unwrap();
//! assert_eq!(record.value, "/ipfs/bafkqaaa");
//! assert!(name.to_string().starts_with("k51"));
//! ```

mod name;
mod record;
mod rfc3339;

pub use name::{Name, LIBP2P_KEY_CODEC, ROUTING_KEY_PREFIX};
/// A time as RFC 3339 text in UTC (`2026-12-05T20:01:36.5Z`), as IPNS records write it; `None`
/// before 1970 or past year 9999.
pub fn format_rfc3339(t: std::time::SystemTime) -> Option<String> {
    rfc3339::format(rfc3339::from_system_time(t)?)
}

pub use record::{
    better, compare, create, validate, Record, MAX_RECORD_BYTES, SIGNATURE_V2_PREFIX,
};

/// Why a name or record was refused. Every variant says which rule of the spec failed.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum IpnsError {
    #[error("record is {0} bytes, over the {MAX_RECORD_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("record is not an IpnsEntry protobuf: {0}")]
    Protobuf(String),
    #[error("record has no signatureV2 (V1-only records are not accepted)")]
    MissingSignatureV2,
    #[error("record has no data field")]
    MissingData,
    #[error("record data is not a DAG-CBOR map: {0}")]
    Cbor(String),
    #[error("record data has no {0} field")]
    MissingField(&'static str),
    #[error("record data field {field} is invalid: {reason}")]
    InvalidField { field: &'static str, reason: String },
    #[error("the name is a hash of its key and the record carries no pubKey")]
    MissingPublicKey,
    #[error("public key: {0}")]
    BadPublicKey(String),
    #[error("the record's pubKey does not belong to the name")]
    KeyMismatch,
    #[error("signatureV2 does not verify against the name's key")]
    BadSignature,
    #[error("V1 field {field} differs from the signed data")]
    DataMismatch { field: &'static str },
    #[error("unsupported validity type {0} (only 0 = EOL is defined)")]
    UnsupportedValidityType(i128),
    #[error("validity {0:?} is not an RFC 3339 timestamp")]
    InvalidValidity(String),
    #[error("record expired at {eol}")]
    Expired { eol: String },
    #[error("record value is not UTF-8 text")]
    InvalidValue,
    #[error("bad IPNS name: {0}")]
    BadName(String),
    #[error("cannot create record: {0}")]
    Create(String),
}
