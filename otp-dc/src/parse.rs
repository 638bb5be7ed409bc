//! The DC grammar, parsed as Panda3D 1.10's bison parser does: classes are added to the file
//! after their bodies, fields are numbered as they are declared, typedefs and classes are
//! looked up as they are met, and default and case values are packed against their types.

use crate::lexer::{Tok, Token};
use crate::model::*;
use crate::value::{pack_value, Val};
use crate::{DcError, DcFile};

pub(crate) struct Parser<'a> {
    toks: Vec<Token>,
    pos: usize,
    pub file: &'a str,
    pub src: &'a str,
    pub dc: &'a mut DcFile,
    /// Bogus atomic fields made for unknown names in the molecular field being read, to be
    /// added to its class just before it (as Panda3D does).
    pending_bogus: Vec<usize>,
}

type R<T> = Result<T, DcError>;

impl<'a> Parser<'a> {
    pub(crate) fn new(toks: Vec<Token>, file: &'a str, src: &'a str, dc: &'a mut DcFile) -> Self {
        Parser {
            toks,
            pos: 0,
            file,
            src,
            dc,
            pending_bogus: Vec::new(),
        }
    }

    fn peek(&self) -> &Tok {
        &self.toks[self.pos].tok
    }
    fn peek_at(&self, n: usize) -> &Tok {
        &self.toks[(self.pos + n).min(self.toks.len() - 1)].tok
    }
    fn next(&mut self) -> Tok {
        let t = self.toks[self.pos].tok.clone();
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
        t
    }
    fn here(&self) -> (usize, usize) {
        let t = &self.toks[self.pos];
        (t.line, t.col)
    }
    pub(crate) fn error_at(&self, line: usize, col: usize, msg: impl Into<String>) -> DcError {
        DcError::new(self.file, self.src, line, col, msg.into())
    }
    fn error(&self, msg: impl Into<String>) -> DcError {
        let (l, c) = self.here();
        self.error_at(l, c, msg)
    }
    fn is_punct(&self, c: char) -> bool {
        matches!(self.peek(), Tok::Punct(p) if *p == c)
    }
    fn eat_punct(&mut self, c: char) -> bool {
        if self.is_punct(c) {
            self.next();
            true
        } else {
            false
        }
    }
    fn expect_punct(&mut self, c: char) -> R<()> {
        if self.eat_punct(c) {
            Ok(())
        } else {
            Err(self.error(format!("expected '{c}', found {}", describe(self.peek()))))
        }
    }
    fn is_ident(&self, s: &str) -> bool {
        matches!(self.peek(), Tok::Ident(i) if i == s)
    }
    fn ident(&mut self, what: &str) -> R<String> {
        match self.peek().clone() {
            Tok::Ident(s) => {
                self.next();
                Ok(s)
            }
            other => Err(self.error(format!("expected {what}, found {}", describe(&other)))),
        }
    }

    pub(crate) fn parse_file(&mut self) -> R<()> {
        loop {
            match self.peek().clone() {
                Tok::Eof => return Ok(()),
                Tok::Punct(';') => {
                    self.next();
                }
                Tok::Ident(k) if k == "dclass" || k == "struct" => {
                    let (line, col) = self.here();
                    let is_struct = k == "struct";
                    let id = self.parse_class(is_struct)?;
                    let _ = (line, col, id);
                }
                Tok::Ident(k) if k == "switch" => {
                    let (line, col) = self.here();
                    let sw = self.parse_switch()?;
                    if self.dc.class_by_name(&sw.name).is_some()
                        || self.dc.switches.iter().any(|s| s.name == sw.name)
                    {
                        return Err(self.error_at(
                            line,
                            col,
                            format!("duplicate class name: {}", sw.name),
                        ));
                    }
                    self.dc.switches.push(sw);
                }
                Tok::Ident(k) if k == "import" => {
                    self.next();
                    let module = self.import_identifier()?;
                    self.dc.imports.push(Import {
                        module,
                        symbols: Vec::new(),
                    });
                }
                Tok::Ident(k) if k == "from" => {
                    self.next();
                    let module = self.import_identifier()?;
                    if !self.is_ident("import") {
                        return Err(self.error("expected 'import'"));
                    }
                    self.next();
                    let mut symbols = Vec::new();
                    if self.eat_punct('*') {
                        symbols.push("*".to_string());
                    } else {
                        loop {
                            symbols.push(self.slash_identifier()?);
                            if !self.eat_punct(',') {
                                break;
                            }
                        }
                    }
                    self.dc.imports.push(Import { module, symbols });
                }
                Tok::Ident(k) if k == "typedef" => {
                    self.next();
                    let (line, col) = self.here();
                    let p = self.parse_parameter(true, true)?;
                    if p.name.is_empty() {
                        return Err(self.error_at(line, col, "typedef needs a name"));
                    }
                    if self.dc.typedefs.iter().any(|(n, _)| *n == p.name) {
                        return Err(self.error_at(
                            line,
                            col,
                            format!("duplicate typedef name: {}", p.name),
                        ));
                    }
                    let name = p.name.clone();
                    self.dc.typedefs.push((name, p));
                }
                Tok::Ident(k) if k == "keyword" => {
                    self.next();
                    while let Tok::Ident(name) = self.peek().clone() {
                        self.next();
                        if !self.dc.declared_keywords.contains(&name) {
                            self.dc.declared_keywords.push(name);
                        }
                    }
                }
                other => {
                    return Err(self.error(format!("unexpected {} at file level", describe(&other))))
                }
            }
        }
    }

