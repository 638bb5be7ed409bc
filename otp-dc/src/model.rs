//! The DC schema as Panda3D models it: classes and structs sharing one id space, fields with
//! global ids, parameters with their types, ranges, divisors, moduli, arrays and switches.

/// Panda3D's subatomic types, numbered as its `DCSubatomicType` (the hash uses the number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum St {
    Int8 = 0,
    Int16,
    Int32,
    Int64,
    UInt8,
    UInt16,
    UInt32,
    UInt64,
    Float64,
    String,
    Blob,
    Blob32,
    Int16Array,
    Int32Array,
    UInt16Array,
    UInt32Array,
    Int8Array,
    UInt8Array,
    UInt32UInt8Array,
    Char,
    /// A type name the file never defines (Panda3D's bogus typedef, `ST_invalid`): hashed as
    /// type 20, and no value is ever valid.
    Invalid = 20,
    /// Astron's extension; Panda3D has no such type (its number here is otpd's choice).
    Float32 = 21,
}

impl St {
    pub(crate) fn from_name(s: &str) -> Option<St> {
        Some(match s {
            "int8" => St::Int8,
            "int16" => St::Int16,
            "int32" => St::Int32,
            "int64" => St::Int64,
            "uint8" => St::UInt8,
            "uint16" => St::UInt16,
            "uint32" => St::UInt32,
            "uint64" => St::UInt64,
            "float64" => St::Float64,
            "float32" => St::Float32,
            "string" => St::String,
            "blob" => St::Blob,
            "blob32" => St::Blob32,
            "int8array" => St::Int8Array,
            "int16array" => St::Int16Array,
            "int32array" => St::Int32Array,
            "uint8array" => St::UInt8Array,
            "uint16array" => St::UInt16Array,
            "uint32array" => St::UInt32Array,
            "uint32uint8array" => St::UInt32UInt8Array,
            "char" => St::Char,
            _ => return None,
        })
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            St::Int8 => "int8",
            St::Int16 => "int16",
            St::Int32 => "int32",
            St::Int64 => "int64",
            St::UInt8 => "uint8",
            St::UInt16 => "uint16",
            St::UInt32 => "uint32",
            St::UInt64 => "uint64",
            St::Float64 => "float64",
            St::Float32 => "float32",
            St::String => "string",
            St::Blob => "blob",
            St::Blob32 => "blob32",
            St::Int8Array => "int8array",
            St::Int16Array => "int16array",
            St::Int32Array => "int32array",
            St::UInt8Array => "uint8array",
            St::UInt16Array => "uint16array",
            St::UInt32Array => "uint32array",
            St::UInt32UInt8Array => "uint32uint8array",
            St::Char => "char",
            St::Invalid => "invalid",
        }
    }

    pub(crate) fn is_numeric(self) -> bool {
        !matches!(
            self,
            St::String | St::Blob | St::Blob32 | St::Char | St::Invalid
        )
    }

    /// Bytes of one fixed-size value, for scalar types.
    pub(crate) fn fixed_size(self) -> Option<usize> {
        Some(match self {
            St::Int8 | St::UInt8 | St::Char => 1,
            St::Int16 | St::UInt16 => 2,
            St::Int32 | St::UInt32 | St::Float32 => 4,
            St::Int64 | St::UInt64 | St::Float64 => 8,
            _ => return None,
        })
    }
}

/// A simple (primitive) parameter type with its constraints, in declared and stored form.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Simple {
    pub(crate) st: St,
    pub(crate) divisor: u32,
    /// The modulus as written (before scaling by the divisor).
    pub(crate) modulus: Option<f64>,
    /// The ranges as written (before scaling).
    pub(crate) ranges: Vec<(f64, f64)>,
    /// The ranges scaled by the divisor and rounded, as Panda3D stores them; kept up to date
    /// by `rescale` so that validation never computes (or allocates) them.
    scaled: Vec<(i64, i64)>,
}

impl Simple {
    pub(crate) fn new(st: St) -> Simple {
        Simple {
            st,
            divisor: 1,
            modulus: None,
            ranges: Vec::new(),
            scaled: Vec::new(),
        }
    }
    /// Recomputes the scaled ranges after `ranges` or `divisor` changed.
    pub(crate) fn rescale(&mut self) {
        let d = self.divisor as f64;
        self.scaled = self
            .ranges
            .iter()
            .map(|&(a, b)| ((a * d + 0.5).floor() as i64, (b * d + 0.5).floor() as i64))
            .collect();
    }
    /// Ranges scaled by the divisor and rounded as Panda3D stores them (integers).
    pub(crate) fn int_ranges(&self) -> &[(i64, i64)] {
        &self.scaled
    }
    /// For string/blob types: a single length range of one value means a fixed length.
    pub(crate) fn fixed_length(&self) -> Option<usize> {
        match self.st {
            St::String | St::Blob => {
                let r = self.int_ranges();
                if r.len() == 1 && r[0].0 == r[0].1 {
                    Some(r[0].0 as usize)
                } else {
                    None
                }
            }
            _ => None,
        }
    }
}

