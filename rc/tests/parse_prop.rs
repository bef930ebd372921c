//! Property tests of rc's lexer and parser (`rc::parse`) and of the printing of commands
//! (`Display`, which `whatis` and the environment use for functions).
//!
//! - no text makes `parse::parse_text` panic or hang: arbitrary strings, soups of rc's
//!   special characters and soups of rc tokens; each parse runs on a thread of its
//!   own with a large stack and must return (`Ok` or `Err`) within 5 s. The same
//!   texts are also read a line at a time with `Parser::line`, recovering after each
//!   syntax error as an interactive rc does; that must end too;
//! - programs generated from a grammar of valid rc (words, quotes, lists, `$x`, `$#x`,
//!   `$"x`, `$x(1)`, concatenation, backquotes, `<{}`, redirections, pipes, `&&`,
//!   `||`, `!`, `@`, `if`, `if not`, `for`, `while`, `switch`, `fn`, `~`, braces,
//!   assignments, `&`, comments, continued lines) parse; printed, re-parsed and printed
//!   again they give the same text; the re-parsed command has the same structure
//!   ([`shape`], which ignores only how a command was written: where its
//!   redirections were, the parentheses around a `switch` subject); and the printed
//!   text read back as a function body (`fn f {text}`, as functions come in from the
//!   environment) gives the same text and structure again;
//! - fixed examples of every construct, and the printing of here documents.
//!
//! Redirection targets include words that begin with `<`, `>`, `[` and `<{`, which
//! the printer once glued to the operator (found by fuzzing, since fixed).
//!
//! The case counts (each block's `ProptestConfig`) keep the whole file to a few
//! seconds in a debug build; for a long soak, raise them (or set `PROPTEST_CASES`),
//! or run the cargo-fuzz target in `rc/fuzz`.

use proptest::prelude::*;
use rc::ast::{Cmd, Redir, RedirOp, Word};
use rc::lex::{Lexer, TextSource};
use rc::parse::{Parser, SyntaxError, parse_text};
use std::sync::mpsc;
use std::time::Duration;

// ---------------------------------------------------------------------------
// Running the parser with a time limit
// ---------------------------------------------------------------------------

/// How long one parse may take.
const LIMIT: Duration = Duration::from_secs(5);
/// The parser recurses once per nesting level; a random text of a few hundred
/// characters must not overflow the stack of the thread it runs on (a known
/// limitation: see `deep_nesting_does_not_crash` in `tests/rc_garbage.rs`).
const STACK: usize = 32 << 20;

/// Run `f` on `text` on a thread of its own; panic (failing the case) if it panics or
/// does not return within [`LIMIT`].
fn bounded<T: Send + 'static>(text: &str, f: fn(&str) -> T) -> T {
    let (tx, rx) = mpsc::channel();
    let owned = text.to_owned();
    std::thread::Builder::new()
        .name("parse".into())
        .stack_size(STACK)
        .spawn(move || {
            let r = std::panic::catch_unwind(|| f(&owned));
            let _ = tx.send(r);
        })
        .expect("spawn a parser thread");
    match rx.recv_timeout(LIMIT) {
        Ok(Ok(v)) => v,
        Ok(Err(p)) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("the parser panicked ({msg}) on {text:?}")
        }
        Err(_) => panic!("the parser did not return within {LIMIT:?} on {text:?}"),
    }
}

/// `parse_text`, and the printed form of what it gives (so that printing is exercised
/// on whatever parses).
fn parse_and_print(text: &str) -> Result<String, SyntaxError> {
    let c = parse_text(text)?;
    let _ = format!("{c:?}");
    Ok(c.to_string())
}

