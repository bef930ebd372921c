//! rc's patterns: `*`, `?` and `[class]` (with `a-z` ranges and `[~...]` for the
//! complement), used by `~`, `switch` and file name globbing.
//!
//! A pattern is in "marked" form: pattern characters that were typed unquoted are
//! preceded by [`GLOB`]; every other character, `\u{1}\u{1}` included as a literal
//! `\u{1}`, stands for itself.

use crate::lex::GLOB;

/// Whether `s` matches the marked pattern `pat`.
pub fn pmatch(pat: &str, s: &str) -> bool {
    if !pat.contains(GLOB) {
        return pat == s;
    }
    match_direct(pat, s)
}

/// One element of a marked pattern, read in place.
enum E {
    Char(char),
    Any,
    Star,
    /// A class: its body (after `[` and any `~`, before the closing `]`) and whether
    /// it is complemented.
    Class(usize, usize, bool),
    /// A class with no end: the pattern matches nothing.
    Bad,
}

/// The element of `p` at byte `i`, and where the next one starts.
fn elem(p: &str, i: usize) -> Option<(E, usize)> {
    let mut it = p[i..].chars();
    let c = it.next()?;
    if c != GLOB {
        return Some((E::Char(c), i + c.len_utf8()));
    }
    let Some(m) = it.next() else {
        // A mark at the very end stands for nothing.
        return None;
    };
    let j = i + GLOB.len_utf8() + m.len_utf8();
    Some(match m {
        '*' => (E::Star, j),
        '?' => (E::Any, j),
        '[' => {
            let neg = p[j..].starts_with('~');
            let start = if neg { j + 1 } else { j };
            // The class runs to the first `]` that is not the end of a range.
            let mut k = start;
            let mut chars = p[start..].chars();
            loop {
                let Some(lo) = chars.next() else {
                    return Some((E::Bad, p.len()));
                };
                if lo == ']' {
                    return Some((E::Class(start, k, neg), k + 1));
                }
                k += lo.len_utf8();
                if p[k..].starts_with('-') {
                    chars.next();
                    k += 1;
                    let Some(hi) = chars.next() else {
                        return Some((E::Bad, p.len()));
                    };
                    k += hi.len_utf8();
                }
            }
        }
        x => (E::Char(x), j),
    })
}

/// Whether `c` is in the class body `b` (ranges either way round).
fn class_has(b: &str, c: char) -> bool {
    let mut it = b.chars().peekable();
    while let Some(lo) = it.next() {
        let mut hi = lo;
        if it.peek() == Some(&'-') {
            it.next();
            hi = it.next().unwrap_or(lo);
        }
        if lo.min(hi) <= c && c <= lo.max(hi) {
            return true;
        }
    }
    false
}

/// Match without building anything: the pattern is read as it is matched, and a
/// mismatch goes back to just after the last `*`, which then takes one more character.
fn match_direct(p: &str, s: &str) -> bool {
    let (mut pi, mut si) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    loop {
        let here = s[si..].chars().next();
        let step = match elem(p, pi) {
            Some((E::Star, np)) => {
                star = Some((np, si));
                pi = np;
                continue;
            }
            Some((E::Bad, _)) => return false,
            None => {
                if here.is_none() {
                    return true;
                }
                None
            }
            Some((e, np)) => match (e, here) {
                (E::Char(x), Some(c)) if x == c => Some((np, c)),
                (E::Any, Some(c)) => Some((np, c)),
                (E::Class(a, b, neg), Some(c)) if class_has(&p[a..b], c) != neg => Some((np, c)),
                _ => None,
            },
        };
        match step {
            Some((np, c)) => {
                pi = np;
                si += c.len_utf8();
            }
            None => {
                let Some((sp, ss)) = star else { return false };
                let Some(c) = s[ss..].chars().next() else {
                    return false;
                };
                star = Some((sp, ss + c.len_utf8()));
                pi = sp;
                si = ss + c.len_utf8();
            }
        }
    }
}

/// Whether a marked word has active pattern characters.
pub fn is_pattern(w: &str) -> bool {
    let mut it = w.chars();
    while let Some(c) = it.next() {
        if c == GLOB {
            if let Some('*' | '?' | '[') = it.next() {
                return true;
            }
        }
    }
    false
}

