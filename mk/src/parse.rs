//! Reading mkfiles: assignments, includes and rules.

use crate::lex::Reader;
use crate::shell::Shell;
use crate::{Attr, Failed, Mk, R, Rule};

/// What a line is.
enum Head {
    Assign,
    Include,
    Pipe,
    Rule,
}

impl Mk {
    /// Read an mkfile (`name` for messages). `override_` marks command-line
    /// assignments, which later assignments in mkfiles do not change.
    pub fn parse(&mut self, name: &str, text: &str, override_: bool) -> R<()> {
        let start = self.default_shell.clone().unwrap_or_else(Shell::default_sh);
        let saved_shell = std::mem::replace(&mut self.shell, start);
        let saved_mkshell = self.vars.get("MKSHELL").cloned();
        self.vars.insert("MKSHELL".into(), self.shell.cmd.clone());
        let saved = (
            std::mem::replace(&mut self.file, name.to_string()),
            self.line,
        );
        self.line = 1;
        let mut r = Reader::new(text);
        let res = self.parse_lines(&mut r, override_);
        self.file = saved.0;
        self.line = saved.1;
        self.shell = saved_shell;
        match saved_mkshell {
            Some(v) => self.vars.insert("MKSHELL".into(), v),
            None => self.vars.remove("MKSHELL"),
        };
        self.vars.insert("MKSHELL".into(), self.shell.cmd.clone());
        res
    }

    fn parse_lines(&mut self, r: &mut Reader, override_: bool) -> R<()> {
        while let Some(line) = self.assline(r)? {
            let hline = self.line;
            let Some((kind, head, tail, attr, prog)) = self.rhead(&line)? else {
                self.synerr(hline as i64, "expected one of :<=");
                return Err(Failed);
            };
            match kind {
                Head::Include => {
                    let p = tail.join(" ");
                    if p.is_empty() {
                        self.synerr(-1, "missing include file name");
                        return Err(Failed);
                    }
                    match std::fs::read(&p) {
                        Ok(b) => {
                            let t = String::from_utf8_lossy(&b).into_owned();
                            self.parse(&p, &t, false)?;
                        }
                        Err(e) => {
                            eprintln!(
                                "warning: skipping missing include file {p}: {}",
                                crate::ioerr(&e)
                            );
                        }
                    }
                }
                Head::Pipe => {
                    let p = tail.join(" ");
                    if p.is_empty() {
                        self.synerr(-1, "missing include program name");
                        return Err(Failed);
                    }
                    let (out, ok) = self.pipecmd_output(&p);
                    let t = String::from_utf8_lossy(&out).into_owned();
                    self.parse(&p, &t, false)?;
                    if !ok {
                        eprintln!("bad include program status");
                        return Err(Failed);
                    }
                }
                Head::Rule => {
                    let body = self.rbody(r);
                    self.addrules(head, tail, body, attr, hline, prog);
                }
                Head::Assign => {
                    if head.len() > 1 {
                        self.synerr(-1, "multiple vars on left side of assignment");
                        return Err(Failed);
                    }
                    let name = head[0].clone();
                    let set = if self.overridden.contains(&name) {
                        override_
                    } else {
                        if override_ {
                            self.overridden.insert(name.clone());
                        }
                        true
                    };
                    if set {
                        self.vars.insert(name.clone(), tail.clone());
                        self.weset.insert(name.clone());
                        if name == "MKSHELL" {
                            match Shell::from_words(&tail) {
                                Ok(s) => self.shell = s,
                                Err(e) => {
                                    self.synerr(hline as i64, e);
                                    return Err(Failed);
                                }
                            }
                        }
                    }
                    if !attr.is_empty() {
                        self.noexport.insert(name);
                    }
                }
            }
        }
        Ok(())
    }

