//! The syntax tree of rc programs, and its printing back as rc text (as `whatis` and
//! the environment show functions).

use crate::lex::{HereBody, RedirKind, unglob};
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
        crate::stack::guard(|| self.show(f))
    }
}

impl Word {
    fn show(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Word::Lit { text, quoted } => {
                if *quoted {
                    f.write_str(&quote_always(&unglob(text)))
                } else {
                    // Unquoted text prints as written, without the pattern marks.
                    f.write_str(&unglob(text))
                }
            }
            Word::Var(w) => write!(f, "${}", Name(w)),
            Word::Sub(w, s) => {
                write!(f, "${}(", Name(w))?;
                for (i, x) in s.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    write!(f, "{x}")?;
                }
                f.write_str(")")
            }
            Word::Count(w) => write!(f, "$#{}", Name(w)),
            Word::Join(w) => write!(f, "$\"{}", Name(w)),
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
                write!(f, "{{{}}}", List(body))
            }
            Word::PipeFd { kind, body } => {
                let k = match kind {
                    RedirKind::Read => "<",
                    RedirKind::RdWr => "<>",
                    _ => ">",
                };
                write!(f, "{k}{{{}}}", List(body))
            }
        }
    }
}

/// A variable's name after `$`: quoted when it is not a plain name, so that `$ "x`
/// (the variable `"x`) does not print as `$"x` (x joined).
struct Name<'a>(&'a Word);

impl fmt::Display for Name<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Word::Lit {
                text,
                quoted: false,
            } => {
                let plain = unglob(text);
                if plain.is_empty() || !plain.chars().all(crate::lex::idchr) {
                    f.write_str(&quote_always(&plain))
                } else {
                    f.write_str(&plain)
                }
            }
            w => write!(f, "{w}"),
        }
    }
}

