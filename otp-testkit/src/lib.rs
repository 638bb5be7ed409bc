//! otp-testkit: test support for otpd, kept out of the product. It owns the ClientAgent session
//! fuzz harnesses (one per client dialect; `tests/client_fuzz.rs` and the cargo-fuzz targets
//! run them), an independent reading of the 2003 client's field numbers from DC text, and
//! `cluster_sim`: a whole cluster (router, roles, sessions) in one thread on a fake clock.

pub mod client_fuzz;
pub mod cluster_sim;
pub mod dc2003;
pub mod interest_bench;
pub mod toontown_fuzz;