/// Expand a marked word against the file system: the sorted matching names, or nothing.
/// `/` is matched only literally; names starting with `.` match only a pattern that
/// starts with `.` or a `*`/`?` (rc matches dot files with `*`), and `.` and `..` only
/// a literal `.`.
pub fn glob(pat: &str) -> Vec<String> {
    let comps: Vec<&str> = pat.split('/').collect();
    let mut results: Vec<String> = vec![String::new()];
    let absolute = pat.starts_with('/');
    for (i, comp) in comps.iter().enumerate() {
        let last = i + 1 == comps.len();
        let mut next = Vec::new();
        if i == 0 && absolute {
            // The empty component before the leading slash.
            results = vec!["/".to_string()];
            continue;
        }
        if comp.is_empty() {
            for r in &results {
                if !r.ends_with('/') {
                    next.push(format!("{r}/"));
                } else {
                    next.push(r.clone());
                }
            }
            results = next;
            continue;
        }
        if !is_pattern(comp) {
            let lit = crate::lex::unglob(comp);
            for r in &results {
                let cand = format!("{r}{lit}");
                if last {
                    if std::fs::symlink_metadata(&cand).is_ok() {
                        next.push(cand);
                    }
                } else {
                    next.push(format!("{cand}/"));
                }
            }
        } else {
            for r in &results {
                let dir = if r.is_empty() { "." } else { r.as_str() };
                let Ok(rd) = std::fs::read_dir(dir) else {
                    continue;
                };
                let mut names: Vec<String> = rd
                    .filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect();
                names.sort();
                for n in names {
                    if match_direct(comp, &n) {
                        let cand = format!("{r}{n}");
                        if last {
                            next.push(cand);
                        } else if std::fs::metadata(&cand).is_ok_and(|m| m.is_dir()) {
                            next.push(format!("{cand}/"));
                        }
                    }
                }
            }
        }
        results = next;
        if results.is_empty() {
            break;
        }
    }
    let mut out: Vec<String> = results
        .into_iter()
        .map(|r| {
            if r.len() > 1 && r.ends_with('/') && !pat.ends_with('/') {
                r[..r.len() - 1].to_string()
            } else {
                r
            }
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str) -> String {
        // Mark every pattern character, as the lexer does for unquoted ones.
        let mut s = String::new();
        for c in p.chars() {
            if "*?[".contains(c) {
                s.push(GLOB);
            }
            s.push(c);
        }
        s
    }

    #[test]
    fn patterns() {
        assert!(pmatch(&m("a*"), "abc"));
        assert!(pmatch(&m("*"), ""));
        assert!(!pmatch(&m("a?"), "a"));
        assert!(pmatch(&m("[a-c]x"), "bx"));
        assert!(!pmatch(&m("[~a-c]x"), "bx"));
        assert!(pmatch(&m("[~a-c]x"), "dx"));
        assert!(pmatch(&m("*.c"), "x.c"));
        assert!(!pmatch(&m("*.c"), "x.h"));
        assert!(pmatch(&m("a*b*c"), "aXbYbc"));
        // Unmarked pattern characters are literal.
        assert!(pmatch("a*", "a*"));
        assert!(!pmatch("a*", "ab"));
        // As plan9port: a class ends at the first `]`, ranges go either way round,
        // and a class with no end matches nothing.
        assert!(!pmatch(&m("[]a]"), "]"));
        assert!(pmatch(&m("[z-a]"), "q"));
        assert!(!pmatch(&m("[a-]"), "-"));
        assert!(!pmatch(&m("[x"), "[x"));
    }

    #[test]
    fn globbing() {
        let t = tempfile::tempdir().unwrap();
        for f in ["a.c", "b.c", ".hidden", "d/e.c"] {
            let p = t.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, "").unwrap();
        }
        let base = t.path().to_str().unwrap();
        let g = |p: &str| glob(&format!("{base}/{}", m(p)));
        assert_eq!(g("*.c"), vec![format!("{base}/a.c"), format!("{base}/b.c")]);
        assert_eq!(g("*/*.c"), vec![format!("{base}/d/e.c")]);
        assert!(g("*").contains(&format!("{base}/.hidden")));
        assert!(g("nomatch*").is_empty());
    }
}
