//! Incrementally updated UnixFS directories: [`DirBuilder`] holds one directory's entries and
//! the blocks of its last build, and re-encodes only what a change touched, with the same
//! CIDs as a from-scratch [`build_directory_auto`](crate::builder::build_directory_auto)
//! (and therefore as Kubo 0.22 and Helia for the profile).
//!
//! # Data structure
//!
//! ```text
//!  entries: BTreeMap<hash64(name), Rec>        Rec = [name bytes | CID bytes] (one allocation)
//!           ordered by the 64-bit murmur3            + name length + Tsize
//!           name hash = HAMT order
//!
//!  shards:  HashMap<(depth, prefix), (CID, Tsize)>   every shard of the last HAMT build
//!
//!  hash order:  0000…   ├──────────────── root (depth 0, prefix "") ───────────────┤   FFFF…
//!                       ├─ bucket 00 ─┤ … ├──── bucket 3F: sub-shard (1, 0x3F) ────┤ …
//!                                           ├─ (2, 0x3F07) ─┤   …
//! ```
//!
//! The HAMT places a name by its hash, most significant bits first: at depth `d` a shard of
//! fanout `2^b` looks at hash bits `d·b .. d·b + b`. So the names below the shard reached by
//! the bucket path `p` (`d·b` bits) are exactly the names whose hash begins with `p`: one
//! contiguous range of the hash-ordered map. A shard is therefore a pure function of the
//! entries in its range, and so is its existence (a sub-shard exists exactly when its range
//! holds two or more names, see below).
//!
//! # Why only the path is rewritten
//!
//! A change to name `n` (insert, replace, remove) changes the contents of exactly one range
//! per depth: the ranges containing `hash(n)`, i.e. the shards on `n`'s path (the ones it
//! was in and the ones it will be in are the same ranges). Those cache entries are dropped
//! at once; every other cached shard still describes its range. [`DirBuilder::build`] walks
//! down from the root re-encoding only shards missing from the cache; inside a re-encoded
//! shard a sub-shard link takes its CID and Tsize from the cache, and the shard's own links
//! are found by stepping through its range bucket by bucket (one map seek per link, never a
//! scan of the names below a sub-shard). A change in a 100,000-entry directory at fanout
//! 256 re-encodes the root and one or two shards below it; everything else is reused and
//! not emitted again.
//!
//! A plain directory is a single block (by definition under the sharding threshold,
//! ~256 KiB), so it is simply re-encoded when anything changed.
//!
//! # Canonical form
//!
//! The HAMT must not depend on the order of past inserts and removes, or the root CID would
//! differ from a fresh import. The canonical shape, as `shard_node` in
//! [`builder`](crate::builder) builds it from scratch:
//! - every shard, root or not, has links only for occupied buckets, in ascending bucket
//!   order, and a `Data` of type HAMTShard with the bitfield (big-endian, leading zero bytes
//!   dropped), `hashType` murmur3-x64-64 and `fanout`;
//! - a bucket holding one name is an entry link (hex bucket index + name, the entry's
//!   Tsize); a bucket holding two or more names is a sub-shard one level down (link name =
//!   hex index alone, Tsize = sub-shard block + its links' Tsizes).
//!
//! Incremental implementations reach that same shape: boxo (`ipld/unixfs/hamt/hamt.go`,
//! `modifyValue`; hash bits from `util.go`, which fails with "sharded directory too deep"
//! when they run out) pushes a name that lands on an occupied single-name bucket into a new
//! sub-shard together with the occupant, and on removal replaces a sub-shard left with one
//! entry link and no sub-shard by that entry, level after level on the way back up.
//! `@helia/unixfs` (`packages/unixfs/src/commands/utils/remove-link.ts`) collapses the same
//! way on removal, and both switch a sharded directory back to a plain one when a removal
//! brings it under the threshold (boxo: `ipld/unixfs/io/directory.go`, `DynamicDirectory`). The UnixFS spec (specs.ipfs.tech, `unixfs`, HAMT
//! directories) describes the node format. Here the shape is not maintained by splits and
//! merges at all: it is recomputed from the ranges, so it is canonical by construction.
//!
//! # Plain or sharded
//!
//! The choice is [`ImportProfile::needs_sharding`] over the current entries, kept up to date
//! without a pass over them: Σ(name + CID bytes) for [`ShardEstimate::LinksBytes`], and for
//! [`ShardEstimate::BlockBytes`] the exact plain-block length as the sum of each entry's
//! encoded link length plus the fixed `Data` field. Crossing the threshold either way
//! switches the form at the next build.
//!
//! # Names the HAMT cannot separate
//!
//! Names come from untrusted content; two of them may share their murmur3 hash.
//! [`DirBuilder::insert`] refuses a name whose hash agrees with another entry's in the first
//! [`SEPARATING_BITS`] (60) bits, whether the directory is sharded now or not: 60 is what
//! the deepest possible HAMT can use at every allowed fanout (64 bits at fanout 16/256, 63
//! at 8/128/512, 60 at 32/64/1024; boxo stops with "sharded directory too deep" beyond
//! that). So a build can never meet two inseparable names, whatever profile it uses. (Two
//! names sharing 60 but not 64 bits would fit a fanout-256 HAMT; refusing them costs a
//! name an adversary chose, with odds of 2⁻⁶⁰ per pair otherwise.)

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use cid::Cid;

pub use crate::builder::DirError;
use crate::builder::{ImportProfile, ShardEstimate};
use crate::hamt::{murmur_hash, NameHash};
use crate::pb::{self, WIRE_LEN};
use crate::unixfs::{DataType, UnixFsData};
use crate::{cids, codec, hamt, mh};

/// Leading hash bits in which any two entries of a [`DirBuilder`] differ (see the module
/// documentation): the fewest bits a HAMT of any allowed fanout (8..=1024) can consume.
pub const SEPARATING_BITS: u32 = 60;

