//! Field values: packing literal values (defaults, switch cases) against a type, and measuring
//! and validating packed bytes in one pass without allocating (ranges, lengths, array sizes,
//! switch cases, modulus, optional 7-bit strings).

use crate::model::*;
use crate::DcFile;
use std::fmt;

/// A literal value as written in a DC file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Val {
    Int(i128),
    Real(f64),
    Str(Vec<u8>),
    /// Bytes given in their packed form (`<hex>`).
    Hex(Vec<u8>),
    List(Vec<Val>),
    Repeat(Box<Val>, u32),
}

/// Limits that validation adds to the DC file's own (for values from untrusted senders).
#[derive(Debug, Clone, Copy, Default)]
pub struct ValidateOptions {
    /// Refuse string bytes >= 0x80 (Astron's rule).
    pub ascii_strings_only: bool,
    /// Refuse a string or blob longer than this many bytes, whatever the DC file allows
    /// (a server's cap on untrusted input); 0 = only the DC file's own limits.
    pub max_string_bytes: u32,
}

/// Packed bytes that are not a valid value of their field, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError {
    /// The byte offset (in the bytes given) where the fault was found.
    pub at: usize,
    /// What is wrong (a range, a length, an unknown switch case, ...).
    pub message: String,
    /// The bytes ended before the value did (as opposed to a value that breaks its type's
    /// constraints); a client agent tells the two apart (eject 109 against 127).
    pub truncated: bool,
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at byte {})", self.message, self.at)
    }
}

impl std::error::Error for ValueError {}

fn in_ranges_i(ranges: &[(i64, i64)], v: i64) -> bool {
    ranges.is_empty() || ranges.iter().any(|&(a, b)| v >= a && v <= b)
}

/// Packs a literal against a parameter type.
pub(crate) fn pack_value(dc: &DcFile, p: &Param, v: &Val) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    pack_into(dc, p, v, &mut out)?;
    // What was packed must also validate.
    validate_param(dc, p, &out, 0, ValidateOptions::default(), 0).map_err(|e| e.message)?;
    Ok(out)
}

fn pack_into(dc: &DcFile, p: &Param, v: &Val, out: &mut Vec<u8>) -> Result<(), String> {
    if let Val::Hex(bytes) = v {
        out.extend_from_slice(bytes);
        return Ok(());
    }
    match &p.ty {
        Type::Simple(s) => pack_simple(s, v, out),
        Type::Array { element, sizes } => {
            let Val::List(items) = v else {
                return Err("an array value needs [ ... ]".into());
            };
            let n = items.len() as u32;
            if !sizes.is_empty() && !sizes.iter().any(|&(a, b)| n >= a && n <= b) {
                return Err(format!("{n} elements is outside the array's size range"));
            }
            let fixed = sizes.len() == 1 && sizes[0].0 == sizes[0].1;
            let start = out.len();
            if !fixed {
                out.extend_from_slice(&[0, 0]);
            }
            for item in items {
                pack_into(dc, element, item, out)?;
            }
            if !fixed {
                let len = out.len() - start - 2;
                if len > u16::MAX as usize {
                    return Err("array too long".into());
                }
                out[start..start + 2].copy_from_slice(&(len as u16).to_le_bytes());
            }
            Ok(())
        }
        Type::Class(id) => {
            let c = dc.class(*id).ok_or("unknown struct")?;
            let Val::List(items) = v else {
                return Err(format!("a {} value needs {{ ... }}", c.name));
            };
            let fields: Vec<&Field> = struct_fields(dc, c).collect();
            if items.len() != fields.len() {
                return Err(format!(
                    "{} takes {} values, got {}",
                    c.name,
                    fields.len(),
                    items.len()
                ));
            }
            for (f, item) in fields.iter().zip(items) {
                pack_field_value(dc, f, item, out)?;
            }
            Ok(())
        }
        Type::Switch(sw) => {
            let Val::List(items) = v else {
                return Err("a switch value needs { key, fields... }".into());
            };
            let Some((key, rest)) = items.split_first() else {
                return Err("a switch value needs its key".into());
            };
            let mut k = Vec::new();
            pack_into(dc, &sw.key, key, &mut k)?;
            let fields = sw
                .cases
                .iter()
                .find(|(c, _)| *c == k)
                .map(|(_, f)| f)
                .or(sw.default.as_ref())
                .ok_or("no case for that key")?;
            out.extend_from_slice(&k);
            // A case's field list starts with the key itself.
            let fields = &fields[1..];
            if rest.len() != fields.len() {
                return Err(format!(
                    "case takes {} values, got {}",
                    fields.len(),
                    rest.len()
                ));
            }
            for (f, item) in fields.iter().zip(rest) {
                pack_into(dc, f, item, out)?;
            }
            Ok(())
        }
    }
}

