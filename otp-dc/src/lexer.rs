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

#[allow(clippy::too_many_lines)] // TODO(issue 21): split by what it does
pub(crate) fn lex(src: &str) -> Result<Vec<Token>, LexError> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let (mut i, mut line, mut line_start) = (0usize, 1usize, 0usize);
    let err = |line: usize, col: usize, m: &str| LexError {
        line,
        col,
        message: m.to_string(),
    };
    while i < b.len() {
        let c = b[i];
        let col = i - line_start + 1;
        if c == b'\n' {
            line += 1;
            i += 1;
            line_start = i;
            continue;
        }
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let (sl, sc) = (line, col);
            i += 2;
            loop {
                if i + 1 >= b.len() {
                    return Err(err(sl, sc, "unterminated comment"));
                }
                if b[i] == b'\n' {
                    line += 1;
                    line_start = i + 1;
                }
                if b[i] == b'*' && b[i + 1] == b'/' {
                    i += 2;
                    break;
                }
                i += 1;
            }
            continue;
        }
        let start = i;
        let tok = if c.is_ascii_alphabetic() || c == b'_' {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            Tok::Ident(src[start..i].to_string())
        } else if c.is_ascii_digit()
            || (c == b'-' && b.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
            || (c == b'.' && b.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            let neg = c == b'-';
            if neg {
                i += 1;
            }
            let ds = i;
            if b[i] == b'0' && matches!(b.get(i + 1), Some(b'x') | Some(b'X')) {
                i += 2;
                let hs = i;
                while i < b.len() && b[i].is_ascii_hexdigit() {
                    i += 1;
                }
                let v = u64::from_str_radix(&src[hs..i], 16)
                    .map_err(|_| err(line, col, "invalid hex number"))?;
                if neg {
                    Tok::SInt(-(v as i128) as i64)
                } else {
                    Tok::UInt(v)
                }
            } else {
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                let mut real = false;
                if i < b.len() && b[i] == b'.' && b.get(i + 1).is_some_and(|d| d.is_ascii_digit()) {
                    real = true;
                    i += 1;
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                }
                if i < b.len()
                    && (b[i] == b'e' || b[i] == b'E')
                    && (b.get(i + 1).is_some_and(|d| d.is_ascii_digit())
                        || (matches!(b.get(i + 1), Some(b'-') | Some(b'+'))
                            && b.get(i + 2).is_some_and(|d| d.is_ascii_digit())))
                {
                    real = true;
                    i += 2;
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                }
                let text = &src[ds..i];
                if real {
                    let v: f64 = text.parse().map_err(|_| err(line, col, "invalid number"))?;
                    Tok::Real(if neg { -v } else { v })
                } else {
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
                        Tok::SInt((-(v as i128)) as i64)
                    } else {
                        Tok::UInt(v)
                    }
                }
            }
        } else if c == b'"' || c == b'\'' {
            let q = c;
            i += 1;
            let mut s = Vec::new();
            loop {
                if i >= b.len() || b[i] == b'\n' {
                    return Err(err(line, col, "unterminated string"));
                }
                let ch = b[i];
                if ch == q {
                    i += 1;
                    break;
                }
                if ch == b'\\' {
                    i += 1;
                    let e = *b
                        .get(i)
                        .ok_or_else(|| err(line, col, "unterminated string"))?;
                    i += 1;
                    match e {
                        b'n' => s.push(b'\n'),
                        b't' => s.push(b'\t'),
                        b'r' => s.push(b'\r'),
                        b'a' => s.push(7),
                        b'b' => s.push(8),
                        b'f' => s.push(12),
                        b'v' => s.push(11),
                        b'0'..=b'7' => {
                            let mut v = (e - b'0') as u32;
                            for _ in 0..2 {
                                match b.get(i) {
                                    Some(d @ b'0'..=b'7') => {
                                        v = v * 8 + (d - b'0') as u32;
                                        i += 1;
                                    }
                                    _ => break,
                                }
                            }
                            s.push(v as u8);
                        }
                        b'x' => {
                            let hs = i;
                            while i < b.len() && b[i].is_ascii_hexdigit() && i - hs < 2 {
                                i += 1;
                            }
                            let v = u8::from_str_radix(&src[hs..i], 16)
                                .map_err(|_| err(line, col, "invalid \\x escape"))?;
                            s.push(v);
                        }
                        other => s.push(other),
                    }
                    continue;
                }
                s.push(ch);
                i += 1;
            }
            Tok::Str(s)
        } else if c == b'<' {
            // A hex string, if what follows is hex digits and whitespace up to '>'.
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
            if j < b.len() && b[j] == b'>' {
                if digits.len() % 2 != 0 {
                    return Err(err(line, col, "odd number of digits in hex string"));
                }
                let bytes = digits
                    .chunks(2)
                    .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
                    .collect();
                for &ch in &b[i..j] {
                    if ch == b'\n' {
                        line += 1;
                    }
                }
                i = j + 1;
                Tok::Hex(bytes)
            } else {
                i += 1;
                Tok::Punct('<')
            }
        } else if b"{}()[];:,=/%*.-<>".contains(&c) {
            i += 1;
            Tok::Punct(c as char)
        } else {
            let ch = src[i..].chars().next().unwrap_or('?');
            return Err(err(line, col, &format!("unexpected character {ch:?}")));
        };
        out.push(Token { tok, line, col });
    }
    let col = b.len() - line_start + 1;
    out.push(Token {
        tok: Tok::Eof,
        line,
        col,
    });
    Ok(out)
}
