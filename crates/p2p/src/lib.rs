//! ipfs-mount as a peer of the IPFS network: a libp2p node (TCP or QUIC, noise, yamux,
//! identify, ping, optional Kademlia DHT), a bitswap 1.2.0 client and server, and provider
//! discovery through delegated HTTP routing and the DHT.
//!
//! Layering: [`node`] owns the swarm and dialing; [`bitswap`] owns wants, ledgers and
//! streams; [`routing`] is the HTTP routing client. The root crate sees a
//! [`bitswap::dag::BitswapFetcher`] (one more block source behind its block service) and a
//! [`bitswap::BlockSource`] it implements over the store for serving.

pub mod bitswap;
pub mod identity;
mod inbound;
pub mod node;
pub mod routing;

pub use bitswap::Bitswap;
pub use libp2p::{Multiaddr, PeerId};
pub use node::{ConnectionCaps, DhtMode, Node, NodeConfig};
