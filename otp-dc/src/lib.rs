//! otp-dc: reads DC files exactly as Panda3D 1.10 does (grammar, class and field numbering,
//! inheritance), computes the same `DCFile.getHash()`, and packs, unpacks and validates field
//! values. No dependency on Panda3D.

#![warn(missing_docs)]

pub mod cli;
pub mod convert;
mod hash;
mod lexer;
pub mod model;
mod parse;
pub mod value;

pub use convert::Value;
pub(crate) use model::Switch;
pub use model::{DClass, Field, FieldKind, Import, Param};
pub(crate) use value::Val;
pub use value::{ValidateOptions, ValueError};

use std::fmt;
use std::path::Path;

/// Panda3D's three `dc-*` inheritance settings (all true by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashOptions {
    /// `dc-multiple-inheritance`: a class may have several parents and fields are numbered
    /// file-wide; off, one parent only and fields are numbered per class (the old way).
    pub multiple_inheritance: bool,
    /// `dc-virtual-inheritance`: a field reached through several parents appears once, and a
    /// class's field shadows the parent's field of the same name.
    pub virtual_inheritance: bool,
    /// `dc-sort-inheritance-by-file`: a class's inherited fields are ordered by field number
    /// (file order), as otp_server 1.42 did, rather than by parent order.
    pub sort_inheritance_by_file: bool,
}

impl Default for HashOptions {
    fn default() -> Self {
        HashOptions {
            multiple_inheritance: true,
            virtual_inheritance: true,
            sort_inheritance_by_file: true,
        }
    }
}

/// A parse or semantic error, with where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct DcError {
    /// The file's name (its path, or the name given to `parse_str`).
    pub file: String,
    /// 1-based line; 0 when the error has no place in the text (a file that cannot be read).
    pub line: usize,
    /// 1-based column on `line`.
    pub column: usize,
    /// What is wrong, in Panda3D's words where it has some.
    pub message: String,
    /// The text of `line`, shown under the message with a caret.
    pub source_line: String,
}

impl DcError {
    pub(crate) fn new(
        file: &str,
        src: &str,
        line: usize,
        column: usize,
        message: String,
    ) -> DcError {
        let source_line = src
            .lines()
            .nth(line.saturating_sub(1))
            .unwrap_or("")
            .to_string();
        DcError {
            file: file.to_string(),
            line,
            column,
            message,
            source_line,
        }
    }
}

impl fmt::Display for DcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            return write!(f, "{}: {}", self.file, self.message);
        }
        writeln!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )?;
        writeln!(f, "{}", self.source_line)?;
        let pad: String = self
            .source_line
            .chars()
            .take(self.column.saturating_sub(1))
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        write!(f, "{pad}^")
    }
}

impl std::error::Error for DcError {}

/// One DC set: every class and struct, field, typedef and keyword of the files read.
#[derive(Debug, Clone, Default)]
pub struct DcFile {
    pub(crate) options: HashOptions,
    pub(crate) classes: Vec<DClass>,
    /// Every field, constructors and unnumbered struct fields included.
    pub(crate) fields: Vec<Field>,
    /// Field id -> index in `fields`.
    pub(crate) by_id: Vec<usize>,
    pub(crate) typedefs: Vec<(String, Param)>,
    pub(crate) switches: Vec<Switch>,
    pub(crate) declared_keywords: Vec<String>,
    pub(crate) imports: Vec<Import>,
    /// Type names used but never defined (Panda3D's bogus typedefs), in order of first use.
    pub(crate) bogus_typedefs: Vec<String>,
    /// Atomic names used in molecular fields but never declared (Panda3D's bogus atomics).
    pub(crate) bogus_atomics: Vec<String>,
    next_number: i32,
    /// The sources read, kept to re-read them under other `dc-*` settings.
    sources: Vec<(String, String)>,
}

impl DcFile {
    /// Reads the files in order as one DC set (default Panda3D settings).
    pub fn parse_files<P: AsRef<Path>>(paths: &[P]) -> Result<DcFile, DcError> {
        Self::parse_files_with(paths, HashOptions::default())
    }

    /// Reads the files in order as one DC set under the given `dc-*` settings.
    pub fn parse_files_with<P: AsRef<Path>>(
        paths: &[P],
        options: HashOptions,
    ) -> Result<DcFile, DcError> {
        let mut texts = Vec::new();
        for p in paths {
            let name = p.as_ref().display().to_string();
            let text = std::fs::read(p.as_ref()).map_err(|e| DcError {
                file: name.clone(),
                line: 0,
                column: 0,
                message: format!("cannot read: {e}"),
                source_line: String::new(),
            })?;
            texts.push((name, String::from_utf8_lossy(&text).into_owned()));
        }
        let refs: Vec<(&str, &str)> = texts
            .iter()
            .map(|(n, t)| (n.as_str(), t.as_str()))
            .collect();
        Self::parse_strs_with(&refs, options)
    }

