//! rc's patterns: `*`, `?` and `[class]` (with `a-z` ranges and `[~...]` for the
//! complement), used by `~`, `switch` and file name globbing.
//!
//! A pattern is in "marked" form: pattern characters that were typed unquoted are
//! preceded by [`GLOB`]; every other character, `\u{1}\u{1}` included as a literal
//! `\u{1}`, stands for itself.

use crate::lex::GLOB;

/// One element of a compiled pattern.
#[derive(Debug, Clone, PartialEq)]
enum P {
    Char(char),
    Any,
    Star,
    Class {
        neg: bool,
        ranges: Vec<(char, char)>,
    },
}

/// Compile a marked pattern; `None` if it can never match (a class with no closing
/// `]`, or a range with no end, as in plan9port).
fn compile(pat: &str) -> Option<Vec<P>> {
    let cs: Vec<char> = pat.chars().collect();
    let mut out = Vec::with_capacity(cs.len());
    let mut i = 0;
    while i < cs.len() {
        if cs[i] != GLOB {
            out.push(P::Char(cs[i]));
            i += 1;
            continue;
        }
        let Some(&c) = cs.get(i + 1) else {
            // A mark at the very end stands for nothing.
            break;
        };
        i += 2;
        match c {
            '*' => {
                if out.last() != Some(&P::Star) {
                    out.push(P::Star);
                }
            }
            '?' => out.push(P::Any),
            '[' => {
                // The class runs to the first `]`; `lo-hi` is a range (either way
                // round), `~` first complements it.
                let neg = cs.get(i) == Some(&'~');
                if neg {
                    i += 1;
                }
                let mut ranges = Vec::new();
                loop {
                    let lo = *cs.get(i)?;
                    if lo == ']' {
                        i += 1;
                        break;
                    }
                    i += 1;
                    let mut hi = lo;
                    if cs.get(i) == Some(&'-') {
                        hi = *cs.get(i + 1)?;
                        i += 2;
                    }
                    ranges.push((lo.min(hi), lo.max(hi)));
                }
                out.push(P::Class { neg, ranges });
            }
            // A marked mark, or any other marked character, is itself.
            c => out.push(P::Char(c)),
        }
    }
    Some(out)
}

fn matches(p: &[P], s: &[char]) -> bool {
    // Iterative matching with backtracking to the last star.
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        let ok = match p.get(pi) {
            Some(P::Char(c)) => *c == s[si],
            Some(P::Any) => true,
            Some(P::Class { neg, ranges }) => {
                let inside = ranges.iter().any(|(lo, hi)| *lo <= s[si] && s[si] <= *hi);
                inside != *neg
            }
            Some(P::Star) => {
                star = Some((pi, si));
                pi += 1;
                continue;
            }
            None => false,
        };
        if ok {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|x| *x == P::Star)
}

/// Whether `s` matches the marked pattern `pat`.
pub fn pmatch(pat: &str, s: &str) -> bool {
    if !pat.contains(GLOB) {
        return pat == s;
    }
    let Some(p) = compile(pat) else {
        return false;
    };
    let sc: Vec<char> = s.chars().collect();
    matches(&p, &sc)
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
            let Some(p) = compile(comp) else {
                results.clear();
                break;
            };
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
                    let nc: Vec<char> = n.chars().collect();
                    if matches(&p, &nc) {
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