fn pack_field_value(dc: &DcFile, f: &Field, v: &Val, out: &mut Vec<u8>) -> Result<(), String> {
    match &f.kind {
        FieldKind::Parameter(p) => pack_into(dc, p, v, out),
        FieldKind::Atomic(params) => {
            let items: Vec<Val> = match v {
                Val::List(items) if params.len() != 1 => items.clone(),
                other if params.len() == 1 => vec![other.clone()],
                _ => return Err(format!("{} takes {} values", f.name, params.len())),
            };
            if items.len() != params.len() {
                return Err(format!(
                    "{} takes {} values, got {}",
                    f.name,
                    params.len(),
                    items.len()
                ));
            }
            for (p, item) in params.iter().zip(&items) {
                pack_into(dc, p, item, out)?;
            }
            Ok(())
        }
        FieldKind::Molecular(_) => Err("a molecular field has no value of its own".into()),
    }
}

/// The fields a struct value is made of: its constructor, then its inherited non-molecular
/// fields, in order.
pub(crate) fn struct_fields<'a>(
    dc: &'a DcFile,
    c: &'a DClass,
) -> impl Iterator<Item = &'a Field> + 'a {
    dc.constructor(c)
        .into_iter()
        .chain(dc.inherited(c).filter(|f| !f.is_molecular()))
}

/// Packs a literal against a simple type, checking its range, length and size.
fn pack_simple(s: &Simple, v: &Val, out: &mut Vec<u8>) -> Result<(), String> {
    if s.st == St::Invalid {
        return Err("the type is never defined in the DC file".into());
    }
    match s.st {
        St::String | St::Blob | St::Blob32 => pack_bytes(s, v, out),
        St::Char => {
            let x = as_number(v)?;
            if !(0.0..=255.0).contains(&x) || !in_ranges_i(s.int_ranges(), x as i64) {
                return Err("character out of range".into());
            }
            out.push(x as u8);
            Ok(())
        }
        St::Float64 | St::Float32 => {
            let d = s.divisor as f64;
            let x = as_number(v)? * d;
            if !s.ranges.is_empty() && !s.ranges.iter().any(|&(a, b)| x >= a * d && x <= b * d) {
                return Err("value out of range".into());
            }
            if s.st == St::Float64 {
                out.extend_from_slice(&x.to_le_bytes());
            } else {
                out.extend_from_slice(&(x as f32).to_le_bytes());
            }
            Ok(())
        }
        St::Int8Array
        | St::Int16Array
        | St::Int32Array
        | St::UInt8Array
        | St::UInt16Array
        | St::UInt32Array
        | St::UInt32UInt8Array => pack_int_array(s, v, out),
        _ => pack_int(s, v, out),
    }
}

/// A literal as a number (a one-byte string counts as its byte).
fn as_number(v: &Val) -> Result<f64, String> {
    match v {
        Val::Int(i) => Ok(*i as f64),
        Val::Real(r) => Ok(*r),
        Val::Str(b) if b.len() == 1 => Ok(b[0] as f64),
        _ => Err("a number is needed".into()),
    }
}