/// The result of [`DirBuilder::build`]: what a parent directory links to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirRoot {
    pub cid: Cid,
    /// Cumulative DAG size (the parent link's Tsize).
    pub tsize: u64,
    /// Whether the directory is HAMT-sharded (else a plain directory block).
    pub sharded: bool,
}

/// One entry: name and CID bytes in a single allocation.
struct Rec {
    /// Name bytes, then the CID in binary form.
    bytes: Box<[u8]>,
    name_len: u32,
    tsize: u64,
}

impl Rec {
    fn name(&self) -> &[u8] {
        &self.bytes[..self.name_len as usize]
    }

    fn cid_bytes(&self) -> &[u8] {
        &self.bytes[self.name_len as usize..]
    }

    fn cid(&self) -> Option<Cid> {
        cids::from_bytes(self.cid_bytes()).ok()
    }

    /// This entry's share of the links-bytes estimate.
    fn links_bytes(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Encoded length of this entry's link field in a plain directory block.
    fn plain_link_len(&self) -> u64 {
        link_field_len(self.cid_bytes().len(), self.name_len as usize, self.tsize) as u64
    }
}

/// A shard of the last HAMT build.
#[derive(Clone, Copy)]
struct ShardRef {
    cid: Cid,
    tsize: u64,
}

/// The last build: its profile and result.
struct Last {
    profile: ImportProfile,
    root: DirRoot,
}

/// The persistent, incrementally updated state of one UnixFS directory (see the [module
/// documentation](self)).
///
/// [`build`](Self::build) gives the root a from-scratch
/// [`build_directory_auto`](crate::builder::build_directory_auto) of the same entries gives,
/// for any history of [`insert`](Self::insert)s and [`remove`](Self::remove)s, and emits only
/// the blocks the previous build did not have.
pub struct DirBuilder {
    /// Entries by name hash (HAMT order); two keys never share [`SEPARATING_BITS`] bits.
    entries: BTreeMap<u64, Rec>,
    /// Σ (name + CID bytes): the [`ShardEstimate::LinksBytes`] estimate.
    links_bytes: u64,
    /// Σ of the entries' link field lengths in a plain directory block.
    plain_links_len: u64,
    hash: NameHash,
    /// Every shard of the last HAMT build still valid, by (depth, hash prefix); empty unless
    /// the last build was sharded.
    shards: HashMap<(u32, u64), ShardRef>,
    /// Deepest key in `shards`.
    shard_depth: u32,
    last: Option<Last>,
    /// Entries changed since the last build.
    changed: bool,
}

impl Default for DirBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for DirBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirBuilder")
            .field("entries", &self.entries.len())
            .field("cached_shards", &self.shards.len())
            .field("last", &self.last.as_ref().map(|l| l.root))
            .field("changed", &self.changed)
            .finish()
    }
}

impl DirBuilder {
    /// An empty directory.
    pub fn new() -> Self {
        Self::with_hash(murmur_hash)
    }

    pub(crate) fn with_hash(hash: NameHash) -> Self {
        DirBuilder {
            entries: BTreeMap::new(),
            links_bytes: 0,
            plain_links_len: 0,
            hash,
            shards: HashMap::new(),
            shard_depth: 0,
            last: None,
            changed: true,
        }
    }

    /// A directory of these `(name, cid, tsize)` entries (a later entry of the same name
    /// replaces an earlier one); the first [`build`](Self::build) encodes it all.
    pub fn from_entries(
        entries: impl IntoIterator<Item = (Vec<u8>, Cid, u64)>,
    ) -> Result<Self, DirError> {
        let mut dir = Self::new();
        for (name, cid, tsize) in entries {
            dir.insert(name, cid, tsize)?;
        }
        Ok(dir)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn find(&self, name: &[u8]) -> Option<(u64, &Rec)> {
        let h = (self.hash)(name);
        self.entries
            .get(&h)
            .filter(|r| r.name() == name)
            .map(|r| (h, r))
    }

    /// The CID and Tsize of entry `name`.
    pub fn get(&self, name: &[u8]) -> Option<(Cid, u64)> {
        let (_, r) = self.find(name)?;
        Some((r.cid()?, r.tsize))
    }

    pub fn contains(&self, name: &[u8]) -> bool {
        self.find(name).is_some()
    }

    /// The entries `(name, cid, tsize)` in HAMT order (by name hash), which is cheap; see
    /// [`to_sorted_entries`](Self::to_sorted_entries) for name order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], Cid, u64)> + '_ {
        self.entries
            .values()
            .filter_map(|r| Some((r.name(), r.cid()?, r.tsize)))
    }