    fn slash_identifier(&mut self) -> R<String> {
        let mut s = self.ident("a name")?;
        while self.eat_punct('/') {
            s.push('/');
            s.push_str(&self.ident("a name")?);
        }
        Ok(s)
    }

    fn import_identifier(&mut self) -> R<String> {
        let mut s = self.slash_identifier()?;
        while self.eat_punct('.') {
            s.push('.');
            s.push_str(&self.slash_identifier()?);
        }
        Ok(s)
    }

    /// `dclass Name : Parents { fields }` or `struct ...`; returns the new class id.
    fn parse_class(&mut self, is_struct: bool) -> R<u16> {
        let (line, col) = self.here();
        self.next();
        let name = match self.peek().clone() {
            Tok::Ident(n) => {
                self.next();
                n
            }
            _ => String::new(),
        };
        let parents = if self.eat_punct(':') {
            self.parse_parents(is_struct)?
        } else {
            Vec::new()
        };
        // Panda3D refuses a second parent without multiple inheritance for dclasses only.
        if parents.len() > 1 && !self.dc.options.multiple_inheritance && !is_struct {
            return Err(self.error_at(
                line,
                col,
                "multiple inheritance is not supported without dc-multiple-inheritance",
            ));
        }
        // The class gets its number when its body is done, as in Panda3D.
        let class_index = self.dc.pending_class_index();
        let mut class = DClass {
            id: u16::MAX,
            name: name.clone(),
            is_struct,
            parents,
            constructor: None,
            fields: Vec::new(),
            inherited: Vec::new(),
            inherited_idx: Vec::new(),
            required: Vec::new(),
            line,
            bogus: false,
        };
        self.expect_punct('{')?;
        self.parse_class_body(&mut class, class_index)?;
        if name.is_empty() {
            return Err(self.error_at(line, col, "a top-level class needs a name"));
        }
        if self.dc.class_by_name(&name).is_some_and(|c| c.bogus) {
            return Err(self.error_at(
                line,
                col,
                format!("base class defined after its first reference: {name}"),
            ));
        }
        if self.dc.class_by_name(&name).is_some() || self.dc.switches.iter().any(|s| s.name == name)
        {
            return Err(self.error_at(line, col, format!("duplicate class name: {name}")));
        }
        Ok(self.dc.add_class(class))
    }

    /// The parent list after `:`: each parent's id; an unknown dclass parent becomes a bogus
    /// forward reference, as in Panda3D.
    fn parse_parents(&mut self, is_struct: bool) -> R<Vec<u16>> {
        let mut parents = Vec::new();
        loop {
            let (pl, pc) = self.here();
            let pname = self.ident("a parent class name")?;
            if self.dc.class_by_name(&pname).is_none() && !is_struct {
                // As Panda3D: a forward reference, a bogus class numbered now (before the
                // class naming it); defining it later is an error.
                self.dc.add_class(DClass {
                    id: u16::MAX,
                    name: pname.clone(),
                    is_struct: false,
                    parents: Vec::new(),
                    constructor: None,
                    fields: Vec::new(),
                    inherited: Vec::new(),
                    inherited_idx: Vec::new(),
                    required: Vec::new(),
                    line: pl,
                    bogus: true,
                });
            }
            let Some(parent) = self.dc.class_by_name(&pname) else {
                return Err(self.error_at(pl, pc, format!("unknown class: {pname}")));
            };
            if parent.is_struct != is_struct {
                let what = if is_struct {
                    "a struct cannot inherit from a dclass"
                } else {
                    "a dclass cannot inherit from a struct"
                };
                return Err(self.error_at(pl, pc, format!("{what}: {pname}")));
            }
            parents.push(parent.id);
            if !self.eat_punct(',') {
                return Ok(parents);
            }
        }
    }

