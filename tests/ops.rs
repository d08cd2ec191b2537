//! Running the mount as a service (issue 12): `unmount` returns once the store is released,
//! `stats` and `--metrics`, the config file, `mount -t fuse.ipfs-mount`, completions.

mod common;

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// `ipfs-mount unmount` right after writing into a dataset returns only once the daemon has
/// committed and released the store: a new mount of the same store, started at once, works
/// (before, it failed with "store is locked by process N") and has what was written.
#[test]
fn unmount_then_mount_again_at_once() {
    let test = "unmount_then_mount_again_at_once";
    if !require_fuse(test) {
        return;
    }
    let tmp = tempdir("ops-unmount");
    let store = tmp.path().join("store");
    fs::create_dir_all(&store).unwrap();
    let data = random_bytes(24 << 20, 12);
    let mut m = Mount::start_with_store(&store, &["--offline"]);
    for round in 0..3 {
        let ds = m.mnt.join("datasets").join(format!("d{round}"));
        fs::create_dir(&ds).unwrap();
        fs::write(ds.join("data.bin"), &data).unwrap();
        let t = Instant::now();
        let out = run(Command::new(BIN).arg("unmount").arg(&m.mnt));
        assert!(
            out.status.success(),
            "round {round}: ipfs-mount unmount: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("round {round}: unmount returned after {:?}", t.elapsed());
        let pid = m.pid().unwrap();
        let state = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = state
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .next();
        assert!(
            matches!(state, None | Some("Z") | Some("X")),
            "round {round}: the daemon (pid {pid}) still runs after unmount returned: {state:?}"
        );
        // At once: the same store, in a new mount.
        m.restart();
        for r in 0..=round {
            let got = fs::read(m.mnt.join(format!("datasets/d{r}/data.bin"))).unwrap();
            assert!(
                got == data,
                "round {round}: d{r}/data.bin differs after remount"
            );
        }
    }
}

/// The loopback check sees this process's sockets: loopback ones (TCP listening and
/// connected, IPv4 and IPv6, UDP) pass; a socket bound to the wildcard address is reported,
/// unless that address is allowed. Binding sends nothing.
#[test]
fn loopback_check_sees_sockets_off_loopback() {
    use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream, UdpSocket};
    let me = std::process::id();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let _server = listener.accept().unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.connect("127.0.0.1:9").unwrap();
    let _v6 = TcpListener::bind("[::1]:0");
    let before = sockets_of(me);
    assert!(before.len() >= 4, "own sockets found: {before:?}");
    let n = check_sockets(&[me], &[]).unwrap_or_else(|e| panic!("loopback only: {e}"));
    assert!(n >= 4);

    let wild = UdpSocket::bind("0.0.0.0:0").unwrap();
    let port = wild.local_addr().unwrap().port();
    let err = check_loopback(&[me]).expect_err("a socket bound to 0.0.0.0 is reported");
    assert!(err.contains(&format!("0.0.0.0:{port}")), "{err}");
    check_sockets(&[me], &[IpAddr::V4(Ipv4Addr::UNSPECIFIED)]).expect("allowed when configured");
}

/// A trustless gateway on loopback that answers raw block requests for `blocks` (CAR requests
/// get 404, so the mount fetches block by block); returns its base URL.
fn raw_gateway(blocks: &[common::car::Block]) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let map: Arc<HashMap<Vec<u8>, Vec<u8>>> = Arc::new(
        blocks
            .iter()
            .map(|b| (b.cid.hash().to_bytes(), b.data.clone()))
            .collect(),
    );
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let map = map.clone();
            std::thread::spawn(move || loop {
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
                let data = target
                    .strip_prefix("/ipfs/")
                    .and_then(|t| t.split('?').next())
                    .and_then(|c| cid::Cid::try_from(c).ok())
                    .filter(|_| target.contains("format=raw"))
                    .and_then(|c| map.get(&c.hash().to_bytes()).cloned());
                let ok = match data {
                    Some(d) => conn
                        .write_all(
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.ipld.raw\r\nContent-Length: {}\r\n\r\n",
                                d.len()
                            )
                            .as_bytes(),
                        )
                        .and_then(|_| conn.write_all(&d)),
                    None => conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
                };
                if ok.is_err() {
                    return;
                }
            });
        }
    });
    url
}