    /// The entries sorted by name bytes (the order of a plain directory's links); a copy.
    pub fn to_sorted_entries(&self) -> Vec<(Vec<u8>, Cid, u64)> {
        let mut v: Vec<(Vec<u8>, Cid, u64)> =
            self.iter().map(|(n, c, t)| (n.to_vec(), c, t)).collect();
        v.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Adds entry `name`, or replaces its CID and Tsize.
    ///
    /// Refuses a bad name (empty, `.`, `..`, or with `/` or NUL) and a name whose HAMT hash
    /// agrees with another entry's in the first [`SEPARATING_BITS`] bits; the directory is
    /// left unchanged then.
    pub fn insert(&mut self, name: Vec<u8>, cid: Cid, tsize: u64) -> Result<(), DirError> {
        if !crate::unixfs::is_safe_name(&name) || u32::try_from(name.len()).is_err() {
            return Err(DirError::BadName(name));
        }
        let h = (self.hash)(&name);
        let low = u64::MAX >> SEPARATING_BITS;
        // at most one entry can be in this range: the invariant this check keeps
        if let Some((_, other)) = self
            .entries
            .range(h & !low..=h | low)
            .find(|(_, r)| r.name() != name.as_slice())
        {
            let other = other.name().to_vec();
            return Err(DirError::HashCollision { name, other });
        }
        let name_len = name.len() as u32;
        let mut bytes = name;
        bytes.reserve_exact(cid.encoded_len());
        cid.write_bytes(&mut bytes)
            .expect("writing to a Vec cannot fail");
        if let Some(old) = self.entries.get(&h) {
            if old.bytes[..] == bytes[..] && old.tsize == tsize {
                return Ok(());
            }
        }
        let rec = Rec {
            bytes: bytes.into_boxed_slice(),
            name_len,
            tsize,
        };
        self.links_bytes += rec.links_bytes();
        self.plain_links_len += rec.plain_link_len();
        if let Some(old) = self.entries.insert(h, rec) {
            self.links_bytes -= old.links_bytes();
            self.plain_links_len -= old.plain_link_len();
        }
        self.touch(h);
        Ok(())
    }

    /// Removes entry `name`; false if there was none.
    pub fn remove(&mut self, name: &[u8]) -> bool {
        let Some((h, _)) = self.find(name) else {
            return false;
        };
        if let Some(old) = self.entries.remove(&h) {
            self.links_bytes -= old.links_bytes();
            self.plain_links_len -= old.plain_link_len();
        }
        self.touch(h);
        true
    }

    /// Records a change of the entry with hash `h`: the shards on its path are stale.
    fn touch(&mut self, h: u64) {
        self.changed = true;
        if self.shards.is_empty() {
            return;
        }
        let Some(last) = &self.last else {
            self.shards.clear();
            return;
        };
        let bits = hamt::bits_per_level(last.profile.fanout);
        for depth in 0..=self.shard_depth {
            self.shards.remove(&(depth, prefix_of(h, depth, bits)));
        }
    }

    /// Forgets the blocks of earlier builds: the next [`build`](Self::build) emits every
    /// block of the directory again (for a caller whose store lost them).
    pub fn forget_blocks(&mut self) {
        self.shards.clear();
        self.shard_depth = 0;
        self.last = None;
    }

    /// The size estimate of this directory as a plain block, as
    /// [`ImportProfile::directory_estimate`] computes it over the same entries.
    pub fn directory_estimate(&self, estimate: ShardEstimate) -> u64 {
        match estimate {
            ShardEstimate::LinksBytes => self.links_bytes,
            ShardEstimate::BlockBytes => self.plain_links_len + plain_data_field_len() as u64,
        }
    }

    /// [`ImportProfile::needs_sharding`] over the current entries, without a pass over them.
    pub fn needs_sharding(&self, profile: &ImportProfile) -> bool {
        let Some(threshold) = profile.shard_threshold else {
            return false;
        };
        if self.entries.is_empty() {
            return false;
        }
        let estimate = self.directory_estimate(profile.shard_estimate);
        if profile.shard_at_threshold {
            estimate >= threshold
        } else {
            estimate > threshold
        }
    }

    /// Encodes the directory for `profile`: a plain directory or a HAMT, as
    /// [`build_directory_auto`](crate::builder::build_directory_auto) would for the same
    /// entries (same root CID and Tsize, same blocks).
    ///
    /// Only blocks that changed since the previous build are encoded and pushed to `out`
    /// (sub-shards before their parents, the root last): every block reachable from the
    /// returned root is either in `out` or was reachable from the previous build's root.
    /// Nothing changed and the same profile: nothing is pushed. A different profile than
    /// last time, or a switch between plain and sharded, encodes everything.
    ///
    /// Never fails on names: [`DirBuilder::insert`] already refused any name the HAMT could
    /// not separate from another entry, at every fanout.
    ///
    /// # Panics
    /// If the directory must be sharded and `profile.fanout` is not a power of two in
    /// `8..=1024`, or if `profile.hash` is not a supported multihash (as the from-scratch
    /// builder).
    pub fn build(&mut self, profile: &ImportProfile, out: &mut Vec<(Cid, Bytes)>) -> DirRoot {
        if let Some(last) = &self.last {
            if last.profile == *profile {
                if !self.changed {
                    return last.root;
                }
            } else {
                self.shards.clear();
                self.shard_depth = 0;
            }
        }
        let root = if self.needs_sharding(profile) {
            let fanout = profile.fanout;
            assert!(
                fanout.is_power_of_two() && (hamt::MIN_FANOUT..=hamt::MAX_FANOUT).contains(&fanout),
                "HAMT fanout {fanout} must be a power of two in {}..={}",
                hamt::MIN_FANOUT,
                hamt::MAX_FANOUT
            );
            let mut ctx = ShardBuild {
                entries: &self.entries,
                shards: &mut self.shards,
                shard_depth: &mut self.shard_depth,
                profile,
                bits: hamt::bits_per_level(fanout),
                width: hamt::prefix_width(fanout),
                out,
            };
            let root = ctx.shard(0, 0);
            DirRoot {
                cid: root.cid,
                tsize: root.tsize,
                sharded: true,
            }
        } else {
            self.shards.clear();
            self.shard_depth = 0;
            self.build_plain(profile, out)
        };
        self.last = Some(Last {
            profile: profile.clone(),
            root,
        });
        self.changed = false;
        root
    }

    fn build_plain(&self, profile: &ImportProfile, out: &mut Vec<(Cid, Bytes)>) -> DirRoot {
        let mut recs: Vec<&Rec> = self.entries.values().collect();
        recs.sort_unstable_by(|a, b| a.name().cmp(b.name()));
        let len = self.plain_links_len as usize + plain_data_field_len();
        let mut block = Vec::with_capacity(len);
        let mut children = 0u64;
        for r in recs {
            put_link(&mut block, r.cid_bytes(), &[], r.name(), r.tsize);
            children = children.wrapping_add(r.tsize);
        }
        pb::put_bytes_field(
            &mut block,
            1,
            &crate::unixfs::encode_data(&UnixFsData::new(DataType::Directory)),
        );
        debug_assert_eq!(block.len(), len);
        let cid = pb_cid(profile, &block);
        let tsize = (block.len() as u64).wrapping_add(children);
        out.push((cid, block.into()));
        DirRoot {
            cid,
            tsize,
            sharded: false,
        }
    }

    /// Number of shards kept from the last build (tests and diagnostics).
    #[cfg(test)]
    fn cached_shards(&self) -> usize {
        self.shards.len()
    }
}

/// The hash prefix naming the shard at `depth` on the path of hash `h`.
fn prefix_of(h: u64, depth: u32, bits: u32) -> u64 {
    let shift = depth * bits;
    if shift == 0 {
        0
    } else if shift >= 64 {
        h
    } else {
        h >> (64 - shift)
    }
}

/// Length of the `Data` field of a plain directory block (type Directory, nothing else).
fn plain_data_field_len() -> usize {
    let data_len = crate::unixfs::encode_data(&UnixFsData::new(DataType::Directory)).len();
    1 + pb::varint_len(data_len as u64) + data_len
}

/// Length of a PBLink message with a Hash, a Name and a Tsize.
fn link_body_len(cid_len: usize, name_len: usize, tsize: u64) -> usize {
    1 + pb::varint_len(cid_len as u64)
        + cid_len
        + 1
        + pb::varint_len(name_len as u64)
        + name_len
        + 1
        + pb::varint_len(tsize)
}

/// Length of that link as a PBNode `Links` field.
fn link_field_len(cid_len: usize, name_len: usize, tsize: u64) -> usize {
    let body = link_body_len(cid_len, name_len, tsize);
    1 + pb::varint_len(body as u64) + body
}

/// Appends a PBNode `Links` field (canonical dag-pb, as [`crate::dagpb::encode`] writes it)
/// for a link to `cid` named `prefix ++ name`.
fn put_link(out: &mut Vec<u8>, cid: &[u8], prefix: &[u8], name: &[u8], tsize: u64) {
    let name_len = prefix.len() + name.len();
    pb::put_key(out, 2, WIRE_LEN);
    pb::put_varint(out, link_body_len(cid.len(), name_len, tsize) as u64);
    pb::put_bytes_field(out, 1, cid);
    pb::put_key(out, 2, WIRE_LEN);
    pb::put_varint(out, name_len as u64);
    out.extend_from_slice(prefix);
    out.extend_from_slice(name);
    pb::put_varint_field(out, 3, tsize);
}

fn pb_cid(profile: &ImportProfile, block: &[u8]) -> Cid {
    cids::compute(profile.cid_version, codec::DAG_PB, profile.hash, block)
        .expect("profile hash is supported")
}

/// Uppercase hex of `index`, zero-padded to `width` digits (≤ 3 for fanout ≤ 1024).
fn hex_prefix(mut index: u32, width: usize) -> ([u8; 4], usize) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let width = width.min(4);
    let mut buf = [b'0'; 4];
    for d in buf[..width].iter_mut().rev() {
        *d = HEX[(index & 0xF) as usize];
        index >>= 4;
    }
    (buf, width)
}

