//! otpd: an OTP server cluster in one process. `config` reads the cluster's configuration,
//! `md` holds the MessageDirector's routing state, `roles` the services as sans-IO state
//! machines, `clientagent` the client sessions of both dialects, `runtime` the core threads
//! that host them all (the only module that touches sockets, threads and clocks), `cluster`
//! the wiring from a configuration to what the runtime hosts, `eventlogger` and `metrics` what
//! operators read, `cli` the command line (`main.rs` only calls `cli::main`), `private_fs` the
//! modes of the files otpd writes. ARCHITECTURE.md at the repository root has the map.

pub mod admin;
pub mod cli;
pub mod clientagent;
pub mod cluster;
pub mod config;
pub mod eventlogger;
pub mod http;
pub mod md;
pub mod metrics;
pub mod private_fs;
pub mod roles;
pub mod runtime;
