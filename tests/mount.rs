//! Real-mount behaviour that needs no reference peers: content is written as CARs by the harness's own small
//! UnixFS/CAR writer (`common::car`), imported with `ipfs-mount import`, and read with `--offline`.
//! Lifecycle (daemon mode, `unmount`, signals, stale mounts), attributes, xattrs, concurrent and mmap reads, the
//! store across restarts and `kill -9`, import/export while mounted, and DuckDB over the mount.

mod common;

use common::*;
use std::fs::{self, File};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;

struct Fixture {
    _tmp: TempDir,
    store: PathBuf,
    car: PathBuf,
    root: String,
    files: Vec<(&'static str, Vec<u8>)>,
}

impl Fixture {
    fn get(&self, name: &str) -> &[u8] {
        &self.files.iter().find(|(n, _)| *n == name).unwrap().1
    }
}

/// A directory with a 64 MiB file (256 KiB raw leaves), odd sizes, an empty file; imported into a fresh store.
fn fixture(big: usize) -> Fixture {
    let tmp = tempdir("mount-fixture");
    let store = tmp.path().join("store");
    fs::create_dir_all(&store).unwrap();
    let files: Vec<(&'static str, Vec<u8>)> = vec![
        ("big.bin", random_bytes(big, 1)),
        ("odd.bin", random_bytes(1_000_001, 2)),
        ("small.txt", b"small file\n".to_vec()),
        ("empty", Vec::new()),
    ];
    let car = tmp.path().join("fixture.car");
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, d)| (*n, d.as_slice())).collect();
    let root = car::write_dir_car(&car, &refs, 256 * 1024);
    assert_eq!(import_car(&store, &[&car]), vec![root.clone()]);
    Fixture {
        _tmp: tmp,
        store,
        car,
        root,
        files,
    }
}

#[test]
fn root_layout_and_attributes() {
    if !require_fuse("root_layout_and_attributes") {
        return;
    }
    let fx = fixture(4 * MIB);
    let m = Mount::start_with_store(&fx.store, &["--offline"]);
    let mut names: Vec<String> = fs::read_dir(&m.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["datasets", "ipfs", "ipns"]);
    for d in ["ipns", "datasets"] {
        assert!(fs::metadata(m.mnt.join(d)).unwrap().is_dir());
        assert_eq!(
            fs::read_dir(m.mnt.join(d)).unwrap().count(),
            0,
            "{d} is empty for now"
        );
    }
    let r = m.ipfs(&fx.root);
    for (name, data) in &fx.files {
        let md = fs::metadata(r.join(name)).unwrap();
        assert!(md.is_file());
        assert_eq!(md.len(), data.len() as u64, "exact st_size of {name}");
        assert_eq!(
            md.mode() & 0o7777,
            0o444,
            "{name}: mode without UnixFS metadata"
        );
        assert_eq!(&read_timeout(&r.join(name), 60).unwrap(), data, "{name}");
    }
    assert_eq!(fs::metadata(&r).unwrap().mode() & 0o7777, 0o555);
    // statfs answers (df works on the mount).
    let df = run(Command::new("df").arg(&m.mnt));
    assert!(
        df.status.success(),
        "df: {}",
        String::from_utf8_lossy(&df.stderr)
    );
    let ls = run(Command::new("ls")
        .arg("-la")
        .arg(&m.mnt)
        .arg(m.mnt.join("ipfs"))
        .arg(&r));
    assert!(
        ls.status.success() && ls.stderr.is_empty(),
        "ls -la: {}",
        String::from_utf8_lossy(&ls.stderr)
    );
    assert_eq!(
        mount_fstype(&m.mnt).map(|t| t.starts_with("fuse")),
        Some(true)
    );
}