/// Read `text` a line at a time as an interactive rc does, skipping the rest of a line
/// after a syntax error. Every call of `line` reads at least one token, so it must end
/// within a step per character. Returns the number of commands and of errors.
fn line_by_line(text: &str) -> (usize, usize) {
    let mut p = Parser::new(Lexer::new(Box::new(TextSource::new(text))));
    let (mut cmds, mut errs) = (0, 0);
    for _ in 0..text.chars().count() + 2 {
        match p.line() {
            Ok(None) => return (cmds, errs),
            Ok(Some(c)) => {
                let _ = c.to_string();
                cmds += 1;
            }
            Err(_) => {
                p.recover();
                errs += 1;
            }
        }
    }
    panic!("Parser::line made no progress on {text:?}");
}

fn no_panic_no_hang(text: &str) {
    let _ = bounded(text, parse_and_print);
    let _ = bounded(text, line_by_line);
}

// ---------------------------------------------------------------------------
// The structure of a command, up to how it was written
// ---------------------------------------------------------------------------

/// A command as an S-expression that says what it does and not how it was written:
/// redirections written before or after a command, or nested, are one list in the
/// order they apply; nested sequences are flattened and empty commands in them
/// dropped; a `switch` subject `(x)` is `x`; the body of a here document (which
/// printing leaves out) is not shown, but its tag and whether `$` is substituted are.
fn shape(c: &Cmd) -> String {
    match c {
        Cmd::Empty => "()".into(),
        Cmd::Simple { .. } | Cmd::Brace { .. } | Cmd::Redirected { .. } => {
            let mut redirs = Vec::new();
            let core = peel(c, &mut redirs);
            if redirs.is_empty() {
                core
            } else {
                let rs: Vec<String> = redirs.iter().map(|r| redir_shape(r)).collect();
                format!("(redir [{}] {core})", rs.join(" "))
            }
        }
        Cmd::Assign { name, value, body } => format!(
            "(= {} {} {})",
            word_shape(name),
            word_shape(value),
            body.as_deref().map_or("-".into(), shape)
        ),
        Cmd::Seq(_) => {
            let mut v = Vec::new();
            flatten_seq(c, &mut v);
            match v.len() {
                0 => "()".into(),
                1 => v.pop().unwrap_or_default(),
                _ => format!("(seq {})", v.join(" ")),
            }
        }
        Cmd::Async(c) => format!("(& {})", shape(c)),
        Cmd::And(a, b) => format!("(&& {} {})", shape(a), shape(b)),
        Cmd::Or(a, b) => format!("(|| {} {})", shape(a), shape(b)),
        Cmd::Not(c) => format!("(! {})", shape(c)),
        Cmd::Subshell(c) => format!("(@ {})", shape(c)),
        Cmd::Pipe {
            left,
            right,
            lfd,
            rfd,
        } => format!("(| {lfd} {rfd} {} {})", shape(left), shape(right)),
        Cmd::If { cond, body } => format!("(if {} {})", shape(cond), shape(body)),
        Cmd::IfNot(c) => format!("(ifnot {})", shape(c)),
        Cmd::For { var, list, body } => format!(
            "(for {} {} {})",
            word_shape(var),
            list.as_deref().map_or("-".into(), words_shape),
            shape(body)
        ),
        Cmd::While { cond, body } => format!("(while {} {})", shape(cond), shape(body)),
        Cmd::Switch { subject, body } => {
            let subject = match subject {
                Word::List(v) if v.len() == 1 => &v[0],
                w => w,
            };
            format!("(switch {} {})", word_shape(subject), shape(body))
        }
        Cmd::Fn { names, body } => format!(
            "(fn {} {})",
            words_shape(names),
            body.as_deref().map_or("-".into(), shape)
        ),
        Cmd::Twiddle { subject, patterns } => {
            format!("(~ {} {})", word_shape(subject), words_shape(patterns))
        }
    }
}

/// The redirections of a (possibly redirected) simple command or brace, outermost
/// first, and the shape of what they apply to.
fn peel<'a>(c: &'a Cmd, redirs: &mut Vec<&'a Redir>) -> String {
    match c {
        Cmd::Simple { words, redirs: rs } => {
            redirs.extend(rs);
            format!("(simple {})", words_shape(words))
        }
        Cmd::Brace { body, redirs: rs } => {
            redirs.extend(rs);
            format!("(brace {})", shape(body))
        }
        Cmd::Redirected { redirs: rs, cmd } => {
            redirs.extend(rs);
            peel(cmd, redirs)
        }
        c => shape(c),
    }
}

