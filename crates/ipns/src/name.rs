//! IPNS names: the multihash of a public key (a libp2p peer id).

use std::fmt;
use std::str::FromStr;

use cid::Cid;
use libp2p_identity::{PeerId, PublicKey};

use crate::IpnsError;

/// The `libp2p-key` multicodec: the codec of an IPNS name written as a CID.
pub const LIBP2P_KEY_CODEC: u64 = 0x72;
const IDENTITY: u64 = 0x00;
/// Prefix of the routing (DHT) key of a name: `"/ipns/"` + the peer id's bytes.
pub const ROUTING_KEY_PREFIX: &[u8] = b"/ipns/";

/// An IPNS name: the peer id of the key that signs its records.
///
/// Parsed from a `libp2p-key` CIDv1 in any multibase (`k51…` base36, `b…`/`B…` base32, `z…`
/// base58btc, …) or a base58 peer id string (`12D3Koo…`, `Qm…`, `16Uiu2…`), with or without a
/// leading `/ipns/`. Displayed in the canonical form: a base36 CIDv1 with codec `libp2p-key`
/// (`k51…` for Ed25519 keys, `k2k4r8…` for RSA keys).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(PeerId);

impl Name {
    /// Parses any of the accepted forms (see [`Name`]); like go-libp2p's `peer.Decode`, a string
    /// starting with `Qm` or `1` is a base58 peer id, anything else must be a CID.
    pub fn parse(s: &str) -> Result<Name, IpnsError> {
        let s = s.strip_prefix("/ipns/").unwrap_or(s);
        if s.is_empty() {
            return Err(IpnsError::BadName("empty name".into()));
        }
        // Longest legitimate form: a sha2-256 or 42-byte identity peer id in base16 (~100 chars).
        if s.len() > 256 {
            return Err(IpnsError::BadName("name is too long".into()));
        }
        if s.starts_with("Qm") || s.starts_with('1') {
            return PeerId::from_str(s)
                .map(Name)
                .map_err(|e| IpnsError::BadName(format!("{s:?} is not a peer id: {e}")));
        }
        let cid = Cid::try_from(s).map_err(|e| {
            IpnsError::BadName(format!("{s:?} is neither a peer id nor a CID: {e}"))
        })?;
        if cid.version() != cid::Version::V1 {
            return Err(IpnsError::BadName(format!(
                "{s:?} is a CIDv0, not a libp2p-key CID"
            )));
        }
        if cid.codec() != LIBP2P_KEY_CODEC {
            return Err(IpnsError::BadName(format!(
                "{s:?} has codec 0x{:x}, not libp2p-key (0x72)",
                cid.codec()
            )));
        }
        Self::from_multihash(*cid.hash())
    }

    fn from_multihash(mh: multihash::Multihash<64>) -> Result<Name, IpnsError> {
        PeerId::from_multihash(mh).map(Name).map_err(|mh| {
            IpnsError::BadName(format!(
                "multihash 0x{:x} of {} bytes is not a peer id (identity up to 42 bytes or sha2-256)",
                mh.code(),
                mh.size()
            ))
        })
    }

    /// The name of a public key (identity multihash for Ed25519, sha2-256 for RSA).
    pub fn from_public_key(key: &PublicKey) -> Name {
        Name(key.to_peer_id())
    }

    pub fn from_peer_id(peer_id: PeerId) -> Name {
        Name(peer_id)
    }

    pub fn peer_id(&self) -> PeerId {
        self.0
    }

    /// The routing (DHT) key: `"/ipns/"` followed by the binary peer id.
    pub fn to_routing_key(&self) -> Vec<u8> {
        let mut key = ROUTING_KEY_PREFIX.to_vec();
        key.extend_from_slice(&self.0.to_bytes());
        key
    }

    /// The inverse of [`Name::to_routing_key`].
    pub fn from_routing_key(key: &[u8]) -> Result<Name, IpnsError> {
        let id = key
            .strip_prefix(ROUTING_KEY_PREFIX)
            .ok_or_else(|| IpnsError::BadName("routing key does not start with /ipns/".into()))?;
        PeerId::from_bytes(id)
            .map(Name)
            .map_err(|e| IpnsError::BadName(format!("routing key does not hold a peer id: {e}")))
    }

    /// The name as a CIDv1 with codec `libp2p-key`.
    pub fn to_cid(&self) -> Cid {
        Cid::new_v1(LIBP2P_KEY_CODEC, *self.0.as_ref())
    }

    /// The public key inlined in the name (identity multihash, e.g. Ed25519), if any and if it
    /// decodes; `None` for hashed (RSA) names, whose records must carry the key.
    pub fn inline_public_key(&self) -> Option<Result<PublicKey, IpnsError>> {
        let mh = self.0.as_ref();
        (mh.code() == IDENTITY).then(|| {
            PublicKey::try_decode_protobuf(mh.digest())
                .map_err(|e| IpnsError::BadPublicKey(format!("the key inlined in the name: {e}")))
        })
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self
            .to_cid()
            .to_string_of_base(multibase::Base::Base36Lower)
            .map_err(|_| fmt::Error)?;
        f.write_str(&s)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Name({self})")
    }
}

impl FromStr for Name {
    type Err = IpnsError;
    fn from_str(s: &str) -> Result<Name, IpnsError> {
        Name::parse(s)
    }
}

impl From<PeerId> for Name {
    fn from(p: PeerId) -> Name {
        Name(p)
    }
}
