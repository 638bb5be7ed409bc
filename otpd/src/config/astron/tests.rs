//! The astrond reader's tests: each case astrond accepts or refuses, and what otpd makes of it.

use super::access::*;
use super::*;
use crate::config::{ChannelRange, DatabaseBackend, DoidRange, RoleConfig, TlsConfig, UberDog};
use std::path::PathBuf;

fn base() -> PathBuf {
    PathBuf::from("/cfg")
}

fn parse_ok(text: &str) -> ClusterConfig {
    parse("t.yml", text, &base()).unwrap_or_else(|e| panic!("rejected: {e}\n{text}"))
}

fn parse_err(text: &str) -> ConfigError {
    match parse("t.yml", text, &base()) {
        Ok(c) => panic!("accepted: {c:?}\n{text}"),
        Err(e) => e,
    }
}

const MD: &str = "messagedirector:\n  bind: 127.0.0.1:57123\n";

#[test]
fn minimal_md_only() {
    let c = parse_ok(MD);
    assert_eq!(c.messagedirector.bind.as_deref(), Some("127.0.0.1:57123"));
    assert_eq!(c.messagedirector.connect, None);
    assert!(c.roles.is_empty() && c.uberdogs.is_empty() && c.dc_files.is_empty());
    assert_eq!(c.eventlogger, None);
}

#[test]
fn md_default_port_and_unspecified() {
    let c =
        parse_ok("messagedirector:\n  bind: 127.0.0.1\n  connect: \"::1\"\n  threaded: false\n");
    assert_eq!(c.messagedirector.bind.as_deref(), Some("127.0.0.1:7199"));
    assert_eq!(c.messagedirector.connect.as_deref(), Some("[::1]:7199"));
    let c = parse_ok("messagedirector:\n  bind: unspecified\n");
    assert_eq!(c.messagedirector.bind, None);
    let c = parse_ok("daemon:\n  name: x\n");
    assert_eq!(c.messagedirector.bind, None);
    assert_eq!(c.name, "x");
}

#[test]
fn unknown_keys_name_key_and_line() {
    let e = parse_err("messagedirector:\n  bind: 127.0.0.1:57123\n  bnd: 1.2.3.4\n");
    assert_eq!((e.line, e.column), (Some(3), Some(3)), "{e}");
    assert!(
        e.message.contains("bnd") && e.message.contains("messagedirector"),
        "{e}"
    );
    let e = parse_err("messagedirector:\n  bind: 127.0.0.1:57123\nweb:\n  bind: 1.2.3.4\n");
    assert_eq!(e.line, Some(3));
    assert!(e.message.contains("'web'"), "{e}");
    let e = parse_err(&format!(
        "{MD}roles:\n  - type: stateserver\n    queque: pu-pu\n"
    ));
    assert_eq!(e.line, Some(5), "{e}");
    assert!(e.to_string().starts_with("t.yml:5:5: "), "{e}");
}

#[test]
fn structural_errors() {
    assert!(parse_err("").message.contains("empty"));
    assert!(parse_err("- a\n- b\n").message.contains("top level"));
    let e = parse_err(&format!("{MD}general:\n  - eventlogger: 127.0.0.1:9090\n"));
    assert!(e.message.contains("'general' must be a map"), "{e}");
    assert_eq!(e.line, Some(4));
    let e = parse_err(&format!("{MD}uberdogs:\n  id: 1234\n  class: UberDog1\n"));
    assert!(e.message.contains("'uberdogs' must be a list"), "{e}");
    let e = parse_err(&format!("{MD}roles:\n  - qux: bar\n"));
    assert!(e.message.contains("no 'type'"), "{e}");
    let e = parse_err(&format!("{MD}roles:\n  - type: foo\n"));
    assert!(e.message.contains("'foo' is not a role type"), "{e}");
    assert_eq!(e.line, Some(4));
    let e = parse_err(&format!("{MD}roles:\n  - just a string\n"));
    assert!(e.message.contains("roles[0]"), "{e}");
    let e = parse_err("messagedirector: [\n");
    assert!(e.message.contains("YAML syntax"), "{e}");
    assert!(e.line.is_some());
    let e = parse_err("messagedirector:\n  bind: 127.0.0.1:1\n  bind: 127.0.0.1:2\n");
    assert!(e.message.contains("twice"), "{e}");
    assert_eq!(e.line, Some(3));
}

