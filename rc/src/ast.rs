//! The syntax tree of rc programs, and its printing back as rc text (as `whatis` and
//! the environment show functions).

use crate::lex::{GLOB, HereBody, RedirKind, unglob};
use std::fmt;
use std::rc::Rc;

#[derive(Clone, Debug)]
pub enum Word {
    /// Literal text, with [`GLOB`] marks on active pattern characters.
    Lit { text: String, quoted: bool },
    /// `$name`
    Var(Box<Word>),
    /// `$name(subscripts)`
    Sub(Box<Word>, Vec<Word>),
    /// `$#name`
    Count(Box<Word>),
    /// `$"name`
    Join(Box<Word>),
    /// `a^b`
    Concat(Box<Word>, Box<Word>),
    /// `(a b c)`
    List(Vec<Word>),
    /// `` `{cmd} `` or `` `sep{cmd} ``
    Backquote {
        sep: Option<Box<Word>>,
        body: Rc<Cmd>,
    },
    /// `<{cmd}`, `>{cmd}`, `<>{cmd}`
    PipeFd { kind: RedirKind, body: Rc<Cmd> },
}

#[derive(Clone, Debug)]
pub enum RedirOp {
    /// `<`, `>`, `>>`, `<>` to a file.
    File(RedirKind, Word),
    /// `<<tag`: the body, and whether `$` substitution applies.
    Here {
        body: HereBody,
        subst: bool,
        tag: String,
    },
    /// `>[fd=from]`
    Dup(i32),
    /// `>[fd=]`
    Close,
}

#[derive(Clone, Debug)]
pub struct Redir {
    pub fd: i32,
    pub op: RedirOp,
}

#[derive(Clone, Debug)]
pub enum Cmd {
    Empty,
    /// Words and redirections; redirections apply in order.
    Simple {
        words: Vec<Word>,
        redirs: Vec<Redir>,
    },
    /// `name=value cmd` (with `body`) or a plain assignment.
    Assign {
        name: Word,
        value: Word,
        body: Option<Box<Cmd>>,
    },
    Seq(Vec<Cmd>),
    Async(Box<Cmd>),
    And(Box<Cmd>, Box<Cmd>),
    Or(Box<Cmd>, Box<Cmd>),
    Not(Box<Cmd>),
    Subshell(Box<Cmd>),
    Pipe {
        left: Box<Cmd>,
        right: Box<Cmd>,
        lfd: i32,
        rfd: i32,
    },
    /// `{ body }` with redirections after it (or before a command: `>x cmd`).
    Brace {
        body: Box<Cmd>,
        redirs: Vec<Redir>,
    },
    /// A command with redirections written before it.
    Redirected {
        redirs: Vec<Redir>,
        cmd: Box<Cmd>,
    },
    If {
        cond: Box<Cmd>,
        body: Box<Cmd>,
    },
    IfNot(Box<Cmd>),
    For {
        var: Word,
        list: Option<Vec<Word>>,
        body: Box<Cmd>,
    },
    While {
        cond: Box<Cmd>,
        body: Box<Cmd>,
    },
    Switch {
        subject: Word,
        body: Box<Cmd>,
    },
    Fn {
        names: Vec<Word>,
        body: Option<Rc<Cmd>>,
    },
    Twiddle {
        subject: Word,
        patterns: Vec<Word>,
    },
}

