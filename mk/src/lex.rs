//! Reading mkfile lines: comments, line continuation, quoted text kept as it is,
//! backquoted commands run as the line is read, and recipe bodies.

use crate::shell::Kind;
use crate::{Failed, Mk, R};

/// An mkfile's text, read a character at a time, counting lines.
pub struct Reader {
    text: Vec<char>,
    pos: usize,
}

impl Reader {
    pub fn new(text: &str) -> Reader {
        Reader {
            text: text.chars().collect(),
            pos: 0,
        }
    }

    fn get(&mut self) -> Option<char> {
        let c = self.text.get(self.pos).copied();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn unget(&mut self) {
        self.pos = self.pos.saturating_sub(1);
    }
}

impl Mk {
    /// The next character, with backslash-newline removed (`elide`) or read as a
    /// blank.
    fn nextc(&mut self, r: &mut Reader, elide: bool) -> Option<char> {
        loop {
            let c = r.get()?;
            if c == '\\' {
                let save = r.pos;
                let mut c2 = r.get();
                if c2 == Some('\r') {
                    c2 = r.get();
                }
                if c2 == Some('\n') {
                    self.line += 1;
                    if elide {
                        continue;
                    }
                    return Some(' ');
                }
                r.pos = save;
            }
            if c == '\n' {
                self.line += 1;
            }
            return Some(c);
        }
    }

    /// Copy a quoted token, its quotes kept (`esc` has been copied already).
    fn escapetoken(&mut self, r: &mut Reader, buf: &mut String, esc: char) -> R<()> {
        match self.shell.kind {
            Kind::Rc => {
                if esc != '\'' {
                    return Ok(());
                }
                let line = self.line;
                while let Some(c) = self.nextc(r, false) {
                    if c == '\'' {
                        buf.push(c);
                        match r.get() {
                            None => break,
                            Some('\'') => {}
                            Some(_) => {
                                r.unget();
                                return Ok(());
                            }
                        }
                    }
                    buf.push(c);
                }
                self.synerr(line, &format!("missing closing {esc}"));
                Err(Failed)
            }
            Kind::Sh => {
                if esc == '\\' {
                    let mut c = r.get();
                    if c == Some('\r') {
                        c = r.get();
                    }
                    if c == Some('\n') {
                        self.line += 1;
                    }
                    if let Some(c) = c {
                        buf.push(c);
                    }
                    return Ok(());
                }
                let line = self.line;
                while let Some(c) = self.nextc(r, false) {
                    if c == esc {
                        buf.push(c);
                        return Ok(());
                    }
                    if c == '\\' {
                        buf.push(c);
                        let mut d = r.get();
                        if d == Some('\r') {
                            d = r.get();
                        }
                        let Some(d) = d else { break };
                        if d == '\n' {
                            self.line += 1;
                        }
                        buf.push(d);
                        continue;
                    }
                    buf.push(c);
                }
                self.synerr(line, &format!("missing closing {esc}"));
                Err(Failed)
            }
        }
    }

    /// Assemble a line: blank lines and comments skipped, escaped newlines removed,
    /// backquoted commands replaced by their output. `None` at the end of the file;
    /// `Err` after a reported error.
    pub fn assline(&mut self, r: &mut Reader) -> R<Option<String>> {
        let mut buf = String::new();
        while let Some(c) = self.nextc(r, true) {
            match c {
                '\r' => {}
                '\n' => {
                    if !buf.is_empty() {
                        return Ok(Some(buf));
                    }
                }
                '\\' | '\'' | '"' => {
                    buf.push(c);
                    self.escapetoken(r, &mut buf, c)?;
                }
                '`' => self.bquote(r, &mut buf)?,
                '#' => {
                    let mut last = '#';
                    loop {
                        match r.get() {
                            None => return Ok((!buf.is_empty()).then_some(buf)),
                            Some('\n') => break,
                            Some('\r') => {}
                            Some(c) => last = c,
                        }
                    }
                    self.line += 1;
                    if last == '\\' {
                        continue;
                    }
                    if !buf.is_empty() {
                        return Ok(Some(buf));
                    }
                }
                c => buf.push(c),
            }
        }
        Ok((!buf.is_empty()).then_some(buf))
    }

    /// `` `{cmd} `` (or `` `cmd` ``): run cmd with the shell, its output (less a final
    /// newline) goes into the line.
    fn bquote(&mut self, r: &mut Reader, buf: &mut String) -> R<()> {
        let line = self.line;
        let mut c = r.get();
        while matches!(c, Some(' ' | '\t')) {
            c = r.get();
        }
        let term = if c == Some('{') {
            c = r.get();
            while matches!(c, Some(' ' | '\t')) {
                c = r.get();
            }
            '}'
        } else {
            '`'
        };
        let mut cmd = String::new();
        while let Some(x) = c {
            if x == term {
                cmd.push('\n');
                let out = self.backquote(&cmd);
                buf.push_str(&out);
                return Ok(());
            }
            if x == '\n' {
                break;
            }
            if x == '\'' || x == '"' || x == '\\' {
                cmd.push(x);
                self.escapetoken(r, &mut cmd, x)?;
            } else {
                cmd.push(x);
            }
            c = self.nextc(r, false);
        }
        self.synerr(line, &format!("missing closing {term} after `"));
        Err(Failed)
    }

    /// A recipe: the lines after a rule that start with a blank or tab (less that
    /// first character); a line starting with `#` is part of it too.
    pub fn rbody(&mut self, r: &mut Reader) -> String {
        let mut out = String::new();
        let mut last = '\n';
        while let Some(c) = r.get() {
            if last == '\n' {
                if c == '#' {
                    out.push(c);
                } else if c != ' ' && c != '\t' {
                    r.unget();
                    break;
                }
            } else {
                out.push(c);
            }
            last = c;
            if c == '\n' {
                self.line += 1;
            }
        }
        out
    }
}