/// One HAMT build: re-encodes the shards missing from the cache.
struct ShardBuild<'a> {
    entries: &'a BTreeMap<u64, Rec>,
    shards: &'a mut HashMap<(u32, u64), ShardRef>,
    shard_depth: &'a mut u32,
    profile: &'a ImportProfile,
    bits: u32,
    width: usize,
    out: &'a mut Vec<(Cid, Bytes)>,
}

impl<'a> ShardBuild<'a> {
    /// The shard at `depth` whose names' hashes begin with the `depth · bits` bits `prefix`:
    /// from the cache, or encoded (with its missing sub-shards) and cached.
    fn shard(&mut self, depth: u32, prefix: u64) -> ShardRef {
        if let Some(s) = self.shards.get(&(depth, prefix)) {
            return *s;
        }
        let bits = self.bits;
        let shift = depth * bits;
        // Callers only descend where the hash has bits left: shift + bits <= 64.
        let lo = if shift == 0 {
            0
        } else {
            prefix << (64 - shift)
        };
        let hi = lo | (u64::MAX >> shift);
        let bucket = |h: u64| ((h << shift) >> (64 - bits)) as u32;
        // last hash of bucket `b` in this shard
        let bucket_end = |b: u32| {
            lo | (u64::from(b) << (64 - shift - bits))
                | u64::MAX.checked_shr(shift + bits).unwrap_or(0)
        };
        // whether a bucket of 2+ names can be a sub-shard (always, given SEPARATING_BITS)
        let can_descend = shift + 2 * bits <= 64;

        let fanout = self.profile.fanout;
        let mut bitfield = vec![0u8; (fanout / 8) as usize];
        let mut block = Vec::new();
        let mut children = 0u64;
        let entries: &'a BTreeMap<u64, Rec> = self.entries;
        let mut cursor = lo;
        'scan: loop {
            let mut range = entries.range(cursor..=hi);
            let Some(mut cur) = range.next() else {
                break;
            };
            loop {
                let (&h, rec) = cur;
                let b = bucket(h);
                let last = bitfield.len() - 1;
                bitfield[last - (b / 8) as usize] |= 1 << (b % 8);
                let (hex, width) = hex_prefix(b, self.width);
                let next = range.next();
                let shared = next.is_some_and(|(&h2, _)| bucket(h2) == b);
                debug_assert!(!shared || can_descend, "inseparable names in the HAMT");
                if shared && can_descend {
                    let sub = self.shard(depth + 1, (prefix << bits) | u64::from(b));
                    let cid = sub.cid.to_bytes();
                    put_link(&mut block, &cid, &hex[..width], &[], sub.tsize);
                    children = children.wrapping_add(sub.tsize);
                    match bucket_end(b).checked_add(1) {
                        Some(c) if c <= hi => {
                            cursor = c;
                            continue 'scan;
                        }
                        _ => break 'scan,
                    }
                }
                put_link(
                    &mut block,
                    rec.cid_bytes(),
                    &hex[..width],
                    rec.name(),
                    rec.tsize,
                );
                children = children.wrapping_add(rec.tsize);
                match next {
                    Some(n) => cur = n,
                    None => break 'scan,
                }
            }
        }