#[test]
fn xattrs() {
    if !require_fuse("xattrs") {
        return;
    }
    let fx = fixture(MIB);
    let m = Mount::start_with_store(&fx.store, &["--offline"]);
    let r = m.ipfs(&fx.root);
    assert_eq!(getfattr_cid(&r).unwrap(), fx.root);
    let small = r.join("small.txt");
    let want = car::raw(b"small file\n").cid.to_string();
    assert_eq!(getfattr_cid(&small).unwrap(), want);
    // listxattr names it.
    let out = run_ok(
        Command::new("getfattr")
            .args(["--absolute-names", "-d", "-m", "-"])
            .arg(&small),
    );
    assert!(
        String::from_utf8_lossy(&out).contains("user.ipfs.cid"),
        "getfattr -d: {}",
        String::from_utf8_lossy(&out)
    );
    // Another name: ENODATA; writes: refused (ENOTSUP per doc/SEMANTICS.md, EROFS also acceptable).
    assert_eq!(lgetxattr(&small, "user.nope"), Err(libc::ENODATA));
    let p = std::ffi::CString::new(small.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new("user.test").unwrap();
    // SAFETY: valid strings and a 1-byte value.
    let rc = unsafe { libc::lsetxattr(p.as_ptr(), n.as_ptr(), b"x".as_ptr().cast(), 1, 0) };
    let e = std::io::Error::last_os_error().raw_os_error().unwrap();
    assert!(
        rc == -1 && (e == libc::ENOTSUP || e == libc::EROFS),
        "setxattr: rc {rc}, {}",
        errno_name(e)
    );
    // The kernel asks for security.capability before writes; it must answer fast (ENODATA).
    let t = Instant::now();
    assert!(lgetxattr(&small, "security.capability").is_err());
    assert!(t.elapsed() < Duration::from_secs(1));
}

#[test]
fn concurrent_preads_on_one_handle() {
    if !require_fuse("concurrent_preads_on_one_handle") {
        return;
    }
    let fx = fixture(64 * MIB);
    let m = Mount::start_with_store(&fx.store, &["--offline"]);
    let path = m.ipfs(&fx.root).join("big.bin");
    let want = Arc::new(fx.get("big.bin").to_vec());
    let f = Arc::new(File::open(&path).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (f, want) = (f.clone(), want.clone());
            std::thread::spawn(move || {
                let mut rng = Rng::new(100 + t);
                let mut buf = vec![0u8; 300_000];
                for _ in 0..200 {
                    let len = 1 + rng.below(buf.len() as u64) as usize;
                    let off = rng.below(want.len() as u64 + 1000) as usize;
                    let n = f.read_at(&mut buf[..len], off as u64).unwrap();
                    let end = (off + len).min(want.len());
                    let expect = if off < want.len() {
                        &want[off..end]
                    } else {
                        &[][..]
                    };
                    // Short only at EOF (a short FUSE read before EOF would be a bug).
                    assert_eq!(n, expect.len(), "thread {t}: pread at {off}+{len}: length");
                    assert!(
                        buf[..n] == *expect,
                        "thread {t}: pread at {off}+{len}: bytes differ"
                    );
                }
            })
        })
        .collect();
    with_timeout(300, "concurrent preads", move || {
        for t in threads {
            t.join().expect("reader thread");
        }
    });
    // Reads ending exactly at, and starting beyond, EOF.
    let len = want.len() as u64;
    assert_eq!(
        pread(&path, len - 10, 10).unwrap(),
        &want[want.len() - 10..]
    );
    assert_eq!(pread(&path, len, 10).unwrap(), Vec::<u8>::new());
    assert_eq!(pread(&path, len + 12345, 10).unwrap(), Vec::<u8>::new());
}

#[test]
fn sequential_read_and_shared_mmap() {
    if !require_fuse("sequential_read_and_shared_mmap") {
        return;
    }
    let fx = fixture(32 * MIB);
    let m = Mount::start_with_store(&fx.store, &["--offline"]);
    let path = m.ipfs(&fx.root).join("big.bin");
    let want = fx.get("big.bin");
    // cat and dd with large blocks.
    let t = Instant::now();
    assert!(cat_bytes(&path) == want, "cat big.bin");
    eprintln!("cat 32 MiB: {:?}", t.elapsed());
    // A shared, read-only mmap (breaks under direct_io).
    let f = File::open(&path).unwrap();
    let len = want.len();
    // SAFETY: mapping a file we opened read-only; the mapping is unmapped below and not used after.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            std::os::fd::AsRawFd::as_raw_fd(&f),
            0,
        )
    };
    assert_ne!(
        p,
        libc::MAP_FAILED,
        "mmap MAP_SHARED: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: p points to len readable bytes while mapped.
    let mapped = unsafe { std::slice::from_raw_parts(p as *const u8, len) };
    let ok = mapped == want;
    // SAFETY: p/len from the successful mmap above.
    unsafe { libc::munmap(p, len) };
    assert!(ok, "mmap contents differ");
}

