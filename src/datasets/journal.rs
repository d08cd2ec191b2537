//! The operation journal (intent log) of one dataset: every acknowledged change between two
//! commits, so that a `kill -9` (or, once fsynced, a power loss) loses nothing that a writer
//! was told is stored.
//!
//! ```text
//! <store>/datasets/<name>/JOURNAL:  record*
//! record = len: u32 LE | check: 8 bytes (SHA-256 of payload, first 8) | payload: dag-cbor Op
//! ```
//!
//! Records carry increasing sequence numbers that never restart; `HEAD` names the last record
//! its commit includes, so a replay after a crash between "HEAD written" and "journal trimmed"
//! skips what is already committed. Reading stops at the first record that is short or fails its
//! check (a write torn by the crash): such a record was never acknowledged, and the file is cut
//! there so later appends follow a valid prefix.
//!
//! Appends are plain `write(2)`s (in the page cache: they survive the death of this process);
//! an `fsync` of a dataset file makes them durable against power loss with one `syncfs` of the
//! store's filesystem (blocks, index and journal together).

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use cid::Cid;
use ipfs_mount_ipld::{cids, codec, mh};
use ipld_core::ipld::Ipld;

use super::commit::Meta;

/// One path inside a dataset, as its components.
pub type DsPath = Vec<Vec<u8>>;

/// What a closed entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafKind {
    File,
    Symlink,
}

/// One acknowledged change, applied to the closed tree in order (see `closed.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A file was closed or fsynced (or a symlink made) with this content. `temp` is the
    /// temporary pin that protects its blocks until a version pins them.
    Put {
        path: DsPath,
        kind: LeafKind,
        cid: Cid,
        size: u64,
        tsize: u64,
        temp: Option<u64>,
        /// A symlink's target (files: empty).
        target: Vec<u8>,
        /// The file's blocks themselves, when the seal left storing them to a background writer
        /// (small files): a replay stores them again, so a crash before that write loses nothing.
        inline: Vec<(Cid, Bytes)>,
    },
    Mkdir {
        path: DsPath,
    },
    /// unlink or rmdir (the replay removes whatever is there).
    Remove {
        path: DsPath,
    },
    /// rename, replacing whatever `to` held (also when `from` has no closed state yet).
    Rename {
        from: DsPath,
        to: DsPath,
    },
    /// `renameat2(RENAME_EXCHANGE)`: the entries at `a` and `b` swap places (either may be
    /// missing from the closed tree: a file never closed).
    Exchange {
        a: DsPath,
        b: DsPath,
    },
    /// chmod / utimens: kept beside the DAG (`attrs.rs`).
    Meta {
        path: DsPath,
        mode: u32,
        mtime: i64,
        /// Nanoseconds (0 in older records).
        nsec: u32,
    },
    /// An op, then the modes and mtimes of the entries it touched (the entry made, the
    /// directories whose entries changed), as the live tree had them: one record.
    Stamped {
        op: Box<Op>,
        stamps: Vec<(DsPath, Meta)>,
    },
}

fn path_ipld(p: &DsPath) -> Ipld {
    Ipld::List(p.iter().map(|c| Ipld::Bytes(c.clone())).collect())
}