/// One sample of a Prometheus text page, as the Python client's parser read it.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: HashMap<String, String>,
    value: f64,
}

/// GET `url` and parse it with `prometheus_client.parser.text_string_to_metric_families`.
fn scrape(url: &str) -> Vec<Sample> {
    let (status, body) = http("GET", url, 30);
    assert_eq!(status, 200, "GET {url}: {}", String::from_utf8_lossy(&body));
    let script = r#"
import sys, json
from prometheus_client.parser import text_string_to_metric_families
out = []
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        out.append({"name": s.name, "labels": s.labels, "value": s.value})
print(json.dumps(out))
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&body).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused the page: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&body)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| Sample {
            name: s["name"].as_str().unwrap().to_string(),
            labels: s["labels"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect(),
            value: s["value"].as_f64().unwrap(),
        })
        .collect()
}

/// The value of the sample `name` whose labels include `labels` (0 when absent).
fn sample(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .unwrap_or(0.0)
}

/// True when `python3 -c 'import prometheus_client'` works; else a printed skip (a failure
/// under IPFS_MOUNT_REQUIRE_PEERS=1, as in CI, where .ci/run installs it).
fn have_prometheus_parser(test: &str) -> bool {
    let out = run(Command::new("python3").args(["-c", "import prometheus_client"]));
    if out.status.success() {
        return true;
    }
    skip_or_fail(
        test,
        "python3 cannot import prometheus_client (pip install prometheus_client)",
    );
    false
}

