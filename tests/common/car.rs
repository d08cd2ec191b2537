//! A tiny, independent UnixFS + CARv1 writer (raw leaves, one- and two-level files, plain directories), so mount tests can
//! make content of any size without the reference peers and without the code under test.

use sha2::Digest;

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}
fn field_varint(f: u64, v: u64, out: &mut Vec<u8>) {
    varint(f << 3, out);
    varint(v, out);
}
fn field_bytes(f: u64, b: &[u8], out: &mut Vec<u8>) {
    varint((f << 3) | 2, out);
    varint(b.len() as u64, out);
    out.extend_from_slice(b);
}

/// A block: CID bytes and data.
#[derive(Clone)]
pub struct Block {
    pub cid: cid::Cid,
    pub data: Vec<u8>,
}

fn cid_of(codec: u64, data: &[u8]) -> cid::Cid {
    let d = sha2::Sha256::digest(data);
    cid::Cid::new_v1(codec, multihash::Multihash::<64>::wrap(0x12, &d).unwrap())
}

/// A raw block (codec 0x55).
pub fn raw(data: &[u8]) -> Block {
    Block {
        cid: cid_of(0x55, data),
        data: data.to_vec(),
    }
}

/// A dag-pb node: links (cid, name, tsize), then the UnixFS Data. Fields in canonical order (Links, Data).
pub fn dagpb(links: &[(cid::Cid, &str, u64)], unixfs: &[u8]) -> Block {
    let mut out = Vec::new();
    for (c, name, tsize) in links {
        let mut l = Vec::new();
        field_bytes(1, &c.to_bytes(), &mut l);
        field_bytes(2, name.as_bytes(), &mut l);
        field_varint(3, *tsize, &mut l);
        field_bytes(2, &l, &mut out);
    }
    field_bytes(1, unixfs, &mut out);
    Block {
        cid: cid_of(0x70, &out),
        data: out,
    }
}

/// UnixFS Data for a file with these leaf sizes (no inline data).
fn unixfs_file(sizes: &[u64]) -> Vec<u8> {
    let mut d = Vec::new();
    field_varint(1, 2, &mut d);
    field_varint(3, sizes.iter().sum(), &mut d);
    for s in sizes {
        field_varint(4, *s, &mut d);
    }
    d
}

/// A file as raw leaves of `chunk` bytes under one dag-pb root (or a single raw block if it fits in one).
/// Returns the root first, then the leaves.
pub fn file(data: &[u8], chunk: usize) -> Vec<Block> {
    if data.len() <= chunk {
        return vec![raw(data)];
    }
    let leaves: Vec<Block> = data.chunks(chunk).map(raw).collect();
    let links: Vec<_> = leaves
        .iter()
        .map(|b| (b.cid, "", b.data.len() as u64))
        .collect();
    let sizes: Vec<u64> = leaves.iter().map(|b| b.data.len() as u64).collect();
    let root = dagpb(&links, &unixfs_file(&sizes));
    let mut v = vec![root];
    v.extend(leaves);
    v
}

/// A file as raw leaves of `chunk` bytes under interior nodes of `fanout` leaves each, under
/// one root: two levels of dag-pb, as Kubo's balanced layout makes for big files. Returns the
/// root first, then each interior node followed by its leaves (CAR order).
pub fn file_two_levels(data: &[u8], chunk: usize, fanout: usize) -> Vec<Block> {
    let mut groups = Vec::new();
    for part in data.chunks(chunk * fanout) {
        let leaves: Vec<Block> = part.chunks(chunk).map(raw).collect();
        let links: Vec<_> = leaves
            .iter()
            .map(|b| (b.cid, "", b.data.len() as u64))
            .collect();
        let sizes: Vec<u64> = leaves.iter().map(|b| b.data.len() as u64).collect();
        let node = dagpb(&links, &unixfs_file(&sizes));
        groups.push((node, leaves, part.len() as u64));
    }
    let links: Vec<_> = groups
        .iter()
        .map(|(n, l, _)| (n.cid, "", n.data.len() as u64 + tsize(l)))
        .collect();
    let sizes: Vec<u64> = groups.iter().map(|(_, _, len)| *len).collect();
    let mut out = vec![dagpb(&links, &unixfs_file(&sizes))];
    for (node, leaves, _) in groups {
        out.push(node);
        out.extend(leaves);
    }
    out
}

/// A plain UnixFS directory over (name, root block of the entry, total size of the entry's DAG).
pub fn directory(entries: &[(&str, cid::Cid, u64)]) -> Block {
    let mut sorted: Vec<_> = entries.to_vec();
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut d = Vec::new();
    field_varint(1, 1, &mut d);
    let links: Vec<_> = sorted.iter().map(|(n, c, t)| (*c, *n, *t)).collect();
    dagpb(&links, &d)
}

/// Total bytes of a DAG's blocks (for link Tsize).
pub fn tsize(blocks: &[Block]) -> u64 {
    blocks.iter().map(|b| b.data.len() as u64).sum()
}

/// A CARv1 with one root.
pub fn write(
    root: &cid::Cid,
    blocks: &[Block],
    out: &mut impl std::io::Write,
) -> std::io::Result<()> {
    // dag-cbor header {"roots": [CID], "version": 1}; keys in length-first order.
    let cb = root.to_bytes();
    let mut h = vec![0xa2, 0x65];
    h.extend_from_slice(b"roots");
    h.push(0x81);
    h.extend_from_slice(&[0xd8, 0x2a]);
    let n = cb.len() + 1;
    if n < 24 {
        h.push(0x40 | n as u8);
    } else {
        h.extend_from_slice(&[0x58, n as u8]);
    }
    h.push(0x00);
    h.extend_from_slice(&cb);
    h.push(0x67);
    h.extend_from_slice(b"version");
    h.push(0x01);
    let mut buf = Vec::new();
    varint(h.len() as u64, &mut buf);
    buf.extend_from_slice(&h);
    out.write_all(&buf)?;
    for b in blocks {
        let c = b.cid.to_bytes();
        let mut pre = Vec::new();
        varint((c.len() + b.data.len()) as u64, &mut pre);
        out.write_all(&pre)?;
        out.write_all(&c)?;
        out.write_all(&b.data)?;
    }
    Ok(())
}

/// Writes a directory of files (name, bytes) as a CAR at `path`; returns the root CID string.
pub fn write_dir_car(path: &std::path::Path, files: &[(&str, &[u8])], chunk: usize) -> String {
    let mut all = Vec::new();
    let mut entries = Vec::new();
    for (name, data) in files {
        let blocks = file(data, chunk);
        entries.push((*name, blocks[0].cid, tsize(&blocks)));
        all.extend(blocks);
    }
    let dir = directory(&entries);
    let root = dir.cid;
    all.insert(0, dir);
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    write(&root, &all, &mut f).unwrap();
    std::io::Write::flush(&mut f).unwrap();
    root.to_string()
}