/// `string`, `blob`, `blob32`: a string or a list of byte values, with its length prefix
/// unless the type has a fixed length.
fn pack_bytes(s: &Simple, v: &Val, out: &mut Vec<u8>) -> Result<(), String> {
    let owned;
    let b = match v {
        Val::Str(b) => b,
        Val::List(items) => {
            let mut bytes = Vec::with_capacity(items.len());
            for it in items {
                match it {
                    Val::Int(x) if (0..=255).contains(x) => bytes.push(*x as u8),
                    Val::Str(c) if c.len() == 1 => bytes.push(c[0]),
                    _ => return Err("a list of byte values is needed".into()),
                }
            }
            owned = bytes;
            &owned
        }
        _ => return Err("a string is needed".into()),
    };
    if !in_ranges_i(s.int_ranges(), b.len() as i64) {
        return Err("length outside the allowed range".into());
    }
    if s.fixed_length().is_none() {
        if s.st == St::Blob32 {
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
        } else {
            if b.len() > u16::MAX as usize {
                return Err("too long".into());
            }
            out.extend_from_slice(&(b.len() as u16).to_le_bytes());
        }
    }
    out.extend_from_slice(b);
    Ok(())
}

/// `int8array` ... `uint32uint8array`: a list of elements behind a 16-bit byte count, each
/// element under the array's ranges and divisor.
fn pack_int_array(s: &Simple, v: &Val, out: &mut Vec<u8>) -> Result<(), String> {
    let Val::List(items) = v else {
        return Err("a list is needed".into());
    };
    let start = out.len();
    out.extend_from_slice(&[0, 0]);
    let elem = match s.st {
        St::Int8Array => St::Int8,
        St::Int16Array => St::Int16,
        St::Int32Array => St::Int32,
        St::UInt8Array => St::UInt8,
        St::UInt16Array => St::UInt16,
        St::UInt32Array => St::UInt32,
        _ => St::UInt32,
    };
    for (i, item) in items.iter().enumerate() {
        let e = if s.st == St::UInt32UInt8Array && i % 2 == 1 {
            St::UInt8
        } else {
            elem
        };
        let mut es = Simple::new(e);
        es.ranges = s.ranges.clone();
        es.divisor = s.divisor;
        es.rescale();
        pack_simple(&es, item, out)?;
    }
    let len = out.len() - start - 2;
    out[start..start + 2].copy_from_slice(&(len as u16).to_le_bytes());
    Ok(())
}

/// An integer type: the number times the divisor, rounded, within the type and its ranges.
fn pack_int(s: &Simple, v: &Val, out: &mut Vec<u8>) -> Result<(), String> {
    let x = as_number(v)?;
    let scaled = (x * s.divisor as f64).round();
    let iv = scaled as i128;
    let size = s.st.fixed_size().unwrap_or(1);
    let signed = matches!(s.st, St::Int8 | St::Int16 | St::Int32 | St::Int64);
    let (min, max): (i128, i128) = if signed {
        (-(1i128 << (size * 8 - 1)), (1i128 << (size * 8 - 1)) - 1)
    } else {
        (0, (1i128 << (size * 8)) - 1)
    };
    if iv < min || iv > max {
        return Err("value out of range for its type".into());
    }
    if !in_ranges_i(s.int_ranges(), iv as i64) {
        return Err("value outside the allowed range".into());
    }
    out.extend_from_slice(&(iv as u64).to_le_bytes()[..size]);
    Ok(())
}

fn err(at: usize, m: impl Into<String>) -> ValueError {
    ValueError {
        at,
        message: m.into(),
        truncated: false,
    }
}

fn take(bytes: &[u8], at: usize, n: usize) -> Result<&[u8], ValueError> {
    bytes
        .get(
            at..at
                .checked_add(n)
                .ok_or_else(|| err(at, "length overflow"))?,
        )
        .ok_or_else(|| ValueError {
            truncated: true,
            ..err(
                at,
                format!(
                    "truncated: {n} bytes needed, {} left",
                    bytes.len().saturating_sub(at)
                ),
            )
        })
}

const MAX_DEPTH: usize = 64;

