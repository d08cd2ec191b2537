//! Running the mount as a service (issue 12): `unmount` returns once the store is released,
//! `stats` and `--metrics`, the config file, `mount -t fuse.ipfs-mount`, completions.

mod common;

use std::fs;
use std::process::Command;
use std::time::Instant;

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
        let state = state.rsplit(')').next().unwrap_or("").split_whitespace().next();
        assert!(
            matches!(state, None | Some("Z") | Some("X")),
            "round {round}: the daemon (pid {pid}) still runs after unmount returned: {state:?}"
        );
        // At once: the same store, in a new mount.
        m.restart();
        for r in 0..=round {
            let got = fs::read(m.mnt.join(format!("datasets/d{r}/data.bin"))).unwrap();
            assert!(got == data, "round {round}: d{r}/data.bin differs after remount");
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
    check_sockets(&[me], &[IpAddr::V4(Ipv4Addr::UNSPECIFIED)])
        .expect("allowed when configured");
}