    /// Reads one DC text (`name` is what errors call it), default Panda3D settings.
    pub fn parse_str(name: &str, text: &str) -> Result<DcFile, DcError> {
        Self::parse_strs(&[(name, text)])
    }

    pub(crate) fn parse_strs(files: &[(&str, &str)]) -> Result<DcFile, DcError> {
        Self::parse_strs_with(files, HashOptions::default())
    }

    /// Reads `(name, text)` pairs in order as one DC set under the given `dc-*` settings.
    pub fn parse_strs_with(
        files: &[(&str, &str)],
        options: HashOptions,
    ) -> Result<DcFile, DcError> {
        let mut dc = DcFile {
            options,
            ..DcFile::default()
        };
        dc.sources = files
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        for (name, text) in files {
            let toks =
                lexer::lex(text).map_err(|e| DcError::new(name, text, e.line, e.col, e.message))?;
            let mut p = parse::Parser::new(toks, name, text, &mut dc);
            p.parse_file()?;
        }
        dc.finish();
        Ok(dc)
    }

    /// `DCFile.getHash()` with Panda3D's default settings.
    pub fn hash(&self) -> u32 {
        hash::file_hash(self, self.options)
    }

    /// The hash under other `dc-*` settings (the files are re-read under them, as Panda3D
    /// numbers fields while parsing).
    pub fn hash_with(&self, options: HashOptions) -> u32 {
        if options == self.options {
            return self.hash();
        }
        // A file that reads under the defaults can fail under stricter settings (multiple
        // inheritance off); Panda3D would refuse it, and 0 says so.
        self.reparse(options).map_or(0, |dc| dc.hash())
    }

    fn reparse(&self, options: HashOptions) -> Option<DcFile> {
        let refs: Vec<(&str, &str)> = self
            .sources
            .iter()
            .map(|(n, t)| (n.as_str(), t.as_str()))
            .collect();
        Self::parse_strs_with(&refs, options).ok()
    }

    /// `DCFile::generate_hash` as the 2003 DC parser computed it (the era of the sv1.0.6.9
    /// Toontown client): see `hash::file_hash_2003`. An error names a construct that era's
    /// grammar did not have (structs, arrays, ranges, `char`, `blob32`, ...).
    pub fn hash_2003(&self) -> Result<u32, String> {
        hash::file_hash_2003(self)
    }

    /// A class's fields as the 2003 client numbers them: the first parent's list (recursively),
    /// then the class's own fields; a field's number is its position here. Panda3D 1.10 gives
    /// the same numbers with `dc-multiple-inheritance 0` (which refuses a second parent).
    pub fn legacy_fields<'a>(&'a self, class: &'a DClass) -> Vec<&'a Field> {
        let mut chain = vec![class];
        while let Some(&p) = chain.last().and_then(|c| c.parents.first()) {
            chain.push(&self.classes[p as usize]);
        }
        chain
            .iter()
            .rev()
            .flat_map(|c| c.fields.iter().map(|&i| &self.fields[i]))
            .collect()
    }

    /// The number the 2003 client gives the field `name` of `class` (its place in
    /// `legacy_fields`; the last one when a class redefines a parent's field).
    pub fn legacy_number(&self, class: &DClass, name: &str) -> Option<u16> {
        self.legacy_fields(class)
            .iter()
            .rposition(|f| f.name == name)
            .map(|n| n as u16)
    }

    /// The field `number` names in `class` under this file's numbering: the global id with
    /// multiple inheritance (only if the class has the field), else the position in the
    /// class's inherited list.
    pub fn class_field(&self, class: &DClass, number: u16) -> Option<&Field> {
        if self.options.multiple_inheritance {
            let f = self.field(number)?;
            class.inherited.contains(&number).then_some(f)
        } else {
            class
                .inherited_idx
                .get(number as usize)
                .map(|&i| &self.fields[i])
        }
    }

    /// Whether fields are numbered file-wide (`dc-multiple-inheritance 1`, Astron's rule) or
    /// per class (`0`, the 2003 rule).
    pub fn global_numbering(&self) -> bool {
        self.options.multiple_inheritance
    }