fn ipld_path(v: Option<&Ipld>) -> io::Result<DsPath> {
    match v {
        Some(Ipld::List(l)) => l
            .iter()
            .map(|c| match c {
                Ipld::Bytes(b) => Ok(b.clone()),
                _ => Err(bad("path component is not bytes")),
            })
            .collect(),
        _ => Err(bad("record has no path")),
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

impl Op {
    fn to_ipld(&self, seq: u64) -> Ipld {
        if let Op::Stamped { op, stamps } = self {
            let Ipld::Map(mut m) = op.to_ipld(seq) else {
                unreachable!("a record is a map")
            };
            let list = stamps
                .iter()
                .map(|(p, meta)| {
                    Ipld::List(vec![
                        path_ipld(p),
                        Ipld::Integer(meta.mode as i128),
                        Ipld::Integer(meta.mtime as i128),
                        Ipld::Integer(meta.nsec as i128),
                    ])
                })
                .collect();
            m.insert("tm".to_string(), Ipld::List(list));
            return Ipld::Map(m);
        }
        let mut m = BTreeMap::new();
        m.insert("s".to_string(), Ipld::Integer(seq as i128));
        let op = match self {
            Op::Stamped { .. } => unreachable!("handled above"),
            Op::Put {
                path,
                kind,
                cid,
                size,
                tsize,
                temp,
                target,
                inline,
            } => {
                m.insert("p".into(), path_ipld(path));
                if !inline.is_empty() {
                    let blocks = inline
                        .iter()
                        .map(|(c, b)| Ipld::List(vec![Ipld::Link(*c), Ipld::Bytes(b.to_vec())]))
                        .collect();
                    m.insert("b".into(), Ipld::List(blocks));
                }
                m.insert("c".into(), Ipld::Link(*cid));
                m.insert("z".into(), Ipld::Integer(*size as i128));
                m.insert("ts".into(), Ipld::Integer(*tsize as i128));
                if let Some(t) = temp {
                    m.insert("tp".into(), Ipld::Integer(*t as i128));
                }
                if *kind == LeafKind::Symlink {
                    m.insert("l".into(), Ipld::Bytes(target.clone()));
                }
                "put"
            }
            Op::Mkdir { path } => {
                m.insert("p".into(), path_ipld(path));
                "mkdir"
            }
            Op::Remove { path } => {
                m.insert("p".into(), path_ipld(path));
                "rm"
            }
            Op::Rename { from, to } => {
                m.insert("p".into(), path_ipld(from));
                m.insert("to".into(), path_ipld(to));
                "mv"
            }
            Op::Exchange { a, b } => {
                m.insert("p".into(), path_ipld(a));
                m.insert("to".into(), path_ipld(b));
                "xchg"
            }
            Op::Meta {
                path,
                mode,
                mtime,
                nsec,
            } => {
                m.insert("p".into(), path_ipld(path));
                m.insert("m".into(), Ipld::Integer(*mode as i128));
                m.insert("mt".into(), Ipld::Integer(*mtime as i128));
                if *nsec != 0 {
                    m.insert("mn".into(), Ipld::Integer(*nsec as i128));
                }
                "meta"
            }
        };
        m.insert("o".to_string(), Ipld::String(op.to_string()));
        Ipld::Map(m)
    }

    fn from_ipld(v: Ipld) -> io::Result<(u64, Op)> {
        let Ipld::Map(m) = v else {
            return Err(bad("record is not a map"));
        };
        let int = |k: &str| match m.get(k) {
            Some(Ipld::Integer(i)) if *i >= 0 && *i <= u64::MAX as i128 => Ok(*i as u64),
            _ => Err(bad("record field missing")),
        };
        let seq = int("s")?;
        let op = match m.get("o") {
            Some(Ipld::String(s)) => s.as_str(),
            _ => return Err(bad("record has no op")),
        };
        let path = ipld_path(m.get("p"))?;
        let op = match op {
            "put" => {
                let cid = match m.get("c") {
                    Some(Ipld::Link(c)) => *c,
                    _ => return Err(bad("put without cid")),
                };
                let (kind, target) = match m.get("l") {
                    Some(Ipld::Bytes(t)) => (LeafKind::Symlink, t.clone()),
                    _ => (LeafKind::File, Vec::new()),
                };
                let inline = match m.get("b") {
                    None => Vec::new(),
                    Some(Ipld::List(l)) => l
                        .iter()
                        .map(|b| match b {
                            Ipld::List(pair) => match &pair[..] {
                                [Ipld::Link(c), Ipld::Bytes(b)] => {
                                    Ok((*c, Bytes::copy_from_slice(b)))
                                }
                                _ => Err(bad("bad inline block")),
                            },
                            _ => Err(bad("bad inline block")),
                        })
                        .collect::<io::Result<_>>()?,
                    Some(_) => return Err(bad("bad inline blocks")),
                };
                Op::Put {
                    path,
                    kind,
                    cid,
                    size: int("z")?,
                    tsize: int("ts")?,
                    temp: int("tp").ok(),
                    target,
                    inline,
                }
            }
            "mkdir" => Op::Mkdir { path },
            "rm" => Op::Remove { path },
            "mv" => Op::Rename {
                from: path,
                to: ipld_path(m.get("to"))?,
            },
            "xchg" => Op::Exchange {
                a: path,
                b: ipld_path(m.get("to"))?,
            },
            "meta" => Op::Meta {
                path,
                mode: int("m")? as u32,
                mtime: match m.get("mt") {
                    Some(Ipld::Integer(i)) => *i as i64,
                    _ => 0,
                },
                nsec: int("mn").unwrap_or(0).min(999_999_999) as u32,
            },
            _ => return Err(bad("unknown op")),
        };
        let op = match m.get("tm") {
            None => op,
            Some(Ipld::List(l)) => {
                let stamps = l
                    .iter()
                    .map(|t| match t {
                        Ipld::List(f) => match &f[..] {
                            [p, Ipld::Integer(mode), Ipld::Integer(secs), Ipld::Integer(nsec)] => {
                                Ok((
                                    ipld_path(Some(p))?,
                                    Meta {
                                        mode: u32::try_from(*mode).map_err(|_| bad("bad mode"))?,
                                        mtime: i64::try_from(*secs).map_err(|_| bad("bad time"))?,
                                        nsec: u32::try_from(*nsec)
                                            .ok()
                                            .filter(|n| *n < 1_000_000_000)
                                            .ok_or_else(|| bad("bad nanoseconds"))?,
                                    },
                                ))
                            }
                            _ => Err(bad("bad stamp")),
                        },
                        _ => Err(bad("bad stamp")),
                    })
                    .collect::<io::Result<Vec<_>>>()?;
                Op::Stamped {
                    op: Box::new(op),
                    stamps,
                }
            }
            Some(_) => return Err(bad("bad stamps")),
        };
        Ok((seq, op))
    }
}

fn check(payload: &[u8]) -> [u8; 8] {
    let c = cids::compute(cid::Version::V1, codec::RAW, mh::SHA2_256, payload)
        .expect("sha2-256 is supported");
    let mut out = [0u8; 8];
    out.copy_from_slice(&c.hash().digest()[..8]);
    out
}

fn frame(seq: u64, op: &Op) -> io::Result<Vec<u8>> {
    let payload = serde_ipld_dagcbor::to_vec(&op.to_ipld(seq)).map_err(io::Error::other)?;
    let mut out = Vec::with_capacity(12 + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&check(&payload));
    out.extend_from_slice(&payload);
    Ok(out)
}

/// The valid records of a journal's bytes, and the length of that valid prefix.
fn parse(bytes: &[u8]) -> (Vec<(u64, Op)>, usize) {
    let mut out = Vec::new();
    let mut pos = 0;
    while bytes.len() - pos >= 12 {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        let Some(payload) = bytes.get(pos + 12..pos + 12 + len) else {
            break;
        };
        if check(payload) != bytes[pos + 4..pos + 12] {
            break;
        }
        let Ok(v) = serde_ipld_dagcbor::from_slice::<Ipld>(payload) else {
            break;
        };
        let Ok(rec) = Op::from_ipld(v) else { break };
        out.push(rec);
        pos += 12 + len;
    }
    (out, pos)
}

/// Room kept allocated past the journal's end, so that records (an `rm` on a full disk among
/// them) can still be written when the disk has no free block left.
const PREALLOCATE: i64 = 1 << 20;

fn preallocate(file: &File) {
    use std::os::fd::AsRawFd;
    let Ok(len) = file.metadata().map(|m| m.len() as i64) else {
        return;
    };
    // SAFETY: fallocate on a descriptor we own; KEEP_SIZE leaves the file's length alone.
    unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_KEEP_SIZE,
            len,
            PREALLOCATE,
        );
    }
}