    /// The fields between `{` and `}`: each one checked and stored (numbered, or as the
    /// constructor).
    fn parse_class_body(&mut self, class: &mut DClass, class_index: u16) -> R<()> {
        let is_struct = class.is_struct;
        let mut names: Vec<String> = Vec::new();
        loop {
            if self.eat_punct('}') {
                return Ok(());
            }
            if self.eat_punct(';') {
                continue;
            }
            if matches!(self.peek(), Tok::Eof) {
                return Err(self.error("unexpected end of file inside a class"));
            }
            let (fl, fc) = self.here();
            let mut field = self.parse_field(class, class_index, is_struct, &names)?;
            self.expect_punct(';')?;
            field.line = fl;
            let is_constructor = !field.name.is_empty() && field.name == class.name;
            if !field.name.is_empty() {
                if names.contains(&field.name) {
                    return Err(self.error_at(
                        fl,
                        fc,
                        format!("duplicate field name: {}", field.name),
                    ));
                }
                names.push(field.name.clone());
            }
            if !is_struct && field.name.is_empty() {
                let what = if matches!(field.kind, FieldKind::Atomic(_)) {
                    "field name required"
                } else {
                    "unnamed parameters are not allowed on a dclass"
                };
                return Err(self.error_at(fl, fc, what));
            }
            if is_constructor {
                self.store_constructor(class, field, fl, fc)?;
            } else {
                self.store_field(class, field);
            }
        }
    }

    /// A field named as its class: the struct's constructor (unnumbered).
    fn store_constructor(
        &mut self,
        class: &mut DClass,
        mut field: Field,
        fl: usize,
        fc: usize,
    ) -> R<()> {
        if !matches!(field.kind, FieldKind::Atomic(_)) || class.constructor.is_some() {
            let name = &class.name;
            return Err(self.error_at(fl, fc, format!("invalid constructor for {name}")));
        }
        if !class.is_struct {
            return Err(self.error_at(fl, fc, "a non-network field cannot be stored on a dclass"));
        }
        field.id = -1;
        let idx = self.dc.push_field(field);
        class.constructor = Some(idx);
        Ok(())
    }

    /// A field of the class: the bogus atomics its molecule named are numbered first, then
    /// the field (a molecule's component ids filled in).
    fn store_field(&mut self, class: &mut DClass, mut field: Field) {
        let is_struct = class.is_struct;
        for b in std::mem::take(&mut self.pending_bogus) {
            let n = self.new_number(class, is_struct);
            self.dc.renumber(b, n);
            class.fields.push(b);
        }
        field.id = self.new_number(class, is_struct);
        if let FieldKind::Molecular(ids) = &mut field.kind {
            *ids = field
                .components
                .iter()
                .map(|&i| self.dc.fields[i].id.max(0) as u16)
                .collect();
        }
        let idx = self.dc.push_field(field);
        class.fields.push(idx);
    }

    /// The number the next field of `class` gets (-1: none, for struct fields under some
    /// settings): file-wide with multiple inheritance, else its place in the class.
    fn new_number(&mut self, class: &DClass, is_struct: bool) -> i32 {
        let o = self.dc.options;
        let numbered = (o.virtual_inheritance && o.sort_inheritance_by_file) || !is_struct;
        if !numbered {
            -1
        } else if o.multiple_inheritance {
            self.dc.next_field_number()
        } else {
            let inherited: usize = class
                .parents
                .iter()
                .map(|&p| self.dc.num_inherited_noncached(p))
                .sum();
            (inherited + class.fields.len()) as i32
        }
    }

    /// One field of a class or struct.
    fn parse_field(
        &mut self,
        class: &DClass,
        class_index: u16,
        is_struct: bool,
        names: &[String],
    ) -> R<Field> {
        let (line, col) = self.here();
        // Molecular: `name : a, b, c`.
        if let (Tok::Ident(n), Tok::Punct(':')) = (self.peek().clone(), self.peek_at(1).clone()) {
            self.next();
            self.next();
            return self.parse_molecular(class, class_index, n, line);
        }
        // Atomic: `name(params)` (name optional).
        let atomic = matches!((self.peek(), self.peek_at(1)), (Tok::Ident(n), Tok::Punct('(')) if St::from_name(n).is_none() && n != "switch")
            || self.is_punct('(');
        if atomic {
            return self.parse_atomic(class_index, is_struct, line);
        }
        let _ = (names, col);
        let mut p = if self.is_ident("switch") {
            let sw = self.parse_switch()?;
            Param {
                name: sw.name.clone(),
                ty: Type::Switch(Box::new(sw)),
                typedef: None,
                default: None,
                keywords: Vec::new(),
            }
        } else {
            self.parse_parameter(true, true)?
        };
        let (keywords, flags, hash_flags) = self.keyword_list(is_struct)?;
        p.keywords = keywords.clone();
        Ok(Field {
            id: -1,
            name: p.name.clone(),
            class: class_index,
            kind: FieldKind::Parameter(p),
            keywords,
            flags,
            hash_flags,
            line,
            components: Vec::new(),
            decl: 0,
        })
    }