/// `--metrics` serves Prometheus text that the Python client's parser reads; reading a file
/// through the mount moves the gateway's fetched-bytes counter by exactly the bytes of the
/// blocks behind it, and the block-read counter by their number; a block served over
/// `--serve` moves the served-bytes counter by its length; a dataset with changes shows as
/// pending; `ipfs-mount stats --json` tells the same numbers.
#[test]
fn metrics_count_the_bytes_that_move() {
    let test = "metrics_count_the_bytes_that_move";
    if !require_fuse(test) || !have_prometheus_parser(test) {
        return;
    }
    let data = random_bytes(3 << 20, 7);
    let file_blocks = common::car::file(&data, 256 << 10);
    let dir = common::car::directory(&[(
        "data.bin",
        file_blocks[0].cid,
        common::car::tsize(&file_blocks),
    )]);
    let mut all = vec![dir.clone()];
    all.extend(file_blocks.iter().cloned());
    let total: usize = all.iter().map(|b| b.data.len()).sum();
    let gateway = raw_gateway(&all);
    let metrics_port = free_port();
    let serve_port = free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let serve_addr = format!("127.0.0.1:{serve_port}");
    let m = Mount::start(&[
        "--gateway",
        &gateway,
        "--metrics",
        &metrics_addr,
        "--serve",
        &serve_addr,
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        // a dataset's changes stay pending for the test's length
        "--commit-delay",
        "1h",
        "--commit-interval",
        "1h",
    ]);
    let url = format!("http://{metrics_addr}/metrics");
    let source = format!("{gateway}/");
    let before = scrape(&url);
    let fetched_name = "ipfs_mount_fetched_bytes_total";
    assert_eq!(sample(&before, fetched_name, &[("source", &source)]), 0.0);
    assert!(
        before
            .iter()
            .any(|s| s.name == "ipfs_mount_cache_limit_bytes" && s.value > 0.0),
        "cache limit reported: {before:?}"
    );

    let got = fs::read(m.ipfs(&dir.cid.to_string()).join("data.bin")).unwrap();
    assert!(got == data, "the file read through the mount");
    let after = scrape(&url);
    let moved = sample(&after, fetched_name, &[("source", &source)])
        - sample(&before, fetched_name, &[("source", &source)]);
    assert_eq!(
        moved,
        total as f64,
        "fetched bytes from {source}: {} blocks, {total} bytes",
        all.len()
    );
    let reads = "ipfs_mount_block_reads_total";
    assert_eq!(
        sample(&after, reads, &[("answer", "fetched")]),
        all.len() as f64,
        "blocks fetched"
    );
    assert_eq!(sample(&after, fetched_name, &[("source", "bitswap")]), 0.0);
    assert!(
        sample(&after, "ipfs_mount_cache_bytes", &[]) >= total as f64,
        "the fetched blocks are in the cache"
    );

    // One raw block over --serve: the served counter moves by its length.
    let leaf = &file_blocks[1];
    let served = "ipfs_mount_served_bytes_total";
    let (status, body) = http(
        "GET",
        &format!("http://{serve_addr}/ipfs/{}?format=raw", leaf.cid),
        30,
    );
    assert_eq!(status, 200);
    assert_eq!(body, leaf.data);
    let t = Instant::now();
    let mut now = scrape(&url);
    // The body's last frame is counted as hyper takes it, a moment after curl has it.
    while sample(&now, served, &[("to", "http")]) < leaf.data.len() as f64
        && t.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(50));
        now = scrape(&url);
    }
    assert_eq!(
        sample(&now, served, &[("to", "http")]),
        leaf.data.len() as f64,
        "bytes served over --serve"
    );

    // A dataset with changes not yet committed is pending; the stats command agrees.
    let ds = m.mnt.join("datasets").join("notes");
    fs::create_dir(&ds).unwrap();
    fs::write(ds.join("a.txt"), b"hello").unwrap();
    let out = run(Command::new(BIN)
        .args(["stats", "--json", "--store"])
        .arg(&m.store));
    assert!(
        out.status.success(),
        "stats: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let from_stats = v["fetched_bytes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["source"] == source.as_str())
        .map(|e| e["bytes"].as_u64().unwrap());
    assert_eq!(from_stats, Some(total as u64), "{v}");
    assert!(
        v["datasets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["name"] == "notes" && d["pending"] == true),
        "{v}"
    );
    let page = scrape(&url);
    assert_eq!(
        sample(&page, "ipfs_mount_dataset_pending", &[("dataset", "notes")]),
        1.0,
        "the dataset's pending changes in the metrics"
    );
    let out = run(Command::new(BIN).args(["stats", "--store"]).arg(&m.store));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("cache hit ratio") && text.contains(&format!("fetched from {source}")),
        "{text}"
    );
}

/// A daemon this test started itself (not through [`Mount`]); unmounted and killed (by its
/// PID) on drop.
struct Child {
    child: std::process::Child,
    mnt: std::path::PathBuf,
}

