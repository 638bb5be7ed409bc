//! PLACEHOLDER written by the lead so the binary builds; the YAML helper replaces this whole file.
use super::{ClusterConfig, ConfigError};
pub fn load(path: &std::path::Path) -> Result<ClusterConfig, ConfigError> {
    Err(ConfigError::new(path.display().to_string(), "YAML configuration support is not built yet"))
}