#[test]
fn uberdogs() {
    let c = parse_ok(&format!(
        "{MD}uberdogs:\n  - id: 1234\n    class: UberDog1\n    anonymous: TRUE\n  - id: 1235\n    class: UberDog2\n"
    ));
    assert_eq!(
        c.uberdogs,
        vec![
            UberDog {
                id: 1234,
                class: "UberDog1".into(),
                anonymous: true
            },
            UberDog {
                id: 1235,
                class: "UberDog2".into(),
                anonymous: false
            }
        ]
    );
    for (id, want) in [
        ("0", "INVALID_DO_ID"),
        ("165", "reserved"),
        ("-5", "non-negative"),
        ("4294967296", "too large"),
    ] {
        let e = parse_err(&format!(
            "{MD}uberdogs:\n  - id: {id}\n    class: UberDog1\n"
        ));
        assert!(
            e.message.contains(want) && e.message.contains("uberdogs[0].id"),
            "{e}"
        );
        assert_eq!(e.line, Some(4));
    }
    let e = parse_err(&format!(
        "{MD}uberdogs:\n  - id: 1234\n    class: UberDog1\n    anonymous: yes\n"
    ));
    assert!(e.message.contains("true or false"), "{e}");
    let e = parse_err(&format!("{MD}uberdogs:\n  - id: 1234\n"));
    assert!(e.message.contains("'class'"), "{e}");
}

#[test]
fn general_paths_and_eventlogger() {
    let c = parse_ok(&format!(
        "{MD}general:\n  eventlogger: 127.0.0.1\n  dc_files:\n    - game.dc\n    - /abs/core.dc\n"
    ));
    assert_eq!(c.eventlogger.as_deref(), Some("127.0.0.1:7197"));
    assert_eq!(
        c.dc_files,
        vec![PathBuf::from("/cfg/game.dc"), PathBuf::from("/abs/core.dc")]
    );
    let e = parse_err(&format!("{MD}general:\n  eventlogger: \"\"\n"));
    assert!(e.message.contains("general.eventlogger"), "{e}");
    let e = parse_err(&format!("{MD}general:\n  dc_files: game.dc\n"));
    assert!(e.message.contains("must be a list"), "{e}");
}

#[test]
fn general_dc_settings() {
    let c = parse_ok(&format!("{MD}general:\n  eventlogger: 127.0.0.1\n"));
    assert_eq!(c.dc_settings, crate::config::DcSettings::default());
    let c = parse_ok(&format!(
        "{MD}general:\n  dc_multiple_inheritance: false\n  dc_virtual_inheritance: no\n  \
         dc_sort_inheritance_by_file: false\n"
    ));
    assert_eq!(c.dc_settings, crate::config::DcSettings::LEGACY_2003);
    let e = parse_err(&format!("{MD}general:\n  dc_multiple_inheritance: maybe\n"));
    assert!(e.message.contains("dc_multiple_inheritance"), "{e}");
}

#[test]
fn numbers_like_yaml_cpp() {
    assert_eq!(parse_yaml_cpp_uint("100100"), Some(100100));
    assert_eq!(parse_yaml_cpp_uint("+7"), Some(7));
    assert_eq!(parse_yaml_cpp_uint("0x10"), Some(16));
    assert_eq!(parse_yaml_cpp_uint("010"), Some(8));
    assert_eq!(parse_yaml_cpp_uint("0"), Some(0));
    assert_eq!(parse_yaml_cpp_uint("12 "), Some(12));
    for bad in ["", "-1", "08", "1.5", "1e3", "pizza", "0x", " 1"] {
        assert_eq!(parse_yaml_cpp_uint(bad), None, "{bad}");
    }
}

#[test]
fn booleans_like_astron() {
    for (s, v) in [
        ("true", true),
        ("True", true),
        ("TRUE", true),
        ("false", false),
        ("FALSE", false),
    ] {
        let c = parse_ok(&format!("{MD}roles:\n  - type: database\n    control: 75757\n    broadcast: {s}\n    generate:\n      min: 1000000\n"));
        match &c.roles[0] {
            RoleConfig::Database { broadcast, .. } => assert_eq!(*broadcast, v, "{s}"),
            r => panic!("{r:?}"),
        }
    }
    for s in ["pizza", "15012", "yes", "tRUE", "on"] {
        let e = parse_err(&format!("{MD}roles:\n  - type: database\n    control: 75757\n    broadcast: {s}\n    generate:\n      min: 1000000\n"));
        assert!(e.message.contains("broadcast"), "{e}");
    }
    // Unconstrained booleans take the YAML library's wider set.
    let c = parse_ok("messagedirector:\n  threaded: off\nroles:\n  - type: clientagent\n    haproxy: Yes\n    channels: {min: 3100, max: 3999}\n");
    match &c.roles[0] {
        RoleConfig::ClientAgent(ca) => assert!(ca.haproxy),
        r => panic!("{r:?}"),
    }
    // otpd's own proxy_from: addresses and networks, checked.
    let c = parse_ok("roles:\n  - type: clientagent\n    haproxy: true\n    proxy_from: [10.0.0.0/8, \"::1\"]\n    channels: {min: 3100, max: 3999}\n");
    match &c.roles[0] {
        RoleConfig::ClientAgent(ca) => assert_eq!(ca.proxy_from, ["10.0.0.0/8", "::1"]),
        r => panic!("{r:?}"),
    }
    assert!(parse(
        "t.yml",
        "roles:\n  - type: clientagent\n    proxy_from: [nonsense]\n    channels: {min: 3100, max: 3999}\n",
        &base()
    )
    .is_err());
}

