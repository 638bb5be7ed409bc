//! `otpd db`: the operator's view of the Database role's store, read with otpd stopped (the
//! store is held exclusively while otpd runs). One object per line, as JSON through otp-dc's
//! JSON form: `{"doid": N, "dclass": "Name", "fields": {"setX": [...], ...}}`, then one line per
//! account of the Toontown 2003 dialect: `{"account": "name", "created": UNIX, "slots": [{"doid":
//! N, "wish_name": "...", "name_state": N}, ...], "password": "$argon2id$..."}` (`"password"` only
//! for an account that has one; `"banned_until": UNIX, "ban_reason": "..."` for a banned one
//! (18446744073709551615 = for good); `"wish_unix"` in a slot when the time its wish name was
//! typed is known; `"data_hex"` for a record otpd cannot read back byte for byte).

use super::{FAILED, OK, USAGE};
use crate::clientagent::accounts::{Account, Slot, MAX_BAN_REASON};
use crate::config::{ClusterConfig, DatabaseBackend, RoleConfig};
use crate::roles::store::{self, Backend};
use crate::roles::Schema;
use otp_wire::Doid;
use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Arc;

const HOW: &str =
    "usage: otpd db (dump DOID | export [OUT] | import [IN]) (--cluster FILE | CONFIG.yml)";

/// What `otpd db` was asked to do.
enum Verb {
    Dump(u32),
    Export(Option<String>),
    Import(Option<String>),
}

/// Runs `otpd db ARGS...`: a wrong command line exits [`USAGE`], a store or a file that fails
/// (or an import line that is refused) [`FAILED`].
pub(super) fn command(args: Vec<String>) -> u8 {
    let (path, ron, verb) = match parse(args) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("otpd db: {e}\n{HOW}");
            return USAGE;
        }
    };
    match run(&path, ron, verb) {
        Ok(()) => OK,
        Err(e) => {
            eprintln!("otpd db: {e}");
            FAILED
        }
    }
}

/// The configuration file (and whether it is RON) and the verb.
fn parse(args: Vec<String>) -> Result<(String, bool, Verb), String> {
    let mut rest = Vec::new();
    let mut config_path = None;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        if a == "--cluster" {
            config_path = Some((it.next().ok_or("--cluster needs a file")?, true));
        } else if a.ends_with(".yml") || a.ends_with(".yaml") {
            config_path = Some((a, false));
        } else {
            rest.push(a);
        }
    }
    let (path, ron) = config_path.ok_or("which cluster? give --cluster FILE or a YAML file")?;
    let verb = match rest.first().map(String::as_str) {
        Some("dump") => Verb::Dump(
            rest.get(1)
                .ok_or("dump needs a doid")?
                .parse()
                .map_err(|e| format!("doid: {e}"))?,
        ),
        Some("export") => Verb::Export(rest.get(1).cloned()),
        Some("import") => Verb::Import(rest.get(1).cloned()),
        _ => return Err("expected dump, export or import".into()),
    };
    Ok((path, ron, verb))
}

