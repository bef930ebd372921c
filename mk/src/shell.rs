//! What mk needs to know of the shell that runs recipes (`MKSHELL`): how it quotes,
//! and how lists go into the environment. rc quotes with `'...'` (`''` inside); sh
//! with `'...'`, `"..."` and `\`.

/// The two kinds of shell mk understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Rc,
    Sh,
}

/// A shell: its kind and the command that runs it (`MKSHELL`'s words).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shell {
    pub kind: Kind,
    pub cmd: Vec<String>,
}

impl Shell {
    /// The default, as plan9port's mk has it: sh.
    pub fn default_sh() -> Shell {
        Shell {
            kind: Kind::Sh,
            cmd: vec!["sh".to_string()],
        }
    }

    /// The shell `MKSHELL`'s words name: rc if the command's base name starts with
    /// `rc` (plan9port's rule), else sh.
    pub fn from_words(w: &[String]) -> Result<Shell, &'static str> {
        let Some(first) = w.first() else {
            return Err("shell name not found on line");
        };
        let base = first.rsplit('/').next().unwrap_or(first);
        let kind = if base.starts_with("rc") {
            Kind::Rc
        } else {
            Kind::Sh
        };
        Ok(Shell {
            kind,
            cmd: w.to_vec(),
        })
    }

    /// How list elements are joined in the environment.
    pub fn iws(&self) -> char {
        match self.kind {
            Kind::Rc => '\u{1}',
            Kind::Sh => ' ',
        }
    }

    /// The characters that end an assignment's attribute list (`var=U=value`).
    pub fn termchars(&self) -> &'static str {
        match self.kind {
            Kind::Rc => "'= \t",
            Kind::Sh => "\"'= \t",
        }
    }

    /// The byte offset of the first character of `set` in `s` that is not quoted and
    /// not inside a `${...}`.
    pub fn charin(&self, s: &str, set: &str) -> Result<Option<usize>, String> {
        let b: Vec<(usize, char)> = s.char_indices().collect();
        let mut i = 0;
        let mut vargen = false;
        while i < b.len() {
            let (at, c) = b[i];
            match c {
                '\\' if self.kind == Kind::Sh => {
                    i += 2;
                    continue;
                }
                '\'' | '"' if c == '\'' || self.kind == Kind::Sh => {
                    // Skip the quoted text.
                    let mut j = i + 1;
                    loop {
                        if j >= b.len() {
                            return Err("missing closing '".to_string());
                        }
                        let d = b[j].1;
                        if d == c {
                            if self.kind == Kind::Rc && b.get(j + 1).map(|x| x.1) == Some('\'') {
                                j += 2;
                                continue;
                            }
                            break;
                        }
                        if d == '\\' && self.kind == Kind::Sh {
                            j += 1;
                        }
                        j += 1;
                    }
                    i = j + 1;
                    continue;
                }
                '$' if b.get(i + 1).map(|x| x.1) == Some('{') => vargen = true,
                '}' => {
                    if vargen {
                        vargen = false;
                    } else if set.contains('}') {
                        return Ok(Some(at));
                    }
                }
                _ => {
                    if !vargen && set.contains(c) {
                        return Ok(Some(at));
                    }
                }
            }
            i += 1;
        }
        if vargen {
            return Err("missing closing } in pattern generator".to_string());
        }
        Ok(None)
    }
}
