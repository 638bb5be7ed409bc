//! Splits DC source into tokens with their line and column; comments and whitespace vanish.
//! A '-' directly followed by a digit starts a negative number, as in Panda3D's lexer.

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Ident(String),
    /// Unsigned integer literal (decimal, hex or octal).
    UInt(u64),
    /// Negative integer literal.
    SInt(i64),
    Real(f64),
    /// A double- or single-quoted string (escapes resolved).
    Str(Vec<u8>),
    /// `<hex digits>`.
    Hex(Vec<u8>),
    Punct(char),
    Eof,
}

#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub tok: Tok,
    pub line: usize,
    pub col: usize,
}

pub(crate) struct LexError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

fn err(line: usize, col: usize, m: &str) -> LexError {
    LexError {
        line,
        col,
        message: m.to_string(),
    }
}

pub(crate) fn lex(src: &str) -> Result<Vec<Token>, LexError> {
    let mut lx = Lexer {
        src,
        b: src.as_bytes(),
        i: 0,
        line: 1,
        line_start: 0,
    };
    let mut out = Vec::new();
    while lx.i < lx.b.len() {
        if lx.skip_trivia()? {
            continue;
        }
        let col = lx.i - lx.line_start + 1;
        let tok = lx.token(col)?;
        // The line after the token (a hex string may span lines).
        out.push(Token {
            tok,
            line: lx.line,
            col,
        });
    }
    let col = lx.b.len() - lx.line_start + 1;
    out.push(Token {
        tok: Tok::Eof,
        line: lx.line,
        col,
    });
    Ok(out)
}

/// The lexer's place in the source: byte offset, line, and where that line starts.
struct Lexer<'a> {
    src: &'a str,
    b: &'a [u8],
    i: usize,
    line: usize,
    line_start: usize,
}