fn run(path: &str, ron: bool, verb: Verb) -> Result<(), String> {
    let config = if ron {
        crate::config::ron_file::load(Path::new(path))
    } else {
        crate::config::astron::load(Path::new(path))
    }
    .map_err(|e| e.to_string())?;
    let (schema, mut backend, next) = open(&config)?;
    match verb {
        Verb::Dump(doid) => {
            let line = object_json(&schema, backend.as_mut(), doid)?
                .ok_or(format!("no object {doid} in the database"))?;
            println!("{}", serde_json::to_string_pretty(&line).expect("json"));
            Ok(())
        }
        Verb::Export(file) => {
            let mut out: Box<dyn Write> = match file {
                // Password hashes and account names: the file is made (or reset to) 0600.
                Some(f) => Box::new(std::io::BufWriter::new(
                    crate::private_fs::create_truncate(Path::new(&f))
                        .map_err(|e| format!("{f}: {e}"))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let doids = backend.doids()?;
            for &d in &doids {
                if let Some(j) = object_json(&schema, backend.as_mut(), d)? {
                    writeln!(out, "{j}").map_err(|e| e.to_string())?;
                }
            }
            let names = backend.account_names()?;
            for name in &names {
                if let Some(data) = backend.account_get(name)? {
                    writeln!(out, "{}", account_json(name, &data)).map_err(|e| e.to_string())?;
                }
            }
            out.flush().map_err(|e| e.to_string())?;
            eprintln!(
                "otpd db: exported {} objects and {} accounts",
                doids.len(),
                names.len()
            );
            Ok(())
        }
        Verb::Import(file) => {
            let input: Box<dyn BufRead> = match file {
                Some(f) => Box::new(std::io::BufReader::new(
                    std::fs::File::open(&f).map_err(|e| format!("{f}: {e}"))?,
                )),
                None => Box::new(std::io::BufReader::new(std::io::stdin().lock())),
            };
            import(&schema, backend.as_mut(), input, next)
        }
    }
}

/// Opens the store of the configuration's (first) Database role.
/// The schema, the engine, and the store's next doid.
type Opened = (Arc<Schema>, Box<dyn Backend>, u32);

fn open(config: &ClusterConfig) -> Result<Opened, String> {
    let Some(RoleConfig::Database {
        generate, backend, ..
    }) = config
        .roles
        .iter()
        .find(|r| matches!(r, RoleConfig::Database { .. }))
    else {
        return Err("the configuration has no database role".into());
    };
    if config.dc_files.is_empty() {
        return Err("the configuration has no dc_files".into());
    }
    let dc = otp_dc::DcFile::parse_files_with(&config.dc_files, config.dc_settings.options())
        .map_err(|e| e.to_string())?;
    let schema = Arc::new(Schema::new(dc));
    let s = Arc::clone(&schema);
    let (b, next): (Box<dyn Backend>, u32) = match backend {
        DatabaseBackend::Sqlite { directory } => {
            let st = store::sqlite::open(directory, s, generate.min, generate.max)
                .map_err(|e| e.to_string())?;
            let next = st.next_doid();
            (Box::new(st.into_backend()), next)
        }
        DatabaseBackend::Postgres {
            address,
            database,
            username,
            password,
        } => {
            let st = store::postgres::open(
                address,
                database,
                username,
                password,
                s,
                generate.min,
                generate.max,
            )
            .map_err(|e| e.to_string())?;
            let next = st.next_doid();
            (Box::new(st.into_backend()), next)
        }
    };
    Ok((schema, b, next))
}

fn object_json(
    schema: &Schema,
    b: &mut dyn Backend,
    doid: Doid,
) -> Result<Option<serde_json::Value>, String> {
    let Some(class) = b.class_of(doid)? else {
        return Ok(None);
    };
    let mut fields = serde_json::Map::new();
    for (f, v) in b.all_fields(doid)? {
        let field = schema
            .dc_field(class, f)
            .ok_or(format!("object {doid}: unknown field id {f}"))?;
        let j = schema
            .dc()
            .to_json(field, &v)
            .map_err(|e| format!("object {doid}: {}: {e}", field.name()))?;
        fields.insert(field.name().to_string(), j);
    }
    Ok(Some(serde_json::json!({
        "doid": doid,
        "dclass": schema.class_name(class),
        "fields": fields,
    })))
}

/// An account record as a line of the export.
fn account_json(name: &str, data: &[u8]) -> serde_json::Value {
    // A record that would not come back byte for byte (say, a wish name that is not UTF-8)
    // is exported as its bytes.
    match Account::decode(data, 0).filter(|a| a.encode() == data) {
        Some(a) => {
            let mut j = serde_json::json!({
                "account": name,
                "created": a.created_unix,
                "slots": a.slots.iter().map(|s| {
                    let mut j = serde_json::json!({
                        "doid": s.doid,
                        "wish_name": s.wish_name,
                        "name_state": s.name_state,
                    });
                    if s.wish_unix != 0 {
                        j["wish_unix"] = s.wish_unix.into();
                    }
                    j
                }).collect::<Vec<_>>(),
            });
            if let Some(p) = &a.password {
                j["password"] = serde_json::Value::String(p.clone());
            }
            if a.banned_until != 0 || !a.ban_reason.is_empty() {
                j["banned_until"] = a.banned_until.into();
                j["ban_reason"] = serde_json::Value::String(a.ban_reason.clone());
            }
            j
        }
        None => serde_json::json!({
            "account": name,
            "data_hex": data.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        }),
    }
}

/// An export line's account record, as the Database role stores it.
fn account_record(j: &serde_json::Value) -> Result<Vec<u8>, String> {
    if let Some(hex) = j["data_hex"].as_str() {
        if hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("\"data_hex\" is not hexadecimal".into());
        }
        return Ok((0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("checked hex"))
            .collect());
    }
    let created = j["created"]
        .as_u64()
        .ok_or("no \"created\" (or \"data_hex\")")?;
    let slots = j["slots"].as_array().ok_or("no \"slots\"")?;
    if slots.len() > u8::MAX as usize {
        return Err(format!("{} slots; at most 255", slots.len()));
    }
    let mut a = Account::new(0, created);
    for (i, s) in slots.iter().enumerate() {
        let doid = s["doid"]
            .as_u64()
            .filter(|d| *d <= u32::MAX as u64)
            .ok_or(format!("slot {i}: no valid \"doid\""))? as u32;
        let name_state = s["name_state"]
            .as_u64()
            .filter(|n| *n <= u8::MAX as u64)
            .ok_or(format!("slot {i}: no valid \"name_state\""))? as u8;
        let wish_name = s["wish_name"].as_str().unwrap_or("").to_string();
        let wish_unix = match &s["wish_unix"] {
            serde_json::Value::Null => 0,
            v => v
                .as_u64()
                .ok_or(format!("slot {i}: \"wish_unix\" is not a Unix time"))?,
        };
        a.slots.push(Slot {
            doid,
            wish_name,
            name_state,
            wish_unix,
        });
    }
    match &j["banned_until"] {
        serde_json::Value::Null => {}
        v => a.banned_until = v.as_u64().ok_or("\"banned_until\" is not a Unix time")?,
    }
    match &j["ban_reason"] {
        serde_json::Value::Null => {}
        serde_json::Value::String(r) if r.len() <= MAX_BAN_REASON => a.ban_reason = r.clone(),
        serde_json::Value::String(_) => {
            return Err(format!("\"ban_reason\" is over {MAX_BAN_REASON} bytes"))
        }
        _ => return Err("\"ban_reason\" is not a string".into()),
    }
    match &j["password"] {
        serde_json::Value::Null => {}
        serde_json::Value::String(p) => a.password = Some(p.clone()),
        _ => return Err("\"password\" is not a string".into()),
    }
    Ok(a.encode())
}

/// Adds the objects in one transaction (all or nothing); the doid counter moves past the
/// highest imported doid, so it never hands one of them out again.
fn import(
    schema: &Schema,
    b: &mut dyn Backend,
    input: Box<dyn BufRead>,
    next: u32,
) -> Result<(), String> {
    b.begin()?;
    let mut count = 0usize;
    let mut accounts = 0usize;
    let mut highest = 0u32;
    let result = (|| -> Result<(), String> {
        for (n, line) in input.lines().enumerate() {
            let line = line.map_err(|e| e.to_string())?;
            if line.trim().is_empty() {
                continue;
            }
            let at = |e: String| format!("line {}: {e}", n + 1);
            let j: serde_json::Value =
                serde_json::from_str(&line).map_err(|e| at(e.to_string()))?;
            if let Some(name) = j["account"].as_str() {
                if b.account_get(name)?.is_some() {
                    return Err(at(format!("account {name:?} exists already")));
                }
                let record = account_record(&j).map_err(at)?;
                store::put_account(b, name, &record)?;
                accounts += 1;
                continue;
            }
            let doid = j["doid"]
                .as_u64()
                .filter(|d| *d > 0 && *d <= u32::MAX as u64)
                .ok_or_else(|| at("no valid \"doid\"".into()))? as u32;
            let cname = j["dclass"]
                .as_str()
                .ok_or_else(|| at("no \"dclass\"".into()))?;
            let class = schema
                .dc()
                .class_by_name(cname)
                .ok_or_else(|| at(format!("unknown dclass {cname}")))?;
            if b.class_of(doid)?.is_some() {
                return Err(at(format!("object {doid} exists already")));
            }
            b.insert_object(doid, class.id(), cname)?;
            if let Some(fields) = j["fields"].as_object() {
                for (name, v) in fields {
                    let field = schema
                        .dc()
                        .field_by_name(class, name)
                        .ok_or_else(|| at(format!("{cname} has no field {name}")))?;
                    let bytes = schema
                        .dc()
                        .from_json(field, v)
                        .map_err(|e| at(format!("{name}: {e}")))?;
                    schema
                        .value_len(class.id(), field.id(), &bytes)
                        .map_err(|e| at(format!("{name}: {e}")))?;
                    b.write(doid, field.id(), name, Some(&bytes))?;
                }
            }
            highest = highest.max(doid);
            count += 1;
        }
        if highest >= next {
            b.set_next_doid(highest.saturating_add(1))?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => {
            b.commit()?;
            eprintln!(
                "otpd db: imported {count} objects (highest doid {highest}) and {accounts} accounts"
            );
            Ok(())
        }
        Err(e) => {
            b.rollback();
            Err(format!("{e}; nothing imported"))
        }
    }
}
