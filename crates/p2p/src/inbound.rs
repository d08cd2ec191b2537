//! Inbound streams for a fixed set of protocols, handed over without ever dropping one.
//!
//! libp2p-stream (which we use to open streams) hands inbound streams over through a
//! channel with one slot and drops a stream when that slot is taken. Kubo's bitswap server
//! opens a new stream for each message it sends, so under load whole messages (blocks we
//! asked for) were lost. This behaviour forwards every negotiated inbound stream into an
//! unbounded channel instead; the bitswap engine bounds what each stream can cost (and
//! resets streams past its per-peer cap).
//!
//! It also caps the inbound connections established from one IP address (libp2p's
//! `connection_limits` caps totals and per-peer counts, not addresses; a peer ID costs
//! nothing to make).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::{ready, Ready};
use std::net::IpAddr;
use std::task::{Context, Poll};

use libp2p::core::transport::PortUse;
use libp2p::core::{ConnectedPoint, Endpoint, InboundUpgrade, OutboundUpgrade, UpgradeInfo};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::ConnectionEstablished;
use libp2p::swarm::handler::{ConnectionEvent, FullyNegotiatedInbound};
use libp2p::swarm::ConnectionClosed;
use libp2p::swarm::{
    ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm,
    NetworkBehaviour, Stream, SubstreamProtocol, THandler, THandlerInEvent, THandlerOutEvent,
    ToSwarm,
};
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use tokio::sync::mpsc;

pub type Incoming = mpsc::UnboundedReceiver<(PeerId, Stream, StreamProtocol)>;

pub struct Behaviour {
    protocols: Vec<StreamProtocol>,
    tx: mpsc::UnboundedSender<(PeerId, Stream, StreamProtocol)>,
    max_per_ip: u32,
    /// Inbound connections established, per remote IP.
    per_ip: HashMap<IpAddr, u32>,
    /// The IP of each inbound connection counted in `per_ip`.
    inbound: HashMap<ConnectionId, IpAddr>,
}

/// The IP address a multiaddr starts with, if any.
fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    match addr.iter().next()? {
        Protocol::Ip4(a) => Some(IpAddr::V4(a)),
        Protocol::Ip6(a) => Some(IpAddr::V6(a)),
        _ => None,
    }
}

/// Why a connection was refused.
#[derive(Debug, thiserror::Error)]
#[error("{0} inbound connections from {1} already (the cap)")]
pub struct TooManyFromIp(u32, IpAddr);

impl Behaviour {
    /// Accepts streams of `protocols`; at most `max_per_ip` inbound connections per IP.
    pub fn new(protocols: Vec<StreamProtocol>, max_per_ip: u32) -> (Self, Incoming) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Behaviour {
                protocols,
                tx,
                max_per_ip,
                per_ip: HashMap::new(),
                inbound: HashMap::new(),
            },
            rx,
        )
    }

    fn handler(&self, peer: PeerId) -> Handler {
        Handler {
            peer,
            protocols: self.protocols.clone(),
            tx: self.tx.clone(),
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if let Some(ip) = ip_of(remote) {
            let n = self.per_ip.get(&ip).copied().unwrap_or(0);
            if n >= self.max_per_ip {
                tracing::debug!(%peer, %ip, "refusing an inbound connection: {n} from that address already");
                return Err(ConnectionDenied::new(TooManyFromIp(n, ip)));
            }
        }
        Ok(self.handler(peer))
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(peer))
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            // counted once every behaviour accepted the connection
            FromSwarm::ConnectionEstablished(ConnectionEstablished {
                connection_id,
                endpoint: ConnectedPoint::Listener { send_back_addr, .. },
                ..
            }) => {
                if let Some(ip) = ip_of(send_back_addr) {
                    *self.per_ip.entry(ip).or_insert(0) += 1;
                    self.inbound.insert(connection_id, ip);
                }
            }
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. }) => {
                if let Some(ip) = self.inbound.remove(&connection_id) {
                    if let Some(n) = self.per_ip.get_mut(&ip) {
                        *n -= 1;
                        if *n == 0 {
                            self.per_ip.remove(&ip);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        ev: THandlerOutEvent<Self>,
    ) {
        match ev {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

pub struct Handler {
    peer: PeerId,
    protocols: Vec<StreamProtocol>,
    tx: mpsc::UnboundedSender<(PeerId, Stream, StreamProtocol)>,
}

impl ConnectionHandler for Handler {
    type FromBehaviour = Infallible;
    type ToBehaviour = Infallible;
    type InboundProtocol = Accept;
    type OutboundProtocol = Accept;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<Accept> {
        SubstreamProtocol::new(Accept(self.protocols.clone()), ())
    }

    fn poll(
        &mut self,
        _: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Accept, (), Infallible>> {
        Poll::Pending
    }

    fn on_behaviour_event(&mut self, ev: Infallible) {
        match ev {}
    }

    fn on_connection_event(&mut self, event: ConnectionEvent<Accept, Accept>) {
        if let ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
            protocol: (stream, protocol),
            ..
        }) = event
        {
            let _ = self.tx.send((self.peer, stream, protocol));
        }
    }

    // Streams keep the connection alive while open; an idle connection may close.
    fn connection_keep_alive(&self) -> bool {
        false
    }
}

/// Multistream-select upgrade that accepts any of our protocols and returns the raw stream.
pub struct Accept(Vec<StreamProtocol>);

impl UpgradeInfo for Accept {
    type Info = StreamProtocol;
    type InfoIter = std::vec::IntoIter<StreamProtocol>;
    fn protocol_info(&self) -> Self::InfoIter {
        self.0.clone().into_iter()
    }
}

impl InboundUpgrade<Stream> for Accept {
    type Output = (Stream, StreamProtocol);
    type Error = Infallible;
    type Future = Ready<Result<Self::Output, Infallible>>;
    fn upgrade_inbound(self, s: Stream, p: StreamProtocol) -> Self::Future {
        ready(Ok((s, p)))
    }
}

impl OutboundUpgrade<Stream> for Accept {
    type Output = (Stream, StreamProtocol);
    type Error = Infallible;
    type Future = Ready<Result<Self::Output, Infallible>>;
    fn upgrade_outbound(self, s: Stream, p: StreamProtocol) -> Self::Future {
        ready(Ok((s, p)))
    }
}
