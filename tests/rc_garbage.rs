//! rc on garbage: `rc -c <random text>` and `rc <file of random text>` end (with any
//! status) within 5 s, are not killed by a signal, and never panic.
//!
//! The texts are soups of rc's special characters, of rc's tokens and keywords, and of
//! non-ASCII characters. They run with standard input from `/dev/null`, in a fresh
//! directory that is also `$HOME`, with argv[0] `rc` and an environment of only
//! `HOME`, `PATH` and `LC_ALL`, where `PATH` is an empty directory: no program can
//! run (rc says "not found"), only rc's built-ins.
//!
//! So that nothing can reach outside that directory and no run can loop for ever as
//! a valid program may, the texts have no `/` or `.` (no other directory, no `.`
//! built-in), no `0` (no `$0`), and only the letters of a few keywords and names
//! (`if`, `for`, `switch`, `case`, `exit`, `cd`, ...): no `while`, no `fn`, no
//! `eval`, no `$rcname`.
//!
//! `deep_nesting_does_not_crash` (ignored: a known bug) shows the parser's recursion
//! overflowing the stack.

mod rc_support;

use proptest::prelude::*;
use rc_support::{Outcome, RC, Run, Sandbox, run};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(5);

/// Run our rc on `text`, as `-c` text and as a script file.
fn run_both(text: &str) -> Result<(), TestCaseError> {
    let sb = Sandbox::new();
    let empty_path = sb.bin().display().to_string();
    // An argument cannot hold a NUL.
    let arg = text.replace('\0', " ");
    let r = run(sb.cmd(RC, &empty_path).arg("-c").arg(&arg), None, TIMEOUT);
    check(&r, "-c", &arg)?;
    let sb = Sandbox::new();
    let empty_path = sb.bin().display().to_string();
    let script = sb.write("script", text);
    let r = run(sb.cmd(RC, &empty_path).arg(&script), None, TIMEOUT);
    check(&r, "a script", text)
}

fn check(r: &Run, how: &str, text: &str) -> Result<(), TestCaseError> {
    match r.outcome {
        Outcome::Exit(_) => {}
        Outcome::Signal(s) => {
            return Err(TestCaseError::fail(format!(
                "rc with {how} {text:?} was killed by signal {s}\nstderr: {}",
                r.stderr
            )));
        }
        Outcome::TimedOut => {
            return Err(TestCaseError::fail(format!(
                "rc with {how} {text:?} did not end within {TIMEOUT:?}\nstderr: {}",
                r.stderr
            )));
        }
    }
    for bad in ["panicked", "overflowed its stack", "RUST_BACKTRACE"] {
        prop_assert!(
            !r.stderr.contains(bad),
            "rc with {} {:?} says {:?}:\n{}",
            how,
            text,
            bad,
            r.stderr
        );
    }
    Ok(())
}

/// rc's special characters, blanks, newlines, and a few letters and digits.
const SPECIALS: &[char] = &[
    '\'', '^', '$', '`', '{', '}', '(', ')', '<', '>', '|', '&', ';', '=', '#', '~', '!', '@', '[',
    ']', '*', '?', '\\', '"', '\n', '\n', ' ', ' ', '\t', 'a', 'x', 'i', 'f', '1', '2', '-',
    '\u{1}', 'é',
];

/// Tokens and words of rc that cannot make a program leave its directory or loop.
const FRAGMENTS: &[&str] = &[
    "if",
    "if not",
    "for",
    "in",
    "switch",
    "case",
    "~",
    "!",
    "@",
    "(",
    ")",
    "{",
    "}",
    "`{",
    "`",
    "$",
    "$#",
    "$\"",
    "$*",
    "$1",
    "x",
    "y",
    "a*",
    "[a-z]",
    "=",
    "^",
    ";",
    "&",
    "&&",
    "||",
    "|",
    "|[2]",
    "|[1=2]",
    "<",
    ">",
    ">>",
    "<>",
    "<<",
    "<<EOF\n",
    "EOF\n",
    "<<'EOF'",
    ">[2=1]",
    ">[2=]",
    ">[2]",
    ">[x]",
    "<[3]",
    "<{",
    ">{",
    "<>{",
    "'",
    "'a b'",
    "''",
    "\n",
    "\\\n",
    "#c\n",
    "x=",
    "(a b)",
    "$x(1)",
    "$x(2-)",
    "$#x",
    "$$x",
    "exit",
    "exit 3",
    "cd",
    "cd x",
    "shift",
    "shift 2",
    "flag e",
    "flag x +",
    "whatis",
    "whatis x",
    "builtin",
    "builtin cd",
    "umask",
    "umask 22",
    "rfork e",
    "rfork E",
    "wait",
    "status",
    "ifs",
    "prompt",
    "path",
    "finit",
    "exec",
    "\u{1}",
];

fn special_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(SPECIALS), 0..120).prop_map(String::from_iter)
}

fn token_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(
        (
            prop::sample::select(FRAGMENTS),
            prop::sample::select(&["", " ", " ", "\n"][..]),
        ),
        0..40,
    )
    .prop_map(|v| v.into_iter().flat_map(|(a, b)| [a, b]).collect())
}

/// rc's special characters among any characters beyond ASCII (and NUL).
fn wide_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            2 => prop::sample::select(SPECIALS),
            2 => any::<char>().prop_map(|c| if c.is_ascii() { '\u{e9}' } else { c }),
            1 => Just('\0'),
        ],
        0..80,
    )
    .prop_map(String::from_iter)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn special_characters(s in special_soup()) {
        run_both(&s)?;
    }

    #[test]
    fn tokens(s in token_soup()) {
        run_both(&s)?;
    }

    #[test]
    fn wide_characters(s in wide_soup()) {
        run_both(&s)?;
    }
}

/// The fixed texts the generators are most likely to miss.
#[test]
fn fixed_garbage() {
    for text in [
        "",
        "\n",
        "'",
        "`{",
        "{{{{",
        "}}}}",
        "$",
        "$#",
        "<<",
        "<<EOF",
        "cat <<EOF\n$x\n",
        "x=() echo $x^a",
        ">[2=1",
        "|[2",
        "switch",
        "if not",
        "exit 300",
        "rfork e; rfork E; rfork s",
        "cd; cd x; cd",
        "shift 5",
        "@ {exit 2} | x",
        "x &; wait; wait 1",
        "\\",
        "a\\",
    ] {
        run_both(text).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Thousands of nested braces (or `if`s, backquotes, parentheses) are a syntax error,
/// not a crash: like plan9port's rc (a yacc parser), ours takes any depth (its
/// recursion moves to the heap when the stack runs short).
#[test]
fn deep_nesting_does_not_crash() {
    let mut failures = Vec::new();
    for (open, depth) in [
        ("{", 2000),
        ("`{", 2000),
        ("if(x)", 2000),
        ("! ", 2000),
        ("(", 20000),
        ("$", 20000),
    ] {
        let text = open.repeat(depth);
        let sb = Sandbox::new();
        let empty_path = sb.bin().display().to_string();
        let script = sb.write("deep", &text);
        let r = run(
            sb.cmd(RC, &empty_path).arg("-n").arg(&script),
            None,
            Duration::from_secs(20),
        );
        if r.outcome != Outcome::Exit(1) {
            failures.push(format!("{open:?} x {depth}: {:?}", r.outcome));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