fn quote_always(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A word after an operator (`<`, `>`, `|`): a blank first when the word's text
/// would otherwise read as part of the operator (`< <{cmd}`, `> [2]x`).
fn after_operator(f: &mut fmt::Formatter<'_>, text: &str) -> fmt::Result {
    if text.starts_with(['<', '>', '[', '{']) {
        f.write_str(" ")?;
    }
    f.write_str(text)
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
                after_operator(f, &w.to_string())
            }
            RedirOp::Here { tag, subst, .. } => {
                f.write_str("<<")?;
                if self.fd != 0 {
                    write!(f, "[{}]", self.fd)?;
                }
                let t = if *subst {
                    quote(tag)
                } else {
                    quote_always(tag)
                };
                after_operator(f, &t)
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

/// Redirections printed after what they apply to (` >x`).
fn redirs_after(f: &mut fmt::Formatter<'_>, redirs: &[Redir]) -> fmt::Result {
    for r in redirs {
        write!(f, " {r}")?;
    }
    Ok(())
}

fn words(f: &mut fmt::Formatter<'_>, ws: &[Word]) -> fmt::Result {
    for (i, w) in ws.iter().enumerate() {
        if i > 0 {
            f.write_str(" ")?;
        }
        let t = w.to_string();
        // `echo = x` would read back as an assignment: a leading `=` is quoted.
        if i == 1 && t.starts_with('=') {
            f.write_str("'='")?;
            let rest = &t[1..];
            if !rest.is_empty() {
                if !rest.starts_with('^') {
                    f.write_str("^")?;
                }
                f.write_str(rest)?;
            }
        } else {
            f.write_str(&t)?;
        }
    }
    Ok(())
}

/// The here documents a command's line carries (not those inside its braces, which
/// their own lists print).
fn shallow_here_docs(c: &Cmd, out: &mut Vec<(HereBody, bool, String)>) {
    let redirs = |rs: &[Redir], out: &mut Vec<(HereBody, bool, String)>| {
        for r in rs {
            if let RedirOp::Here { body, subst, tag } = &r.op {
                out.push((Rc::clone(body), *subst, tag.clone()));
            }
        }
    };
    match c {
        Cmd::Simple { redirs: rs, .. } => redirs(rs, out),
        Cmd::Brace { redirs: rs, .. } => redirs(rs, out),
        Cmd::Redirected { redirs: rs, cmd } => {
            redirs(rs, out);
            shallow_here_docs(cmd, out);
        }
        Cmd::Assign { body: Some(b), .. } => shallow_here_docs(b, out),
        Cmd::Async(c) | Cmd::Not(c) | Cmd::Subshell(c) | Cmd::IfNot(c) => shallow_here_docs(c, out),
        Cmd::And(a, b)
        | Cmd::Or(a, b)
        | Cmd::Pipe {
            left: a, right: b, ..
        } => {
            shallow_here_docs(a, out);
            shallow_here_docs(b, out);
        }
        Cmd::If { cond, body } | Cmd::While { cond, body } => {
            shallow_here_docs(cond, out);
            shallow_here_docs(body, out);
        }
        Cmd::For { body, .. } => shallow_here_docs(body, out),
        Cmd::Seq(v) => v.iter().for_each(|c| shallow_here_docs(c, out)),
        _ => {}
    }
}

/// A list of commands as rc prints a function body: `;` between commands, and a
/// command with here documents followed by a newline and their bodies.
struct List<'a>(&'a Cmd);

impl fmt::Display for List<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn flatten<'a>(c: &'a Cmd, out: &mut Vec<&'a Cmd>) {
            match c {
                Cmd::Seq(v) => v.iter().for_each(|c| flatten(c, out)),
                Cmd::Empty => {}
                c => out.push(c),
            }
        }
        let mut items = Vec::new();
        flatten(self.0, &mut items);
        let mut separated = true;
        for (i, c) in items.iter().enumerate() {
            if i > 0 && !separated {
                f.write_str(";")?;
            }
            write!(f, "{}", C(c))?;
            let mut docs = Vec::new();
            shallow_here_docs(c, &mut docs);
            separated = false;
            if ends_empty(c) {
                f.write_str(";")?;
                separated = true;
            }
            if !docs.is_empty() {
                separated = true;
                f.write_str("\n")?;
                for (body, _, tag) in docs {
                    let b = body.borrow();
                    f.write_str(b.as_deref().unwrap_or(""))?;
                    writeln!(f, "{tag}")?;
                }
            }
        }
        Ok(())
    }
}

impl fmt::Display for Cmd {
    /// As rc prints a function body (see [`List`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", List(self))
    }
}

/// One command, printed without the bodies of its here documents.
struct C<'a>(&'a Cmd);

/// A command that may be empty (`if(x);`): printed as nothing, and the list it is in
/// ends it with a `;` (see [`ends_empty`]).
struct Body<'a>(&'a Cmd);

impl fmt::Display for Body<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", C(self.0))
    }
}

/// Whether a command's text ends with an empty command (`a || ;`, `if(x);`), which
/// must be followed by a `;` to read back.
fn ends_empty(c: &Cmd) -> bool {
    match c {
        Cmd::Empty => true,
        Cmd::And(_, b) | Cmd::Or(_, b) => ends_empty(b),
        Cmd::If { body, .. } | Cmd::While { body, .. } | Cmd::For { body, .. } => ends_empty(body),
        Cmd::IfNot(b) | Cmd::Subshell(b) | Cmd::Not(b) => ends_empty(b),
        Cmd::Assign { body: Some(b), .. } => ends_empty(b),
        Cmd::Pipe { right, .. } => ends_empty(right),
        _ => false,
    }
}

/// The left side of a pipe: a redirection written before it would apply to the whole
/// pipeline when read back, so it goes after (`echo a >x|tr a b`).
struct Left<'a>(&'a Cmd);

