//! The interactive front end, used by `. -i file`.
//!
//! On a terminal, lines are read with rustyline: editing, a history kept in a file
//! (`$history`, else `$home/lib/rchistory` when `$home/lib` is a directory, else
//! `$home/.rc_history`), and completion of file names, and of command names (functions,
//! built-ins and programs in `$path`) in command position. The prompt is `$prompt(1)`
//! for a new command and `$prompt(2)` for a continuation line. An interrupt (^C) at
//! the prompt drops what was typed.
//!
//! Anywhere else (`rc -i` reading a pipe, say), lines are read as they come and the
//! prompts are written to standard error, as plan9port's rc does.

use crate::exec::{Res, Shell};
use crate::lex::Source;
use rustyline::completion::{Completer, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::FileHistory;
use rustyline::validate::Validator;
use rustyline::{Config, Context, Editor, Helper};
use std::cell::RefCell;
use std::io::{BufRead, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::rc::Rc;

/// What the front end needs to know of the shell, refreshed before each command.
#[derive(Default, Debug, Clone)]
pub struct UiState {
    pub prompt1: String,
    pub prompt2: String,
    pub path: Vec<String>,
    pub fns: Vec<String>,
    pub history: Option<PathBuf>,
}

impl Shell {
    /// Copy what the front end shows (prompts, names for completion) from the shell.
    pub fn refresh_ui(&mut self) {
        let Some(ui) = self.ui.clone() else { return };
        let p = self.get("prompt");
        let prompt1 = p.first().cloned().unwrap_or_default();
        let prompt2 = p.get(1).cloned().unwrap_or_default();
        let path = self.get("path").to_vec();
        let history = history_file(self);
        let mut fns: Vec<String> = self.fns.keys().cloned().collect();
        fns.sort();
        let mut u = ui.borrow_mut();
        u.prompt1 = prompt1;
        u.prompt2 = prompt2;
        u.path = path;
        u.fns = fns;
        u.history = history;
    }
}

/// Where history is kept: `$history`, or a default under `$home`.
fn history_file(sh: &Shell) -> Option<PathBuf> {
    if let Some(h) = sh.get("history").first() {
        return (!h.is_empty()).then(|| PathBuf::from(h));
    }
    let home = sh.get("home").first().cloned().unwrap_or_default();
    if home.is_empty() {
        return None;
    }
    let lib = PathBuf::from(&home).join("lib");
    Some(if lib.is_dir() {
        lib.join("rchistory")
    } else {
        PathBuf::from(home).join(".rc_history")
    })
}

/// Read and run commands from `file` interactively.
pub fn run_interactive(sh: &mut Shell, file: std::fs::File, name: &str) -> Res {
    let was = sh.interactive;
    sh.interactive = true;
    let ui = Rc::new(RefCell::new(UiState::default()));
    let prev_ui = sh.ui.replace(Rc::clone(&ui));
    sh.refresh_ui();
    // rustyline reads the terminal on standard input, so it is used only when that is
    // the file to read.
    let tty = crate::exec::isatty(file.as_raw_fd()) && is_stdin(&file);
    let term = if tty {
        TermSource::new(Rc::clone(&ui))
    } else {
        None
    };
    let src: Box<dyn Source> = match term {
        Some(t) => Box::new(t),
        None => Box::new(PlainSource::new(file, Rc::clone(&ui))),
    };
    let r = sh.run_source(src, Some(name.to_string()), true);
    sh.ui = prev_ui;
    sh.interactive = was;
    r
}

/// Whether `file` is the same open file as standard input (`/dev/stdin`).
fn is_stdin(file: &std::fs::File) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(a), Ok(b)) = (file.metadata(), nix::sys::stat::fstat(std::io::stdin())) else {
        return false;
    };
    a.dev() == b.st_dev && a.ino() == b.st_ino
}

/// Lines from a file that is not a terminal, with the prompts on standard error.
struct PlainSource {
    r: std::io::BufReader<std::fs::File>,
    ui: Rc<RefCell<UiState>>,
}

impl PlainSource {
    fn new(f: std::fs::File, ui: Rc<RefCell<UiState>>) -> PlainSource {
        PlainSource {
            r: std::io::BufReader::new(f),
            ui,
        }
    }
}

impl Source for PlainSource {
    fn next_line(&mut self, continued: bool) -> Option<String> {
        {
            let u = self.ui.borrow();
            let p = if continued { &u.prompt2 } else { &u.prompt1 };
            let mut e = crate::exec::err();
            let _ = e.write_all(p.as_bytes());
            let _ = e.flush();
        }
        let mut buf = Vec::new();
        loop {
            match self.r.read_until(b'\n', &mut buf) {
                Ok(0) if buf.is_empty() => return None,
                Ok(_) => return Some(String::from_utf8_lossy(&buf).into_owned()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                    if crate::TRAP.load(std::sync::atomic::Ordering::Relaxed) == libc::SIGINT {
                        return None;
                    }
                }
                Err(_) => return None,
            }
        }
    }