impl Drop for Child {
    fn drop(&mut self) {
        fusermount_u(&self.mnt);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `mnt` is an ipfs-mount mount whose root answers.
fn wait_mounted(child: &mut Child, log: &std::path::Path) {
    let t = Instant::now();
    while !(is_mounted(&child.mnt) && child.mnt.join("ipfs").is_dir()) {
        if let Ok(Some(st)) = child.child.try_wait() {
            panic!(
                "exited before mounting ({st}): {}",
                fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "not mounted after 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A config file that sets every mount option by its long name (the test checks that it does,
/// from the clap definitions) mounts: the mount point, store, log file, metrics and gateway
/// addresses and commit delay come from the file; a flag overrides the file's cache size;
/// commands take the store from the file; a bad value is refused naming file, line and key.
#[test]
fn config_file_with_every_option() {
    use clap::CommandFactory;
    let test = "config_file_with_every_option";
    if !require_fuse(test) {
        return;
    }
    let tmp = tempdir("ops-config");
    let mnt = tmp.path().join("mnt");
    let store = tmp.path().join("store");
    let log = tmp.path().join("mount.log");
    fs::create_dir_all(&mnt).unwrap();
    let metrics = format!("127.0.0.1:{}", free_port());
    let serve = format!("127.0.0.1:{}", free_port());
    let config = format!(
        r#"# every option of the mount
mountpoint = "{mnt}"
store = "{store}"
cache-size = "2GiB"
gateway = ["http://127.0.0.1:9"]
offline = true
timeout = 5
no-gateway = false
listen = ["/ip4/127.0.0.1/tcp/0"]
peer = ["/ip4/127.0.0.1/tcp/9/p2p/12D3KooWPDGADQu8nZyfP7BEquLNQyfYvnCFaoQ55crvFMus3crb"]
routing = ["http://127.0.0.1:9"]
dht = "client"
no-p2p = false
dns = "127.0.0.1:9"
ipns-lifetime = "24h"
ipns-ttl = "1m"
serve = "{serve}"
serve-fetch = false
foreground = true
allow-other = false
verbose = 1
log-file = "{log}"
memory-cache = "32MiB"
commit-delay = "200ms"
commit-interval = "2s"
metrics = "{metrics}"
"#,
        mnt = mnt.display(),
        store = store.display(),
        log = log.display(),
    );
    // Every option of the mount is in the file.
    let keys: std::collections::BTreeSet<String> = config
        .lines()
        .filter_map(|l| l.split_once(" = ").map(|(k, _)| k.to_string()))
        .collect();
    let options: std::collections::BTreeSet<String> = ipfs_mount::cli::Cli::command()
        .get_arguments()
        .filter(|a| !a.is_hide_set())
        .map(|a| match a.get_long() {
            Some(l) => l.to_string(),
            None => a.get_id().to_string(),
        })
        .filter(|k| !["help", "version", "config"].contains(&k.as_str()))
        .collect();
    assert_eq!(keys, options, "the file sets every option of the mount");
    let file = tmp.path().join("config.toml");
    fs::write(&file, &config).unwrap();

    let mut cmd = Command::new(BIN);
    cmd.arg("--config")
        .arg(&file)
        .args(["--cache-size", "3MiB"])
        .env_remove("IPFS_MOUNT_STORE")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(fs::File::create(tmp.path().join("stderr")).unwrap());
    let mut child = Child {
        child: cmd.spawn().unwrap(),
        mnt: mnt.clone(),
    };
    wait_mounted(&mut child, &tmp.path().join("stderr"));
    assert!(
        fs::read_to_string(&log).unwrap().contains("mounted at"),
        "verbose = 1 into log-file"
    );
    let (status, body) = http("GET", &format!("http://{metrics}/metrics"), 30);
    assert_eq!(status, 200, "metrics from the file's address");
    let page = String::from_utf8_lossy(&body).into_owned();
    assert!(
        page.contains(&format!("ipfs_mount_cache_limit_bytes {}", 3 << 20)),
        "the flag's cache size wins over the file's: {page}"
    );
    let (status, _) = http(
        "GET",
        &format!("http://{serve}/ipfs/bafkqaaa?format=raw"),
        30,
    );
    assert_eq!(status, 200, "the gateway at the file's address");
    // A command takes the store from the file (through the mount's control socket).
    let ds = mnt.join("datasets").join("c");
    fs::create_dir(&ds).unwrap();
    fs::write(ds.join("f"), b"x").unwrap();
    let t = Instant::now();
    loop {
        let out = run(Command::new(BIN)
            .arg("--config")
            .arg(&file)
            .args(["dataset", "list", "--json"])
            .env_remove("IPFS_MOUNT_STORE"));
        assert!(
            out.status.success(),
            "dataset list: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        // commit-delay = 200ms: a version soon after the write
        if text.contains("\"version\":1") {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "no version: {text}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = run(Command::new(BIN).arg("unmount").arg(&mnt));
    assert!(out.status.success());

    // Without --config, $XDG_CONFIG_HOME/ipfs-mount/config.toml is read (`stats` on the
    // unmounted store shows the file's cache size); a missing default file is no error.
    let xdg = tmp.path().join("xdg");
    fs::create_dir_all(xdg.join("ipfs-mount")).unwrap();
    fs::write(
        xdg.join("ipfs-mount/config.toml"),
        format!("store = \"{}\"\ncache-size = \"7MiB\"\n", store.display()),
    )
    .unwrap();
    let stats = |xdg: &std::path::Path| {
        // not run(): its scrubbing points XDG_CONFIG_HOME away on purpose
        Command::new(BIN)
            .args(["stats", "--json"])
            .env("XDG_CONFIG_HOME", xdg)
            .env_remove("IPFS_MOUNT_STORE")
            .output()
            .unwrap()
    };
    let out = stats(&xdg);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["cache_limit_bytes"], 7 << 20, "{v}");
    let out = Command::new(BIN)
        .args(["stats", "--json"])
        .env("XDG_CONFIG_HOME", tmp.path().join("no-such-dir"))
        .env("IPFS_MOUNT_STORE", &store)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A bad value: refused, naming the file, the line and the key.
    let bad = tmp.path().join("bad.toml");
    fs::write(&bad, "offline = true\nmemory-cache = \"plenty\"\n").unwrap();
    let out = run(Command::new(BIN).arg("--config").arg(&bad).arg(&mnt));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("{}:2: key `memory-cache`", bad.display())),
        "{err}"
    );
}

/// `mount -t fuse.ipfs-mount ipfs MNT -o store=S,offline` mounts through mount.fuse3 (which
/// runs `ipfs-mount ipfs MNT -o OPTS` through /bin/sh) and returns once the mount serves;
/// `umount` ends the daemon. The same from an fstab line (`mount -T FSTAB MNT`). mount(8)
/// clears PATH for its helpers, so the shell finds `ipfs-mount` in the default PATH: the test
/// runs in a private mount namespace (`unshare -m`) where the binary under test is bound over
/// /usr/local/bin, so nothing on the machine changes. Needs root (mount(8) with a type is
/// root's).
#[test]
fn mount_t_and_fstab_through_mount_fuse3() {
    let test = "mount_t_and_fstab_through_mount_fuse3";
    if !require_fuse(test) {
        return;
    }
    if unsafe { libc::geteuid() } != 0
        || which("mount.fuse3").is_none()
        || which("unshare").is_none()
    {
        eprintln!("SKIPPED {test}: needs root, mount.fuse3 (fuse3) and unshare (util-linux)");
        return;
    }
    let tmp = tempdir("ops-mount-t");
    let store = tmp.path().join("store");
    let car = tmp.path().join("one.car");
    let root = common::car::write_dir_car(&car, &[("hello.txt", b"hello from fstab\n")], 1024);
    import_car(&store, &[&car]);
    let mnt = tmp.path().join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let bin_dir = tmp.path().join("bin");
    fs::create_dir_all(&bin_dir).unwrap();
    std::os::unix::fs::symlink(BIN, bin_dir.join("ipfs-mount")).unwrap();
    let fstab = tmp.path().join("fstab");
    fs::write(
        &fstab,
        format!(
            "# an fstab line for ipfs-mount\nipfs {} fuse.ipfs-mount store={},offline,noauto,nofail 0 0\n",
            mnt.display(),
            store.display()
        ),
    )
    .unwrap();
    // One round per form: mount, read, report fstype and daemon, umount, wait for its exit.
    let script = r#"
set -u
MNT="$1"; STORE="$2"; FSTAB="$3"; FILE="$4"; BIN_DIR="$5"
PID=""
cleanup() { umount -l "$MNT" 2>/dev/null; [ -n "$PID" ] && kill -9 "$PID" 2>/dev/null; true; }
trap cleanup EXIT
mount --bind "$BIN_DIR" /usr/local/bin || exit 10
round() {
  echo "== $1"
  shift
  "$@" || { echo "mount-failed $?"; return 1; }
  echo "mountinfo $(awk -v m="$MNT" '$5 == m' /proc/self/mountinfo)"
  echo "content $(cat "$MNT/ipfs/$FILE")"
  PID="$(getfattr --only-values -n user.ipfs-mount.pid "$MNT" 2>/dev/null)"
  echo "pid $PID"
  umount "$MNT" || { echo "umount-failed"; return 1; }
  for _ in $(seq 300); do
    st="$(awk '{print $3}' "/proc/$PID/stat" 2>/dev/null)"
    if [ -z "$st" ] || [ "$st" = Z ]; then echo "daemon-exited"; PID=""; return 0; fi
    sleep 0.1
  done
  echo "daemon-still-running"
}
round "mount -t" mount -t fuse.ipfs-mount ipfs "$MNT" -o "store=$STORE,offline"
round "fstab" mount -T "$FSTAB" "$MNT"
"#;
    let out = run(Command::new("unshare")
        .args([
            "-m",
            "--propagation",
            "private",
            "bash",
            "-c",
            script,
            "bash",
        ])
        .arg(&mnt)
        .arg(&store)
        .arg(&fstab)
        .arg(format!("{root}/hello.txt"))
        .arg(&bin_dir)
        .env_remove("IPFS_MOUNT_STORE"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    for form in ["mount -t", "fstab"] {
        let round = text
            .split("== ")
            .find(|r| r.starts_with(form))
            .unwrap_or_else(|| panic!("no {form} round: {text}\n{err}"));
        for want in [" - fuse", "content hello from fstab\n", "daemon-exited\n"] {
            assert!(
                round.contains(want),
                "{form}: want {want:?} in\n{round}\n{err}"
            );
        }
    }
    fusermount_u(&mnt);
}

/// `ipfs-mount completions bash` is a script bash loads; its completion function completes
/// subcommands (`dat` → `dataset`, `dataset l` → `list log`) and options (`--cache-s`). The
/// zsh and fish scripts are made too.
#[test]
fn completions_load_in_bash() {
    let script =
        String::from_utf8(run_ok(Command::new(BIN).args(["completions", "bash"]))).unwrap();
    let tmp = tempdir("ops-completions");
    let file = tmp.path().join("ipfs-mount.bash");
    fs::write(&file, &script).unwrap();
    // Completes the words of `line` as bash would at its end; prints one candidate a line.
    let probe = r#"
set -u
source "$1" || exit 10
func="$(complete -p ipfs-mount | sed -n 's/.*-F \([^ ]*\).*/\1/p')"
[ -n "$func" ] || exit 11
complete_line() {
  COMP_LINE="$1"; COMP_POINT=${#COMP_LINE}
  read -r -a COMP_WORDS <<< "$COMP_LINE"
  case "$COMP_LINE" in *" ") COMP_WORDS+=("");; esac
  COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
  COMPREPLY=()
  "$func" ipfs-mount "${COMP_WORDS[$COMP_CWORD]}" "${COMP_WORDS[$COMP_CWORD-1]}"
  echo "[$1] ${COMPREPLY[*]}"
}
complete_line "ipfs-mount dat"
complete_line "ipfs-mount dataset l"
complete_line "ipfs-mount st"
complete_line "ipfs-mount --cache-s"
"#;
    let out = run(Command::new("bash")
        .args(["--norc", "--noprofile", "-c", probe, "bash"])
        .arg(&file));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "bash: {}\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |prefix: &str| -> Vec<String> {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("[{prefix}] ")))
            .unwrap_or_else(|| panic!("no completion of {prefix:?}: {text}"))
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    assert_eq!(line("ipfs-mount dat"), ["dataset"]);
    let mut ds = line("ipfs-mount dataset l");
    ds.sort();
    assert_eq!(ds, ["list", "log"]);
    assert_eq!(line("ipfs-mount st"), ["stats"]);
    assert_eq!(line("ipfs-mount --cache-s"), ["--cache-size"]);

    let zsh = String::from_utf8(run_ok(Command::new(BIN).args(["completions", "zsh"]))).unwrap();
    assert!(zsh.starts_with("#compdef ipfs-mount"), "{zsh:.200}");
    let fish = String::from_utf8(run_ok(Command::new(BIN).args(["completions", "fish"]))).unwrap();
    assert!(fish.contains("complete -c ipfs-mount") && fish.contains("stats"));
}

/// `ipfs-mount man` prints a roff man page made from the clap definitions: `man` renders it
/// (when installed) with the commands and options.
#[test]
fn man_page_from_the_definitions() {
    let page = String::from_utf8(run_ok(Command::new(BIN).arg("man"))).unwrap();
    assert!(
        page.starts_with(".ie") || page.contains(".TH ipfs-mount"),
        "{page:.300}"
    );
    for word in [
        "\\-\\-cache\\-size",
        "\\-\\-metrics",
        "\\-\\-config",
        "stats",
        "completions",
    ] {
        assert!(page.contains(word), "{word} in the man page");
    }
    if which("man").is_some() {
        let tmp = tempdir("ops-man");
        let file = tmp.path().join("ipfs-mount.1");
        fs::write(&file, &page).unwrap();
        let out = run(Command::new("man")
            .args(["-P", "cat", "-l"])
            .arg(&file)
            .env("MANWIDTH", "100"));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "man -l: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("NAME") && text.contains("--cache-size"),
            "{text:.600}"
        );
    }
}

/// The systemd unit in contrib/ works as written: `systemd-analyze verify` accepts it (with
/// the binary under test at /usr/local/bin, in a private mount namespace), and its
/// ExecStartPre, ExecStart and ExecStop lines, run as systemd would (Environment= expanded,
/// the config file and mount point of the test put in), mount with the config file, serve,
/// and stop with the store released.
#[test]
fn systemd_unit_starts_and_stops_the_mount() {
    let test = "systemd_unit_starts_and_stops_the_mount";
    if !require_fuse(test) {
        return;
    }
    let unit_path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/ipfs-mount.service");
    let unit = fs::read_to_string(&unit_path).unwrap();
    let tmp = tempdir("ops-systemd");
    let store = tmp.path().join("store");
    let car = tmp.path().join("one.car");
    let root = common::car::write_dir_car(&car, &[("a.txt", b"from the unit\n")], 1024);
    import_car(&store, &[&car]);
    let mnt = tmp.path().join("mnt");
    let config = tmp.path().join("config.toml");
    fs::write(
        &config,
        format!("store = \"{}\"\noffline = true\n", store.display()),
    )
    .unwrap();
    let value = |key: &str| -> Vec<String> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(String::from)
            .collect()
    };
    assert_eq!(value("Type"), ["forking"]);
    assert_eq!(value("Environment"), ["MOUNTPOINT=/mnt/ipfs"]);
    let expand = |line: &str| -> Vec<String> {
        line.replace("${MOUNTPOINT}", &mnt.display().to_string())
            .replace("/usr/local/bin/ipfs-mount", BIN)
            .replace("/etc/ipfs-mount/config.toml", &config.display().to_string())
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    let exec = |key: &str| {
        for line in value(key) {
            let words = expand(&line);
            let out = run(Command::new(&words[0])
                .args(&words[1..])
                .env_remove("IPFS_MOUNT_STORE"));
            assert!(
                out.status.success(),
                "{key}={line}: {}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    };
    let _guard = SystemMount {
        mnt: mnt.clone(),
        pid: None,
    };
    exec("ExecStartPre");
    exec("ExecStart");
    // Type=forking: ExecStart has returned, so the mount serves.
    let got = fs::read(mnt.join("ipfs").join(&root).join("a.txt")).unwrap();
    assert_eq!(got, b"from the unit\n");
    let pid = daemon_pid(&mnt).expect("the daemon's pid");
    exec("ExecStop");
    assert!(!is_mounted(&mnt), "unmounted by ExecStop");
    assert!(wait_gone(pid, 1), "ExecStop returned with the daemon gone");

    if unsafe { libc::geteuid() } == 0
        && which("systemd-analyze").is_some()
        && which("unshare").is_some()
    {
        let bin_dir = tmp.path().join("bin");
        fs::create_dir_all(&bin_dir).unwrap();
        std::os::unix::fs::symlink(BIN, bin_dir.join("ipfs-mount")).unwrap();
        let out = run(Command::new("unshare")
            .args(["-m", "--propagation", "private", "bash", "-c"])
            .arg("mount --bind \"$1\" /usr/local/bin && systemd-analyze verify --man=no \"$2\"")
            .arg("bash")
            .arg(&bin_dir)
            .arg(&unit_path));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && err.trim().is_empty(),
            "systemd-analyze verify: {}\n{err}",
            out.status
        );
    }
}

/// The pid the mount at `mnt` reports on its root (`user.ipfs-mount.pid`), if any.
fn daemon_pid(mnt: &std::path::Path) -> Option<u32> {
    let out = run(Command::new("getfattr")
        .args(["--only-values", "-n", "user.ipfs-mount.pid"])
        .arg(mnt));
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// Unmounts `mnt` and kills the daemon that served it (by the pid it reported) on drop.
struct SystemMount {
    mnt: std::path::PathBuf,
    pid: Option<u32>,
}

impl Drop for SystemMount {
    fn drop(&mut self) {
        let pid = self.pid.or_else(|| daemon_pid(&self.mnt));
        fusermount_u(&self.mnt);
        if let Some(pid) = pid {
            // SAFETY: kill(2) on the daemon this test mounted (the pid its mount reported).
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    }
}

/// Waits until the process `pid` is gone (or a zombie).
fn wait_gone(pid: u32, secs: u64) -> bool {
    let t = Instant::now();
    loop {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .next();
        if matches!(state, None | Some("Z")) {
            return true;
        }
        if t.elapsed() > Duration::from_secs(secs) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Over bitswap between two mounts: B reads a file A holds (B knows A as its only peer, no
/// gateway), and B's `ipfs_mount_fetched_bytes_total{source="bitswap"}` and A's
/// `ipfs_mount_served_bytes_total{to="peers"}` both move by exactly the bytes of its blocks;
/// each counts one peer connected.
#[test]
fn metrics_count_bitswap_both_ways() {
    let test = "metrics_count_bitswap_both_ways";
    if !require_fuse(test) || !have_prometheus_parser(test) {
        return;
    }
    let tmp = tempdir("ops-bitswap-metrics");
    let store_a = tmp.path().join("a");
    let car = tmp.path().join("one.car");
    let data = random_bytes(2 << 20, 9);
    let file_blocks = common::car::file(&data, 256 << 10);
    let dir = common::car::directory(&[(
        "data.bin",
        file_blocks[0].cid,
        common::car::tsize(&file_blocks),
    )]);
    let mut all = vec![dir.clone()];
    all.extend(file_blocks.iter().cloned());
    let total: usize = all.iter().map(|b| b.data.len()).sum();
    let mut f = fs::File::create(&car).unwrap();
    common::car::write(&dir.cid, &all, &mut f).unwrap();
    drop(f);
    import_car(&store_a, &[&car]);
    let metrics_a = format!("127.0.0.1:{}", free_port());
    let metrics_b = format!("127.0.0.1:{}", free_port());
    let a = common::p2p::p2p_mount_with_store(&store_a, &["--offline", "--metrics", &metrics_a]);
    let maddr = common::p2p::mount_maddr(&a);
    let b = common::p2p::p2p_mount(&["--no-gateway", "--peer", &maddr, "--metrics", &metrics_b]);
    let got = fs::read(b.ipfs(&dir.cid.to_string()).join("data.bin")).unwrap();
    assert!(got == data, "the file read over bitswap");
    let page_b = scrape(&format!("http://{metrics_b}/metrics"));
    assert_eq!(
        sample(
            &page_b,
            "ipfs_mount_fetched_bytes_total",
            &[("source", "bitswap")]
        ),
        total as f64,
        "B fetched {} blocks, {total} bytes over bitswap",
        all.len()
    );
    assert_eq!(sample(&page_b, "ipfs_mount_peers_connected", &[]), 1.0);
    let page_a = scrape(&format!("http://{metrics_a}/metrics"));
    assert_eq!(
        sample(&page_a, "ipfs_mount_served_bytes_total", &[("to", "peers")]),
        total as f64,
        "A served the blocks to B"
    );
    assert_eq!(sample(&page_a, "ipfs_mount_peers_connected", &[]), 1.0);
}
