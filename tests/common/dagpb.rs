//! A minimal DAG-PB reader ([`dagpb_unixfs_type`], [`dagpb_links`]), to check that content the peers made has the
//! shape a test wants (e.g. a HAMT).

fn pb_varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Minimal protobuf walk: (field number, varint value or length-delimited bytes); stops at anything odd.
fn pb_fields(b: &[u8]) -> Vec<(u64, Result<u64, &[u8]>)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < b.len() {
        let Some(key) = pb_varint(b, &mut pos) else {
            break;
        };
        match key & 7 {
            0 => match pb_varint(b, &mut pos) {
                Some(v) => out.push((key >> 3, Ok(v))),
                None => break,
            },
            2 => {
                let Some(len) = pb_varint(b, &mut pos) else {
                    break;
                };
                let end = pos.saturating_add(len as usize);
                if end > b.len() {
                    break;
                }
                out.push((key >> 3, Err(&b[pos..end])));
                pos = end;
            }
            1 => pos += 8,
            5 => pos += 4,
            _ => break,
        }
    }
    out
}

/// The UnixFS `Type` of a dag-pb block (0 raw, 1 dir, 2 file, 3 metadata, 4 symlink, 5 HAMT shard) and its number
/// of links. Used to check that peer-made content really has the shape a test wants (e.g. a HAMT).
pub fn dagpb_unixfs_type(block: &[u8]) -> (Option<u64>, usize) {
    let top = pb_fields(block);
    let links = top.iter().filter(|(f, _)| *f == 2).count();
    let data = top
        .iter()
        .find_map(|(f, v)| if *f == 1 { v.err() } else { None });
    let ty = data.and_then(|d| {
        pb_fields(d)
            .into_iter()
            .find_map(|(f, v)| if f == 1 { v.ok() } else { None })
    });
    (ty, links)
}

/// The links of a dag-pb block: (name, CID string).
pub fn dagpb_links(block: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (f, v) in pb_fields(block) {
        let (2, Err(link)) = (f, v) else { continue };
        let mut name = String::new();
        let mut cid = String::new();
        for (lf, lv) in pb_fields(link) {
            match (lf, lv) {
                (1, Err(h)) => {
                    cid = cid::Cid::try_from(h)
                        .map(|c| c.to_string())
                        .unwrap_or_default()
                }
                (2, Err(n)) => name = String::from_utf8_lossy(n).into_owned(),
                _ => {}
            }
        }
        out.push((name, cid));
    }
    out
}
