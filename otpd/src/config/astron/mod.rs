//! Reads an astrond YAML configuration file (`astrond.yml`) into otpd's [`ClusterConfig`].
//!
//! Validation is as strict as astrond's: every section and key is declared, anything else is
//! an error naming the key and its line; values must have the right type (numbers as astrond's
//! YAML library reads them, booleans as its constraint allows); channels and doids may not be
//! invalid (0) or reserved; addresses must be well-formed and must resolve.
//!
//! The YAML is parsed into a small tree that keeps every node's position (`yaml.rs`), read
//! through typed accessors (`access.rs`), and converted section by section (`sections.rs`), so
//! errors can say exactly where they are; `tests.rs` has the cases.
//!
//! otpd's own keys are accepted beside astrond's (`general.cores`, `general.pin_cores`, the
//! `dc_*` settings, `messagedirector.allow` and `reconnect_min_ms`/`reconnect_max_ms`, a
//! `metrics` section, a ClientAgent's `flush_delay_ms` and `proxy_from`); core threads are
//! not pinned unless the file asks, as astrond pins nothing.
//!
//! What the file says that otpd's model cannot express is refused with a message saying so
//! (a MongoDB or MySQL backend, TLS client-certificate checks, roles missing a channel that
//! astrond would let default to 0). See the module's tests for each case.

pub use super::addr;

mod access;
mod sections;
#[cfg(test)]
mod tests;
mod yaml;

use super::{ClusterConfig, ConfigError};
use access::Cx;
use sections::convert;
use std::path::Path;
use yaml::parse_yaml;

/// Default ports astrond uses when an address leaves its port out.
pub const MD_DEFAULT_PORT: u16 = 7199;
pub const CA_DEFAULT_PORT: u16 = 7198;
pub const EVENTLOGGER_DEFAULT_PORT: u16 = 7197;

/// Reads and checks the astrond configuration at `path`. Relative paths inside it (DC files,
/// the database directory, the event log, TLS files) are taken from the file's folder, as
/// astrond does by changing into that folder.
pub fn load(path: &Path) -> Result<ClusterConfig, ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(&name, format!("cannot read: {e}")))?;
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let base = std::fs::canonicalize(parent).unwrap_or_else(|_| parent.to_path_buf());
    parse(&name, &text, &base)
}

/// Converts the text of an astrond configuration; `base` is the folder relative paths are
/// taken from. `file` only names the source in errors.
pub fn parse(file: &str, text: &str, base: &Path) -> Result<ClusterConfig, ConfigError> {
    let root = parse_yaml(file, text)?;
    let cx = Cx { file, base };
    let config = convert(&cx, &root)?;
    config.validate().map_err(|m| ConfigError::new(file, m))?;
    Ok(config)
}
