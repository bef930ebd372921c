//! rc's lexical analysis (rc(1), "Lexical structure").
//!
//! Words are runs of characters other than blanks and `# ; & | ^ $ = ` ' { } ( ) < >`;
//! `'...'` quotes (with `''` for a quote); `#` starts a comment anywhere; a backslash
//! before a newline makes a blank. After `$`, `$#` or `$"` a name is lexed with the
//! narrower identifier rule, so that `$x.c` is `$x` and `.c`. Unquoted `* ? [` in words
//! are marked as pattern characters (see [`GLOB`]); quoted ones are not.
//!
//! Every token records whether blanks came before it: the parser joins adjacent words
//! (the "free carets" of rc(1)) and tells a subscript `$x(1)` from `$x (1)` by that.

use std::cell::RefCell;
use std::rc::Rc;

/// Marks the next character of a word as an active pattern character (`*`, `?`, `[`),
/// or, doubled, stands for itself.
pub const GLOB: char = '\u{1}';

/// Where lines come from: a whole text, or a terminal that is asked for more.
pub trait Source {
    /// The next line, with its newline if it has one; `None` at the end.
    /// `continued` says that the line continues an unfinished command (a prompt would
    /// be the second element of `$prompt`).
    fn next_line(&mut self, continued: bool) -> Option<String>;

    /// After `next_line` gave `None`: true if that was an interrupt (^C at a prompt)
    /// rather than the end of the input.
    fn interrupted(&mut self) -> bool {
        false
    }
}

/// A source over a text held in memory.
pub struct TextSource {
    text: String,
    pos: usize,
}

impl TextSource {
    pub fn new(text: impl Into<String>) -> TextSource {
        TextSource {
            text: text.into(),
            pos: 0,
        }
    }
}

impl Source for TextSource {
    fn next_line(&mut self, _continued: bool) -> Option<String> {
        if self.pos >= self.text.len() {
            return None;
        }
        let rest = &self.text[self.pos..];
        let end = rest.find('\n').map_or(rest.len(), |i| i + 1);
        self.pos += end;
        Some(rest[..end].to_string())
    }
}

/// A redirection's kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedirKind {
    Read,
    Write,
    Append,
    RdWr,
    Here,
}

/// The body of a here document, filled in when the lexer reaches its lines.
pub type HereBody = Rc<RefCell<Option<String>>>;

#[derive(Clone, Debug, PartialEq)]
pub enum Tok {
    /// A word; `text` carries [`GLOB`] marks; `quoted` if it was (any part) quoted.
    Word {
        text: String,
        quoted: bool,
    },
    Dollar,
    Count,
    Join,
    Backquote,
    Caret,
    Semi,
    Amp,
    AndAnd,
    OrOr,
    Newline,
    Eq,
    LParen,
    RParen,
    LBrace,
    RBrace,
    /// `|`, `|[n]` (left fd n), `|[n=m]`: the left side's fd and the right side's.
    Pipe {
        left: i32,
        right: i32,
    },
    /// `<`, `>`, `>>`, `<>`, `<<` with the fd they apply to.
    Redir {
        kind: RedirKind,
        fd: i32,
    },
    /// `>[n=m]` (dup m onto n) or `>[n=]` (close n).
    Dup {
        fd: i32,
        from: Option<i32>,
    },
    /// `<{`, `>{`, `<>{`: a command whose input or output is named by a file.
    RedirBrace(RedirKind),
    Eof,
}

#[derive(Clone, Debug)]
pub struct Token {
    pub tok: Tok,
    /// Blanks (or a comment) came before it.
    pub spaced: bool,
    pub line: u32,
}

/// A lexical error (a malformed redirection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LexError {
    pub msg: &'static str,
    pub token: String,
}

/// Where `-v` echoes input.
pub type Echo = Box<dyn FnMut(&str)>;

pub struct Lexer {
    src: Box<dyn Source>,
    buf: Vec<char>,
    pos: usize,
    /// Line of the character at `pos`.
    pub line: u32,
    eof: bool,
    lastdol: bool,
    /// Here documents whose bodies follow the current line.
    pending: Vec<(String, bool, HereBody)>,
    /// The text of everything read, for `fn` bodies and error messages.
    pub echo: Option<Echo>,
    /// Whether a command is being continued (for the prompt).
    pub continued: bool,
    /// The source was interrupted; input reads as ended until [`Lexer::take_interrupt`].
    intr: bool,
    /// A newline was read: here documents registered before it come next.
    here_due: bool,
}