fn cat_bytes(p: &Path) -> Vec<u8> {
    run_ok(Command::new("cat").arg(p))
}

#[test]
fn inode_numbers_stable_across_remount() {
    if !require_fuse("inode_numbers_stable_across_remount") {
        return;
    }
    let fx = fixture(MIB);
    let mut m = Mount::start_with_store(&fx.store, &["--offline"]);
    let paths = |m: &Mount| -> Vec<PathBuf> {
        let r = m.ipfs(&fx.root);
        vec![
            r.clone(),
            r.join("big.bin"),
            r.join("small.txt"),
            r.join("empty"),
        ]
    };
    let before: Vec<u64> = paths(&m)
        .iter()
        .map(|p| fs::metadata(p).unwrap().ino())
        .collect();
    let distinct: std::collections::BTreeSet<_> = before.iter().collect();
    assert_eq!(distinct.len(), before.len(), "distinct inodes: {before:?}");
    m.restart();
    let after: Vec<u64> = paths(&m)
        .iter()
        .map(|p| fs::metadata(p).unwrap().ino())
        .collect();
    assert_eq!(before, after, "inode numbers after a remount");
}

#[test]
fn sigterm_and_sigint_unmount_cleanly() {
    if !require_fuse("sigterm_and_sigint_unmount_cleanly") {
        return;
    }
    let fx = fixture(MIB);
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let mut m = Mount::start_with_store(&fx.store, &["--offline"]);
        assert_eq!(
            read_timeout(&m.ipfs(&fx.root).join("small.txt"), 30).unwrap(),
            b"small file\n"
        );
        let pid = m.pid().unwrap();
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(pid as i32, sig) };
        let t = Instant::now();
        while is_mounted(&m.mnt) && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let mounted = is_mounted(&m.mnt);
        let st = m.terminate();
        assert!(
            !mounted,
            "still mounted 10 s after signal {sig}; log:\n{}",
            m.log()
        );
        assert!(
            st.map(|s| s.success()).unwrap_or(false),
            "exit status after signal {sig}: {st:?}; log:\n{}",
            m.log()
        );
    }
}

/// After `kill -9` the mountpoint is left stale (ENOTCONN); the next mount replaces it, and the store is intact.
#[test]
fn kill9_then_remount_replaces_stale_mount() {
    if !require_fuse("kill9_then_remount_replaces_stale_mount") {
        return;
    }
    let fx = fixture(8 * MIB);
    let mut m = Mount::start_with_store(&fx.store, &["--offline"]);
    let big = m.ipfs(&fx.root).join("big.bin");
    assert!(read_timeout(&big, 60).unwrap() == fx.get("big.bin"));
    m.kill9();
    std::thread::sleep(Duration::from_millis(300));
    // Without auto_unmount the mount is left behind, stale; with it, it is gone. Both are fine.
    if is_mounted(&m.mnt) {
        // (stat may be answered from the kernel's attribute cache; opendir always asks the daemon.)
        assert_errno(
            fs::read_dir(&m.mnt).map(|_| ()),
            libc::ENOTCONN,
            "opendir on a stale mount",
        );
    } else {
        eprintln!("the mount went away with the killed daemon (auto_unmount)");
    }
    m.start_again();
    assert!(
        read_timeout(&big, 60).unwrap() == fx.get("big.bin"),
        "content after kill -9 and remount"
    );
}

/// A daemon found by the unique mountpoint in its command line; killed by PID on drop if still alive.
struct Daemon {
    mnt: PathBuf,
}

