//! Values in a readable form: unpacking packed bytes to a `Value` tree, packing it back,
//! Panda3D `formatData`-style text, JSON (for logs, the EventLogger and database tools), and
//! the internal protocol's REQUIRED and OTHER object encodings.

use crate::model::*;
use crate::value::{struct_fields, validate_field_at, ValidateOptions, ValueError};
use crate::{DcFile, Val};
use std::ops::Range;

/// An unpacked value. Numbers with a divisor unpack as `Float` (the stored integer over the
/// divisor), as Panda3D presents them.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A negative integer or one of a signed type (`int8` to `int64`).
    Int(i64),
    /// An integer of an unsigned type (`uint8` to `uint64`).
    UInt(u64),
    /// `float64`, `float32`, or an integer type with a divisor.
    Float(f64),
    /// `string`, and a `char` as a one-byte string.
    Str(Vec<u8>),
    /// `blob` / `blob32`.
    Blob(Vec<u8>),
    /// Arrays (`[...]` in text).
    Array(Vec<Value>),
    /// Structs, switches and a method's parameters (`{...}` in text).
    Struct(Vec<Value>),
}

fn e(at: usize, m: impl Into<String>) -> ValueError {
    ValueError {
        at,
        message: m.into(),
        truncated: false,
    }
}

struct Rd<'a> {
    b: &'a [u8],
    at: usize,
}

impl Rd<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], ValueError> {
        let s = self
            .b
            .get(self.at..self.at + n)
            .ok_or_else(|| e(self.at, "truncated"))?;
        self.at += n;
        Ok(s)
    }
    fn int(&mut self, size: usize, signed: bool) -> Result<i128, ValueError> {
        let raw = self.take(size)?;
        let mut a = [0u8; 8];
        a[..size].copy_from_slice(raw);
        let u = u64::from_le_bytes(a);
        Ok(if signed {
            let shift = 64 - 8 * size as u32;
            (((u << shift) as i64) >> shift) as i128
        } else {
            u as i128
        })
    }
}

const DEPTH: usize = 64;

fn unpack_param(dc: &DcFile, p: &Param, r: &mut Rd, depth: usize) -> Result<Value, ValueError> {
    if depth > DEPTH {
        return Err(e(r.at, "types nested too deeply"));
    }
    Ok(match &p.ty {
        Type::Simple(s) => unpack_simple(s, r)?,
        Type::Array { element, sizes } => {
            let mut items = Vec::new();
            if sizes.len() == 1 && sizes[0].0 == sizes[0].1 {
                for _ in 0..sizes[0].0 {
                    items.push(unpack_param(dc, element, r, depth + 1)?);
                }
            } else {
                let len = r.int(2, false)? as usize;
                let end = r.at + len;
                if end > r.b.len() {
                    return Err(e(r.at, "truncated array"));
                }
                let mut sub = Rd {
                    b: &r.b[..end],
                    at: r.at,
                };
                while sub.at < end {
                    items.push(unpack_param(dc, element, &mut sub, depth + 1)?);
                }
                r.at = end;
            }
            Value::Array(items)
        }
        Type::Class(id) => {
            let c = dc.class(*id).ok_or_else(|| e(r.at, "unknown struct"))?;
            let mut items = Vec::new();
            for f in struct_fields(dc, c) {
                items.push(unpack_field_r(dc, f, r, depth + 1)?);
            }
            Value::Struct(items)
        }
        Type::Switch(sw) => {
            let start = r.at;
            let key = unpack_param(dc, &sw.key, r, depth + 1)?;
            let kb = &r.b[start..r.at];
            let fields = sw
                .cases
                .iter()
                .find(|(c, _)| c == kb)
                .map(|(_, f)| f)
                .or(sw.default.as_ref())
                .ok_or_else(|| e(start, "no switch case"))?;
            let mut items = vec![key];
            for f in &fields[1..] {
                items.push(unpack_param(dc, f, r, depth + 1)?);
            }
            Value::Struct(items)
        }
    })
}

