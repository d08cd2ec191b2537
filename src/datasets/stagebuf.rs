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

    /// The ranges `(start, end, is_data)` covering `[0, len)`: holes of a sparse staging file
    /// (found with `SEEK_DATA`/`SEEK_HOLE`) and anything past its end read as zeros and need no
    /// reading or hashing byte by byte.
    pub fn extents(&self, len: u64) -> io::Result<Vec<(u64, u64, bool)>> {
        let mut out = Vec::new();
        let data_end = match self {
            StageBuf::Memory(v) => {
                let end = (v.len() as u64).min(len);
                if end > 0 {
                    out.push((0, end, true));
                }
                end
            }
            StageBuf::File(f) => {
                use std::os::fd::AsRawFd;
                let fd = f.as_raw_fd();
                let file_len = f.metadata()?.len().min(len);
                let mut pos = 0u64;
                while pos < file_len {
                    let data = unsafe { libc::lseek(fd, pos as libc::off_t, libc::SEEK_DATA) };
                    if data < 0 {
                        let e = io::Error::last_os_error();
                        if e.raw_os_error() == Some(libc::ENXIO) {
                            out.push((pos, file_len, false)); // only a hole up to the end
                            break;
                        }
                        // No SEEK_DATA on this filesystem: all data.
                        out.push((pos, file_len, true));
                        break;
                    }
                    let data = (data as u64).min(file_len);
                    if data > pos {
                        out.push((pos, data, false));
                    }
                    if data >= file_len {
                        break;
                    }
                    let hole = unsafe { libc::lseek(fd, data as libc::off_t, libc::SEEK_HOLE) };
                    let hole = if hole < 0 {
                        file_len
                    } else {
                        (hole as u64).min(file_len)
                    };
                    out.push((data, hole, true));
                    pos = hole;
                }
                file_len
            }
        };
        // Merge a trailing hole inside the file with the zeros past its end.
        let mut start = data_end;
        if let Some(&(s, e, false)) = out.last() {
            if e == data_end {
                out.pop();
                start = s;
            }
        }
        if len > start {
            out.push((start, len, false));
        }
        Ok(out)
    }

    /// Everything, from offset 0 to the end.
    #[cfg(test)]
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
        assert_eq!(b.extents(10).unwrap(), vec![(0, 3, true), (3, 10, false)]);
        assert_eq!(b.read_all().unwrap(), vec![0u8; 3]);
    }
}

#[cfg(test)]
mod extent_tests {
    use super::*;

    #[test]
    fn holes_of_a_sparse_file_are_found() {
        let f = tempfile::tempfile().unwrap();
        let mb = 1u64 << 20;
        f.write_all_at(b"x", 4 * mb).unwrap();
        f.write_all_at(b"y", 9 * mb + 5).unwrap();
        let b = StageBuf::File(f);
        let ext = b.extents(20 * mb).unwrap();
        // The extents tile [0, len) in order, and every byte written is inside a data extent.
        let mut pos = 0;
        for &(s, e, _) in &ext {
            assert_eq!(s, pos);
            assert!(e > s);
            pos = e;
        }
        assert_eq!(pos, 20 * mb);
        for off in [4 * mb, 9 * mb + 5] {
            assert!(
                ext.iter().any(|&(s, e, d)| d && s <= off && off < e),
                "{off} in {ext:?}"
            );
        }
        // tmpfs and ext4 report holes: most of the 20 MiB is not data.
        let data: u64 = ext.iter().filter(|x| x.2).map(|x| x.1 - x.0).sum();
        assert!(data < 20 * mb, "{ext:?}");
    }
}