    /// The components of a molecular field `name : a, b, c` (after the ':'); they must be
    /// atomic fields with the same keywords, which the molecule takes.
    fn parse_molecular(
        &mut self,
        class: &DClass,
        class_index: u16,
        name: String,
        line: usize,
    ) -> R<Field> {
        let mut comps: Vec<usize> = Vec::new();
        let mut keywords: Option<(Vec<String>, u32)> = None;
        loop {
            let (al, ac) = self.here();
            let an = self.ident("an atomic field name")?;
            let idx = self.molecule_component(class, class_index, &an, al);
            let f = &self.dc.fields[idx];
            if !matches!(f.kind, FieldKind::Atomic(_)) {
                return Err(self.error_at(al, ac, format!("not an atomic field: {an}")));
            }
            // Panda3D does not compare a bogus atomic's keywords.
            if !self.pending_bogus.contains(&idx) {
                match &keywords {
                    None => keywords = Some((f.keywords.clone(), f.flags)),
                    Some((k, _)) => {
                        let mut a = k.clone();
                        let mut b = f.keywords.clone();
                        a.sort();
                        b.sort();
                        if a != b {
                            let first = &self.dc.fields[comps[0]].name;
                            return Err(self.error_at(
                                al,
                                ac,
                                format!("mismatched keywords in molecule between {first} and {an}"),
                            ));
                        }
                    }
                }
            }
            comps.push(idx);
            if !self.eat_punct(',') {
                break;
            }
        }
        let (keywords, flags) = keywords.unwrap_or_default();
        let ids = comps
            .iter()
            .map(|&i| self.dc.fields[i].id.max(0) as u16)
            .collect();
        Ok(Field {
            id: -1,
            name,
            class: class_index,
            kind: FieldKind::Molecular(ids),
            keywords,
            flags,
            hash_flags: 0,
            line,
            components: comps,
            decl: 0,
        })
    }

    /// The field a molecule names (the class's, its parents', or a bogus atomic named before);
    /// as Panda3D, an unknown name becomes a bogus atomic (no parameters, no keywords), added
    /// to the class before the molecule.
    fn molecule_component(
        &mut self,
        class: &DClass,
        class_index: u16,
        an: &str,
        al: usize,
    ) -> usize {
        let known = self.dc.find_field_in_class(class, an).or_else(|| {
            let mut b = self.pending_bogus.iter();
            b.find(|&&i| self.dc.fields[i].name == an).copied()
        });
        if let Some(i) = known {
            return i;
        }
        let i = self.dc.push_field(Field {
            id: -1,
            name: an.to_string(),
            class: class_index,
            kind: FieldKind::Atomic(Vec::new()),
            keywords: Vec::new(),
            flags: 0,
            hash_flags: 0,
            line: al,
            components: Vec::new(),
            decl: 0,
        });
        self.pending_bogus.push(i);
        self.dc.bogus_atomics.push(an.to_string());
        i
    }

    /// An atomic field (a method), `name(type, ...) keywords`; the name may be missing in a
    /// struct.
    fn parse_atomic(&mut self, class_index: u16, is_struct: bool, line: usize) -> R<Field> {
        let name = if self.is_punct('(') {
            String::new()
        } else {
            self.ident("a field name")?
        };
        self.expect_punct('(')?;
        let mut params = Vec::new();
        if !self.eat_punct(')') {
            loop {
                params.push(self.parse_parameter(true, true)?);
                if self.eat_punct(')') {
                    break;
                }
                self.expect_punct(',')?;
            }
        }
        let (keywords, flags, hash_flags) = self.keyword_list(is_struct)?;
        Ok(Field {
            id: -1,
            name,
            class: class_index,
            kind: FieldKind::Atomic(params),
            keywords,
            flags,
            hash_flags,
            line,
            components: Vec::new(),
            decl: 0,
        })
    }

    fn keyword_list(&mut self, is_struct: bool) -> R<(Vec<String>, u32, u32)> {
        let mut kws: Vec<String> = Vec::new();
        let mut flags = 0u32;
        let mut hash_flags = 0u32;
        while let Tok::Ident(k) = self.peek().clone() {
            if !self.dc.is_keyword(&k) {
                return Err(self.error(format!("unknown keyword: {k}")));
            }
            if is_struct {
                return Err(self.error("keywords are not allowed on struct fields"));
            }
            self.next();
            if !kws.contains(&k) {
                flags |= self.dc.keyword_flag(&k);
                hash_flags |= self.dc.historical_flag(&k);
                kws.push(k);
            }
        }
        Ok((kws, flags, hash_flags))
    }