fn unpack_simple(s: &Simple, r: &mut Rd) -> Result<Value, ValueError> {
    if s.st == St::Invalid {
        return Err(e(0, "the type is never defined in the DC file"));
    }
    let scale = |v: i128| {
        if s.divisor != 1 {
            Value::Float(v as f64 / s.divisor as f64)
        } else if v < 0 {
            Value::Int(v as i64)
        } else {
            Value::UInt(v as u64)
        }
    };
    Ok(match s.st {
        St::String | St::Blob | St::Blob32 => {
            let n = match s.fixed_length() {
                Some(n) => n,
                None if s.st == St::Blob32 => r.int(4, false)? as usize,
                None => r.int(2, false)? as usize,
            };
            let b = r.take(n)?.to_vec();
            if s.st == St::String {
                Value::Str(b)
            } else {
                Value::Blob(b)
            }
        }
        St::Char => Value::Str(r.take(1)?.to_vec()),
        St::Float64 => {
            Value::Float(f64::from_le_bytes(r.take(8)?.try_into().unwrap()) / s.divisor as f64)
        }
        St::Float32 => Value::Float(
            f32::from_le_bytes(r.take(4)?.try_into().unwrap()) as f64 / s.divisor as f64,
        ),
        St::Int8Array
        | St::Int16Array
        | St::Int32Array
        | St::UInt8Array
        | St::UInt16Array
        | St::UInt32Array
        | St::UInt32UInt8Array => {
            let len = r.int(2, false)? as usize;
            let end = r.at + len;
            if end > r.b.len() {
                return Err(e(r.at, "truncated array"));
            }
            let (size, signed) = match s.st {
                St::Int8Array => (1, true),
                St::Int16Array => (2, true),
                St::Int32Array => (4, true),
                St::UInt8Array => (1, false),
                St::UInt16Array => (2, false),
                _ => (4, false),
            };
            let mut items = Vec::new();
            let mut odd = false;
            while r.at < end {
                let sz = if s.st == St::UInt32UInt8Array && odd {
                    1
                } else {
                    size
                };
                odd = !odd;
                if r.at + sz > end {
                    return Err(e(r.at, "array length is not a whole number of elements"));
                }
                items.push(scale(r.int(sz, signed)?));
            }
            Value::Array(items)
        }
        st => {
            let size = st.fixed_size().unwrap_or(1);
            let signed = matches!(st, St::Int8 | St::Int16 | St::Int32 | St::Int64);
            scale(r.int(size, signed)?)
        }
    })
}

fn unpack_field_r(dc: &DcFile, f: &Field, r: &mut Rd, depth: usize) -> Result<Value, ValueError> {
    match &f.kind {
        FieldKind::Parameter(p) => unpack_param(dc, p, r, depth),
        FieldKind::Atomic(params) => {
            let mut v = Vec::new();
            for p in params {
                v.push(unpack_param(dc, p, r, depth)?);
            }
            Ok(Value::Struct(v))
        }
        FieldKind::Molecular(_) => {
            let mut v = Vec::new();
            for c in dc.components(f) {
                v.push(unpack_field_r(dc, c, r, depth + 1)?);
            }
            Ok(Value::Struct(v))
        }
    }
}

fn to_val(v: &Value) -> Val {
    match v {
        Value::Int(i) => Val::Int(*i as i128),
        Value::UInt(u) => Val::Int(*u as i128),
        Value::Float(f) => Val::Real(*f),
        Value::Str(s) | Value::Blob(s) => Val::Str(s.clone()),
        Value::Array(a) | Value::Struct(a) => Val::List(a.iter().map(to_val).collect()),
    }
}

impl DcFile {
    /// Unpacks one value of `field` from the start of `bytes` (validated as it goes); returns it
    /// and the bytes it took.
    pub fn unpack(&self, field: &Field, bytes: &[u8]) -> Result<(Value, usize), ValueError> {
        let n = self.validate(field, bytes, ValidateOptions::default())?;
        let mut r = Rd {
            b: &bytes[..n],
            at: 0,
        };
        let v = unpack_field_r(self, field, &mut r, 0)?;
        Ok((v, n))
    }