fn flatten_seq(c: &Cmd, out: &mut Vec<String>) {
    match c {
        Cmd::Seq(v) => v.iter().for_each(|c| flatten_seq(c, out)),
        Cmd::Empty => {}
        c => out.push(shape(c)),
    }
}

fn redir_shape(r: &Redir) -> String {
    match &r.op {
        RedirOp::File(kind, w) => format!("({kind:?} {} {})", r.fd, word_shape(w)),
        RedirOp::Here { subst, tag, .. } => format!("(Here {} {tag:?} subst={subst})", r.fd),
        RedirOp::Dup(from) => format!("(dup {} {from})", r.fd),
        RedirOp::Close => format!("(close {})", r.fd),
    }
}

fn words_shape(ws: &[Word]) -> String {
    let v: Vec<String> = ws.iter().map(word_shape).collect();
    format!("[{}]", v.join(" "))
}

fn word_shape(w: &Word) -> String {
    match w {
        // Quoted or not, the same marked text is the same word.
        Word::Lit { text, .. } => format!("{text:?}"),
        Word::Var(w) => format!("($ {})", word_shape(w)),
        Word::Sub(w, subs) => format!("($() {} {})", word_shape(w), words_shape(subs)),
        Word::Count(w) => format!("($# {})", word_shape(w)),
        Word::Join(w) => format!("($\" {})", word_shape(w)),
        Word::Concat(a, b) => format!("(^ {} {})", word_shape(a), word_shape(b)),
        Word::List(v) => format!("(list {})", words_shape(v)),
        Word::Backquote { sep, body } => format!(
            "(` {} {})",
            sep.as_deref().map_or("-".into(), word_shape),
            shape(body)
        ),
        Word::PipeFd { kind, body } => format!("(pipefd {kind:?} {})", shape(body)),
    }
}

/// Parse, print, re-parse, print: the same text and the same structure, and the same
/// again through a function body. Returns the printed text.
fn check_round_trip(text: &str) -> Result<String, TestCaseError> {
    let c1 = parse_text(text)
        .map_err(|e| TestCaseError::fail(format!("{text:?} does not parse: {e:?}")))?;
    let p1 = c1.to_string();
    let c2 = parse_text(&p1).map_err(|e| {
        TestCaseError::fail(format!(
            "the printed form does not parse: {e:?}\n input   {text:?}\n printed {p1:?}"
        ))
    })?;
    let p2 = c2.to_string();
    prop_assert_eq!(
        &p1,
        &p2,
        "printing the re-parsed command changed it; input {:?}",
        text
    );
    prop_assert_eq!(
        shape(&c1),
        shape(&c2),
        "the printed form means something else\n input   {:?}\n printed {:?}",
        text,
        &p1
    );
    let f = format!("fn f {{{p1}}}\n");
    match parse_text(&f) {
        Ok(Cmd::Fn {
            body: Some(body), ..
        }) => {
            prop_assert_eq!(
                body.to_string(),
                p1.clone(),
                "as a function body the printed form changed; input {:?}",
                text
            );
            prop_assert_eq!(
                shape(&body),
                shape(&c1),
                "as a function body the printed form means something else; input {:?}",
                text
            );
        }
        other => {
            return Err(TestCaseError::fail(format!(
                "{f:?} is not a function definition: {other:?}; input {text:?}"
            )));
        }
    }
    Ok(p1)
}

// ---------------------------------------------------------------------------
// Strategies: garbage
// ---------------------------------------------------------------------------

