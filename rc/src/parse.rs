//! rc's grammar, as plan9port's 2020 parser reads it: `=` may appear in arguments,
//! there are no free carets next to parentheses, and a newline may follow `&&`, `||`,
//! `|` and `switch x`.

use crate::ast::{Cmd, Redir, RedirOp, Word};
use crate::lex::{GLOB, LexError, Lexer, RedirKind, Tok, Token, unglob};
use std::rc::Rc;

/// A syntax error, in rc's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: u32,
    /// What rc says after the line: `token ')': syntax error`, `syntax error`, ...
    pub msg: String,
}

impl From<LexError> for SyntaxError {
    fn from(e: LexError) -> SyntaxError {
        SyntaxError {
            line: 0,
            msg: format!("token '{}': {}", e.token, e.msg),
        }
    }
}

pub struct Parser {
    pub lx: Lexer,
    tok: Token,
}

type R<T> = Result<T, SyntaxError>;

fn tok_text(t: &Tok) -> Option<String> {
    Some(match t {
        Tok::Word { text, quoted } => {
            if *quoted {
                format!("'{}'", unglob(text))
            } else {
                unglob(text)
            }
        }
        Tok::Dollar => "$".into(),
        Tok::Count => "$#".into(),
        Tok::Join => "$\"".into(),
        Tok::Backquote => "`".into(),
        Tok::Caret => "^".into(),
        Tok::Semi => ";".into(),
        Tok::Amp => "&".into(),
        Tok::AndAnd => "&&".into(),
        Tok::OrOr => "||".into(),
        Tok::Newline => return None,
        Tok::Eq => "=".into(),
        Tok::LParen => "(".into(),
        Tok::RParen => ")".into(),
        Tok::LBrace => "{".into(),
        Tok::RBrace => "}".into(),
        Tok::Pipe { .. } => "|".into(),
        Tok::Redir { kind, .. } | Tok::RedirBrace(kind) => match kind {
            RedirKind::Read => "<".into(),
            RedirKind::Write => ">".into(),
            RedirKind::Append => ">>".into(),
            RedirKind::RdWr => "<>".into(),
            RedirKind::Here => "<<".into(),
        },
        Tok::Dup { fd, from } => match from {
            Some(m) => format!(">[{fd}={m}]"),
            None => format!(">[{fd}=]"),
        },
        Tok::Eof => "EOF".into(),
    })
}

fn keyword(t: &Tok) -> Option<&'static str> {
    if let Tok::Word {
        text,
        quoted: false,
    } = t
    {
        return match text.as_str() {
            "for" => Some("for"),
            "in" => Some("in"),
            "while" => Some("while"),
            "if" => Some("if"),
            "not" => Some("not"),
            "switch" => Some("switch"),
            "fn" => Some("fn"),
            "~" => Some("~"),
            "!" => Some("!"),
            "@" => Some("@"),
            _ => None,
        };
    }
    None
}

fn is_word_tok(t: &Tok) -> bool {
    matches!(
        t,
        Tok::Word { .. }
            | Tok::Dollar
            | Tok::Count
            | Tok::Join
            | Tok::Backquote
            | Tok::LParen
            | Tok::RedirBrace(_)
            | Tok::Eq
    )
}

impl Parser {
    /// A parser over a lexer; nothing is read until the first [`Parser::line`].
    pub fn new(lx: Lexer) -> Parser {
        Parser {
            lx,
            tok: Token {
                tok: Tok::Newline,
                spaced: false,
                line: 0,
            },
        }
    }

    fn advance(&mut self) -> R<()> {
        self.tok = self.lx.token().map_err(|e| {
            let mut s = SyntaxError::from(e);
            s.line = self.lx.line;
            s
        })?;
        Ok(())
    }

    fn syntax<T>(&self) -> R<T> {
        let msg = match tok_text(&self.tok.tok) {
            Some(t) if self.tok.tok == Tok::Eof => format!("token {t}: syntax error"),
            Some(t) => format!("token '{t}': syntax error"),
            None => "syntax error".to_string(),
        };
        Err(SyntaxError {
            line: self.tok.line,
            msg,
        })
    }

    /// The command after `if(...)`, `for(...)`, `while(...)`: newlines may come
    /// first, the end of the input may not.
    fn body(&mut self) -> R<Cmd> {
        self.drop_nl()?;
        if self.tok.tok == Tok::Eof {
            return self.syntax();
        }
        self.cmd()
    }