    /// Packs a value of `field` (the inverse of `unpack`), checking every constraint.
    pub fn pack(&self, field: &Field, value: &Value) -> Result<Vec<u8>, String> {
        let v = to_val(value);
        let out = match &field.kind {
            FieldKind::Parameter(p) => crate::value::pack_value(self, p, &v)?,
            FieldKind::Atomic(params) => {
                let Val::List(items) = v else {
                    return Err("a method's value is a list of its parameters".into());
                };
                if items.len() != params.len() {
                    return Err(format!(
                        "{} takes {} values, got {}",
                        field.name(),
                        params.len(),
                        items.len()
                    ));
                }
                let mut out = Vec::new();
                for (p, item) in params.iter().zip(&items) {
                    out.extend(crate::value::pack_value(self, p, item)?);
                }
                out
            }
            FieldKind::Molecular(_) => {
                let Val::List(items) = v else {
                    return Err("a molecular value is a list of its components".into());
                };
                let comps: Vec<&Field> = self.components(field).collect();
                if items.len() != comps.len() {
                    return Err("wrong number of components".into());
                }
                let mut out = Vec::new();
                for (c, item) in comps.iter().zip(&items) {
                    out.extend(self.pack(c, &from_val(item))?);
                }
                out
            }
        };
        Ok(out)
    }

    /// Panda3D `formatData`-style text of one packed value of `field`.
    pub fn format(&self, field: &Field, bytes: &[u8]) -> Result<String, ValueError> {
        let (v, _) = self.unpack(field, bytes)?;
        let mut s = String::new();
        if matches!(field.kind, FieldKind::Atomic(_)) {
            s.push_str(field.name());
            if let Value::Struct(items) = &v {
                s.push('(');
                for (i, it) in items.iter().enumerate() {
                    if i > 0 {
                        s.push_str(", ");
                    }
                    format_value(it, &mut s);
                }
                s.push(')');
            }
        } else {
            format_value(&v, &mut s);
        }
        Ok(s)
    }

    /// One packed value of `field` as JSON.
    pub fn to_json(&self, field: &Field, bytes: &[u8]) -> Result<serde_json::Value, ValueError> {
        Ok(value_to_json(&self.unpack(field, bytes)?.0))
    }

    /// JSON (as `to_json` writes it) back to packed bytes.
    pub fn from_json(&self, field: &Field, json: &serde_json::Value) -> Result<Vec<u8>, String> {
        self.pack(field, &json_to_value(json)?)
    }

    /// Splits a REQUIRED encoding (every required field of `class`, ascending id, no ids) into
    /// each field's byte range, validating each value.
    pub fn split_required(
        &self,
        class: &DClass,
        bytes: &[u8],
        o: ValidateOptions,
    ) -> Result<Vec<(u16, Range<usize>)>, ValueError> {
        let mut out = Vec::with_capacity(class.required.len());
        let mut at = 0;
        for &id in &class.required {
            let f = self.field(id).ok_or_else(|| e(at, "unknown field"))?;
            let end = validate_field_at(self, f, bytes, at, o, 0)?;
            out.push((id, at..end));
            at = end;
        }
        if at != bytes.len() {
            return Err(e(
                at,
                format!(
                    "{} trailing bytes after the required fields",
                    bytes.len() - at
                ),
            ));
        }
        Ok(out)
    }

    /// Splits an OTHER encoding (`uint16 count`, then `uint16 field_id, value` pairs) whose
    /// fields must all belong to `class`.
    pub fn split_other(
        &self,
        class: &DClass,
        bytes: &[u8],
        o: ValidateOptions,
    ) -> Result<Vec<(u16, Range<usize>)>, ValueError> {
        let count = u16::from_le_bytes(
            bytes
                .get(0..2)
                .ok_or_else(|| e(0, "truncated count"))?
                .try_into()
                .unwrap(),
        ) as usize;
        let mut out = Vec::with_capacity(count.min(1024));
        let mut at = 2;
        for _ in 0..count {
            let id = u16::from_le_bytes(
                bytes
                    .get(at..at + 2)
                    .ok_or_else(|| e(at, "truncated field id"))?
                    .try_into()
                    .unwrap(),
            );
            if !class.inherited.contains(&id) {
                return Err(e(
                    at,
                    format!("field {id} is not a field of {}", class.name),
                ));
            }
            let f = self.field(id).ok_or_else(|| e(at, "unknown field"))?;
            let end = validate_field_at(self, f, bytes, at + 2, o, 0)?;
            out.push((id, at + 2..end));
            at = end;
        }
        if at != bytes.len() {
            return Err(e(
                at,
                format!("{} trailing bytes after the other fields", bytes.len() - at),
            ));
        }
        Ok(out)
    }
}

