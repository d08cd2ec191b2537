//! ipfs-mount: IPFS content as plain files, through FUSE.
//!
//! # Layout
//! Dependencies point one way, from the kernel down to the network:
//! - [`fs`]: the thin `fuser` adapter. Turns kernel requests into [`tree`] calls and
//!   [`tree::Error`]s into errnos; nothing else.
//! - [`tree`]: the namespace (`/ipfs`, `/ipns`, `/datasets`), the inode table, attributes,
//!   directory listings and positional file reads with prefetch. Runs without the kernel.
//! - [`blocks`]: the one door for blocks: memory cache, then the persistent store, then the
//!   fetchers; every block from outside is verified against its CID on the way in.
//! - [`transfer`]: CAR import (verified, roots pinned) and export; [`control`] lets them run
//!   through a mount that holds the store.
//! - [`peer`]: the IPFS peer beside the mount (crate `ipfs-mount-p2p`): bitswap client as
//!   one more fetcher, bitswap server over the store, provider discovery.
//! - [`mount`]: mount lifecycle: daemonizing, readiness, signals, stale mounts, unmount.
//! - [`datasets`]: writable datasets: live tree, journal, closed tree, group commits.
//! - [`names`]: `/ipns` resolution, DNSLink, publishing datasets under IPNS names.
//! - [`serve`]: the local trustless gateway (`--serve`).
//! - [`cli`]: command-line parsing and dispatch; [`cmd`]: the commands it runs (the outer
//!   layer: inner modules never import `cli`, `cmd`, `mount` or `control`).
//!
//! Pure codecs live in the `ipfs-mount-ipld` crate, the block store in `ipfs-mount-store`
//! and the gateway client in `ipfs-mount-fetch`.

pub mod blocks;
pub mod cli;
pub mod cmd;
pub mod control;
pub mod datasets;
pub mod fs;
pub mod mount;
pub mod names;
pub mod peer;
pub mod serve;
pub mod transfer;
pub mod tree;