pub struct Journal {
    path: PathBuf,
    file: File,
    next_seq: u64,
    /// Records not yet known to be committed, for rewriting the file when a commit trims it.
    pending: VecDeque<(u64, Vec<u8>)>,
}

impl Journal {
    /// Opens (or creates) the journal; returns it and its valid records with `seq > after`.
    pub fn open(path: &Path, after: u64) -> io::Result<(Journal, Vec<(u64, Op)>)> {
        let mut bytes = Vec::new();
        match File::open(path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let (records, valid) = parse(&bytes);
        if valid < bytes.len() {
            tracing::warn!(
                journal = %path.display(),
                "dropping {} bytes of a torn record at the end of the journal (never acknowledged)",
                bytes.len() - valid
            );
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)?;
        file.set_len(valid as u64)?;
        let file = OpenOptions::new().append(true).open(path)?;
        preallocate(&file);
        let last = records.iter().map(|r| r.0).max().unwrap_or(0);
        let records: Vec<(u64, Op)> = records.into_iter().filter(|r| r.0 > after).collect();
        let mut pending = VecDeque::new();
        for (seq, op) in &records {
            pending.push_back((*seq, frame(*seq, op)?));
        }
        Ok((
            Journal {
                path: path.to_path_buf(),
                file,
                next_seq: last.max(after) + 1,
                pending,
            },
            records,
        ))
    }

    /// Appends one record; returns its sequence number. On error nothing was acknowledged.
    pub fn append(&mut self, op: &Op) -> io::Result<u64> {
        let seq = self.next_seq;
        let rec = frame(seq, op)?;
        if let Err(e) = self.file.write_all(&rec) {
            // A partial record may be on disk: cut it, so the next append starts clean.
            let keep: u64 = self.pending.iter().map(|p| p.1.len() as u64).sum();
            let _ = self.file.set_len(keep);
            return Err(e);
        }
        self.next_seq += 1;
        self.pending.push_back((seq, rec));
        if self.pending.len() % 4096 == 0 {
            preallocate(&self.file);
        }
        Ok(seq)
    }

    /// The sequence number of the last record appended (0 if none ever).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Forgets the records up to `committed` (they are in a version that HEAD names).
    pub fn trim(&mut self, committed: u64) -> io::Result<()> {
        while self.pending.front().is_some_and(|p| p.0 <= committed) {
            self.pending.pop_front();
        }
        if self.pending.is_empty() {
            self.file.set_len(0)?;
            preallocate(&self.file);
            return Ok(());
        }
        // Records written after the commit's snapshot stay: rewrite them into a new file.
        let tmp = self.path.with_extension("tmp");
        {
            let mut f = File::create(&tmp)?;
            for (_, rec) in &self.pending {
                f.write_all(rec)?;
            }
            f.sync_data()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        preallocate(&self.file);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cid(x: &[u8]) -> Cid {
        cids::compute(cid::Version::V1, codec::RAW, mh::SHA2_256, x).unwrap()
    }

    fn ops() -> Vec<Op> {
        vec![
            Op::Mkdir {
                path: vec![b"a".to_vec()],
            },
            Op::Put {
                path: vec![b"a".to_vec(), b"f\xff".to_vec()],
                kind: LeafKind::File,
                cid: cid(b"x"),
                size: 1,
                tsize: 1,
                temp: Some(7),
                target: Vec::new(),
                inline: vec![(cid(b"x"), Bytes::from_static(b"x"))],
            },
            Op::Put {
                path: vec![b"l".to_vec()],
                kind: LeafKind::Symlink,
                cid: cid(b"y"),
                size: 0,
                tsize: 9,
                temp: None,
                target: b"a/f".to_vec(),
                inline: Vec::new(),
            },
            Op::Rename {
                from: vec![b"a".to_vec()],
                to: vec![b"b".to_vec()],
            },
            Op::Exchange {
                a: vec![b"b".to_vec()],
                b: vec![b"d".to_vec(), b"e".to_vec()],
            },
            Op::Meta {
                path: vec![b"b".to_vec()],
                mode: 0o700,
                mtime: -5,
                nsec: 7,
            },
            Op::Stamped {
                op: Box::new(Op::Mkdir {
                    path: vec![b"s".to_vec()],
                }),
                stamps: vec![
                    (
                        vec![b"s".to_vec()],
                        Meta {
                            mode: 0o750,
                            mtime: -86_400,
                            nsec: 999_999_999,
                        },
                    ),
                    (
                        Vec::new(),
                        Meta {
                            mode: 0o755,
                            mtime: 1_700_000_000,
                            nsec: 1,
                        },
                    ),
                ],
            },
            Op::Remove {
                path: vec![b"l".to_vec()],
            },
        ]
    }

    #[test]
    fn records_round_trip_and_torn_tails_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("JOURNAL");
        let (mut j, recs) = Journal::open(&path, 0).unwrap();
        assert!(recs.is_empty());
        for op in ops() {
            j.append(&op).unwrap();
        }
        drop(j);
        let (_, recs) = Journal::open(&path, 0).unwrap();
        assert_eq!(recs.iter().map(|r| r.1.clone()).collect::<Vec<_>>(), ops());
        assert_eq!(
            recs.iter().map(|r| r.0).collect::<Vec<_>>(),
            (1..=ops().len() as u64).collect::<Vec<_>>()
        );
        // Every truncation point gives a valid prefix, never an error or a wrong record.
        let full = std::fs::read(&path).unwrap();
        for cut in 0..full.len() {
            std::fs::write(&path, &full[..cut]).unwrap();
            let (mut j, recs) = Journal::open(&path, 0).unwrap();
            assert!(recs.len() <= ops().len());
            assert_eq!(
                recs.iter().map(|r| r.1.clone()).collect::<Vec<_>>(),
                ops()[..recs.len()]
            );
            // Appends after a cut follow the valid prefix.
            j.append(&ops()[0]).unwrap();
            drop(j);
            let (_, again) = Journal::open(&path, 0).unwrap();
            assert_eq!(again.len(), recs.len() + 1);
        }
        // A flipped byte ends the valid prefix there.
        let mut bad = full.clone();
        bad[20] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        let (_, recs) = Journal::open(&path, 0).unwrap();
        assert!(recs.is_empty());
    }

    #[test]
    fn trim_keeps_later_records_and_numbers_continue() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("JOURNAL");
        let (mut j, _) = Journal::open(&path, 0).unwrap();
        for op in ops() {
            j.append(&op).unwrap();
        }
        let n = ops().len() as u64;
        j.trim(n - 2).unwrap();
        drop(j);
        let (mut j, recs) = Journal::open(&path, n - 2).unwrap();
        assert_eq!(recs.iter().map(|r| r.0).collect::<Vec<_>>(), vec![n - 1, n]);
        j.trim(n).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        assert_eq!(j.append(&ops()[0]).unwrap(), n + 1);
        drop(j);
        // After an empty journal the numbers continue from HEAD's.
        std::fs::write(&path, b"").unwrap();
        let (mut j, _) = Journal::open(&path, 9).unwrap();
        assert_eq!(j.append(&ops()[0]).unwrap(), 10);
    }
}