/// rc's special characters, blanks and newlines, and a few ordinary ones.
const SPECIALS: &[char] = &[
    '\'', '^', '$', '`', '{', '}', '(', ')', '<', '>', '|', '&', ';', '=', '#', '~', '!', '@', '[',
    ']', '*', '?', '\\', '"', '\n', '\n', ' ', ' ', '\t', 'a', 'x', 'f', 'i', '1', '2', '0', '-',
    '.', '/', '\u{1}', 'é',
];

fn special_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(SPECIALS), 0..160).prop_map(String::from_iter)
}

/// Pieces of rc: keywords, operators, redirections, here documents, quotes.
const FRAGMENTS: &[&str] = &[
    "if", "if not", "for", "in", "while", "switch", "case", "fn", "~", "!", "@", "not", "(", ")",
    "{", "}", "`{", "`", "$", "$#", "$\"", "$*", "x", "y", "echo", "a*", "[a-z]", "=", "^", ";",
    "&", "&&", "||", "|", "|[2]", "|[0=3]", "|[2=]", "<", ">", ">>", "<>", "<<", "<<EOF\n",
    "EOF\n", "<<'EOF'", ">[2=1]", ">[2=]", ">[2]", ">[x]", "<[3]", "<{", ">{", "<>{", "'", "'a b'",
    "''", "\n", "\\\n", "#c\n", "x=", "(a b)", "$x(1)", "$x(2-)", "$#x", "$$x", "\u{1}",
];

fn token_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(
        (
            prop::sample::select(FRAGMENTS),
            prop::sample::select(&["", " ", "\n"][..]),
        ),
        0..48,
    )
    .prop_map(|v| v.into_iter().flat_map(|(a, b)| [a, b]).collect())
}

// ---------------------------------------------------------------------------
// Strategies: valid rc
// ---------------------------------------------------------------------------

/// Plain words for any position (not keywords, not starting with `[`).
const NAMES: &[&str] = &[
    "a", "b", "x", "echo", "cat", "ls", "x1", "foo_bar", "-n", "a.b", "/usr/bin", "./x", "..", "é",
    "%", "a-b", "1", "0", "case", "\u{1}",
];
/// Words that are fine as arguments but not first in a command.
const ARGS: &[&str] = &[
    "a=b", "if", "for", "in", "not", "while", "switch", "fn", "!", "@", "~", "*.c", "a?", "[a-c]*",
    "x*y",
];
const VARS: &[&str] = &["x", "y", "path", "*", "1", "2", "status", "ifs", "é"];

fn name() -> impl Strategy<Value = String> + Clone {
    prop::sample::select(NAMES).prop_map(str::to_owned)
}

fn var() -> impl Strategy<Value = String> + Clone {
    prop::sample::select(VARS).prop_map(str::to_owned)
}

/// A quoted word: anything, with `'` doubled.
fn quoted() -> impl Strategy<Value = String> + Clone {
    prop::collection::vec(
        prop_oneof![
            4 => prop::char::range('a', 'z'),
            2 => prop::sample::select(SPECIALS),
            1 => any::<char>(),
        ],
        0..8,
    )
    .prop_map(|v| format!("'{}'", String::from_iter(v).replace('\'', "''")))
}

/// `$x`, `$#x`, `$"x`, `$x(2)`, `$x(2-)`, `$x(1 3)`, `$$x`, `$x.c` (a free caret).
fn var_ref() -> impl Strategy<Value = String> + Clone {
    (var(), 0..8u8).prop_map(|(v, k)| match k {
        0 => format!("${v}"),
        1 => format!("$#{v}"),
        2 => format!("$\"{v}"),
        3 => format!("${v}(2)"),
        4 => format!("${v}(2-)"),
        5 => format!("${v}(1 3)"),
        6 => format!("$${v}"),
        _ => format!("${v}.c"),
    })
}

/// A word that may start a command or be a redirection's target.
fn head_word() -> impl Strategy<Value = String> + Clone {
    prop_oneof![4 => name(), 2 => quoted(), 2 => var_ref()]
}