/// Validates one value of `p` at `at`; returns the offset just past it.
pub(crate) fn validate_param(
    dc: &DcFile,
    p: &Param,
    bytes: &[u8],
    at: usize,
    o: ValidateOptions,
    depth: usize,
) -> Result<usize, ValueError> {
    if depth > MAX_DEPTH {
        return Err(err(at, "types nested too deeply"));
    }
    match &p.ty {
        Type::Simple(s) => validate_simple(s, bytes, at, o),
        Type::Array { element, sizes } => {
            let fixed = sizes.len() == 1 && sizes[0].0 == sizes[0].1;
            if fixed {
                let mut pos = at;
                for _ in 0..sizes[0].0 {
                    pos = validate_param(dc, element, bytes, pos, o, depth + 1)?;
                }
                Ok(pos)
            } else {
                let len = u16::from_le_bytes(take(bytes, at, 2)?.try_into().unwrap()) as usize;
                let end = at + 2 + len;
                take(bytes, at + 2, len)?;
                let mut pos = at + 2;
                let mut n = 0u32;
                while pos < end {
                    pos = validate_param(dc, element, &bytes[..end], pos, o, depth + 1)?;
                    n += 1;
                }
                if !sizes.is_empty() && !sizes.iter().any(|&(a, b)| n >= a && n <= b) {
                    return Err(err(
                        at,
                        format!("{n} elements is outside the array's size range"),
                    ));
                }
                Ok(end)
            }
        }
        Type::Class(id) => {
            let c = dc.class(*id).ok_or_else(|| err(at, "unknown struct"))?;
            let mut pos = at;
            for f in struct_fields(dc, c) {
                pos = validate_field_at(dc, f, bytes, pos, o, depth + 1)?;
            }
            Ok(pos)
        }
        Type::Switch(sw) => {
            let key_end = validate_param(dc, &sw.key, bytes, at, o, depth + 1)?;
            let key = &bytes[at..key_end];
            let fields = sw
                .cases
                .iter()
                .find(|(c, _)| c == key)
                .map(|(_, f)| f)
                .or(sw.default.as_ref())
                .ok_or_else(|| err(at, "no switch case for this key"))?;
            let mut pos = key_end;
            for f in &fields[1..] {
                pos = validate_param(dc, f, bytes, pos, o, depth + 1)?;
            }
            Ok(pos)
        }
    }
}

pub(crate) fn validate_field_at(
    dc: &DcFile,
    f: &Field,
    bytes: &[u8],
    at: usize,
    o: ValidateOptions,
    depth: usize,
) -> Result<usize, ValueError> {
    match &f.kind {
        FieldKind::Parameter(p) => validate_param(dc, p, bytes, at, o, depth),
        FieldKind::Atomic(params) => {
            let mut pos = at;
            for p in params {
                pos = validate_param(dc, p, bytes, pos, o, depth)?;
            }
            Ok(pos)
        }
        FieldKind::Molecular(_) => {
            let mut pos = at;
            for c in dc.components(f) {
                pos = validate_field_at(dc, c, bytes, pos, o, depth + 1)?;
            }
            Ok(pos)
        }
    }
}

/// Validates one value of a simple type at `at`; returns the offset just past it.
fn validate_simple(
    s: &Simple,
    bytes: &[u8],
    at: usize,
    o: ValidateOptions,
) -> Result<usize, ValueError> {
    if s.st == St::Invalid {
        return Err(ValueError {
            at,
            message: "the type is never defined in the DC file: no value is valid".into(),
            truncated: false,
        });
    }
    match s.st {
        St::String | St::Blob | St::Blob32 => validate_bytes(s, bytes, at, o),
        St::Int8Array
        | St::Int16Array
        | St::Int32Array
        | St::UInt8Array
        | St::UInt16Array
        | St::UInt32Array
        | St::UInt32UInt8Array => validate_int_array(s, bytes, at),
        St::Float64 => {
            let v = f64::from_le_bytes(take(bytes, at, 8)?.try_into().unwrap());
            let d = s.divisor as f64;
            if !s.ranges.is_empty() && !s.ranges.iter().any(|&(a, b)| v >= a * d && v <= b * d) {
                return Err(err(at, format!("{v} outside the allowed range")));
            }
            Ok(at + 8)
        }
        St::Float32 => {
            take(bytes, at, 4)?;
            Ok(at + 4)
        }
        _ => validate_int(s, bytes, at),
    }
}

