//! otpd: an OTP server cluster in one process. The library holds the configuration, the
//! MessageDirector's routing state and the runtime that hosts it; `main.rs` is the command line.

pub mod clientagent;
pub mod config;
pub mod dbtool;
pub mod dcload;
pub mod eventlogger;
pub mod md;
pub mod metrics;
pub mod roles;
pub mod runtime;
