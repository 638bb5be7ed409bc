//! Loading the cluster's DC files and the `otpd dc` operator commands.

use crate::config::{ClusterConfig, ConfigError};
use std::process::ExitCode;

/// Loads the DC files (if any) and checks that every UberDOG's class exists in them.
pub fn check_dc_and_uberdogs(
    config: &ClusterConfig,
) -> Result<Option<otp_dc::DcFile>, ConfigError> {
    if config.dc_files.is_empty() {
        if let Some(u) = config.uberdogs.first() {
            return Err(ConfigError::new(
                "uberdogs",
                format!(
                    "UberDOG {} has class '{}' but no dc_files are configured",
                    u.id, u.class
                ),
            ));
        }
        return Ok(None);
    }
    let dc = otp_dc::DcFile::parse_files_with(&config.dc_files, config.dc_settings.options())
        .map_err(|e| ConfigError::new("dc_files", e.to_string()))?;
    for u in &config.uberdogs {
        if dc.class_by_name(&u.class).is_none() {
            return Err(ConfigError::new(
                "uberdogs",
                format!(
                    "UberDOG {} has class '{}', which is not in the DC files",
                    u.id, u.class
                ),
            ));
        }
    }
    log::info!(
        "dc: {} files loaded, hash 0x{:08x}, fields numbered {}",
        config.dc_files.len(),
        dc.hash(),
        if dc.global_numbering() {
            "file-wide"
        } else {
            "per class (the 2003 rule)"
        }
    );
    Ok(Some(dc))
}

pub fn dc_command(args: Vec<String>) -> ExitCode {
    let code = match args.first().map(String::as_str) {
        Some("hash") => otp_dc::cli::hash_command(&args[1..]),
        Some("check") => otp_dc::cli::check_command(&args[1..]),
        Some("fields") => otp_dc::cli::fields_command(&args[1..]),
        _ => {
            eprintln!(
                "usage: otpd dc hash [--era 2003] FILE... | otpd dc check [--strict] FILE... \
                 | otpd dc fields [--era 2003] FILE...\n\
                 (each also takes --multiple-inheritance=0|1 --virtual-inheritance=0|1 \
                 --sort-inheritance-by-file=0|1)"
            );
            2
        }
    };
    ExitCode::from(code.clamp(0, 255) as u8)
}