    fn drop_nl(&mut self) -> R<()> {
        while self.tok.tok == Tok::Newline {
            self.advance()?;
        }
        Ok(())
    }

    /// Read one line's worth of commands (everything up to a newline that ends them).
    /// `None` at the end of the input.
    pub fn line(&mut self) -> R<Option<Cmd>> {
        self.lx.continued = false;
        self.advance()?;
        if self.tok.tok == Tok::Eof {
            return Ok(None);
        }
        // Any further line this command needs continues it (the second prompt).
        self.lx.continued = true;
        let c = self.cmds(false)?;
        match self.tok.tok {
            Tok::Newline | Tok::Eof => {
                self.lx.flush_here();
                Ok(Some(c))
            }
            _ => self.syntax(),
        }
    }

    /// After an interrupt: forget the command being read.
    pub fn reset(&mut self) {
        self.tok.tok = Tok::Newline;
    }

    /// After a syntax error: drop the rest of the line.
    pub fn recover(&mut self) {
        if self.tok.tok != Tok::Newline && self.tok.tok != Tok::Eof {
            self.lx.skip_line();
        }
        self.tok.tok = Tok::Newline;
    }

    fn cmds(&mut self, nlok: bool) -> R<Cmd> {
        crate::stack::guard(|| self.cmds_inner(nlok))
    }

    fn cmds_inner(&mut self, nlok: bool) -> R<Cmd> {
        let mut v = Vec::new();
        loop {
            let mut c = self.cmd()?;
            if self.tok.tok == Tok::Amp {
                c = Cmd::Async(Box::new(c));
            }
            if !matches!(c, Cmd::Empty) {
                v.push(c);
            }
            match self.tok.tok {
                Tok::Semi | Tok::Amp => {}
                Tok::Newline if nlok => {
                    self.lx.continued = true;
                }
                _ => break,
            }
            self.advance()?;
        }
        Ok(match v.len() {
            0 => Cmd::Empty,
            1 => v.pop().unwrap_or(Cmd::Empty),
            _ => Cmd::Seq(v),
        })
    }

    fn brace(&mut self) -> R<Cmd> {
        if self.tok.tok != Tok::LBrace {
            return self.syntax();
        }
        self.lx.continued = true;
        self.advance()?;
        let body = self.cmds(true)?;
        if self.tok.tok != Tok::RBrace {
            return self.syntax();
        }
        Ok(body)
    }

    fn paren(&mut self) -> R<Cmd> {
        if self.tok.tok != Tok::LParen {
            return self.syntax();
        }
        self.lx.continued = true;
        self.advance()?;
        let body = self.cmds(true)?;
        if self.tok.tok != Tok::RParen {
            return self.syntax();
        }
        Ok(body)
    }

    fn cmd(&mut self) -> R<Cmd> {
        let mut left = self.cmd2(false)?;
        loop {
            let and = match self.tok.tok {
                Tok::AndAnd => true,
                Tok::OrOr => false,
                _ => return Ok(left),
            };
            self.lx.continued = true;
            self.advance()?;
            self.drop_nl()?;
            if self.tok.tok == Tok::Eof {
                return self.syntax();
            }
            let right = self.cmd2(false)?;
            left = if and {
                Cmd::And(Box::new(left), Box::new(right))
            } else {
                Cmd::Or(Box::new(left), Box::new(right))
            };
        }
    }

    fn cmd2(&mut self, empty_left: bool) -> R<Cmd> {
        let mut left = self.cmd3()?;
        while let Tok::Pipe {
            left: lfd,
            right: rfd,
        } = self.tok.tok
        {
            self.lx.continued = true;
            self.advance()?;
            self.drop_nl()?;
            let right = self.cmd3()?;
            if (matches!(left, Cmd::Empty) && !empty_left) || matches!(right, Cmd::Empty) {
                return self.syntax();
            }
            left = Cmd::Pipe {
                left: Box::new(left),
                right: Box::new(right),
                lfd,
                rfd,
            };
        }
        Ok(left)
    }

