//! `DCFile::generate_hash` of Panda3D 1.10, bit for bit: a sum of prime-weighted integers over
//! the classes, fields, parameters, keywords and switches, in Panda3D's order.

use crate::model::*;
use crate::{DcFile, HashOptions};

const MAX_PRIMES: usize = 10_000;

fn primes() -> &'static [u32] {
    static PRIMES: std::sync::OnceLock<Vec<u32>> = std::sync::OnceLock::new();
    PRIMES.get_or_init(|| {
        let mut ps: Vec<u32> = Vec::with_capacity(MAX_PRIMES);
        let mut n = 2u32;
        while ps.len() < MAX_PRIMES {
            if ps
                .iter()
                .take_while(|&&p| p * p <= n)
                .all(|&p| !n.is_multiple_of(p))
            {
                ps.push(n);
            }
            n += 1;
        }
        ps
    })
}

struct Gen {
    hash: u32,
    index: usize,
    primes: &'static [u32],
}

impl Gen {
    fn int(&mut self, v: i32) {
        self.hash = self
            .hash
            .wrapping_add(self.primes[self.index].wrapping_mul(v as u32));
        self.index = (self.index + 1) % MAX_PRIMES;
    }
    fn string(&mut self, s: &str) {
        self.int(s.len() as i32);
        for &b in s.as_bytes() {
            self.int(b as i8 as i32);
        }
    }
    fn blob(&mut self, b: &[u8]) {
        self.int(b.len() as i32);
        for &x in b {
            self.int(x as i32);
        }
    }
}

pub(crate) fn file_hash(dc: &DcFile, o: HashOptions) -> u32 {
    let mut g = Gen {
        hash: 0,
        index: 0,
        primes: primes(),
    };
    if o.virtual_inheritance {
        g.int(if o.sort_inheritance_by_file { 1 } else { 2 });
    }
    g.int(dc.classes.len() as i32);
    for c in &dc.classes {
        class_hash(dc, o, c, &mut g);
    }
    g.hash
}

fn class_hash(dc: &DcFile, o: HashOptions, c: &DClass, g: &mut Gen) {
    g.string(&c.name);
    if c.is_struct {
        g.int(1);
    }
    g.int(c.parents.len() as i32);
    for &p in &c.parents {
        // Panda3D numbers only dclasses: a struct's number is -1 (it still takes a slot).
        let is_struct = dc.class(p).is_some_and(|pc| pc.is_struct);
        g.int(if is_struct { -1 } else { p as i32 });
    }
    if let Some(ci) = c.constructor {
        field_hash(dc, o, &dc.fields[ci], g);
    }
    g.int(c.fields.len() as i32);
    for &fi in &c.fields {
        field_hash(dc, o, &dc.fields[fi], g);
    }
}

fn base_field_hash(o: HashOptions, f: &Field, g: &mut Gen) {
    g.string(&f.name);
    if o.multiple_inheritance {
        g.int(f.id);
    }
}

fn keywords_hash(keywords: &[String], flags: u32, g: &mut Gen) {
    if flags != !0 {
        g.int(flags as i32);
    } else {
        // Panda3D keeps keywords in a map by name: sorted.
        let mut names: Vec<&String> = keywords.iter().collect();
        names.sort();
        g.int(names.len() as i32);
        for k in names {
            g.string(k);
        }
    }
}

fn field_hash(dc: &DcFile, o: HashOptions, f: &Field, g: &mut Gen) {
    match &f.kind {
        FieldKind::Atomic(params) => {
            base_field_hash(o, f, g);
            g.int(params.len() as i32);
            for p in params {
                param_hash(dc, o, p, g);
            }
            keywords_hash(&f.keywords, f.hash_flags, g);
        }
        FieldKind::Molecular(_) => {
            base_field_hash(o, f, g);
            g.int(f.components.len() as i32);
            for &i in &f.components {
                field_hash(dc, o, &dc.fields[i], g);
            }
        }
        FieldKind::Parameter(p) => param_hash_flags(dc, o, p, f.hash_flags, g),
    }
}

fn range_hash(ranges: &[(i64, i64)], g: &mut Gen) {
    if !ranges.is_empty() {
        g.int(ranges.len() as i32);
        for &(a, b) in ranges {
            g.int(a as i32);
            g.int(b as i32);
        }
    }
}

fn param_hash(dc: &DcFile, o: HashOptions, p: &Param, g: &mut Gen) {
    param_hash_flags(dc, o, p, 0, g)
}

