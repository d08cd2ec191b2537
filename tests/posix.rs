//! POSIX answers inside a writable dataset (`<mnt>/datasets/<name>`, issue 9), checked with real syscalls on a
//! real mount: the errno of names longer than 255 bytes, directory and file times (nanoseconds, atime apart from
//! mtime, ctime), set-user-ID bits cleared by an unprivileged writer, descriptors that outlive the name of their
//! file, directory link counts, absurd truncates, `renameat2` (`RENAME_EXCHANGE`, `RENAME_NOREPLACE`) and
//! `mknod` of a regular file.
//!
//! Each test collects every wrong answer it sees and fails at the end with the whole list.

mod common;

use common::datasets::*;
use common::*;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn errno<T>(r: &std::io::Result<T>) -> Option<i32> {
    r.as_ref().err().map(|e| e.raw_os_error().unwrap_or(-1))
}

/// A libc call's result as an io::Result.
fn sys(r: libc::c_int) -> std::io::Result<()> {
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn expect(f: &mut Vec<String>, what: &str, r: std::io::Result<impl std::fmt::Debug>, want: i32) {
    match r {
        Ok(v) => f.push(format!(
            "{what}: succeeded ({v:?}), expected {}",
            errno_name(want)
        )),
        Err(e) if e.raw_os_error() == Some(want) => {}
        Err(e) => f.push(format!("{what}: {e}, expected {}", errno_name(want))),
    }
}

fn renameat2(from: &Path, to: &Path, flags: libc::c_uint) -> std::io::Result<()> {
    let (a, b) = (cpath(from), cpath(to));
    // SAFETY: valid NUL-terminated paths; AT_FDCWD for both directories.
    sys(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            flags,
        )
    })
}

fn mknod(p: &Path, mode: libc::mode_t) -> std::io::Result<()> {
    let c = cpath(p);
    // SAFETY: a valid path.
    sys(unsafe { libc::mknod(c.as_ptr(), mode, 0) })
}

/// utimensat with raw timespecs (so UTIME_NOW and UTIME_OMIT can be given).
fn utimensat(p: &Path, atime: libc::timespec, mtime: libc::timespec) -> std::io::Result<()> {
    let c = cpath(p);
    let ts = [atime, mtime];
    // SAFETY: a valid path and two timespecs.
    sys(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), 0) })
}

fn ts(sec: i64, nsec: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    }
}

/// (mtime, ctime) of a path in nanoseconds.
fn mc(p: &Path) -> (i128, i128) {
    let m = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
    (
        m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
        m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
    )
}

/// Lets the clock move past the last change (times have nanoseconds, the clock may be coarse).
fn tick() {
    std::thread::sleep(Duration::from_millis(20));
}

