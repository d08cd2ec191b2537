//! The bytes of a staged file: in memory while small, in an unlinked temporary file beyond.
//!
//! Most files written to datasets are small; keeping them in memory saves a file creation and
//! deletion per file, which on ext4 gets slow when many inodes were freed recently.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Staged bytes above this go to a temporary file.
pub const MEMORY_LIMIT: u64 = 1 << 20;

pub enum StageBuf {
    Memory(Vec<u8>),
    File(File),
}

impl StageBuf {
    pub fn new() -> Self {
        StageBuf::Memory(Vec::new())
    }

    /// Writes at `offset`, spilling to a file from `spill` when the data outgrows memory.
    pub fn write_all_at(
        &mut self,
        data: &[u8],
        offset: u64,
        spill: &dyn Fn() -> io::Result<File>,
    ) -> io::Result<()> {
        let end = offset + data.len() as u64;
        if let StageBuf::Memory(v) = self {
            if end <= MEMORY_LIMIT {
                if v.len() < end as usize {
                    v.resize(end as usize, 0);
                }
                v[offset as usize..end as usize].copy_from_slice(data);
                return Ok(());
            }
            let file = spill()?;
            file.write_all_at(v, 0)?;
            *self = StageBuf::File(file);
        }
        match self {
            StageBuf::File(f) => f.write_all_at(data, offset),
            StageBuf::Memory(_) => unreachable!("spilled above"),
        }
    }

    /// Reads up to `buf.len()` bytes at `offset`; fewer at the end.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        match self {
            StageBuf::Memory(v) => {
                let start = (offset as usize).min(v.len());
                let n = buf.len().min(v.len() - start);
                buf[..n].copy_from_slice(&v[start..start + n]);
                Ok(n)
            }
            StageBuf::File(f) => {
                let mut got = 0;
                while got < buf.len() {
                    let n = f.read_at(&mut buf[got..], offset + got as u64)?;
                    if n == 0 {
                        break;
                    }
                    got += n;
                }
                Ok(got)
            }
        }
    }

    pub fn set_len(&mut self, len: u64) -> io::Result<()> {
        match self {
            StageBuf::Memory(v) if len <= MEMORY_LIMIT => {
                v.resize(len as usize, 0);
                Ok(())
            }
            StageBuf::Memory(v) => {
                // Growing a small file past the limit: holes are cheap in a file, not in memory.
                v.truncate(len.min(v.len() as u64) as usize);
                Err(io::Error::other("grow past the memory limit needs a spill"))
            }
            StageBuf::File(f) => f.set_len(len),
        }
    }

    /// Truncates or extends to `len`, spilling first if needed.
    pub fn resize(&mut self, len: u64, spill: &dyn Fn() -> io::Result<File>) -> io::Result<()> {
        if let StageBuf::Memory(v) = self {
            if len > MEMORY_LIMIT {
                let file = spill()?;
                file.write_all_at(v, 0)?;
                *self = StageBuf::File(file);
            }
        }
        self.set_len(len)
    }

    /// An independent view of the current bytes, for hashing without the dataset's lock.
    pub fn snapshot(&self) -> io::Result<StageBuf> {
        Ok(match self {
            StageBuf::Memory(v) => StageBuf::Memory(v.clone()),
            StageBuf::File(f) => StageBuf::File(f.try_clone()?),
        })
    }

    /// Everything, from offset 0 to the end.
    pub fn read_all(&self) -> io::Result<Vec<u8>> {
        match self {
            StageBuf::Memory(v) => Ok(v.clone()),
            StageBuf::File(f) => {
                let len = f.metadata()?.len();
                let mut out = vec![0u8; len as usize];
                let n = self.read_at(&mut out, 0)?;
                out.truncate(n);
                let _ = f;
                Ok(out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spills_and_keeps_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spill");
        let spill = || {
            File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
        };
        let mut b = StageBuf::new();
        b.write_all_at(b"hello", 10, &spill).unwrap();
        let mut buf = [0u8; 15];
        assert_eq!(b.read_at(&mut buf, 0).unwrap(), 15);
        assert_eq!(&buf[10..], b"hello");
        assert_eq!(&buf[..10], &[0u8; 10]);
        b.write_all_at(&vec![7u8; 2 << 20], 5, &spill).unwrap();
        assert!(matches!(b, StageBuf::File(_)));
        let all = b.read_all().unwrap();
        assert_eq!(all.len(), 5 + (2 << 20));
        assert_eq!(&all[..5], &[0u8; 5]);
        assert!(all[5..].iter().all(|&x| x == 7));
        b.resize(3, &spill).unwrap();
        assert_eq!(b.read_all().unwrap(), vec![0u8; 3]);
    }
}
