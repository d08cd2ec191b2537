//! The public gateway-conformance fixtures (`../shared/fixtures/gateway-conformance`, see its INDEX.md), imported
//! with `ipfs-mount import` and read through a real mount with `--offline`.
//!
//! Expected contents were derived from the CARs independently of the code under test (decoded with a separate
//! tool and written down here as strings, lengths and SHA-256 digests); raw-leaf files are also checked against the
//! digest inside their own CID.

mod common;

use common::*;
use serde_json::json;
use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const DIR_WITH_FILES: &str = "bafybeihchr7vmgjaasntayyatmp5sv6xza57iy2h4xj7g46bpjij6yhrmy";
const SYMLINK: &str = "QmWvY6FaqFMS89YAQ9NAPjVP4WZKA1qbHbicc9HeSKQTgt";
const HAMT: &str = "bafybeidbclfqleg2uojchspzd4bob56dqetqjsj27gy2cq3klkkgxtpn4i";
const MISSING_BLOCK: &str = "QmYhmPjhFjYFyaoiuNzYv8WGavpSRDwdHWe5B4M5du5Rtk";
const DAG_CBOR: &str = "bafyreibs4utpgbn7uqegmd2goqz4bkyflre2ek2iwv743fhvylwi4zeeim";
const DAG_CBOR_LEAF: &str = "bafyreiaefvpp22slf5bzd4lqgzwbztqahwlldtqkpgmlhv7mh23pudle7y";
const DAG_JSON: &str = "baguqeeram5ujjqrwheyaty3w5gdsmoz6vittchvhk723jjqxk7hakxkd47xq";
const PLAIN_CBOR: &str = "bafireif3aymeikgfbofx533yf5vlx4kimzq6zmzmpra2mnzfsfnmv4hchm";
const PLAIN_JSON: &str = "bagaaierajjsnhsxqlgfrvknlt7z2heoljcgfv37cn45tu7mhmr23x3ekiboq";
const OUTSIDE_ROOT: &str = "bafybeicaj7kvxpcv4neaqzwhrqqmdstu4dhrwfpknrgebq6nzcecfucvyu";
const INSIDE_ROOT: &str = "bafybeibfevfxlvxp5vxobr5oapczpf7resxnleb7tkqmdorc4gl5cdva3y";
const PERCENT: &str = "bafybeig675grnxcmshiuzdaz2xalm6ef4thxxds6o6ypakpghm5kghpc34";
const TAR_FIXTURES: &str = "bafybeig6ka5mlwkl4subqhaiatalkcleo4jgnr3hqwvpmsqfca27cijp3i";

/// multiblock.txt in dir-with-files (and every file of the HAMT fixture): 1026 bytes of Lorem ipsum in five raw
/// leaves of 256, 256, 256, 256 and 2 bytes.
const MULTIBLOCK_LEN: usize = 1026;
const MULTIBLOCK_SHA256: &str = "998785f13287a9aabc2d7048e4c2905d502ff13ef40f2d135f163b5a762701c5";
const MULTIBLOCK_CID: &str = "bafybeigcisqd7m5nf3qmuvjdbakl5bdnh4ocrmacaqkpuh77qjvggmt2sa";

/// The car files listed in INDEX.md with their roots.
fn index(fixtures: &Path) -> Vec<(PathBuf, String)> {
    let text = fs::read_to_string(fixtures.join("INDEX.md")).unwrap();
    let mut out = Vec::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // | file | size | blocks | root |
        if cells.len() >= 6 && cells[1].ends_with(".car") {
            out.push((fixtures.join(cells[1]), cells[4].to_string()));
        }
    }
    assert!(
        out.len() >= 20,
        "INDEX.md lists {} CARs; expected the full set",
        out.len()
    );
    out
}

fn car(fixtures: &Path, rel: &str) -> PathBuf {
    let p = fixtures.join(rel);
    assert!(p.exists(), "fixture {} is missing", p.display());
    p
}

/// A store with these CARs imported (each must print exactly its root), mounted `--offline`.
fn mount_cars(fixtures: &Path, cars: &[(&str, &str)]) -> (TempDir, Mount) {
    let tmp = tempdir("conformance-store");
    let store = tmp.path().join("store");
    fs::create_dir_all(&store).unwrap();
    for (rel, root) in cars {
        let roots = import_car(&store, &[&car(fixtures, rel)]);
        assert_eq!(
            roots,
            vec![root.to_string()],
            "ipfs-mount import {rel} should print its root"
        );
    }
    let m = Mount::start_with_store(&store, &["--offline"]);
    (tmp, m)
}

