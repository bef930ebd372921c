//! factotum: the agent that holds a user's keys and speaks Plan 9's authentication
//! protocols for programs (factotum(4)), and authsrv, which issues tickets.
//! See docs/factotum.md.
pub mod attr;
pub mod authsrv;
pub mod fs;
pub mod keyfile;
pub mod pak;
pub mod proto_dp9ik;
pub mod proto_p9any;
pub mod proto_p9sk1;
pub mod proto_pass;
pub mod rpc;
pub mod ticket;
