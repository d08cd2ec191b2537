//! Inbound streams for a fixed set of protocols, handed over without ever dropping one.
//!
//! libp2p-stream (which we use to open streams) hands inbound streams over through a
//! channel with one slot and drops a stream when that slot is taken. Kubo's bitswap server
//! opens a new stream for each message it sends, so under load whole messages (blocks we
//! asked for) were lost. This behaviour forwards every negotiated inbound stream into an
//! unbounded channel instead; the bitswap engine bounds what each stream can cost.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::task::{Context, Poll};

use libp2p::core::transport::PortUse;
use libp2p::core::{Endpoint, InboundUpgrade, OutboundUpgrade, UpgradeInfo};
use libp2p::swarm::handler::{ConnectionEvent, FullyNegotiatedInbound};
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
}

impl Behaviour {
    pub fn new(protocols: Vec<StreamProtocol>) -> (Self, Incoming) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Behaviour { protocols, tx }, rx)
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
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
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

    fn on_swarm_event(&mut self, _: FromSwarm) {}

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
