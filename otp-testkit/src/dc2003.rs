//! The 2003 client's field numbers read straight from DC text, as an oracle independent of
//! otp-dc: tests and the fuzz harnesses take the client's side of the wire from here.

/// The 2003 client's field numbers, read from the DC text here (not by otp-dc):
/// the DC parser of 2003 numbered a class's fields by their place along its first parent's
/// chain, the parent's fields first. Returns (class, field) -> number for every class.
/// Reads what the project's DC files use: `dclass Name : Parent, ... { field...; };`.
pub fn client_numbers_2003(text: &str) -> std::collections::HashMap<(String, String), u16> {
    // Comments out, then split at braces and semicolons.
    let mut clean = String::new();
    for line in text.lines() {
        clean.push_str(line.split("//").next().unwrap_or(""));
        clean.push('\n');
    }
    let mut own: Vec<(String, Option<String>, Vec<String>)> = Vec::new();
    let mut rest = clean.as_str();
    while let Some(at) = rest.find("dclass ") {
        rest = &rest[at + 7..];
        let open = rest.find('{').unwrap();
        // The class ends at the first `}` outside parentheses (defaults such as `= {}` sit
        // inside them); the `;` after it is optional.
        let mut depth = 0i32;
        let close = open
            + rest[open..]
                .char_indices()
                .find(|&(_, ch)| {
                    match ch {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    ch == '}' && depth == 0
                })
                .unwrap()
                .0;
        let head = &rest[..open];
        let mut parts = head.splitn(2, ':');
        let name = parts.next().unwrap().trim().to_string();
        let parent = parts
            .next()
            .map(|p| p.split(',').next().unwrap().trim().to_string());
        let fields = rest[open + 1..close]
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.split(|c: char| c == '(' || c == ':' || c.is_whitespace())
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect();
        own.push((name, parent, fields));
        rest = &rest[close + 1..];
    }
    let mut out = std::collections::HashMap::new();
    for (name, _, _) in &own {
        let mut chain = vec![name.clone()];
        while let Some(p) = own
            .iter()
            .find(|c| &c.0 == chain.last().unwrap())
            .and_then(|c| c.1.clone())
        {
            chain.push(p);
        }
        let mut n = 0u16;
        for class in chain.iter().rev() {
            for f in &own.iter().find(|c| &c.0 == class).unwrap().2 {
                out.insert((name.clone(), f.clone()), n);
                n += 1;
            }
        }
    }
    out
}
