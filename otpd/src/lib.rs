//! otpd: an OTP server cluster in one process. `config` reads the cluster's configuration,
//! `md` holds the MessageDirector's routing state, `roles` the services as sans-IO state
//! machines, `clientagent` the client sessions of both dialects, `runtime` the core threads
//! that host them all (the only module that touches sockets, threads and clocks), `eventlogger`
//! and `metrics` what operators read, `dcload` and `dbtool` the operator commands, `private_fs`
//! the modes of the files otpd writes; `main.rs` is the command line. ARCHITECTURE.md at the
//! repository root has the map.

pub mod clientagent;
pub mod config;
pub mod dbtool;
pub mod dcload;
pub mod eventlogger;
pub mod md;
pub mod metrics;
pub mod private_fs;
pub mod roles;
pub mod runtime;
