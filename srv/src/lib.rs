//! srv: ninespace's file servers and the machinery to run them.
//!
//! - [`ramfs`]: an in-memory file tree;
//! - [`exportfs`]: a host directory, confined beneath its root;
//! - [`mux`]: many local clients over one connection to a server (`srv`);
//! - [`fuse`], [`fuse_l`]: 9P2000 and 9P2000.L services as FUSE file systems;
//! - [`union`]: Plan 9 union directories over member directories, as FUSE;
//! - [`daemon`]: announcing or posting a service and going into the background.

pub mod daemon;
pub mod exportfs;
pub mod fuse;
pub mod fuse_l;
pub mod mux;
pub mod ns;
pub mod ramfs;
pub mod union;