fn read(m: &Mount, p: &Path) -> Vec<u8> {
    read_timeout(p, 30).unwrap_or_else(|e| m.fail(&format!("read {}: {e}", p.display())))
}

fn raw_cid_digest_matches(cid: &str, data: &[u8]) -> bool {
    let c = cid::Cid::try_from(cid).unwrap();
    c.codec() == 0x55
        && c.hash().code() == 0x12
        && c.hash().digest() == hex_decode(&sha256_hex(data))
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn import_prints_roots_and_ipfs_lists_them() {
    let Some(fx) = require_fixtures("import_prints_roots_and_ipfs_lists_them") else {
        return;
    };
    let tmp = tempdir("conformance-import");
    let store = tmp.path().join("store");
    fs::create_dir_all(&store).unwrap();
    let all = index(&fx);
    // Everything but the deliberately incomplete CAR, in one invocation: one root per line, in order.
    let complete: Vec<_> = all.iter().filter(|(_, r)| r != MISSING_BLOCK).collect();
    let paths: Vec<&Path> = complete.iter().map(|(p, _)| p.as_path()).collect();
    let roots = import_car(&store, &paths);
    let want: Vec<String> = complete.iter().map(|(_, r)| r.clone()).collect();
    assert_eq!(
        roots,
        want,
        "roots printed by `ipfs-mount import` for {} CARs",
        paths.len()
    );
    // Importing again is harmless.
    assert_eq!(import_car(&store, &paths[..1]), want[..1].to_vec());

    let m = Mount::start_with_store(&store, &["--offline"]);
    let listed: BTreeSet<String> = fs::read_dir(m.mnt.join("ipfs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    for r in &want {
        assert!(
            listed.contains(r),
            "/ipfs should list the pinned root {r}; it lists {listed:?}"
        );
    }
}

/// Every complete UnixFS fixture can be walked and read entirely, offline; raw-leaf files match their CID's digest.
#[test]
fn every_fixture_reads_offline() {
    let Some(fx) = require_fixtures("every_fixture_reads_offline") else {
        return;
    };
    let tmp = tempdir("conformance-all");
    let store = tmp.path().join("store");
    fs::create_dir_all(&store).unwrap();
    let all: Vec<_> = index(&fx)
        .into_iter()
        .filter(|(_, r)| r != MISSING_BLOCK)
        .collect();
    let paths: Vec<&Path> = all.iter().map(|(p, _)| p.as_path()).collect();
    import_car(&store, &paths);
    let m = Mount::start_with_store(&store, &["--offline"]);
    let mut files = 0;
    let mut raw_checked = 0;
    for (carp, root) in &all {
        let p = m.ipfs(root);
        fs::symlink_metadata(&p)
            .unwrap_or_else(|e| m.fail(&format!("stat {root} ({}): {e}", carp.display())));
        let mut stack = vec![p];
        while let Some(p) = stack.pop() {
            let md = fs::symlink_metadata(&p)
                .unwrap_or_else(|e| m.fail(&format!("stat {}: {e}", p.display())));
            // (user.* xattrs on symlinks are answered by the kernel itself: ENODATA.)
            let cid = if md.file_type().is_symlink() {
                String::new()
            } else {
                getfattr_cid(&p).unwrap_or_else(|e| m.fail(&e))
            };
            if md.is_dir() {
                let entries = fs::read_dir(&p)
                    .unwrap_or_else(|e| m.fail(&format!("readdir {}: {e}", p.display())));
                for e in entries {
                    stack.push(e.unwrap().path());
                }
            } else if md.file_type().is_symlink() {
                fs::read_link(&p)
                    .unwrap_or_else(|e| m.fail(&format!("readlink {}: {e}", p.display())));
            } else {
                let data = read(&m, &p);
                assert_eq!(
                    data.len() as u64,
                    md.len(),
                    "{}: st_size vs bytes read",
                    p.display()
                );
                files += 1;
                if cid.starts_with("bafkrei") {
                    assert!(
                        raw_cid_digest_matches(&cid, &data),
                        "{}: bytes do not hash to {cid}",
                        p.display()
                    );
                    raw_checked += 1;
                }
            }
        }
    }
    eprintln!(
        "{} fixtures: {files} files read, {raw_checked} checked against their raw CID",
        all.len()
    );
    assert!(
        files > 1000 && raw_checked > 10,
        "files {files}, raw-checked {raw_checked}"
    );
}

#[test]
fn dir_with_files() {
    let Some(fx) = require_fixtures("dir_with_files") else {
        return;
    };
    let (_t, m) = mount_cars(
        &fx,
        &[("path_gateway_unixfs/dir-with-files.car", DIR_WITH_FILES)],
    );
    let r = m.ipfs(DIR_WITH_FILES);
    let names: BTreeSet<String> = fs::read_dir(&r)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let want: BTreeSet<String> = ["ascii-copy.txt", "ascii.txt", "hello.txt", "multiblock.txt"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(names, want);
    assert_eq!(read(&m, &r.join("hello.txt")), b"hello world\n");
    assert_eq!(
        read(&m, &r.join("ascii.txt")),
        b"hello application/vnd.ipld.car\n"
    );
    assert_eq!(
        read(&m, &r.join("ascii-copy.txt")),
        b"hello application/vnd.ipld.car\n"
    );
    let mb = read(&m, &r.join("multiblock.txt"));
    assert_eq!(mb.len(), MULTIBLOCK_LEN);
    assert!(mb.starts_with(b"Lorem ipsum dolor sit amet, consectetur adipiscing elit."));
    assert!(mb.ends_with(b"Pellentesque habitant amet."));
    assert_eq!(sha256_hex(&mb), MULTIBLOCK_SHA256);
    // Exact sizes, and positional reads across the 256-byte leaf boundaries.
    assert_eq!(
        fs::metadata(r.join("multiblock.txt")).unwrap().len(),
        MULTIBLOCK_LEN as u64
    );
    assert_eq!(fs::metadata(r.join("hello.txt")).unwrap().len(), 12);
    for (off, len) in [
        (0, 1),
        (255, 2),
        (256, 256),
        (500, 300),
        (1023, 3),
        (1024, 2),
        (1025, 10),
        (1026, 5),
        (2000, 5),
    ] {
        let got = pread(&r.join("multiblock.txt"), off, len)
            .unwrap_or_else(|e| m.fail(&format!("pread {off}+{len}: {e}")));
        let end = (off as usize + len).min(MULTIBLOCK_LEN);
        let start = (off as usize).min(MULTIBLOCK_LEN);
        assert_eq!(got, &mb[start..end], "pread at {off}, {len} bytes");
    }
    // Directory and file kinds, read-only modes.
    let md = fs::metadata(&r).unwrap();
    assert!(md.is_dir());
    assert_eq!(
        md.permissions().mode() & 0o222,
        0,
        "no write bits on a directory under /ipfs"
    );
    let fm = fs::metadata(r.join("hello.txt")).unwrap();
    assert!(fm.is_file());
    assert_eq!(
        fm.permissions().mode() & 0o222,
        0,
        "no write bits on a file under /ipfs"
    );
    // CIDs.
    assert_eq!(getfattr_cid(&r).unwrap(), DIR_WITH_FILES);
    assert_eq!(
        getfattr_cid(&r.join("hello.txt")).unwrap(),
        "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"
    );
    assert_eq!(
        getfattr_cid(&r.join("multiblock.txt")).unwrap(),
        MULTIBLOCK_CID
    );
    // Tools.
    let out = run_ok(std::process::Command::new("cat").arg(r.join("multiblock.txt")));
    assert_eq!(out, mb);
    let ls = run(std::process::Command::new("ls").arg("-l").arg(&r));
    assert!(
        ls.status.success() && ls.stderr.is_empty(),
        "ls -l: {}",
        String::from_utf8_lossy(&ls.stderr)
    );
    assert!(
        String::from_utf8_lossy(&ls.stdout).contains(" 1026 "),
        "ls -l shows multiblock.txt's size"
    );
}

/// The same content under other spellings of the CID: CIDv1 in base36, base58btc, base16; CIDv0 as CIDv1.
#[test]
fn cid_spellings() {
    let Some(fx) = require_fixtures("cid_spellings") else {
        return;
    };
    let (_t, m) = mount_cars(
        &fx,
        &[
            ("path_gateway_unixfs/dir-with-files.car", DIR_WITH_FILES),
            ("path_gateway_unixfs/symlink.car", SYMLINK),
        ],
    );
    use cid::multibase::Base;
    let c = cid::Cid::try_from(DIR_WITH_FILES).unwrap();
    for base in [
        Base::Base36Lower,
        Base::Base58Btc,
        Base::Base16Lower,
        Base::Base32Upper,
    ] {
        let s = c.to_string_of_base(base).unwrap();
        let p = m.ipfs(&s).join("hello.txt");
        assert_eq!(read(&m, &p), b"hello world\n", "via {s}");
        let x = getfattr_cid(&m.ipfs(&s)).unwrap();
        assert_eq!(
            cid::Cid::try_from(x.as_str()).unwrap(),
            c,
            "user.ipfs.cid via {s}"
        );
    }
    let v0 = cid::Cid::try_from(SYMLINK).unwrap();
    let v1 = cid::Cid::new_v1(v0.codec(), *v0.hash()).to_string();
    assert_eq!(
        read(&m, &m.ipfs(&v1).join("foo")),
        b"content\n",
        "CIDv0 content via its CIDv1 {v1}"
    );
}

/// An identity CID carries its data: readable offline with nothing imported.
#[test]
fn identity_cid() {
    let Some(_fx) = require_fixtures("identity_cid") else {
        return;
    };
    let m = Mount::start(&["--offline"]);
    let data = b"hello from an identity multihash\n";
    let mh = multihash::Multihash::<64>::wrap(0x00, data).unwrap();
    let c = cid::Cid::new_v1(0x55, mh).to_string();
    assert_eq!(read(&m, &m.ipfs(&c)), data);
    assert_eq!(fs::metadata(m.ipfs(&c)).unwrap().len(), data.len() as u64);
}

#[test]
fn hamt_single_layer_with_multiblock_files() {
    let Some(fx) = require_fixtures("hamt_single_layer_with_multiblock_files") else {
        return;
    };
    let (_t, m) = mount_cars(
        &fx,
        &[(
            "trustless_gateway_car/single-layer-hamt-with-multi-block-files.car",
            HAMT,
        )],
    );
    let r = m.ipfs(HAMT);
    // Lookups before any listing (the HAMT path of each name).
    for n in [1, 500, 1000] {
        let p = r.join(format!("{n}.txt"));
        assert_eq!(
            fs::metadata(&p)
                .unwrap_or_else(|e| m.fail(&format!("stat {n}.txt: {e}")))
                .len(),
            MULTIBLOCK_LEN as u64
        );
    }
    assert_errno(
        fs::metadata(r.join("1001.txt")),
        libc::ENOENT,
        "lookup of 1001.txt",
    );
    assert_errno(
        fs::metadata(r.join("0.txt")),
        libc::ENOENT,
        "lookup of 0.txt",
    );
    // The listing: exactly 1.txt..1000.txt (no shard-prefixed names).
    let names: BTreeSet<String> = fs::read_dir(&r)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let want: BTreeSet<String> = (1..=1000).map(|i| format!("{i}.txt")).collect();
    if names != want {
        let extra: Vec<_> = names.difference(&want).take(10).collect();
        let missing: Vec<_> = want.difference(&names).take(10).collect();
        m.fail(&format!(
            "HAMT listing: {} names; unexpected {extra:?}, missing {missing:?}",
            names.len()
        ));
    }
    // Every entry reads as the 1026-byte multi-block file.
    for n in &names {
        let data = read(&m, &r.join(n));
        assert_eq!(sha256_hex(&data), MULTIBLOCK_SHA256, "{n}");
    }
    assert_eq!(getfattr_cid(&r.join("1.txt")).unwrap(), MULTIBLOCK_CID);
    assert_eq!(getfattr_cid(&r).unwrap(), HAMT);
    let ls = run(std::process::Command::new("ls").arg("-l").arg(&r));
    assert!(
        ls.status.success() && ls.stderr.is_empty(),
        "ls -l: {}",
        String::from_utf8_lossy(&ls.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&ls.stdout)
            .lines()
            .filter(|l| l.contains(".txt"))
            .count(),
        1000
    );
}

#[test]
fn symlink_fixture() {
    let Some(fx) = require_fixtures("symlink_fixture") else {
        return;
    };
    let (_t, m) = mount_cars(&fx, &[("path_gateway_unixfs/symlink.car", SYMLINK)]);
    let r = m.ipfs(SYMLINK);
    let md = fs::symlink_metadata(r.join("bar")).unwrap();
    assert!(md.file_type().is_symlink(), "bar is a symlink");
    assert_eq!(md.len(), 3, "a symlink's st_size is its target's length");
    assert_eq!(fs::read_link(r.join("bar")).unwrap(), Path::new("foo"));
    assert_eq!(read(&m, &r.join("foo")), b"content\n");
    assert_eq!(
        read(&m, &r.join("bar")),
        b"content\n",
        "reading through the symlink"
    );
    // user.* xattrs on a symlink never reach the filesystem (the kernel answers ENODATA), so no CID check here.
    assert_eq!(getfattr_cid(&r).unwrap(), SYMLINK);
    assert_eq!(
        getfattr_cid(&r.join("foo")).unwrap(),
        "Qme2y5HA5kvo2jAx13UsnV5bQJVijiAJCPvaW3JGQWhvJZ"
    );
    assert_errno(
        fs::read_link(r.join("foo")),
        libc::EINVAL,
        "readlink of a regular file",
    );
    let out = run_ok(std::process::Command::new("readlink").arg(r.join("bar")));
    assert_eq!(out, b"foo\n");
}

fn json_file(m: &Mount, cid: &str) -> serde_json::Value {
    let p = m.ipfs(cid);
    let md = fs::metadata(&p).unwrap_or_else(|e| m.fail(&format!("stat {cid}: {e}")));
    assert!(md.is_file(), "{cid} is shown as a regular file");
    let data = read(m, &p);
    assert_eq!(
        md.len(),
        data.len() as u64,
        "{cid}: st_size must equal the length of the text"
    );
    assert_eq!(getfattr_cid(&p).unwrap(), cid);
    serde_json::from_slice(&data).unwrap_or_else(|e| {
        m.fail(&format!(
            "{cid}: not JSON ({e}): {}",
            String::from_utf8_lossy(&data)
        ))
    })
}

#[test]
fn dag_cbor_and_dag_json_show_dag_json() {
    let Some(fx) = require_fixtures("dag_cbor_and_dag_json_show_dag_json") else {
        return;
    };
    let (_t, m) = mount_cars(
        &fx,
        &[
            ("path_gateway_dag/dag-cbor-traversal.car", DAG_CBOR),
            ("path_gateway_dag/dag-json-traversal.car", DAG_JSON),
            ("path_gateway_dag/plain-cbor.car", PLAIN_CBOR),
            ("path_gateway_dag/plain-json.car", PLAIN_JSON),
        ],
    );
    assert_eq!(
        json_file(&m, DAG_CBOR),
        json!({"foo": {"link": {"/": "bafyreig5alecq2l2akgajxywgnv22kuxh6xcagsnelepylqovt4t5jxt6u"},
                       "object": {"banana": 10, "monkey": false}}})
    );
    assert_eq!(
        json_file(&m, DAG_CBOR_LEAF),
        json!({"hello": "this is not a link"})
    );
    assert_eq!(
        json_file(&m, DAG_JSON),
        json!({"foo": {"link": {"/": "baguqeeraxpdqyfizawpb7zl5gnpg7jw3myuynb42ngzmeo7xn5kmm5pabt6q"},
                       "object": {"banana": 10, "monkey": false}}})
    );
    // Plain cbor and json codecs (doc/SEMANTICS.md: shown as dag-json text too).
    assert_eq!(json_file(&m, PLAIN_CBOR), json!({"test": "plain json"}));
    assert_eq!(json_file(&m, PLAIN_JSON), json!({"test": "plain json"}));
}

/// file-3k-and-3-blocks-missing-block: three 1024-byte leaves, the middle one absent. The present ranges read
/// right; any read touching the missing one is EIO (never zeros, never short).
#[test]
fn missing_block_is_eio_for_that_range() {
    let Some(fx) = require_fixtures("missing_block_is_eio_for_that_range") else {
        return;
    };
    let tmp = tempdir("conformance-missing");
    let store = tmp.path().join("store");
    fs::create_dir_all(&store).unwrap();
    let carp = car(
        &fx,
        "trustless_gateway_car/file-3k-and-3-blocks-missing-block.car",
    );
    assert_eq!(
        import_car(&store, &[&carp]),
        vec![MISSING_BLOCK.to_string()],
        "import of an incomplete DAG"
    );
    let m = Mount::start_with_store(&store, &["--offline"]);
    let p = m.ipfs(MISSING_BLOCK);
    assert_eq!(
        fs::metadata(&p)
            .unwrap_or_else(|e| m.fail(&format!("stat: {e}")))
            .len(),
        3072
    );
    // The whole file lies in one 4 KiB page, and buffered reads go through the page cache a page at a time, so
    // ranges are only distinguishable with O_DIRECT (FUSE then forwards each read's exact offset and size).
    let first = pread_direct(&p, 0, 1024)
        .unwrap_or_else(|e| m.fail(&format!("O_DIRECT pread 0..1024: {e}")));
    assert_eq!(
        sha256_hex(&first),
        "243f568483c68466b4ff8cfa62748ead1294f4c0e23b0f3fecf480bb363f8f84"
    );
    let last = pread_direct(&p, 2048, 1024)
        .unwrap_or_else(|e| m.fail(&format!("O_DIRECT pread 2048..3072: {e}")));
    assert_eq!(
        sha256_hex(&last),
        "28687c2fe094478808dcd92bd5fb5f5a74c79446f91f10dff7d70583fcacc9ea"
    );
    assert_eq!(pread_direct(&p, 100, 200).unwrap(), &first[100..300]);
    assert_eq!(pread_direct(&p, 3000, 100).unwrap(), &last[952..]);
    for (off, len) in [
        (1024, 1024),
        (1500, 10),
        (1000, 100),
        (2000, 100),
        (0, 3072),
    ] {
        let t = Instant::now();
        let pp = p.clone();
        let r = with_timeout(30, "pread of the missing range", move || {
            pread_direct(&pp, off, len)
        });
        assert_errno(
            r,
            libc::EIO,
            &format!("O_DIRECT pread {off}+{len} (touches the missing block)"),
        );
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "EIO took {:?} offline",
            t.elapsed()
        );
    }
    // Buffered: the one page holds the missing block, so any buffered read is EIO.
    let pp = p.clone();
    assert_errno(
        with_timeout(30, "buffered pread", move || pread(&pp, 0, 1024)),
        libc::EIO,
        "buffered pread 0..1024",
    );
    let pp = p.clone();
    assert_errno(
        with_timeout(30, "read all", move || fs::read(pp)),
        libc::EIO,
        "reading the whole file",
    );
    let cat = run(std::process::Command::new("cat").arg(&p));
    assert!(
        !cat.status.success(),
        "cat of a file with a missing block must fail"
    );
    // Still fine afterwards.
    assert_eq!(pread_direct(&p, 0, 1024).unwrap(), first);
    fs::metadata(m.mnt.join("ipfs")).unwrap();
}

/// Directories holding names that try to escape (`../foo`, `../file`) do not show them, and nothing reaches
/// outside the tree (not through the mount, not through `cp -r`).
#[test]
fn escaping_names_are_hidden() {
    let Some(fx) = require_fixtures("escaping_names_are_hidden") else {
        return;
    };
    let (_t, m) = mount_cars(
        &fx,
        &[
            ("path_gateway_tar/outside-root.car", OUTSIDE_ROOT),
            ("path_gateway_tar/inside-root.car", INSIDE_ROOT),
        ],
    );
    let list = |p: &Path| -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    // outside-root: entries "../foo" and "bar"; only "bar" may show.
    let out = m.ipfs(OUTSIDE_ROOT);
    assert_eq!(list(&out), vec!["bar".to_string()]);
    assert_eq!(read(&m, &out.join("bar")), b"Hello, world!\n");
    assert_errno(
        fs::metadata(m.mnt.join("ipfs").join("foo")),
        libc::ENOENT,
        "/ipfs/foo",
    );
    // inside-root: foobar/directory holds only "../file"; it must look empty.
    let ins = m.ipfs(INSIDE_ROOT);
    assert_eq!(list(&ins), vec!["foobar".to_string()]);
    assert_eq!(list(&ins.join("foobar")), vec!["directory".to_string()]);
    assert_eq!(list(&ins.join("foobar/directory")), Vec::<String>::new());
    assert_errno(
        fs::metadata(ins.join("foobar/file")),
        libc::ENOENT,
        "foobar/file",
    );
    // Nothing but the copy appears where cp -r writes.
    for root in [OUTSIDE_ROOT, INSIDE_ROOT] {
        let t = tempdir("escape");
        let dst = t.path().join("sub").join("copy");
        fs::create_dir_all(dst.parent().unwrap()).unwrap();
        run_ok(
            std::process::Command::new("cp")
                .arg("-r")
                .arg(m.ipfs(root))
                .arg(&dst),
        );
        assert_eq!(
            list(t.path()),
            vec!["sub".to_string()],
            "cp -r wrote outside its target"
        );
        assert_eq!(
            list(&t.path().join("sub")),
            vec!["copy".to_string()],
            "cp -r wrote beside its target"
        );
    }
}

#[test]
fn odd_and_confusing_names() {
    let Some(fx) = require_fixtures("odd_and_confusing_names") else {
        return;
    };
    let (_t, m) = mount_cars(
        &fx,
        &[
            (
                "path_gateway_unixfs/dir-with-percent-encoded-filename.car",
                PERCENT,
            ),
            ("path_gateway_tar/fixtures.car", TAR_FIXTURES),
        ],
    );
    let p = m
        .ipfs(PERCENT)
        .join("Portugal%2C+España=Peninsula Ibérica.txt");
    assert_eq!(read(&m, &p), b"hello from a percent encoded filename\n");
    let t = m.ipfs(TAR_FIXTURES);
    assert_eq!(
        read(&m, &t.join("ą/ę/file-źł.txt")),
        b"I am a txt file on path with utf8\n"
    );
    assert_eq!(
        read(&m, &t.join("ipfs/file.txt")),
        b"I am a txt file in confusing /ipfs dir\n"
    );
    assert_eq!(
        read(&m, &t.join("ipns/file.txt")),
        b"I am a txt file in confusing /ipns dir\n"
    );
    assert_eq!(
        read(&m, &t.join("api/file.txt")),
        b"I am a txt file in confusing /api dir\n"
    );
}

/// Writes anywhere under /ipfs fail with EROFS.
#[test]
fn writes_are_erofs() {
    let Some(fx) = require_fixtures("writes_are_erofs") else {
        return;
    };
    let (_t, m) = mount_cars(
        &fx,
        &[
            ("path_gateway_unixfs/dir-with-files.car", DIR_WITH_FILES),
            ("path_gateway_tar/fixtures.car", TAR_FIXTURES),
        ],
    );
    let r = m.ipfs(DIR_WITH_FILES);
    let f = r.join("hello.txt");
    let e = libc::EROFS;
    assert_errno(fs::File::create(r.join("new.txt")), e, "create");
    assert_errno(OpenOptions::new().write(true).open(&f), e, "open O_WRONLY");
    assert_errno(
        OpenOptions::new().read(true).write(true).open(&f),
        e,
        "open O_RDWR",
    );
    assert_errno(OpenOptions::new().append(true).open(&f), e, "open O_APPEND");
    assert_errno(
        OpenOptions::new().write(true).truncate(true).open(&f),
        e,
        "open O_TRUNC",
    );
    assert_errno(fs::create_dir(r.join("newdir")), e, "mkdir");
    assert_errno(fs::remove_file(&f), e, "unlink");
    assert_errno(fs::rename(&f, r.join("renamed.txt")), e, "rename");
    assert_errno(symlink("hello.txt", r.join("newlink")), e, "symlink");
    // doc/SEMANTICS.md lists `link` under /ipfs as EROFS and hard links in general as EPERM: either refusal.
    let r_link = fs::hard_link(&f, r.join("hardlink"));
    let got = errno_of(&r_link);
    assert!(
        got == Some(libc::EROFS) || got == Some(libc::EPERM),
        "link under /ipfs: {r_link:?}, expected EROFS (or EPERM)"
    );
    assert_errno(
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)),
        e,
        "chmod",
    );
    assert_errno(fs::remove_dir(m.ipfs(TAR_FIXTURES).join("api")), e, "rmdir");
    let c = std::ffi::CString::new(f.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    let rc = unsafe { libc::truncate(c.as_ptr(), 0) };
    assert_eq!(
        (rc, std::io::Error::last_os_error().raw_os_error()),
        (-1, Some(e)),
        "truncate"
    );
    // SAFETY: a valid path; NULL times means "now".
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), std::ptr::null(), 0) };
    assert_eq!(
        (rc, std::io::Error::last_os_error().raw_os_error()),
        (-1, Some(e)),
        "utimensat"
    );
    // In /ipfs itself.
    assert_errno(
        fs::File::create(m.mnt.join("ipfs").join("newfile")),
        e,
        "create in /ipfs",
    );
    assert_errno(
        fs::create_dir(m.mnt.join("ipfs").join("newdir")),
        e,
        "mkdir in /ipfs",
    );
    // Nothing changed.
    assert_eq!(read(&m, &f), b"hello world\n");
}