/// `string`, `blob`, `blob32`: the length (prefixed, or the type's fixed one) within the
/// type's range and the server's cap; a string's bytes 7-bit if asked.
fn validate_bytes(
    s: &Simple,
    bytes: &[u8],
    at: usize,
    o: ValidateOptions,
) -> Result<usize, ValueError> {
    let (len, start) = match s.fixed_length() {
        Some(n) => (n, at),
        None if s.st == St::Blob32 => (
            u32::from_le_bytes(take(bytes, at, 4)?.try_into().unwrap()) as usize,
            at + 4,
        ),
        None => (
            u16::from_le_bytes(take(bytes, at, 2)?.try_into().unwrap()) as usize,
            at + 2,
        ),
    };
    let data = take(bytes, start, len)?;
    if !in_ranges_i(s.int_ranges(), len as i64) {
        return Err(err(at, format!("length {len} outside the allowed range")));
    }
    if o.max_string_bytes > 0 && len > o.max_string_bytes as usize {
        return Err(err(
            at,
            format!("length {len} over the cap of {}", o.max_string_bytes),
        ));
    }
    if o.ascii_strings_only && s.st == St::String && data.iter().any(|&b| b >= 0x80) {
        return Err(err(start, "string byte >= 0x80"));
    }
    Ok(start + len)
}

/// `int8array` ... `uint32uint8array`: a 16-bit byte count that is a whole number of
/// elements, each element within the ranges.
fn validate_int_array(s: &Simple, bytes: &[u8], at: usize) -> Result<usize, ValueError> {
    let ranges = s.int_ranges();
    let len = u16::from_le_bytes(take(bytes, at, 2)?.try_into().unwrap()) as usize;
    let data = take(bytes, at + 2, len)?;
    let (size, signed) = match s.st {
        St::Int8Array => (1, true),
        St::Int16Array => (2, true),
        St::Int32Array => (4, true),
        St::UInt8Array => (1, false),
        St::UInt16Array => (2, false),
        St::UInt32Array => (4, false),
        _ => (5, false),
    };
    if !len.is_multiple_of(size) {
        return Err(err(
            at,
            format!("array of {len} bytes is not a whole number of {size}-byte elements"),
        ));
    }
    if !ranges.is_empty() && size != 5 {
        for chunk in data.chunks_exact(size) {
            let v = read_int(chunk, signed);
            if !in_ranges_i(ranges, v) {
                return Err(err(at, format!("element {v} outside the allowed range")));
            }
        }
    }
    Ok(at + 2 + len)
}

/// An integer type (and `char`): within the ranges, and an unsigned one below the modulus.
fn validate_int(s: &Simple, bytes: &[u8], at: usize) -> Result<usize, ValueError> {
    let ranges = s.int_ranges();
    let st = s.st;
    let size = st.fixed_size().unwrap_or(1);
    let raw = take(bytes, at, size)?;
    let signed = matches!(st, St::Int8 | St::Int16 | St::Int32 | St::Int64);
    if !ranges.is_empty() || s.modulus.is_some() {
        let v = read_int(raw, signed);
        if !in_ranges_i(ranges, v) {
            return Err(err(at, format!("{v} outside the allowed range")));
        }
        if let Some(m) = s.modulus {
            let m = (m * s.divisor as f64 + 0.5).floor() as i64;
            if m > 0 && (v < 0 || v >= m) && !signed {
                return Err(err(at, format!("{v} not below the modulus {m}")));
            }
        }
    }
    Ok(at + size)
}

fn read_int(raw: &[u8], signed: bool) -> i64 {
    let mut a = [0u8; 8];
    a[..raw.len()].copy_from_slice(raw);
    let u = u64::from_le_bytes(a);
    if signed && raw.len() < 8 {
        let shift = 64 - 8 * raw.len();
        ((u << shift) as i64) >> shift
    } else {
        u as i64
    }
}

