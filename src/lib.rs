//! ipfs-mount: IPFS content as plain files, through FUSE.
//!
//! # Layout
//! Dependencies point one way, from the command line down to the network; nothing imports a
//! layer above it (`cargo` would allow it, the review does not):
//! - [`cmd`]: the outer layer. `main`, logging, and one module per command (`mount`, `import`
//!   and `export`, `dataset`, `key`, `id`): each turns the parsed arguments of [`cli`] into
//!   plain configuration and calls the layers below, on an unmounted store or through the
//!   control socket of the mount that holds it. `cmd::mount` assembles a mount: store, block
//!   service, peer, names, datasets, tree, FUSE session, control socket.
//! - [`cli`]: the arguments as clap parses them; no behaviour. [`config`]: the TOML config
//!   file, turned into arguments placed before the command line's own. [`mount_helper`]:
//!   mount.fuse3's `SOURCE MOUNTPOINT -o OPTS` form (`mount -t fuse.ipfs-mount`, fstab).
//! - [`control`]: the control socket's typed protocol ([`control::Request`]), its server (in
//!   the mount) and its client (in the commands).
//! - [`fs`]: the thin `fuser` adapter. Turns kernel requests into [`tree`] calls and
//!   [`tree::Error`]s into errnos; nothing else.
//! - [`tree`]: the namespace (`/ipfs`, `/ipns`, `/datasets`), the inode table, attributes,
//!   directory listings and positional file reads, and read-ahead (its own module, a policy
//!   and a range fetch). Runs without the kernel.
//! - [`names`]: `/ipns` resolution, DNSLink, publishing datasets under IPNS names.
//! - [`serve`]: the local trustless gateway (`--serve`).
//! - [`metrics`]: `stats` and `--metrics`: one snapshot of the counters kept where bytes move
//!   (block service and fetchers, bitswap, `--serve`), the store and the datasets.
//! - [`datasets`]: writable datasets: live tree, journal, closed tree, group commits, and the
//!   `dataset` commands' work ([`datasets::admin`]); history bounds ([`datasets::prune`]) and
//!   read-only replicas of other machines' datasets ([`datasets::follow`]).
//! - [`transfer`]: CAR import (verified, roots pinned) and export.
//! - [`pins`]: named pins (`pin add|ls|rm`: whole DAGs walked into the store, held from their
//!   first block) and garbage collection.
//! - [`peer`]: the IPFS peer beside the mount (crate `ipfs-mount-p2p`): bitswap client as
//!   one more fetcher, bitswap server over the store, provider discovery.
//! - [`blocks`]: the one door for blocks: memory cache, then the persistent store, then the
//!   fetchers; every block from outside is verified against its CID on the way in. Only the
//!   assembly in `cmd` holds the store itself (to open it and hand it over).
//!
//! UnixFS is read in one way: [`tree`], [`serve`], [`datasets`], [`transfer`] and the bitswap
//! DAG walk drive the I/O-free planners of `ipfs_mount_ipld::reader` (file ranges, a file's
//! leaves, listings, paths, whole-DAG walks) through its `BlockGetter` trait, which
//! [`blocks::BlockService`] implements; depth limits, sizes against the parent's
//! `blocksizes`, each shared block once and hidden unsafe names hold everywhere alike.
//!
//! Pure codecs live in the `ipfs-mount-ipld` crate, the block store in `ipfs-mount-store`
//! and the gateway client in `ipfs-mount-fetch`.

pub mod blocks;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod control;
pub mod datasets;
pub mod fs;
pub mod metrics;
pub mod mount_helper;
pub mod names;
pub mod peer;
pub mod pins;
pub mod serve;
pub mod transfer;
pub mod tree;