    fn interrupted(&mut self) -> bool {
        crate::TRAP.load(std::sync::atomic::Ordering::Relaxed) == libc::SIGINT
    }
}

/// Lines from the terminal, through rustyline.
struct TermSource {
    ed: Editor<RcHelper, FileHistory>,
    ui: Rc<RefCell<UiState>>,
    /// The history file loaded, and where new lines are appended.
    hist: Option<PathBuf>,
    intr: bool,
}

impl TermSource {
    fn new(ui: Rc<RefCell<UiState>>) -> Option<TermSource> {
        let cfg = Config::builder()
            .max_history_size(10_000)
            .ok()?
            .history_ignore_dups(true)
            .ok()?
            .history_ignore_space(true)
            .completion_type(rustyline::CompletionType::List)
            .auto_add_history(false)
            .build();
        let mut ed = Editor::with_config(cfg).ok()?;
        // rustyline puts a handler of its own on SIGINT; rc's must stay, so that an
        // interrupt during a command reaches rc (at the prompt, ^C is a key anyway).
        crate::catch(libc::SIGINT);
        ed.set_helper(Some(RcHelper { ui: Rc::clone(&ui) }));
        Some(TermSource {
            ed,
            ui,
            hist: None,
            intr: false,
        })
    }

    /// Follow `$history`: load the file when it is first named (or renamed).
    fn sync_history(&mut self) {
        let want = self.ui.borrow().history.clone();
        if want != self.hist {
            let _ = self.ed.clear_history();
            if let Some(p) = &want {
                let _ = self.ed.load_history(p);
            }
            self.hist = want;
        }
    }
}

impl Source for TermSource {
    fn next_line(&mut self, continued: bool) -> Option<String> {
        self.sync_history();
        let prompt = {
            let u = self.ui.borrow();
            if continued {
                u.prompt2.clone()
            } else {
                u.prompt1.clone()
            }
        };
        let _ = std::io::stdout().flush();
        match self.ed.readline(&prompt) {
            Ok(line) => {
                if !line.trim().is_empty() {
                    if let Ok(true) = self.ed.add_history_entry(line.as_str()) {
                        if let Some(p) = &self.hist {
                            if let Some(dir) = p.parent() {
                                if !dir.as_os_str().is_empty() && !dir.is_dir() {
                                    let _ = std::fs::create_dir_all(dir);
                                }
                            }
                            let _ = self.ed.append_history(p);
                        }
                    }
                }
                Some(line + "\n")
            }
            Err(rustyline::error::ReadlineError::Interrupted) => {
                self.intr = true;
                crate::TRAP.store(libc::SIGINT, std::sync::atomic::Ordering::SeqCst);
                None
            }
            Err(_) => None,
        }
    }

    fn interrupted(&mut self) -> bool {
        std::mem::take(&mut self.intr)
    }
}

/// Completion of command and file names.
struct RcHelper {
    ui: Rc<RefCell<UiState>>,
}

/// Characters that end a word for completion.
fn is_break(c: char) -> bool {
    " \t\n;&|^(){}<>`=".contains(c)
}

impl RcHelper {
    fn commands(&self, prefix: &str) -> Vec<String> {
        let u = self.ui.borrow();
        let mut v: Vec<String> = crate::builtins::NAMES
            .iter()
            .map(|s| s.to_string())
            .chain(u.fns.iter().cloned())
            .filter(|n| n.starts_with(prefix))
            .collect();
        for dir in &u.path {
            let d = if dir.is_empty() { "." } else { dir.as_str() };
            let Ok(rd) = std::fs::read_dir(d) else {
                continue;
            };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !name.starts_with(prefix) || (name.starts_with('.') && !prefix.starts_with('.'))
                {
                    continue;
                }
                if is_executable(&e.path()) {
                    v.push(name);
                }
            }
        }
        v.sort();
        v.dedup();
        v
    }
}

fn is_executable(p: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// File names that complete `word` (a path prefix).
pub fn complete_files(word: &str) -> Vec<(String, bool)> {
    let (dir, base) = match word.rfind('/') {
        Some(i) => (&word[..=i], &word[i + 1..]),
        None => ("", word),
    };
    let rd = std::fs::read_dir(if dir.is_empty() { "." } else { dir });
    let Ok(rd) = rd else { return Vec::new() };
    let mut v: Vec<(String, bool)> = rd
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with(base) || (name.starts_with('.') && !base.starts_with('.')) {
                return None;
            }
            let isdir = std::fs::metadata(e.path()).is_ok_and(|m| m.is_dir());
            Some((format!("{dir}{name}"), isdir))
        })
        .collect();
    v.sort();
    v
}