#[test]
fn clientagent_defaults_and_keys() {
    let c = parse_ok(&format!(
        "{MD}roles:\n  - type: clientagent\n    channels:\n      min: 3100\n      max: 3999\n"
    ));
    let RoleConfig::ClientAgent(ca) = &c.roles[0] else {
        panic!()
    };
    assert_eq!(ca.bind, "0.0.0.0:7198");
    assert_eq!(ca.version, "dev");
    assert_eq!(ca.manual_dc_hash, None);
    assert_eq!(
        ca.channels,
        ChannelRange {
            min: 3100,
            max: 3999
        }
    );
    assert_eq!(
        (
            ca.write_buffer_size,
            ca.write_timeout_ms,
            ca.interest_timeout_ms
        ),
        (262_144, 5_000, 500)
    );
    // Heartbeats are checked by default (astrond: never), issue 17 item 9.
    assert_eq!(ca.heartbeat_timeout_ms, 60_000);
    assert!(ca.send_hash && ca.send_version && !ca.relocate && !ca.haproxy);
    assert_eq!(ca.add_interest, "visible");

    let c = parse_ok(&format!(
        "{MD}roles:\n  - type: clientagent\n    bind: 127.0.0.1\n    version: 1.0\n    manual_dc_hash: 0xDEADBEEF\n    haproxy: true\n    channels: {{min: 3100, max: 3999}}\n    client:\n      type: libastron\n      relocate: true\n      add_interest: enabled\n      send_hash: false\n      send_version: no\n      write_buffer_size: 0\n      write_timeout_ms: 20\n      heartbeat_timeout: 10000\n      flush_delay_ms: 15\n      busy_flush_delay_max_ms: 40\n    tuning:\n      interest_timeout: 250\n"
    ));
    let RoleConfig::ClientAgent(ca) = &c.roles[0] else {
        panic!()
    };
    assert_eq!(ca.bind, "127.0.0.1:7198");
    assert_eq!(ca.version, "1.0");
    assert_eq!(ca.manual_dc_hash, Some(0xDEADBEEF));
    assert!(ca.haproxy && ca.relocate && !ca.send_hash && !ca.send_version);
    assert_eq!(ca.add_interest, "enabled");
    assert_eq!(
        (
            ca.write_buffer_size,
            ca.write_timeout_ms,
            ca.heartbeat_timeout_ms,
            ca.interest_timeout_ms,
            ca.flush_delay_ms,
            ca.busy_flush_delay_max_ms
        ),
        (0, 20, 10_000, 250, 15, 40)
    );

    let ca_with = |extra: &str| {
        format!(
            "{MD}roles:\n  - type: clientagent\n    channels: {{min: 3100, max: 3999}}\n{extra}"
        )
    };
    assert!(parse_err(&ca_with("    client:\n      type: astron\n"))
        .message
        .contains("client type"));
    assert!(
        parse_err(&ca_with("    client:\n      add_interest: sometimes\n"))
            .message
            .contains("add_interest")
    );
    assert!(parse_err(&ca_with("    weeuuweeeuu: sirens!\n"))
        .message
        .contains("weeuuweeeuu"));
    assert!(parse_err(&ca_with("    tuning:\n      interest: 5\n"))
        .message
        .contains("interest"));
    assert!(
        parse_err(&ca_with("    client:\n      heartbeat_timeout: -1\n"))
            .message
            .contains("heartbeat_timeout")
    );
    let e = parse_err(&format!(
        "{MD}roles:\n  - type: clientagent\n    version: x\n"
    ));
    assert!(e.message.contains("channels.min"), "{e}");
}