/// Words without commands inside.
fn leaf_word() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        4 => head_word(),
        1 => prop::sample::select(ARGS).prop_map(str::to_owned),
        1 => (head_word(), head_word()).prop_map(|(a, b)| format!("{a}^{b}")),
        1 => prop::collection::vec(head_word(), 0..4).prop_map(|v| format!("({})", v.join(" "))),
    ]
}

/// Any word, with commands from `cmd` inside backquotes and `<{}`.
fn word(cmd: BoxedStrategy<String>) -> BoxedStrategy<String> {
    prop_oneof![
        8 => leaf_word(),
        1 => (leaf_word(), leaf_word()).prop_map(|(a, b)| format!("{a}^{b}")),
        1 => (prop::collection::vec(leaf_word(), 1..4), leaf_word())
            .prop_map(|(v, b)| format!("({})^{b}", v.join(" "))),
        1 => cmd.clone().prop_map(|c| format!("`{{{c}}}")),
        1 => (quoted(), cmd.clone()).prop_map(|(s, c)| format!("`{s}{{{c}}}")),
        1 => (prop::sample::select(&["<", ">", "<>"][..]), cmd)
            .prop_map(|(k, c)| format!("{k}{{{c}}}")),
    ]
    .boxed()
}

/// A redirection; its target may begin with characters that are operators too
/// (`'<x'`, `[x`, `<{...}`), which the printer must keep apart from the operator.
fn redir() -> impl Strategy<Value = String> + Clone {
    (
        prop::sample::select(
            &[
                ">", ">>", "<", "<>", ">[2]", "<[3]", ">>[5]", ">[2=1]", ">[3=]", ">[1=2]",
            ][..],
        ),
        prop_oneof![
            6 => head_word(),
            // Written apart from the operator: glued, they would lex as another one.
            1 => prop::sample::select(&[" '<x'", " '>y'", " '{z'", " [w", " <{echo a}", " >{cat}"][..])
                .prop_map(str::to_owned),
        ],
        prop::sample::select(&["", " "][..]),
    )
        .prop_map(|(op, w, sp)| {
            if op.contains('=') {
                op.to_owned()
            } else {
                format!("{op}{sp}{w}")
            }
        })
}

/// A simple command: a first word, arguments, and redirections (after the words, or
/// before the command) if `redirs`.
fn simple(cmd: BoxedStrategy<String>, redirs: bool) -> BoxedStrategy<String> {
    let nr = if redirs { 0..3usize } else { 0..1usize };
    (
        head_word(),
        prop::collection::vec(word(cmd), 0..4),
        prop::collection::vec(redir(), nr.clone()),
        prop::collection::vec(redir(), nr),
    )
        .prop_map(|(first, args, after, before)| {
            let mut s = String::new();
            for r in before {
                s.push_str(&r);
                s.push(' ');
            }
            s.push_str(&first);
            for w in args.iter().chain(&after) {
                s.push(' ');
                s.push_str(w);
            }
            s
        })
        .boxed()
}

/// Separators between commands of a sequence.
fn sep() -> impl Strategy<Value = &'static str> + Clone {
    prop::sample::select(&[";", "; ", "\n", " &\n", "&", " # a comment\n", "\n\n"][..])
}

fn seq(cmd: BoxedStrategy<String>) -> BoxedStrategy<String> {
    (cmd.clone(), prop::collection::vec((sep(), cmd), 0..3))
        .prop_map(|(first, rest)| {
            let mut s = first;
            for (sep, c) in rest {
                s.push_str(sep);
                s.push_str(&c);
            }
            s
        })
        .boxed()
}