        // big-endian bitfield without leading zero bytes
        let first = bitfield
            .iter()
            .position(|&x| x != 0)
            .unwrap_or(bitfield.len());
        let mut meta = UnixFsData::new(DataType::HamtShard);
        if first < bitfield.len() {
            meta.data = Some(Bytes::copy_from_slice(&bitfield[first..]));
        }
        meta.hash_type = Some(mh::MURMUR3_X64_64);
        meta.fanout = Some(u64::from(fanout));
        pb::put_bytes_field(&mut block, 1, &crate::unixfs::encode_data(&meta));
        let cid = pb_cid(self.profile, &block);
        let s = ShardRef {
            cid,
            tsize: (block.len() as u64).wrapping_add(children),
        };
        self.out.push((cid, block.into()));
        self.shards.insert((depth, prefix), s);
        *self.shard_depth = (*self.shard_depth).max(depth);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::{build_directory_auto, build_file, try_build_hamt_with_hash, Built};
    use crate::hamt::bucket_at;
    use crate::unixfs::{decode_node, Node};
    use std::collections::HashSet;
    use std::time::Instant;

    type Entry = (Vec<u8>, Cid, u64);

    /// `n` distinct file CIDs (with their Tsizes) for the profile's CID version.
    fn files(n: u64, profile: &ImportProfile) -> Vec<(Cid, u64)> {
        (0..n)
            .map(|i| {
                let f = build_file(&i.to_le_bytes(), profile);
                (f.root, f.tsize)
            })
            .collect()
    }

    fn model_entries(model: &BTreeMap<Vec<u8>, (Cid, u64)>) -> Vec<Entry> {
        model
            .iter()
            .map(|(n, (c, t))| (n.clone(), *c, *t))
            .collect()
    }

    /// Builds `dir`, checks it against a from-scratch build of `model`, records the emitted
    /// blocks in `emitted` and checks every block of the fresh build is among them.
    fn check(
        dir: &mut DirBuilder,
        model: &BTreeMap<Vec<u8>, (Cid, u64)>,
        profile: &ImportProfile,
        emitted: &mut HashMap<Cid, Bytes>,
    ) -> (DirRoot, Vec<(Cid, Bytes)>) {
        let entries = model_entries(model);
        assert_eq!(dir.len(), entries.len());
        for est in [ShardEstimate::LinksBytes, ShardEstimate::BlockBytes] {
            let mut p = profile.clone();
            p.shard_estimate = est;
            assert_eq!(dir.directory_estimate(est), p.directory_estimate(&entries));
        }
        assert_eq!(
            dir.needs_sharding(profile),
            profile.needs_sharding(&entries)
        );
        let mut out = Vec::new();
        let root = dir.build(profile, &mut out);
        for (cid, block) in &out {
            emitted.insert(*cid, block.clone());
        }
        let fresh = build_directory_auto(&entries, profile);
        assert_eq!(root.cid, fresh.root, "root CID");
        assert_eq!(root.tsize, fresh.tsize, "root Tsize");
        assert_eq!(root.sharded, profile.needs_sharding(&entries));
        for (cid, block) in &fresh.blocks {
            assert_eq!(emitted.get(cid), Some(block), "block {cid} never emitted");
        }
        // a second build without changes emits nothing and gives the same root
        let mut again = Vec::new();
        assert_eq!(dir.build(profile, &mut again), root);
        assert!(again.is_empty());
        (root, out)
    }