    fn redir(&mut self) -> R<Redir> {
        match self.tok.tok.clone() {
            Tok::Dup { fd, from } => {
                self.advance()?;
                Ok(Redir {
                    fd,
                    op: match from {
                        Some(m) => RedirOp::Dup(m),
                        None => RedirOp::Close,
                    },
                })
            }
            Tok::Redir { kind, fd } => {
                self.advance()?;
                let w = self.word(true)?;
                if kind == RedirKind::Here {
                    let (tag, quoted) = match &w {
                        Word::Lit { text, quoted } => (unglob(text), *quoted),
                        _ => (w.to_string(), false),
                    };
                    // No line could ever end such a document.
                    if tag.contains('\n') {
                        return Err(SyntaxError {
                            line: self.lx.line,
                            msg: "here document tag has a newline".into(),
                        });
                    }
                    let body = self.lx.here_doc(tag.clone(), quoted);
                    return Ok(Redir {
                        fd,
                        op: RedirOp::Here {
                            body,
                            subst: !quoted,
                            tag,
                        },
                    });
                }
                Ok(Redir {
                    fd,
                    op: RedirOp::File(kind, w),
                })
            }
            _ => self.syntax(),
        }
    }

    fn is_redir(&self) -> bool {
        matches!(self.tok.tok, Tok::Redir { .. } | Tok::Dup { .. })
    }

    fn cmd3(&mut self) -> R<Cmd> {
        crate::stack::guard(|| self.cmd3_inner())
    }

    fn cmd3_inner(&mut self) -> R<Cmd> {
        match &self.tok.tok {
            Tok::Semi | Tok::Amp | Tok::Newline => return Ok(Cmd::Empty),
            Tok::LBrace => {
                let body = self.brace()?;
                self.advance()?;
                let mut redirs = Vec::new();
                while self.is_redir() {
                    redirs.push(self.redir()?);
                }
                return Ok(Cmd::Brace {
                    body: Box::new(body),
                    redirs,
                });
            }
            Tok::Redir { .. } | Tok::Dup { .. } => {
                let r = self.redir()?;
                let cmd = self.cmd2(false)?;
                return Ok(match cmd {
                    Cmd::Redirected { mut redirs, cmd } => {
                        redirs.insert(0, r);
                        Cmd::Redirected { redirs, cmd }
                    }
                    cmd => Cmd::Redirected {
                        redirs: vec![r],
                        cmd: Box::new(cmd),
                    },
                });
            }
            _ => {}
        }
        match keyword(&self.tok.tok) {
            Some("if") => {
                self.advance()?;
                if keyword(&self.tok.tok) == Some("not") {
                    self.advance()?;
                    let c = self.body()?;
                    return Ok(Cmd::IfNot(Box::new(c)));
                }
                let cond = self.paren()?;
                self.advance()?;
                let body = self.body()?;
                return Ok(Cmd::If {
                    cond: Box::new(cond),
                    body: Box::new(body),
                });
            }
            Some("for") => {
                self.advance()?;
                if self.tok.tok != Tok::LParen {
                    return self.syntax();
                }
                self.advance()?;
                let var = self.word(true)?;
                let list = match &self.tok.tok {
                    Tok::RParen => None,
                    t if keyword(t) == Some("in") => {
                        self.advance()?;
                        let l = self.words()?;
                        if self.tok.tok != Tok::RParen {
                            return self.syntax();
                        }
                        Some(l)
                    }
                    _ => return self.syntax(),
                };
                self.advance()?;
                let body = self.body()?;
                return Ok(Cmd::For {
                    var,
                    list,
                    body: Box::new(body),
                });
            }
            Some("while") => {
                self.advance()?;
                let cond = self.paren()?;
                self.advance()?;
                let body = self.body()?;
                return Ok(Cmd::While {
                    cond: Box::new(cond),
                    body: Box::new(body),
                });
            }
            Some("switch") => {
                self.advance()?;
                let subject = self.word(true)?;
                self.drop_nl()?;
                let body = self.brace()?;
                let first = match &body {
                    Cmd::Seq(v) => v.first(),
                    c => Some(c),
                };
                let is_case = matches!(first, Some(Cmd::Simple { words, .. })
                    if matches!(words.first(), Some(Word::Lit { text, quoted: false }) if text == "case"));
                if !is_case {
                    return Err(SyntaxError {
                        line: self.lx.line,
                        msg: "case missing in switch".into(),
                    });
                }
                self.advance()?;
                return Ok(Cmd::Switch {
                    subject,
                    body: Box::new(body),
                });
            }
            Some("fn") => {
                self.advance()?;
                let names = self.words()?;
                if self.tok.tok != Tok::LBrace {
                    return Ok(Cmd::Fn { names, body: None });
                }
                let body = self.brace()?;
                self.advance()?;
                return Ok(Cmd::Fn {
                    names,
                    body: Some(Rc::new(body)),
                });
            }
            Some("~") => {
                self.advance()?;
                let subject = self.word(true)?;
                let patterns = self.words()?;
                return Ok(Cmd::Twiddle { subject, patterns });
            }
            Some(k @ ("!" | "@")) => {
                let not = k == "!";
                self.advance()?;
                let c = self.cmd2(false)?;
                if matches!(c, Cmd::Empty) {
                    return self.syntax();
                }
                return Ok(if not {
                    Cmd::Not(Box::new(c))
                } else {
                    Cmd::Subshell(Box::new(c))
                });
            }
            _ => {}
        }
        if !is_word_tok(&self.tok.tok) {
            return Ok(Cmd::Empty);
        }
        let first = self.word(false)?;
        if self.tok.tok == Tok::Eq {
            self.advance()?;
            let value = if is_word_tok(&self.tok.tok) {
                self.word(true)?
            } else {
                Word::List(Vec::new())
            };
            // As in rc's yacc grammar, `x=v a | b` is `x=v {a | b}`, and the command
            // may be empty: `x=v | b`.
            let body = self.cmd2(true)?;
            return Ok(Cmd::Assign {
                name: first,
                value,
                body: if matches!(body, Cmd::Empty) {
                    None
                } else {
                    Some(Box::new(body))
                },
            });
        }
        let mut words = vec![first];
        let mut redirs = Vec::new();
        loop {
            if self.is_redir() {
                redirs.push(self.redir()?);
            } else if is_word_tok(&self.tok.tok) {
                words.push(self.word(true)?);
            } else {
                break;
            }
        }
        Ok(Cmd::Simple { words, redirs })
    }