    /// A parameter: type, constraints, optional name, array dimensions, optional default.
    pub(crate) fn parse_parameter(&mut self, allow_name: bool, allow_default: bool) -> R<Param> {
        let (line, col) = self.here();
        let mut param = self.type_name()?;
        // Array dimensions before the name.
        while self.is_punct('[') {
            let sizes = self.array_spec()?;
            param = append_array(param, sizes);
        }
        if allow_name {
            if let Tok::Ident(n) = self.peek().clone() {
                if !self.dc.is_keyword(&n) {
                    self.next();
                    param.name = n;
                    // Constraints and dimensions after the name.
                    loop {
                        if self.is_punct('/') {
                            self.next();
                            let (dl, dc_) = self.here();
                            let d = self.small_uint()?;
                            match &mut param.ty {
                                Type::Simple(s) if param.typedef.is_none() => {
                                    if !s.st.is_numeric() {
                                        return Err(self.error_at(
                                            dl,
                                            dc_,
                                            "a divisor is only valid on a numeric type",
                                        ));
                                    }
                                    if d == 0 {
                                        return Err(self.error_at(dl, dc_, "invalid divisor"));
                                    }
                                    s.divisor = d;
                                    s.rescale();
                                    check_simple(s).map_err(|m| self.error_at(dl, dc_, m))?;
                                }
                                _ => {
                                    return Err(self.error_at(
                                        dl,
                                        dc_,
                                        "a divisor is only allowed on a primitive type",
                                    ))
                                }
                            }
                        } else if self.is_punct('%') {
                            self.next();
                            let (ml, mc) = self.here();
                            let m = self.number()?;
                            match &mut param.ty {
                                Type::Simple(s) if param.typedef.is_none() => {
                                    if !s.st.is_numeric() {
                                        return Err(self.error_at(
                                            ml,
                                            mc,
                                            "a modulus is only valid on a numeric type",
                                        ));
                                    }
                                    if m <= 0.0 {
                                        return Err(self.error_at(ml, mc, "invalid modulus"));
                                    }
                                    s.modulus = Some(m);
                                    check_simple(s).map_err(|e| self.error_at(ml, mc, e))?;
                                }
                                _ => {
                                    return Err(self.error_at(
                                        ml,
                                        mc,
                                        "a modulus is only allowed on a primitive type",
                                    ))
                                }
                            }
                        } else if self.is_punct('[') {
                            let sizes = self.array_spec()?;
                            let name = std::mem::take(&mut param.name);
                            param = append_array(param, sizes);
                            param.name = name;
                        } else {
                            break;
                        }
                    }
                }
            }
        }
        if allow_default && self.eat_punct('=') {
            let (vl, vc) = self.here();
            let v = self.value()?;
            let bytes = pack_value(self.dc, &param, &v).map_err(|m| {
                self.error_at(vl, vc, format!("invalid default value for type: {m}"))
            })?;
            param.default = Some(bytes);
        }
        let _ = (line, col);
        Ok(param)
    }

    /// A type: a simple type with its constraints, an inline struct or switch, or a name (a
    /// typedef, class or struct, or switch).
    fn type_name(&mut self) -> R<Param> {
        let name = match self.peek().clone() {
            Tok::Ident(n) => n,
            other => return Err(self.error(format!("expected a type, found {}", describe(&other)))),
        };
        if let Some(st) = St::from_name(&name) {
            self.next();
            let s = self.simple_constraints(st)?;
            return Ok(unnamed(Type::Simple(s)));
        }
        if name == "struct" {
            let id = self.parse_inline_struct()?;
            return Ok(unnamed(Type::Class(id)));
        }
        if name == "switch" {
            let sw = self.parse_switch()?;
            return Ok(unnamed(Type::Switch(Box::new(sw))));
        }
        self.next();
        Ok(self.named_type(name))
    }

    /// A simple type's constraints after its name: `(ranges)`, `/ divisor`, `% modulus`, in
    /// any order and number.
    fn simple_constraints(&mut self, st: St) -> R<Simple> {
        let mut s = Simple::new(st);
        loop {
            if self.is_punct('(') {
                self.next();
                let (rl, rc) = self.here();
                s.ranges = self.double_range()?;
                s.rescale();
                self.expect_punct(')')?;
                check_ranges(&s).map_err(|m| self.error_at(rl, rc, m))?;
            } else if self.is_punct('/') && !matches!(self.peek_at(1), Tok::Ident(_)) {
                self.next();
                let (dl, dcol) = self.here();
                let d = self.small_uint()?;
                if !st.is_numeric() {
                    return Err(self.error_at(
                        dl,
                        dcol,
                        "a divisor is only valid on a numeric type",
                    ));
                }
                if d == 0 {
                    return Err(self.error_at(dl, dcol, "invalid divisor"));
                }
                s.divisor = d;
                s.rescale();
                check_simple(&s).map_err(|m| self.error_at(dl, dcol, m))?;
            } else if self.is_punct('%') {
                self.next();
                let (ml, mc) = self.here();
                let m = self.number()?;
                if !st.is_numeric() {
                    return Err(self.error_at(ml, mc, "a modulus is only valid on a numeric type"));
                }
                if m <= 0.0 {
                    return Err(self.error_at(ml, mc, "invalid modulus"));
                }
                s.modulus = Some(m);
                check_simple(&s).map_err(|e| self.error_at(ml, mc, e))?;
            } else {
                return Ok(s);
            }
        }
    }