impl Cmd {
    /// The here documents in this command (and in commands inside it), with whether
    /// each takes `$` substitution.
    pub fn here_docs(&self, out: &mut Vec<(HereBody, bool)>) {
        let redirs = |rs: &[Redir], out: &mut Vec<(HereBody, bool)>| {
            for r in rs {
                match &r.op {
                    RedirOp::Here { body, subst, .. } => out.push((Rc::clone(body), *subst)),
                    RedirOp::File(_, w) => w.here_docs(out),
                    _ => {}
                }
            }
        };
        match self {
            Cmd::Empty => {}
            Cmd::Simple { words, redirs: rs } => {
                for w in words {
                    w.here_docs(out);
                }
                redirs(rs, out);
            }
            Cmd::Assign { name, value, body } => {
                name.here_docs(out);
                value.here_docs(out);
                if let Some(b) = body {
                    b.here_docs(out);
                }
            }
            Cmd::Seq(v) => v.iter().for_each(|c| c.here_docs(out)),
            Cmd::Async(c) | Cmd::Not(c) | Cmd::Subshell(c) | Cmd::IfNot(c) => c.here_docs(out),
            Cmd::And(a, b) | Cmd::Or(a, b) => {
                a.here_docs(out);
                b.here_docs(out);
            }
            Cmd::Pipe { left, right, .. } => {
                left.here_docs(out);
                right.here_docs(out);
            }
            Cmd::Brace { body, redirs: rs } => {
                body.here_docs(out);
                redirs(rs, out);
            }
            Cmd::Redirected { redirs: rs, cmd } => {
                redirs(rs, out);
                cmd.here_docs(out);
            }
            Cmd::If { cond, body } | Cmd::While { cond, body } => {
                cond.here_docs(out);
                body.here_docs(out);
            }
            Cmd::For { var, list, body } => {
                var.here_docs(out);
                list.iter().flatten().for_each(|w| w.here_docs(out));
                body.here_docs(out);
            }
            Cmd::Switch { subject, body } => {
                subject.here_docs(out);
                body.here_docs(out);
            }
            Cmd::Fn { names, body } => {
                names.iter().for_each(|w| w.here_docs(out));
                if let Some(b) = body {
                    b.here_docs(out);
                }
            }
            Cmd::Twiddle { subject, patterns } => {
                subject.here_docs(out);
                patterns.iter().for_each(|w| w.here_docs(out));
            }
        }
    }
}

impl Word {
    fn here_docs(&self, out: &mut Vec<(HereBody, bool)>) {
        match self {
            Word::Lit { .. } => {}
            Word::Var(w) | Word::Count(w) | Word::Join(w) => w.here_docs(out),
            Word::Sub(w, v) => {
                w.here_docs(out);
                v.iter().for_each(|x| x.here_docs(out));
            }
            Word::Concat(a, b) => {
                a.here_docs(out);
                b.here_docs(out);
            }
            Word::List(v) => v.iter().for_each(|x| x.here_docs(out)),
            Word::Backquote { sep, body } => {
                if let Some(s) = sep {
                    s.here_docs(out);
                }
                body.here_docs(out);
            }
            Word::PipeFd { body, .. } => body.here_docs(out),
        }
    }
}

/// Quote a string as rc would need it to read it back as one word.
pub fn quote(s: &str) -> String {
    // As plan9port's %q: quotes when the word has a character that ends an rc word.
    let needs = s.is_empty()
        || s.chars()
            .any(|c| c.is_whitespace() || "#;&|^$=`'{}()<>".contains(c) || c.is_control());
    if !needs {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "''"))
}

impl fmt::Display for Word {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Word::Lit { text, quoted } => {
                if *quoted {
                    let plain = unglob(text);
                    f.write_str(&quote_always(&plain))
                } else {
                    // Unquoted text prints as written: pattern marks drop, and anything
                    // that was quoted inside a concatenation gets quotes back.
                    let mut out = String::new();
                    let mut it = text.chars();
                    while let Some(c) = it.next() {
                        if c == GLOB {
                            if let Some(n) = it.next() {
                                out.push(n);
                            }
                        } else {
                            out.push(c);
                        }
                    }
                    f.write_str(&out)
                }
            }
            Word::Var(w) => write!(f, "${w}"),
            Word::Sub(w, s) => {
                write!(f, "${w}(")?;
                for (i, x) in s.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    write!(f, "{x}")?;
                }
                f.write_str(")")
            }
            Word::Count(w) => write!(f, "$#{w}"),
            Word::Join(w) => write!(f, "$\"{w}"),
            Word::Concat(a, b) => write!(f, "{a}^{b}"),
            Word::List(v) => {
                f.write_str("(")?;
                for (i, x) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    write!(f, "{x}")?;
                }
                f.write_str(")")
            }
            Word::Backquote { sep, body } => {
                f.write_str("`")?;
                if let Some(s) = sep {
                    write!(f, "{s}")?;
                }
                write!(f, "{{{body}}}")
            }
            Word::PipeFd { kind, body } => {
                let k = match kind {
                    RedirKind::Read => "<",
                    RedirKind::RdWr => "<>",
                    _ => ">",
                };
                write!(f, "{k}{{{body}}}")
            }
        }
    }
}

