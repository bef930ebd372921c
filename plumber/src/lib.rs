//! ninespace's plumber: the rules language of plumb(6), the message format of
//! plumb(7), the file server of plumber(4) and a client. See docs/plumber.md,
//! docs/plumb.md and docs/plumbing.md.

pub mod client;
pub mod defaults;
pub mod exec;
pub mod fs;
pub mod msg;
pub mod regexp;
pub mod rules;

pub use msg::{Attr, Message};
