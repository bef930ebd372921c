//! The rules language of plumb(6): parsing.
//!
//! A rules file is a sequence of rule sets separated by blank lines (a `#` comment line
//! counts as blank). Between them may stand variable assignments `name=value` and
//! `include file` lines. A rule is `object verb argument`; see docs/plumbing.md.

use crate::regexp::Regexp;
use std::collections::HashMap;
use std::sync::Arc;
use thiserror::Error;

/// A parse error: where, and what.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{file}:{line}: {msg}")]
pub struct ParseError {
    pub file: String,
    pub line: usize,
    pub msg: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Object {
    Arg,
    Attr,
    Data,
    Dst,
    Plumb,
    Src,
    Type,
    Wdir,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Add,
    Client,
    Delete,
    Is,
    IsDir,
    IsFile,
    Matches,
    Set,
    Start,
    To,
}

impl Object {
    fn parse(s: &str) -> Option<Object> {
        Some(match s {
            "arg" => Object::Arg,
            "attr" => Object::Attr,
            "data" => Object::Data,
            "dst" => Object::Dst,
            "plumb" => Object::Plumb,
            "src" => Object::Src,
            // plumb(6): `kind` is the old name of `type`.
            "type" | "kind" => Object::Type,
            "wdir" => Object::Wdir,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Object::Arg => "arg",
            Object::Attr => "attr",
            Object::Data => "data",
            Object::Dst => "dst",
            Object::Plumb => "plumb",
            Object::Src => "src",
            Object::Type => "type",
            Object::Wdir => "wdir",
        }
    }
}

impl Verb {
    fn parse(s: &str) -> Option<Verb> {
        Some(match s {
            "add" => Verb::Add,
            "client" => Verb::Client,
            "delete" => Verb::Delete,
            "is" => Verb::Is,
            "isdir" => Verb::IsDir,
            "isfile" => Verb::IsFile,
            "matches" => Verb::Matches,
            "set" => Verb::Set,
            "start" => Verb::Start,
            "to" => Verb::To,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Verb::Add => "add",
            Verb::Client => "client",
            Verb::Delete => "delete",
            Verb::Is => "is",
            Verb::IsDir => "isdir",
            Verb::IsFile => "isfile",
            Verb::Matches => "matches",
            Verb::Set => "set",
            Verb::Start => "start",
            Verb::To => "to",
        }
    }
}

/// One rule.
#[derive(Debug)]
pub struct Rule {
    pub obj: Object,
    pub verb: Verb,
    /// The argument as written, expanded when the rule is used.
    pub arg: String,
    /// The first word of the argument with quotes removed and variables of the rules
    /// file expanded, at parse time: what `is`, `matches` and `to` use.
    pub qarg: String,
    pub re: Option<Arc<Regexp>>,
}

/// A rule set: patterns, then actions.
#[derive(Debug, Default)]
pub struct RuleSet {
    pub pats: Vec<Rule>,
    pub acts: Vec<Rule>,
    /// The `plumb to` port.
    pub port: Option<String>,
}

/// A parsed rules file.
#[derive(Debug, Default)]
pub struct Rules {
    /// Variables: name -> expanded value.
    pub vars: HashMap<String, String>,
    /// Every port named, in order of first mention.
    pub ports: Vec<String>,
    pub sets: Vec<RuleSet>,
    /// The text the rules were read from.
    pub text: String,
}

/// Where `include` looks for a file that is not where it says.
pub trait Library {
    /// The text of `name`, or None.
    fn open(&self, name: &str) -> Option<String>;
}

/// Includes from the host's files, then `$PLAN9/plumb`, then the rules built into the
/// plumber.
pub struct HostLibrary;

impl Library for HostLibrary {
    fn open(&self, name: &str) -> Option<String> {
        if let Ok(t) = std::fs::read_to_string(name) {
            return Some(t);
        }
        if name.starts_with('/') || name.starts_with("./") || name.starts_with("../") {
            return None;
        }
        if let Ok(p9) = std::env::var("PLAN9")
            && let Ok(t) = std::fs::read_to_string(format!("{p9}/plumb/{name}"))
        {
            return Some(t);
        }
        crate::defaults::file(name).map(str::to_string)
    }
}

/// The most nested includes.
const MAX_INCLUDE: usize = 10;
/// The most ports.
pub const MAX_PORTS: usize = 256;
/// The longest expansion of one word.
pub const MAX_EXPAND: usize = crate::msg::MAX_MESSAGE;

/// Names a port may not have: they are the plumber's own files.
const BAD_PORTS: &[&str] = &[".", "..", "send", "rules"];

struct Input {
    name: String,
    lines: Vec<String>,
    next: usize,
}

struct Parser<'a> {
    stack: Vec<Input>,
    lib: &'a dyn Library,
    vars: HashMap<String, String>,
    ports: Vec<String>,
}

enum Line {
    Eof,
    Blank,
    Rule(Rule),
}

/// Expand one blank-terminated word of `s` as plumb(6) does: single quotes group and
/// are removed (`''` inside them is a quote), `$name` outside quotes is replaced by
/// the value `look` gives, or left as it is if `look` has none. Returns the word and
/// the rest of `s`.
pub fn expand_word<'s>(
    s: &'s str,
    look: &mut dyn FnMut(&str) -> Option<String>,
) -> (String, &'s str) {
    let b = s.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    let mut quoting = false;
    while i < b.len() && (quoting || (b[i] != b' ' && b[i] != b'\t')) {
        if out.len() > MAX_EXPAND {
            break;
        }
        if b[i] == b'\'' {
            i += 1;
            if !quoting {
                quoting = true;
            } else if i < b.len() && b[i] == b'\'' {
                out.push('\'');
                i += 1;
            } else {
                quoting = false;
            }
            continue;
        }
        if quoting || b[i] != b'$' {
            let ch = s[i..].chars().next().unwrap_or('\0');
            out.push(ch);
            i += ch.len_utf8();
            continue;
        }
        i += 1;
        // $0..$9 are one digit; other names are letters and digits.
        let n = if i < b.len() && b[i].is_ascii_digit() {
            1
        } else {
            b[i..]
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric())
                .count()
        };
        match look(&s[i..i + n]) {
            Some(v) if n > 0 => {
                out.push_str(&v);
                i += n;
            }
            _ => out.push('$'),
        }
    }
    (out, &s[i..])
}