    /// The `dc-*` settings the file was read under.
    pub fn options(&self) -> HashOptions {
        self.options
    }
    /// Panda3D's `get_num_classes`: classes and structs (they share one id space).
    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }
    /// How many file-wide field ids there are (0 without `dc-multiple-inheritance`, where
    /// fields are numbered per class).
    pub fn num_fields(&self) -> usize {
        self.by_id.len()
    }
    /// Every class and struct, in id order (the order of the file).
    pub fn classes(&self) -> &[DClass] {
        &self.classes
    }
    /// The class or struct with this id (Panda3D's `get_class`), if there is one.
    pub fn class(&self, id: u16) -> Option<&DClass> {
        self.classes.get(id as usize)
    }
    /// The class or struct of this name (Panda3D's `get_class_by_name`).
    pub fn class_by_name(&self, name: &str) -> Option<&DClass> {
        self.classes.iter().find(|c| c.name == name)
    }
    /// The field with this file-wide id (Panda3D's `get_field_by_index`); only meaningful with
    /// `dc-multiple-inheritance`, else always `None` (see `class_field`).
    pub fn field(&self, id: u16) -> Option<&Field> {
        self.by_id.get(id as usize).map(|&i| &self.fields[i])
    }
    /// A field by its declaration index (`Field::decl_index`).
    pub fn field_by_decl(&self, decl: usize) -> &Field {
        &self.fields[decl]
    }
    /// The field of this name among `class`'s fields, inherited ones included (Panda3D's
    /// `DCClass::get_field_by_name`).
    pub fn field_by_name(&self, class: &DClass, name: &str) -> Option<&Field> {
        class
            .inherited_idx
            .iter()
            .map(|&i| &self.fields[i])
            .find(|f| f.name == name)
    }
    pub(crate) fn constructor(&self, class: &DClass) -> Option<&Field> {
        class.constructor.map(|i| &self.fields[i])
    }
    /// The forward references never resolved: classes named as parents but not defined, and
    /// type names used but not defined (Panda3D reads on; `otpd dc check --strict` refuses).
    pub fn undefined_references(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .classes
            .iter()
            .filter(|c| c.bogus)
            .map(|c| format!("class {} (named as a parent, never defined)", c.name))
            .collect();
        out.extend(
            self.bogus_atomics
                .iter()
                .map(|a| format!("field {a} (named in a molecular field, never declared)")),
        );
        out.extend(
            self.bogus_typedefs
                .iter()
                .map(|t| format!("type {t} (used as a parameter type, never defined)")),
        );
        out
    }

    pub(crate) fn typedefs(&self) -> impl Iterator<Item = &str> {
        self.typedefs.iter().map(|(n, _)| n.as_str())
    }
    /// The names the file declares with `keyword`, in order.
    pub fn declared_keywords(&self) -> &[String] {
        &self.declared_keywords
    }
    /// The file's `import` and `from ... import` lines, in order.
    pub fn imports(&self) -> &[Import] {
        &self.imports
    }
    /// Fields declared in the class itself (not inherited), in order.
    pub fn own_fields<'a>(&'a self, class: &'a DClass) -> impl Iterator<Item = &'a Field> + 'a {
        class.fields.iter().map(|&i| &self.fields[i])
    }

    pub(crate) fn is_keyword(&self, k: &str) -> bool {
        model::STANDARD_KEYWORDS.iter().any(|(n, _)| *n == k)
            || self.declared_keywords.iter().any(|d| d == k)
    }

    /// The historical flag of a keyword; declared (non-standard) keywords have none (~0).
    pub(crate) fn keyword_flag(&self, k: &str) -> u32 {
        model::STANDARD_KEYWORDS
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, f)| *f)
            .unwrap_or(0)
    }

    /// Panda3D's historical flag: a standard keyword's bit until the file re-declares it;
    /// every declared keyword has none (~0).
    pub(crate) fn historical_flag(&self, k: &str) -> u32 {
        if self.declared_keywords.iter().any(|d| d == k) {
            !0
        } else {
            self.keyword_flag(k)
        }
    }

    pub(crate) fn pending_class_index(&self) -> u16 {
        self.classes.len() as u16
    }

    pub(crate) fn next_field_number(&mut self) -> i32 {
        let n = self.next_number;
        self.next_number += 1;
        n
    }

    /// Gives an already stored field its number (a bogus atomic, numbered when its class
    /// takes it).
    pub(crate) fn renumber(&mut self, idx: usize, number: i32) {
        self.fields[idx].id = number;
        if number >= 0 && self.options.multiple_inheritance {
            let id = number as usize;
            if self.by_id.len() <= id {
                self.by_id.resize(id + 1, usize::MAX);
            }
            self.by_id[id] = idx;
        }
    }

    pub(crate) fn push_field(&mut self, mut f: Field) -> usize {
        let idx = self.fields.len();
        f.decl = idx;
        if f.id >= 0 && self.options.multiple_inheritance {
            let id = f.id as usize;
            if self.by_id.len() <= id {
                self.by_id.resize(id + 1, usize::MAX);
            }
            self.by_id[id] = idx;
        }
        self.fields.push(f);
        idx
    }

    pub(crate) fn add_class(&mut self, mut c: DClass) -> u16 {
        let id = self.classes.len() as u16;
        c.id = id;
        for &fi in c.fields.iter().chain(c.constructor.iter()) {
            self.fields[fi].class = id;
        }
        self.classes.push(c);
        self.compute_inheritance(id as usize);
        id
    }

    /// A class's inherited and required field lists; its parents are complete already.
    fn compute_inheritance(&mut self, ci: usize) {
        let idx = self.inherited_indexes(&self.classes[ci]);
        let inherited: Vec<u16> = idx
            .iter()
            .map(|&i| self.fields[i].id.max(0) as u16)
            .collect();
        let mut required: Vec<u16> = idx
            .iter()
            .filter(|&&i| {
                let f = &self.fields[i];
                f.is_required() && f.id >= 0 && !f.is_molecular()
            })
            .map(|&i| self.fields[i].id as u16)
            .collect();
        required.sort_unstable();
        required.dedup();
        self.classes[ci].inherited = inherited;
        self.classes[ci].inherited_idx = idx;
        self.classes[ci].required = required;
    }

    /// A class's inherited fields, in order (works under every `dc-*` setting).
    pub fn inherited<'a>(&'a self, class: &'a DClass) -> impl Iterator<Item = &'a Field> + 'a {
        class.inherited_idx.iter().map(move |&i| &self.fields[i])
    }

    /// A molecular field's components, in order.
    pub fn components<'a>(&'a self, field: &'a Field) -> impl Iterator<Item = &'a Field> + 'a {
        field.components.iter().map(move |&i| &self.fields[i])
    }

    /// A field by name in a class being parsed (its own so far, then its parents').
    pub(crate) fn find_field_in_class(&self, c: &DClass, name: &str) -> Option<usize> {
        if let Some(&i) = c.fields.iter().find(|&&i| self.fields[i].name == name) {
            return Some(i);
        }
        for &p in &c.parents {
            let pc = &self.classes[p as usize];
            if let Some(i) = self
                .inherited_indexes(pc)
                .into_iter()
                .find(|&i| self.fields[i].name == name)
            {
                return Some(i);
            }
        }
        None
    }

    /// Panda3D's non-virtual inherited count, used for numbering without multiple inheritance.
    pub(crate) fn num_inherited_noncached(&self, class: u16) -> usize {
        let c = &self.classes[class as usize];
        c.fields.len()
            + c.parents
                .iter()
                .map(|&p| self.num_inherited_noncached(p))
                .sum::<usize>()
    }

    /// A class's inherited fields (indexes into `fields`) in Panda3D's order for the options.
    fn inherited_indexes(&self, c: &DClass) -> Vec<usize> {
        let o = self.options;
        if o.multiple_inheritance && o.virtual_inheritance {
            let mut names: Vec<&str> = Vec::new();
            let mut out: Vec<usize> = Vec::new();
            for &p in &c.parents {
                for i in self.inherited_indexes(&self.classes[p as usize]) {
                    let f = &self.fields[i];
                    if f.name.is_empty() {
                        if !o.sort_inheritance_by_file {
                            out.push(i);
                        }
                    } else if !names.contains(&f.name.as_str()) {
                        names.push(&f.name);
                        out.push(i);
                    }
                }
            }
            for &i in &c.fields {
                let f = &self.fields[i];
                if f.name.is_empty() {
                    out.push(i);
                } else {
                    if names.contains(&f.name.as_str()) {
                        if let Some(pos) = out.iter().position(|&j| self.fields[j].name == f.name) {
                            out.remove(pos);
                        }
                    } else {
                        names.push(&f.name);
                    }
                    out.push(i);
                }
            }
            if o.sort_inheritance_by_file {
                out.sort_by_key(|&i| self.fields[i].id);
            }
            out
        } else {
            let mut out = Vec::new();
            for &p in &c.parents {
                out.extend(self.inherited_indexes(&self.classes[p as usize]));
            }
            out.extend(c.fields.iter().copied());
            out
        }
    }

    fn finish(&mut self) {}

    /// The sum over classes of their inherited field counts (Panda3D's
    /// `get_num_inherited_fields`), a cross-check of inheritance.
    pub fn total_inherited_fields(&self) -> usize {
        self.classes.iter().map(|c| c.inherited.len()).sum()
    }
}