/// Commands of rc; `inner` gives nested commands. What this returns may be followed by
/// anything; [`safe_left`] lists what may also stand left of a `|`.
fn compound(inner: BoxedStrategy<String>) -> BoxedStrategy<String> {
    let braced = seq(inner.clone()).prop_map(|c| format!("{{{c}}}")).boxed();
    let left = safe_left(inner.clone(), braced.clone());
    let w = word(inner.clone());
    prop_oneof![
        3 => simple(inner.clone(), true),
        2 => left.clone(),
        // Pipes, with any command on the left (redirections at its end included).
        2 => (left.clone(), prop::sample::select(&["|", " | ", "|[2]", " |[0=3] ", "|\n", " |[5=3] "][..]), inner.clone())
            .prop_map(|(a, p, b)| format!("{a}{p}{b}")),
        1 => (inner.clone(), prop::sample::select(&["|", " |[2=1] "][..]), inner.clone())
            .prop_map(|(a, p, b)| format!("{a}{p}{b}")),
        1 => (inner.clone(), prop::sample::select(&[" && ", "||", " &&\n", " || "][..]), inner.clone())
            .prop_map(|(a, op, b)| format!("{a}{op}{b}")),
        1 => inner.clone().prop_map(|c| format!("! {c}")),
        1 => inner.clone().prop_map(|c| format!("@ {c}")),
        1 => (braced.clone(), prop::collection::vec(redir(), 1..3))
            .prop_map(|(b, rs)| format!("{b} {}", rs.join(" "))),
        1 => (head_word(), w.clone(), inner.clone()).prop_map(|(n, v, c)| format!("{n}={v} {c}")),
        1 => (inner.clone(), inner.clone(), prop::sample::select(&["\n", ";"][..]))
            .prop_map(|(a, b, s)| format!("if(~ $x a) {a}{s}if not {b}")),
        1 => (inner.clone(), inner.clone()).prop_map(|(c, b)| format!("if({c}) {b}")),
        1 => (inner.clone(), inner).prop_map(|(c, b)| format!("while({c})\n{b}")),
    ]
    .boxed()
}

/// Commands that may stand left of `|`: no redirection at their end (printing puts
/// redirections in front, where they would take in the whole pipeline).
fn safe_left(inner: BoxedStrategy<String>, braced: BoxedStrategy<String>) -> BoxedStrategy<String> {
    let w = word(inner.clone());
    prop_oneof![
        3 => simple(inner.clone(), false),
        2 => braced.clone(),
        1 => (head_word(), prop::collection::vec(w.clone(), 0..3), braced.clone())
            .prop_map(|(v, l, b)| format!("for({v} in {}) {b}", l.join(" "))),
        1 => (head_word(), braced.clone()).prop_map(|(v, b)| format!("for({v})\n{b}")),
        1 => (inner.clone(), braced.clone()).prop_map(|(c, b)| format!("if({c}) {b}")),
        1 => (inner.clone(), braced.clone()).prop_map(|(c, b)| format!("while({c}) {b}")),
        1 => (
            w.clone(),
            prop::sample::select(&["", "\n"][..]),
            prop::collection::vec((prop::collection::vec(leaf_word(), 1..3), seq(inner.clone())), 1..3),
        )
            .prop_map(|(subject, nl, cases)| {
                let cases: Vec<String> = cases
                    .into_iter()
                    .map(|(pats, body)| format!("case {}\n{body}", pats.join(" ")))
                    .collect();
                format!("switch({subject}){nl}{{{}\n}}", cases.join("\n"))
            }),
        1 => (head_word(), w.clone(), braced.clone())
            .prop_map(|(n, m, b)| format!("switch {n}^{m} {{case x; {b}}}")),
        1 => (prop::collection::vec(head_word(), 1..3), braced.clone())
            .prop_map(|(ns, b)| format!("fn {} {b}", ns.join(" "))),
        1 => head_word().prop_map(|n| format!("fn {n}")),
        1 => (w.clone(), prop::collection::vec(w.clone(), 0..3))
            .prop_map(|(s, ps)| format!("~ {s} {}", ps.join(" "))),
        1 => (head_word(), prop_oneof![w.clone(), Just("()".to_owned())])
            .prop_map(|(n, v)| format!("{n}={v}")),
        1 => (name(), name(), name()).prop_map(|(a, b, c)| format!("{a} \\\n\t{b} {c}")),
    ]
    .boxed()
}

