//! One struct per method, one file per class. Reserved arguments (`ticket`, `out-of-band`,
//! `channel-id`, `capabilities`, `insist`, `known-hosts`, `cluster-id`) are written with their
//! defaults and skipped when read, so they have no field.

mod access;
mod basic;
mod channel;
mod confirm;
mod connection;
mod exchange;
mod queue;
#[cfg(test)]
pub(crate) mod testing;
mod tx;

pub use access::*;
pub use basic::*;
pub use channel::*;
pub use confirm::*;
pub use connection::*;
pub use exchange::*;
pub use queue::*;
pub use tx::*;
