//! Words of mkfile lines: split at blanks, quotes removed, `$var`, `${var}` and
//! `${var:A%B=C%D}` substituted.

use crate::shell::Kind;
use crate::{Failed, Mk, R};

/// Characters of variable names.
pub fn wordchr(c: char) -> bool {
    c > ' ' && !"!\"#$%&'()*+,-./:;<=>?@[\\]^`{|}~".contains(c)
}

fn percent(c: Option<char>) -> bool {
    matches!(c, Some('%' | '&'))
}

impl Mk {
    /// Split a string into words (always at least one, maybe empty).
    pub fn stow(&mut self, s: &str) -> R<Vec<String>> {
        let cs: Vec<char> = s.chars().collect();
        let mut i = 0;
        let mut out: Vec<String> = Vec::new();
        while i < cs.len() {
            match self.nextword(&cs, &mut i)? {
                Some(ws) => out.extend(ws),
                None => break,
            }
        }
        if out.is_empty() {
            out.push(String::new());
        }
        Ok(out)
    }

    /// One word from `cs` at `i` (a variable may make it several).
    fn nextword(&mut self, cs: &[char], i: &mut usize) -> R<Option<Vec<String>>> {
        'restart: loop {
            while *i < cs.len() && (cs[*i] == ' ' || cs[*i] == '\t') {
                *i += 1;
            }
            let mut head: Vec<String> = Vec::new();
            let mut b = String::new();
            let mut empty = true;
            while *i < cs.len() {
                let c = cs[*i];
                *i += 1;
                match c {
                    ' ' | '\t' | '\n' => break,
                    '\\' | '\'' | '"' => {
                        empty = false;
                        if !self.expandquote(cs, i, c, &mut b) {
                            let s: String = cs.iter().collect();
                            let _ = self.err(&format!("missing closing quote: {s}"));
                            return Err(Failed);
                        }
                    }
                    '$' => {
                        let w = self.varsub(cs, i)?;
                        let Some(mut w) = w else {
                            if empty {
                                continue 'restart;
                            }
                            continue;
                        };
                        empty = false;
                        if !b.is_empty() {
                            w[0] = std::mem::take(&mut b) + &w[0];
                        }
                        if let Some(t) = head.last_mut() {
                            let first = w.remove(0);
                            t.push_str(&first);
                        }
                        head.extend(w);
                    }
                    c => {
                        empty = false;
                        b.push(c);
                    }
                }
            }
            if !b.is_empty() {
                match head.last_mut() {
                    Some(t) => t.push_str(&b),
                    None => head.push(b),
                }
            }
            return Ok((!head.is_empty()).then_some(head));
        }
    }

    /// Quoted text after `q` (at `cs[*i]`), quotes removed; false if unterminated.
    fn expandquote(&self, cs: &[char], i: &mut usize, q: char, b: &mut String) -> bool {
        match self.shell.kind {
            Kind::Rc => {
                if q != '\'' {
                    b.push(q);
                    return true;
                }
                while *i < cs.len() {
                    let c = cs[*i];
                    *i += 1;
                    if c == '\'' {
                        if cs.get(*i) == Some(&'\'') {
                            *i += 1;
                        } else {
                            return true;
                        }
                    }
                    b.push(c);
                }
                false
            }
            Kind::Sh => {
                if q == '\\' {
                    if let Some(&c) = cs.get(*i) {
                        b.push(c);
                        *i += 1;
                    }
                    return true;
                }
                while *i < cs.len() {
                    let c = cs[*i];
                    *i += 1;
                    if c == q {
                        return true;
                    }
                    if c == '\\' {
                        b.push(c);
                        if let Some(&d) = cs.get(*i) {
                            *i += 1;
                            b.push(d);
                        }
                        continue;
                    }
                    b.push(c);
                }
                false
            }
        }
    }

    /// `$name`, `${name}` or `${name:A%B=C%D}` at `cs[*i]` (after the `$`): its
    /// words, or `None` for an empty variable.
    fn varsub(&mut self, cs: &[char], i: &mut usize) -> R<Option<Vec<String>>> {
        if cs.get(*i) == Some(&'{') {
            return self.expandvar(cs, i);
        }
        let Some(name) = self.varname(cs, i) else {
            return Ok(None);
        };
        Ok(self.varmatch(&name, cs, i))
    }

    fn varname(&mut self, cs: &[char], i: &mut usize) -> Option<String> {
        let start = *i;
        let mut j = *i;
        while j < cs.len() && wordchr(cs[j]) {
            j += 1;
        }
        if j == start {
            let rest: String = cs[start..].iter().collect();
            self.synerr(-1, &format!("missing variable name <{rest}>"));
            return None;
        }
        *i = j;
        Some(cs[start..j].iter().collect())
    }

    fn varmatch(&mut self, name: &str, cs: &[char], i: &mut usize) -> Option<Vec<String>> {
        if let Some(v) = self.vars.get(name) {
            if v.iter().any(|w| !w.is_empty()) {
                return Some(v.clone());
            }
        }
        while *i < cs.len() && (cs[*i] == ' ' || cs[*i] == '\t') {
            *i += 1;
        }
        None
    }

    fn expandvar(&mut self, cs: &[char], i: &mut usize) -> R<Option<Vec<String>>> {
        let begin = *i;
        *i += 1;
        let Some(name) = self.varname(cs, i) else {
            return Ok(None);
        };
        if cs.get(*i) == Some(&'}') {
            *i += 1;
            return Ok(self.varmatch(&name, cs, i));
        }
        if cs.get(*i) != Some(&':') {
            self.synerr(-1, &format!("bad variable name <{name}>"));
            return Ok(None);
        }
        *i += 1;
        let rest: String = cs[*i..].iter().collect();
        let found = match self.shell.charin(&rest, "}") {
            Ok(f) => f,
            Err(e) => {
                self.synerr(-1, &e);
                None
            }
        };
        let end = match found {
            Some(e) => e,
            None => {
                let from: String = cs[begin..].iter().collect();
                self.synerr(-1, &format!("missing '}}': {from}"));
                return Err(Failed);
            }
        };
        let spec = &rest[..end];
        *i += spec.chars().count() + 1;
        match self.vars.get(&name).filter(|v| !v.is_empty()).cloned() {
            None => Ok(Some(vec![name])),
            Some(v) => Ok(Some(self.subsub(&v, spec)?)),
        }
    }

    /// Words of `s` up to the first of `term` (not quoted); `None` if that is at once.
    fn extractpat(&mut self, s: &str, term: &str) -> R<(Option<Vec<String>>, usize)> {
        let found = match self.shell.charin(s, term) {
            Ok(f) => f,
            Err(e) => {
                self.synerr(-1, &e);
                None
            }
        };
        match found {
            Some(0) => Ok((None, 0)),
            Some(at) => Ok((Some(self.stow(&s[..at])?), at)),
            None => Ok((Some(self.stow(s)?), s.len())),
        }
    }

    /// `${var:A%B=C%D}` on each word of `v`.
    fn subsub(&mut self, v: &[String], spec: &str) -> R<Vec<String>> {
        let (a, mut cp) = self.extractpat(spec, "=%&")?;
        let mut b = None;
        let mut c = None;
        let mut d: Option<Vec<String>> = None;
        if percent(spec[cp..].chars().next()) {
            let (w, n) = self.extractpat(&spec[cp + 1..], "=")?;
            b = w;
            cp += 1 + n;
        }
        if spec[cp..].starts_with('=') {
            let (w, n) = self.extractpat(&spec[cp + 1..], "&%")?;
            c = w;
            cp += 1 + n;
        }
        let pct = percent(spec[cp..].chars().next());
        if pct {
            d = Some(self.stow(&spec[cp + 1..])?);
        } else if cp < spec.len() {
            d = Some(self.stow(&spec[cp..])?);
        }
        let mut out: Vec<String> = Vec::new();
        for s in v {
            let mut h: Vec<String> = Vec::new();
            if let Some((enda, nmid)) = submatch(s, a.as_deref(), b.as_deref()) {
                if let Some(c) = &c {
                    h = c.clone();
                }
                if pct && nmid > 0 {
                    let mid = &s[enda..enda + nmid];
                    match h.last_mut() {
                        Some(w) => w.push_str(mid),
                        None => h.push(mid.to_string()),
                    }
                }
                if let Some(d) = &d {
                    if !d[0].is_empty() {
                        match h.last_mut() {
                            Some(w) => {
                                w.push_str(&d[0]);
                                h.extend(d[1..].iter().cloned());
                            }
                            None => h = d.clone(),
                        }
                    }
                }
            }
            if h.is_empty() {
                h.push(s.clone());
            }
            out.extend(h);
        }
        Ok(out)
    }
}

/// Does `s` start with a word of `a` and end with a word of `b` (absent lists match
/// anything)? Then: where the `a` part ends, and how long the middle is.
fn submatch(s: &str, a: Option<&[String]>, b: Option<&[String]>) -> Option<(usize, usize)> {
    let mut n = 0;
    if let Some(a) = a {
        let w = a.iter().find(|w| s.starts_with(w.as_str()))?;
        n = w.len();
    }
    let enda = n;
    let mut nmid = s.len() - n;
    if let Some(b) = b {
        let end = &s[enda..];
        let w = b
            .iter()
            .find(|w| end.len() >= w.len() && end.ends_with(w.as_str()))?;
        nmid -= w.len();
    }
    Some((enda, nmid))
}