    /// The shards on `name`'s path from the root of `built` (1 = the root alone).
    fn path_len(built: &Built, name: &[u8]) -> usize {
        let blocks: HashMap<Cid, Bytes> = built.blocks.iter().cloned().collect();
        let mut cid = built.root;
        let mut depth = 0;
        loop {
            let node = match decode_node(&cid, &blocks[&cid]).unwrap() {
                Node::HamtShard(h) => h,
                other => panic!("not a shard: {other:?}"),
            };
            match hamt::lookup_step(&node, name, depth).unwrap() {
                hamt::Step::Descend { cid: c } => {
                    cid = c;
                    depth += 1;
                }
                _ => return depth as usize + 1,
            }
        }
    }

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
        // the fewest bits a HAMT of an allowed fanout can use
        let min = (3..=10).map(|b| (64 / b) * b).min();
        assert_eq!(min, Some(SEPARATING_BITS));
    }

    #[test]
    fn record_is_small() {
        assert!(std::mem::size_of::<Rec>() <= 32);
    }

    #[test]
    fn links_encode_like_dagpb() {
        let cid = files(1, &ImportProfile::unixfs_v1_2025())[0].0;
        for tsize in [0u64, 1, 127, 128, 300_000, u64::MAX] {
            for name in [&b"a"[..], &[b'x'; 200][..]] {
                let link = crate::dagpb::PbLink {
                    cid,
                    name: Some([&b"3F"[..], name].concat()),
                    tsize: Some(tsize),
                };
                let want = crate::dagpb::encode(&crate::dagpb::PbNode {
                    links: vec![link],
                    data: None,
                });
                let mut got = Vec::new();
                put_link(&mut got, &cid.to_bytes(), b"3F", name, tsize);
                assert_eq!(got, want);
                assert_eq!(
                    link_field_len(cid.encoded_len(), name.len() + 2, tsize),
                    want.len()
                );
            }
        }
        assert_eq!(plain_data_field_len(), 4);
    }

    #[test]
    fn empty_directory_and_no_change_builds() {
        let v0 = ImportProfile::unixfs_v0_2015();
        let mut dir = DirBuilder::new();
        let mut out = Vec::new();
        let root = dir.build(&v0, &mut out);
        assert_eq!(
            root.cid.to_string(),
            "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"
        );
        assert_eq!(out.len(), 1);
        out.clear();
        assert_eq!(dir.build(&v0, &mut out), root);
        assert!(out.is_empty());
        // an identical replace is no change
        let (cid, tsize) = files(1, &v0)[0];
        dir.insert(b"a".to_vec(), cid, tsize).unwrap();
        let root = dir.build(&v0, &mut out);
        out.clear();
        dir.insert(b"a".to_vec(), cid, tsize).unwrap();
        assert_eq!(dir.build(&v0, &mut out), root);
        assert!(out.is_empty());
        assert!(!dir.remove(b"b"));
        assert!(dir.remove(b"a"));
        assert!(dir.is_empty());
        assert_eq!(dir.get(b"a"), None);
    }

    #[test]
    fn bad_names_are_refused() {
        let (cid, tsize) = files(1, &ImportProfile::unixfs_v0_2015())[0];
        let mut dir = DirBuilder::new();
        for bad in [&b""[..], b"a/b", b"/", b"nul\0", b".", b".."] {
            assert_eq!(
                dir.insert(bad.to_vec(), cid, tsize),
                Err(DirError::BadName(bad.to_vec()))
            );
        }
        assert!(dir.is_empty());
        dir.insert(b"...".to_vec(), cid, tsize).unwrap();
        dir.insert("ünï \u{1F600}".as_bytes().to_vec(), cid, tsize)
            .unwrap();
        assert_eq!(dir.len(), 2);
    }

    /// A name hash where `x…` names collide in all 64 bits and `y…` names share 60 bits
    /// with them; other names hash as usual.
    fn forced_hash(name: &[u8]) -> u64 {
        const H: u64 = 0x3FA5_0000_1234_5670;
        match name.first() {
            Some(b'x') => H,
            Some(b'y') => H | (name.len() as u64 & 0xF),
            _ => murmur_hash(name),
        }
    }

    #[test]
    fn hash_collisions_are_refused_not_panicking() {
        let mut p = ImportProfile::unixfs_v0_2015();
        p.shard_threshold = Some(0);
        let f = files(3, &p);
        let mut dir = DirBuilder::with_hash(forced_hash);
        dir.insert(b"x1".to_vec(), f[0].0, f[0].1).unwrap();
        dir.insert(b"plain".to_vec(), f[1].0, f[1].1).unwrap();
        // refused while the directory is plain, as it may shard later
        let mut plain = p.clone();
        plain.shard_threshold = None;
        let mut out = Vec::new();
        assert!(!dir.build(&plain, &mut out).sharded);
        assert_eq!(
            dir.insert(b"x2".to_vec(), f[2].0, f[2].1),
            Err(DirError::HashCollision {
                name: b"x2".to_vec(),
                other: b"x1".to_vec()
            })
        );
        // 60 shared bits are refused too (fanout 1024 could not separate them)
        assert_eq!(
            dir.insert(b"y12".to_vec(), f[2].0, f[2].1),
            Err(DirError::HashCollision {
                name: b"y12".to_vec(),
                other: b"x1".to_vec()
            })
        );
        // replacing the occupant itself is fine
        dir.insert(b"x1".to_vec(), f[2].0, f[2].1).unwrap();
        assert_eq!(dir.get(b"x1"), Some(f[2]));
        assert_eq!(dir.len(), 2);
        // once it is gone the other name fits
        assert!(dir.remove(b"x1"));
        dir.insert(b"y12".to_vec(), f[0].0, f[0].1).unwrap();
        assert_eq!(
            dir.insert(b"x1".to_vec(), f[0].0, f[0].1).unwrap_err(),
            DirError::HashCollision {
                name: b"x1".to_vec(),
                other: b"y12".to_vec()
            }
        );
        for fanout in [8, 16, 32, 64, 128, 256, 512, 1024] {
            p.fanout = fanout;
            assert!(dir.build(&p, &mut out).sharded);
        }
        assert!(DirBuilder::from_entries([
            (b"ok".to_vec(), f[0].0, f[0].1),
            (b"a/b".to_vec(), f[0].0, f[0].1)
        ])
        .is_err());

        // the from-scratch builder reports them instead of panicking
        let entries = vec![
            (b"x1".to_vec(), f[0].0, f[0].1),
            (b"x2".to_vec(), f[1].0, f[1].1),
            (b"other".to_vec(), f[2].0, f[2].1),
        ];
        p.fanout = 256;
        let err = try_build_hamt_with_hash(&entries, &p, forced_hash).unwrap_err();
        assert!(matches!(err, DirError::HashCollision { .. }), "{err}");
        // 60 shared bits: fine at fanout 256 (64 usable bits), not at 1024 (60)
        let entries = vec![
            (b"x1".to_vec(), f[0].0, f[0].1),
            (b"y12".to_vec(), f[1].0, f[1].1),
        ];
        assert!(try_build_hamt_with_hash(&entries, &p, forced_hash).is_ok());
        p.fanout = 1024;
        assert_eq!(
            try_build_hamt_with_hash(&entries, &p, forced_hash).unwrap_err(),
            DirError::HashCollision {
                name: b"x1".to_vec(),
                other: b"y12".to_vec()
            }
        );
        // real names go through the murmur3 path of the public functions
        assert!(crate::builder::try_build_directory_auto(&entries, &p).is_ok());
        assert!(crate::builder::try_build_directory_auto_counting(&entries, &p, |_| true).is_ok());
        assert!(crate::builder::try_build_hamt(&entries, &p).is_ok());
    }

    /// Two real names (murmur3, no forced hash) whose hashes share their first `bits` bits:
    /// a birthday search over `name-<i>`.
    fn names_sharing_bits(bits: u32) -> (Vec<u8>, Vec<u8>) {
        let mut seen: HashMap<u64, Vec<u8>> = HashMap::new();
        for i in 0u64.. {
            let name = format!("name-{i}").into_bytes();
            let prefix = murmur_hash(&name) >> (64 - bits);
            if let Some(other) = seen.insert(prefix, name.clone()) {
                return (other, name);
            }
        }
        unreachable!()
    }

    #[test]
    fn real_names_sharing_hash_bits_go_to_deeper_shards() {
        let mut p = ImportProfile::unixfs_v1_2025();
        p.shard_threshold = Some(0);
        let f = files(4, &p);
        // 30 shared bits: three levels at fanout 1024, three and a bit at fanout 256
        let (a, b) = names_sharing_bits(30);
        assert_ne!(a, b);
        assert_eq!(murmur_hash(&a) >> 34, murmur_hash(&b) >> 34);
        for (fanout, depth) in [(1024, 4), (256, 4)] {
            p.fanout = fanout;
            let entries = vec![
                (a.clone(), f[0].0, f[0].1),
                (b.clone(), f[1].0, f[1].1),
                (b"other".to_vec(), f[2].0, f[2].1),
            ];
            let built = crate::builder::try_build_hamt(&entries, &p).unwrap();
            assert!(path_len(&built, &a) >= depth, "fanout {fanout}");
            assert_eq!(path_len(&built, &a), path_len(&built, &b));
            assert_eq!(path_len(&built, b"other"), 1);
            // the incremental builder takes both names and builds the same root
            let mut dir = DirBuilder::new();
            for (n, c, t) in &entries {
                dir.insert(n.clone(), *c, *t).unwrap();
            }
            let mut out = Vec::new();
            assert_eq!(dir.build(&p, &mut out).cid, built.root);
        }
    }

    #[test]
    fn profile_changes_and_forgetting_rebuild_everything() {
        let v0 = ImportProfile::unixfs_v0_2015();
        let v1 = ImportProfile::unixfs_v1_2025();
        let mut small0 = v0.clone();
        small0.shard_threshold = Some(500);
        let mut small1 = v1.clone();
        small1.shard_threshold = Some(500);
        small1.fanout = 16;
        let f = files(300, &v1);
        let mut dir = DirBuilder::new();
        let mut model = BTreeMap::new();
        for (i, (cid, tsize)) in f.iter().enumerate() {
            let name = format!("entry {i}").into_bytes();
            dir.insert(name.clone(), *cid, *tsize).unwrap();
            model.insert(name, (*cid, *tsize));
        }
        for p in [&v0, &small0, &small1, &v1, &small1, &small0] {
            let mut emitted = HashMap::new();
            let (_, out) = check(&mut dir, &model, p, &mut emitted);
            let fresh = build_directory_auto(&model_entries(&model), p);
            assert_eq!(
                out.len(),
                fresh.blocks.len(),
                "a new profile emits every block"
            );
        }
        dir.forget_blocks();
        let mut emitted = HashMap::new();
        let (_, out) = check(&mut dir, &model, &small0, &mut emitted);
        assert_eq!(
            out.len(),
            build_directory_auto(&model_entries(&model), &small0)
                .blocks
                .len()
        );
    }

    /// One-entry changes in an `n`-entry directory with a real profile: emitted blocks =
    /// the shards on the name's path; prints the times.
    fn one_change(n: usize, profile: &ImportProfile) {
        let f = files(n as u64 + 2, profile);
        let names: Vec<Vec<u8>> = (0..n)
            .map(|i| format!("photo-{i:07}.jpg").into_bytes())
            .collect();
        let mut model: BTreeMap<Vec<u8>, (Cid, u64)> =
            names.iter().zip(&f).map(|(n, e)| (n.clone(), *e)).collect();
        let t = Instant::now();
        let mut dir = DirBuilder::from_entries(model_entries(&model)).unwrap();
        let load = t.elapsed();
        let mut out = Vec::new();
        let t = Instant::now();
        let root = dir.build(profile, &mut out);
        let first = t.elapsed();
        assert!(root.sharded);
        let fresh = build_directory_auto(&model_entries(&model), profile);
        assert_eq!((root.cid, root.tsize), (fresh.root, fresh.tsize));
        assert_eq!(out.len(), fresh.blocks.len());
        assert_eq!(dir.cached_shards(), fresh.blocks.len());

        let mut report = format!(
            "{n} entries, cid v{:?}: load {load:?}, first build {first:?} ({} shards)",
            profile.cid_version,
            out.len()
        );
        // replace, add, remove one entry
        let target = names[n / 3].clone();
        let added = b"new file.txt".to_vec();
        for step in 0..3 {
            let before = build_directory_auto(&model_entries(&model), profile);
            let t0 = Instant::now();
            match step {
                0 => dir.insert(target.clone(), f[n].0, f[n].1).unwrap(),
                1 => dir.insert(added.clone(), f[n + 1].0, f[n + 1].1).unwrap(),
                _ => assert!(dir.remove(&target)),
            }
            let mut out = Vec::new();
            let root = dir.build(profile, &mut out);
            let took = t0.elapsed();
            match step {
                0 => model.insert(target.clone(), f[n]),
                1 => model.insert(added.clone(), f[n + 1]),
                _ => model.remove(&target),
            };
            let fresh = build_directory_auto(&model_entries(&model), profile);
            assert_eq!((root.cid, root.tsize), (fresh.root, fresh.tsize));
            let path = match step {
                0 => path_len(&fresh, &target),
                1 => path_len(&fresh, &added),
                // a removal rewrites at most the shards it was on (fewer if one collapses)
                _ => path_len(&before, &target),
            };
            assert!(
                (1..=path).contains(&out.len()),
                "{} blocks for a path of {path}",
                out.len()
            );
            if step < 2 {
                assert_eq!(out.len(), path);
            }
            let have: HashSet<Cid> = before
                .blocks
                .iter()
                .map(|b| b.0)
                .chain(out.iter().map(|b| b.0))
                .collect();
            assert!(fresh.blocks.iter().all(|(c, _)| have.contains(c)));
            let what = ["replace", "add", "remove"][step];
            report += &format!("; {what}: {took:?}, {} blocks (path {path})", out.len());
        }
        // warm: the mean of many one-entry replaces
        let k = 500;
        let (mut blocks, mut bytes) = (0, 0);
        let t = Instant::now();
        for j in 0..k {
            let (cid, tsize) = f[j % f.len()];
            dir.insert(names[(j * 7919) % n].clone(), cid, tsize)
                .unwrap();
            let mut out = Vec::new();
            dir.build(profile, &mut out);
            blocks += out.len();
            bytes += out.iter().map(|b| b.1.len()).sum::<usize>();
        }
        report += &format!(
            "; mean of {k} replaces: {:?}, {:.2} blocks, {} bytes",
            t.elapsed() / k as u32,
            blocks as f64 / k as f64,
            bytes / k
        );
        println!("{report}");
    }

    #[test]
    fn threshold_crossed_both_ways() {
        let mut p = ImportProfile::unixfs_v0_2015();
        p.shard_threshold = Some(300);
        p.fanout = 8;
        let f = files(7, &p);
        let mut dir = DirBuilder::new();
        let mut model = BTreeMap::new();
        let mut emitted = HashMap::new();
        let mut forms = Vec::new();
        let mut deepest = 0;
        let order: Vec<usize> = (0..200).map(|i| (i * 37) % 200).collect();
        for &i in &order {
            let name = format!("n{i}").into_bytes();
            dir.insert(name.clone(), f[i % 7].0, f[i % 7].1).unwrap();
            model.insert(name, f[i % 7]);
            let (root, _) = check(&mut dir, &model, &p, &mut emitted);
            forms.push(root.sharded);
            deepest = deepest.max(dir.shard_depth);
        }
        for &i in order.iter().rev().step_by(3).chain(order.iter().step_by(3)) {
            let name = format!("n{i}").into_bytes();
            assert_eq!(dir.remove(&name), model.remove(&name).is_some());
            let (root, _) = check(&mut dir, &model, &p, &mut emitted);
            forms.push(root.sharded);
        }
        for name in model.keys().cloned().collect::<Vec<_>>() {
            dir.remove(&name);
            model.remove(&name);
            let (root, _) = check(&mut dir, &model, &p, &mut emitted);
            forms.push(root.sharded);
        }
        let switches = forms.windows(2).filter(|w| w[0] != w[1]).count();
        assert_eq!(switches, 2, "plain -> HAMT -> plain");
        assert!(deepest >= 3, "deepest shard {deepest}");
        assert!(dir.is_empty());
    }

    #[test]
    fn one_entry_change_in_20k_directory() {
        one_change(20_000, &ImportProfile::unixfs_v0_2015());
        one_change(20_000, &ImportProfile::unixfs_v1_2025());
    }

    #[test]
    fn one_entry_change_in_100k_directory() {
        one_change(100_000, &ImportProfile::unixfs_v0_2015());
        one_change(100_000, &ImportProfile::unixfs_v1_2025());
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// Names over a 3-letter alphabet (lengths 1..=3: 39 names, many shared buckets at
        /// small fanouts) or a larger generated set.
        fn names(small: bool) -> Vec<Vec<u8>> {
            if small {
                let mut v = Vec::new();
                for len in 1..=3u32 {
                    for i in 0..3usize.pow(len) {
                        let mut n = Vec::new();
                        let mut x = i;
                        for _ in 0..len {
                            n.push(b"abc"[x % 3]);
                            x /= 3;
                        }
                        v.push(n);
                    }
                }
                v
            } else {
                (0..400)
                    .map(|i| {
                        format!("{}-{i}", ["f", "Datei", "ファイル", "x.y"][i % 4]).into_bytes()
                    })
                    .collect()
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(96))]
            #[test]
            fn incremental_equals_from_scratch(
                small in any::<bool>(),
                v1 in any::<bool>(),
                fanout in prop::sample::select(vec![8u32, 16, 256]),
                block_bytes in any::<bool>(),
                at_threshold in any::<bool>(),
                // 0: always sharded (collapses all the way down to one entry)
                threshold in prop_oneof![1 => Just(0u64), 4 => 150u64..600],
                ops in proptest::collection::vec((0u8..10, any::<u16>(), 0usize..6, any::<bool>()), 1..240),
            ) {
                let mut p = if v1 {
                    ImportProfile::unixfs_v1_2025()
                } else {
                    ImportProfile::unixfs_v0_2015()
                };
                p.shard_threshold = Some(threshold);
                p.fanout = fanout;
                p.shard_estimate = if block_bytes {
                    ShardEstimate::BlockBytes
                } else {
                    ShardEstimate::LinksBytes
                };
                p.shard_at_threshold = at_threshold;
                let mut cids = files(5, &p);
                // Tsizes whose varints have other lengths
                cids.push((cids[0].0, 1 << 40));
                let names = names(small);
                let mut dir = DirBuilder::new();
                let mut model = BTreeMap::new();
                let mut emitted = HashMap::new();
                let half = ops.len() / 2;
                for (step, (kind, pick, c, build)) in ops.into_iter().enumerate() {
                    // grow, then shrink: the threshold is crossed both ways
                    let put_below = if step < half { 7 } else { 3 };
                    if kind < put_below {
                        let name = names[pick as usize % names.len()].clone();
                        dir.insert(name.clone(), cids[c].0, cids[c].1).unwrap();
                        model.insert(name, cids[c]);
                    } else if kind < 9 && !model.is_empty() {
                        let name = model.keys().nth(pick as usize % model.len()).unwrap().clone();
                        prop_assert!(dir.remove(&name));
                        model.remove(&name);
                    } else {
                        let name = &names[pick as usize % names.len()];
                        prop_assert_eq!(dir.remove(name), model.remove(name).is_some());
                    }
                    for (name, (cid, tsize)) in model.iter().take(3) {
                        prop_assert_eq!(dir.get(name), Some((*cid, *tsize)));
                    }
                    if build {
                        check(&mut dir, &model, &p, &mut emitted);
                    }
                }
                check(&mut dir, &model, &p, &mut emitted);
                prop_assert_eq!(dir.to_sorted_entries(), model_entries(&model));
            }
        }
    }
}
