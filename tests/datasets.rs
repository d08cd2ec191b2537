//! Writable datasets (`<mnt>/datasets/<name>`, issue 3) on a real mount: what cp, rsync, tar, shells, sed, vim,
//! DuckDB and pandas do there must give the same tree as on a local directory; file and directory CIDs must equal
//! the reference peers' for the dataset's import profile; versions stay readable under `/ipfs`; datasets survive
//! remounts and `kill -9`; refused operations fail with the documented errno.
//!
//! Each test collects every mismatch it finds (instead of stopping at the first) and fails at the end with the
//! whole list, so one run shows every product bug a test can see.

mod common;

use common::datasets::*;
use common::*;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

// ---------------------------------------------------------------------------------------------------------------
// Local helpers
// ---------------------------------------------------------------------------------------------------------------

fn root_cid(ds: &Path) -> String {
    xattr(ds, "user.ipfs.cid", 300).unwrap_or_else(|e| panic!("{e}"))
}

fn head_commit(ds: &Path) -> String {
    xattr(ds, "user.ipfs.commit", 300).unwrap_or_else(|e| panic!("{e}"))
}

/// True when `python3 -c 'import <modules>'` works; otherwise prints a skip (a failure under
/// `IPFS_MOUNT_REQUIRE_PEERS=1`: `.ci/run` installs every module these tests import).
fn python_has(test: &str, modules: &str) -> bool {
    let out = run(Command::new("python3").args(["-c", &format!("import {modules}")]));
    if out.status.success() {
        return true;
    }
    let why = format!(
        "python3 cannot import {modules} (pip install {}): {}",
        modules.replace(',', " "),
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or("")
    );
    skip_or_fail(test, &why);
    false
}

/// Compares mode bits (and, for paths under `mtime_under`, file mtimes) of every entry of `local` with `ds`.
fn compare_meta(local: &Path, ds: &Path, mtime_under: &[&str]) -> Vec<String> {
    let mut errs = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let l = local.join(&rel);
        let d = ds.join(&rel);
        let (Ok(lm), Ok(dm)) = (fs::symlink_metadata(&l), fs::symlink_metadata(&d)) else {
            continue; // compare_trees reports missing entries
        };
        if lm.file_type().is_symlink() {
            continue;
        }
        if lm.mode() & 0o7777 != dm.mode() & 0o7777 {
            errs.push(format!(
                "{}: mode {:o}, expected {:o} (as on a local dir)",
                d.display(),
                dm.mode() & 0o7777,
                lm.mode() & 0o7777
            ));
        }
        let want_mtime = lm.is_file()
            && mtime_under
                .iter()
                .any(|p| rel.starts_with(p) && !rel.as_os_str().is_empty());
        if want_mtime && lm.mtime() != dm.mtime() {
            errs.push(format!(
                "{}: mtime {}, expected {}",
                d.display(),
                dm.mtime(),
                lm.mtime()
            ));
        }
        if lm.is_dir() {
            if let Ok(rd) = fs::read_dir(&l) {
                for e in rd.flatten() {
                    stack.push(rel.join(e.file_name()));
                }
            }
        }
        if errs.len() > 20 {
            break;
        }
    }
    errs
}

/// Whether the binary has a `dataset` subcommand (for creating a dataset with another import profile).
fn has_dataset_cli() -> bool {
    let out = run(Command::new(BIN).arg("--help"));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim_start().starts_with("dataset"))
}

