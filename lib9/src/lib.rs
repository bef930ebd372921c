//! lib9: the Plan 9 pieces every ninespace program stands on.
//!
//! - [`fcall`]: the 9P2000 codec;
//! - [`client`]: an async 9P client with many requests in flight, and [`blocking`], a
//!   small facade for command-line tools;
//! - [`server`]: the 9P server framework;
//! - [`dial`]: Plan 9 dial strings, connections and listeners;
//! - [`ns`]: plan9port's `$NAMESPACE` directory and posting services in it;
//! - [`auth`]: 9P authentication through factotum, for clients and servers;
//! - [`errstr`]: Plan 9 error strings and their errno equivalents.

pub mod auth;
pub mod blocking;
pub mod client;
pub mod client_l;
pub mod dial;
pub mod errstr;
pub mod fcall;
pub mod fcall_l;
pub mod ns;
pub mod server;
pub mod tls;
pub mod wire;

pub use client::{Client, Fid};
pub use errstr::Ename;
pub use fcall::{Fcall, Msg, Qid, Stat};