fn wordchr(c: char) -> bool {
    !matches!(
        c,
        '\n' | ' '
            | '\t'
            | '#'
            | ';'
            | '&'
            | '|'
            | '^'
            | '$'
            | '='
            | '`'
            | '\''
            | '{'
            | '}'
            | '('
            | ')'
            | '<'
            | '>'
    )
}

pub fn idchr(c: char) -> bool {
    // Letters, digits, `_`, `*` and anything beyond ASCII.
    c > ' ' && !(c.is_ascii_punctuation() && c != '_' && c != '*')
}

impl Lexer {
    pub fn new(src: Box<dyn Source>) -> Lexer {
        Lexer {
            src,
            buf: Vec::new(),
            pos: 0,
            line: 1,
            eof: false,
            lastdol: false,
            pending: Vec::new(),
            echo: None,
            continued: false,
            intr: false,
            here_due: false,
        }
    }

    fn fill(&mut self) -> bool {
        if self.eof || self.intr {
            return false;
        }
        match self.src.next_line(self.continued) {
            Some(l) => {
                if let Some(e) = self.echo.as_mut() {
                    e(&l);
                }
                if self.pos > 4096 {
                    self.buf.drain(..self.pos);
                    self.pos = 0;
                }
                self.buf.extend(l.chars());
                true
            }
            None => {
                if self.src.interrupted() {
                    self.intr = true;
                } else {
                    self.eof = true;
                }
                false
            }
        }
    }

    fn peek(&mut self) -> Option<char> {
        if self.pos >= self.buf.len() && !self.fill() {
            return None;
        }
        self.buf.get(self.pos).copied()
    }

    fn peek2(&mut self) -> Option<char> {
        self.peek()?;
        if self.pos + 1 >= self.buf.len() && !self.fill() {
            return None;
        }
        self.buf.get(self.pos + 1).copied()
    }

    fn advance(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    fn nextis(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.advance();
            true
        } else {
            false
        }
    }

    /// Skip blanks, comments and backslash-newlines; true if any were skipped.
    fn skipwhite(&mut self) -> bool {
        let mut any = false;
        loop {
            match self.peek() {
                Some(' ' | '\t') => {
                    self.advance();
                    any = true;
                }
                Some('#') => {
                    while let Some(c) = self.peek() {
                        if c == '\n' {
                            break;
                        }
                        self.advance();
                    }
                    any = true;
                }
                Some('\\') if self.peek2() == Some('\n') => {
                    self.advance();
                    self.advance();
                    self.continued = true;
                    any = true;
                }
                _ => return any,
            }
        }
    }

    /// Skip newlines (and blanks) after `&&`, `||` and `|`.
    fn skipnl(&mut self) {
        loop {
            self.skipwhite();
            if self.peek() == Some('\n') {
                self.advance();
                self.flush_here();
                self.here_due = true;
                self.continued = true;
            } else {
                return;
            }
        }
    }

    /// True (once) if reading was interrupted; the unread input and pending here
    /// documents are dropped, so that reading starts afresh.
    pub fn take_interrupt(&mut self) -> bool {
        if !self.intr {
            return false;
        }
        self.intr = false;
        self.buf.clear();
        self.pos = 0;
        self.pending.clear();
        self.continued = false;
        self.lastdol = false;
        true
    }

    /// Register a here document: its body is read after the current line.
    pub fn here_doc(&mut self, tag: String, quoted: bool) -> HereBody {
        let body: HereBody = Rc::new(RefCell::new(None));
        self.pending.push((tag, quoted, Rc::clone(&body)));
        body
    }

    /// After a newline: read the bodies of the here documents registered before it.
    /// The parser registers a document only after it has seen the token after the tag
    /// (the newline, often), so the bodies are read when the next token is wanted, or
    /// when a command is complete.
    pub fn flush_here(&mut self) {
        if std::mem::take(&mut self.here_due) {
            self.read_here_docs();
        }
    }

