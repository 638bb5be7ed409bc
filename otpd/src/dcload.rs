//! Loading the cluster's DC files and the `otpd dc` operator commands.

use crate::config::{ClusterConfig, ConfigError};
use std::process::ExitCode;

/// Loads the DC files (if any) and checks that every UberDOG's class exists in them.
pub fn check_dc_and_uberdogs(config: &ClusterConfig) -> Result<(), ConfigError> {
    if config.dc_files.is_empty() {
        if let Some(u) = config.uberdogs.first() {
            return Err(ConfigError::new(
                "uberdogs",
                format!("UberDOG {} has class '{}' but no dc_files are configured", u.id, u.class),
            ));
        }
        return Ok(());
    }
    Err(ConfigError::new("dc_files", "TEMPORARY: otp-dc not wired yet"))
}

pub fn dc_command(args: Vec<String>) -> ExitCode {
    let code = match args.first().map(String::as_str) {
        Some("hash") | Some("check") => 2, // TEMPORARY until otp-dc lands
        _ => {
            eprintln!("usage: otpd dc hash FILE... | otpd dc check FILE...");
            2
        }
    };
    ExitCode::from(code.clamp(0, 255) as u8)
}
