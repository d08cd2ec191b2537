//! UnixFS directory building helpers: the errors a directory entry can cause and the HAMT
//! name hash as an integer.

use crate::hamt;

/// Why a directory entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirError {
    /// Empty, `.`, `..`, or containing `/` or NUL.
    #[error("invalid directory entry name {:?}", String::from_utf8_lossy(.0))]
    BadName(Vec<u8>),
    /// `name`'s murmur3 hash equals `other`'s (in every bit a HAMT can use), so a sharded
    /// directory cannot hold both.
    #[error(
        "directory entry {:?} has the HAMT hash of {:?}",
        String::from_utf8_lossy(.name),
        String::from_utf8_lossy(.other)
    )]
    HashCollision { name: Vec<u8>, other: Vec<u8> },
}

/// The function placing names in the HAMT (murmur3 in production; tests force collisions).
pub(crate) type NameHash = fn(&[u8]) -> u64;

/// The HAMT name hash as an integer: [`hamt::hash_name`] read big-endian.
pub(crate) fn murmur_hash(name: &[u8]) -> u64 {
    u64::from_be_bytes(hamt::hash_name(name))
}

/// Bucket of a name with hash `hash` at `depth` in a HAMT of `2^bits` fanout, or `None`
/// when the hash has no `bits` bits left at that depth.
pub(crate) fn bucket_at(hash: u64, depth: u32, bits: u32) -> Option<u32> {
    let start = depth.checked_mul(bits)?;
    if bits == 0 || start.checked_add(bits)? > 64 {
        return None;
    }
    Some(((hash << start) >> (64 - bits)) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::{build_file, try_build_hamt_with_hash, ImportProfile};

    #[test]
    fn bucket_at_agrees_with_hamt_bucket_index() {
        for i in 0..500u32 {
            let name = format!("name-{i}-ü").into_bytes();
            for fanout in [8u32, 16, 32, 64, 128, 256, 512, 1024] {
                let bits = hamt::bits_per_level(fanout);
                for depth in 0..24 {
                    assert_eq!(
                        bucket_at(murmur_hash(&name), depth, bits),
                        hamt::bucket_index(&name, depth, fanout).ok(),
                    );
                }
            }
        }
    }

    #[test]
    fn from_scratch_collisions_are_errors() {
        fn forced(name: &[u8]) -> u64 {
            if name.starts_with(b"x") {
                7
            } else {
                murmur_hash(name)
            }
        }
        let p = ImportProfile::unixfs_v0_2015();
        let f = build_file(b"x", &p);
        let entries = vec![
            (b"x1".to_vec(), f.root, f.tsize),
            (b"x2".to_vec(), f.root, f.tsize),
            (b"other".to_vec(), f.root, f.tsize),
        ];
        let err = try_build_hamt_with_hash(&entries, &p, forced).unwrap_err();
        assert!(matches!(err, DirError::HashCollision { .. }), "{err}");
        assert!(crate::builder::try_build_hamt(&entries, &p).is_ok());
    }
}