/// Malformed names are ENOENT at once; a well-formed CID that is not stored is ENOENT offline.
#[test]
fn malformed_and_absent_cids_are_enoent() {
    let Some(fx) = require_fixtures("malformed_and_absent_cids_are_enoent") else {
        return;
    };
    let (_t, m) = mount_cars(
        &fx,
        &[("path_gateway_unixfs/dir-with-files.car", DIR_WITH_FILES)],
    );
    let mut bad: Vec<String> = [
        "not-a-cid",
        "Qm123",
        "bafyINVALID",
        "zzzz",
        "QmQmQm",
        "f01",
        "bafy",
        "...",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Truncated and corrupted spellings of a real CID.
    bad.push(DIR_WITH_FILES[..DIR_WITH_FILES.len() - 1].to_string());
    bad.push(format!("{DIR_WITH_FILES}x"));
    bad.push(format!("{DIR_WITH_FILES}!"));
    for b in &bad {
        let t = Instant::now();
        assert_errno(
            fs::metadata(m.ipfs(b)),
            libc::ENOENT,
            &format!("stat /ipfs/{b}"),
        );
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "{b}: {:?}",
            t.elapsed()
        );
    }
    let absent = raw_cid(b"bytes that are in no fixture");
    assert_errno(
        fs::metadata(m.ipfs(&absent)),
        libc::ENOENT,
        "a valid CID that is not stored, offline",
    );
    assert_errno(
        fs::metadata(m.ipfs(DIR_WITH_FILES).join("nope.txt")),
        libc::ENOENT,
        "absent name in a directory",
    );
}

