//! `mount -t fuse.ipfs-mount ipfs /mnt/ipfs -o store=/path,offline`, and so an fstab line
//! `ipfs /mnt/ipfs fuse.ipfs-mount store=/path,offline 0 0`.
//!
//! mount(8) runs `mount.fuse3 ipfs /mnt/ipfs -o OPTS -t fuse.ipfs-mount`, which runs
//! `/bin/sh -c 'ipfs-mount ipfs /mnt/ipfs -o OPTS'` (the program named after `fuse.`, found in
//! PATH), having dropped the options only mount itself uses (`user`, `auto`, `nofail`,
//! `_netdev`, ...) and added `dev`/`suid` unless `nodev`/`nosuid` were given. So a command
//! line of the form `SOURCE MOUNTPOINT -o OPTS` is rewritten here into the ordinary one:
//! every option named like a mount option (`cache-size=1GiB` or `cache_size=1GiB`;
//! `gateway=` repeatable; `offline`, `allow_other` as flags) becomes its flag, the generic
//! mount options (`rw`, `dev`, `suid`, `exec`, `atime`, ...) are accepted and left to our own
//! fixed mount flags, and anything else is an error. The SOURCE is not used (write `ipfs`).
//! The mount runs in the background as usual, so the helper returns once it is mounted.
//!
//! Part of the command-line layer (it reads [`crate::cli`]'s definitions).

use std::ffi::OsString;

use anyhow::{bail, Result};
use clap::CommandFactory;

use crate::cli::Cli;

/// Options mount(8) and mount.fuse3 pass along that are not ours to act on: the mount's
/// generic flags (ipfs-mount mounts nodev, nosuid, noatime whatever they say) and fstab's.
const GENERIC: &[&str] = &[
    "rw",
    "ro",
    "dev",
    "nodev",
    "suid",
    "nosuid",
    "exec",
    "noexec",
    "atime",
    "noatime",
    "relatime",
    "strictatime",
    "nodiratime",
    "diratime",
    "sync",
    "async",
    "dirsync",
    "defaults",
    "auto",
    "noauto",
    "user",
    "users",
    "nouser",
    "nofail",
    "_netdev",
    "loud",
    "silent",
];

/// The options only the mount has, not accepted in `-o`.
const NOT_AN_OPTION: &[&str] = &["help", "version", "ready-fd", "foreground"];

/// When `args` has the mount helper's shape (`PROG SOURCE MOUNTPOINT -o OPTS`, SOURCE not a
/// command), the equivalent ordinary command line; otherwise `args` unchanged.
pub fn rewrite(args: Vec<OsString>) -> Result<Vec<OsString>> {
    let command = Cli::command();
    let [prog, source, mountpoint, rest @ ..] = args.as_slice() else {
        return Ok(args);
    };
    let positional = |a: &OsString| !a.to_string_lossy().starts_with('-');
    let is_command = source == "help"
        || command
            .get_subcommands()
            .any(|c| c.get_name() == source.to_string_lossy());
    // mount.fuse3 always passes `-o` (mount adds `rw`, mount.fuse3 `dev`/`suid`); without it
    // two operands are a mistake clap should report, not a mount of the second.
    let shape =
        !rest.is_empty() && rest.len() % 2 == 0 && rest.chunks(2).all(|pair| pair[0] == "-o");
    if !positional(source) || !positional(mountpoint) || is_command || !shape {
        return Ok(args);
    }
    let mut out = vec![prog.clone()];
    for pair in rest.chunks(2) {
        for opt in pair[1].to_string_lossy().split(',') {
            out.extend(option_args(&command, opt)?);
        }
    }
    out.push(mountpoint.clone());
    Ok(out)
}

/// The flags for one `-o` option.
fn option_args(command: &clap::Command, opt: &str) -> Result<Vec<OsString>> {
    let opt = opt.trim();
    if opt.is_empty() || GENERIC.contains(&opt) || opt.starts_with("x-") {
        return Ok(Vec::new());
    }
    let (name, value) = match opt.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (opt, None),
    };
    let long = name.replace('_', "-");
    let Some(arg) = command
        .get_arguments()
        .find(|a| a.get_long() == Some(long.as_str()) && !NOT_AN_OPTION.contains(&long.as_str()))
    else {
        bail!("-o {opt}: not an option of ipfs-mount (use the long names of its options, e.g. store=/path,offline)");
    };
    let flag = format!("--{long}");
    let takes_value = matches!(
        arg.get_action(),
        clap::ArgAction::Set | clap::ArgAction::Append
    );
    Ok(match (takes_value, value) {
        (true, Some(v)) => vec![flag.into(), v.into()],
        (true, None) => bail!("-o {opt}: needs a value ({name}=...)"),
        (false, None) => vec![flag.into()],
        (false, Some(_)) => bail!("-o {opt}: takes no value"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(args: &[&str]) -> Result<Vec<String>> {
        Ok(rewrite(args.iter().map(OsString::from).collect())?
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect())
    }

    #[test]
    fn mount_fuse_command_lines() {
        assert_eq!(
            rw(&[
                "ipfs-mount",
                "ipfs",
                "/mnt/ipfs",
                "-o",
                "rw,dev,suid,store=/s,offline,cache_size=1GiB,gateway=http://127.0.0.1:1,gateway=http://127.0.0.1:2,allow_other,x-systemd.automount"
            ])
            .unwrap(),
            [
                "ipfs-mount",
                "--store",
                "/s",
                "--offline",
                "--cache-size",
                "1GiB",
                "--gateway",
                "http://127.0.0.1:1",
                "--gateway",
                "http://127.0.0.1:2",
                "--allow-other",
                "/mnt/ipfs"
            ]
        );
        // Only generic options.
        assert_eq!(
            rw(&["ipfs-mount", "ipfs", "/mnt/ipfs", "-o", "rw,dev,suid"]).unwrap(),
            ["ipfs-mount", "/mnt/ipfs"]
        );
        // Ordinary command lines are left alone.
        for line in [
            &["ipfs-mount", "/mnt", "--offline"][..],
            &["ipfs-mount", "dataset", "list"],
            &["ipfs-mount", "unmount", "/mnt"],
            &["ipfs-mount", "--store", "/s", "/mnt"],
            &["ipfs-mount", "/mnt/a", "/mnt/b"],
        ] {
            assert_eq!(rw(line).unwrap(), line, "{line:?}");
        }
        assert!(rw(&["ipfs-mount", "ipfs", "/m", "-o", "colour=red"]).is_err());
        assert!(rw(&["ipfs-mount", "ipfs", "/m", "-o", "store"]).is_err());
        assert!(rw(&["ipfs-mount", "ipfs", "/m", "-o", "offline=yes"]).is_err());
    }
}
