//! The `otpd dc` commands: `hash` prints one line, `check` a summary; errors go to standard
//! error as `FILE:LINE:COLUMN: message`, the line and a caret, with exit code 2.

use crate::{DcFile, HashOptions};

/// What the `otpd dc` commands were given: files, Panda3D's `dc-*` settings, and the flags.
struct Args {
    files: Vec<String>,
    options: HashOptions,
    /// `--era 2003`: the 2003 DC parser's hash and per-class numbering.
    era_2003: bool,
    /// `--strict`: forward references that are never defined are errors.
    strict: bool,
}

fn split(args: &[String]) -> Result<Args, String> {
    let mut o = HashOptions::default();
    let mut files = Vec::new();
    let mut era_2003 = false;
    let mut strict = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let flag = |name: &str| -> Option<Result<bool, String>> {
            a.strip_prefix(name).map(|v| match v {
                "=1" | "=true" => Ok(true),
                "=0" | "=false" => Ok(false),
                _ => Err(format!("{a}: expected {name}=0 or {name}=1")),
            })
        };
        if let Some(v) = flag("--multiple-inheritance") {
            o.multiple_inheritance = v?;
        } else if let Some(v) = flag("--virtual-inheritance") {
            o.virtual_inheritance = v?;
        } else if let Some(v) = flag("--sort-inheritance-by-file") {
            o.sort_inheritance_by_file = v?;
        } else if a == "--era" || a.starts_with("--era=") {
            let v = match a.strip_prefix("--era=") {
                Some(v) => v.to_string(),
                None => it
                    .next()
                    .cloned()
                    .ok_or("--era needs a value (2003 or modern)")?,
            };
            era_2003 = match v.as_str() {
                "2003" => true,
                "modern" => false,
                _ => return Err(format!("--era {v}: expected 2003 or modern")),
            };
        } else if a == "--strict" {
            strict = true;
        } else if a.starts_with("--") {
            return Err(format!("unknown option {a}"));
        } else {
            files.push(a.clone());
        }
    }
    if files.is_empty() {
        return Err("no DC files given".into());
    }
    if era_2003 {
        // The 2003 parser numbered fields per class; Panda3D 1.10 does so without multiple
        // inheritance.
        o.multiple_inheritance = false;
    }
    Ok(Args {
        files,
        options: o,
        era_2003,
        strict,
    })
}

fn load(args: &[String]) -> Result<(DcFile, Args), i32> {
    let a = split(args).map_err(|e| {
        eprintln!("otpd dc: {e}");
        2
    })?;
    let dc = DcFile::parse_files_with(&a.files, a.options).map_err(|e| {
        eprintln!("{e}");
        2
    })?;
    Ok((dc, a))
}

/// Prints the hash: Panda3D 1.10's under the `dc-*` settings given, or with `--era 2003` the
/// 2003 parser's (the value a 2003 client sends).
pub fn hash_command(args: &[String]) -> i32 {
    let (dc, a) = match load(args) {
        Ok(x) => x,
        Err(code) => return code,
    };
    if a.era_2003 {
        match dc.hash_2003() {
            Ok(h) => println!("0x{h:08x}"),
            Err(e) => {
                eprintln!("otpd dc hash --era 2003: {e}");
                return 2;
            }
        }
    } else {
        println!("0x{:08x}", dc.hash());
    }
    0
}

/// Prints every class with its fields and their numbers under the numbering chosen (file-wide
/// by default; per class with `--multiple-inheritance=0` or `--era 2003`), to compare with
/// what a client or an AI uses.
pub fn fields_command(args: &[String]) -> i32 {
    let (dc, _) = match load(args) {
        Ok(x) => x,
        Err(code) => return code,
    };
    for c in dc.classes() {
        let kind = if c.is_struct() { "struct" } else { "dclass" };
        println!("{kind} {} {}", c.id(), c.name());
        if c.is_struct() {
            continue;
        }
        let fields: Vec<_> = if dc.global_numbering() {
            dc.inherited(c).collect()
        } else {
            dc.legacy_fields(c)
        };
        for (pos, f) in fields.iter().enumerate() {
            let number = if dc.global_numbering() {
                f.number() as i64
            } else {
                pos as i64
            };
            if number >= 0 {
                let keywords = f.keywords().join(" ");
                println!("  {number} {} {keywords}", f.name());
            }
        }
    }
    0
}

/// Reads the files and prints a summary (class, struct, field, typedef and keyword counts,
/// the hashes); with `--strict`, an undefined forward reference makes the exit code 2.
pub fn check_command(args: &[String]) -> i32 {
    let (dc, a) = match load(args) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let structs = dc.classes().iter().filter(|c| c.is_struct()).count();
    println!("classes:   {}", dc.num_classes() - structs);
    println!("structs:   {structs}");
    println!("fields:    {}", dc.num_fields());
    println!("typedefs:  {}", dc.typedefs().count());
    println!(
        "keywords:  {} declared ({})",
        dc.declared_keywords().len(),
        dc.declared_keywords().join(" ")
    );
    println!("inherited: {}", dc.total_inherited_fields());
    println!("hash:      0x{:08x} ({})", dc.hash(), dc.hash());
    if let Ok(h) = dc.hash_2003() {
        println!("hash 2003: 0x{h:08x} ({h})");
    }
    let undefined = dc.undefined_references();
    for u in &undefined {
        eprintln!("warning: undefined forward reference: {u}");
    }
    if a.strict && !undefined.is_empty() {
        eprintln!(
            "otpd dc check --strict: {} undefined forward reference(s)",
            undefined.len()
        );
        return 2;
    }
    0
}