#[test]
fn names_longer_than_255_bytes_are_enametoolong() {
    let test = "names_longer_than_255_bytes_are_enametoolong";
    if !require_fuse(test) {
        return;
    }
    let m = ds_mount();
    let d = mkds(&m, "names");
    let mut f = Vec::new();
    fs::write(d.join("f"), b"x").unwrap_or_else(|e| m.fail(&format!("write f: {e}")));
    fs::create_dir(d.join("sub")).unwrap_or_else(|e| m.fail(&format!("mkdir sub: {e}")));
    let ok = "a".repeat(255);
    for long in ["b".repeat(256), "c".repeat(300), "d".repeat(1000)] {
        let p = d.join(&long);
        let n = long.len();
        expect(
            &mut f,
            &format!("stat {n}"),
            fs::metadata(&p),
            libc::ENAMETOOLONG,
        );
        expect(
            &mut f,
            &format!("lstat sub/{n}"),
            fs::symlink_metadata(d.join("sub").join(&long)),
            libc::ENAMETOOLONG,
        );
        expect(
            &mut f,
            &format!("create {n}"),
            File::create(&p),
            libc::ENAMETOOLONG,
        );
        expect(
            &mut f,
            &format!("open O_CREAT|O_EXCL {n}"),
            OpenOptions::new().write(true).create_new(true).open(&p),
            libc::ENAMETOOLONG,
        );
        expect(
            &mut f,
            &format!("mkdir {n}"),
            fs::create_dir(&p),
            libc::ENAMETOOLONG,
        );
        expect(
            &mut f,
            &format!("symlink {n}"),
            std::os::unix::fs::symlink("f", &p),
            libc::ENAMETOOLONG,
        );
        expect(
            &mut f,
            &format!("rename f -> {n}"),
            fs::rename(d.join("f"), &p),
            libc::ENAMETOOLONG,
        );
        expect(
            &mut f,
            &format!("rename {n} -> g"),
            fs::rename(&p, d.join("g")),
            libc::ENAMETOOLONG,
        );
        expect(
            &mut f,
            &format!("renameat2 NOREPLACE f -> {n}"),
            renameat2(&d.join("f"), &p, libc::RENAME_NOREPLACE),
            libc::ENAMETOOLONG,
        );
        expect(
            &mut f,
            &format!("mknod S_IFREG {n}"),
            mknod(&p, libc::S_IFREG | 0o644),
            libc::ENAMETOOLONG,
        );
        expect(
            &mut f,
            &format!("unlink {n}"),
            fs::remove_file(&p),
            libc::ENAMETOOLONG,
        );
        expect(
            &mut f,
            &format!("rmdir {n}"),
            fs::remove_dir(&p),
            libc::ENAMETOOLONG,
        );
        let c = cpath(&p);
        let name = CString::new("user.x").unwrap();
        // SAFETY: valid strings and a one-byte value.
        let r =
            sys(unsafe { libc::lsetxattr(c.as_ptr(), name.as_ptr(), b"v".as_ptr().cast(), 1, 0) });
        expect(&mut f, &format!("lsetxattr {n}"), r, libc::ENAMETOOLONG);
        expect(
            &mut f,
            &format!("mkdir datasets/{n}"),
            fs::create_dir(m.mnt.join("datasets").join(&long)),
            libc::ENAMETOOLONG,
        );
    }
    // 255 bytes is a valid name.
    if let Err(e) = fs::write(d.join(&ok), b"ok") {
        f.push(format!("create a 255-byte name: {e}"));
    }
    match fs::read(d.join(&ok)) {
        Ok(b) if b == b"ok" => {}
        other => f.push(format!("read a 255-byte name: {other:?}")),
    }
    if fs::metadata(d.join("f")).is_err() {
        f.push("f is gone after refused renames".into());
    }
    finish(&m, test, &f);
}

