//! The `otpd dc` commands: `hash` prints one line, `check` a summary; errors go to standard
//! error as `FILE:LINE:COLUMN: message`, the line and a caret, with exit code 2.

use crate::{DcFile, HashOptions};

fn split(args: &[String]) -> Result<(Vec<String>, HashOptions), String> {
    let mut o = HashOptions::default();
    let mut files = Vec::new();
    for a in args {
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
        } else if a.starts_with("--") {
            return Err(format!("unknown option {a}"));
        } else {
            files.push(a.clone());
        }
    }
    if files.is_empty() {
        return Err("no DC files given".into());
    }
    Ok((files, o))
}

fn load(args: &[String]) -> Result<DcFile, i32> {
    let (files, o) = split(args).map_err(|e| {
        eprintln!("otpd dc: {e}");
        2
    })?;
    DcFile::parse_files_with(&files, o).map_err(|e| {
        eprintln!("{e}");
        2
    })
}

pub fn hash_command(args: &[String]) -> i32 {
    match load(args) {
        Ok(dc) => {
            println!("0x{:08x}", dc.hash());
            0
        }
        Err(code) => code,
    }
}

pub fn check_command(args: &[String]) -> i32 {
    let dc = match load(args) {
        Ok(dc) => dc,
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
    0
}
