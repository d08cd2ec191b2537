//! Commit records: one small dag-cbor block per dataset version, chained to the previous one.
//!
//! ```text
//! { "prev": <commit CID> | null, "root": <UnixFS directory CID>, "seq": 7, "time": <ms since epoch>,
//!   "attrs": <CID of the root's attributes node>, "meta": {}, "message": "…" (optional) }
//! ```
//! `attrs` (see `attrs.rs`) keeps every entry's mode and mtime beside the DAG, so that file and
//! directory CIDs stay exactly those of the import profile. Commits written before it have no
//! `attrs` and a `meta` map, `{ "<path>": { "mode": 0o644, "mtime": <s> } }`, of what users set
//! with chmod and utimens (whole seconds): they still load.

use std::collections::BTreeMap;

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use cid::Cid;
use ipfs_mount_ipld::{cids, codec, mh};
use ipld_core::ipld::Ipld;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub mode: u32,
    /// Seconds since the epoch (negative before it) and nanoseconds within that second.
    pub mtime: i64,
    pub nsec: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub prev: Option<Cid>,
    pub root: Cid,
    pub seq: u64,
    pub time_ms: i64,
    /// Every entry's mode and mtime (`attrs.rs`); `None` in commits written before.
    pub attrs: Option<Cid>,
    /// What older commits kept instead (explicit chmod/utimens only); empty in new ones.
    pub meta: BTreeMap<String, Meta>,
    /// Free text given with `ipfs-mount dataset commit -m`.
    pub message: Option<String>,
}

impl Commit {
    pub fn encode(&self) -> Result<(Cid, Bytes)> {
        let mut map = BTreeMap::new();
        map.insert(
            "prev".to_string(),
            self.prev.map(Ipld::Link).unwrap_or(Ipld::Null),
        );
        map.insert("root".to_string(), Ipld::Link(self.root));
        map.insert("seq".to_string(), Ipld::Integer(self.seq as i128));
        map.insert("time".to_string(), Ipld::Integer(self.time_ms as i128));
        if let Some(a) = self.attrs {
            map.insert("attrs".to_string(), Ipld::Link(a));
        }
        let meta = self
            .meta
            .iter()
            .map(|(path, m)| {
                let mut e = BTreeMap::new();
                e.insert("mode".to_string(), Ipld::Integer(m.mode as i128));
                e.insert("mtime".to_string(), Ipld::Integer(m.mtime as i128));
                (path.clone(), Ipld::Map(e))
            })
            .collect();
        map.insert("meta".to_string(), Ipld::Map(meta));
        if let Some(m) = &self.message {
            map.insert("message".to_string(), Ipld::String(m.clone()));
        }
        let bytes =
            serde_ipld_dagcbor::to_vec(&Ipld::Map(map)).context("encoding a commit record")?;
        let cid = cids::compute(cid::Version::V1, codec::DAG_CBOR, mh::SHA2_256, &bytes)?;
        Ok((cid, bytes.into()))
    }

    pub fn decode(cid: &Cid, bytes: &[u8]) -> Result<Self> {
        let ipld: Ipld = serde_ipld_dagcbor::from_slice(bytes)
            .with_context(|| format!("commit {cid} is not dag-cbor"))?;
        let Ipld::Map(map) = ipld else {
            return Err(anyhow!("commit {cid} is not a map"));
        };
        let int = |k: &str| match map.get(k) {
            Some(Ipld::Integer(i)) => Ok(*i),
            _ => Err(anyhow!("commit {cid}: field {k} missing")),
        };
        let root = match map.get("root") {
            Some(Ipld::Link(c)) => *c,
            _ => return Err(anyhow!("commit {cid}: no root")),
        };
        let prev = match map.get("prev") {
            Some(Ipld::Link(c)) => Some(*c),
            _ => None,
        };
        let mut meta = BTreeMap::new();
        if let Some(Ipld::Map(m)) = map.get("meta") {
            for (path, v) in m {
                if let Ipld::Map(e) = v {
                    if let (Some(Ipld::Integer(mode)), Some(Ipld::Integer(mtime))) =
                        (e.get("mode"), e.get("mtime"))
                    {
                        meta.insert(
                            path.clone(),
                            Meta {
                                mode: *mode as u32,
                                mtime: *mtime as i64,
                                nsec: 0,
                            },
                        );
                    }
                }
            }
        }
        let message = match map.get("message") {
            Some(Ipld::String(m)) => Some(m.clone()),
            _ => None,
        };
        Ok(Commit {
            prev,
            root,
            seq: int("seq")? as u64,
            time_ms: int("time")? as i64,
            attrs: match map.get("attrs") {
                Some(Ipld::Link(c)) => Some(*c),
                _ => None,
            },
            meta,
            message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let root = cids::compute(cid::Version::V1, codec::RAW, mh::SHA2_256, b"x").unwrap();
        let mut meta = BTreeMap::new();
        meta.insert(
            "a/b.txt".to_string(),
            Meta {
                mode: 0o640,
                mtime: 1_700_000_000,
                nsec: 0,
            },
        );
        let c = Commit {
            prev: Some(root),
            root,
            seq: 3,
            time_ms: 5,
            attrs: Some(root),
            meta,
            message: Some("first".into()),
        };
        let (cid, bytes) = c.encode().unwrap();
        cids::verify(&cid, &bytes).unwrap();
        assert_eq!(Commit::decode(&cid, &bytes).unwrap(), c);
    }
}