#[test]
fn directory_and_file_times() {
    let test = "directory_and_file_times";
    if !require_fuse(test) {
        return;
    }
    let m = ds_mount();
    let d = mkds(&m, "times");
    let mut f = Vec::new();
    fs::create_dir(d.join("a")).unwrap_or_else(|e| m.fail(&format!("mkdir a: {e}")));
    fs::create_dir(d.join("b")).unwrap_or_else(|e| m.fail(&format!("mkdir b: {e}")));
    fs::write(d.join("a/keep"), b"k").unwrap_or_else(|e| m.fail(&format!("write a/keep: {e}")));

    // Every change of a directory's entries moves its mtime and ctime forward.
    let mut check_dirs =
        |what: &str, dirs: &[&Path], op: &mut dyn FnMut() -> std::io::Result<()>| {
            let before: Vec<(i128, i128)> = dirs.iter().map(|p| mc(p)).collect();
            tick();
            if let Err(e) = op() {
                f.push(format!("{what}: {e}"));
                return;
            }
            for (p, (m0, c0)) in dirs.iter().zip(before) {
                let (m1, c1) = mc(p);
                if m1 <= m0 || c1 <= c0 {
                    f.push(format!(
                        "{what}: {} mtime {m0} -> {m1}, ctime {c0} -> {c1}: not updated",
                        p.display()
                    ));
                }
            }
        };
    let a = d.join("a");
    let b = d.join("b");
    check_dirs("create a/f", &[&a], &mut || fs::write(a.join("f"), b"1"));
    check_dirs("mkdir a/sub", &[&a], &mut || fs::create_dir(a.join("sub")));
    check_dirs("symlink a/l", &[&a], &mut || {
        std::os::unix::fs::symlink("f", a.join("l"))
    });
    check_dirs("mknod a/n", &[&a], &mut || {
        mknod(&a.join("n"), libc::S_IFREG | 0o600)
    });
    check_dirs("unlink a/l", &[&a], &mut || fs::remove_file(a.join("l")));
    check_dirs("rmdir a/sub", &[&a], &mut || fs::remove_dir(a.join("sub")));
    check_dirs("rename a/f -> b/f", &[&a, &b], &mut || {
        fs::rename(a.join("f"), b.join("f"))
    });
    check_dirs("rename within b", &[&b], &mut || {
        fs::rename(b.join("f"), b.join("g"))
    });
    check_dirs("rename exchange a/keep <-> b/g", &[&a, &b], &mut || {
        renameat2(&a.join("keep"), &b.join("g"), libc::RENAME_EXCHANGE)
    });
    check_dirs("mkdir at the dataset's root", &[&d], &mut || {
        fs::create_dir(d.join("c"))
    });

    // chmod changes the ctime, not the mtime.
    let p = d.join("b/g");
    let (m0, c0) = mc(&p);
    tick();
    match fs::set_permissions(&p, fs::Permissions::from_mode(0o600)) {
        Ok(()) => {
            let (m1, c1) = mc(&p);
            if c1 <= c0 {
                f.push(format!("chmod: ctime {c0} -> {c1}, not updated"));
            }
            if m1 != m0 {
                f.push(format!("chmod: mtime {m0} -> {m1}, changed"));
            }
        }
        Err(e) => f.push(format!("chmod b/g: {e}")),
    }
    // A write moves mtime and ctime.
    let (m0, c0) = mc(&p);
    tick();
    match OpenOptions::new()
        .append(true)
        .open(&p)
        .and_then(|mut h| h.write_all(b"more"))
    {
        Ok(()) => {
            let (m1, c1) = mc(&p);
            if m1 <= m0 || c1 <= c0 {
                f.push(format!("write: mtime {m0} -> {m1}, ctime {c0} -> {c1}"));
            }
        }
        Err(e) => f.push(format!("append b/g: {e}")),
    }

    // utimensat keeps atime and mtime apart, with nanoseconds, and honours UTIME_OMIT / UTIME_NOW.
    let stat = |p: &Path| fs::symlink_metadata(p).unwrap();
    let r = utimensat(
        &p,
        ts(1_000_000_001, 123_456_789),
        ts(1_500_000_002, 987_654_321),
    );
    match r {
        Ok(()) => {
            let s = stat(&p);
            let got = (s.atime(), s.atime_nsec(), s.mtime(), s.mtime_nsec());
            if got != (1_000_000_001, 123_456_789, 1_500_000_002, 987_654_321) {
                f.push(format!("utimensat(a, m): atime/mtime {got:?}"));
            }
        }
        Err(e) => f.push(format!("utimensat: {e}")),
    }
    let c0 = mc(&p).1;
    tick();
    match utimensat(&p, ts(0, libc::UTIME_OMIT), ts(1_600_000_000, 5)) {
        Ok(()) => {
            let s = stat(&p);
            if (s.atime(), s.atime_nsec()) != (1_000_000_001, 123_456_789) {
                f.push(format!(
                    "utimensat(OMIT, m): atime became {}.{:09}",
                    s.atime(),
                    s.atime_nsec()
                ));
            }
            if (s.mtime(), s.mtime_nsec()) != (1_600_000_000, 5) {
                f.push(format!(
                    "utimensat(OMIT, m): mtime {}.{:09}",
                    s.mtime(),
                    s.mtime_nsec()
                ));
            }
            if mc(&p).1 <= c0 {
                f.push("utimensat: ctime not updated".into());
            }
        }
        Err(e) => f.push(format!("utimensat OMIT: {e}")),
    }
    match utimensat(&p, ts(0, libc::UTIME_NOW), ts(0, libc::UTIME_OMIT)) {
        Ok(()) => {
            let s = stat(&p);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64;
            if (s.atime() - now).abs() > 5 {
                f.push(format!(
                    "utimensat(NOW, OMIT): atime {} (now {now})",
                    s.atime()
                ));
            }
            if (s.mtime(), s.mtime_nsec()) != (1_600_000_000, 5) {
                f.push(format!(
                    "utimensat(NOW, OMIT): mtime became {}.{:09}",
                    s.mtime(),
                    s.mtime_nsec()
                ));
            }
        }
        Err(e) => f.push(format!("utimensat NOW: {e}")),
    }
    match utimensat(&p, ts(-1_000, 0), ts(-86_400 * 365, 250_000_000)) {
        Ok(()) => {
            let s = stat(&p);
            if (s.mtime(), s.mtime_nsec()) != (-86_400 * 365, 250_000_000) {
                f.push(format!(
                    "negative mtime: {}.{:09}",
                    s.mtime(),
                    s.mtime_nsec()
                ));
            }
        }
        Err(e) => f.push(format!("utimensat negative: {e}")),
    }
    finish(&m, test, &f);
}

