//! Command-line interface: the arguments, as clap parses them. The commands that run them are
//! in [`crate::cmd`].

use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "ipfs-mount",
    version,
    about = "Mount IPFS content as plain files",
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub mount: MountArgs,
}

impl Cli {
    /// Parses a command line. The store options and `-v` are accepted anywhere on the line
    /// (`ipfs-mount --store S dataset log x`, `ipfs-mount dataset log x --store S`); an option
    /// that only the mount has (`-f`, `--gateway`, a mountpoint …) given with a command is an
    /// error, not silently ignored.
    pub fn try_parse_checked<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let mut command = Cli::command();
        let matches = command.try_get_matches_from_mut(args)?;
        if let Some(sub) = matches.subcommand_name() {
            let mount_only = command
                .get_arguments()
                .filter(|arg| !arg.is_global_set())
                .find(|arg| {
                    matches.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine)
                })
                .map(|arg| arg.to_string());
            if let Some(arg) = mount_only {
                return Err(command.error(
                    clap::error::ErrorKind::ArgumentConflict,
                    format!("{arg} belongs to the mount, not to `ipfs-mount {sub}`"),
                ));
            }
        }
        Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut command))
    }

    /// [`Cli::try_parse_checked`] on the process's arguments after the config file's settings
    /// ([`crate::config`]); prints the error and exits.
    /// A command line in mount.fuse3's form (`ipfs-mount SOURCE MOUNTPOINT -o OPTS`) is first
    /// made an ordinary one ([`crate::mount_helper`]).
    pub fn parse_checked() -> Cli {
        let fail = |e: anyhow::Error| -> ! {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "ipfs-mount: {e:#}");
            std::process::exit(2)
        };
        let args =
            crate::mount_helper::rewrite(std::env::args_os().collect()).unwrap_or_else(|e| fail(e));
        let _ = COMMAND_LINE.set(args.clone());
        let args = crate::config::apply(args).unwrap_or_else(|e| fail(e));
        Cli::try_parse_checked(args).unwrap_or_else(|e| e.exit())
    }
}

/// The command line as [`Cli::parse_checked`] read it (in its ordinary form).
static COMMAND_LINE: std::sync::OnceLock<Vec<std::ffi::OsString>> = std::sync::OnceLock::new();