/// `export` writes a CARv1 of the whole DAG; importing it into a fresh store gives the same tree.
#[test]
fn export_import_round_trip() {
    let Some(fx) = require_fixtures("export_import_round_trip") else {
        return;
    };
    let tmp = tempdir("conformance-export");
    let (s1, s2) = (tmp.path().join("s1"), tmp.path().join("s2"));
    fs::create_dir_all(&s1).unwrap();
    fs::create_dir_all(&s2).unwrap();
    import_car(&s1, &[&car(&fx, "path_gateway_unixfs/dir-with-files.car")]);
    import_car(
        &s1,
        &[&car(
            &fx,
            "trustless_gateway_car/single-layer-hamt-with-multi-block-files.car",
        )],
    );
    for root in [DIR_WITH_FILES, HAMT] {
        let out = tmp.path().join(format!("{root}.car"));
        run_ok(
            std::process::Command::new(BIN)
                .arg("export")
                .arg("--offline")
                .arg("--store")
                .arg(&s1)
                .arg(root)
                .arg("-o")
                .arg(&out),
        );
        let bytes = fs::read(&out).unwrap();
        assert!(bytes.len() > 100, "exported CAR is {} bytes", bytes.len());
        assert_eq!(import_car(&s2, &[&out]), vec![root.to_string()]);
    }
    let m = Mount::start_with_store(&s2, &["--offline"]);
    assert_eq!(
        sha256_hex(&read(&m, &m.ipfs(DIR_WITH_FILES).join("multiblock.txt"))),
        MULTIBLOCK_SHA256
    );
    assert_eq!(fs::read_dir(m.ipfs(HAMT)).unwrap().count(), 1000);
    assert_eq!(
        sha256_hex(&read(&m, &m.ipfs(HAMT).join("777.txt"))),
        MULTIBLOCK_SHA256
    );
}