fn is_assignment(p: &str) -> Option<(&str, &str)> {
    let b = p.as_bytes();
    if !b.first()?.is_ascii_alphabetic() {
        return None;
    }
    let n = b.iter().take_while(|c| c.is_ascii_alphanumeric()).count();
    let rest = p[n..].trim_start_matches([' ', '\t']);
    let val = rest.strip_prefix('=')?;
    Some((&p[..n], val.trim_start_matches([' ', '\t'])))
}

impl Parser<'_> {
    fn err(&self, msg: impl Into<String>) -> ParseError {
        let (file, line) = match self.stack.last() {
            Some(i) => (i.name.clone(), i.next),
            None => ("<rules>".into(), 0),
        };
        ParseError {
            file,
            line,
            msg: msg.into(),
        }
    }

    fn push(&mut self, name: &str, text: &str) -> Result<(), ParseError> {
        if self.stack.len() > MAX_INCLUDE {
            return Err(self.err(format!("include stack too deep; max {MAX_INCLUDE}")));
        }
        self.stack.push(Input {
            name: name.into(),
            lines: text.split('\n').map(|l| l.replace('\0', "")).collect(),
            next: 0,
        });
        Ok(())
    }

    fn getline(&mut self) -> Option<String> {
        loop {
            let top = self.stack.last_mut()?;
            // A final line without newline is still a line; the empty string after
            // a final newline is not.
            let last_empty = top.lines.last().is_some_and(|l| l.is_empty());
            let n = top.lines.len() - usize::from(last_empty);
            if top.next < n {
                let l = top.lines[top.next].clone();
                top.next += 1;
                return Some(l);
            }
            if self.stack.len() == 1 {
                return None;
            }
            self.stack.pop();
        }
    }

    fn expand_parse(&self, s: &str) -> String {
        let vars = &self.vars;
        expand_word(s, &mut |n| vars.get(n).cloned()).0
    }

    fn include(&mut self, p: &str) -> Result<bool, ParseError> {
        if !p.starts_with("include") {
            return Ok(false);
        }
        let words: Vec<&str> = p.split([' ', '\t']).filter(|w| !w.is_empty()).collect();
        if words.len() < 2
            || words[0] != "include"
            || words[1].starts_with('#')
            || (words.len() > 2 && !words[2].starts_with('#'))
        {
            return Err(self.err("malformed include statement"));
        }
        let name = words[1];
        match self.lib.open(name) {
            Some(t) => {
                self.push(name, &t)?;
                Ok(true)
            }
            None => Err(self.err(format!("can't open {name} for inclusion"))),
        }
    }

    fn readrule(&mut self) -> Result<Line, ParseError> {
        loop {
            let Some(line) = self.getline() else {
                return Ok(Line::Eof);
            };
            let p = line.trim_start_matches([' ', '\t']);
            if p.is_empty() || p.starts_with('#') {
                return Ok(Line::Blank);
            }
            if self.include(p)? {
                continue;
            }
            if let Some((name, val)) = is_assignment(p) {
                let v = self.expand_parse(val);
                self.vars.insert(name.into(), v);
                return Ok(Line::Blank);
            }
            let (obj, rest) = p
                .split_once([' ', '\t'])
                .ok_or_else(|| self.err("malformed rule"))?;
            let rest = rest.trim_start_matches([' ', '\t']);
            let (verb, arg) = rest
                .split_once([' ', '\t'])
                .ok_or_else(|| self.err("malformed rule"))?;
            let arg = arg.trim_start_matches([' ', '\t']);
            if arg.is_empty() {
                return Err(self.err("malformed rule"));
            }
            let obj =
                Object::parse(obj).ok_or_else(|| self.err(format!("unknown object {obj}")))?;
            let verb = Verb::parse(verb).ok_or_else(|| self.err(format!("unknown verb {verb}")))?;
            let bad = || format!("{} not valid verb for object {}", verb.name(), obj.name());
            let ok = match obj {
                Object::Plumb => matches!(verb, Verb::To | Verb::Client | Verb::Start),
                Object::Arg => matches!(verb, Verb::IsFile | Verb::IsDir),
                Object::Attr => !matches!(verb, Verb::To | Verb::Client | Verb::Start),
                _ => !matches!(
                    verb,
                    Verb::To | Verb::Client | Verb::Start | Verb::Add | Verb::Delete
                ),
            };
            if !ok {
                return Err(self.err(bad()));
            }
            let qarg = self.expand_parse(arg);
            let re = if verb == Verb::Matches {
                Some(Arc::new(
                    Regexp::new(&qarg).map_err(|e| self.err(e.0.clone()))?,
                ))
            } else {
                None
            };
            return Ok(Line::Rule(Rule {
                obj,
                verb,
                arg: arg.trim_end_matches(['\r']).into(),
                qarg,
                re,
            }));
        }
    }

    fn add_port(&mut self, p: &str) -> Result<(), ParseError> {
        if !self.ports.iter().any(|x| x == p) {
            if self.ports.len() >= MAX_PORTS {
                return Err(self.err(format!("too many ports; max {MAX_PORTS}")));
            }
            self.ports.push(p.into());
        }
        Ok(())
    }

    /// The next rule set, or None at the end.
    fn readruleset(&mut self) -> Result<Option<RuleSet>, ParseError> {
        loop {
            let mut rs = RuleSet::default();
            let mut inrule = false;
            let mut ncmd = 0;
            loop {
                match self.readrule()? {
                    Line::Eof => break,
                    Line::Blank if inrule => break,
                    Line::Blank => continue,
                    Line::Rule(r) => {
                        inrule = true;
                        if r.obj != Object::Plumb {
                            rs.pats.push(r);
                            continue;
                        }
                        if r.verb == Verb::To {
                            if !rs.pats.is_empty() && rs.port.is_some() {
                                return Err(self.err("too many ports"));
                            }
                            if BAD_PORTS.contains(&r.qarg.as_str())
                                || r.qarg.contains('/')
                                || r.qarg.is_empty()
                            {
                                return Err(self.err(format!("illegal port name {}", r.qarg)));
                            }
                            rs.port = Some(r.qarg.clone());
                        } else {
                            ncmd += 1;
                        }
                        rs.acts.push(r);
                    }
                }
            }
            if ncmd > 1 {
                return Err(self.err("ruleset has more than one client or start action"));
            }
            if !rs.pats.is_empty() && !rs.acts.is_empty() {
                if let Some(p) = rs.port.clone() {
                    self.add_port(&p)?;
                }
                return Ok(Some(rs));
            }
            if rs.pats.is_empty() && rs.acts.is_empty() {
                return Ok(None);
            }
            if rs.acts.is_empty() || rs.port.is_none() {
                return Err(self.err("ruleset must have patterns and actions"));
            }
            // Only actions: port declarations, which must all be `plumb to`.
            if rs.acts.iter().any(|a| a.verb != Verb::To) {
                return Err(self.err("ruleset must have actions"));
            }
            for a in &rs.acts {
                let q = a.qarg.clone();
                if BAD_PORTS.contains(&q.as_str()) || q.contains('/') {
                    return Err(self.err(format!("illegal port name {q}")));
                }
                self.add_port(&q)?;
            }
        }
    }
}