impl fmt::Display for Left<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Cmd::Simple { words: ws, redirs } if !redirs.is_empty() && !ws.is_empty() => {
                words(f, ws)?;
                redirs_after(f, redirs)
            }
            Cmd::Brace { body, redirs } if !redirs.is_empty() => {
                write!(f, "{{{}}}", List(body))?;
                redirs_after(f, redirs)
            }
            Cmd::Pipe {
                left,
                right,
                lfd,
                rfd,
            } => pipe(f, left, right, *lfd, *rfd, true),
            Cmd::Redirected { .. } | Cmd::Simple { .. } if has_prefix_redirs(self.0) => {
                write!(f, "{{{}}}", C(self.0))
            }
            c => write!(f, "{}", C(c)),
        }
    }
}

/// `left|right`; `right_left` when the whole pipe is itself the left side of another.
fn pipe(
    f: &mut fmt::Formatter<'_>,
    left: &Cmd,
    right: &Cmd,
    lfd: i32,
    rfd: i32,
    right_left: bool,
) -> fmt::Result {
    write!(f, "{}|", Left(left))?;
    let r = if right_left {
        Left(right).to_string()
    } else {
        C(right).to_string()
    };
    // |[a=b]: the left side's b into the right side's a.
    if rfd != 0 {
        write!(f, "[{rfd}={lfd}]")?;
    } else if lfd != 1 {
        write!(f, "[{lfd}]")?;
    } else if r.starts_with('[') {
        f.write_str(" ")?;
    }
    f.write_str(&r)
}

fn has_prefix_redirs(c: &Cmd) -> bool {
    match c {
        Cmd::Redirected { .. } => true,
        Cmd::Simple { redirs, .. } => !redirs.is_empty(),
        _ => false,
    }
}

impl fmt::Display for C<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::stack::guard(|| self.show(f))
    }
}

impl C<'_> {
    fn show(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Cmd::Empty => Ok(()),
            Cmd::Simple { words: ws, redirs } => {
                redirs_before(f, redirs, !ws.is_empty())?;
                words(f, ws)
            }
            Cmd::Assign { name, value, body } => {
                write!(f, "{name}={value}")?;
                if let Some(b) = body {
                    write!(f, " {}", C(b))?;
                }
                Ok(())
            }
            Cmd::Seq(_) => write!(f, "{{{}}}", List(self.0)),
            Cmd::Async(c) => write!(f, "{}&", C(c)),
            Cmd::And(a, b) => write!(f, "{} && {}", C(a), Body(b)),
            Cmd::Or(a, b) => write!(f, "{} || {}", C(a), Body(b)),
            Cmd::Not(c) => write!(f, "! {}", C(c)),
            Cmd::Subshell(c) => write!(f, "@ {}", C(c)),
            Cmd::Pipe {
                left,
                right,
                lfd,
                rfd,
            } => pipe(f, left, right, *lfd, *rfd, false),
            Cmd::Brace { body, redirs } => {
                redirs_before(f, redirs, true)?;
                write!(f, "{{{}}}", List(body))
            }
            Cmd::Redirected { redirs, cmd } => {
                redirs_before(f, redirs, !matches!(**cmd, Cmd::Empty))?;
                write!(f, "{}", C(cmd))
            }
            Cmd::If { cond, body } => write!(f, "if({}){}", List(cond), Body(body)),
            Cmd::IfNot(c) => write!(f, "if not {}", Body(c)),
            Cmd::For { var, list, body } => {
                write!(f, "for({var}")?;
                if let Some(l) = list {
                    f.write_str(" in ")?;
                    words(f, l)?;
                }
                write!(f, "){}", Body(body))
            }
            Cmd::While { cond, body } => write!(f, "while ({}){}", List(cond), Body(body)),
            Cmd::Switch { subject, body } => {
                // A parenthesised subject is a list already: no second pair.
                if matches!(subject, Word::List(_)) {
                    write!(f, "switch {subject} {{{}}}", List(body))
                } else {
                    write!(f, "switch ({subject}) {{{}}}", List(body))
                }
            }
            Cmd::Fn { names, body } => {
                f.write_str("fn ")?;
                words(f, names)?;
                if let Some(b) = body {
                    write!(f, " {{{}}}", List(b))?;
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