fn from_val(v: &Val) -> Value {
    match v {
        Val::Int(i) if *i < 0 => Value::Int(*i as i64),
        Val::Int(i) => Value::UInt(*i as u64),
        Val::Real(r) => Value::Float(*r),
        Val::Str(s) | Val::Hex(s) => Value::Str(s.clone()),
        Val::List(l) => Value::Struct(l.iter().map(from_val).collect()),
        Val::Repeat(v, _) => from_val(v),
    }
}

fn format_value(v: &Value, s: &mut String) {
    use std::fmt::Write;
    match v {
        Value::Int(i) => {
            let _ = write!(s, "{i}");
        }
        Value::UInt(u) => {
            let _ = write!(s, "{u}");
        }
        Value::Float(f) => {
            let _ = write!(s, "{f}");
        }
        Value::Str(b) => {
            s.push('"');
            for &c in b {
                match c {
                    b'"' => s.push_str("\\\""),
                    b'\\' => s.push_str("\\\\"),
                    0x20..=0x7e => s.push(c as char),
                    _ => {
                        let _ = write!(s, "\\x{c:02x}");
                    }
                }
            }
            s.push('"');
        }
        Value::Blob(b) => {
            s.push('<');
            for c in b {
                let _ = write!(s, "{c:02x}");
            }
            s.push('>');
        }
        Value::Array(items) | Value::Struct(items) => {
            let (open, close) = if matches!(v, Value::Array(_)) {
                ('[', ']')
            } else {
                ('{', '}')
            };
            s.push(open);
            for (i, it) in items.iter().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                format_value(it, s);
            }
            s.push(close);
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|c| format!("{c:02x}")).collect()
}

/// JSON form: numbers as numbers; strings as JSON strings when UTF-8, else `{"hex": ...}`;
/// blobs as `{"hex": ...}`; arrays and structs as arrays.
pub fn value_to_json(v: &Value) -> serde_json::Value {
    use serde_json::json;
    match v {
        Value::Int(i) => json!(i),
        Value::UInt(u) => json!(u),
        Value::Float(f) => json!(f),
        Value::Str(b) => match std::str::from_utf8(b) {
            Ok(s) => json!(s),
            Err(_) => json!({ "hex": hex(b) }),
        },
        Value::Blob(b) => json!({ "hex": hex(b) }),
        Value::Array(items) | Value::Struct(items) => {
            serde_json::Value::Array(items.iter().map(value_to_json).collect())
        }
    }
}

pub(crate) fn json_to_value(j: &serde_json::Value) -> Result<Value, String> {
    use serde_json::Value as J;
    Ok(match j {
        J::Number(n) => {
            if let Some(u) = n.as_u64() {
                Value::UInt(u)
            } else if let Some(i) = n.as_i64() {
                Value::Int(i)
            } else {
                Value::Float(n.as_f64().unwrap_or(0.0))
            }
        }
        J::String(s) => Value::Str(s.as_bytes().to_vec()),
        J::Object(o) => match o.get("hex").and_then(|h| h.as_str()) {
            Some(h) if h.len() % 2 == 0 => {
                let bytes: Result<Vec<u8>, _> = (0..h.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&h[i..i + 2], 16))
                    .collect();
                Value::Str(bytes.map_err(|_| "bad hex")?)
            }
            _ => return Err("an object must be {\"hex\": \"...\"}".into()),
        },
        J::Array(a) => Value::Struct(a.iter().map(json_to_value).collect::<Result<_, _>>()?),
        J::Bool(b) => Value::UInt(*b as u64),
        J::Null => return Err("null is not a DC value".into()),
    })
}
