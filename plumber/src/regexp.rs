//! Plan 9 regular expressions (regexp(7)) on top of the `regex` crate.
//!
//! The syntax is translated: every character stands for itself except
//! `\ . * + ? ( ) | [ ] ^ $`; `\c` is the character c (`\n` a newline); `.` and a
//! negated class `[^...]` match anything but a newline; `^` and `$` match at the start
//! and end of a line; `{` and `}` are ordinary characters. Every parenthesis captures.
//!
//! Plan 9 matches leftmost-longest; the `regex` crate matches leftmost-first. The
//! difference matters only for where a match ends when it starts at a given place
//! (`a|ab` on `ab`), and for which text the subexpressions take. Matches here are
//! leftmost-longest: the leftmost start comes from `regex`, the longest end from a lazy
//! DFA that reports every match (regex-automata's `MatchKind::All`). Subexpressions are
//! then taken by `regex` within that span, so in an ambiguous expression they may
//! differ from Plan 9's (see docs/plumbing.md).

use regex::bytes::Regex;
use regex_automata::hybrid::dfa::{Cache, DFA};
use regex_automata::{Anchored, Input, MatchKind};
use std::sync::Mutex;
use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{0}")]
pub struct RegexpError(pub String);

/// The spans of `$0`..`$9`, as byte offsets; `None` for a subexpression that took no
/// part.
pub type Spans = Vec<Option<(usize, usize)>>;

/// A compiled Plan 9 regular expression.
pub struct Regexp {
    source: String,
    /// The whole text must match.
    full: Regex,
    /// Unanchored, for the leftmost start.
    find: Regex,
    /// Anchored at a start, for the longest end.
    longest: DFA,
    cache: Mutex<Cache>,
}

impl std::fmt::Debug for Regexp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Regexp({:?})", self.source)
    }
}

fn push_lit(out: &mut String, c: char) {
    let mut b = [0u8; 4];
    out.push_str(&regex::escape(c.encode_utf8(&mut b)));
}

fn push_class_char(out: &mut String, c: char) {
    if matches!(c, '\\' | '[' | ']' | '^' | '-' | '&' | '~') {
        out.push('\\');
        out.push(c);
    } else if c == '\n' {
        out.push_str("\\n");
    } else {
        out.push(c);
    }
}

/// Translate Plan 9 syntax to the `regex` crate's.
pub fn translate(re: &str) -> Result<String, RegexpError> {
    let mut out = String::with_capacity(re.len() * 2);
    let mut it = re.chars().peekable();
    let mut depth = 0usize;
    while let Some(c) = it.next() {
        match c {
            '\\' => match it.next() {
                Some('n') => out.push_str("\\n"),
                Some(d) => push_lit(&mut out, d),
                None => return Err(RegexpError("trailing \\ in regexp".into())),
            },
            '.' => out.push_str("[^\\n]"),
            '(' => {
                depth += 1;
                out.push('(');
            }
            ')' => {
                if depth == 0 {
                    return Err(RegexpError("unmatched right paren".into()));
                }
                depth -= 1;
                out.push(')');
            }
            '*' | '+' | '?' | '|' | '^' | '$' => out.push(c),
            '[' => {
                let mut items: Vec<(char, char)> = Vec::new();
                let negate = it.peek() == Some(&'^');
                if negate {
                    it.next();
                }
                let mut closed = false;
                while let Some(c) = it.next() {
                    let lo = match c {
                        ']' => {
                            closed = true;
                            break;
                        }
                        '\\' => match it.next() {
                            Some('n') => '\n',
                            Some(d) => d,
                            None => break,
                        },
                        c => c,
                    };
                    if it.peek() == Some(&'-') {
                        let mut ahead = it.clone();
                        ahead.next();
                        match ahead.peek() {
                            Some(']') | None => items.push((lo, lo)),
                            Some(_) => {
                                it.next();
                                let hi = match it.next() {
                                    Some('\\') => match it.next() {
                                        Some('n') => '\n',
                                        Some(d) => d,
                                        None => break,
                                    },
                                    Some(d) => d,
                                    None => break,
                                };
                                if hi < lo {
                                    return Err(RegexpError("bad range in char class".into()));
                                }
                                items.push((lo, hi));
                                continue;
                            }
                        }
                    } else {
                        items.push((lo, lo));
                    }
                }
                if !closed {
                    return Err(RegexpError("malformed '[]'".into()));
                }
                if items.is_empty() {
                    return Err(RegexpError("empty char class".into()));
                }
                out.push('[');
                if negate {
                    out.push_str("^\\n");
                }
                for (lo, hi) in items {
                    push_class_char(&mut out, lo);
                    if hi != lo {
                        out.push('-');
                        push_class_char(&mut out, hi);
                    }
                }
                out.push(']');
            }
            ']' => push_lit(&mut out, c),
            c => push_lit(&mut out, c),
        }
    }
    if depth != 0 {
        return Err(RegexpError("unmatched left paren".into()));
    }
    Ok(out)
}