    /// Split a line into its kind, head words, tail words, attributes and `P` program.
    #[allow(clippy::type_complexity)]
    fn rhead(
        &mut self,
        line: &str,
    ) -> R<Option<(Head, Vec<String>, Vec<String>, Attr, Option<String>)>> {
        let at = match self.shell.charin(line, ":=<") {
            Ok(Some(at)) => at,
            Ok(None) => return Ok(None),
            Err(e) => {
                self.synerr(-1, &e);
                return Ok(None);
            }
        };
        let sep = line[at..].chars().next().unwrap_or(':');
        let left = &line[..at];
        let mut p = &line[at + 1..];
        let mut kind = match sep {
            '=' => Head::Assign,
            '<' => Head::Include,
            _ => Head::Rule,
        };
        if sep == '<' && p.starts_with('|') {
            kind = Head::Pipe;
            p = &p[1..];
        }
        let mut attr = Attr::default();
        let mut prog = None;
        if sep == '=' {
            let found = match self.shell.charin(p, self.shell.termchars()) {
                Ok(f) => f,
                Err(e) => {
                    self.synerr(-1, &e);
                    None
                }
            };
            if let Some(pp) = found {
                if p[pp..].starts_with('=') {
                    for c in p[..pp].chars() {
                        if c != 'U' {
                            self.synerr(-1, &format!("unknown attribute '{c}'"));
                            return Err(Failed);
                        }
                        attr.u = true;
                    }
                    p = &p[pp + 1..];
                }
            }
        }
        if sep == ':' && !p.is_empty() && !p.starts_with([' ', '\t']) {
            let mut closed = None;
            for (i, c) in p.char_indices() {
                match c {
                    ':' => {
                        closed = Some(i);
                        break;
                    }
                    'D' => attr.d = true,
                    'E' => attr.e = true,
                    'n' => attr.n = true,
                    'N' => attr.nn = true,
                    'Q' => attr.q = true,
                    'R' => attr.r = true,
                    'U' => attr.u = true,
                    'V' => attr.v = true,
                    'P' => {
                        let rest = &p[i + 1..];
                        if let Some(k) = rest.find(':') {
                            prog = Some(rest[..k].to_string());
                            closed = Some(i + 1 + k);
                        }
                        break;
                    }
                    c => {
                        self.synerr(-1, &format!("unknown attribute '{c}'"));
                        return Err(Failed);
                    }
                }
            }
            match closed {
                Some(k) => p = &p[k + 1..],
                None => {
                    self.synerr(-1, "missing trailing :");
                    return Err(Failed);
                }
            }
        }
        let head = self.stow(left)?;
        if head[0].is_empty() && !matches!(kind, Head::Include | Head::Pipe) {
            self.synerr(
                self.line as i64 - 1,
                "no var on left side of assignment/rule",
            );
            return Err(Failed);
        }
        let tail = self.stow(p)?;
        Ok(Some((kind, head, tail, attr, prog)))
    }

    fn addrules(
        &mut self,
        head: Vec<String>,
        tail: Vec<String>,
        body: String,
        attr: Attr,
        hline: u32,
        prog: Option<String>,
    ) {
        if self.target1.is_none() && !attr.r && !head.iter().any(|w| w.contains(['%', '&'])) {
            self.target1 = Some(head.clone());
        }
        let head_rc = std::rc::Rc::new(head.clone());
        let body = std::rc::Rc::new(body);
        for h in &head {
            self.addrule(h, &tail, &body, &head_rc, attr, hline, prog.clone());
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn addrule(
        &mut self,
        target: &str,
        tail: &[String],
        body: &std::rc::Rc<String>,
        all: &std::rc::Rc<Vec<String>>,
        mut attr: Attr,
        hline: u32,
        prog: Option<String>,
    ) {
        // The same target and prerequisites again: the rule is replaced in place.
        let reuse = self
            .by_target
            .get(target)
            .and_then(|v| v.iter().copied().find(|&r| self.rules[r].tail == tail));
        let meta = attr.r || target.contains(['%', '&']);
        attr.meta = meta;
        let regex = if attr.r {
            match crate::graph::compile_regexp(target) {
                Ok(re) => Some(re),
                Err(e) => {
                    eprintln!("mk: {}:{}: regular expression error; {e}", self.file, hline);
                    self.fatal = true;
                    None
                }
            }
        } else {
            None
        };
        let rule = Rule {
            target: target.to_string(),
            tail: tail.to_vec(),
            recipe: std::rc::Rc::clone(body),
            line: hline,
            file: std::rc::Rc::new(self.file.clone()),
            attr,
            all: std::rc::Rc::clone(all),
            prog,
            shell: self.shell.clone(),
            regex,
            id: self.nrules,
        };
        self.nrules += 1;
        match reuse {
            Some(r) => {
                self.rules[r] = rule;
            }
            None => {
                let id = self.rules.len();
                self.rules.push(rule);
                let chain = self.by_target.entry(target.to_string()).or_default();
                // plan9port keeps the first rule first and puts each later one
                // right after it.
                if chain.is_empty() {
                    chain.push(id);
                } else {
                    chain.insert(1, id);
                }
                if meta {
                    self.metarules.push(id);
                }
            }
        }
    }
}
