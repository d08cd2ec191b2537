//! Command implementations: the outer layer. Each turns parsed arguments into calls on the
//! inner modules (which never import `cli`, `mount` or `control`), on an unmounted store or
//! through a running mount's control socket.

pub mod dataset;