/// Quote a completion as rc would need it, keeping a trailing `/` outside the quotes.
fn quote_completion(s: &str, isdir: bool) -> String {
    let q = crate::ast::quote(s);
    if isdir { format!("{q}/") } else { q }
}

impl Completer for RcHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        let (start, word) = current_word(before);
        let mut out = Vec::new();
        if command_position(&before[..start]) && !word.contains('/') {
            for c in self.commands(&word) {
                out.push(Pair {
                    display: c.clone(),
                    replacement: crate::ast::quote(&c),
                });
            }
        } else {
            for (f, isdir) in complete_files(&word) {
                let display = f.rsplit('/').next().unwrap_or(&f).to_string();
                out.push(Pair {
                    display: if isdir {
                        format!("{display}/")
                    } else {
                        display
                    },
                    replacement: quote_completion(&f, isdir),
                });
            }
        }
        Ok((start, out))
    }
}

/// The word the cursor is in: where it starts, and its text with rc's quotes taken
/// off (`'sp dir'/in` is `sp dir/in`).
fn current_word(before: &str) -> (usize, String) {
    let mut start = 0;
    let mut quoted = false;
    for (i, c) in before.char_indices() {
        if c == '\'' {
            quoted = !quoted;
        } else if !quoted && is_break(c) {
            start = i + c.len_utf8();
        }
    }
    let mut word = String::new();
    let mut it = before[start..].chars().peekable();
    let mut inq = false;
    while let Some(c) = it.next() {
        if c == '\'' {
            if inq && it.peek() == Some(&'\'') {
                word.push('\'');
                it.next();
            } else {
                inq = !inq;
            }
        } else {
            word.push(c);
        }
    }
    (start, word)
}

/// Whether a word starting after `prefix` names a command: at the start of the line,
/// after `;`, `&`, `|`, `{`, `(`, `` ` ``, `!`, `@` (so after `&&` and `||` too),
/// after `if(...)`, `while(...)` and `for(...)`, and after `if not`.
fn command_position(prefix: &str) -> bool {
    let p = prefix.trim_end_matches([' ', '\t']);
    let Some(last) = p.chars().last() else {
        return true;
    };
    match last {
        ';' | '&' | '|' | '{' | '(' | '`' | '\n' | '!' | '@' => true,
        ')' => {
            // Find the matching parenthesis and look at the word before it.
            let mut depth = 0;
            for (i, c) in p.char_indices().rev() {
                match c {
                    ')' => depth += 1,
                    '(' => {
                        depth -= 1;
                        if depth == 0 {
                            let kw = p[..i].trim_end_matches([' ', '\t']);
                            let kw = kw.rsplit(is_break).next().unwrap_or("");
                            return matches!(kw, "if" | "while" | "for");
                        }
                    }
                    _ => {}
                }
            }
            false
        }
        _ => {
            let mut words = p.rsplit(is_break).filter(|w| !w.is_empty());
            words.next() == Some("not") && words.next() == Some("if")
        }
    }
}

impl Hinter for RcHelper {
    type Hint = String;
}
impl Highlighter for RcHelper {}
impl Validator for RcHelper {}
impl Helper for RcHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_positions() {
        assert_eq!(
            current_word("cat 'sp dir'/in"),
            (4, "sp dir/in".to_string())
        );
        assert_eq!(current_word("echo 'it''s"), (5, "it's".to_string()));
        assert_eq!(current_word("ls"), (0, "ls".to_string()));
        assert!(command_position(""));
        assert!(command_position("echo a; "));
        assert!(command_position("if(true) "));
        assert!(command_position("while(~ $x a) "));
        assert!(command_position("for(i in a b) "));
        assert!(command_position("if not "));
        assert!(command_position("a && "));
        assert!(!command_position("echo "));
        assert!(!command_position("echo (a b) "));
    }

    #[test]
    fn files_complete_with_dirs_marked() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(d.path().join("sub dir")).expect("mkdir");
        std::fs::write(d.path().join("file1"), "").expect("write");
        std::fs::write(d.path().join(".hidden"), "").expect("write");
        let base = format!("{}/", d.path().display());
        let got = complete_files(&base);
        let names: Vec<_> = got
            .iter()
            .map(|(f, d)| (f.trim_start_matches(&base).to_string(), *d))
            .collect();
        assert_eq!(
            names,
            vec![("file1".to_string(), false), ("sub dir".to_string(), true)]
        );
        let dot = complete_files(&format!("{base}.h"));
        assert_eq!(dot.len(), 1);
        assert_eq!(
            quote_completion(&format!("{base}sub dir"), true),
            format!("'{base}sub dir'/")
        );
    }
}