    fn words(&mut self) -> R<Vec<Word>> {
        let mut v = Vec::new();
        while is_word_tok(&self.tok.tok) {
            v.push(self.word(true)?);
        }
        Ok(v)
    }

    /// A word, with its free and explicit carets. With `eqok` false, stop at `=`
    /// (the first word of a command may be an assignment).
    fn word(&mut self, eqok: bool) -> R<Word> {
        let mut w = self.word1()?;
        if self.tok.tok == Tok::Eq && !eqok {
            return Ok(w);
        }
        loop {
            if is_word_tok(&self.tok.tok) && !self.tok.spaced {
                if self.tok.tok == Tok::Eq && !eqok {
                    return Ok(w);
                }
                // No free carets around parentheses.
                if matches!(w, Word::List(_)) || self.tok.tok == Tok::LParen {
                    return self.syntax();
                }
                let r = self.word1()?;
                w = Word::Concat(Box::new(w), Box::new(r));
                continue;
            }
            if self.tok.tok == Tok::Caret {
                self.advance()?;
                let r = self.word1()?;
                w = Word::Concat(Box::new(w), Box::new(r));
                continue;
            }
            return Ok(w);
        }
    }

    fn word1(&mut self) -> R<Word> {
        crate::stack::guard(|| self.word1_inner())
    }