impl Lexer<'_> {
    /// Skips one newline, whitespace byte or comment; false if none starts here.
    fn skip_trivia(&mut self) -> Result<bool, LexError> {
        let (b, c) = (self.b, self.b[self.i]);
        if c == b'\n' {
            self.line += 1;
            self.i += 1;
            self.line_start = self.i;
        } else if c.is_ascii_whitespace() {
            self.i += 1;
        } else if c == b'/' && b.get(self.i + 1) == Some(&b'/') {
            while self.i < b.len() && b[self.i] != b'\n' {
                self.i += 1;
            }
        } else if c == b'/' && b.get(self.i + 1) == Some(&b'*') {
            self.skip_block_comment()?;
        } else {
            return Ok(false);
        }
        Ok(true)
    }

    /// `/* ... */`, counting the lines it spans.
    fn skip_block_comment(&mut self) -> Result<(), LexError> {
        let b = self.b;
        let (sl, sc) = (self.line, self.i - self.line_start + 1);
        self.i += 2;
        loop {
            if self.i + 1 >= b.len() {
                return Err(err(sl, sc, "unterminated comment"));
            }
            if b[self.i] == b'\n' {
                self.line += 1;
                self.line_start = self.i + 1;
            }
            if b[self.i] == b'*' && b[self.i + 1] == b'/' {
                self.i += 2;
                return Ok(());
            }
            self.i += 1;
        }
    }

    /// The token starting at `i` (column `col`).
    fn token(&mut self, col: usize) -> Result<Tok, LexError> {
        let (b, i) = (self.b, self.i);
        let c = b[i];
        let digit_next = b.get(i + 1).is_some_and(|d| d.is_ascii_digit());
        if c.is_ascii_alphabetic() || c == b'_' {
            while self.i < b.len() && (b[self.i].is_ascii_alphanumeric() || b[self.i] == b'_') {
                self.i += 1;
            }
            Ok(Tok::Ident(self.src[i..self.i].to_string()))
        } else if c.is_ascii_digit() || ((c == b'-' || c == b'.') && digit_next) {
            self.number(col)
        } else if c == b'"' || c == b'\'' {
            self.string(col)
        } else if c == b'<' {
            self.hex_string_or_angle(col)
        } else if b"{}()[];:,=/%*.-<>".contains(&c) {
            self.i += 1;
            Ok(Tok::Punct(c as char))
        } else {
            let ch = self.src[i..].chars().next().unwrap_or('?');
            Err(err(self.line, col, &format!("unexpected character {ch:?}")))
        }
    }

    /// A number: hex, octal or decimal integer, or a real; a leading '-' makes it negative.
    fn number(&mut self, col: usize) -> Result<Tok, LexError> {
        let b = self.b;
        let neg = b[self.i] == b'-';
        if neg {
            self.i += 1;
        }
        if b[self.i] == b'0' && matches!(b.get(self.i + 1), Some(b'x') | Some(b'X')) {
            self.i += 2;
            let hs = self.i;
            while self.i < b.len() && b[self.i].is_ascii_hexdigit() {
                self.i += 1;
            }
            let v = u64::from_str_radix(&self.src[hs..self.i], 16)
                .map_err(|_| err(self.line, col, "invalid hex number"))?;
            if neg {
                Ok(Tok::SInt(-(v as i128) as i64))
            } else {
                Ok(Tok::UInt(v))
            }
        } else {
            self.decimal(neg, col)
        }
    }

    /// A decimal or octal integer, or a real with a fraction or an exponent.
    fn decimal(&mut self, neg: bool, col: usize) -> Result<Tok, LexError> {
        let (b, line) = (self.b, self.line);
        let ds = self.i;
        let skip_digits = |i: &mut usize| {
            while *i < b.len() && b[*i].is_ascii_digit() {
                *i += 1;
            }
        };
        skip_digits(&mut self.i);
        let mut i = self.i;
        let mut real = false;
        if i < b.len() && b[i] == b'.' && b.get(i + 1).is_some_and(|d| d.is_ascii_digit()) {
            real = true;
            i += 1;
            skip_digits(&mut i);
        }
        if i < b.len()
            && (b[i] == b'e' || b[i] == b'E')
            && (b.get(i + 1).is_some_and(|d| d.is_ascii_digit())
                || (matches!(b.get(i + 1), Some(b'-') | Some(b'+'))
                    && b.get(i + 2).is_some_and(|d| d.is_ascii_digit())))
        {
            real = true;
            i += 2;
            skip_digits(&mut i);
        }
        self.i = i;
        let text = &self.src[ds..i];
        if real {
            let v: f64 = text.parse().map_err(|_| err(line, col, "invalid number"))?;
            return Ok(Tok::Real(if neg { -v } else { v }));
        }
        let v: u64 = if text.len() > 1 && text.starts_with('0') {
            u64::from_str_radix(&text[1..], 8)
                .map_err(|_| err(line, col, "invalid octal number"))?
        } else {
            text.parse()
                .map_err(|_| err(line, col, "number out of range"))?
        };
        if neg {
            if v > i64::MAX as u64 + 1 {
                return Err(err(line, col, "number out of range"));
            }
            Ok(Tok::SInt((-(v as i128)) as i64))
        } else {
            Ok(Tok::UInt(v))
        }
    }

    /// A double- or single-quoted string on one line, escapes resolved.
    fn string(&mut self, col: usize) -> Result<Tok, LexError> {
        let b = self.b;
        let q = b[self.i];
        self.i += 1;
        let mut s = Vec::new();
        loop {
            if self.i >= b.len() || b[self.i] == b'\n' {
                return Err(err(self.line, col, "unterminated string"));
            }
            let ch = b[self.i];
            self.i += 1;
            if ch == q {
                return Ok(Tok::Str(s));
            }
            if ch == b'\\' {
                s.push(self.escape(col)?);
            } else {
                s.push(ch);
            }
        }
    }

    /// The byte an escape stands for (`i` is just past the backslash): C's letters, up to
    /// three octal digits, `\x` with up to two hex digits, else the character itself.
    fn escape(&mut self, col: usize) -> Result<u8, LexError> {
        let b = self.b;
        let e = *b
            .get(self.i)
            .ok_or_else(|| err(self.line, col, "unterminated string"))?;
        self.i += 1;
        Ok(match e {
            b'n' => b'\n',
            b't' => b'\t',
            b'r' => b'\r',
            b'a' => 7,
            b'b' => 8,
            b'f' => 12,
            b'v' => 11,
            b'0'..=b'7' => {
                let mut v = (e - b'0') as u32;
                for _ in 0..2 {
                    match b.get(self.i) {
                        Some(d @ b'0'..=b'7') => {
                            v = v * 8 + (d - b'0') as u32;
                            self.i += 1;
                        }
                        _ => break,
                    }
                }
                v as u8
            }
            b'x' => {
                let hs = self.i;
                while self.i < b.len() && b[self.i].is_ascii_hexdigit() && self.i - hs < 2 {
                    self.i += 1;
                }
                u8::from_str_radix(&self.src[hs..self.i], 16)
                    .map_err(|_| err(self.line, col, "invalid \\x escape"))?
            }
            other => other,
        })
    }

    /// `<hex digits>` (whitespace allowed inside) as bytes; else a lone '<'.
    fn hex_string_or_angle(&mut self, col: usize) -> Result<Tok, LexError> {
        let (b, i) = (self.b, self.i);
        let mut j = i + 1;
        let mut digits = Vec::new();
        while j < b.len()
            && (b[j].is_ascii_hexdigit() || b[j] == b' ' || b[j] == b'\t' || b[j] == b'\n')
        {
            if b[j].is_ascii_hexdigit() {
                digits.push(b[j]);
            }
            j += 1;
        }
        if j >= b.len() || b[j] != b'>' {
            self.i += 1;
            return Ok(Tok::Punct('<'));
        }
        if digits.len() % 2 != 0 {
            return Err(err(self.line, col, "odd number of digits in hex string"));
        }
        let bytes = digits
            .chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
            .collect();
        self.line += b[i..j].iter().filter(|&&ch| ch == b'\n').count();
        self.i = j + 1;
        Ok(Tok::Hex(bytes))
    }
}