    /// A type by name: a typedef, a class or struct, or a switch; as Panda3D, an unknown name
    /// is a bogus typedef of no valid value (a forward reference never resolved; defining the
    /// typedef later is an error).
    fn named_type(&mut self, name: String) -> Param {
        if let Some((_, p)) = self.dc.typedefs.iter().find(|(n, _)| *n == name) {
            let mut p = p.clone();
            p.name.clear();
            p.typedef = Some(name);
            return p;
        }
        if let Some(c) = self.dc.class_by_name(&name) {
            return unnamed(Type::Class(c.id));
        }
        if let Some(sw) = self.dc.switches.iter().find(|s| s.name == name) {
            return unnamed(Type::Switch(Box::new(sw.clone())));
        }
        let p = Param {
            typedef: Some(name.clone()),
            ..unnamed(Type::Simple(Simple::new(St::Invalid)))
        };
        self.dc.typedefs.push((name.clone(), p.clone()));
        self.dc.bogus_typedefs.push(name);
        p
    }

    /// An anonymous or named struct inside a parameter: not added to the file's classes.
    fn parse_inline_struct(&mut self) -> R<u16> {
        let (line, col) = self.here();
        let _ = (line, col);
        Err(self.error("inline struct definitions inside a parameter are not supported"))
    }

    /// `switch name (key) { case v: members... break; default: ... }` (the name is optional).
    fn parse_switch(&mut self) -> R<Switch> {
        self.next(); // 'switch'
        let name = match self.peek().clone() {
            Tok::Ident(n) => {
                self.next();
                n
            }
            _ => String::new(),
        };
        self.expect_punct('(')?;
        let key = self.parse_parameter(true, false)?;
        self.expect_punct(')')?;
        self.expect_punct('{')?;
        let mut sets = SwitchSets::default();
        loop {
            if self.eat_punct('}') {
                break;
            }
            if self.eat_punct(';') {
                continue;
            }
            if self.is_ident("case") {
                self.next();
                let (vl, vc) = self.here();
                let v = self.value()?;
                self.expect_punct(':')?;
                let bytes = pack_value(self.dc, &key, &v).map_err(|m| {
                    self.error_at(vl, vc, format!("invalid value for switch parameter: {m}"))
                })?;
                if sets.case_set.iter().any(|(b, _)| *b == bytes) {
                    return Err(self.error_at(vl, vc, "duplicate case value"));
                }
                let set = sets.start_case(&key);
                sets.case_set.push((bytes, set));
            } else if self.is_ident("default") {
                let (dl, dcol) = self.here();
                self.next();
                self.expect_punct(':')?;
                if sets.default_set.is_some() {
                    return Err(self.error_at(dl, dcol, "default case already defined"));
                }
                sets.default_set = Some(sets.start_case(&key));
            } else if self.is_ident("break") {
                self.next();
                self.expect_punct(';')?;
                sets.current.clear();
                sets.fields_added = false;
            } else if matches!(self.peek(), Tok::Eof) {
                return Err(self.error("unexpected end of file inside a switch"));
            } else {
                self.switch_member(&mut sets)?;
            }
        }
        Ok(sets.finish(name, key))
    }

    /// A member inside a switch: added to every case currently open.
    fn switch_member(&mut self, sets: &mut SwitchSets) -> R<()> {
        let (fl, fc) = self.here();
        if sets.current.is_empty() {
            return Err(self.error_at(fl, fc, "case declaration required before first element"));
        }
        let p = self.parse_parameter(true, true)?;
        self.expect_punct(';')?;
        for &s in &sets.current {
            if !p.name.is_empty() && sets.sets[s].iter().any(|q| q.name == p.name) {
                return Err(self.error_at(fl, fc, format!("duplicate field name: {}", p.name)));
            }
            sets.sets[s].push(p.clone());
        }
        sets.fields_added = true;
        Ok(())
    }

    fn array_spec(&mut self) -> R<Vec<(u32, u32)>> {
        self.expect_punct('[')?;
        let (l, c) = self.here();
        let r = self.uint_range()?;
        self.expect_punct(']')?;
        let _ = (l, c);
        Ok(r)
    }

