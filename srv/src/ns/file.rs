//! Namespace files, as namespace(6) describes them: one command a line,
//! `bind`, `mount`, `unmount`, `clear`, `cd` and `.` (include), `#` comments,
//! words quoted as rc quotes them, and `$name` replaced by the environment's value.

use super::{Flags, Order};

/// The namespace a login starts with when `$home/lib/namespace` does not exist.
pub const DEFAULT: &str = include_str!("namespace");

/// How deep `.` may nest.
const MAX_DEPTH: usize = 16;

/// Split a line into words: rc's quotes (`'...'`, `''` for a quote), `#` to the end
/// of the line, and `$name` replaced by `var(name)` (a list: a word that is only the
/// variable becomes one word per element; elsewhere the elements are joined with
/// spaces).
pub fn words(line: &str, var: &dyn Fn(&str) -> Vec<String>) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = line.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        if i >= chars.len() || chars[i] == '#' {
            break;
        }
        let mut word = String::new();
        let mut quoted = false;
        // A word that is one `$name` and nothing else.
        let mut only_var: Option<Vec<String>> = None;
        let start = i;
        while i < chars.len() && !chars[i].is_whitespace() {
            let c = chars[i];
            if c == '\'' {
                quoted = true;
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err("unterminated quote".into()),
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            word.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(&ch) => {
                            word.push(ch);
                            i += 1;
                        }
                    }
                }
            } else if c == '$' {
                let s = i + 1;
                let mut e = s;
                while e < chars.len() && (chars[e].is_alphanumeric() || chars[e] == '_') {
                    e += 1;
                }
                if e == s {
                    word.push('$');
                    i += 1;
                    continue;
                }
                let name: String = chars[s..e].iter().collect();
                let v = var(&name);
                if start == i && (e >= chars.len() || chars[e].is_whitespace()) {
                    only_var = Some(v.clone());
                }
                word.push_str(&v.join(" "));
                i = e;
            } else if c == '#' {
                break;
            } else {
                word.push(c);
                i += 1;
            }
        }
        match only_var {
            Some(v) => out.extend(v),
            None => {
                if !word.is_empty() || quoted {
                    out.push(word);
                }
            }
        }
        if i < chars.len() && chars[i] == '#' {
            break;
        }
    }
    Ok(out)
}

/// Flags at the front of `args` (after the command name): letters from `abcC`, and
/// `n` for mount; `--` ends them. Returns the flags and the rest.
pub fn flags(args: &[String], mount: bool) -> Result<(Flags, &[String]), String> {
    let mut f = Flags::default();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a == "--" {
            i += 1;
            break;
        }
        if !a.starts_with('-') || a == "-" {
            break;
        }
        for c in a[1..].chars() {
            match c {
                'a' => f.order = Order::After,
                'b' => f.order = Order::Before,
                'c' => f.create = true,
                'C' => f.cache = true,
                'n' if mount => f.noauth = true,
                // Plan 9's -q (quiet) has nothing to quiet here.
                'q' => {}
                _ => return Err(format!("bad flag -{c}")),
            }
        }
        i += 1;
    }
    Ok((f, &args[i..]))
}

pub const BIND_USAGE: &str = "usage: bind [-b|-a|-c|-bc|-ac] new old";
pub const MOUNT_USAGE: &str = "usage: mount [-b|-a|-c|-bc|-ac] [-Cn] servename old [spec]";
pub const UNMOUNT_USAGE: &str = "usage: unmount [new] old";

/// Run one command given as words (`bind`, `mount`, `unmount`, `clear`, `cd`).
/// `.` is the caller's.
pub fn command(w: &[String]) -> Result<(), String> {
    let Some(cmd) = w.first() else { return Ok(()) };
    let rest = &w[1..];
    match cmd.as_str() {
        "bind" => {
            let (f, a) = flags(rest, false).map_err(|e| format!("bind: {e}; {BIND_USAGE}"))?;
            if a.len() != 2 {
                return Err(BIND_USAGE.into());
            }
            super::bind(&a[0], &a[1], f).map_err(|e| format!("bind: {e}"))
        }
        "mount" => {
            let (f, a) = flags(rest, true).map_err(|e| format!("mount: {e}; {MOUNT_USAGE}"))?;
            if a.len() != 2 && a.len() != 3 {
                return Err(MOUNT_USAGE.into());
            }
            let aname = a.get(2).map_or("", String::as_str);
            super::mount(&a[0], &a[1], f, aname).map_err(|e| format!("mount: {e}"))
        }
        "unmount" => match rest {
            [old] => super::unmount(None, old).map_err(|e| format!("unmount: {e}")),
            [new, old] => super::unmount(Some(new), old).map_err(|e| format!("unmount: {e}")),
            _ => Err(UNMOUNT_USAGE.into()),
        },
        "clear" => super::clear().map_err(|e| format!("clear: {e}")),
        "cd" => match rest {
            [d] => {
                std::env::set_current_dir(d).map_err(|e| format!("cd: {d}: {}", super::errstr(&e)))
            }
            _ => Err("usage: cd dir".into()),
        },
        "import" => Err("import: not supported; mount a service instead".into()),
        other => Err(format!("{other}: unknown command")),
    }
}