fn quote_always(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl fmt::Display for Redir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.op {
            RedirOp::File(kind, w) => {
                let (sym, dfl) = match kind {
                    RedirKind::Read => ("<", 0),
                    RedirKind::Write => (">", 1),
                    RedirKind::Append => (">>", 1),
                    RedirKind::RdWr => ("<>", 0),
                    RedirKind::Here => ("<<", 0),
                };
                f.write_str(sym)?;
                if self.fd != dfl {
                    write!(f, "[{}]", self.fd)?;
                }
                write!(f, "{w}")
            }
            RedirOp::Here { tag, .. } => {
                f.write_str("<<")?;
                if self.fd != 0 {
                    write!(f, "[{}]", self.fd)?;
                }
                f.write_str(tag)
            }
            RedirOp::Dup(from) => write!(f, ">[{}={}]", self.fd, from),
            RedirOp::Close => write!(f, ">[{}=]", self.fd),
        }
    }
}

/// Redirections printed before what they apply to, as plan9port prints them: a file
/// redirection is followed by a blank when more follows, a `>[a=b]` is not.
fn redirs_before(f: &mut fmt::Formatter<'_>, redirs: &[Redir], more: bool) -> fmt::Result {
    for (i, r) in redirs.iter().enumerate() {
        write!(f, "{r}")?;
        let last = i + 1 == redirs.len();
        if matches!(r.op, RedirOp::File(..) | RedirOp::Here { .. }) && (!last || more) {
            f.write_str(" ")?;
        }
    }
    Ok(())
}

fn words(f: &mut fmt::Formatter<'_>, ws: &[Word]) -> fmt::Result {
    for (i, w) in ws.iter().enumerate() {
        if i > 0 {
            f.write_str(" ")?;
        }
        write!(f, "{w}")?;
    }
    Ok(())
}

impl fmt::Display for Cmd {
    /// As rc prints a function body: `;` between commands, no spaces around `|`,
    /// redirections before what they apply to.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cmd::Empty => Ok(()),
            Cmd::Simple { words: ws, redirs } => {
                redirs_before(f, redirs, !ws.is_empty())?;
                words(f, ws)
            }
            Cmd::Assign { name, value, body } => {
                write!(f, "{name}={value}")?;
                if let Some(b) = body {
                    write!(f, " {b}")?;
                }
                Ok(())
            }
            Cmd::Seq(v) => {
                let mut first = true;
                for c in v {
                    if matches!(c, Cmd::Empty) {
                        continue;
                    }
                    if !first {
                        f.write_str(";")?;
                    }
                    first = false;
                    write!(f, "{c}")?;
                }
                Ok(())
            }
            Cmd::Async(c) => write!(f, "{c}&"),
            Cmd::And(a, b) => write!(f, "{a} && {b}"),
            Cmd::Or(a, b) => write!(f, "{a} || {b}"),
            Cmd::Not(c) => write!(f, "! {c}"),
            Cmd::Subshell(c) => write!(f, "@ {c}"),
            Cmd::Pipe {
                left,
                right,
                lfd,
                rfd,
            } => {
                write!(f, "{left}|")?;
                if *lfd != 1 || *rfd != 0 {
                    if *rfd != 0 {
                        write!(f, "[{lfd}={rfd}]")?;
                    } else {
                        write!(f, "[{lfd}]")?;
                    }
                }
                write!(f, "{right}")
            }
            Cmd::Brace { body, redirs } => {
                redirs_before(f, redirs, true)?;
                write!(f, "{{{body}}}")
            }
            Cmd::Redirected { redirs, cmd } => {
                redirs_before(f, redirs, !matches!(**cmd, Cmd::Empty))?;
                write!(f, "{cmd}")
            }
            Cmd::If { cond, body } => write!(f, "if({cond}){body}"),
            Cmd::IfNot(c) => write!(f, "if not {c}"),
            Cmd::For { var, list, body } => {
                write!(f, "for({var}")?;
                if let Some(l) = list {
                    f.write_str(" in ")?;
                    words(f, l)?;
                }
                write!(f, "){body}")
            }
            Cmd::While { cond, body } => write!(f, "while ({cond}){body}"),
            Cmd::Switch { subject, body } => {
                // A parenthesised subject is a list already: no second pair.
                if matches!(subject, Word::List(_)) {
                    write!(f, "switch {subject} {{{body}}}")
                } else {
                    write!(f, "switch ({subject}) {{{body}}}")
                }
            }
            Cmd::Fn { names, body } => {
                f.write_str("fn ")?;
                words(f, names)?;
                if let Some(b) = body {
                    write!(f, " {{{b}}}")?;
                }
                Ok(())
            }
            Cmd::Twiddle { subject, patterns } => {
                write!(f, "~ {subject}")?;
                for p in patterns {
                    write!(f, " {p}")?;
                }
                Ok(())
            }
        }
    }
}