/// Runs `sh -c script file` as user and group 65534 (nobody); Err carries the reason.
fn as_nobody(script: &str, file: &Path) -> Result<(), String> {
    let out = Command::new("sh")
        .args(["-c", script, "sh"])
        .arg(file)
        .uid(65534)
        .gid(65534)
        .output()
        .map_err(|e| format!("spawn sh as nobody: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "sh -c {script:?} as nobody: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[test]
fn set_id_bits_are_cleared_by_unprivileged_writes() {
    let test = "set_id_bits_are_cleared_by_unprivileged_writes";
    if !require_fuse(test) {
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        skip_or_fail(test, "needs root to run a writer as another user");
        return;
    }
    let m = Mount::start(&["--offline", "--allow-other"]);
    let d = mkds(&m, "suid");
    let mut f = Vec::new();
    // nobody must reach the files: every directory above them searchable.
    let mut up = m.mnt.parent().map(Path::to_path_buf);
    while let Some(dir) = up {
        let mode = fs::metadata(&dir).map(|s| s.mode()).unwrap_or(0);
        if mode & 0o001 == 0 {
            let _ = fs::set_permissions(&dir, fs::Permissions::from_mode((mode & 0o7777) | 0o011));
        }
        up = dir.parent().map(Path::to_path_buf);
    }
    let cases: [(&str, &str); 4] = [
        ("write", "printf x >> \"$1\""),
        (
            "pwrite",
            "printf x | dd of=\"$1\" bs=1 seek=3 conv=notrunc status=none",
        ),
        ("open O_TRUNC", ": > \"$1\""),
        ("truncate(2)", "truncate -s 1 \"$1\""),
    ];
    for (i, (what, script)) in cases.iter().enumerate() {
        let p = d.join(format!("f{i}"));
        if let Err(e) = fs::write(&p, b"content") {
            f.push(format!("write f{i}: {e}"));
            continue;
        }
        if let Err(e) = fs::set_permissions(&p, fs::Permissions::from_mode(0o6777)) {
            f.push(format!("chmod 6777 f{i}: {e}"));
            continue;
        }
        if let Err(e) = as_nobody(script, &p) {
            f.push(format!("{what}: {e}"));
            continue;
        }
        match fs::metadata(&p) {
            Ok(s) if s.mode() & 0o6000 != 0 => f.push(format!(
                "{what} by nobody: mode {:o} keeps set-id bits",
                s.mode() & 0o7777
            )),
            Ok(s) if s.mode() & 0o777 != 0o777 => f.push(format!(
                "{what} by nobody: mode {:o}, lost permission bits",
                s.mode() & 0o7777
            )),
            Ok(_) => {}
            Err(e) => f.push(format!("stat f{i}: {e}")),
        }
    }
    // The owner with CAP_FSETID (root) keeps them.
    let p = d.join("root");
    let r = fs::write(&p, b"x")
        .and_then(|()| fs::set_permissions(&p, fs::Permissions::from_mode(0o6755)))
        .and_then(|()| OpenOptions::new().append(true).open(&p)?.write_all(b"y"));
    match r.and_then(|()| fs::metadata(&p)) {
        Ok(s) if s.mode() & 0o7777 != 0o6755 => f.push(format!(
            "write by root: mode {:o}, expected 6755",
            s.mode() & 0o7777
        )),
        Ok(_) => {}
        Err(e) => f.push(format!("root's write: {e}")),
    }
    finish(&m, test, &f);
}

#[test]
fn open_descriptors_outlive_unlink_and_rename_over() {
    let test = "open_descriptors_outlive_unlink_and_rename_over";
    if !require_fuse(test) {
        return;
    }
    let m = ds_mount();
    let d = mkds(&m, "fds");
    let mut f = Vec::new();
    let old: Vec<u8> = random_bytes(300_000, 1);
    let new: Vec<u8> = random_bytes(200_000, 2);
    let pread_all = |h: &File, len: usize| -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        h.read_exact_at(&mut buf, 0)?;
        Ok(buf)
    };

    // Unlink, reader.
    fs::write(d.join("u"), &old).unwrap_or_else(|e| m.fail(&format!("write u: {e}")));
    let h = File::open(d.join("u")).unwrap_or_else(|e| m.fail(&format!("open u: {e}")));
    fs::remove_file(d.join("u")).unwrap_or_else(|e| m.fail(&format!("unlink u: {e}")));
    match h.metadata() {
        Ok(s) if s.len() != old.len() as u64 || s.nlink() != 0 => f.push(format!(
            "fstat after unlink: size {} nlink {} (want {} and 0)",
            s.len(),
            s.nlink(),
            old.len()
        )),
        Ok(_) => {}
        Err(e) => f.push(format!("fstat after unlink: {e}")),
    }
    // A commit in between must not take the content away.
    let _ = xattr(&d, "user.ipfs.cid", 120);
    match pread_all(&h, old.len()) {
        Ok(b) if b == old => {}
        Ok(_) => f.push("pread after unlink: other bytes".into()),
        Err(e) => f.push(format!("pread after unlink: {e}")),
    }
    drop(h);

    // Rename over: a reader of the old `t` keeps reading the old bytes (write-temp-then-rename).
    fs::write(d.join("t"), &old).unwrap_or_else(|e| m.fail(&format!("write t: {e}")));
    let _ = xattr(&d, "user.ipfs.cid", 120); // `t` committed, as a published file would be
    let h = File::open(d.join("t")).unwrap_or_else(|e| m.fail(&format!("open t: {e}")));
    fs::write(d.join(".t.tmp"), &new).unwrap_or_else(|e| m.fail(&format!("write .t.tmp: {e}")));
    fs::rename(d.join(".t.tmp"), d.join("t")).unwrap_or_else(|e| m.fail(&format!("rename: {e}")));
    let _ = xattr(&d, "user.ipfs.cid", 120);
    match h.metadata() {
        Ok(s) if s.len() != old.len() as u64 => {
            f.push(format!("fstat after rename over: size {}", s.len()))
        }
        Ok(_) => {}
        Err(e) => f.push(format!("fstat after rename over: {e}")),
    }
    match pread_all(&h, old.len()) {
        Ok(b) if b == old => {}
        Ok(_) => f.push("pread after rename over: other bytes".into()),
        Err(e) => f.push(format!("pread after rename over: {e}")),
    }
    match fs::read(d.join("t")) {
        Ok(b) if b == new => {}
        Ok(_) => f.push("t after rename over: not the new bytes".into()),
        Err(e) => f.push(format!("read t: {e}")),
    }
    drop(h);

    // A writer keeps writing to its unlinked file; nothing of it reaches a version.
    let mut w = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(d.join("w"))
        .unwrap_or_else(|e| m.fail(&format!("open w: {e}")));
    let _ = w.write_all(b"first ");
    fs::remove_file(d.join("w")).unwrap_or_else(|e| m.fail(&format!("unlink w: {e}")));
    if let Err(e) = w.write_all(b"second") {
        f.push(format!("write after unlink: {e}"));
    }
    if let Err(e) = w.sync_all() {
        f.push(format!("fsync after unlink: {e}"));
    }
    match pread_all(&w, 12) {
        Ok(b) if b == b"first second" => {}
        other => f.push(format!("pread of the unlinked writer: {other:?}")),
    }
    drop(w);
    let root = xattr(&d, "user.ipfs.cid", 120).unwrap_or_else(|e| m.fail(&e));
    match fs::read_dir(m.ipfs(&root)) {
        Ok(rd) => {
            let mut names: Vec<String> = rd
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            if names != ["t"] {
                f.push(format!("the version holds {names:?}, expected [t]"));
            }
        }
        Err(e) => f.push(format!("list the version: {e}")),
    }
    finish(&m, test, &f);
}

#[test]
fn directory_link_counts() {
    let test = "directory_link_counts";
    if !require_fuse(test) {
        return;
    }
    let mut m = ds_mount();
    let d = mkds(&m, "links");
    let mut f = Vec::new();
    let nlink = |p: &Path| fs::symlink_metadata(p).map(|s| s.nlink()).unwrap_or(0);
    for sub in ["a", "a/x", "a/y", "a/z", "b"] {
        fs::create_dir(d.join(sub)).unwrap_or_else(|e| m.fail(&format!("mkdir {sub}: {e}")));
    }
    fs::write(d.join("a/file"), b"f").unwrap_or_else(|e| m.fail(&format!("write: {e}")));
    let want = |f: &mut Vec<String>, p: &str, n: u64, when: &str| {
        let got = nlink(&d.join(p));
        if got != n {
            f.push(format!("{when}: nlink of {p:?} is {got}, expected {n}"));
        }
    };
    want(&mut f, "", 4, "made");
    want(&mut f, "a", 5, "made");
    want(&mut f, "a/x", 2, "made");
    want(&mut f, "a/file", 1, "made");
    let _ = fs::remove_dir(d.join("a/z"));
    want(&mut f, "a", 4, "after rmdir a/z");
    let _ = fs::rename(d.join("a/y"), d.join("b/y"));
    want(&mut f, "a", 3, "after rename a/y -> b/y");
    want(&mut f, "b", 3, "after rename a/y -> b/y");
    let _ = renameat2(&d.join("a/file"), &d.join("b/y"), libc::RENAME_EXCHANGE);
    // a/file becomes the directory y, b/y the file.
    want(&mut f, "a", 4, "after exchange a/file <-> b/y");
    want(&mut f, "b", 2, "after exchange a/file <-> b/y");
    let _ = xattr(&d, "user.ipfs.cid", 120);
    m.restart();
    want(&mut f, "", 4, "after remount");
    want(&mut f, "a", 4, "after remount");
    want(&mut f, "b", 2, "after remount");
    finish(&m, test, &f);
}

#[test]
fn absurd_truncates_are_efbig_or_einval() {
    let test = "absurd_truncates_are_efbig_or_einval";
    if !require_fuse(test) {
        return;
    }
    let m = ds_mount();
    let d = mkds(&m, "trunc");
    let mut f = Vec::new();
    let p = d.join("f");
    fs::write(&p, b"data").unwrap_or_else(|e| m.fail(&format!("write f: {e}")));
    let h = OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap_or_else(|e| m.fail(&format!("open f: {e}")));
    for len in [i64::MAX, i64::MAX - 4095, 1 << 62, (1 << 50) + 1] {
        // SAFETY: a valid descriptor.
        let r = sys(unsafe { libc::ftruncate(h.as_raw_fd(), len) });
        expect(&mut f, &format!("ftruncate {len}"), r, libc::EFBIG);
        let c = cpath(&p);
        // SAFETY: a valid path.
        let r = sys(unsafe { libc::truncate(c.as_ptr(), len) });
        expect(&mut f, &format!("truncate {len}"), r, libc::EFBIG);
    }
    // SAFETY: a valid descriptor.
    let r = sys(unsafe { libc::ftruncate(h.as_raw_fd(), -1) });
    expect(&mut f, "ftruncate -1", r, libc::EINVAL);
    // A write past the largest size.
    let r = h.write_at(b"x", 1 << 51);
    if errno(&r) != Some(libc::EFBIG) {
        f.push(format!("pwrite at 2^51: {r:?}, expected EFBIG"));
    }
    // Big sparse sizes within it still work, and the file is unchanged by the refusals.
    // SAFETY: a valid descriptor.
    if let Err(e) = sys(unsafe { libc::ftruncate(h.as_raw_fd(), 1 << 40) }) {
        f.push(format!("ftruncate 1 TiB: {e}"));
    }
    drop(h);
    match fs::metadata(&p) {
        Ok(s) if s.len() != 1 << 40 => f.push(format!("size {} after truncate to 1 TiB", s.len())),
        Ok(_) => {}
        Err(e) => f.push(format!("stat: {e}")),
    }
    match pread(&p, 0, 4) {
        Ok(b) if b == b"data" => {}
        other => f.push(format!("first bytes after the truncates: {other:?}")),
    }
    finish(&m, test, &f);
}

#[test]
fn rename_exchange_noreplace_and_mknod() {
    let test = "rename_exchange_noreplace_and_mknod";
    if !require_fuse(test) {
        return;
    }
    let mut m = ds_mount();
    let d = mkds(&m, "swap");
    let mut f = Vec::new();
    fs::write(d.join("a"), b"A").unwrap_or_else(|e| m.fail(&format!("write a: {e}")));
    fs::write(d.join("b"), b"B").unwrap_or_else(|e| m.fail(&format!("write b: {e}")));
    fs::create_dir(d.join("dir")).unwrap_or_else(|e| m.fail(&format!("mkdir dir: {e}")));
    fs::write(d.join("dir/in"), b"I").unwrap_or_else(|e| m.fail(&format!("write dir/in: {e}")));

    if let Err(e) = renameat2(&d.join("a"), &d.join("b"), libc::RENAME_EXCHANGE) {
        f.push(format!("RENAME_EXCHANGE a <-> b: {e}"));
    }
    // A directory and a file, across directories.
    if let Err(e) = renameat2(&d.join("dir"), &d.join("a"), libc::RENAME_EXCHANGE) {
        f.push(format!("RENAME_EXCHANGE dir <-> a: {e}"));
    }
    expect(
        &mut f,
        "RENAME_EXCHANGE with a missing name",
        renameat2(&d.join("a"), &d.join("missing"), libc::RENAME_EXCHANGE),
        libc::ENOENT,
    );
    expect(
        &mut f,
        "RENAME_EXCHANGE of a directory with its own child",
        renameat2(&d.join("a"), &d.join("a/in"), libc::RENAME_EXCHANGE),
        libc::EINVAL,
    );
    expect(
        &mut f,
        "RENAME_NOREPLACE onto b",
        renameat2(&d.join("dir"), &d.join("b"), libc::RENAME_NOREPLACE),
        libc::EEXIST,
    );
    if let Err(e) = renameat2(&d.join("b"), &d.join("c"), libc::RENAME_NOREPLACE) {
        f.push(format!("RENAME_NOREPLACE b -> c (free): {e}"));
    }
    // mknod of a regular file is a create; other types stay refused.
    match mknod(&d.join("n"), libc::S_IFREG | 0o640) {
        Ok(()) => match fs::metadata(d.join("n")) {
            Ok(s) if !s.is_file() || s.len() != 0 || s.mode() & 0o777 != 0o640 => f.push(format!(
                "mknod S_IFREG: file {} size {} mode {:o}",
                s.is_file(),
                s.len(),
                s.mode() & 0o7777
            )),
            Ok(_) => {}
            Err(e) => f.push(format!("stat n: {e}")),
        },
        Err(e) => f.push(format!("mknod S_IFREG: {e}")),
    }
    expect(
        &mut f,
        "mknod S_IFIFO",
        mknod(&d.join("p"), libc::S_IFIFO | 0o644),
        libc::EOPNOTSUPP,
    );
    expect(
        &mut f,
        "mknod S_IFREG over n",
        mknod(&d.join("n"), libc::S_IFREG | 0o644),
        libc::EEXIST,
    );

    let check = |f: &mut Vec<String>, when: &str| {
        let expect_file = |f: &mut Vec<String>, p: &str, want: &[u8]| match fs::read(d.join(p)) {
            Ok(b) if b == want => {}
            other => f.push(format!("{when}: {p} reads {other:?}, expected {want:?}")),
        };
        expect_file(f, "a/in", b"I");
        expect_file(f, "dir", b"B");
        expect_file(f, "c", b"A");
        expect_file(f, "n", b"");
        if d.join("b").exists() {
            f.push(format!("{when}: b still exists"));
        }
    };
    check(&mut f, "live");
    let _ = xattr(&d, "user.ipfs.cid", 120);
    m.restart();
    check(&mut f, "after remount");
    finish(&m, test, &f);
}

#[test]
fn times_and_modes_survive_a_remount() {
    let test = "times_and_modes_survive_a_remount";
    if !require_fuse(test) {
        return;
    }
    let mut m = ds_mount();
    let d = mkds(&m, "keep");
    let mut f = Vec::new();
    // Files and directories never given a time, some given one (sub-second, before 1970),
    // a directory big enough to be split into buckets, a symlink, modes.
    fs::create_dir_all(d.join("a/b")).unwrap_or_else(|e| m.fail(&format!("mkdir a/b: {e}")));
    fs::create_dir(d.join("big")).unwrap_or_else(|e| m.fail(&format!("mkdir big: {e}")));
    for i in 0..300 {
        fs::write(d.join(format!("big/f{i}")), format!("{i}"))
            .unwrap_or_else(|e| m.fail(&format!("write big/f{i}: {e}")));
    }
    fs::write(d.join("a/plain"), b"p").unwrap_or_else(|e| m.fail(&format!("write: {e}")));
    fs::write(d.join("a/b/set"), b"s").unwrap_or_else(|e| m.fail(&format!("write: {e}")));
    fs::write(d.join("old"), b"o").unwrap_or_else(|e| m.fail(&format!("write: {e}")));
    std::os::unix::fs::symlink("a/plain", d.join("link"))
        .unwrap_or_else(|e| m.fail(&format!("symlink: {e}")));
    let _ = utimensat(
        &d.join("a/b/set"),
        ts(1_234_567_890, 123_456_789),
        ts(1_234_567_891, 987_654_321),
    );
    let _ = utimensat(&d.join("old"), ts(0, 0), ts(-1_000_000, 500_000_000));
    let _ = utimensat(&d.join("big/f7"), ts(0, 0), ts(1_700_000_000, 1));
    let _ = fs::set_permissions(d.join("a/b"), fs::Permissions::from_mode(0o750));
    // The dataset's own directory too (given a time after its last change below).
    let _ = fs::set_permissions(&d, fs::Permissions::from_mode(0o705));
    let _ = fs::set_permissions(d.join("big/f8"), fs::Permissions::from_mode(0o600));
    // A file changed after the first version: its new time must be kept, not the first one.
    let _ = xattr(&d, "user.ipfs.cid", 120);
    tick();
    let _ = OpenOptions::new()
        .append(true)
        .open(d.join("a/plain"))
        .and_then(|mut h| h.write_all(b"+"));
    let mut paths = vec![
        "".to_string(),
        "a".into(),
        "a/b".into(),
        "a/plain".into(),
        "a/b/set".into(),
        "old".into(),
        "big".into(),
        "link".into(),
    ];
    paths.extend((0..300).map(|i| format!("big/f{i}")));
    let look = |p: &str| {
        fs::symlink_metadata(d.join(p)).map(|s| (s.mtime(), s.mtime_nsec(), s.mode() & 0o7777))
    };
    let before: Vec<_> = paths.iter().map(|p| look(p).ok()).collect();
    let root = xattr(&d, "user.ipfs.cid", 120).unwrap_or_else(|e| m.fail(&e));
    m.restart();
    let mut changed = 0;
    for (p, b) in paths.iter().zip(&before) {
        let a = look(p).ok();
        if a != *b {
            changed += 1;
            if changed <= 10 {
                f.push(format!(
                    "{p:?}: (mtime s, ns, mode) {b:?} before the remount, {a:?} after"
                ));
            }
        }
    }
    if changed > 10 {
        f.push(format!("... {changed} of {} entries changed", paths.len()));
    }
    if let Some(Some(b)) = before.get(5) {
        if (b.0, b.1) != (-1_000_000, 500_000_000) {
            f.push(format!(
                "old: mtime {b:?} before the remount, expected -1000000.5"
            ));
        }
    }
    // Times live beside the UnixFS DAG: the version's root is the same CID as before.
    match xattr(&d, "user.ipfs.cid", 120) {
        Ok(r) if r == root => {}
        other => f.push(format!(
            "root CID {other:?} after the remount, {root} before"
        )),
    }
    finish(&m, test, &f);
}
