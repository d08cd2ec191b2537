//! Checks of a mounted tree against its source: [`compare_trees`] (names, types, sizes, bytes, symlink targets),
//! [`cat_check`], [`ls_l_check`], [`cp_r_diff`], and [`getfattr_cid`].

use super::*;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

fn kind_of(m: &fs::Metadata) -> Kind {
    let t = m.file_type();
    if t.is_symlink() {
        Kind::Symlink
    } else if t.is_dir() {
        Kind::Dir
    } else if t.is_file() {
        Kind::File
    } else {
        Kind::Other
    }
}

/// Compares two files' bytes in 1 MiB pieces; Err names the first differing offset.
pub fn compare_file_bytes(a: &Path, b: &Path) -> Result<u64, String> {
    let mut fa = File::open(a).map_err(|e| format!("open {}: {e}", a.display()))?;
    let mut fb = File::open(b).map_err(|e| format!("open {}: {e}", b.display()))?;
    let mut ba = vec![0u8; 1 << 20];
    let mut bb = vec![0u8; 1 << 20];
    let mut off = 0u64;
    loop {
        let na = read_full(&mut fa, &mut ba)
            .map_err(|e| format!("read {} at {off}: {e}", a.display()))?;
        let nb = read_full(&mut fb, &mut bb)
            .map_err(|e| format!("read {} at {off}: {e}", b.display()))?;
        let n = na.min(nb);
        if ba[..n] != bb[..n] {
            let i = (0..n).find(|&i| ba[i] != bb[i]).unwrap();
            return Err(format!(
                "{}: content differs at byte {}",
                b.display(),
                off + i as u64
            ));
        }
        if na != nb {
            return Err(format!(
                "{}: length differs: {} vs {} bytes",
                b.display(),
                off + na as u64,
                off + nb as u64
            ));
        }
        if na == 0 {
            return Ok(off);
        }
        off += na as u64;
    }
}

/// Reads until the buffer is full or EOF.
pub fn read_full(f: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// How [`compare_trees`] treats source symlinks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Symlinks {
    /// The mount must show a symlink with the same target (Kubo keeps symlinks).
    Preserve,
    /// The importer followed them: compare the target's content (Helia).
    Follow,
}

/// Walks `src` and checks that `mounted` has exactly the same names, types, sizes, bytes and symlink targets.
/// Returns the number of entries checked; Err lists (up to 20) differences.
pub fn compare_trees(src: &Path, mounted: &Path, symlinks: Symlinks) -> Result<usize, String> {
    let mut errs = Vec::new();
    let mut count = 0usize;
    let mut stack = vec![PathBuf::new()];
    let meta = |p: &Path, follow: bool| {
        if follow {
            fs::metadata(p)
        } else {
            fs::symlink_metadata(p)
        }
    };
    while let Some(rel) = stack.pop() {
        if errs.len() >= 20 {
            break;
        }
        let s = src.join(&rel);
        let m = if rel.as_os_str().is_empty() {
            mounted.to_path_buf()
        } else {
            mounted.join(&rel)
        };
        count += 1;
        let sm = match meta(&s, symlinks == Symlinks::Follow) {
            Ok(x) => x,
            Err(e) => {
                errs.push(format!("source {}: {e}", s.display()));
                continue;
            }
        };
        let mm = match fs::symlink_metadata(&m) {
            Ok(x) => x,
            Err(e) => {
                errs.push(format!("{}: {e}", m.display()));
                continue;
            }
        };
        let (sk, mk) = (kind_of(&sm), kind_of(&mm));
        if sk != mk {
            errs.push(format!("{}: type {mk:?}, expected {sk:?}", m.display()));
            continue;
        }
        match sk {
            Kind::File => {
                if sm.len() != mm.len() {
                    errs.push(format!(
                        "{}: st_size {}, expected {}",
                        m.display(),
                        mm.len(),
                        sm.len()
                    ));
                    continue;
                }
                if let Err(e) = compare_file_bytes(&s, &m) {
                    errs.push(e);
                }
            }
            Kind::Symlink => {
                let (st, mt) = (fs::read_link(&s), fs::read_link(&m));
                match (st, mt) {
                    (Ok(a), Ok(b)) if a == b => {}
                    (a, b) => errs.push(format!("{}: readlink {b:?}, expected {a:?}", m.display())),
                }
            }
            Kind::Dir => {
                let names = |d: &Path| -> io::Result<BTreeSet<OsString>> {
                    fs::read_dir(d)?.map(|e| e.map(|e| e.file_name())).collect()
                };
                let sn = names(&s).unwrap();
                let mn = match names(&m) {
                    Ok(x) => x,
                    Err(e) => {
                        errs.push(format!("readdir {}: {e}", m.display()));
                        continue;
                    }
                };
                if sn != mn {
                    let missing: Vec<_> = sn.difference(&mn).take(5).collect();
                    let extra: Vec<_> = mn.difference(&sn).take(5).collect();
                    errs.push(format!(
                        "{}: {} entries, expected {}; missing {missing:?}, unexpected {extra:?}",
                        m.display(),
                        mn.len(),
                        sn.len()
                    ));
                }
                for n in sn.intersection(&mn) {
                    stack.push(rel.join(n));
                }
            }
            Kind::Other => errs.push(format!("{}: unexpected file type in source", s.display())),
        }
    }
    if errs.is_empty() {
        Ok(count)
    } else {
        Err(errs.join("\n"))
    }
}

