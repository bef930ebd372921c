//! mk's reading of mkfiles never panics or hangs, whatever the text, and a graph can
//! be built from whatever it read. The text never holds a backquote or `<`, so no
//! command runs and no file is included.

use mk::Mk;
use proptest::prelude::*;
use std::time::Duration;

/// Run `f` on a thread; fail if it panics or takes longer than a few seconds.
fn bounded(text: String, f: fn(String)) {
    let (tx, rx) = std::sync::mpsc::channel();
    let t = text.clone();
    std::thread::spawn(move || {
        f(t);
        let _ = tx.send(());
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(()) => {}
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("no end on {text:?}"),
        Err(_) => panic!("panicked on {text:?}"),
    }
}

fn read_and_graph(text: String) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::env::set_current_dir(dir.path()).ok();
    let mut mk = Mk::new();
    if mk.parse("mkfile", &text, false).is_ok() {
        let targets = mk.target1.clone().unwrap_or_default();
        for t in targets.iter().take(3) {
            let _ = mk.graph(t);
        }
    }
}

/// Pieces of mkfiles.
fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("all:V: a b\n".to_string()),
        Just("%.o: %.c\n\tcc -c $stem.c\n".to_string()),
        Just("&.x:Q: &.y\n\techo $target\n".to_string()),
        Just("(.*)\\.z:R: \\1.w\n\tcp $prereq $target\n".to_string()),
        Just("X=a b c\n".to_string()),
        Just("Y=${X:a%=b%}\n".to_string()),
        Just("Z=U=$X 'q r'\n".to_string()),
        Just("a b:D: c\n\trm -f $target\n".to_string()),
        Just("lib.a(%.o):N: %.o\n".to_string()),
        Just("t:Ptest -f: u\n\ttouch t\n".to_string()),
        Just("MKSHELL=rc\n".to_string()),
        Just("# comment \\\n".to_string()),
        Just("x: y \\\n z\n".to_string()),
        Just("a: a\n".to_string()),
        "[a-z%&:=$ {}()'\"\\\\#\t\n.]{0,30}".prop_map(|s| s),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text(text in "[^`<]{0,200}") {
        bounded(text, read_and_graph);
    }

    #[test]
    fn mkfile_soup(parts in prop::collection::vec(piece(), 0..12)) {
        bounded(parts.concat(), read_and_graph);
    }
}

/// A target named as an archive member whose archive is not an archive stops mk, as
/// in plan9port, but as an error the caller sees: the library never ends the process.
/// (The proptest above found `.(x)`, where `.` is a directory.)
#[test]
fn not_an_archive_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plain = dir.path().join("plain");
    std::fs::write(&plain, "not an archive\n").expect("write");
    let text = format!("{}(m.o): y\n", plain.display());
    let mut mk = Mk::new();
    mk.parse("mkfile", &text, false).expect("parses");
    let target = format!("{}(m.o)", plain.display());
    assert!(mk.graph(&target).is_err());
    assert!(mk.fatal);
}