impl DcFile {
    /// Validates one value of `field` at the start of `bytes` and returns its length: ranges,
    /// lengths, array sizes, switch cases. Never allocates, never panics.
    pub fn validate(
        &self,
        field: &Field,
        bytes: &[u8],
        o: ValidateOptions,
    ) -> Result<usize, ValueError> {
        validate_field_at(self, field, bytes, 0, o, 0)
    }

    /// As `validate`, and the value must use all of `bytes`.
    pub fn validate_exact(
        &self,
        field: &Field,
        bytes: &[u8],
        o: ValidateOptions,
    ) -> Result<(), ValueError> {
        let n = self.validate(field, bytes, o)?;
        if n != bytes.len() {
            return Err(err(n, format!("{} trailing bytes", bytes.len() - n)));
        }
        Ok(())
    }

    /// The packed default of a field: the DC default, else the type's zero value.
    pub fn default_value(&self, field: &Field) -> Vec<u8> {
        let mut out = Vec::new();
        match &field.kind {
            FieldKind::Parameter(p) => default_param(self, p, &mut out, 0),
            FieldKind::Atomic(params) => {
                for p in params {
                    default_param(self, p, &mut out, 0);
                }
            }
            FieldKind::Molecular(_) => {
                for c in self.components(field) {
                    out.extend(self.default_value(c));
                }
            }
        }
        out
    }
}

fn default_param(dc: &DcFile, p: &Param, out: &mut Vec<u8>, depth: usize) {
    if let Some(d) = &p.default {
        out.extend_from_slice(d);
        return;
    }
    if depth > MAX_DEPTH {
        return;
    }
    match &p.ty {
        Type::Simple(s) => match s.st {
            St::String | St::Blob => match s.fixed_length() {
                Some(n) => out.extend(std::iter::repeat_n(0u8, n)),
                None => {
                    // The shortest length the ranges allow, zero-filled.
                    let n = s
                        .int_ranges()
                        .first()
                        .map(|r| r.0.max(0) as usize)
                        .unwrap_or(0);
                    out.extend_from_slice(&(n as u16).to_le_bytes());
                    out.extend(std::iter::repeat_n(0u8, n));
                }
            },
            St::Blob32 => out.extend_from_slice(&[0, 0, 0, 0]),
            st if st.fixed_size().is_none() => out.extend_from_slice(&[0, 0]),
            st => {
                let size = st.fixed_size().unwrap();
                // The smallest in-range value, or zero.
                let v = s
                    .int_ranges()
                    .first()
                    .map(|r| r.0)
                    .filter(|&lo| lo > 0)
                    .unwrap_or(0);
                out.extend_from_slice(&(v as u64).to_le_bytes()[..size]);
            }
        },
        Type::Array { element, sizes } => {
            if sizes.len() == 1 && sizes[0].0 == sizes[0].1 {
                for _ in 0..sizes[0].0 {
                    default_param(dc, element, out, depth + 1);
                }
            } else {
                let min = sizes.first().map(|r| r.0).unwrap_or(0);
                let start = out.len();
                out.extend_from_slice(&[0, 0]);
                for _ in 0..min {
                    default_param(dc, element, out, depth + 1);
                }
                let len = (out.len() - start - 2) as u16;
                out[start..start + 2].copy_from_slice(&len.to_le_bytes());
            }
        }
        Type::Class(id) => {
            if let Some(c) = dc.class(*id) {
                for f in struct_fields(dc, c) {
                    match &f.kind {
                        FieldKind::Parameter(p) => default_param(dc, p, out, depth + 1),
                        FieldKind::Atomic(ps) => {
                            for p in ps {
                                default_param(dc, p, out, depth + 1);
                            }
                        }
                        FieldKind::Molecular(_) => {}
                    }
                }
            }
        }
        Type::Switch(sw) => {
            if let Some((key, fields)) = sw.cases.first() {
                out.extend_from_slice(key);
                for f in &fields[1..] {
                    default_param(dc, f, out, depth + 1);
                }
            }
        }
    }
}