/// The arguments after the program name, as [`Cli::parse_checked`] read them (the background
/// child of a mount is started with these).
pub fn command_line_args() -> Vec<std::ffi::OsString> {
    COMMAND_LINE
        .get()
        .cloned()
        .unwrap_or_else(|| std::env::args_os().collect())
        .into_iter()
        .skip(1)
        .collect()
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Unmount a mounted ipfs-mount filesystem.
    Unmount { mountpoint: PathBuf },
    /// Import CAR files (v1 or v2) into the store: every block verified, roots pinned.
    Import {
        #[arg(required = true)]
        cars: Vec<PathBuf>,
    },
    /// Writable datasets: list, create, show history, commit.
    Dataset {
        #[command(subcommand)]
        action: DatasetAction,
    },
    /// The IPNS keys of datasets: list, export, import (to move a dataset's name to another machine).
    Key {
        #[command(subcommand)]
        action: KeyAction,
    },
    /// This node's peer id and the addresses peers can dial (from the running mount if any).
    Id {
        /// Print JSON: {"ID": ..., "Addresses": [...]}.
        #[arg(long)]
        json: bool,
    },
    /// Named pins: add, list, remove.
    Pin {
        #[command(subcommand)]
        action: PinAction,
    },
    /// Delete every stored block that no pin, dataset version or writer holds.
    Gc {
        /// Only count what would be freed.
        #[arg(long)]
        dry_run: bool,
    },
    /// What a running mount is doing: cache, pins, blocks, hit ratio, bytes fetched per source
    /// and served, peers, datasets (without a mount: what the store holds).
    Stats {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff), made from these very definitions.
    Man,
    /// Export the whole DAG below a CID as a CARv1.
    Export {
        #[command(flatten)]
        net: NetArgs,
        cid: String,
        /// Output file (default: standard output).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

/// `ipfs-mount pin …`.
#[derive(Debug, Clone, Subcommand)]
pub enum PinAction {
    /// Fetch a whole DAG (only the blocks the store lacks, each verified) and pin it: it stays
    /// readable offline, is served to peers and is never evicted.
    Add {
        #[command(flatten)]
        net: NetArgs,
        /// A CID, /ipfs/<cid>/path or /ipns/<name>/path (an /ipns name needs a running mount).
        target: String,
        /// A name for the pin; given to another CID, the name moves there.
        #[arg(long)]
        name: Option<String>,
    },
    /// Every pin (named, unnamed, imported): CID, names, kind, blocks, bytes.
    Ls {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Remove a pin by CID, or a name (the pin goes with its last name).
    Rm { what: String },
}

#[derive(Debug, Clone, Subcommand)]
pub enum KeyAction {
    /// Every dataset with its IPNS name.
    List,
    /// Write a dataset's private key (libp2p protobuf encoding) to a file (mode 0600) or stdout.
    Export {
        dataset: String,
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Give a dataset the key from a file: it is then published under that key's name.
    Import { dataset: String, file: PathBuf },
}

#[derive(Debug, Clone, Subcommand)]
pub enum DatasetAction {
    /// Every dataset with its version, root CID, head commit, profile and state.
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Create a dataset (as `mkdir <mnt>/datasets/<name>` does, but with a choice of profile).
    Create {
        name: String,
        /// Import profile: unixfs-v1-2025 (CIDv1, raw leaves, 1 MiB chunks) or unixfs-v0-2015 (Kubo's classic CIDv0).
        #[arg(long, default_value = crate::datasets::DEFAULT_PROFILE)]
        profile: String,
    },
    /// The versions of a dataset, newest first.
    Log {
        name: String,
        /// One JSON object per line: version, root, commit, time (RFC 3339), message.
        #[arg(long)]
        json: bool,
    },
    /// Commit the dataset's pending changes now as one version (with a message, also when
    /// nothing changed).
    Commit {
        name: String,
        /// Text kept in the commit record.
        #[arg(short, long)]
        message: Option<String>,
    },
    /// Sign and send a new IPNS record for the dataset now (the mount also does it on every version).
    Publish { name: String },
    /// Make /datasets/NAME a read-only replica of another machine's dataset, kept current
    /// from its IPNS name or DNSLink domain (each new version fetched and pinned).
    Follow {
        /// An IPNS name, /ipns/<name> or a DNSLink domain.
        source: String,
        /// The local name [default: the IPNS name or domain].
        #[arg(long = "as", value_name = "NAME")]
        name: Option<String>,
    },
    /// Stop following a replica; its versions' blocks become cache (for gc).
    Unfollow { name: String },
    /// Release older versions' trees (never the head); their commit records stay, so the
    /// chain is still complete; `gc` then frees their blocks that no kept version has.
    #[command(group(clap::ArgGroup::new("keep").required(true)))]
    Prune {
        name: String,
        /// Keep the newest N versions.
        #[arg(long, group = "keep", value_name = "N")]
        keep_last: Option<u64>,
        /// Keep the versions committed within this long (e.g. 30d, 12h).
        #[arg(long, group = "keep", value_parser = parse_duration, value_name = "DURATION")]
        keep_within: Option<std::time::Duration>,
    },
}

#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Block store directory [default: $XDG_DATA_HOME/ipfs-mount, else ~/.local/share/ipfs-mount]
    #[arg(long, env = "IPFS_MOUNT_STORE", global = true)]
    pub store: Option<PathBuf>,
    /// Bytes of fetched (unpinned) blocks kept before least-recently-used ones are evicted.
    #[arg(long, default_value = "10GiB", value_parser = parse_size, global = true)]
    pub cache_size: u64,
}

#[derive(Debug, Clone, Args)]
pub struct NetArgs {
    /// Trustless gateway to fetch blocks from (repeatable) [default: $IPFS_GATEWAY, else http://127.0.0.1:8080]
    #[arg(long = "gateway", value_name = "URL")]
    pub gateways: Vec<String>,
    /// Never fetch: serve only what is in the store.
    #[arg(long)]
    pub offline: bool,
    /// Seconds without progress before a gateway request or a bitswap want counts as failed.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
    /// Use no HTTP gateway (not even the default one): fetch from peers only.
    #[arg(long, conflicts_with = "gateways")]
    pub no_gateway: bool,
}

/// The IPFS peer: libp2p listening, peers, provider discovery.
#[derive(Debug, Clone, Args)]
pub struct P2pArgs {
    /// Address to listen on for IPFS peers (repeatable; listening beyond loopback is your
    /// explicit choice) [default: /ip4/127.0.0.1/tcp/4021]
    #[arg(long = "listen", value_name = "MULTIADDR")]
    pub listen: Vec<String>,
    /// Peer to connect at start, keep connected and ask first (repeatable):
    /// /ip4/127.0.0.1/tcp/4001/p2p/12D3Koo…
    #[arg(long = "peer", value_name = "MULTIADDR")]
    pub peers: Vec<String>,
    /// Delegated routing server to find providers with (repeatable): GET /routing/v1/providers/{cid}.
    #[arg(long = "routing", value_name = "URL")]
    pub routers: Vec<String>,
    /// Kademlia DHT: off, client (query only) or server (also answer and store records);
    /// bootstrap peers are the --peer list.
    #[arg(long, default_value = "client")]
    pub dht: ipfs_mount_p2p::DhtMode,
    /// Do not run the IPFS peer at all (no bitswap, no listening).
    #[arg(long)]
    pub no_p2p: bool,
}

/// Names (IPNS, DNSLink) and the local gateway.
#[derive(Debug, Clone, Args)]
pub struct NameArgs {
    /// DNS server for DNSLink names (/ipns/<domain>), e.g. 127.0.0.1:5353; without it DNSLink is off.
    #[arg(long, value_name = "IP:PORT")]
    pub dns: Option<std::net::SocketAddr>,
    /// Validity of the IPNS records published for datasets.
    #[arg(long, default_value = "48h", value_parser = parse_duration)]
    pub ipns_lifetime: std::time::Duration,
    /// TTL written in the IPNS records published for datasets (how long resolvers may cache them).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub ipns_ttl: std::time::Duration,
    /// Serve a trustless + path HTTP gateway over the store at this address, e.g. 127.0.0.1:8090.
    #[arg(long, value_name = "ADDR")]
    pub serve: Option<std::net::SocketAddr>,
    /// Let the --serve gateway fetch blocks the store lacks (default: only what is local).
    #[arg(long, requires = "serve")]
    pub serve_fetch: bool,
}

/// Parses durations such as `48h`, `5m`, `30s`, `500ms` or plain seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: u64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = match unit {
        "ms" => return Ok(std::time::Duration::from_millis(n)),
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return Err(format!("invalid duration unit in {s:?} (ms, s, m, h, d)")),
    };
    Ok(std::time::Duration::from_secs(secs))
}

#[derive(Debug, Clone, Args)]
pub struct MountArgs {
    /// Where to mount.
    #[arg(required = true)]
    pub mountpoint: Option<PathBuf>,
    /// TOML file of mount options by long name (flags override it)
    /// [default: $XDG_CONFIG_HOME/ipfs-mount/config.toml, if present]
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub net: NetArgs,
    #[command(flatten)]
    pub p2p: P2pArgs,
    #[command(flatten)]
    pub names: NameArgs,
    /// Stay in the foreground instead of serving from a background process.
    #[arg(short, long)]
    pub foreground: bool,
    /// Let other users see the mount (needs user_allow_other in /etc/fuse.conf unless root).
    #[arg(long)]
    pub allow_other: bool,
    /// More logs (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Where the background process writes its log [default: <store>/ipfs-mount.log]
    #[arg(long)]
    pub log_file: Option<PathBuf>,
    /// Memory for the in-process block cache.
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    pub memory_cache: u64,
    /// Datasets: commit a version once a dataset has had no change for this long.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    pub commit_delay: std::time::Duration,
    /// Datasets: under continuous changes, commit a version at least this often.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub commit_interval: std::time::Duration,
    /// Serve the `stats` numbers as Prometheus text at http://ADDR/metrics, e.g. 127.0.0.1:9402.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Internal: file descriptor on which a background child reports readiness.
    #[arg(long, hide = true)]
    pub ready_fd: Option<i32>,
}

impl StoreArgs {
    pub fn dir(&self) -> PathBuf {
        if let Some(d) = &self.store {
            return d.clone();
        }
        let base = std::env::var_os("XDG_DATA_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
            .unwrap_or_else(|| PathBuf::from("."));
        base.join("ipfs-mount")
    }
}

impl NetArgs {
    /// The gateways to use, in order of preference.
    pub fn gateway_urls(&self) -> Vec<String> {
        self.named_gateway_urls()
            .unwrap_or_else(|| vec!["http://127.0.0.1:8080".to_string()])
    }

    /// Gateways the user named (--gateway, else $IPFS_GATEWAY), if any.
    pub fn named_gateway_urls(&self) -> Option<Vec<String>> {
        if !self.gateways.is_empty() {
            return Some(self.gateways.clone());
        }
        if let Ok(g) = std::env::var("IPFS_GATEWAY") {
            let list: Vec<String> = g
                .split([',', ' '])
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            if !list.is_empty() {
                return Some(list);
            }
        }
        None
    }
}

/// Parses sizes such as `10GiB`, `512MiB`, `1G` or a plain number of bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("invalid size {s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("10GiB").unwrap(), 10 << 30);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn command_line_shapes() {
        let c = Cli::try_parse_from([
            "ipfs-mount",
            "/mnt/x",
            "--gateway",
            "http://127.0.0.1:1",
            "-f",
        ])
        .unwrap();
        assert!(c.command.is_none());
        assert_eq!(
            c.mount.mountpoint.as_deref(),
            Some(std::path::Path::new("/mnt/x"))
        );
        assert!(c.mount.foreground);
        let c = Cli::try_parse_from(["ipfs-mount", "unmount", "/mnt/x"]).unwrap();
        assert!(matches!(c.command, Some(Command::Unmount { .. })));
        let c = Cli::try_parse_from(["ipfs-mount", "import", "--store", "/s", "a.car", "b.car"])
            .unwrap();
        assert!(matches!(c.command, Some(Command::Import { ref cars, .. }) if cars.len() == 2));
        assert!(Cli::try_parse_from(["ipfs-mount"]).is_err());
    }

    fn store_of(args: &[&str]) -> Option<PathBuf> {
        Cli::try_parse_checked(args.iter().copied())
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
            .mount
            .store
            .store
    }

    /// The store options and -v go anywhere: before the command, after it, after its
    /// subcommand, between its operands.
    #[test]
    fn store_and_verbosity_anywhere_on_the_line() {
        let s = Some(PathBuf::from("/s"));
        for line in [
            &["ipfs-mount", "--store", "/s", "dataset", "log", "a"][..],
            &["ipfs-mount", "dataset", "--store", "/s", "log", "a"],
            &["ipfs-mount", "dataset", "log", "a", "--store", "/s"],
            &["ipfs-mount", "key", "list", "--store", "/s"],
            &["ipfs-mount", "--store", "/s", "key", "list"],
            &["ipfs-mount", "id", "--store", "/s"],
            &["ipfs-mount", "import", "a.car", "--store", "/s", "b.car"],
            &[
                "ipfs-mount",
                "export",
                "bafkqaaa",
                "--store",
                "/s",
                "--offline",
            ],
            &["ipfs-mount", "unmount", "/m", "--store", "/s"],
            &["ipfs-mount", "/mnt", "--store", "/s"],
            &["ipfs-mount", "--store", "/s", "/mnt", "-f"],
        ] {
            assert_eq!(store_of(line), s, "{line:?}");
        }
        let c = Cli::try_parse_checked([
            "ipfs-mount",
            "-v",
            "dataset",
            "log",
            "a",
            "--cache-size",
            "1MiB",
        ])
        .unwrap();
        assert_eq!(c.mount.verbose, 1);
        assert_eq!(c.mount.store.cache_size, 1 << 20);
        let c = Cli::try_parse_checked(["ipfs-mount", "import", "-vv", "a.car"]).unwrap();
        assert_eq!(c.mount.verbose, 2);
    }

    /// What only the mount understands is refused with a command, wherever it stands.
    #[test]
    fn mount_options_with_a_command_are_refused() {
        for line in [
            &["ipfs-mount", "-f", "dataset", "list"][..],
            &[
                "ipfs-mount",
                "--gateway",
                "http://127.0.0.1:1",
                "dataset",
                "list",
            ],
            &["ipfs-mount", "/mnt", "dataset", "list"],
            &["ipfs-mount", "dataset", "list", "-f"],
        ] {
            assert!(
                Cli::try_parse_checked(line.iter().copied()).is_err(),
                "{line:?} accepted"
            );
        }
    }
}
