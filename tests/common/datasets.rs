//! Helpers of the dataset tests (`tests/datasets.rs`, `tests/datasets_write.rs`): a mount with datasets, their
//! xattrs and commit records, shell and Python scripts run with a timeout, and the collect-then-fail style (each
//! test gathers every problem it sees and fails at the end with [`finish`]).

use super::*;

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// No extra environment, for [`bash`].
pub const NOENV: &[(&str, &str)] = &[];

/// A mount that never fetches (everything a dataset needs is local).
pub fn ds_mount() -> Mount {
    Mount::start(&["--offline"])
}

/// `mkdir <mnt>/datasets/<name>`; panics (with the log) if that fails.
pub fn mkds(m: &Mount, name: &str) -> PathBuf {
    let d = m.mnt.join("datasets").join(name);
    if let Err(e) = fs::create_dir(&d) {
        m.fail(&format!("mkdir {}: {e}", d.display()));
    }
    d
}

/// A `user.ipfs.*` xattr as a string (trailing NUL/newline trimmed), failing after `secs` instead of hanging: reading
/// `user.ipfs.cid` of a dataset root commits pending changes first.
pub fn xattr(path: &Path, name: &str, secs: u64) -> Result<String, String> {
    let p = path.to_path_buf();
    let n = name.to_string();
    match run_with_timeout(secs, move || lgetxattr(&p, &n)) {
        None => Err(format!(
            "getxattr {name} {}: no answer within {secs} s",
            path.display()
        )),
        Some(Err(e)) => Err(format!(
            "getxattr {name} {}: {}",
            path.display(),
            errno_name(e)
        )),
        Some(Ok(v)) => Ok(String::from_utf8_lossy(&v)
            .trim_end_matches(['\0', '\n'])
            .to_string()),
    }
}

/// Runs `bash -euo pipefail -c script` in `cwd` with extra environment; Err carries status and stderr.
pub fn bash<V: AsRef<OsStr>>(
    cwd: &Path,
    script: &str,
    env: &[(&str, V)],
    secs: u64,
) -> Result<String, String> {
    let mut cmd = Command::new("bash");
    cmd.args(["-euo", "pipefail", "-c", script])
        .current_dir(cwd)
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v.as_ref());
    }
    let what = format!("bash in {}: {script}", cwd.display());
    match run_with_timeout(secs, move || cmd.output()) {
        None => Err(format!("{what}: timed out after {secs} s")),
        Some(Err(e)) => Err(format!("{what}: {e}")),
        Some(Ok(o)) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).into_owned()),
        Some(Ok(o)) => Err(format!(
            "{what}: {}\nstderr: {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        )),
    }
}

/// `python3 -c script args...` with a timeout; Err carries status, stdout and stderr.
pub fn python<A: AsRef<OsStr>>(script: &str, args: &[A], secs: u64) -> Result<String, String> {
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(script).args(args).stdin(Stdio::null());
    let what = format!(
        "python3 {}",
        args.iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    );
    match run_with_timeout(secs, move || cmd.output()) {
        None => Err(format!("{what}: timed out after {secs} s")),
        Some(Err(e)) => Err(format!("{what}: {e}")),
        Some(Ok(o)) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).into_owned()),
        Some(Ok(o)) => Err(format!(
            "{what}: {}\nstdout: {}\nstderr: {}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )),
    }
}

/// Fails the test with every collected problem (and the daemon log's tail).
pub fn finish(m: &Mount, test: &str, failures: &[String]) {
    if !failures.is_empty() {
        m.fail(&format!(
            "{test}: {} problem(s):\n- {}",
            failures.len(),
            failures.join("\n- ")
        ));
    }
}

/// `/ipfs/<commit>` read as dag-json (how the mount shows dag-cbor blocks).
pub fn read_commit(m: &Mount, cid: &str) -> Result<serde_json::Value, String> {
    let p = m.ipfs(cid);
    let bytes = read_timeout(&p, 30).map_err(|e| format!("read {}: {e}", p.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        format!(
            "/ipfs/{cid} is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
        )
    })
}

/// The CID of a dag-json link (`{"/": "<cid>"}`).
pub fn link(v: &serde_json::Value) -> Option<String> {
    v.get("/").and_then(|s| s.as_str()).map(str::to_owned)
}