    fn read_here_docs(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        for (tag, _quoted, body) in pending {
            let mut text = String::new();
            loop {
                let mut line = String::new();
                let mut ended = false;
                loop {
                    match self.advance() {
                        Some('\n') => break,
                        Some(c) => line.push(c),
                        None => {
                            ended = true;
                            break;
                        }
                    }
                }
                if line == tag {
                    break;
                }
                if ended && line.is_empty() {
                    break;
                }
                text.push_str(&line);
                text.push('\n');
                if ended {
                    break;
                }
            }
            *body.borrow_mut() = Some(text);
        }
    }

    /// Whether the input is used up.
    pub fn at_eof(&mut self) -> bool {
        self.peek().is_none()
    }

    /// Forget the rest of the current line (after a syntax error).
    pub fn skip_line(&mut self) {
        self.pending.clear();
        self.lastdol = false;
        while let Some(c) = self.peek() {
            self.advance();
            if c == '\n' {
                break;
            }
        }
    }

    pub fn token(&mut self) -> Result<Token, LexError> {
        self.flush_here();
        let spaced = self.skipwhite();
        let line = self.line;
        let tok = self.lex()?;
        Ok(Token { tok, spaced, line })
    }

    fn lex(&mut self) -> Result<Tok, LexError> {
        let lastdol = std::mem::replace(&mut self.lastdol, false);
        let Some(c) = self.advance() else {
            return Ok(Tok::Eof);
        };
        Ok(match c {
            '\n' => {
                self.here_due = true;
                Tok::Newline
            }
            '$' => {
                self.lastdol = true;
                if self.nextis('#') {
                    Tok::Count
                } else if self.nextis('"') {
                    Tok::Join
                } else {
                    Tok::Dollar
                }
            }
            '&' => {
                if self.nextis('&') {
                    self.skipnl();
                    Tok::AndAnd
                } else {
                    Tok::Amp
                }
            }
            '|' if self.nextis('|') => {
                self.skipnl();
                Tok::OrOr
            }
            '|' | '<' | '>' => return self.redir(c),
            '\'' => {
                let mut w = String::new();
                loop {
                    match self.advance() {
                        None => break,
                        Some('\'') => {
                            if self.peek() == Some('\'') {
                                self.advance();
                                w.push('\'');
                            } else {
                                break;
                            }
                        }
                        Some(GLOB) => {
                            w.push(GLOB);
                            w.push(GLOB);
                        }
                        Some(c) => w.push(c),
                    }
                }
                Tok::Word {
                    text: w,
                    quoted: true,
                }
            }
            '^' => Tok::Caret,
            ';' => Tok::Semi,
            '=' => Tok::Eq,
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            '{' => Tok::LBrace,
            '}' => Tok::RBrace,
            '`' => Tok::Backquote,
            c => {
                let mut w = String::new();
                let mut c = c;
                loop {
                    match c {
                        '*' | '?' | '[' => {
                            w.push(GLOB);
                            w.push(c);
                        }
                        GLOB => {
                            w.push(GLOB);
                            w.push(GLOB);
                        }
                        c => w.push(c),
                    }
                    match self.peek() {
                        Some(n) if (if lastdol { idchr(n) } else { wordchr(n) }) => {
                            if n == '\\' && self.peek2() == Some('\n') {
                                break;
                            }
                            self.advance();
                            c = n;
                        }
                        _ => break,
                    }
                }
                Tok::Word {
                    text: w,
                    quoted: false,
                }
            }
        })
    }