/// A parameter's type: Panda3D's `DCSimpleParameter`, `DCArrayParameter`,
/// `DCClassParameter` and `DCSwitchParameter`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Type {
    Simple(Simple),
    /// `T[]`, `T[N]`, `T[lo-hi]`: element type and size ranges (empty = any size).
    Array {
        element: Box<Param>,
        sizes: Vec<(u32, u32)>,
    },
    /// A struct (or class) by id.
    Class(u16),
    Switch(Box<Switch>),
}

/// One typed value in a DC file (Panda3D's `DCParameter`): a method's argument, a parameter
/// field, a struct member, a typedef, or a switch's key or case member.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub(crate) name: String,
    pub(crate) ty: Type,
    /// The typedef this parameter was declared through, if any.
    pub(crate) typedef: Option<String>,
    /// The default written after `=`, packed against the type; `None` if there is none.
    pub default: Option<Vec<u8>>,
    /// Keywords on a parameter used as a field.
    pub(crate) keywords: Vec<String>,
}

impl Param {
    /// The bytes this parameter always packs to, when that is fixed (a number type).
    pub fn fixed_size(&self) -> Option<usize> {
        match &self.ty {
            Type::Simple(s) => s.st.fixed_size(),
            _ => None,
        }
    }

    /// Whether this parameter is a plain 32-bit integer (`uint32` or `int32`, no divisor): how
    /// DC files type a doid.
    pub fn is_plain_int32(&self) -> bool {
        matches!(&self.ty, Type::Simple(s) if matches!(s.st, St::UInt32 | St::Int32) && s.divisor == 1)
    }
}

/// A `switch (key) { case ...: ... }` (Panda3D's `DCSwitch`): the key's value selects the
/// members that follow it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Switch {
    pub(crate) name: String,
    pub(crate) key: Param,
    /// Each case's packed key value and its fields (cases sharing fields repeat them).
    pub(crate) cases: Vec<(Vec<u8>, Vec<Param>)>,
    pub(crate) default: Option<Vec<Param>>,
}

/// What a field is, as Panda3D's three `DCField` kinds.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldKind {
    /// A method, `name(type, ...)` (`DCAtomicField`): its parameters in order.
    Atomic(Vec<Param>),
    /// A single typed value, `type name` (`DCParameter` used as a field; struct members).
    Parameter(Param),
    /// Component field ids.
    Molecular(Vec<u16>),
}

/// One field of a class or struct (Panda3D's `DCField`): its number, name, kind and keywords.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub(crate) id: i32,
    pub(crate) name: String,
    pub(crate) class: u16,
    pub(crate) kind: FieldKind,
    pub(crate) keywords: Vec<String>,
    pub(crate) flags: u32,
    /// The keyword flags as Panda3D's hash sees them, fixed when the field was declared
    /// (a re-declared standard keyword loses its historical flag from then on).
    pub(crate) hash_flags: u32,
    pub(crate) line: usize,
    /// For a molecular field: its components as indexes into the file's field table.
    pub(crate) components: Vec<usize>,
    /// The field's place in the file's field table (declaration order): the same under every
    /// `dc-*` setting, so it identifies one field across numberings.
    pub(crate) decl: usize,
}

// The standard keywords' historical flags (Panda3D's `DCKeywordList` bits).
pub(crate) const KW_REQUIRED: u32 = 0x0001;
pub(crate) const KW_BROADCAST: u32 = 0x0002;
pub(crate) const KW_OWNRECV: u32 = 0x0004;
pub(crate) const KW_RAM: u32 = 0x0008;
pub(crate) const KW_DB: u32 = 0x0010;
pub(crate) const KW_CLSEND: u32 = 0x0020;
pub(crate) const KW_CLRECV: u32 = 0x0040;
pub(crate) const KW_OWNSEND: u32 = 0x0080;
pub(crate) const KW_AIRECV: u32 = 0x0100;

pub(crate) const STANDARD_KEYWORDS: [(&str, u32); 9] = [
    ("required", KW_REQUIRED),
    ("broadcast", KW_BROADCAST),
    ("ownrecv", KW_OWNRECV),
    ("ram", KW_RAM),
    ("db", KW_DB),
    ("clsend", KW_CLSEND),
    ("clrecv", KW_CLRECV),
    ("ownsend", KW_OWNSEND),
    ("airecv", KW_AIRECV),
];

