//! Cold reads through a real mount fetch what is read: the read-ahead follows the reader, and
//! the per-file accounting (`user.ipfs.read`, `user.ipfs.fetched`) agrees with what a counting
//! gateway served.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// A trustless gateway on loopback serving `blocks` as raw blocks (CAR requests are refused,
/// so every byte it sends is counted here). Each answer waits `delay` (a round trip).
struct CountingGateway {
    url: String,
    requests: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
}

fn counting_gateway(blocks: Vec<common::car::Block>, delay: Duration) -> CountingGateway {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let map: Arc<HashMap<Vec<u8>, common::car::Block>> = Arc::new(
        blocks
            .into_iter()
            .map(|b| (b.cid.hash().to_bytes(), b))
            .collect(),
    );
    let requests = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let (count, sent) = (requests.clone(), bytes.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let (map, count, sent) = (map.clone(), count.clone(), sent.clone());
            std::thread::spawn(move || {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
                loop {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match conn.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let target = head.split_whitespace().nth(1).unwrap_or("").to_string();
                    let block = target
                        .strip_prefix("/ipfs/")
                        .and_then(|t| t.split('?').next())
                        .and_then(|c| cid::Cid::try_from(c).ok())
                        .filter(|_| target.contains("format=raw"))
                        .and_then(|c| map.get(&c.hash().to_bytes()).cloned());
                    let Some(block) = block else {
                        let _ =
                            conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
                        continue;
                    };
                    count.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(delay);
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.ipld.raw\r\nContent-Length: {}\r\n\r\n",
                        block.data.len()
                    );
                    if conn.write_all(resp.as_bytes()).is_err()
                        || conn.write_all(&block.data).is_err()
                    {
                        return;
                    }
                    sent.fetch_add(block.data.len() as u64, Ordering::SeqCst);
                }
            });
        }
    });
    CountingGateway {
        url,
        requests,
        bytes,
    }
}

const LEAF: usize = 256 << 10;

fn mount_over(gw: &CountingGateway) -> Mount {
    Mount::start(&["--gateway", gw.url.as_str(), "--no-p2p", "--timeout", "60"])
}

fn counter(path: &std::path::Path, name: &str) -> u64 {
    common::datasets::xattr(path, name, 30)
        .unwrap_or_else(|e| panic!("{e}"))
        .parse()
        .unwrap_or_else(|e| panic!("{name} of {}: not a number: {e}", path.display()))
}