    fn redir(&mut self, c: char) -> Result<Tok, LexError> {
        let mut text = String::from(c);
        let mut kind = RedirKind::Read;
        let mut fd: i32;
        match c {
            '|' => fd = 1,
            '>' => {
                fd = 1;
                if self.nextis('>') {
                    kind = RedirKind::Append;
                    text.push('>');
                } else {
                    kind = RedirKind::Write;
                }
            }
            _ => {
                fd = 0;
                if self.nextis('<') {
                    kind = RedirKind::Here;
                    text.push('<');
                } else if self.nextis('>') {
                    kind = RedirKind::RdWr;
                    text.push('>');
                }
            }
        }
        let err = |text: String, pipe: bool| LexError {
            msg: if pipe {
                "pipe syntax"
            } else {
                "redirection syntax"
            },
            token: text,
        };
        if c != '|'
            && kind != RedirKind::Here
            && kind != RedirKind::Append
            && self.peek() == Some('{')
        {
            self.advance();
            return Ok(Tok::RedirBrace(kind));
        }
        let mut right = 0;
        let mut dup: Option<Option<i32>> = None;
        if self.nextis('[') {
            text.push('[');
            let num = |lx: &mut Lexer, text: &mut String| -> Option<i32> {
                let mut n: i64 = 0;
                let mut any = false;
                while let Some(d) = lx.peek().filter(char::is_ascii_digit) {
                    lx.advance();
                    text.push(d);
                    n = (n * 10 + (d as i64 - '0' as i64)).min(i32::MAX as i64);
                    any = true;
                }
                any.then_some(n as i32)
            };
            let Some(n) = num(self, &mut text) else {
                // The message shows the character that does not belong.
                if let Some(x) = self.peek().filter(|&x| x != '\n') {
                    text.push(x);
                }
                return Err(err(text, c == '|'));
            };
            fd = n;
            if self.nextis('=') {
                text.push('=');
                match num(self, &mut text) {
                    Some(m) => {
                        if c == '|' {
                            // |[a=b]: the left side's b goes to the right side's a.
                            right = fd;
                            fd = m;
                        } else {
                            dup = Some(Some(m));
                        }
                    }
                    None => {
                        if c == '|' {
                            if let Some(x) = self.peek().filter(|&x| x != '\n') {
                                text.push(x);
                            }
                            return Err(err(text, true));
                        }
                        dup = Some(None);
                    }
                }
            }
            if !self.nextis(']') {
                return Err(err(text, c == '|'));
            }
            if dup.is_some() && (kind == RedirKind::Here || kind == RedirKind::Append) {
                return Err(err(text, false));
            }
        }
        if c == '|' {
            self.skipnl();
            return Ok(Tok::Pipe { left: fd, right });
        }
        if let Some(from) = dup {
            return Ok(Tok::Dup { fd, from });
        }
        Ok(Tok::Redir { kind, fd })
    }
}

/// Remove [`GLOB`] marks: the word as plain text.
pub fn unglob(s: &str) -> String {
    if !s.contains(GLOB) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == GLOB {
            if let Some(n) = it.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<(Tok, bool)> {
        let mut lx = Lexer::new(Box::new(TextSource::new(s)));
        let mut v = Vec::new();
        loop {
            let t = lx.token().unwrap();
            if t.tok == Tok::Eof {
                return v;
            }
            v.push((t.tok, t.spaced));
        }
    }

    fn w(s: &str) -> Tok {
        Tok::Word {
            text: s.into(),
            quoted: false,
        }
    }

    #[test]
    fn words_and_dollars() {
        assert_eq!(
            toks("echo $x.c"),
            vec![
                (w("echo"), false),
                (Tok::Dollar, true),
                (w("x"), false),
                (w(".c"), false)
            ]
        );
        assert_eq!(toks("a#b c"), vec![(w("a"), false)]);
        assert_eq!(
            toks("'it''s' *.c"),
            vec![
                (
                    Tok::Word {
                        text: "it's".into(),
                        quoted: true
                    },
                    false
                ),
                (w("\u{1}*.c"), true)
            ]
        );
        assert_eq!(toks("a\\\nb"), vec![(w("a"), false), (w("b"), true)]);
    }

    #[test]
    fn redirections() {
        assert_eq!(
            toks(">[2=1]")[0].0,
            Tok::Dup {
                fd: 2,
                from: Some(1)
            }
        );
        assert_eq!(toks(">[2=]")[0].0, Tok::Dup { fd: 2, from: None });
        assert_eq!(toks("|[2]")[0].0, Tok::Pipe { left: 2, right: 0 });
        assert_eq!(toks("<{")[0].0, Tok::RedirBrace(RedirKind::Read));
        assert_eq!(
            toks(">>[3]")[0].0,
            Tok::Redir {
                kind: RedirKind::Append,
                fd: 3
            }
        );
        let mut lx = Lexer::new(Box::new(TextSource::new(">[x]")));
        assert_eq!(lx.token().unwrap_err().msg, "redirection syntax");
        let mut lx = Lexer::new(Box::new(TextSource::new("|[2=]")));
        assert_eq!(lx.token().unwrap_err().msg, "pipe syntax");
    }
}