#[test]
fn clientagent_channels() {
    for (min, max, want) in [
        ("0", "3999", "INVALID"),
        ("3100", "0", "INVALID"),
        ("100", "3999", "reserved"),
        ("3100", "999", "reserved"),
        ("3100", "4294967296", "reserved"),
        ("3100", "4290672328704", "reserved"),
    ] {
        let e = parse_err(&format!(
            "{MD}roles:\n  - type: clientagent\n    channels:\n      min: {min}\n      max: {max}\n"
        ));
        assert!(e.message.contains(want), "{min} {max}: {e}");
    }
    let e = parse_err(&format!(
        "{MD}roles:\n  - type: clientagent\n    channels:\n      min: 5000\n      max: 4000\n"
    ));
    assert!(e.message.contains("above max") && e.line == Some(6), "{e}");
    // Just above 999<<32 is fine.
    parse_ok(&format!(
        "{MD}roles:\n  - type: clientagent\n    channels:\n      min: 3100\n      max: {}\n",
        (999u64 << 32) + 1
    ));
}

#[test]
fn tls_section() {
    let dir = std::env::temp_dir().join(format!("otpd-astron-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("c.crt"), "x").unwrap();
    std::fs::write(dir.join("k.key"), "x").unwrap();
    let text = |tls: &str| {
        format!("{MD}roles:\n  - type: clientagent\n    channels: {{min: 3100, max: 3999}}\n    tls:\n{tls}")
    };
    let c = parse(
        "t.yml",
        &text("      certificate: c.crt\n      key_file: k.key\n      tlsv1: true\n      sslv3: false\n"),
        &dir,
    )
    .unwrap();
    let RoleConfig::ClientAgent(ca) = &c.roles[0] else {
        panic!()
    };
    assert_eq!(
        ca.tls,
        Some(TlsConfig {
            certificate: dir.join("c.crt"),
            key: dir.join("k.key")
        })
    );
    let c = parse(
        "t.yml",
        &text("      certificate: c.crt\n      key: k.key\n"),
        &dir,
    )
    .unwrap();
    let RoleConfig::ClientAgent(ca) = &c.roles[0] else {
        panic!()
    };
    assert!(ca.tls.is_some());
    for (tls, want) in [
        ("      certificate: c.crt\n", "needs both"),
        (
            "      certificate: missing.crt\n      key_file: k.key\n",
            "cannot open",
        ),
        (
            "      certificate: c.crt\n      key_file: k.key\n      cert_authority: c.crt\n",
            "cert_authority",
        ),
        (
            "      certificate: c.crt\n      key_file: k.key\n      sslv2: true\n",
            "SSLv2",
        ),
        (
            "      certificate: c.crt\n      key_file: k.key\n      ciphers: ALL\n",
            "ciphers",
        ),
        (
            "      certificate: c.crt\n      key_file: \"\"\n",
            "not a file",
        ),
    ] {
        let e = parse("t.yml", &text(tls), &dir).unwrap_err();
        assert!(e.message.contains(want), "{tls}: {e}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn stateserver_and_dbss() {
    let c = parse_ok(&format!(
        "{MD}roles:\n  - type: stateserver\n    control: 100100\n"
    ));
    assert_eq!(c.roles, vec![RoleConfig::StateServer { control: 100100 }]);
    assert!(parse_err(&format!(
        "{MD}roles:\n  - type: stateserver\n    control: 100\n"
    ))
    .message
    .contains("reserved"));
    assert!(parse_err(&format!("{MD}roles:\n  - type: stateserver\n"))
        .message
        .contains("control"));
    let c = parse_ok(&format!(
        "{MD}roles:\n  - type: dbss\n    database: 1200\n    ranges:\n      - min: 9000\n        max: 9999\n      - min: 100000000\n"
    ));
    assert_eq!(
        c.roles,
        vec![RoleConfig::Dbss {
            database: 1200,
            ranges: vec![
                DoidRange {
                    min: 9000,
                    max: 9999
                },
                DoidRange {
                    min: 100_000_000,
                    max: u32::MAX
                }
            ],
            limits: Default::default(),
        }]
    );
    for r in [
        "min: 0\n        max: 9999",
        "min: 9000\n        max: 0",
        "min: 201\n        max: 9999",
        "min: 9000\n        max: 206",
    ] {
        let e = parse_err(&format!(
            "{MD}roles:\n  - type: dbss\n    database: 1200\n    ranges:\n      - {r}\n"
        ));
        assert!(e.message.contains("ranges[0]"), "{e}");
    }
    assert!(
        parse_err(&format!("{MD}roles:\n  - type: dbss\n    database: 200\n"))
            .message
            .contains("reserved")
    );
}

#[test]
#[allow(clippy::too_many_lines)] // one scenario, read top to bottom
fn database_backends() {
    let db = |backend: &str| {
        format!("{MD}roles:\n  - type: database\n    control: 75757\n    generate:\n      min: 1000000\n      max: 1000010\n{backend}")
    };
    let c = parse_ok(&db("    backend:\n      type: yaml\n      directory: db\n"));
    assert_eq!(
        c.roles,
        vec![RoleConfig::Database {
            control: 75757,
            broadcast: true,
            generate: DoidRange {
                min: 1_000_000,
                max: 1_000_010
            },
            backend: DatabaseBackend::Sqlite {
                directory: "/cfg/db".into()
            },
            max_batch: crate::config::db_max_batch(),
            max_queued: crate::config::db_max_queued(),
        }]
    );
    let c = parse_ok(&db(""));
    let RoleConfig::Database { backend, .. } = &c.roles[0] else {
        panic!()
    };
    assert_eq!(
        backend,
        &DatabaseBackend::Sqlite {
            directory: "/cfg/yaml_db".into()
        }
    );
    let c = parse_ok(&db("    backend:\n      directory: /var/db\n"));
    let RoleConfig::Database { backend, .. } = &c.roles[0] else {
        panic!()
    };
    assert_eq!(
        backend,
        &DatabaseBackend::Sqlite {
            directory: "/var/db".into()
        }
    );

    let c = parse_ok(&db("    backend:\n      type: soci\n      driver: postgresql\n      address: 127.0.0.1:5432\n      database: astron\n      username: u\n      password: p\n"));
    let RoleConfig::Database { backend, .. } = &c.roles[0] else {
        panic!()
    };
    assert_eq!(
        backend,
        &DatabaseBackend::Postgres {
            address: "127.0.0.1:5432".into(),
            database: "astron".into(),
            username: "u".into(),
            password: "p".into()
        }
    );
    let c = parse_ok(&db(
        "    backend:\n      type: soci\n      driver: postgresql\n      server: 127.0.0.1:57023\n",
    ));
    let RoleConfig::Database { backend, .. } = &c.roles[0] else {
        panic!()
    };
    assert!(
        matches!(backend, DatabaseBackend::Postgres { address, .. } if address == "127.0.0.1:57023")
    );

    for (backend, want) in [
        (
            "    backend:\n      type: soci\n      driver: mysql\n",
            "'mysql' is not supported",
        ),
        (
            "    backend:\n      type: soci\n",
            "default driver is mysql",
        ),
        (
            "    backend:\n      type: mongodb\n      server: mongodb://127.0.0.1:57023/test\n",
            "MongoDB",
        ),
        (
            "    backend:\n      type: mongodb\n      servr: x\n",
            "servr",
        ),
        (
            "    backend:\n      type: yam\n",
            "'yam' is not a database backend",
        ),
        (
            "    backend:\n      type: yaml\n      filename: x\n",
            "filename",
        ),
        (
            "    backend:\n      type: soci\n      host: 127.0.0.1\n",
            "host",
        ),
    ] {
        let e = parse_err(&db(backend));
        assert!(e.message.contains(want), "{backend}: {e}");
    }
    let gen =
        |g: &str| format!("{MD}roles:\n  - type: database\n    control: 75757\n    generate:\n{g}");
    assert!(parse_err(&gen("      min: 0\n"))
        .message
        .contains("INVALID_DO_ID"));
    assert!(parse_err(&gen("      min: 444\n"))
        .message
        .contains("reserved"));
    assert!(parse_err(&gen("      min: 1000000\n      max: 555\n"))
        .message
        .contains("reserved"));
    assert!(parse_err(&gen("      max: 1000000\n"))
        .message
        .contains("generate.min"));
    assert!(parse_err(&gen("      min: 1000001\n      max: 1000000\n"))
        .message
        .contains("above max"));
    let c = parse_ok(&gen("      min: 1000000\n"));
    let RoleConfig::Database { generate, .. } = &c.roles[0] else {
        panic!()
    };
    assert_eq!(generate.max, u32::MAX);
    assert!(parse_err(&format!(
        "{MD}roles:\n  - type: database\n    control: 777\n    generate:\n      min: 1000000\n"
    ))
    .message
    .contains("reserved"));
}

#[test]
fn eventlogger_role() {
    let c = parse_ok(&format!("{MD}roles:\n  - type: eventlogger\n    bind: 0.0.0.0:9090\n    output: logs/el-%Y.log\n    rotate_interval: 1d\n"));
    assert_eq!(
        c.roles,
        vec![RoleConfig::EventLogger {
            bind: "0.0.0.0:9090".into(),
            output: "/cfg/logs/el-%Y.log".into(),
            rotate_interval: "1d".into(),
            max_file_bytes: crate::config::el_max_file_bytes(),
            max_events_per_second: crate::config::el_max_events_per_second(),
            max_bytes_per_second: crate::config::el_max_bytes_per_second(),
            max_files: crate::config::el_max_files(),
            max_age: crate::config::el_max_age(),
            allow_from: Vec::new(),
        }]
    );
    let c = parse_ok(&format!("{MD}roles:\n  - type: eventlogger\n"));
    assert_eq!(
        c.roles,
        vec![RoleConfig::EventLogger {
            bind: "0.0.0.0:7197".into(),
            output: "/cfg/events-%Y%m%d-%H%M%S.log".into(),
            rotate_interval: "0".into(),
            max_file_bytes: crate::config::el_max_file_bytes(),
            max_events_per_second: crate::config::el_max_events_per_second(),
            max_bytes_per_second: crate::config::el_max_bytes_per_second(),
            max_files: crate::config::el_max_files(),
            max_age: crate::config::el_max_age(),
            allow_from: Vec::new(),
        }]
    );
    // otpd's own limits.
    let c = parse_ok(&format!(
        "{MD}roles:\n  - type: eventlogger\n    max_file_bytes: 65536\n    max_events_per_second: 50\n    \
         max_bytes_per_second: 8192\n    max_files: 4\n    max_age: 7d\n    allow_from: [10.0.0.0/8, \"::1\"]\n"
    ));
    let RoleConfig::EventLogger {
        max_file_bytes,
        max_events_per_second,
        max_bytes_per_second,
        max_files,
        max_age,
        allow_from,
        ..
    } = &c.roles[0]
    else {
        panic!()
    };
    assert_eq!(
        (
            *max_file_bytes,
            *max_events_per_second,
            *max_bytes_per_second,
            *max_files
        ),
        (65536, 50, 8192, 4)
    );
    assert_eq!(
        (max_age.as_str(), &allow_from[..]),
        ("7d", &["10.0.0.0/8".to_string(), "::1".into()][..])
    );
    let e = parse_err(&format!(
        "{MD}roles:\n  - type: eventlogger\n    allow_from: [10.0.0.0/8, nowhere]\n"
    ));
    assert!(
        e.message.contains("allow_from") && e.message.contains("nowhere"),
        "{e}"
    );
    assert_eq!(e.line, Some(5));
    let e = parse_err(&format!(
        "{MD}roles:\n  - type: eventlogger\n    max_age: 3w\n"
    ));
    assert!(e.message.contains("max_age"), "{e}");
    let e = parse_err(&format!(
        "{MD}roles:\n  - type: eventlogger\n    max_bytes_per_second: 10\n"
    ));
    assert!(e.message.contains("max_bytes_per_second"), "{e}");
    let e = parse_err(&format!(
        "{MD}roles:\n  - type: eventlogger\n    bind: \"bad~name:1\"\n"
    ));
    assert!(e.message.contains("roles[0] (eventlogger).bind"), "{e}");
    assert_eq!(e.line, Some(5));
}

#[test]
fn positions_and_documents() {
    let e = parse_err(&format!("{MD}roles:\n  - qux: bar\n"));
    assert_eq!((e.line, e.column), (Some(4), Some(5)), "{e}");
    // Only the first document counts, as in astrond.
    let c = parse_ok(&format!("{MD}---\nroles: 5\n"));
    assert!(c.roles.is_empty());
}

#[test]
fn anchors_and_flow_style() {
    let c = parse_ok("messagedirector: {bind: \"127.0.0.1:57123\"}\nroles:\n  - &ss {type: stateserver, control: 100100}\n  - *ss\n");
    assert_eq!(c.roles.len(), 2);
    assert_eq!(c.roles[0], c.roles[1]);
}

#[test]
fn type_errors() {
    let e = parse_err(&format!(
        "{MD}roles:\n  - type: stateserver\n    control: [1, 2]\n"
    ));
    assert!(
        e.message.contains("control") && e.message.contains("list"),
        "{e}"
    );
    let e = parse_err(&format!(
        "{MD}roles:\n  - type: stateserver\n    control: pizza\n"
    ));
    assert!(e.message.contains("whole number"), "{e}");
    let e = parse_err("messagedirector:\n  bind:\n    host: x\n");
    assert!(e.message.contains("messagedirector.bind"), "{e}");
    let e = parse_err("daemon:\n  name: [a]\n");
    assert!(e.message.contains("daemon.name"), "{e}");
}

#[test]
fn otpd_keys_metrics_reconnect_and_cores() {
    // Without them: no metrics, cluster.ron's reconnect waits, one core thread per CPU, none
    // pinned (astrond pins nothing; its hosts run the AIs too).
    let c = parse_ok(MD);
    assert_eq!(c.metrics, None);
    assert_eq!(
        (c.cores, c.pin_cores),
        (0, false),
        "a YAML cluster floats on every CPU"
    );
    let d = crate::config::MessageDirectorConfig::default();
    assert_eq!(
        (
            c.messagedirector.reconnect_min_ms,
            c.messagedirector.reconnect_max_ms
        ),
        (d.reconnect_min_ms, d.reconnect_max_ms)
    );
    assert_eq!(c.metrics_limits, crate::config::HttpLimits::default());
    let c = parse_ok(
        "general:\n  cores: 2\n  pin_cores: true\nmessagedirector:\n  bind: 127.0.0.1:57123\n  \
         connect: 127.0.0.1:57124\n  reconnect_min_ms: 50\n  reconnect_max_ms: 2000\n\
         metrics:\n  bind: 127.0.0.1:57125\n  max_connections: 4\n  max_request_bytes: 4096\n  \
         read_timeout_ms: 1000\n  write_timeout_ms: 2000\n  idle_timeout_ms: 3000\n",
    );
    assert_eq!((c.cores, c.pin_cores), (2, true));
    assert_eq!(
        (
            c.messagedirector.reconnect_min_ms,
            c.messagedirector.reconnect_max_ms
        ),
        (50, 2000)
    );
    assert_eq!(c.metrics.as_deref(), Some("127.0.0.1:57125"));
    assert_eq!(
        c.metrics_limits,
        crate::config::HttpLimits {
            max_connections: 4,
            max_request_bytes: 4096,
            read_timeout_ms: 1000,
            write_timeout_ms: 2000,
            idle_timeout_ms: 3000,
            ..crate::config::HttpLimits::default()
        }
    );
    // The port may be left out; a metrics section without bind leaves the endpoint off.
    let c = parse_ok(&format!("{MD}metrics:\n  bind: 127.0.0.1\n"));
    assert_eq!(c.metrics.as_deref(), Some("127.0.0.1:9199"));
    let c = parse_ok(&format!("{MD}metrics:\n  max_connections: 2\n"));
    assert_eq!(c.metrics, None);
    // Unknown keys in them name the key and its line, as everywhere else.
    let e = parse_err(&format!("{MD}metrics:\n  bind: 127.0.0.1\n  bnd: x\n"));
    assert_eq!(e.line, Some(5), "{e}");
    assert!(
        e.message.contains("bnd") && e.message.contains("metrics"),
        "{e}"
    );
    let e = parse_err("general:\n  core: 2\n");
    assert_eq!(e.line, Some(2), "{e}");
    assert!(
        e.message.contains("core") && e.message.contains("general"),
        "{e}"
    );
    let e = parse_err(&format!("{MD}  reconnect_ms: 5\n"));
    assert_eq!(e.line, Some(3), "{e}");
    assert!(e.message.contains("reconnect_ms"), "{e}");
    // Values are checked: types, bounds, the waits' order, the metrics limits.
    let e = parse_err("general:\n  cores: two\n");
    assert!(e.message.contains("general.cores"), "{e}");
    let e = parse_err("general:\n  pin_cores: maybe\n");
    assert!(e.message.contains("pin_cores"), "{e}");
    let e = parse_err(&format!("{MD}  reconnect_min_ms: 9000\n"));
    assert!(e.message.contains("reconnect_min_ms"), "{e}");
    let e = parse_err(&format!("{MD}  reconnect_min_ms: 0\n"));
    assert!(e.message.contains("reconnect_min_ms"), "{e}");
    let e = parse_err(&format!(
        "{MD}metrics:\n  bind: 127.0.0.1\n  max_connections: 0\n"
    ));
    assert!(e.message.contains("max_connections"), "{e}");
    let e = parse_err(&format!("{MD}metrics:\n  bind: not an address\n"));
    assert!(e.message.contains("metrics.bind"), "{e}");
}

#[test]
fn the_upstream_links_otpd_keys_are_read() {
    let c = parse_ok(
        "messagedirector:\n  bind: 127.0.0.1:7199\n  connect: 10.0.0.1:7199\n  on_upstream_lost: Exit\n  upstream_settle_ms: 2500\n  keepalive_ms: 2000\n  link_timeout_ms: 9000\n  connect_timeout_ms: 1500\n  max_queued_bytes_upstream: 1048576\nroles:\n  - type: clientagent\n    channels: {min: 3100, max: 3999}\n    client:\n      refuse_clients_without_upstream: false\n",
    );
    let md = &c.messagedirector;
    assert_eq!(md.on_upstream_lost, crate::config::OnUpstreamLost::Exit);
    assert_eq!(md.upstream_settle_ms, Some(2500));
    assert_eq!(
        (
            md.keepalive_ms,
            md.link_timeout_ms,
            md.connect_timeout_ms,
            md.max_queued_bytes_upstream
        ),
        (2000, 9000, 1500, 1 << 20)
    );
    let RoleConfig::ClientAgent(ca) = &c.roles[0] else {
        panic!()
    };
    assert!(!ca.refuse_clients_without_upstream);
    // Defaults when absent.
    let c = parse_ok("messagedirector:\n  connect: 10.0.0.1:7199\n");
    let md = &c.messagedirector;
    assert_eq!(
        md.on_upstream_lost,
        crate::config::OnUpstreamLost::Reconnect
    );
    assert_eq!((md.keepalive_ms, md.link_timeout_ms), (5000, 15000));
    assert_eq!(md.upstream_settle_ms, None, "reconnect_max_ms");
    assert!(
        parse_err("messagedirector:\n  on_upstream_lost: sometimes\n")
            .message
            .contains("Reconnect or Exit")
    );
}

#[test]
fn messagedirector_tls_sections() {
    let dir = std::env::temp_dir().join(format!("otpd-astron-mdtls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = "messagedirector:\n  bind: 0.0.0.0:7199\n  connect: 127.0.0.1:7199\n  tls:\n    certificate: md.crt\n    key: md.key\n    client_ca: ca.crt\n    participants: optional\n  upstream_tls:\n    ca: ca.crt\n    certificate: /etc/otpd/child.crt\n    key: child.key\n    handshake_timeout_ms: 3000\n";
    let c = parse("t.yml", text, &dir).unwrap();
    let md = &c.messagedirector;
    let tls = md.tls.as_ref().unwrap();
    assert_eq!(tls.certificate, dir.join("md.crt"));
    assert_eq!(tls.client_ca, dir.join("ca.crt"));
    assert_eq!(tls.participants, crate::config::TlsParticipants::Optional);
    assert_eq!(
        tls.handshake_timeout_ms,
        crate::config::tls_handshake_timeout()
    );
    let up = md.upstream_tls.as_ref().unwrap();
    assert_eq!(up.ca, dir.join("ca.crt"));
    assert_eq!(up.certificate, Some(PathBuf::from("/etc/otpd/child.crt")));
    assert_eq!(up.key, Some(dir.join("child.key")));
    assert_eq!(up.server_name, None);
    assert_eq!(up.handshake_timeout_ms, 3000);
    for (bad, want) in [
        ("  tls:\n    certificate: a\n    key: b\n", "client_ca"),
        (
            "  tls:\n    certificate: a\n    key: b\n    client_ca: c\n    participants: maybe\n",
            "not one of",
        ),
        (
            "  tls:\n    certificate: a\n    key: b\n    client_ca: c\n    verify: no\n",
            "verify",
        ),
        ("  upstream_tls:\n    server_name: x\n", "ca"),
    ] {
        let e = parse("t.yml", &format!("{MD}{bad}"), &dir).unwrap_err();
        assert!(e.message.contains(want), "{bad}: {e}");
    }
}

/// otpd's ban check of Astron clients (`client.ban_database`, `client.ban_check_timeout_ms`):
/// read from the YAML, off by default.
#[test]
fn the_ban_check_keys_are_read() {
    let c = parse_ok(
        "roles:\n  - type: clientagent\n    channels: {min: 3100, max: 3999}\n    client:\n      ban_database: 4003\n      ban_check_timeout_ms: 1500\n",
    );
    let RoleConfig::ClientAgent(ca) = &c.roles[0] else {
        panic!()
    };
    assert_eq!(
        (ca.ban_database, ca.ban_check_timeout_ms),
        (Some(4003), 1500)
    );
    let c = parse_ok("roles:\n  - type: clientagent\n    channels: {min: 3100, max: 3999}\n");
    let RoleConfig::ClientAgent(ca) = &c.roles[0] else {
        panic!()
    };
    assert_eq!((ca.ban_database, ca.ban_check_timeout_ms), (None, 5000));
}