/// A pread of 1 MiB in the middle of a cold 64 MiB file fetches about that range's blocks,
/// and the file's `user.ipfs.fetched` says so, as does the gateway.
#[test]
fn cold_range_read_fetches_its_blocks_not_the_file() {
    if !require_fuse("cold_range_read_fetches_its_blocks_not_the_file") {
        return;
    }
    let size = 64 << 20;
    let data = random_bytes(size, 21);
    let blocks = common::car::file(&data, LEAF);
    let root = blocks[0].cid.to_string();
    let gw = counting_gateway(blocks, Duration::ZERO);
    let m = mount_over(&gw);
    let path = m.ipfs(&root);
    let (from, len) = (20 << 20, 1 << 20);
    let p = path.clone();
    let got = with_timeout(60, "a cold range read", move || {
        let f = std::fs::File::open(&p).unwrap();
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, from as u64).unwrap();
        buf
    });
    assert_eq!(got[..], data[from..from + len]);
    std::thread::sleep(Duration::from_secs(2));
    let fetched = counter(&path, "user.ipfs.fetched");
    let read = counter(&path, "user.ipfs.read");
    let served = gw.bytes.load(Ordering::SeqCst);
    eprintln!("range read: read {read} B, fetched {fetched} B, gateway sent {served} B of {size}");
    assert!(read >= len as u64, "user.ipfs.read {read} < {len}");
    // The range's blocks, and at most the kernel's own read-ahead (1 MiB) and one of ours.
    assert!(
        fetched <= 4 << 20,
        "fetched {fetched} B for a 1 MiB read of a 64 MiB file"
    );
    assert!(
        fetched >= len as u64,
        "fetched {fetched} B < the range read"
    );
    // The mount's stats hold the totals: bytes read from files, bytes fetched per source.
    let out = run(std::process::Command::new(BIN)
        .args(["stats", "--json", "--store"])
        .arg(&m.store));
    assert!(out.status.success(), "stats: {out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["file_read_bytes"].as_u64(), Some(read), "stats: {v}");
    let from_gateway: u64 = v["fetched_bytes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["bytes"].as_u64().unwrap())
        .sum();
    assert!(from_gateway >= fetched, "stats: {v}");
    // The gateway sent those blocks, the root node (its 256 links), and at most one leaf a
    // read-ahead asked for and dropped unread when the file closed (not charged: never stored).
    assert!(
        served >= fetched && served <= fetched + LEAF as u64 + 64 * 1024,
        "gateway sent {served} B, the file's account says {fetched} B"
    );
}

/// A Parquet-like reader (the footer, then one column chunk per row group, each one pread)
/// of a cold file: fetched bytes stay under a tenth of the file when it is done, and under
/// 0.15 ten seconds later (nothing keeps streaming after the file is closed).
#[test]
fn column_chunk_reads_fetch_under_a_tenth_of_the_file() {
    if !require_fuse("column_chunk_reads_fetch_under_a_tenth_of_the_file") {
        return;
    }
    // Column chunks of 1.6 MiB (the 1 GiB file has 3.2 MiB ones): the leaves at
    // their ends and the kernel's own read-ahead weigh more here.
    let size: usize = 128 << 20;
    let (groups, columns) = (4, 20);
    let chunk = size / (groups * columns);
    let data = random_bytes(size, 22);
    let blocks = common::car::file(&data, LEAF);
    let root = blocks[0].cid.to_string();
    let gw = counting_gateway(blocks, Duration::from_millis(2));
    let m = mount_over(&gw);
    let path = m.ipfs(&root);
    let p = path.clone();
    let expected: Vec<u8> = (0..groups)
        .flat_map(|g| {
            let start = (g * columns + 3) * chunk;
            data[start..start + chunk].to_vec()
        })
        .collect();
    let t = Instant::now();
    let got = with_timeout(120, "column-chunk reads", move || {
        let f = std::fs::File::open(&p).unwrap();
        let mut footer = vec![0u8; 64 << 10];
        let at = (size - footer.len()) as u64;
        f.read_exact_at(&mut footer, at).unwrap();
        let mut out = Vec::new();
        for g in 0..groups {
            let mut buf = vec![0u8; chunk];
            f.read_exact_at(&mut buf, ((g * columns + 3) * chunk) as u64)
                .unwrap();
            out.extend_from_slice(&buf);
        }
        out
    });
    let took = t.elapsed();
    assert!(got == expected, "column chunks read back wrong");
    let fetched = counter(&path, "user.ipfs.fetched");
    let served = gw.bytes.load(Ordering::SeqCst);
    let read = counter(&path, "user.ipfs.read");
    eprintln!(
        "column chunks: read {read} B ({:.4}), fetched {fetched} B ({:.4}), gateway {served} B, in {took:?}",
        read as f64 / size as f64,
        fetched as f64 / size as f64
    );
    assert!(
        fetched * 10 <= size as u64 && served * 10 <= size as u64,
        "fetched {fetched} B, gateway sent {served} B: more than a tenth of {size}"
    );
    std::thread::sleep(Duration::from_secs(10));
    let later = counter(&path, "user.ipfs.fetched");
    let served_later = gw.bytes.load(Ordering::SeqCst);
    eprintln!("ten seconds later: fetched {later} B, gateway {served_later} B");
    assert!(
        later * 100 <= size as u64 * 15 && served_later * 100 <= size as u64 * 15,
        "ten seconds later: fetched {later} B, gateway sent {served_later} B of {size}"
    );
}

/// `head -c 1` of a cold big file: the first byte comes after the root's round trip (the
/// lookup) and the first leaf's, not after a whole read-ahead window.
#[test]
fn cold_first_byte_needs_the_root_and_the_first_leaf_only() {
    if !require_fuse("cold_first_byte_needs_the_root_and_the_first_leaf_only") {
        return;
    }
    let size = 64 << 20;
    let data = random_bytes(size, 23);
    let blocks = common::car::file(&data, LEAF);
    let root = blocks[0].cid.to_string();
    let rtt = Duration::from_millis(400);
    let gw = counting_gateway(blocks, rtt);
    let m = mount_over(&gw);
    let path = m.ipfs(&root);
    let t = Instant::now();
    let out = with_timeout(60, "head -c 1", move || {
        std::process::Command::new("head")
            .args(["-c", "1"])
            .arg(&path)
            .output()
            .unwrap()
    });
    let took = t.elapsed();
    let requests = gw.requests.load(Ordering::SeqCst);
    assert!(out.status.success(), "head failed: {out:?}");
    assert_eq!(out.stdout, data[..1]);
    eprintln!("first byte after {took:?} ({requests} requests started; round trip {rtt:?})");
    // Two round trips (root, then first leaf), with room for the mount's own work: a third
    // round trip before the first byte fails.
    assert!(
        took < rtt * 5 / 2,
        "the first byte took {took:?}, more than two round trips of {rtt:?}"
    );
}

/// A cold `cat` of a whole file through a gateway that refuses CAR requests: the stream the
/// read-ahead asks for fails, block-wise read-ahead takes over, and every byte comes back,
/// each block fetched once.
#[test]
fn cold_cat_without_car_support_falls_back_to_blocks() {
    if !require_fuse("cold_cat_without_car_support_falls_back_to_blocks") {
        return;
    }
    let size = 48 << 20;
    let data = random_bytes(size, 24);
    let blocks = common::car::file(&data, LEAF);
    let root = blocks[0].cid.to_string();
    let root_len = blocks[0].data.len() as u64;
    let gw = counting_gateway(blocks, Duration::ZERO);
    let m = mount_over(&gw);
    let path = m.ipfs(&root);
    let p = path.clone();
    let t = Instant::now();
    let out = with_timeout(120, "cat", move || {
        std::process::Command::new("cat").arg(&p).output().unwrap()
    });
    let took = t.elapsed();
    assert!(out.status.success(), "cat failed: {:?}", out.status);
    assert!(out.stdout == data, "cat read back wrong bytes");
    let fetched = counter(&path, "user.ipfs.fetched");
    let served = gw.bytes.load(Ordering::SeqCst);
    eprintln!("cold cat of {size} B in {took:?}: fetched {fetched} B, gateway {served} B");
    assert_eq!(fetched, size as u64, "every leaf charged once");
    assert_eq!(served, size as u64 + root_len, "every block sent once");
}

/// DuckDB's one-column query over a cold Parquet file (20 float64 columns, 16 row groups)
/// read through a fresh mount and a counting gateway: the answer is that of the local file,
/// and the bytes fetched stay under a tenth of the file when the query returns and under
/// 0.15 ten seconds later (issue 11), by the file's xattr and by the gateway's own count.
#[test]
fn duckdb_one_column_query_fetches_under_a_tenth() {
    let test = "duckdb_one_column_query_fetches_under_a_tenth";
    if !require_fuse(test) {
        return;
    }
    let py = run(std::process::Command::new("python3").args(["-c", "import duckdb"]));
    if !py.status.success() {
        skip_or_fail(
            test,
            "python3 -c 'import duckdb' failed (pip install duckdb)",
        );
        return;
    }
    let tmp = tempdir("duckdb-cold");
    let local = tmp.path().join("t.parquet");
    // ~256 MiB: 1,677,720 rows of 20 random doubles (incompressible), 16 row groups. (The
    // issue's file is 1 GiB: the leaves at the ends of its 3.2 MiB column chunks and the
    // kernel's own read-ahead weigh a quarter of what they do for these 0.8 MiB ones.)
    let rows = 1_677_720;
    let make = format!(
        "import duckdb\n\
         con = duckdb.connect()\n\
         cols = ', '.join(f'random() AS c{{i}}' for i in range(20))\n\
         con.execute(f\"COPY (SELECT {{cols}} FROM range({rows})) TO '{0}' (FORMAT parquet, ROW_GROUP_SIZE {1})\")\n",
        local.display(),
        rows / 16
    );
    run_ok(std::process::Command::new("python3").args(["-c", &make]));
    let data = std::fs::read(&local).unwrap();
    let size = data.len() as u64;
    let blocks = common::car::file(&data, LEAF);
    drop(data);
    let root = blocks[0].cid.to_string();
    let gw = counting_gateway(blocks, Duration::from_millis(2));
    let m = mount_over(&gw);
    let path = m.ipfs(&root);
    let query = |file: &std::path::Path| -> String {
        let q = format!(
            "import duckdb\n\
             con = duckdb.connect()\n\
             print(con.execute(\"SELECT round(avg(c3), 9), count(c3) FROM read_parquet('{0}')\").fetchall())\n",
            file.display()
        );
        String::from_utf8(run_ok(
            std::process::Command::new("python3").args(["-c", &q]),
        ))
        .unwrap()
    };
    let want = query(&local);
    let p = path.clone();
    let t = Instant::now();
    let got = with_timeout(300, "the cold DuckDB query", move || query(&p));
    let took = t.elapsed();
    assert_eq!(got, want, "the query over the mount vs the local file");
    let fetched = counter(&path, "user.ipfs.fetched");
    let read = counter(&path, "user.ipfs.read");
    let served = gw.bytes.load(Ordering::SeqCst);
    eprintln!(
        "duckdb cold query in {took:?}: read {:.4}, fetched {:.4}, gateway {:.4} of {size} B",
        read as f64 / size as f64,
        fetched as f64 / size as f64,
        served as f64 / size as f64
    );
    assert!(
        fetched * 10 <= size && served * 10 <= size,
        "when the query returned: fetched {fetched} B, gateway sent {served} B of {size}"
    );
    std::thread::sleep(Duration::from_secs(10));
    let later = counter(&path, "user.ipfs.fetched");
    let served_later = gw.bytes.load(Ordering::SeqCst);
    eprintln!(
        "ten seconds later: fetched {:.4}, gateway {:.4}",
        later as f64 / size as f64,
        served_later as f64 / size as f64
    );
    assert!(
        later * 100 <= size * 15 && served_later * 100 <= size * 15,
        "ten seconds later: fetched {later} B, gateway sent {served_later} B of {size}"
    );
}

/// A cold read in a big file (two levels of interior nodes, as Kubo makes them) costs one
/// round trip after the lookup, not one per level: the interior node and the leaves on the
/// way come in one CAR request with `entity-bytes` (issue 11, time to first byte). A gateway
/// that ignores `entity-bytes` (it would send the file from its start) is noticed at the first
/// block of its answer and asked block by block from then on; every byte read is right either
/// way. The gateway is our own `--serve` (which honours ranges), behind a proxy that records
/// each request and, for the second mount, drops `entity-bytes` from the query.
#[test]
fn cold_reads_fetch_the_levels_of_a_range_in_one_request() {
    let test = "cold_reads_fetch_the_levels_of_a_range_in_one_request";
    if !require_fuse(test) {
        return;
    }
    const CHUNK: usize = 64 << 10;
    const FANOUT: usize = 64; // 4 MiB under each interior node: more than any leaf can hold
    let data = random_bytes(16 << 20, 41);
    let blocks = common::car::file_two_levels(&data, CHUNK, FANOUT);
    let root = blocks[0].cid;
    let interior: Vec<cid::Cid> = blocks[1..]
        .iter()
        .filter(|b| b.cid.codec() == 0x70)
        .map(|b| b.cid)
        .collect();
    let leaves: Vec<cid::Cid> = blocks
        .iter()
        .filter(|b| b.cid.codec() == 0x55)
        .map(|b| b.cid)
        .collect();
    assert_eq!((interior.len(), leaves.len()), (4, 256));
    let tmp = tempdir("range-requests");
    let car = tmp.path().join("f.car");
    common::car::write(&root, &blocks, &mut std::fs::File::create(&car).unwrap()).unwrap();
    let store = tmp.path().join("store-a");
    import_car(&store, &[&car]);
    let port = free_port();
    let serve = format!("http://127.0.0.1:{port}");
    let _a = Mount::start_with_store(
        &store,
        &["--offline", "--serve", &format!("127.0.0.1:{port}")],
    );
    let probe = format!("{serve}/ipfs/{root}?format=raw");
    let deadline = Instant::now() + Duration::from_secs(20);
    while http("GET", &probe, 5).0 != 200 {
        assert!(Instant::now() < deadline, "{serve} does not serve {root}");
        std::thread::sleep(Duration::from_millis(100));
    }
    for ignores_ranges in [false, true] {
        let proxy = RecordingProxy::start(&serve, ignores_ranges);
        let b = Mount::start(&[
            "--gateway",
            proxy.url.as_str(),
            "--no-p2p",
            "--timeout",
            "60",
        ]);
        let path = b.ipfs(&root.to_string());
        let file = std::fs::File::open(&path).unwrap_or_else(|e| b.fail(&format!("open: {e}")));
        let byte_at = |offset: usize| {
            let mut buf = [0u8; 1];
            file.read_exact_at(&mut buf, offset as u64)
                .unwrap_or_else(|e| b.fail(&format!("pread at {offset}: {e}")));
            assert_eq!(buf[0], data[offset], "byte {offset}");
        };
        let asked_raw = |cid: &cid::Cid| {
            proxy
                .targets()
                .iter()
                .any(|t| t.starts_with(&format!("/ipfs/{cid}?")) && t.contains("format=raw"))
        };
        let range_requests = || {
            proxy
                .targets()
                .iter()
                .filter(|t| t.contains("entity-bytes"))
                .count()
        };
        // The middle of the third interior node's span, then the first byte.
        let mid = 9 * (1 << 20) + 3;
        byte_at(mid);
        let (node, leaf) = (interior[2], leaves[mid / CHUNK]);
        if !ignores_ranges {
            assert!(
                !asked_raw(&node) && !asked_raw(&leaf) && range_requests() == 1,
                "the interior node and the leaf came one by one: {:?}",
                proxy.targets()
            );
            // From offset 0 the read-ahead starts at once, with its own range request.
            byte_at(0);
            assert!(
                !asked_raw(&interior[0]) && !asked_raw(&leaves[0]) && range_requests() >= 2,
                "first byte: {:?}",
                proxy.targets()
            );
        } else {
            assert!(
                asked_raw(&node) && asked_raw(&leaf) && range_requests() == 1,
                "after the range was ignored, blocks one by one: {:?}",
                proxy.targets()
            );
            byte_at(5 << 20);
            assert_eq!(
                range_requests(),
                1,
                "asked for a range again: {:?}",
                proxy.targets()
            );
            let fetched = counter(&path, "user.ipfs.fetched");
            assert!(
                fetched < 2 << 20,
                "fetched {fetched} B for two one-byte reads: the ignored range was not stopped"
            );
        }
        drop(file);
        assert!(std::fs::read(&path).unwrap() == data, "the whole file");
    }
}