/// `cat <file>` must succeed and print exactly the source's bytes.
pub fn cat_check(src: &Path, mounted: &Path) -> Result<(), String> {
    let out = run(Command::new("cat").arg(mounted));
    if !out.status.success() {
        return Err(format!(
            "cat {}: {}: {}",
            mounted.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let want = fs::read(src).unwrap();
    if out.stdout != want {
        return Err(format!(
            "cat {}: {} bytes, differs from the source ({} bytes)",
            mounted.display(),
            out.stdout.len(),
            want.len()
        ));
    }
    Ok(())
}

/// `(type char, size for regular files, name)` per entry of `ls -lA` output.
fn ls_entries(out: &str) -> BTreeMap<String, (char, Option<u64>)> {
    let mut m = BTreeMap::new();
    for line in out.lines() {
        if line.starts_with("total ") || line.is_empty() {
            continue;
        }
        // perms links uid gid size time name (--time-style=+T keeps the time one field wide); names may hold
        // runs of spaces, so split the first six fields by hand.
        let mut rest = line;
        let mut parts = Vec::new();
        for _ in 0..6 {
            rest = rest.trim_start_matches(' ');
            let end = rest.find(' ').unwrap_or(rest.len());
            parts.push(&rest[..end]);
            rest = &rest[end..];
        }
        parts.push(rest.strip_prefix(' ').unwrap_or(rest));
        let ty = parts[0].chars().next().unwrap_or('?');
        let size = if ty == '-' {
            parts[4].parse().ok()
        } else {
            None
        };
        let mut name = parts[6].to_string();
        if ty == 'l' {
            if let Some(i) = name.find(" -> ") {
                name.truncate(i);
            }
        }
        m.insert(name, (ty, size));
    }
    m
}

/// `ls -lA` of the mounted directory must succeed without complaints and show the same names, types and file sizes
/// as `ls -lA` of the source directory.
pub fn ls_l_check(src: &Path, mounted: &Path, symlinks: Symlinks) -> Result<(), String> {
    let ls = |d: &Path, deref: bool| {
        let mut c = Command::new("ls");
        c.args(["-lAn", "--quoting-style=literal", "--time-style=+T"])
            .env("LC_ALL", "C.UTF-8");
        if deref {
            c.arg("-L");
        }
        run(c.arg(d))
    };
    let so = ls(src, symlinks == Symlinks::Follow);
    let mo = ls(mounted, false);
    if !mo.status.success() || !mo.stderr.is_empty() {
        return Err(format!(
            "ls -l {}: {}: {}",
            mounted.display(),
            mo.status,
            String::from_utf8_lossy(&mo.stderr)
        ));
    }
    let se = ls_entries(&String::from_utf8_lossy(&so.stdout));
    let me = ls_entries(&String::from_utf8_lossy(&mo.stdout));
    if se != me {
        return Err(format!(
            "ls -l {} differs from the source:\n--- source:\n{}\n--- mount:\n{}",
            mounted.display(),
            String::from_utf8_lossy(&so.stdout),
            String::from_utf8_lossy(&mo.stdout)
        ));
    }
    Ok(())
}

/// `cp -r <mounted> <tmp>/copy` then `diff -r --no-dereference <src> <tmp>/copy` (symlinks are copied as symlinks;
/// with [`Symlinks::Follow`] the source is compared dereferenced).
pub fn cp_r_diff(src: &Path, mounted: &Path, symlinks: Symlinks) -> Result<(), String> {
    let tmp = tempdir("cp");
    let dst = tmp.path().join("copy");
    let out = run(Command::new("cp").arg("-r").arg(mounted).arg(&dst));
    if !out.status.success() {
        return Err(format!(
            "cp -r {}: {}: {}",
            mounted.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let mut diff = Command::new("diff");
    diff.arg("-r");
    if symlinks == Symlinks::Preserve {
        diff.arg("--no-dereference");
    }
    let out = run(diff.arg(src).arg(&dst));
    if !out.status.success() {
        let s = String::from_utf8_lossy(&out.stdout);
        let head: String = s.lines().take(30).collect::<Vec<_>>().join("\n");
        return Err(format!(
            "diff -r {} <copy of {}>: {}\n{head}\n{}",
            src.display(),
            mounted.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    // The copy keeps the read-only modes; make it removable for non-root users.
    let _ = run(Command::new("chmod").args(["-R", "u+w"]).arg(&dst));
    Ok(())
}

/// The `user.ipfs.cid` xattr through `getfattr` (the tool users run).
pub fn getfattr_cid(path: &Path) -> Result<String, String> {
    let out = run(Command::new("getfattr")
        .args(["--absolute-names", "--only-values", "-n", "user.ipfs.cid"])
        .arg(path));
    if !out.status.success() {
        return Err(format!(
            "getfattr -n user.ipfs.cid {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .trim_end_matches(['\n', '\0'])
        .to_string())
}