fn param_hash_flags(dc: &DcFile, o: HashOptions, p: &Param, hash_flags: u32, g: &mut Gen) {
    if !p.keywords.is_empty() {
        keywords_hash(&p.keywords, hash_flags, g);
    }
    match &p.ty {
        Type::Simple(s) => {
            g.int(s.st as i32);
            g.int(s.divisor as i32);
            if let Some(m) = s.modulus {
                g.int((m * s.divisor as f64) as i32);
            }
            // Panda3D keeps five ranges and hashes them in this order; one is set per type.
            let ints = s.int_ranges().to_vec();
            let empty: Vec<(i64, i64)> = Vec::new();
            let (int_r, int64_r, uint_r, uint64_r, dbl_r) = match s.st {
                St::Int8
                | St::Int16
                | St::Int32
                | St::Int8Array
                | St::Int16Array
                | St::Int32Array => (&ints, &empty, &empty, &empty, Vec::new()),
                St::Int64 => (&empty, &ints, &empty, &empty, Vec::new()),
                St::Char
                | St::UInt8
                | St::UInt16
                | St::UInt32
                | St::UInt8Array
                | St::UInt16Array
                | St::UInt32Array
                | St::String
                | St::Blob
                | St::Blob32 => (&empty, &empty, &ints, &empty, Vec::new()),
                St::UInt64 => (&empty, &empty, &empty, &ints, Vec::new()),
                St::Float64 | St::Float32 => {
                    let d = s.divisor as f64;
                    (
                        &empty,
                        &empty,
                        &empty,
                        &empty,
                        s.ranges
                            .iter()
                            .map(|&(a, b)| ((a * d) as i64, (b * d) as i64))
                            .collect(),
                    )
                }
                St::UInt32UInt8Array | St::Invalid => (&empty, &empty, &empty, &empty, Vec::new()),
            };
            range_hash(int_r, g);
            range_hash(int64_r, g);
            range_hash(uint_r, g);
            range_hash(uint64_r, g);
            range_hash(&dbl_r, g);
        }
        Type::Array { element, sizes } => {
            param_hash(dc, o, element, g);
            let r: Vec<(i64, i64)> = sizes.iter().map(|&(a, b)| (a as i64, b as i64)).collect();
            range_hash(&r, g);
        }
        Type::Class(id) => {
            if let Some(c) = dc.class(*id) {
                class_hash(dc, o, c, g);
            }
        }
        Type::Switch(sw) => switch_hash(dc, o, sw, g),
    }
}

fn switch_hash(dc: &DcFile, o: HashOptions, sw: &Switch, g: &mut Gen) {
    g.string(&sw.name);
    param_hash(dc, o, &sw.key, g);
    g.int(sw.cases.len() as i32);
    for (value, fields) in &sw.cases {
        g.blob(value);
        g.int(fields.len() as i32);
        for f in fields {
            param_hash(dc, o, f, g);
        }
    }
    if let Some(fields) = &sw.default {
        g.int(fields.len() as i32);
        for f in fields {
            param_hash(dc, o, f, g);
        }
    }
}

/// The 2003 era's subatomic numbering (before `blob32` and `char` were added): the value the
/// hash adds per element. `None` for types that era's grammar did not have.
fn st_2003(st: St) -> Option<i32> {
    Some(match st {
        St::Int8 => 0,
        St::Int16 => 1,
        St::Int32 => 2,
        St::Int64 => 3,
        St::UInt8 => 4,
        St::UInt16 => 5,
        St::UInt32 => 6,
        St::UInt64 => 7,
        St::Float64 => 8,
        St::String => 9,
        St::Blob => 10,
        St::Int16Array => 11,
        St::Int32Array => 12,
        St::UInt16Array => 13,
        St::UInt32Array => 14,
        St::Int8Array => 15,
        St::UInt8Array => 16,
        St::UInt32UInt8Array => 17,
        St::Blob32 | St::Char | St::Float32 | St::Invalid => return None,
    })
}

/// The 2003 flag word: the eight keywords that era knew (`p2p` and `ownrecv` share bit 4);
/// `airecv` and declared keywords add nothing.
fn flags_2003(f: &Field) -> i32 {
    let mut flags = 0;
    for k in &f.keywords {
        flags |= match k.as_str() {
            "required" => 0x01,
            "broadcast" => 0x02,
            "p2p" | "ownrecv" => 0x04,
            "ram" => 0x08,
            "db" => 0x10,
            "clsend" => 0x20,
            "clrecv" => 0x40,
            "ownsend" => 0x80,
            _ => 0,
        };
    }
    flags
}

/// `DCFile::generate_hash` as the DC parser of May–July 2003 computed it (the hash the 2003
/// Toontown client sends): classes, each with its name, parents' numbers and own fields; an
/// atomic field as name, (type, divisor) per element and its flag word; a molecular field as
/// name and its atomics' hashes. Errors name what that era's grammar could not express.
pub(crate) fn file_hash_2003(dc: &DcFile) -> Result<u32, String> {
    let mut g = Gen {
        hash: 0,
        index: 0,
        primes: primes(),
    };
    if let Some(c) = dc.classes.iter().find(|c| c.is_struct) {
        return Err(format!(
            "struct {} (the 2003 grammar has no structs)",
            c.name
        ));
    }
    g.int(dc.classes.len() as i32);
    for c in &dc.classes {
        g.string(&c.name);
        g.int(c.parents.len() as i32);
        for &p in &c.parents {
            g.int(p as i32);
        }
        g.int(c.fields.len() as i32);
        for &fi in &c.fields {
            field_hash_2003(dc, &dc.fields[fi], &c.name, &mut g)?;
        }
    }
    Ok(g.hash)
}

fn field_hash_2003(dc: &DcFile, f: &Field, class: &str, g: &mut Gen) -> Result<(), String> {
    let what = |p: &str| format!("{class}.{}: {p} (not in the 2003 grammar)", f.name);
    match &f.kind {
        FieldKind::Atomic(params) => {
            g.string(&f.name);
            g.int(params.len() as i32);
            for p in params {
                let Type::Simple(s) = &p.ty else {
                    return Err(what("a parameter that is not a simple type"));
                };
                if !s.ranges.is_empty() || s.modulus.is_some() {
                    return Err(what("a range or modulus"));
                }
                let st = st_2003(s.st).ok_or_else(|| what(s.st.name()))?;
                g.int(st);
                g.int(s.divisor as i32);
            }
            g.int(flags_2003(f));
        }
        FieldKind::Molecular(_) => {
            g.string(&f.name);
            g.int(f.components.len() as i32);
            for &i in &f.components {
                field_hash_2003(dc, &dc.fields[i], class, g)?;
            }
        }
        FieldKind::Parameter(_) => return Err(what("a parameter field")),
    }
    Ok(())
}