/// Programs: sequences of commands, nested up to a few levels.
fn program() -> BoxedStrategy<String> {
    let leaf = prop_oneof![
        simple(Just("echo".to_owned()).boxed(), true),
        (name(), name()).prop_map(|(a, b)| format!("{a} {b}")),
    ]
    .boxed();
    let cmd = leaf
        .prop_recursive(4, 40, 4, |inner| compound(inner.boxed()))
        .boxed();
    seq(cmd)
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Arbitrary text: no panic, no hang.
    #[test]
    fn arbitrary_text_returns(s in "(?s).{0,120}") {
        no_panic_no_hang(&s);
    }

    /// rc's special characters in any order: no panic, no hang.
    #[test]
    fn special_characters_return(s in special_soup()) {
        no_panic_no_hang(&s);
    }

    /// rc's tokens in any order: no panic, no hang.
    #[test]
    fn token_soup_returns(s in token_soup()) {
        no_panic_no_hang(&s);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Valid programs parse, and print as text that reads back as the same program.
    #[test]
    fn valid_programs_round_trip(text in program()) {
        check_round_trip(&text)?;
    }
}

// ---------------------------------------------------------------------------
// Fixed examples
// ---------------------------------------------------------------------------

fn round_trips(text: &str) -> String {
    check_round_trip(text).unwrap_or_else(|e| panic!("{e}"))
}

/// Each of `texts` round-trips; if not, the failures of all of them.
fn all_round_trip(texts: &[&str]) {
    let failures: Vec<String> = texts
        .iter()
        .filter_map(|t| check_round_trip(t).err().map(|e| format!("{t:?}: {e}")))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_construct_round_trips() {
    for (text, printed) in [
        (
            "echo hello 'it''s' *.c [a-z]? # comment",
            "echo hello 'it''s' *.c [a-z]?",
        ),
        ("echo a=b", "echo a^=^b"),
        ("x=(a b 'c d' '')", "x=(a b 'c d' '')"),
        ("x=() y=1 cmd", "x=() y=1 cmd"),
        (
            "echo $x $#x $\"x $x(2) $x(2-) $x(1 3) $$y $x.c $* $1",
            "echo $x $#x $\"x $x(2) $x(2-) $x(1 3) $$y $x^.c $* $1",
        ),
        ("echo a^(b c)^d", "echo a^(b c)^d"),
        ("echo `{ls -l} `:{cat}", "echo `{ls -l} `:{cat}"),
        ("cmp <{a} >{b} <>{c}", "cmp <{a} >{b} <>{c}"),
        (
            "cat <in >out >>app <>rw >[2]err >[2=1] >[3=] <[3]x",
            "<in >out >>app <>rw >[2]err >[2=1]>[3=]<[3]x cat",
        ),
        ("a |[2] b |[0=3] c | d", "a|[2]b|[3]c|d"),
        ("a && b || c", "a && b || c"),
        ("! a | b", "! a|b"),
        ("@ {cd /; pwd}", "@ {cd /;pwd}"),
        ("a & b &", "a&;b&"),
        (
            "if(~ $1 a*) echo yes\nif not echo no",
            "if(~ $1 a*)echo yes;if not echo no",
        ),
        ("for(i in 1 2 3) echo $i", "for(i in 1 2 3)echo $i"),
        ("for(i) {echo $i; shift}", "for(i){echo $i;shift}"),
        (
            "while(! test -f done) sleep 1",
            "while (! test -f done)sleep 1",
        ),
        (
            "switch($1){\ncase a b*\n\techo ab\ncase *\n\techo other\n}",
            "switch ($1) {case a b*;echo ab;case *;echo other}",
        ),
        ("switch x\n{case x; echo x}", "switch (x) {case x;echo x}"),
        ("fn f g {echo in f $*}", "fn f g {echo in f $*}"),
        ("fn f", "fn f"),
        ("{echo a; echo b} >x", ">x {echo a;echo b}"),
        ("~ $x ?* 'a'", "~ $x ?* 'a'"),
        ("echo a \\\n\tb", "echo a b"),
        ("a |\n b &&\n c", "a|b && c"),
    ] {
        assert_eq!(round_trips(text), printed, "printing {text:?}");
    }
}

/// A here document prints with its body after the line, so that a function with one
/// keeps it when it goes through the environment.
#[test]
fn here_document_round_trips() {
    assert_eq!(
        round_trips("cat <<EOF\nbody $x\nEOF\necho after"),
        "<<EOF cat\nbody $x\nEOF\necho after"
    );
    assert_eq!(
        round_trips("cat <<[3]END >x\nbody\nEND\n"),
        "<<[3]END >x cat\nbody\nEND\n"
    );
}

/// Each of these is a syntax error (and stays one when read line by line).
#[test]
fn syntax_errors() {
    for text in [
        "echo )",
        "echo (a b)c",
        "if",
        "for(i in",
        "echo >[x] a",
        "a |[2=] b",
        "switch(x){echo a}",
        "a &&",
        "! ",
        "{",
        "`{echo",
        "$x(1",
        "fn f {",
    ] {
        assert!(parse_text(text).is_err(), "{text:?} parses");
        let (_, errs) = bounded(text, line_by_line);
        assert!(errs > 0, "{text:?} parses line by line");
    }
}

// ---------------------------------------------------------------------------
// Printing bugs found by fuzzing, fixed
// ---------------------------------------------------------------------------

/// A quoted here-document tag prints unquoted: the document is then substituted
/// (`$x` expands) when the function comes back from the environment, and a tag with
/// blanks or `;` reads back as something else.
#[test]
fn quoted_here_tag_round_trips() {
    all_round_trip(&["cat <<'EOF'\n$x\nEOF\n", "cat <<'a;b'\nhi\na;b\n"]);
}

/// A redirection or pipe operator is printed glued to the word after it, which then
/// reads as part of the operator: `< <{a}` becomes `<<{a}`, `| [x]` becomes `|[x]`.
#[test]
fn operator_then_bracket_word_round_trips() {
    all_round_trip(&[
        "cat < <{echo a}",
        "cat > >{cat}",
        "a | [x] b",
        "a | [2] b",
        "echo > [2]x",
    ]);
}

/// `|[a=b]` (the left side's b to the right side's a) prints as `|[b=a]`. plan9port
/// prints it the same way.
#[test]
fn pipe_with_both_descriptors_round_trips() {
    all_round_trip(&["a |[5=3] b"]);
}

/// A redirected command on the left of a pipe prints as `>x a|b`, which redirects the
/// whole pipeline. plan9port prints it the same way.
#[test]
fn redirection_left_of_pipe_round_trips() {
    all_round_trip(&["echo a >x | cat", "{echo a} >x | cat", "a | b >[2=1] | c"]);
}

/// An argument that starts with `=` after a redirection: printing puts the redirection
/// in front, and the argument then reads as the `=` of an assignment to the command's
/// name (`echo >f = x` prints as `>f echo = x`, which is `echo=x`).
#[test]
fn equals_argument_after_redirection_round_trips() {
    all_round_trip(&["echo >f =x", "echo >f = x"]);
}

/// A command whose last part is empty prints as text that ends too early.
#[test]
fn empty_last_command_round_trips() {
    all_round_trip(&[
        "if(x);",
        "a && ;",
        "a || ;",
        "while(x);",
        "for(i);",
        "if not;",
        "a || ;b",
        "|| || || x",
        "{a && }",
        "if(x); if not;",
    ]);
}

/// `$ "x` (a blank after `$`) is the variable named `"x`; it prints as `$"x`, which is
/// `$"` of x.
#[test]
fn dollar_blank_quote_round_trips() {
    all_round_trip(&["echo $ \"x"]);
}
