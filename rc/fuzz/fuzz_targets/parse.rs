//! rc's lexer and parser on arbitrary input (bytes taken as lossy UTF-8).
//!
//! - `parse::parse_text` never panics (nor loops: libFuzzer's `-timeout` catches that);
//! - what parses prints (`to_string`, as `whatis` and the environment show commands)
//!   as text that parses again and prints identically;
//! - the printed form read back as a function body, `fn f {text}` (the way a function
//!   comes in from the environment), gives a body that prints the same again;
//! - reading the input a line at a time with `Parser::line`, recovering after each
//!   syntax error as an interactive rc does, ends, having made progress each time.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rc::ast::Cmd;
use rc::lex::{Lexer, TextSource};
use rc::parse::{Parser, parse_text};

fn round_trip(text: &str) {
    let Ok(c) = parse_text(text) else {
        return;
    };
    let _ = format!("{c:?}");
    let p1 = c.to_string();
    let c2 = parse_text(&p1).unwrap_or_else(|e| {
        panic!("the printed form does not parse ({e:?})\n input {text:?}\n printed {p1:?}")
    });
    let p2 = c2.to_string();
    assert_eq!(
        p1, p2,
        "printing the reparsed command changed it\n input {text:?}"
    );

    let f = format!("fn f {{{p1}}}\n");
    match parse_text(&f) {
        Ok(Cmd::Fn {
            body: Some(body), ..
        }) => assert_eq!(
            body.to_string(),
            p1,
            "as a function body the printed form changed\n input {text:?}"
        ),
        other => panic!("{f:?} is not a function definition: {other:?}\n input {text:?}"),
    }
}

/// Line by line, skipping the rest of a line after a syntax error; each step reads
/// some input, so there are at most as many steps as characters (plus one for the end).
fn interactive(text: &str) {
    let mut p = Parser::new(Lexer::new(Box::new(TextSource::new(text))));
    let limit = text.chars().count() + 2;
    for _ in 0..limit {
        match p.line() {
            Ok(None) => return,
            Ok(Some(c)) => {
                let _ = c.to_string();
            }
            Err(e) => {
                let _ = format!("{e:?}");
                p.recover();
            }
        }
    }
    panic!("Parser::line made no progress on {text:?}");
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    round_trip(&text);
    interactive(&text);
});