/// The variables every rules file starts with.
fn initial_vars() -> HashMap<String, String> {
    let mut v = HashMap::new();
    if let Ok(p) = std::env::var("PLAN9") {
        v.insert("plan9".into(), p);
    }
    if let Ok(h) = std::env::var("home").or_else(|_| std::env::var("HOME")) {
        v.insert("home".into(), h);
    }
    v
}

impl Rules {
    /// Parse `text`, read from `name` (used in errors), with `include` served by `lib`.
    pub fn parse(name: &str, text: &str, lib: &dyn Library) -> Result<Rules, ParseError> {
        let mut p = Parser {
            stack: Vec::new(),
            lib,
            vars: initial_vars(),
            ports: Vec::new(),
        };
        p.push(name, text)?;
        let mut sets = Vec::new();
        while let Some(rs) = p.readruleset()? {
            sets.push(rs);
        }
        Ok(Rules {
            vars: p.vars,
            ports: p.ports,
            sets,
            text: text.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    struct Lib(Vec<(&'static str, &'static str)>);
    impl Library for Lib {
        fn open(&self, name: &str) -> Option<String> {
            self.0.iter().find(|x| x.0 == name).map(|x| x.1.to_string())
        }
    }

    fn parse(t: &str) -> Result<Rules, ParseError> {
        Rules::parse("test", t, &Lib(vec![]))
    }

    #[test]
    fn sets_ports_vars() {
        let r = parse(
            "# comment\nplumb to seemail\nplumb to showmail\n\nx = '[a-z]+'\ntype is text\ndata matches $x'\\.c'\nplumb to edit\nplumb client acme\n\n\
             data matches 'http://.*'\nplumb start web $0\n",
        )
        .unwrap();
        assert_eq!(r.ports, ["seemail", "showmail", "edit"]);
        assert_eq!(r.sets.len(), 2);
        assert_eq!(r.sets[0].pats[1].qarg, "[a-z]+\\.c");
        assert_eq!(r.sets[0].port.as_deref(), Some("edit"));
        assert_eq!(r.sets[1].port, None);
        assert_eq!(r.vars["x"], "[a-z]+");
    }

    #[test]
    fn errors_name_file_and_line() {
        let cases = [
            (
                "type is text\nfoo is x\nplumb to a\n",
                2,
                "unknown object foo",
            ),
            ("type frob text\nplumb to a\n", 1, "unknown verb frob"),
            ("type is\n", 1, "malformed rule"),
            ("type\n", 1, "malformed rule"),
            (
                "type is text\n\n",
                2,
                "ruleset must have patterns and actions",
            ),
            (
                "plumb to a\nplumb start x\n",
                2,
                "ruleset must have actions",
            ),
            ("type is x\nplumb to send\n", 2, "illegal port name send"),
            ("type is x\nplumb to a\nplumb to b\n", 3, "too many ports"),
            (
                "type is x\nplumb start a\nplumb client b\n",
                3,
                "ruleset has more than one client or start action",
            ),
            (
                "data add x=y\nplumb to a\n",
                1,
                "add not valid verb for object data",
            ),
            ("plumb is x\n", 1, "is not valid verb for object plumb"),
            ("data to x\n", 1, "to not valid verb for object data"),
            ("arg is x\n", 1, "is not valid verb for object arg"),
            ("data matches '('\nplumb to a\n", 1, "unmatched left paren"),
            ("include\n", 1, "malformed include statement"),
            ("include nosuch\n", 1, "can't open nosuch for inclusion"),
        ];
        for (t, line, msg) in cases {
            let e = parse(t).expect_err(t);
            assert_eq!(e.line, line, "{t:?}: {e}");
            assert!(e.msg.contains(msg), "{t:?}: {e}");
            assert_eq!(e.file, "test");
        }
    }

    #[test]
    fn include_and_its_errors() {
        let lib = Lib(vec![
            ("addrs", "addr=:[0-9]+\n"),
            ("bad", "\n\ntype wobble x\n"),
            ("loop", "include loop\n"),
        ]);
        let r = Rules::parse(
            "top",
            "include addrs\ndata matches x$addr\nplumb to e\n",
            &lib,
        )
        .unwrap();
        assert_eq!(r.sets[0].pats[0].qarg, "x:[0-9]+");
        let e = Rules::parse("top", "include bad\n", &lib).unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("bad", 3));
        let e = Rules::parse("top", "include loop\n", &lib).unwrap_err();
        assert!(e.msg.contains("include stack too deep"), "{e}");
    }

    #[test]
    fn expansion() {
        let mut look = |n: &str| match n {
            "1" => Some("one".to_string()),
            "file" => Some("/f".to_string()),
            _ => None,
        };
        assert_eq!(
            expand_word("a$1b rest", &mut look),
            ("aoneb".into(), " rest")
        );
        assert_eq!(expand_word("'$1 x'y", &mut look).0, "$1 xy");
        assert_eq!(expand_word("'it''s'", &mut look).0, "it's");
        assert_eq!(expand_word("$nope$", &mut look).0, "$nope$");
        assert_eq!(expand_word("$file:3", &mut look).0, "/f:3");
    }

    proptest! {
        #[test]
        fn any_rules_text_parses_or_errs(s in "\\PC{0,200}") {
            let _ = parse(&s);
        }

        #[test]
        fn rule_shaped_text_parses_or_errs(
            lines in proptest::collection::vec(
                "(data|type|src|dst|wdir|attr|arg|plumb|include|x=|#|) ?(is|matches|set|add|delete|isfile|isdir|to|start|client|) ?[a-z'$()\\[\\]*.0-9 ]{0,10}",
                0..12)
        ) {
            let _ = parse(&lines.join("\n"));
        }
    }
}