fn setxattr(path: &Path, name: &str, value: &[u8]) -> std::io::Result<()> {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let r = unsafe {
        libc::setxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Appends `what: got <errno>, expected <errno>` to `failures` unless `r` failed with `want`.
fn expect_errno<T: std::fmt::Debug>(
    failures: &mut Vec<String>,
    what: &str,
    r: std::io::Result<T>,
    want: &[i32],
) {
    match r {
        Ok(v) => failures.push(format!(
            "{what}: succeeded ({v:?}), expected {}",
            want.iter()
                .map(|e| errno_name(*e))
                .collect::<Vec<_>>()
                .join(" or ")
        )),
        Err(e) => {
            let got = e.raw_os_error().unwrap_or(-1);
            if !want.contains(&got) {
                failures.push(format!(
                    "{what}: got {} ({e}), expected {}",
                    errno_name(got),
                    want.iter()
                        .map(|e| errno_name(*e))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// 1. cp of files: bytes, file CIDs and the directory CID equal Helia's (and Kubo's for unixfs-v0-2015)
// ---------------------------------------------------------------------------------------------------------------

fn cid_files(dir: &Path) -> Vec<(String, u64)> {
    fs::create_dir_all(dir).unwrap();
    let files: Vec<(String, u64)> = vec![
        ("empty.bin".into(), 0),
        ("small.txt".into(), 13),
        ("three-mib-plus-one.bin".into(), 3 * MIB + 1),
        ("ten-mib.bin".into(), 10 * MIB),
    ];
    for (i, (n, len)) in files.iter().enumerate() {
        write_random_file(&dir.join(n), *len, 100 + i as u64);
    }
    files
}

/// cp each file into `ds`, check the bytes and each file's CID against `reference`, and the dataset's root CID
/// against the reference's CID for the whole directory.
fn cp_and_check_cids(
    ds: &Path,
    src: &Path,
    files: &[(String, u64)],
    label: &str,
    reference: &dyn Fn(&Path) -> String,
    failures: &mut Vec<String>,
) {
    for (n, len) in files {
        let s = src.join(n);
        let d = ds.join(n);
        if let Err(e) = bash(src, &format!("cp {n} '{}'", d.display()), NOENV, 300) {
            failures.push(format!("{label}: {e}"));
            continue;
        }
        match fs::metadata(&d) {
            Ok(md) if md.len() == *len => {}
            Ok(md) => failures.push(format!(
                "{label}: {}: st_size {} right after cp, expected {len}",
                d.display(),
                md.len()
            )),
            Err(e) => failures.push(format!("{label}: stat {}: {e}", d.display())),
        }
        if let Err(e) = compare_file_bytes(&s, &d) {
            failures.push(format!("{label}: {n}: {e}"));
        }
        let want = reference(&s);
        match xattr(&d, "user.ipfs.cid", 300) {
            Ok(got) if got == want => {}
            Ok(got) => failures.push(format!(
                "{label}: {n} ({len} bytes): user.ipfs.cid {got}, reference {want}"
            )),
            Err(e) => failures.push(format!("{label}: {e}")),
        }
    }
    let want = reference(src);
    match xattr(ds, "user.ipfs.cid", 300) {
        Ok(got) if got == want => {}
        Ok(got) => failures.push(format!(
            "{label}: dataset root user.ipfs.cid {got}, reference directory CID {want}"
        )),
        Err(e) => failures.push(format!("{label}: {e}")),
    }
}

#[test]
fn cp_files_cids_equal_helia() {
    let test = "cp_files_cids_equal_helia";
    let Some(peers) = require_peers(test) else {
        return;
    };
    let tmp = tempdir("ds-cids");
    let src = tmp.path().join("src");
    let files = cid_files(&src);
    let helia = Helia::start(&peers);
    let mut m = ds_mount();
    let mut failures = Vec::new();

    // unixfs-v1-2025 (the default profile)
    let ds = mkds(&m, "files");
    let v1 = |p: &Path| helia.add_path(p, &HeliaAdd::profile("unixfs-v1-2025"));
    cp_and_check_cids(&ds, &src, &files, "v1 files", &v1, &mut failures);

    // A tree (nested and empty dirs, unicode and odd names, edge sizes) by cp -r: directory parity beyond one level.
    let tree = make_tree(&tmp.path().join("tree"), &TreeSpec::helia(7, 0));
    let tds = mkds(&m, "tree");
    match bash(
        tmp.path(),
        &format!("cp -r tree/. '{}'", tds.display()),
        NOENV,
        300,
    ) {
        Ok(_) => {
            if let Err(e) = compare_trees(&tree, &tds, Symlinks::Follow) {
                failures.push(format!("v1 tree: cp -r result differs:\n{e}"));
            }
            let want = v1(&tree);
            match xattr(&tds, "user.ipfs.cid", 300) {
                Ok(got) if got == want => {}
                Ok(got) => failures.push(format!(
                    "v1 tree: dataset root user.ipfs.cid {got}, Helia {want}"
                )),
                Err(e) => failures.push(e),
            }
            // every file's CID (sizes around the chunk boundaries)
            for n in EDGE_SIZES {
                let rel = format!("sizes/{n}.bin");
                let want = v1(&tree.join(&rel));
                match xattr(&tds.join(&rel), "user.ipfs.cid", 300) {
                    Ok(got) if got == want => {}
                    Ok(got) => {
                        failures.push(format!("v1 tree: {rel}: user.ipfs.cid {got}, Helia {want}"))
                    }
                    Err(e) => failures.push(e),
                }
            }
            // and /ipfs/<root> reads back as the same tree
            if let Ok(root) = xattr(&tds, "user.ipfs.cid", 300) {
                if let Err(e) = compare_trees(&tree, &m.ipfs(&root), Symlinks::Follow) {
                    failures.push(format!(
                        "v1 tree: /ipfs/{root} differs from the source:\n{e}"
                    ));
                }
            }
        }
        Err(e) => failures.push(format!("v1 tree: {e}")),
    }

    // unixfs-v0-2015: only when the CLI can create a dataset with that profile.
    if has_dataset_cli() {
        let kubo = Kubo::start(&peers);
        let out = run(Command::new(BIN)
            .args(["dataset", "--store"])
            .arg(&m.store)
            .args(["create", "v0files", "--profile", "unixfs-v0-2015"]));
        if !out.status.success() {
            failures.push(format!(
                "ipfs-mount dataset --store <store> create v0files --profile unixfs-v0-2015: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        } else {
            let ds0 = m.mnt.join("datasets/v0files");
            if !ds0.is_dir() {
                failures.push(
                    "`ipfs-mount dataset create v0files` while mounted: datasets/v0files does not appear in the \
                     mount (remounting to go on)"
                        .into(),
                );
                m.restart();
            }
            let k = |p: &Path| kubo.add_path(p);
            cp_and_check_cids(
                &ds0,
                &src,
                &files,
                "v0 files (Kubo 0.22)",
                &k,
                &mut failures,
            );
            let h0 = helia.add_path(&src, &HeliaAdd::profile("unixfs-v0-2015"));
            match xattr(&ds0, "user.ipfs.cid", 300) {
                Ok(got) if got == h0 => {}
                Ok(got) => failures.push(format!("v0 files: root {got}, Helia v0 {h0}")),
                Err(e) => failures.push(e),
            }
            // a v0 tree with symlinks (Kubo keeps them) by cp -r
            let ktree = make_tree(&tmp.path().join("ktree"), &TreeSpec::kubo(8, 0));
            let out = run(Command::new(BIN)
                .args(["dataset", "--store"])
                .arg(&m.store)
                .args(["create", "v0tree", "--profile", "unixfs-v0-2015"]));
            let kds = m.mnt.join("datasets/v0tree");
            if !out.status.success() || !kds.is_dir() {
                failures.push(format!(
                    "dataset create v0tree: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            } else {
                match bash(
                    tmp.path(),
                    &format!("cp -r ktree/. '{}'", kds.display()),
                    NOENV,
                    300,
                ) {
                    Ok(_) => {
                        let want = kubo.add_path(&ktree);
                        match xattr(&kds, "user.ipfs.cid", 300) {
                            Ok(got) if got == want => {}
                            Ok(got) => failures.push(format!(
                                "v0 tree (with symlinks, backslash name): dataset root {got}, Kubo 0.22 {want}"
                            )),
                            Err(e) => failures.push(e),
                        }
                    }
                    Err(e) => failures.push(format!("v0 tree: {e}")),
                }
            }
        }
    } else {
        eprintln!(
            "SKIPPED {test} (unixfs-v0-2015 part): `ipfs-mount --help` lists no `dataset` subcommand, so no \
             dataset can be created with another profile"
        );
    }
    finish(&m, test, &failures);
}

/// A directory big enough to be HAMT-sharded under unixfs-v1-2025 (block-bytes above 256 KiB): the dataset's
/// root must be the same HAMT as Helia's.
#[test]
fn hamt_directory_cid_equals_helia() {
    let test = "hamt_directory_cid_equals_helia";
    let Some(peers) = require_peers(test) else {
        return;
    };
    let tmp = tempdir("ds-hamt");
    let src = make_tree(&tmp.path().join("src"), &TreeSpec::hamt(11, 4000));
    let helia = Helia::start(&peers);
    let want_many = helia.add_path(&src.join("many"), &HeliaAdd::profile("unixfs-v1-2025"));
    let want_root = helia.add_path(&src, &HeliaAdd::profile("unixfs-v1-2025"));
    let m = ds_mount();
    let ds = mkds(&m, "hamt");
    let mut failures = Vec::new();
    let t0 = Instant::now();
    match bash(
        tmp.path(),
        &format!("cp -r src/. '{}'", ds.display()),
        NOENV,
        900,
    ) {
        Ok(_) => {
            eprintln!(
                "cp -r of 4000 small files into a dataset: {:?}",
                t0.elapsed()
            );
            if let Err(e) = compare_trees(&src, &ds, Symlinks::Preserve) {
                failures.push(format!("cp -r result differs:\n{e}"));
            }
            match xattr(&ds.join("many"), "user.ipfs.cid", 300) {
                Ok(got) if got == want_many => {}
                Ok(got) => failures.push(format!(
                    "many/ (4000 entries): user.ipfs.cid {got}, Helia {want_many}"
                )),
                Err(e) => failures.push(e),
            }
            match xattr(&ds, "user.ipfs.cid", 300) {
                Ok(got) if got == want_root => {}
                Ok(got) => failures.push(format!(
                    "dataset root: user.ipfs.cid {got}, Helia {want_root}"
                )),
                Err(e) => failures.push(e),
            }
        }
        Err(e) => failures.push(e),
    }
    finish(&m, test, &failures);
}

// ---------------------------------------------------------------------------------------------------------------
// 2. Tools: the same operations on a local directory and in a dataset give the same tree
// ---------------------------------------------------------------------------------------------------------------

const VIM_STYLE_SAVE: &str = r#"
import os, sys, random
os.chdir(sys.argv[1])
rnd = random.Random(42)
name = "vimfile.txt"
swap = "." + name + ".swp"
with open(name, "w") as f:
    f.write("original line\n" * 200)
fd = os.open(swap, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
os.write(fd, b"\0" * 4096 * 8)
for _ in range(40):
    off = rnd.randrange(0, 4096 * 8 - 100)
    os.pwrite(fd, bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 100))), off)
    if rnd.random() < 0.2:
        os.fsync(fd)
os.fsync(fd)
st = os.fstat(fd)
assert st.st_size == 4096 * 8, st.st_size
new = "".join("edited line %d\n" % i for i in range(300))
tmp = name + "~new"
with open(tmp, "w") as f:
    f.write(new)
    f.flush()
    os.fsync(f.fileno())
os.chmod(tmp, 0o640)
os.rename(tmp, name)
os.close(fd)
with open(name) as f:
    assert f.read() == new
os.unlink(swap)
"#;

const OUT_OF_ORDER_WRITES: &str = r#"
import os, sys
os.chdir(sys.argv[1])
# DuckDB-style: exclusive create, writes behind EOF and overwrites, out of order
fd = os.open("ooo.bin", os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
os.pwrite(fd, b"C" * 1000, 2 * 1024 * 1024)
os.pwrite(fd, b"A" * 5000, 0)
os.pwrite(fd, b"B" * 70000, 1024 * 1024 - 100)
os.pwrite(fd, b"a" * 10, 4990)
assert os.fstat(fd).st_size == 2 * 1024 * 1024 + 1000
os.close(fd)
# read-write reopen, overwrite in the middle, truncate by ftruncate, extend
fd = os.open("ooo.bin", os.O_RDWR)
os.pwrite(fd, b"D" * 100, 1500000)
os.ftruncate(fd, 1600000)
os.close(fd)
# O_APPEND on an existing file with content
fd = os.open("ooo.bin", os.O_WRONLY | os.O_APPEND)
os.write(fd, b"appended tail\n")
os.close(fd)
# truncating create over existing
with open("ooo2.bin", "wb") as f:
    f.write(b"first version, longer than the second\n")
with open("ooo2.bin", "wb") as f:
    f.write(b"second\n")
# read back in the same process
with open("ooo.bin", "rb") as f:
    data = f.read()
assert len(data) == 1600000 + 14, len(data)
"#;

#[test]
fn tools_give_the_same_tree_as_a_local_dir() {
    let test = "tools_give_the_same_tree_as_a_local_dir";
    if !require_fuse(test) {
        return;
    }
    let tmp = tempdir("ds-tools");
    let src = make_tree(&tmp.path().join("src"), &TreeSpec::kubo(21, 0));
    // a modified copy for an rsync update: changed, removed and new files
    let src2 = tmp.path().join("src2");
    bash(
        tmp.path(),
        "cp -a src src2 && printf 'changed!\\n' > src2/hello.txt && touch -d @1234567890 src2/hello.txt \
         && rm src2/a/b/sibling.txt && head -c 300000 /dev/urandom > src2/new.bin && chmod 600 src2/new.bin \
         && head -c 1048577 /dev/urandom > src2/sizes/1.bin",
        NOENV,
        60,
    )
    .unwrap();
    let tarball = tmp.path().join("t.tar");
    bash(tmp.path(), "tar -cf t.tar -C src .", NOENV, 60).unwrap();
    let local = tmp.path().join("local");
    fs::create_dir(&local).unwrap();

    let m = ds_mount();
    let ds = mkds(&m, "tools");
    let mut failures = Vec::new();
    let env: [(&str, &std::ffi::OsStr); 5] = [
        ("SRC", src.as_os_str()),
        ("SRC2", src2.as_os_str()),
        ("TARBALL", tarball.as_os_str()),
        ("VIMSAVE_SCRIPT", std::ffi::OsStr::new(VIM_STYLE_SAVE)),
        ("OOO_SCRIPT", std::ffi::OsStr::new(OUT_OF_ORDER_WRITES)),
    ];
    let steps: &[(&str, &str)] = &[
        ("cp -r", r#"cp -r "$SRC" tree"#),
        ("cp -a", r#"cp -a "$SRC" tree_a"#),
        ("rsync -a", r#"rsync -a "$SRC"/ rs/"#),
        (
            "rsync -a update (temp name + rename over)",
            r#"rsync -a --delete "$SRC2"/ rs/"#,
        ),
        ("tar -x", r#"mkdir tarx && tar -xf "$TARBALL" -C tarx"#),
        (
            "echo >> (appends)",
            r#"echo first >> log.txt; echo second >> log.txt; printf 'x%.0s' $(seq 5000) >> log.txt
               echo tail >> tree/hello.txt
               head -c 1500000 /dev/zero | tr '\0' z >> tree/sizes/1048577.bin
               echo more >> tree/empty.txt"#,
        ),
        (
            "mv (files, dirs, over existing targets)",
            r#"mv log.txt log2.txt
               mv tree/a moved_a
               mv tree/hello.txt tree/empty.txt
               mkdir e1 e2; echo in-e1 > e1/f; mv -T e1 e2
               mv rs/sizes tarx/sizes-from-rs
               mv tree_a/odd tree_a/odd-renamed
               mv tree/sizes/2.bin tree/sizes/1.bin"#,
        ),
        (
            "rm -r",
            r#"rm -r tree_a/odd-renamed; rm -rf moved_a/b; rm -r tarx/a"#,
        ),
        (
            "sed -i",
            r#"sed -i 's/hello/HELLO/; s/world/WORLD/' tarx/hello.txt; sed -i '1d' log2.txt"#,
        ),
        (
            "vim-style save (swap with random writes + fsync, rename over)",
            "python3 -c \"$VIMSAVE_SCRIPT\" .",
        ),
        (
            "vim -es",
            r#"vim -u NONE -i NONE -N -es -c '%s/ñandú/NANDU/' -c 'wq' 'tree/dir with spaces/ñ/file.txt'"#,
        ),
        (
            "truncate, dd conv=notrunc, ln -s, mkdir -p/rmdir",
            r#"truncate -s 100 tree/sizes/2500000.bin
               truncate -s 3000000 tree/sizes/262144.bin
               truncate -s 0 tree/sizes/4097.bin
               printf PATCH | dd of=tree/sizes/65536.bin bs=1 seek=1000 conv=notrunc status=none
               ln -s tree/empty.txt sym_rel; ln -s /abs/nowhere sym_abs
               mkdir -p newdir/x/y; rmdir newdir/x/y"#,
        ),
        (
            "out-of-order writes, O_APPEND, ftruncate (python)",
            "python3 -c \"$OOO_SCRIPT\" .",
        ),
        (
            "chmod, touch -d",
            r#"chmod 600 tree/empty.txt; chmod 700 tree/sizes; chmod 755 log2.txt
               touch -d @1000000000 rs/empty.txt; touch -d @1500000000 newdir"#,
        ),
    ];
    let mut seen = std::collections::HashSet::new();
    for (name, script) in steps {
        let mut outcomes = Vec::new();
        for dir in [&local, &ds] {
            outcomes.push(bash(dir, script, &env, 300));
        }
        match (&outcomes[0], &outcomes[1]) {
            (Ok(_), Ok(_)) => {}
            (Err(e), _) => panic!("step {name:?} fails on a local dir (test bug): {e}"),
            (Ok(_), Err(e)) => failures.push(format!("step {name:?} fails in the dataset: {e}")),
        }
        // report only differences that this step introduced (an earlier one stays in the list once)
        if let Err(e) = compare_trees(&local, &ds, Symlinks::Preserve) {
            let new: Vec<&str> = e.lines().filter(|l| seen.insert(l.to_string())).collect();
            if !new.is_empty() {
                failures.push(format!(
                    "after step {name:?}, the dataset differs from the local dir:\n{}",
                    new.join("\n")
                ));
            }
        }
    }
    for e in compare_meta(&local, &ds, &["rs", "tree_a"]) {
        failures.push(format!("metadata: {e}"));
    }
    // every file's user.ipfs.cid answers; the dataset root reads back under /ipfs
    match xattr(&ds, "user.ipfs.cid", 300) {
        Ok(root) => {
            if let Err(e) = compare_trees(&local, &m.ipfs(&root), Symlinks::Preserve) {
                failures.push(format!(
                    "/ipfs/{root} (the final version) differs from the local dir:\n{e}"
                ));
            }
        }
        Err(e) => failures.push(e),
    }
    finish(&m, test, &failures);
}

// ---------------------------------------------------------------------------------------------------------------
// 3. Versions and the commit chain
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn versions_and_commit_chain() {
    let test = "versions_and_commit_chain";
    if !require_fuse(test) {
        return;
    }
    let tmp = tempdir("ds-versions");
    let m = ds_mount();
    let ds = mkds(&m, "v");
    let mut failures = Vec::new();
    let snap = |k: usize| tmp.path().join(format!("snap{k}"));

    // version A: a few files; B: modified, C: removed/renamed; each snapshotted on a local dir too
    let steps = [
        "mkdir sub && printf 'one\\n' > sub/a.txt && cp \"$BIG\" big.bin && printf 'keep\\n' > keep.txt",
        "printf 'TWO\\n' > sub/a.txt && echo appended >> big.bin && mkdir empty",
        "rm big.bin && mv sub sub2 && ln -s keep.txt k",
    ];
    let mut roots = Vec::new();
    let mut commits = Vec::new();
    let work = tmp.path().join("work");
    fs::create_dir(&work).unwrap();
    let big = tmp.path().join("big.src");
    write_random_file(&big, 2_000_000, 77);
    let env = [("BIG", big.as_os_str())];
    for (k, s) in steps.iter().enumerate() {
        bash(&work, s, &env, 120).unwrap_or_else(|e| panic!("on a local dir (test bug): {e}"));
        if let Err(e) = bash(&ds, s, &env, 120) {
            failures.push(format!("step {k}: {e}"));
        }
        bash(
            tmp.path(),
            &format!("cp -a work '{}'", snap(k).display()),
            NOENV,
            120,
        )
        .unwrap();
        if let Err(e) = compare_trees(&work, &ds, Symlinks::Preserve) {
            failures.push(format!(
                "after step {k} the dataset differs from the local dir:\n{e}"
            ));
        }
        roots.push(root_cid(&ds));
        commits.push(head_commit(&ds));
    }
    for k in 1..roots.len() {
        if roots[k] == roots[k - 1] || commits[k] == commits[k - 1] {
            failures.push(format!(
                "step {k} changed the tree but root/commit stayed: roots {:?} commits {:?}",
                roots, commits
            ));
        }
    }
    // old roots still read their own content
    for (k, r) in roots.iter().enumerate() {
        if let Err(e) = compare_trees(&snap(k), &m.ipfs(r), Symlinks::Preserve) {
            failures.push(format!(
                "/ipfs/{r} (version after step {k}) differs from its snapshot:\n{e}"
            ));
        }
    }
    // the chain: head -> ... -> genesis (prev null), seq strictly decreasing, each root readable, ours included
    let mut cur = Some(commits.last().unwrap().clone());
    let mut seen_roots = Vec::new();
    let mut last_seq: Option<u64> = None;
    let mut n = 0;
    while let Some(c) = cur.take() {
        n += 1;
        if n > 10_000 {
            failures.push("commit chain longer than 10000 (a cycle?)".into());
            break;
        }
        let v = match read_commit(&m, &c) {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!("commit chain: {e}"));
                break;
            }
        };
        let (Some(root), Some(seq)) = (
            v.get("root").and_then(link),
            v.get("seq").and_then(|s| s.as_u64()),
        ) else {
            failures.push(format!("commit {c} lacks root or seq: {v}"));
            break;
        };
        if v.get("time").and_then(|t| t.as_i64()).is_none() {
            failures.push(format!("commit {c} lacks an integer time: {v}"));
        }
        if let Some(ls) = last_seq {
            if seq >= ls {
                failures.push(format!(
                    "commit {c}: seq {seq} not below its successor's {ls}"
                ));
            }
        }
        last_seq = Some(seq);
        if let Err(e) = fs::read_dir(m.ipfs(&root)) {
            failures.push(format!("commit {c}: root /ipfs/{root} unreadable: {e}"));
        }
        seen_roots.push(root);
        match v.get("prev") {
            Some(serde_json::Value::Null) | None => {}
            Some(p) => match link(p) {
                Some(p) => cur = Some(p),
                None => failures.push(format!("commit {c}: prev is neither null nor a link: {p}")),
            },
        }
    }
    for r in &roots {
        if !seen_roots.contains(r) {
            failures.push(format!(
                "root {r} (recorded after a step) is not in the commit chain"
            ));
        }
    }
    if let Some(first) = commits.first() {
        // the sequence grows with the chain
        let s0 = read_commit(&m, first).ok().and_then(|v| v["seq"].as_u64());
        let s1 = read_commit(&m, commits.last().unwrap())
            .ok()
            .and_then(|v| v["seq"].as_u64());
        if !(s0.is_some() && s1.is_some() && s1 > s0) {
            failures.push(format!(
                "seq did not grow from the first to the last step: {s0:?} -> {s1:?}"
            ));
        }
    }
    // HEAD file in the store names the head commit on its first line (then the journal position)
    match fs::read_to_string(m.store.join("datasets/v/HEAD")) {
        Ok(h) if h.lines().next().map(str::trim) == Some(commits.last().unwrap().as_str()) => {}
        Ok(h) => failures.push(format!(
            "<store>/datasets/v/HEAD is {:?}, user.ipfs.commit {}",
            h.trim(),
            commits.last().unwrap()
        )),
        Err(e) => failures.push(format!("<store>/datasets/v/HEAD: {e}")),
    }
    eprintln!("commit chain: {n} commits");
    // the CLI shows the same history (while mounted)
    let log = run(Command::new(BIN)
        .args(["dataset", "--store"])
        .arg(&m.store)
        .args(["log", "v"]));
    if !log.status.success() {
        failures.push(format!(
            "ipfs-mount dataset log v: {}: {}",
            log.status,
            String::from_utf8_lossy(&log.stderr)
        ));
    } else {
        let text = String::from_utf8_lossy(&log.stdout).into_owned();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        if lines.len() != n {
            failures.push(format!(
                "ipfs-mount dataset log v: {} lines, the chain has {n} commits",
                lines.len()
            ));
        }
        if !lines.first().is_some_and(|l| {
            l.contains(commits.last().unwrap().as_str())
                && l.contains(roots.last().unwrap().as_str())
        }) {
            failures.push(format!(
                "ipfs-mount dataset log v: first line {:?} does not name the head commit and root",
                lines.first()
            ));
        }
    }
    let list = run(Command::new(BIN)
        .args(["dataset", "--store"])
        .arg(&m.store)
        .arg("list"));
    let text = String::from_utf8_lossy(&list.stdout).into_owned();
    if !list.status.success()
        || !text.lines().any(|l| {
            l.split_whitespace().next() == Some("v") && l.contains(roots.last().unwrap().as_str())
        })
    {
        failures.push(format!(
            "ipfs-mount dataset list: {} {text:?} {}, expected a line for v with its root",
            list.status,
            String::from_utf8_lossy(&list.stderr)
        ));
    }
    finish(&m, test, &failures);
}

// ---------------------------------------------------------------------------------------------------------------
// 4. Remount
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn datasets_survive_remount() {
    let test = "datasets_survive_remount";
    if !require_fuse(test) {
        return;
    }
    let tmp = tempdir("ds-remount");
    let src = make_tree(&tmp.path().join("src"), &TreeSpec::kubo(31, 5 * MIB));
    let mut m = ds_mount();
    let mut failures = Vec::new();
    let a = mkds(&m, "alpha");
    let b = mkds(&m, "beta");
    bash(
        tmp.path(),
        &format!("cp -a src/. '{}'", a.display()),
        NOENV,
        300,
    )
    .unwrap_or_else(|e| m.fail(&e));
    bash(
        &b,
        "echo beta > b.txt && chmod 640 b.txt && touch -d @1111111111 b.txt && mkdir d && chmod 711 d",
        NOENV,
        60,
    )
    .unwrap_or_else(|e| m.fail(&e));
    let _empty = mkds(&m, "empty");
    let before: Vec<(String, String, String)> = ["alpha", "beta", "empty"]
        .iter()
        .map(|n| {
            let d = m.mnt.join("datasets").join(n);
            (n.to_string(), root_cid(&d), head_commit(&d))
        })
        .collect();

    m.restart();
    let names: Vec<String> = match fs::read_dir(m.mnt.join("datasets")) {
        Ok(rd) => {
            let mut v: Vec<String> = rd
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        }
        Err(e) => m.fail(&format!("readdir datasets after remount: {e}")),
    };
    if names != ["alpha", "beta", "empty"] {
        failures.push(format!(
            "datasets after remount: {names:?}, expected [alpha, beta, empty]"
        ));
    }
    for (n, root, commit) in &before {
        let d = m.mnt.join("datasets").join(n);
        match xattr(&d, "user.ipfs.cid", 300) {
            Ok(r) if &r == root => {}
            Ok(r) => failures.push(format!("{n}: root {r} after remount, {root} before")),
            Err(e) => failures.push(e),
        }
        match xattr(&d, "user.ipfs.commit", 300) {
            Ok(c) if &c == commit => {}
            Ok(c) => failures.push(format!("{n}: commit {c} after remount, {commit} before")),
            Err(e) => failures.push(e),
        }
    }
    if let Err(e) = compare_trees(&src, &a, Symlinks::Preserve) {
        failures.push(format!("alpha after remount differs from its source:\n{e}"));
    }
    for e in compare_meta(&src, &a, &[""]) {
        failures.push(format!("alpha (cp -a) after remount: {e}"));
    }
    let bt = b.join("b.txt");
    match fs::metadata(&bt) {
        Ok(md) => {
            if md.mode() & 0o7777 != 0o640 {
                failures.push(format!(
                    "beta/b.txt mode {:o} after remount, set 640",
                    md.mode() & 0o7777
                ));
            }
            if md.mtime() != 1111111111 {
                failures.push(format!(
                    "beta/b.txt mtime {} after remount, set 1111111111",
                    md.mtime()
                ));
            }
        }
        Err(e) => failures.push(format!("stat beta/b.txt after remount: {e}")),
    }
    match fs::metadata(b.join("d")) {
        Ok(md) if md.mode() & 0o7777 == 0o711 => {}
        Ok(md) => failures.push(format!(
            "beta/d mode {:o} after remount, set 711",
            md.mode() & 0o7777
        )),
        Err(e) => failures.push(format!("stat beta/d after remount: {e}")),
    }
    // writes continue the chain after a remount
    let old_commit = before[1].2.clone();
    match bash(&b, "echo more >> b.txt && cat b.txt", NOENV, 60) {
        Ok(out) if out == "beta\nmore\n" => {}
        Ok(out) => failures.push(format!("append after remount: b.txt reads {out:?}")),
        Err(e) => failures.push(format!("append after remount: {e}")),
    }
    if let Ok(c) = xattr(&b, "user.ipfs.commit", 300) {
        match read_commit(&m, &c) {
            Ok(v) if link(&v["prev"]).is_some() => {}
            Ok(v) => failures.push(format!("commit after remount has no prev: {v}")),
            Err(e) => failures.push(e),
        }
        let mut cur = Some(c);
        let mut found = false;
        for _ in 0..100 {
            let Some(cc) = cur.take() else { break };
            if cc == old_commit {
                found = true;
                break;
            }
            cur = read_commit(&m, &cc).ok().and_then(|v| link(&v["prev"]));
        }
        if !found {
            failures.push(format!(
                "the commit chain after remount does not reach the pre-remount head {old_commit}"
            ));
        }
    }
    finish(&m, test, &failures);
}

// ---------------------------------------------------------------------------------------------------------------
// 5. Refused operations and ordinary errors
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn refused_operations_and_errors() {
    let test = "refused_operations_and_errors";
    if !require_fuse(test) {
        return;
    }
    let m = ds_mount();
    let a = mkds(&m, "ea");
    let b = mkds(&m, "eb");
    let mut f = Vec::new();
    fs::write(a.join("f.txt"), b"content\n")
        .unwrap_or_else(|e| m.fail(&format!("write ea/f.txt: {e}")));
    fs::create_dir(a.join("dir")).unwrap_or_else(|e| m.fail(&format!("mkdir ea/dir: {e}")));
    fs::write(a.join("dir/inner"), b"x")
        .unwrap_or_else(|e| m.fail(&format!("write ea/dir/inner: {e}")));

    expect_errno(
        &mut f,
        "rename ea/f.txt -> eb/f.txt (across datasets)",
        fs::rename(a.join("f.txt"), b.join("f.txt")),
        &[libc::EXDEV],
    );
    expect_errno(
        &mut f,
        "rename ea/dir -> eb/dir (directory across datasets)",
        fs::rename(a.join("dir"), b.join("dir")),
        &[libc::EXDEV],
    );
    expect_errno(
        &mut f,
        "link ea/f.txt -> ea/hard (hard link)",
        fs::hard_link(a.join("f.txt"), a.join("hard")),
        &[libc::EPERM],
    );
    expect_errno(
        &mut f,
        "setxattr user.foo on ea/f.txt",
        setxattr(&a.join("f.txt"), "user.foo", b"bar"),
        &[libc::ENOTSUP],
    );
    expect_errno(
        &mut f,
        "setxattr user.foo on dataset ea",
        setxattr(&a, "user.foo", b"bar"),
        &[libc::ENOTSUP],
    );
    expect_errno(
        &mut f,
        "rmdir ea/dir (not empty)",
        fs::remove_dir(a.join("dir")),
        &[libc::ENOTEMPTY],
    );
    expect_errno(
        &mut f,
        "rmdir datasets/ea (not empty dataset)",
        fs::remove_dir(&a),
        &[libc::ENOTEMPTY],
    );
    expect_errno(
        &mut f,
        "mkdir ea/dir (exists)",
        fs::create_dir(a.join("dir")),
        &[libc::EEXIST],
    );
    expect_errno(
        &mut f,
        "mkdir ea/f.txt (a file exists)",
        fs::create_dir(a.join("f.txt")),
        &[libc::EEXIST],
    );
    expect_errno(
        &mut f,
        "mkdir datasets/ea (dataset exists)",
        fs::create_dir(&a),
        &[libc::EEXIST],
    );
    expect_errno(
        &mut f,
        "open(O_CREAT|O_EXCL) ea/f.txt (exists)",
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(a.join("f.txt")),
        &[libc::EEXIST],
    );
    expect_errno(
        &mut f,
        "rename ea/dir over ea/f.txt (dir over file)",
        fs::rename(a.join("dir"), a.join("f.txt")),
        &[libc::ENOTDIR],
    );
    expect_errno(
        &mut f,
        "unlink ea/dir (a directory)",
        fs::remove_file(a.join("dir")),
        &[libc::EISDIR, libc::EPERM],
    );
    expect_errno(
        &mut f,
        "open ea/missing",
        File::open(a.join("missing")),
        &[libc::ENOENT],
    );

    // fallocate / copy_file_range
    {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(a.join("f.txt"));
        match file {
            Ok(file) => {
                use std::os::fd::AsRawFd;
                // SAFETY: a valid descriptor.
                let r = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, 1 << 20) };
                let res = if r < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(r)
                };
                expect_errno(&mut f, "fallocate ea/f.txt", res, &[libc::EOPNOTSUPP]);
                drop(file);
            }
            Err(e) => f.push(format!("open ea/f.txt read-write: {e}")),
        }
        // copy_file_range: refused by the filesystem; the kernel may fall back to a plain copy, which must then be
        // exact.
        let src = File::open(a.join("f.txt"));
        let dst = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(a.join("cfr.txt"));
        if let (Ok(src), Ok(dst)) = (src, dst) {
            use std::os::fd::AsRawFd;
            // SAFETY: valid descriptors; null offsets use the file positions.
            let r = unsafe {
                libc::copy_file_range(
                    src.as_raw_fd(),
                    std::ptr::null_mut(),
                    dst.as_raw_fd(),
                    std::ptr::null_mut(),
                    8,
                    0,
                )
            };
            let err = std::io::Error::last_os_error();
            drop(dst);
            if r < 0 {
                let e = err.raw_os_error().unwrap_or(-1);
                if e != libc::EOPNOTSUPP && e != libc::EXDEV && e != libc::ENOSYS {
                    f.push(format!(
                        "copy_file_range ea/f.txt -> ea/cfr.txt: {}, expected EOPNOTSUPP",
                        errno_name(e)
                    ));
                }
            } else if fs::read(a.join("cfr.txt")).ok().as_deref()
                != Some(&b"content\n"[..r as usize])
            {
                f.push(format!(
                    "copy_file_range copied {r} bytes but ea/cfr.txt does not read them back"
                ));
            }
        } else {
            f.push("could not open ea/f.txt and create ea/cfr.txt for copy_file_range".into());
        }
    }

    // xattrs we can read
    for n in ["user.ipfs.cid", "user.ipfs.commit"] {
        if let Err(e) = xattr(&a, n, 300) {
            f.push(e);
        }
    }
    if let Err(e) = xattr(&a.join("f.txt"), "user.ipfs.cid", 300) {
        f.push(e);
    }
    // security.capability: answered (ENODATA), not an error that breaks writes
    match lgetxattr(&a.join("f.txt"), "security.capability") {
        Err(e) if e == libc::ENODATA || e == libc::ENOTSUP => {}
        other => f.push(format!(
            "getxattr security.capability ea/f.txt: {other:?}, expected ENODATA"
        )),
    }

    // /ipfs is read-only
    let root = root_cid(&a);
    let ipfs_root = m.ipfs(&root);
    expect_errno(
        &mut f,
        "create /ipfs/<root>/new.txt",
        File::create(ipfs_root.join("new.txt")),
        &[libc::EROFS],
    );
    expect_errno(
        &mut f,
        "open /ipfs/<root>/f.txt for writing",
        OpenOptions::new().write(true).open(ipfs_root.join("f.txt")),
        &[libc::EROFS],
    );
    expect_errno(
        &mut f,
        "mkdir /ipfs/<root>/d",
        fs::create_dir(ipfs_root.join("d")),
        &[libc::EROFS],
    );
    expect_errno(
        &mut f,
        "unlink /ipfs/<root>/f.txt",
        fs::remove_file(ipfs_root.join("f.txt")),
        &[libc::EROFS],
    );
    expect_errno(
        &mut f,
        "create /ipfs/new.txt",
        File::create(m.mnt.join("ipfs/new.txt")),
        &[libc::EROFS],
    );
    expect_errno(
        &mut f,
        "rename /ipfs/<root>/f.txt -> datasets/ea/g.txt",
        fs::rename(ipfs_root.join("f.txt"), a.join("g.txt")),
        &[libc::EROFS, libc::EXDEV],
    );
    expect_errno(
        &mut f,
        "create /ipns/x",
        File::create(m.mnt.join("ipns/x")),
        &[libc::EROFS],
    );
    expect_errno(
        &mut f,
        "create <mnt>/x (root)",
        File::create(m.mnt.join("x")),
        &[libc::EROFS, libc::EPERM, libc::EACCES],
    );
    expect_errno(
        &mut f,
        "create datasets/file.txt (a file where datasets go)",
        File::create(m.mnt.join("datasets/file.txt")),
        &[libc::EPERM, libc::EROFS, libc::EACCES, libc::EINVAL],
    );

    // rmdir of an empty dataset removes its name
    let e = mkds(&m, "gone");
    drop(e);
    match fs::remove_dir(m.mnt.join("datasets/gone")) {
        Ok(()) => {
            if m.mnt.join("datasets/gone").exists() {
                f.push("rmdir datasets/gone succeeded but it is still there".into());
            }
        }
        Err(e) => f.push(format!("rmdir of an empty dataset: {e}")),
    }
    // and after all that, ea still holds exactly what we wrote (nothing half-done by the refused calls)
    let mut names: Vec<String> = fs::read_dir(&a)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    if names != ["cfr.txt", "dir", "f.txt"] {
        f.push(format!(
            "ea holds {names:?} after the refused calls, expected [cfr.txt, dir, f.txt]"
        ));
    }
    if fs::read(a.join("f.txt")).ok().as_deref() != Some(b"content\n") {
        f.push("ea/f.txt changed by the refused calls".into());
    }
    if fs::read_dir(&b).map(|rd| rd.count()).unwrap_or(99) != 0 {
        f.push("eb is not empty after refused cross-dataset renames".into());
    }
    finish(&m, test, &f);
}

// ---------------------------------------------------------------------------------------------------------------
// 6. DuckDB
// ---------------------------------------------------------------------------------------------------------------

const DUCKDB_WRITE_QUERY: &str = r#"
import duckdb, sys, os, glob, json
d = sys.argv[1]
con = duckdb.connect()
con.execute(f"COPY (select range as i, range*2 as j, 'row ' || range as s from range(200000)) TO '{d}/t.parquet' (FORMAT parquet)")
con.execute(f"COPY (select range as i, range*3 as j from range(100000)) TO '{d}/u.parquet' (FORMAT parquet, ROW_GROUP_SIZE 10000)")
con.execute(f"COPY (select range as i, range*2 as j from range(200000)) TO '{d}/t.csv' (FORMAT csv, HEADER)")
# replacing an existing file (DuckDB goes through tmp_<name> + rename)
con.execute(f"COPY (select range as i, range*5 as j from range(50000)) TO '{d}/u.parquet' (FORMAT parquet)")
con.execute(f"COPY (select range as i, range % 7 as p, range*2 as j from range(300000)) TO '{d}/part' (FORMAT parquet, PARTITION_BY (p))")
out = {}
out["sum_parquet"] = con.execute(f"select count(*), sum(j) from read_parquet('{d}/*.parquet')").fetchall()
out["sum_t"] = con.execute(f"select count(*), sum(j), min(s), max(s) from read_parquet('{d}/t.parquet')").fetchall()
out["sum_u"] = con.execute(f"select count(*), sum(j) from read_parquet('{d}/u.parquet')").fetchall()
out["sum_csv"] = con.execute(f"select count(*), sum(j) from read_csv('{d}/t.csv')").fetchall()
out["hive"] = con.execute(f"select p, count(*), sum(j) from read_parquet('{d}/part/**/*.parquet', hive_partitioning=true) group by p order by p").fetchall()
out["hive_filter"] = con.execute(f"select count(*) from read_parquet('{d}/part/**/*.parquet', hive_partitioning=true) where p = 3").fetchall()
out["glob"] = sorted(os.path.relpath(p, d) for p in glob.glob(f"{d}/*"))
out["part_dirs"] = sorted(os.listdir(f"{d}/part"))
sizes = {}
for root, dirs, files in os.walk(d):
    for fn in files:
        p = os.path.join(root, fn)
        with open(p, "rb") as f:
            n = len(f.read())
        if n != os.stat(p).st_size:
            sizes[os.path.relpath(p, d)] = [os.stat(p).st_size, n]
out["size_mismatch"] = sizes
print(json.dumps(out, default=str, sort_keys=True))
"#;

#[test]
fn duckdb_into_a_dataset() {
    let test = "duckdb_into_a_dataset";
    if !require_fuse(test) || !python_has(test, "duckdb") {
        return;
    }
    let tmp = tempdir("ds-duckdb");
    let local = tmp.path().join("local");
    fs::create_dir(&local).unwrap();
    let want = python(DUCKDB_WRITE_QUERY, &[&local], 300)
        .unwrap_or_else(|e| panic!("duckdb on a local dir: {e}"));
    let m = ds_mount();
    let ds = mkds(&m, "d");
    let mut failures = Vec::new();
    match python(DUCKDB_WRITE_QUERY, &[&ds], 600) {
        Ok(got) => {
            if got.trim() != want.trim() {
                let w: serde_json::Value = serde_json::from_str(want.trim()).unwrap();
                let g: serde_json::Value =
                    serde_json::from_str(got.trim()).unwrap_or(serde_json::Value::Null);
                for k in w.as_object().unwrap().keys() {
                    if w[k] != g[k] {
                        failures.push(format!("duckdb {k}: dataset {}, local dir {}", g[k], w[k]));
                    }
                }
            }
        }
        Err(e) => failures.push(format!("duckdb in the dataset: {e}")),
    }
    // the committed version reads back through /ipfs with the same query results
    if let Ok(root) = xattr(&ds, "user.ipfs.cid", 300) {
        let q = r#"
import duckdb, sys
d = sys.argv[1]
con = duckdb.connect()
print(con.execute(f"select count(*), sum(j) from read_parquet('{d}/*.parquet')").fetchall())
print(con.execute(f"select p, count(*) from read_parquet('{d}/part/**/*.parquet', hive_partitioning=true) group by p order by p").fetchall())
"#;
        let a = python(q, &[&local], 120);
        let b = python(q, &[&m.ipfs(&root)], 120);
        if a != b {
            failures.push(format!("duckdb over /ipfs/{root}: {b:?}, local {a:?}"));
        }
    }
    finish(&m, test, &failures);
}

// ---------------------------------------------------------------------------------------------------------------
// 7. pandas / pyarrow
// ---------------------------------------------------------------------------------------------------------------

const PANDAS_SCRIPT: &str = r#"
import sys, json, os
import pandas as pd, pyarrow as pa, pyarrow.parquet as pq
d = sys.argv[1]
df = pd.DataFrame({"i": range(100000), "s": ["v%d" % i for i in range(100000)], "f": [i / 7 for i in range(100000)]})
df.to_parquet(f"{d}/pd.parquet")
df.to_parquet(f"{d}/pd.parquet")  # overwrite
df.to_csv(f"{d}/pd.csv", index=False)
pq.write_table(pa.Table.from_pandas(df), f"{d}/pa.parquet", row_group_size=7000)
os.makedirs(f"{d}/ds", exist_ok=True)
pq.write_to_dataset(pa.Table.from_pandas(df.assign(k=df.i % 4)), f"{d}/ds", partition_cols=["k"])
back = pd.read_parquet(f"{d}/pd.parquet")
assert back.equals(df), "pd.parquet differs"
out = {
  "pd": [len(back), int(back.i.sum()), float(back.f.sum())],
  "pa": pq.read_table(f"{d}/pa.parquet").num_rows,
  "csv": int(pd.read_csv(f"{d}/pd.csv").i.sum()),
  "ds": sorted(pd.read_parquet(f"{d}/ds").groupby("k").size().astype(int).tolist()),
}
print(json.dumps(out, sort_keys=True))
"#;

#[test]
fn pandas_pyarrow_into_a_dataset() {
    let test = "pandas_pyarrow_into_a_dataset";
    if !require_fuse(test) || !python_has(test, "pandas, pyarrow") {
        return;
    }
    let tmp = tempdir("ds-pandas");
    let local = tmp.path().join("local");
    fs::create_dir(&local).unwrap();
    let want = python(PANDAS_SCRIPT, &[&local], 300)
        .unwrap_or_else(|e| panic!("pandas on a local dir: {e}"));
    let m = ds_mount();
    let ds = mkds(&m, "pd");
    let mut failures = Vec::new();
    match python(PANDAS_SCRIPT, &[&ds], 600) {
        Ok(got) if got.trim() == want.trim() => {}
        Ok(got) => failures.push(format!(
            "pandas/pyarrow: dataset {}, local {}",
            got.trim(),
            want.trim()
        )),
        Err(e) => failures.push(format!("pandas/pyarrow in the dataset: {e}")),
    }
    finish(&m, test, &failures);
}

// ---------------------------------------------------------------------------------------------------------------
// 8. kill -9 during writes and renames
// ---------------------------------------------------------------------------------------------------------------

/// Writes generations of self-describing files until the mount goes away. Every file's content is
/// `<name> g=<g> len=<n>\n` + n deterministic bytes (a function of name and g), so a reader can tell a complete
/// version from anything else. `appended` gets one such record per generation.
const CRASH_WRITER: &str = r#"
import os, sys, hashlib, shutil, time
d, base, progress = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def body(name, g):
    n = int(hashlib.sha256(f"len:{name}:{g}".encode()).hexdigest(), 16) % 1500000
    seed = hashlib.sha256(f"{name}:{g}".encode()).digest()
    b = (seed * (n // 32 + 1))[:n]
    return f"{name} g={g} len={n}\n".encode() + b
g = base
try:
    while True:
        g += 1
        for f in range(4):
            name = f"direct_{f}"
            with open(os.path.join(d, name), "wb") as fh:
                data = body(name, g)
                for i in range(0, len(data), 65536):
                    fh.write(data[i:i + 65536])
        for f in range(3):
            name = f"renamed_{f}"
            tmp = os.path.join(d, f".tmp_{name}")
            with open(tmp, "wb") as fh:
                fh.write(body(name, g))
            os.rename(tmp, os.path.join(d, name))
        with open(os.path.join(d, "appended"), "ab") as fh:
            fh.write(body("appended", g)[:4000])
        stage = os.path.join(d, f"stage_{g}")
        os.mkdir(stage)
        with open(os.path.join(stage, "part"), "wb") as fh:
            fh.write(body("part", g))
        os.rename(stage, os.path.join(d, f"pub_{g}"))
        old = os.path.join(d, f"pub_{g - 2}")
        if os.path.isdir(old):
            shutil.rmtree(old)
        with open(progress, "w") as p:
            p.write(str(g))
except OSError as e:
    print(f"writer stopped at g={g}: {e}", file=sys.stderr)
"#;

/// Checks every file in the dataset: each must be a complete version; prints "OK <n>" or the problems.
const CRASH_VERIFY: &str = r#"
import os, sys, hashlib, re
d = sys.argv[1]
def body(name, g):
    n = int(hashlib.sha256(f"len:{name}:{g}".encode()).hexdigest(), 16) % 1500000
    seed = hashlib.sha256(f"{name}:{g}".encode()).digest()
    b = (seed * (n // 32 + 1))[:n]
    return f"{name} g={g} len={n}\n".encode() + b
bad = []
checked = 0
def complete(name, data, path):
    m = re.match(rb"([a-z_0-9]+) g=(\d+) len=(\d+)\n", data)
    if not m or m.group(1).decode() != name:
        return f"{path}: {len(data)} bytes, not a complete version (starts {data[:40]!r})"
    want = body(name, int(m.group(2)))
    if data != want:
        return f"{path}: {len(data)} bytes, a torn version of g={int(m.group(2))} ({len(want)} bytes)"
    return None
for root, dirs, files in os.walk(d):
    for fn in files:
        p = os.path.join(root, fn)
        rel = os.path.relpath(p, d)
        try:
            with open(p, "rb") as fh:
                data = fh.read()
            st = os.stat(p)
        except OSError as e:
            bad.append(f"{rel}: read failed: {e}")
            continue
        checked += 1
        if st.st_size != len(data):
            bad.append(f"{rel}: st_size {st.st_size} but {len(data)} bytes read")
        if fn.startswith("direct_"):
            e = complete(fn, data, rel)
        elif fn.startswith(".tmp_renamed_"):
            e = complete(fn[len(".tmp_"):], data, rel)
        elif fn.startswith("renamed_"):
            e = complete(fn, data, rel)
        elif fn == "part" and re.match(r"(stage|pub)_\d+$", os.path.basename(root)):
            e = complete("part", data, rel)
        elif fn == "appended":
            e = None
            off = 0
            while off < len(data):
                m = re.match(rb"appended g=(\d+) len=(\d+)\n", data[off:off + 64])
                if not m:
                    e = f"{rel}: record at {off} of {len(data)} is not a complete append"
                    break
                rec = body("appended", int(m.group(1)))[:4000]
                if data[off:off + len(rec)] != rec:
                    e = f"{rel}: record at {off} (g={int(m.group(1))}) torn"
                    break
                off += len(rec)
        else:
            e = f"{rel}: unexpected file"
        if e:
            bad.append(e)
    for dn in dirs:
        if not re.match(r"(stage|pub)_\d+$", dn) or root != d:
            bad.append(f"{os.path.relpath(os.path.join(root, dn), d)}: unexpected directory")
if bad:
    print("\n".join(bad))
    sys.exit(1)
print(f"OK {checked}")
"#;

#[test]
fn kill9_during_writes_leaves_complete_versions() {
    let test = "kill9_during_writes_leaves_complete_versions";
    if !require_fuse(test) {
        return;
    }
    let tmp = tempdir("ds-crash");
    let mut m = ds_mount();
    mkds(&m, "c");
    let mut failures = Vec::new();
    let delays_ms = [1500u64, 2700, 900];
    for (round, delay) in delays_ms.iter().enumerate() {
        let ds = m.mnt.join("datasets/c");
        let progress = tmp.path().join(format!("progress{round}"));
        let mut writer = Command::new("python3")
            .arg("-c")
            .arg(CRASH_WRITER)
            .arg(&ds)
            .arg(((round + 1) * 1000).to_string())
            .arg(&progress)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // let it get going (at least one full generation), then kill the daemon mid-loop
        let t0 = Instant::now();
        while !progress.exists() && t0.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(*delay));
        let gens = fs::read_to_string(&progress).unwrap_or_default();
        if let Some(pid) = m.pid() {
            eprintln!("round {round}: kill -9 {pid} after generation {gens:?}");
        }
        m.kill9();
        // the writer must notice (ENOTCONN) and stop; if it hangs, stop it (our own child, by PID)
        let t1 = Instant::now();
        let mut exited = false;
        while t1.elapsed() < Duration::from_secs(30) {
            if writer.try_wait().unwrap().is_some() {
                exited = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if !exited {
            failures.push(format!(
                "round {round}: the writer did not fail within 30 s after kill -9 of the daemon"
            ));
            let _ = writer.kill();
        }
        // reaps it (or returns the status `try_wait` already collected)
        let _ = writer.wait();
        let mut err = String::new();
        if let Some(mut s) = writer.stderr.take() {
            use std::io::Read;
            let _ = s.read_to_string(&mut err);
        }
        eprintln!("round {round}: writer: {}", err.trim());

        m.restart();
        let ds = m.mnt.join("datasets/c");
        if !ds.is_dir() {
            failures.push(format!(
                "round {round}: dataset c missing after kill -9 and remount"
            ));
            break;
        }
        match python(CRASH_VERIFY, &[&ds], 300) {
            Ok(out) => eprintln!("round {round}: verify {}", out.trim()),
            Err(e) => failures.push(format!("round {round}: after kill -9 + remount: {e}")),
        }
        // the committed root reads back under /ipfs as the same tree, and the chain is walkable
        match xattr(&ds, "user.ipfs.cid", 300) {
            Ok(root) => {
                if let Err(e) = compare_trees(&ds, &m.ipfs(&root), Symlinks::Preserve) {
                    failures.push(format!(
                        "round {round}: /ipfs/{root} differs from the dataset:\n{e}"
                    ));
                }
            }
            Err(e) => failures.push(format!("round {round}: {e}")),
        }
        match xattr(&ds, "user.ipfs.commit", 300) {
            Ok(c) => {
                let mut cur = Some(c);
                let mut n = 0;
                while let Some(cc) = cur.take() {
                    n += 1;
                    match read_commit(&m, &cc) {
                        Ok(v) => {
                            if let Some(r) = v.get("root").and_then(link) {
                                if let Err(e) = fs::read_dir(m.ipfs(&r)) {
                                    failures.push(format!(
                                        "round {round}: commit {cc}: root {r} unreadable: {e}"
                                    ));
                                    break;
                                }
                            }
                            cur = link(&v["prev"]);
                        }
                        Err(e) => {
                            failures.push(format!("round {round}: commit chain: {e}"));
                            break;
                        }
                    }
                    if n > 100_000 {
                        break;
                    }
                }
                eprintln!("round {round}: {n} commits in the chain");
            }
            Err(e) => failures.push(format!("round {round}: {e}")),
        }
        // and it is writable again
        if let Err(e) = fs::write(ds.join("direct_0"), b"x") {
            failures.push(format!("round {round}: write after remount: {e}"));
        }
        let _ = fs::remove_file(ds.join("direct_0"));
    }
    finish(&m, test, &failures);
}

/// The kernel keeps "no such entry" answers of dataset directories for a second (tools such as
/// `cp -t` look a name up twice before creating it). Whatever this mount then does to the
/// name (create, mkdir, rename onto it, symlink) shows at once: the kernel drops its own
/// negative entry when the change goes through it.
#[test]
fn names_looked_up_before_they_exist_appear_when_made() {
    let test = "names_looked_up_before_they_exist_appear_when_made";
    if !require_fuse(test) {
        return;
    }
    let m = ds_mount();
    let d = mkds(&m, "neg");
    fs::write(d.join("src"), b"moved\n").unwrap_or_else(|e| m.fail(&format!("write src: {e}")));
    let mut failures = Vec::new();
    for name in ["file", "dir", "renamed", "link"] {
        match fs::symlink_metadata(d.join(name)) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            other => failures.push(format!("{name} before it exists: {other:?}")),
        }
    }
    // Made at once, within the second the negative answers may be kept.
    let made = [
        ("file", fs::write(d.join("file"), b"new\n")),
        ("dir", fs::create_dir(d.join("dir"))),
        ("renamed", fs::rename(d.join("src"), d.join("renamed"))),
        ("link", std::os::unix::fs::symlink("file", d.join("link"))),
    ];
    for (name, r) in made {
        if let Err(e) = r {
            failures.push(format!("making {name}: {e}"));
        }
    }
    let checks: [(&str, Option<&[u8]>); 4] = [
        ("file", Some(b"new\n")),
        ("dir", None),
        ("renamed", Some(b"moved\n")),
        ("link", Some(b"new\n")),
    ];
    for (name, want) in checks {
        match (fs::metadata(d.join(name)), want) {
            (Ok(md), None) if md.is_dir() => {}
            (Ok(_), Some(bytes)) => match fs::read(d.join(name)) {
                Ok(got) if got == bytes => {}
                other => failures.push(format!("{name} right after it was made: {other:?}")),
            },
            other => failures.push(format!("{name} right after it was made: {:?}", other.0)),
        }
    }
    match fs::symlink_metadata(d.join("src")) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        other => failures.push(format!("src after it was renamed away: {other:?}")),
    }
    if !failures.is_empty() {
        m.fail(&failures.join("\n"));
    }
}
