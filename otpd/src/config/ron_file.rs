//! Reads otpd's own `cluster.ron`: strict (unknown keys and wrong types are errors naming the
//! key, line and column), relative paths resolved from the file's folder.

use super::{ClusterConfig, ConfigError};
use std::path::Path;

pub fn load(path: &Path) -> Result<ClusterConfig, ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(&name, format!("cannot read: {e}")))?;
    let mut config = parse(&name, &text)?;
    let base = path.parent().unwrap_or(Path::new("."));
    config.resolve_paths(base);
    config
        .read_secret_files()
        .map_err(|m| ConfigError::new(&name, m))?;
    config.validate().map_err(|m| ConfigError::new(&name, m))?;
    Ok(config)
}

pub fn parse(name: &str, text: &str) -> Result<ClusterConfig, ConfigError> {
    ron::Options::default()
        .from_str::<ClusterConfig>(text)
        .map_err(|e| ConfigError::new(name, e.code.to_string()).at(e.position.line, e.position.col))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_struct_is_all_defaults() {
        let c = parse("t.ron", "()").unwrap();
        assert_eq!(c.messagedirector.bind.as_deref(), Some("127.0.0.1:7199"));
        assert!(c.roles.is_empty());
    }

    #[test]
    fn client_heartbeats_and_descriptor_reserve_are_on_by_default() {
        let c = parse(
            "t.ron",
            "(roles: [ClientAgent((bind: \"127.0.0.1:1\", version: \"v\", channels: (min: 1, max: 2)))])",
        )
        .unwrap();
        match &c.roles[0] {
            crate::config::RoleConfig::ClientAgent(ca) => {
                assert_eq!(ca.heartbeat_timeout_ms, 60_000)
            }
            r => panic!("{r:?}"),
        }
        assert_eq!(c.reserved_fds, 256);
    }

    #[test]
    fn the_zone_budget_must_fit_a_2003_set_zone() {
        let ca = |limits: &str, toontown: &str| {
            format!(
                "(roles: [ClientAgent((bind: \"127.0.0.1:1\", version: \"v\", channels: (min: 1000000, max: 1000009), \
                 dialect: Toontown2003, toontown: ({toontown}), limits: ({limits})))])"
            )
        };
        let c = parse("t.ron", &ca("", "")).unwrap();
        c.validate().unwrap();
        let e = parse("t.ron", &ca("max_zones_total: 128", ""))
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.contains("max_zones_total = 128"), "{e}");
        let c = parse(
            "t.ron",
            &ca("max_zones_total: 128", "max_visible_zones: 127"),
        )
        .unwrap();
        c.validate().unwrap();
        let e = parse("t.ron", &ca("max_zones_total: 0", ""))
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.contains("max_zones_total"), "{e}");
    }

    #[test]
    fn write_pacing_is_on_by_default_and_bounded() {
        let ca = |extra: &str| {
            format!(
                "(roles: [ClientAgent((bind: \"127.0.0.1:1\", version: \"v\", \
                 channels: (min: 1000000, max: 1000009){extra}))])"
            )
        };
        let c = parse("t.ron", &ca("")).unwrap();
        c.validate().unwrap();
        let crate::config::RoleConfig::ClientAgent(a) = &c.roles[0] else {
            panic!("not a ClientAgent");
        };
        assert_eq!((a.flush_delay_ms, a.busy_flush_delay_max_ms), (0, 100));
        for ok in [0, 500] {
            let c = parse("t.ron", &ca(&format!(", busy_flush_delay_max_ms: {ok}"))).unwrap();
            c.validate().unwrap();
        }
        let e = parse("t.ron", &ca(", busy_flush_delay_max_ms: 501"))
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(
            e.contains("busy_flush_delay_max_ms is 501; at most 500"),
            "{e}"
        );
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let e = parse(
            "t.ron",
            "(\n  name: \"x\",\n  messagedirector: (\n    bnd: \"1.2.3.4:5\",\n  ),\n)",
        )
        .unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("t.ron:4:"), "{s}");
        assert!(s.contains("bnd"), "{s}");
    }

    #[test]
    fn messagedirector_allow_is_loopback_by_default_and_checked() {
        let c = parse("t.ron", "()").unwrap();
        assert!(c.messagedirector.allow.is_empty());
        let c = parse(
            "t.ron",
            "(messagedirector: (allow: [\"10.0.0.0/8\", \"::1\", \"192.0.2.7\"]))",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.messagedirector.allow, ["10.0.0.0/8", "::1", "192.0.2.7"]);
        for bad in ["10.0.0.0/33", "ai.example", ""] {
            let e = parse("t.ron", &format!("(messagedirector: (allow: [\"{bad}\"]))"))
                .unwrap()
                .validate()
                .unwrap_err();
            assert!(e.contains("messagedirector.allow"), "{e}");
        }
        // Listing everyone is allowed, with a start-up warning.
        let c = parse(
            "t.ron",
            "(messagedirector: (allow: [\"10.0.0.0/8\", \"0.0.0.0/0\"]))",
        )
        .unwrap();
        c.validate().unwrap();
        let w = c.exposure_warnings();
        assert!(
            w.iter()
                .any(|l| l.contains("messagedirector.allow lists 0.0.0.0/0")),
            "{w:?}"
        );
        assert!(parse("t.ron", "()").unwrap().exposure_warnings().is_empty());
    }

    #[test]
    fn wrong_type_names_line() {
        let e = parse("t.ron", "(\n  cores: \"two\",\n)").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
    }
}