impl Daemon {
    fn pids(&self) -> Vec<i32> {
        let mut out = Vec::new();
        let needle = self.mnt.as_os_str().as_encoded_bytes();
        for e in fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(cmd) = fs::read(e.path().join("cmdline")) else {
                continue;
            };
            let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
            if args.contains(&needle)
                && args
                    .first()
                    .map(|a| a.ends_with(b"ipfs-mount"))
                    .unwrap_or(false)
            {
                out.push(pid);
            }
        }
        out
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        fusermount_u(&self.mnt);
        for pid in self.pids() {
            // SAFETY: kill(2) on a daemon this test started (its command line holds our unique temp mountpoint).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

#[test]
fn daemon_mode_and_unmount_command() {
    if !require_fuse("daemon_mode_and_unmount_command") {
        return;
    }
    let fx = fixture(MIB);
    let tmp = tempdir("daemon");
    let mnt = tmp.path().join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let log = tmp.path().join("daemon.log");
    let guard = Daemon { mnt: mnt.clone() };
    let t = Instant::now();
    let out = run(Command::new(BIN)
        .arg("--store")
        .arg(&fx.store)
        .arg("--offline")
        .arg("--log-file")
        .arg(&log)
        .arg(&mnt));
    assert!(
        out.status.success(),
        "daemon mount failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(is_mounted(&mnt), "mounted when `ipfs-mount <mnt>` returns");
    eprintln!("daemon mount returned after {:?}", t.elapsed());
    eprintln!(
        "background processes serving {}: {:?}",
        mnt.display(),
        guard.pids()
    );
    assert!(
        guard.pids().len() <= 1,
        "more than one background process: {:?}",
        guard.pids()
    );
    let p = mnt.join("ipfs").join(&fx.root).join("small.txt");
    assert_eq!(read_timeout(&p, 30).unwrap(), b"small file\n");

    let out = run(Command::new(BIN).arg("unmount").arg(&mnt));
    assert!(
        out.status.success(),
        "ipfs-mount unmount: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !is_mounted(&mnt),
        "still mounted after `ipfs-mount unmount`"
    );
    let t = Instant::now();
    while !guard.pids().is_empty() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        guard.pids().is_empty(),
        "the background process is still running after unmount"
    );
    // Errors come back as an exit status, quickly.
    let t = Instant::now();
    let out = run(Command::new(BIN)
        .arg("--store")
        .arg(&fx.store)
        .arg("--offline")
        .arg(tmp.path().join("no-such-dir")));
    assert!(
        !out.status.success(),
        "mounting on a missing directory must fail"
    );
    assert!(!out.stderr.is_empty(), "and say why");
    assert!(t.elapsed() < Duration::from_secs(20));
}

/// `import` and `export` work while the store is mounted; an imported root shows up in the running mount.
#[test]
fn import_and_export_while_mounted() {
    if !require_fuse("import_and_export_while_mounted") {
        return;
    }
    let fx = fixture(2 * MIB);
    let m = Mount::start_with_store(&fx.store, &["--offline"]);
    let tmp = tempdir("import-live");
    let carp = tmp.path().join("new.car");
    let data = random_bytes(3 * MIB + 7, 77);
    let root = car::write_dir_car(&carp, &[("new.bin", &data)], MIB);
    assert_eq!(import_car(&fx.store, &[&carp]), vec![root.clone()]);
    let got = read_timeout(&m.ipfs(&root).join("new.bin"), 60)
        .unwrap_or_else(|e| m.fail(&format!("read new root: {e}")));
    assert!(got == data, "content imported while mounted");
    let out = tmp.path().join("export.car");
    run_ok(
        Command::new(BIN)
            .arg("export")
            .arg("--offline")
            .arg("--store")
            .arg(&fx.store)
            .arg(&fx.root)
            .arg("-o")
            .arg(&out),
    );
    let fresh = tmp.path().join("fresh");
    fs::create_dir_all(&fresh).unwrap();
    assert_eq!(import_car(&fresh, &[&out]), vec![fx.root.clone()]);
    drop(m);
    let m2 = Mount::start_with_store(&fresh, &["--offline"]);
    assert!(read_timeout(&m2.ipfs(&fx.root).join("big.bin"), 60).unwrap() == fx.get("big.bin"));
    let _ = &fx.car;
}

/// A corrupt block in a CAR is refused by `import`.
#[test]
fn import_rejects_a_corrupt_block() {
    let fx_tmp = tempdir("corrupt");
    let store = fx_tmp.path().join("store");
    fs::create_dir_all(&store).unwrap();
    let carp = fx_tmp.path().join("bad.car");
    let leaf = car::raw(b"original bytes");
    let bad = car::Block {
        cid: leaf.cid,
        data: b"tampered bytes".to_vec(),
    };
    let mut f = File::create(&carp).unwrap();
    car::write(&leaf.cid, &[bad], &mut f).unwrap();
    drop(f);
    let out = run(Command::new(BIN)
        .arg("import")
        .arg("--store")
        .arg(&store)
        .arg(&carp));
    assert!(
        !out.status.success(),
        "import of a block whose bytes do not match its CID must fail"
    );
}

/// DuckDB reads Parquet and CSV straight from the mount (several opens, footer reads, threads).
#[test]
fn duckdb_over_the_mount() {
    if !require_fuse("duckdb_over_the_mount") {
        return;
    }
    let py = run(Command::new("python3").args(["-c", "import duckdb"]));
    if !py.status.success() {
        if strict() {
            panic!(
                "python3 -c 'import duckdb' failed (pip install duckdb): {}",
                String::from_utf8_lossy(&py.stderr)
            );
        }
        eprintln!("SKIPPED duckdb_over_the_mount: python duckdb not installed");
        return;
    }
    let tmp = tempdir("duckdb");
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let make = format!(
        "import duckdb\n\
         con = duckdb.connect()\n\
         con.execute(\"COPY (SELECT range AS i, range * 7 % 1000 AS j, md5(range::VARCHAR) AS s FROM range(300000)) TO '{0}/a.parquet' (FORMAT parquet, ROW_GROUP_SIZE 50000)\")\n\
         con.execute(\"COPY (SELECT range AS i, range * 3 AS j, md5(range::VARCHAR) AS s FROM range(200000)) TO '{0}/b.parquet' (FORMAT parquet)\")\n\
         con.execute(\"COPY (SELECT range AS i, 'row ' || range AS t FROM range(50000)) TO '{0}/c.csv' (HEADER)\")\n",
        src.display()
    );
    run_ok(Command::new("python3").args(["-c", &make]));
    let names = ["a.parquet", "b.parquet", "c.csv"];
    let data: Vec<Vec<u8>> = names
        .iter()
        .map(|n| fs::read(src.join(n)).unwrap())
        .collect();
    let files: Vec<(&str, &[u8])> = names
        .iter()
        .zip(&data)
        .map(|(n, d)| (*n, d.as_slice()))
        .collect();
    let store = tmp.path().join("store");
    fs::create_dir_all(&store).unwrap();
    let carp = tmp.path().join("data.car");
    let root = car::write_dir_car(&carp, &files, 256 * 1024);
    assert_eq!(import_car(&store, &[&carp]), vec![root.clone()]);
    let m = Mount::start_with_store(&store, &["--offline"]);
    let query = |dir: &Path| -> String {
        let q = format!(
            "import duckdb\n\
             con = duckdb.connect()\n\
             con.execute('SET threads TO 4')\n\
             d = '{0}'\n\
             r1 = con.execute(f\"SELECT count(*), sum(i), sum(j), max(s), min(s) FROM read_parquet('{{d}}/a.parquet')\").fetchall()\n\
             r2 = con.execute(f\"SELECT count(*), sum(j) FROM read_parquet('{{d}}/*.parquet')\").fetchall()\n\
             r3 = con.execute(f\"SELECT count(*), max(t) FROM read_csv('{{d}}/c.csv')\").fetchall()\n\
             r4 = con.execute(f\"SELECT s FROM read_parquet('{{d}}/a.parquet') WHERE i = 123456\").fetchall()\n\
             print(r1, r2, r3, r4)\n",
            dir.display()
        );
        String::from_utf8(run_ok(Command::new("python3").args(["-c", &q]))).unwrap()
    };
    let want = query(&src);
    let mnt_dir = m.ipfs(&root);
    let got = with_timeout(300, "duckdb queries over the mount", move || {
        query(&mnt_dir)
    });
    assert_eq!(
        got, want,
        "DuckDB results over the mount vs the source files"
    );
    eprintln!("duckdb: {}", got.trim());
}

/// `--allow-other` lets other users read; without it they are refused (FUSE's default).
#[test]
fn allow_other() {
    if !require_fuse("allow_other") {
        return;
    }
    if unsafe { libc::geteuid() } != 0 || which("runuser").is_none() {
        eprintln!("SKIPPED allow_other: needs root and runuser");
        return;
    }
    let fx = fixture(MIB);
    for (args, other_can_read) in [
        (vec!["--offline"], false),
        (vec!["--offline", "--allow-other"], true),
    ] {
        let m = Mount::start_with_store(&fx.store, &args);
        // The temp dirs are 0700; let others reach the mountpoint.
        let parent = m.mnt.parent().unwrap();
        fs::set_permissions(parent, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let p = m.ipfs(&fx.root).join("small.txt");
        let out = run(Command::new("runuser")
            .args(["-u", "nobody", "--", "cat"])
            .arg(&p));
        assert_eq!(
            out.status.success(),
            other_can_read,
            "{args:?}: user nobody reading {}: {} {}",
            p.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        if other_can_read {
            assert_eq!(out.stdout, b"small file\n");
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Big directories: READDIRPLUS (issue 11)
// ---------------------------------------------------------------------------------------------------------------

/// The daemon's request counts (`user.ipfs-mount.ops` on the mount's root: `lookup=N readdirplus=M …`).
fn op_counts(m: &Mount) -> std::collections::HashMap<String, u64> {
    let raw = lgetxattr(&m.mnt, "user.ipfs-mount.ops")
        .unwrap_or_else(|e| m.fail(&format!("user.ipfs-mount.ops: {}", errno_name(e))));
    String::from_utf8_lossy(&raw)
        .split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap_or(0)))
        .collect()
}

/// `read_dir` plus each entry's `symlink_metadata` (what `ls -l` does): name -> (size, mode).
fn list_with_attrs(dir: &Path) -> std::collections::BTreeMap<String, (u64, u32)> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| {
            let e = e.unwrap();
            let md = fs::symlink_metadata(e.path()).unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                (md.len(), md.mode()),
            )
        })
        .collect()
}

/// Drops the kernel's dentry and inode caches (the kernel then FORGETs our inodes); false when not allowed.
fn drop_kernel_caches() -> bool {
    unsafe { libc::sync() };
    fs::write("/proc/sys/vm/drop_caches", "2").is_ok()
}

/// `ls -l` of a big HAMT directory under /ipfs and of a big dataset directory: the kernel gets every entry's
/// attributes with the listing (READDIRPLUS), so the daemon sees a few LOOKUPs, not one per entry; names, sizes and
/// modes are right, also after the kernel forgot the entries (drop_caches) and looks them up again.
#[test]
fn big_directory_listing_needs_no_lookup_per_entry() {
    const N: usize = 4000;
    let tmp = tempdir("rdplus");
    let src = make_tree(&tmp.path().join("src"), &TreeSpec::hamt(41, N)).join("many");
    let want: std::collections::BTreeMap<String, (u64, u32)> = list_with_attrs(&src);
    assert_eq!(want.len(), N);
    let m = Mount::start(&["--offline"]);
    let ds = m.mnt.join("datasets/big");
    fs::create_dir(&ds).unwrap_or_else(|e| m.fail(&format!("mkdir dataset: {e}")));
    let many = ds.join("many");
    fs::create_dir(&many).unwrap();
    for (name, (_, mode)) in &want {
        let data = fs::read(src.join(name)).unwrap();
        fs::write(many.join(name), &data).unwrap();
        fs::set_permissions(
            many.join(name),
            std::os::unix::fs::PermissionsExt::from_mode(*mode & 0o7777),
        )
        .unwrap();
    }
    // Its CID commits the dataset: a directory of 4000 entries this size is HAMT-sharded (unixfs-v1-2025).
    let cid = String::from_utf8(lgetxattr(&many, "user.ipfs.cid").unwrap()).unwrap();
    let cid = cid.trim_end_matches(['\0', '\n']).to_string();
    let car = tmp.path().join("many.car");
    let out = Command::new(env!("CARGO_BIN_EXE_ipfs-mount"))
        .args(["export", "--offline", "--store"])
        .arg(&m.store)
        .arg(&cid)
        .arg("-o")
        .arg(&car)
        .output()
        .unwrap();
    if out.status.success() {
        let root = car_first_block(&fs::read(&car).unwrap());
        assert_eq!(
            dagpb_unixfs_type(&root).0,
            Some(5),
            "{cid} is not a HAMT shard"
        );
    } else {
        eprintln!(
            "note: export of {cid} failed ({}): HAMT not checked",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let immutable = m.ipfs(&cid);
    // Content is read-only: the write bits go.
    let want_ipfs: std::collections::BTreeMap<_, _> = want
        .iter()
        .map(|(n, (size, mode))| (n.clone(), (*size, (mode & !0o7777) | (mode & 0o7555))))
        .collect();
    let mut failures = Vec::new();
    let check = |failures: &mut Vec<String>,
                 what: &str,
                 dir: &Path,
                 want: &std::collections::BTreeMap<String, (u64, u32)>| {
        let before = op_counts(&m);
        let got = list_with_attrs(dir);
        let after = op_counts(&m);
        let lookups = after["lookup"] - before["lookup"];
        let plus = after["readdirplus"] - before["readdirplus"];
        eprintln!(
            "{what}: {} entries, {lookups} LOOKUPs, {plus} READDIRPLUS",
            got.len()
        );
        if &got != want {
            let wrong: Vec<_> = want
                .iter()
                .filter(|(n, a)| got.get(*n) != Some(a))
                .take(5)
                .map(|(n, a)| format!("{n}: want {a:?}, got {:?}", got.get(n)))
                .collect();
            failures.push(format!(
                "{what}: {} entries, want {}; {wrong:?}",
                got.len(),
                want.len()
            ));
        }
        if lookups > (N / 20) as u64 {
            failures.push(format!("{what}: {lookups} LOOKUPs for {N} entries"));
        }
        (lookups, plus)
    };
    let (_, plus) = check(
        &mut failures,
        "/ipfs HAMT, first listing",
        &immutable,
        &want_ipfs,
    );
    if plus == 0 {
        failures.push("no READDIRPLUS reached the daemon".into());
    }
    check(&mut failures, "/ipfs HAMT, again", &immutable, &want_ipfs);
    check(&mut failures, "dataset directory", &many, &want);
    // Past the dataset's attribute TTL (1 s): the listing brings the attributes again.
    std::thread::sleep(Duration::from_millis(1500));
    check(
        &mut failures,
        "dataset directory, after its TTL",
        &many,
        &want,
    );

    // A change shows in the next listing.
    let (first, (size, mode)) = want.iter().next().map(|(n, a)| (n.clone(), *a)).unwrap();
    std::io::Write::write_all(
        &mut fs::OpenOptions::new()
            .append(true)
            .open(many.join(&first))
            .unwrap(),
        b"12345",
    )
    .unwrap();
    let mut changed = want.clone();
    changed.insert(first.clone(), (size + 5, mode));
    check(
        &mut failures,
        "dataset directory, after an append",
        &many,
        &changed,
    );

    if drop_kernel_caches() {
        let before = op_counts(&m)["forget"];
        // The kernel forgets lazily; give its shrinker a moment.
        std::thread::sleep(Duration::from_millis(300));
        check(
            &mut failures,
            "/ipfs HAMT, after drop_caches",
            &immutable,
            &want_ipfs,
        );
        check(
            &mut failures,
            "dataset directory, after drop_caches",
            &many,
            &changed,
        );
        if op_counts(&m)["forget"] == before && before == 0 {
            failures.push("drop_caches: the daemon got no FORGET".into());
        }
        // And a plain stat of each entry (a LOOKUP each, now) still answers right.
        drop_kernel_caches();
        for (name, attrs) in want_ipfs.iter().step_by(97) {
            let md = fs::symlink_metadata(immutable.join(name)).unwrap();
            if (md.len(), md.mode()) != *attrs {
                failures.push(format!(
                    "stat {name} after drop_caches: {:?}",
                    (md.len(), md.mode())
                ));
            }
        }
    } else {
        eprintln!("note: cannot write /proc/sys/vm/drop_caches (not root): forget not exercised");
    }
    if !failures.is_empty() {
        m.fail(&failures.join("\n"));
    }
}

/// The first block of a CARv1 (after its header): varint length, CID, data.
fn car_first_block(car: &[u8]) -> Vec<u8> {
    fn varint(b: &[u8], pos: &mut usize) -> usize {
        let (mut v, mut shift) = (0usize, 0);
        loop {
            let byte = b[*pos];
            *pos += 1;
            v |= ((byte & 0x7f) as usize) << shift;
            if byte & 0x80 == 0 {
                return v;
            }
            shift += 7;
        }
    }
    let mut pos = 0;
    let header = varint(car, &mut pos);
    pos += header;
    let len = varint(car, &mut pos);
    let end = pos + len;
    // CIDv1: version, codec, multihash code, digest length, digest.
    let _version = varint(car, &mut pos);
    let _codec = varint(car, &mut pos);
    let _mh = varint(car, &mut pos);
    let digest = varint(car, &mut pos);
    pos += digest;
    car[pos..end].to_vec()
}