    fn small_uint(&mut self) -> R<u32> {
        match self.next() {
            Tok::UInt(v) if v <= u32::MAX as u64 => Ok(v as u32),
            Tok::UInt(_) => Err(self.error("number out of range")),
            other => Err(self.error(format!(
                "expected an unsigned integer, found {}",
                describe(&other)
            ))),
        }
    }

    fn number(&mut self) -> R<f64> {
        match self.next() {
            Tok::UInt(v) => Ok(v as f64),
            Tok::SInt(v) => Ok(v as f64),
            Tok::Real(v) => Ok(v),
            other => Err(self.error(format!("expected a number, found {}", describe(&other)))),
        }
    }

    fn char_or_number(&mut self) -> R<f64> {
        if let Tok::Str(s) = self.peek().clone() {
            self.next();
            if s.len() != 1 {
                return Err(self.error("single character required"));
            }
            return Ok(s[0] as f64);
        }
        self.number()
    }

    fn char_or_uint(&mut self) -> R<u32> {
        if let Tok::Str(s) = self.peek().clone() {
            self.next();
            if s.len() != 1 {
                return Err(self.error("single character required"));
            }
            return Ok(s[0] as u32);
        }
        self.small_uint()
    }

    /// `a`, `a-b`, `a -b` (a negative number token), comma-separated; empty allowed.
    fn double_range(&mut self) -> R<Vec<(f64, f64)>> {
        let mut out: Vec<(f64, f64)> = Vec::new();
        if self.is_punct(')') {
            return Ok(out);
        }
        loop {
            let (l, c) = self.here();
            let a = self.char_or_number()?;
            let b = if self.eat_punct('-') {
                self.char_or_number()?
            } else if let Tok::SInt(v) = self.peek().clone() {
                self.next();
                -(v as f64)
            } else if let Tok::Real(v) = self.peek().clone() {
                if v < 0.0 {
                    self.next();
                    -v
                } else {
                    a
                }
            } else {
                a
            };
            if b < a || out.iter().any(|&(x, y)| a <= y && b >= x) {
                return Err(self.error_at(l, c, "overlapping range"));
            }
            out.push((a, b));
            if !self.eat_punct(',') {
                break;
            }
        }
        Ok(out)
    }

    fn uint_range(&mut self) -> R<Vec<(u32, u32)>> {
        let mut out: Vec<(u32, u32)> = Vec::new();
        if self.is_punct(']') {
            return Ok(out);
        }
        loop {
            let (l, c) = self.here();
            let a = self.char_or_uint()?;
            let b = if self.eat_punct('-') {
                self.char_or_uint()?
            } else if let Tok::SInt(v) = self.peek().clone() {
                self.next();
                (-v) as u32
            } else {
                a
            };
            if b < a || out.iter().any(|&(x, y)| a <= y && b >= x) {
                return Err(self.error_at(l, c, "overlapping range"));
            }
            out.push((a, b));
            if !self.eat_punct(',') {
                break;
            }
        }
        Ok(out)
    }

    /// A default or case value.
    fn value(&mut self) -> R<Val> {
        // `name = value` (naming the field being packed) is accepted and the name ignored.
        if let (Tok::Ident(_), Tok::Punct('=')) = (self.peek(), self.peek_at(1)) {
            self.next();
            self.next();
        }
        let v = match self.next() {
            Tok::SInt(v) => Val::Int(v as i128),
            Tok::UInt(v) => Val::Int(v as i128),
            Tok::Real(v) => Val::Real(v),
            Tok::Str(s) => Val::Str(s),
            Tok::Hex(h) => Val::Hex(h),
            Tok::Punct(open @ ('{' | '[' | '(')) => {
                let close = match open {
                    '{' => '}',
                    '[' => ']',
                    _ => ')',
                };
                let mut items = Vec::new();
                loop {
                    if self.eat_punct(close) {
                        break;
                    }
                    let item = self.value()?;
                    if let Val::List(mut rep) = item {
                        if rep.len() == 1 && matches!(rep[0], Val::Repeat(..)) {
                            if let Val::Repeat(v, n) = rep.pop().unwrap() {
                                for _ in 0..n {
                                    items.push((*v).clone());
                                }
                            }
                        } else {
                            items.push(Val::List(rep));
                        }
                    } else if let Val::Repeat(v, n) = item {
                        for _ in 0..n {
                            items.push((*v).clone());
                        }
                    } else {
                        items.push(item);
                    }
                    if self.eat_punct(close) {
                        break;
                    }
                    self.expect_punct(',')?;
                }
                return Ok(Val::List(items));
            }
            other => {
                return Err(self.error(format!("expected a value, found {}", describe(&other))))
            }
        };
        if self.is_punct('*') && !matches!(v, Val::Str(_)) {
            self.next();
            let n = self.small_uint()?;
            return Ok(Val::Repeat(Box::new(v), n));
        }
        Ok(v)
    }
}