impl Field {
    /// The field's id; constructors (which Panda3D does not number) have none.
    pub fn id(&self) -> u16 {
        self.id.max(0) as u16
    }
    /// The field's number as Panda3D gives it: file-wide, or its place in the class without
    /// `dc-multiple-inheritance`; -1 for a field it does not number (constructors, some struct
    /// members).
    pub fn number(&self) -> i32 {
        self.id
    }
    /// The field's declaration index (see `decl`): one identity across numberings.
    pub fn decl_index(&self) -> usize {
        self.decl
    }
    /// The field's name (empty for an unnamed struct member).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The id of the class or struct that declares the field.
    pub fn class_id(&self) -> u16 {
        self.class
    }
    /// Whether it is a method, a parameter or a molecular field, with its parameters.
    pub fn kind(&self) -> &FieldKind {
        &self.kind
    }
    pub(crate) fn keywords(&self) -> &[String] {
        &self.keywords
    }
    /// Whether the field carries keyword `k` (standard or declared with `keyword`).
    pub fn has_keyword(&self, k: &str) -> bool {
        self.keywords.iter().any(|x| x == k)
    }
    /// `required`: the object always has a value for it, sent when the object is created.
    pub fn is_required(&self) -> bool {
        self.flags & KW_REQUIRED != 0
    }
    /// `broadcast`: an update goes to everyone with interest in the object's zone.
    pub fn is_broadcast(&self) -> bool {
        self.flags & KW_BROADCAST != 0
    }
    /// `ownrecv`: an update goes to the object's owner.
    pub fn is_ownrecv(&self) -> bool {
        self.flags & KW_OWNRECV != 0
    }
    /// `ram`: the StateServer keeps the last value and sends it with the object.
    pub fn is_ram(&self) -> bool {
        self.flags & KW_RAM != 0
    }
    /// `db`: the value is stored in the database.
    pub fn is_db(&self) -> bool {
        self.flags & KW_DB != 0
    }
    /// `clsend`: a client that sees the object may send this update.
    pub fn is_clsend(&self) -> bool {
        self.flags & KW_CLSEND != 0
    }
    /// `clrecv`: clients receive this update.
    pub fn is_clrecv(&self) -> bool {
        self.flags & KW_CLRECV != 0
    }
    /// `ownsend`: the object's owner client may send this update.
    pub fn is_ownsend(&self) -> bool {
        self.flags & KW_OWNSEND != 0
    }
    /// `airecv`: the object's AI receives this update.
    pub fn is_airecv(&self) -> bool {
        self.flags & KW_AIRECV != 0
    }
    /// A molecular field (`name : a, b, c`): several atomic fields sent as one.
    pub fn is_molecular(&self) -> bool {
        matches!(self.kind, FieldKind::Molecular(_))
    }
}

/// A `dclass` or `struct` (Panda3D's `DCClass`): its id, name, parents and fields.
#[derive(Debug, Clone, PartialEq)]
pub struct DClass {
    pub(crate) id: u16,
    pub(crate) name: String,
    pub(crate) is_struct: bool,
    pub(crate) parents: Vec<u16>,
    pub(crate) constructor: Option<usize>,
    /// Indexes into the file's field table, in declaration order (constructor excluded).
    pub(crate) fields: Vec<usize>,
    pub(crate) inherited: Vec<u16>,
    /// The same, as indexes into the file's field table (ids are not unique without
    /// multiple inheritance, and some struct fields have none).
    pub(crate) inherited_idx: Vec<usize>,
    pub(crate) required: Vec<u16>,
    pub(crate) line: usize,
    /// A class named (as a parent) but never defined: Panda3D's bogus forward reference.
    pub(crate) bogus: bool,
}

impl DClass {
    /// The class's number: its place among the file's classes and structs.
    pub fn id(&self) -> u16 {
        self.id
    }
    /// The class's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// A `struct` (a type for parameters, never an object), not a `dclass`.
    pub fn is_struct(&self) -> bool {
        self.is_struct
    }
    /// The ids of the classes named after `:`, in order.
    pub fn parents(&self) -> &[u16] {
        &self.parents
    }
    /// Field ids in Panda3D's inheritance order.
    pub fn inherited_fields(&self) -> &[u16] {
        &self.inherited
    }
    /// `required` atomic and parameter fields (molecular ones are left out, as Panda3D and Astron
    /// do), inherited included, ascending id: the REQUIRED encoding's order.
    pub fn required_fields(&self) -> &[u16] {
        &self.required
    }
}

/// An `import module` or `from module import a, b/AI/OV` line: the Python names a client or
/// AI loads the classes from.
#[derive(Debug, Clone, PartialEq)]
pub struct Import {
    /// The module named (`x.y`, possibly with `/AI`-style suffixes).
    pub module: String,
    /// The names after `import` as written, suffixes kept (`*` for all); empty for a plain
    /// `import module`.
    pub symbols: Vec<String>,
}