fn rerr(e: impl std::fmt::Display) -> RegexpError {
    // The regex crate's messages run to several lines; keep the last, which says what.
    let s = e.to_string();
    let line = s
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("bad regexp")
        .trim()
        .trim_start_matches("error: ")
        .to_string();
    RegexpError(format!("bad regexp: {line}"))
}

const SIZE_LIMIT: usize = 4 << 20;

impl Regexp {
    pub fn new(re: &str) -> Result<Regexp, RegexpError> {
        let t = translate(re)?;
        let build = |p: String| {
            regex::bytes::RegexBuilder::new(&p)
                .size_limit(SIZE_LIMIT)
                .build()
                .map_err(rerr)
        };
        let full = build(format!("(?m)\\A(?:{t})\\z"))?;
        let find = build(format!("(?m){t}"))?;
        let longest = DFA::builder()
            .configure(
                DFA::config()
                    .match_kind(MatchKind::All)
                    .cache_capacity(1 << 20),
            )
            .syntax(regex_automata::util::syntax::Config::new().multi_line(true))
            .thompson(regex_automata::nfa::thompson::Config::new().nfa_size_limit(Some(SIZE_LIMIT)))
            .build(&format!("(?:{t})"))
            .map_err(rerr)?;
        let cache = Mutex::new(longest.create_cache());
        Ok(Regexp {
            source: re.into(),
            full,
            find,
            longest,
            cache,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Match the whole of `text`; the spans of `$0`..`$9`.
    pub fn full_match(&self, text: &[u8]) -> Option<Spans> {
        let c = self.full.captures(text)?;
        Some(spans(&c, 0))
    }

    /// The longest match starting exactly at `at`, leftmost-longest as Plan 9 has it.
    fn longest_end(&self, hay: &[u8], at: usize, fallback: usize) -> usize {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let input = Input::new(hay).range(at..).anchored(Anchored::Yes);
        match self.longest.try_search_fwd(&mut cache, &input) {
            Ok(Some(hm)) => hm.offset().max(fallback),
            _ => fallback,
        }
    }

    /// The leftmost-longest match in `hay`: its spans.
    pub fn find(&self, hay: &[u8]) -> Option<Spans> {
        let m = self.find.find(hay)?;
        let end = self.longest_end(hay, m.start(), m.end());
        let inner = &hay[m.start()..end];
        match self.full.captures(inner) {
            Some(c) => Some(spans(&c, m.start())),
            None => {
                // The span's edges read differently out of context (a `$` that
                // matched before a newline); take regex's own match instead.
                let c = self.find.captures_at(hay, m.start())?;
                Some(spans(&c, 0))
            }
        }
    }

    /// plumber(4)'s click rule: starting at each character up to the click, the
    /// leftmost-longest match; the first that contains or abuts the click (a rune
    /// offset into `text`) wins. Spans are byte offsets into `text`.
    pub fn click_match(&self, text: &[u8], click: usize) -> Option<Spans> {
        let clickb = char_to_byte(text, click);
        let mut i = 0;
        while i <= clickb {
            if let Some(mut s) = self.find(&text[i..]) {
                for x in s.iter_mut().flatten() {
                    x.0 += i;
                    x.1 += i;
                }
                if let Some((a, b)) = s[0]
                    && a <= clickb
                    && clickb <= b
                {
                    return Some(s);
                }
            }
            if i == text.len() {
                break;
            }
            i += utf8_len(text[i]);
            i = i.min(text.len());
        }
        None
    }
}

fn spans(c: &regex::bytes::Captures<'_>, base: usize) -> Spans {
    (0..c.len().min(10))
        .map(|i| c.get(i).map(|m| (m.start() + base, m.end() + base)))
        .collect()
}

fn utf8_len(b: u8) -> usize {
    match b {
        0xF0..=0xF7 => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

/// The byte offset of rune `n` in `text` (its end if shorter).
pub fn char_to_byte(text: &[u8], n: usize) -> usize {
    let mut i = 0;
    for _ in 0..n {
        if i >= text.len() {
            break;
        }
        i += utf8_len(text[i]);
    }
    i.min(text.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(re: &str, t: &str) -> bool {
        Regexp::new(re).unwrap().full_match(t.as_bytes()).is_some()
    }

    #[test]
    fn plan9_syntax() {
        assert!(m("a{2}", "a{2}"), "braces are ordinary");
        assert!(!m("a{2}", "aa"));
        assert!(m("[.a-z\\-]+", "a-b.c"));
        assert!(m("[^a]", "b"));
        assert!(!m("[^a]", "\n"), "a negated class does not match newline");
        assert!(!m(".", "\n"));
        assert!(m("\\.h", ".h"));
        assert!(m("\\n", "\n"));
        assert!(m("[&~]+", "&~&"));
        assert!(m("[[]", "["));
        assert!(m("(a|b)*c", "abac"));
        assert!(m("x$", "x"));
        assert!(m("[a-]", "-"));
        assert!(m("[¡-￿]+", "éü"));
    }

    #[test]
    fn errors() {
        for bad in ["(", ")", "[", "[]", "*a", "\\", "[z-a]", "a**"] {
            let r = Regexp::new(bad);
            if bad == "a**" {
                // Plan 9 accepts a repeated star; so does regex.
                assert!(r.is_ok());
                continue;
            }
            assert!(r.is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn leftmost_longest() {
        let r = Regexp::new("a|ab").unwrap();
        assert_eq!(r.find(b"xab").unwrap()[0], Some((1, 3)));
        let r = Regexp::new("(foo|foobar)(.*)").unwrap();
        assert_eq!(r.find(b"foobar").unwrap()[0], Some((0, 6)));
    }

    #[test]
    fn ambiguous_subexpressions_follow_regex() {
        // Documented in docs/plumbing.md.
        let r = Regexp::new("(a|ab)(b*)").unwrap();
        let s = r.full_match(b"abb").unwrap();
        assert_eq!((s[1], s[2]), (Some((0, 1)), Some((1, 3))));
    }

    #[test]
    fn click_expands_to_the_match_around_it() {
        let r = Regexp::new("[a-z]+\\.c(:[0-9]+)?").unwrap();
        let t = b"see main.c:42 for it";
        let s = r.click_match(t, 6).unwrap();
        assert_eq!(s[0], Some((4, 13)));
        assert_eq!(s[1], Some((10, 13)));
        assert!(r.click_match(t, 1).is_none(), "no match holds the click");
        // Abutting the end counts.
        assert_eq!(r.click_match(t, 13).unwrap()[0], Some((4, 13)));
        // Rune offsets, not bytes.
        let r = Regexp::new("[a-z]+").unwrap();
        let t = "ééé abc".as_bytes();
        assert_eq!(r.click_match(t, 5).unwrap()[0], Some((7, 10)));
    }

    proptest! {
        #[test]
        fn any_pattern_compiles_or_errs(s in "\\PC{0,24}") {
            if let Ok(r) = Regexp::new(&s) {
                let _ = r.click_match(b"some text: a(b)c [x] 12", 5);
                let _ = r.full_match(b"");
            }
        }

        #[test]
        fn regexp_chars_never_panic(s in "[\\\\.*+?()|\\[\\]^$a-c{}-]{0,16}") {
            if let Ok(r) = Regexp::new(&s) {
                let _ = r.find(b"abc[]{}-\n^$");
            }
        }
    }
}