/// Run the namespace file `text` named `name`. Each failing line is reported through
/// `warn` as `name:line: message`, and the rest of the file still runs (as Plan 9's
/// newns does). Returns the number of failures.
pub fn run(
    text: &str,
    name: &str,
    var: &dyn Fn(&str) -> Vec<String>,
    warn: &mut dyn FnMut(String),
) -> usize {
    run_depth(text, name, var, warn, 0)
}

fn run_depth(
    text: &str,
    name: &str,
    var: &dyn Fn(&str) -> Vec<String>,
    warn: &mut dyn FnMut(String),
    depth: usize,
) -> usize {
    let mut failed = 0;
    for (n, line) in text.lines().enumerate() {
        let w = match words(line, var) {
            Ok(w) => w,
            Err(e) => {
                warn(format!("{name}:{}: {e}", n + 1));
                failed += 1;
                continue;
            }
        };
        if w.is_empty() {
            continue;
        }
        if w[0] == "." {
            if w.len() != 2 {
                warn(format!("{name}:{}: usage: . file", n + 1));
                failed += 1;
                continue;
            }
            if depth >= MAX_DEPTH {
                warn(format!("{name}:{}: .: too deeply nested", n + 1));
                failed += 1;
                continue;
            }
            match std::fs::read_to_string(&w[1]) {
                Ok(t) => failed += run_depth(&t, &w[1], var, warn, depth + 1),
                Err(e) => {
                    warn(format!(
                        "{name}:{}: .: {}: {}",
                        n + 1,
                        w[1],
                        super::errstr(&e)
                    ));
                    failed += 1;
                }
            }
            continue;
        }
        if let Err(e) = command(&w) {
            warn(format!("{name}:{}: {e}", n + 1));
            failed += 1;
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(n: &str) -> Vec<String> {
        match n {
            "home" => vec!["/home/glenda".into()],
            "l" => vec!["a".into(), "b c".into()],
            _ => vec![],
        }
    }

    fn w(s: &str) -> Vec<String> {
        words(s, &env).unwrap()
    }

    #[test]
    fn splits_quotes_and_comments() {
        assert_eq!(w("bind -a /x /y # no"), ["bind", "-a", "/x", "/y"]);
        assert_eq!(
            w("  mount '/a b' /n/x 'it''s'"),
            ["mount", "/a b", "/n/x", "it's"]
        );
        assert_eq!(w("bind '' /x"), ["bind", "", "/x"]);
        assert!(w("# all comment").is_empty());
        assert!(words("bind 'open", &env).is_err());
    }

    #[test]
    fn expands_variables() {
        assert_eq!(
            w("bind $home/bin /bin"),
            ["bind", "/home/glenda/bin", "/bin"]
        );
        assert_eq!(w("x $l y"), ["x", "a", "b c", "y"]);
        assert_eq!(w("x p$l"), ["x", "pa b c"]);
        assert_eq!(w("x $nothing y"), ["x", "y"]);
        assert_eq!(w("x '$home' $"), ["x", "$home", "$"]);
    }

    #[test]
    fn flag_words() {
        let a: Vec<String> = ["-bc", "/x", "/y"].iter().map(|s| s.to_string()).collect();
        let (f, rest) = flags(&a, false).unwrap();
        assert_eq!(f.order, Order::Before);
        assert!(f.create);
        assert_eq!(rest.len(), 2);
        let a: Vec<String> = ["-a", "-C", "s", "/y"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert!(flags(&a, false).is_ok());
        let a: Vec<String> = ["-n", "s", "/y"].iter().map(|s| s.to_string()).collect();
        assert!(flags(&a, false).is_err());
        assert!(flags(&a, true).unwrap().0.noauth);
        assert_eq!(
            Flags {
                order: Order::After,
                create: true,
                ..Flags::default()
            }
            .word(false),
            "-ac"
        );
    }

    #[test]
    fn bad_lines_are_reported_and_the_rest_runs() {
        let mut msgs = Vec::new();
        let n = run("frob x\n\nbind onlyone\ncd\n", "f", &env, &mut |m| {
            msgs.push(m)
        });
        assert_eq!(n, 3);
        assert_eq!(msgs[0], "f:1: frob: unknown command");
        assert_eq!(msgs[1], format!("f:3: {BIND_USAGE}"));
        assert_eq!(msgs[2], "f:4: usage: cd dir");
    }

    proptest::proptest! {
        // Any line: words() answers, and never panics or loops.
        #[test]
        fn any_line_is_answered(line in "\\PC{0,200}") {
            let _ = words(&line, &env);
        }

        // Words quoted with super::super::quote read back as themselves.
        #[test]
        fn quoted_words_read_back(ws in proptest::collection::vec("[^\n\r\u{0}]{0,12}", 0..6)) {
            let line: Vec<String> = ws.iter().map(|w| crate::ns::quote(w)).collect();
            let back = words(&line.join(" "), &|_| Vec::new()).unwrap();
            // `$` outside quotes is expanded; quote() quotes it.
            proptest::prop_assert_eq!(back, ws);
        }

        // Any namespace file: run() reports, never panics (only commands that fail
        // without touching anything: no private name space in a unit test).
        #[test]
        fn any_flags_are_answered(args in proptest::collection::vec("-?[abcCnqx-]{0,4}", 0..5)) {
            let _ = flags(&args, true);
            let _ = flags(&args, false);
        }
    }
}