/// Applies `[...]` to a parameter: a typedef'd array is wrapped whole; otherwise brackets go
/// to the innermost element, as Panda3D nests C-style dimensions.
fn append_array(param: Param, sizes: Vec<(u32, u32)>) -> Param {
    match param.ty {
        Type::Array {
            element,
            sizes: outer,
        } if param.typedef.is_none() => {
            let inner = append_array(*element, sizes);
            Param {
                ty: Type::Array {
                    element: Box::new(inner),
                    sizes: outer,
                },
                ..param
            }
        }
        _ => {
            let name = param.name.clone();
            let mut element = param;
            element.name.clear();
            let default = None;
            Param {
                name,
                ty: Type::Array {
                    element: Box::new(element),
                    sizes,
                },
                typedef: None,
                default,
                keywords: Vec::new(),
            }
        }
    }
}

/// Range limits a type can hold, as Panda3D checks them.
fn check_ranges(s: &Simple) -> Result<(), String> {
    check_simple(s)
}

pub(crate) fn check_simple(s: &Simple) -> Result<(), String> {
    let bits: Option<(bool, u32)> = match s.st {
        St::Int8 | St::Int8Array => Some((true, 8)),
        St::Int16 | St::Int16Array => Some((true, 16)),
        St::Int32 | St::Int32Array => Some((true, 32)),
        St::UInt8 | St::UInt8Array | St::Char => Some((false, 8)),
        St::UInt16 | St::UInt16Array | St::String | St::Blob => Some((false, 16)),
        St::UInt32 | St::UInt32Array | St::Blob32 => Some((false, 32)),
        _ => None,
    };
    if let Some((signed, b)) = bits {
        for &(lo, hi) in s.int_ranges() {
            for v in [lo, hi] {
                let ok = if signed {
                    v >= -(1i64 << (b - 1)) && v < (1i64 << (b - 1))
                } else {
                    v >= 0 && (v as u64) < (1u64 << b)
                };
                if !ok {
                    return Err("inappropriate range for type".into());
                }
            }
        }
        if let Some(m) = s.modulus {
            let scaled = ((m * s.divisor as f64) + 0.5).floor() as i64;
            let limit: i64 = if signed { 1i64 << (b - 1) } else { 1i64 << b };
            if scaled > limit || scaled <= 0 {
                return Err("invalid modulus".into());
            }
        }
    } else if matches!(s.st, St::UInt32UInt8Array) && !s.ranges.is_empty() {
        return Err("inappropriate range for type".into());
    }
    Ok(())
}

pub(crate) fn describe(t: &Tok) -> String {
    match t {
        Tok::Ident(s) => format!("'{s}'"),
        Tok::UInt(v) => format!("number {v}"),
        Tok::SInt(v) => format!("number {v}"),
        Tok::Real(v) => format!("number {v}"),
        Tok::Str(_) => "a string".into(),
        Tok::Hex(_) => "a hex string".into(),
        Tok::Punct(c) => format!("'{c}'"),
        Tok::Eof => "end of file".into(),
    }
}

/// A parameter of type `ty` with no name, typedef, default or keywords.
fn unnamed(ty: Type) -> Param {
    Param {
        name: String::new(),
        ty,
        typedef: None,
        default: None,
        keywords: Vec::new(),
    }
}

/// A switch's members while it is read: each case points at one set; cases that fall
/// through share it (Panda3D semantics).
#[derive(Default)]
struct SwitchSets {
    /// Each set starts with the key parameter.
    sets: Vec<Vec<Param>>,
    /// Each case's packed key value and its set.
    case_set: Vec<(Vec<u8>, usize)>,
    default_set: Option<usize>,
    /// The sets members are added to now (the cases since the last `break`).
    current: Vec<usize>,
    /// Whether a member was added since the last case label.
    fields_added: bool,
}

impl SwitchSets {
    /// A `case` or `default` label: a new set, unless it falls through from a label with no
    /// members yet.
    fn start_case(&mut self, key: &Param) -> usize {
        let idx = if self.current.is_empty() || self.fields_added {
            self.sets.push(vec![key.clone()]);
            self.current.push(self.sets.len() - 1);
            self.sets.len() - 1
        } else {
            *self.current.last().unwrap()
        };
        self.fields_added = false;
        idx
    }

    fn finish(self, name: String, key: Param) -> Switch {
        let sets = self.sets;
        let cases = self
            .case_set
            .into_iter()
            .map(|(b, s)| (b, sets[s].clone()))
            .collect();
        let default = self.default_set.map(|s| sets[s].clone());
        Switch {
            name,
            key,
            cases,
            default,
        }
    }
}