    fn word1_inner(&mut self) -> R<Word> {
        match self.tok.tok.clone() {
            Tok::Word { text, quoted } => {
                self.advance()?;
                Ok(Word::Lit { text, quoted })
            }
            Tok::Eq => {
                self.advance()?;
                Ok(Word::Lit {
                    text: "=".into(),
                    quoted: false,
                })
            }
            Tok::Dollar => {
                self.advance()?;
                let name = self.word1()?;
                if self.tok.tok == Tok::LParen && !self.tok.spaced {
                    self.advance()?;
                    let subs = self.words()?;
                    if self.tok.tok != Tok::RParen {
                        return self.syntax();
                    }
                    self.advance()?;
                    return Ok(Word::Sub(Box::new(name), subs));
                }
                Ok(Word::Var(Box::new(name)))
            }
            Tok::Join => {
                self.advance()?;
                Ok(Word::Join(Box::new(self.word1()?)))
            }
            Tok::Count => {
                self.advance()?;
                Ok(Word::Count(Box::new(self.word1()?)))
            }
            Tok::Backquote => {
                self.advance()?;
                let sep = if is_word_tok(&self.tok.tok) {
                    Some(Box::new(self.word(true)?))
                } else {
                    None
                };
                let body = self.brace()?;
                self.advance()?;
                Ok(Word::Backquote {
                    sep,
                    body: Rc::new(body),
                })
            }
            Tok::LParen => {
                self.advance()?;
                let v = self.words()?;
                if self.tok.tok != Tok::RParen {
                    return self.syntax();
                }
                self.advance()?;
                Ok(Word::List(v))
            }
            Tok::RedirBrace(kind) => {
                // The lexer took the `{`.
                self.lx.continued = true;
                self.advance()?;
                let body = self.cmds(true)?;
                if self.tok.tok != Tok::RBrace {
                    return self.syntax();
                }
                self.advance()?;
                Ok(Word::PipeFd {
                    kind,
                    body: Rc::new(body),
                })
            }
            _ => self.syntax(),
        }
    }
}

/// Parse a whole text (a `-c` argument, an `eval`'s words) into one command.
pub fn parse_text(text: &str) -> Result<Cmd, SyntaxError> {
    let lx = Lexer::new(Box::new(crate::lex::TextSource::new(text)));
    let mut p = Parser::new(lx);
    let mut v = Vec::new();
    while let Some(c) = p.line()? {
        v.push(c);
    }
    Ok(match v.len() {
        0 => Cmd::Empty,
        1 => v.pop().unwrap_or(Cmd::Empty),
        _ => Cmd::Seq(v),
    })
}

/// Whether a word's literal text has pattern characters (for globbing).
pub fn has_glob(s: &str) -> bool {
    s.contains(GLOB)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(s: &str) -> String {
        parse_text(s)
            .map(|c| c.to_string())
            .unwrap_or_else(|e| e.msg)
    }

    #[test]
    fn shapes() {
        assert_eq!(show("echo a b"), "echo a b");
        assert_eq!(show("echo $x.c"), "echo $x^.c");
        assert_eq!(show("x=1 y=2 cmd"), "x=1 y=2 cmd");
        assert_eq!(show("a | b | c"), "a|b|c");
        assert_eq!(show("a && b || c"), "a && b || c");
        assert_eq!(show("if(~ $1 a) echo yes"), "if(~ $1 a)echo yes");
        assert_eq!(show("for(i in 1 2) {echo $i}"), "for(i in 1 2){echo $i}");
        assert_eq!(show("echo a=b"), "echo a^=^b");
        assert_eq!(show("echo $x(1 2) $#x $\"x"), "echo $x(1 2) $#x $\"x");
        assert_eq!(show("echo `{ls}"), "echo `{ls}");
        assert_eq!(show(">[2=1] echo a | cat"), ">[2=1]echo a|cat");
        assert_eq!(show("x=`{echo a}"), "x=`{echo a}");
        assert_eq!(
            show("fn f {echo hi; ls | wc -l}"),
            "fn f {echo hi;ls|wc -l}"
        );
    }

    #[test]
    fn errors() {
        assert_eq!(show("echo )"), "token ')': syntax error");
        assert_eq!(show("echo (a b)c"), "token 'c': syntax error");
        assert_eq!(show("echo a &&"), "token EOF: syntax error");
        assert_eq!(show("echo >[x] a"), "token '>[x': redirection syntax");
        assert_eq!(show("if"), "token EOF: syntax error");
        assert_eq!(show("for(i in a)"), "token EOF: syntax error");
        assert_eq!(show("a |[2=] b"), "token '|[2=]': pipe syntax");
        assert_eq!(show("switch(x){echo a}"), "case missing in switch");
        assert_eq!(show("cat <<'a\nb'\nx\n"), "here document tag has a newline");
    }

    #[test]
    fn newlines_allowed() {
        assert_eq!(show("a &&\nb"), "a && b");
        assert_eq!(show("a |\nb"), "a|b");
        assert_eq!(
            show("switch(x)\n{case a\necho a\n}"),
            "switch (x) {case a;echo a}"
        );
    }
}
