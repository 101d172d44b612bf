//! One client and its upstream, from accept to close.
//!
//! - [`pair`]: the two sockets, their two pump directions, the phases and deadlines.

pub mod pair;
