//! Aggregates: `lib.a(member.o)` names a member of an `ar` archive, whose date is the
//! member's date in the archive.

use crate::{Failed, Mk, R};
use std::io::{Read, Seek, SeekFrom, Write};

const ARMAG: &[u8] = b"!<arch>\n";
const HDR: usize = 60;

/// `archive(member)` split in two.
fn split(name: &str) -> Option<(&str, &str)> {
    let (a, rest) = name.split_once('(')?;
    let m = rest.split_once(')').map_or(rest, |(m, _)| m);
    Some((a, m))
}

fn field(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim_end().to_string()
}

/// The members of an archive and their dates (seconds).
fn atimes(ar: &str) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    let Ok(data) = std::fs::read(ar) else {
        return out;
    };
    if !data.starts_with(ARMAG) {
        return out;
    }
    let mut pos = ARMAG.len();
    let mut strings: Option<Vec<u8>> = None;
    while pos + HDR <= data.len() {
        let h = &data[pos..pos + HDR];
        pos += HDR;
        let size: usize = field(&h[48..58]).parse().unwrap_or(0);
        let mut t: i64 = field(&h[16..28]).parse().unwrap_or(0);
        if t == 0 {
            t = 1;
        }
        let raw = &h[0..16];
        let padded = size + (size & 1);
        let body_end = (pos + padded).min(data.len());
        let name: Option<String> = if raw.starts_with(b"#1/") {
            let n: usize = field(&raw[3..]).parse().unwrap_or(0);
            data.get(pos..pos + n).map(|b| {
                String::from_utf8_lossy(b)
                    .trim_end_matches('\0')
                    .to_string()
            })
        } else if raw.starts_with(b"// ") {
            strings = data.get(pos..pos + size).map(|b| b.to_vec());
            None
        } else if raw[0] == b'/' && raw.get(1).is_some_and(u8::is_ascii_digit) {
            let i: usize = field(&raw[1..]).parse().unwrap_or(usize::MAX);
            strings.as_ref().and_then(|s| {
                let rest = s.get(i..)?;
                let end = rest
                    .iter()
                    .position(|&c| c == b'/' || c == b'\n')
                    .unwrap_or(rest.len());
                Some(String::from_utf8_lossy(&rest[..end]).into_owned())
            })
        } else {
            let mut n = field(raw);
            if n.ends_with('/') {
                n.pop();
            }
            Some(n)
        };
        if let Some(n) = name {
            if !n.is_empty() && n != "/" {
                out.push((n, t));
            }
        }
        pos = body_end;
    }
    out
}

/// Is `file` an archive? A missing one is assumed to become one.
fn is_archive(mk: &mut Mk, file: &str) -> bool {
    let Ok(mut f) = std::fs::File::open(file) else {
        if mk.bitched.insert(file.to_string()) && !file.ends_with(".a") {
            mk.bprint(&format!(
                "{file} doesn't exist: assuming it will be an archive\n"
            ));
        }
        return true;
    };
    let mut b = [0u8; 8];
    f.read_exact(&mut b).is_ok() && b == ARMAG
}

impl Mk {
    /// The date of an archive member (0 if it is not there); `Err` if the archive is
    /// not one.
    pub fn atimeof(&mut self, force: bool, name: &str) -> R<i128> {
        let Some((ar, member)) = split(name) else {
            return Ok(0);
        };
        let (ar, member) = (ar.to_string(), member.to_string());
        if !is_archive(self, &ar) {
            // Fatal, as in plan9port, wherever it is found: mk stops once the
            // error reaches the top (`graph` and `update` look at `fatal`).
            self.flush();
            eprintln!("mk: '{name}' is not an archive");
            self.fatal = true;
            return Err(Failed);
        }
        let t = crate::mtime(&ar);
        let stale = match self.agg.get(&ar) {
            Some(&seen) => force || t > seen,
            None => true,
        };
        if stale {
            for (m, mt) in atimes(&ar) {
                self.times
                    .insert(format!("{ar}({m})"), mt as i128 * 1_000_000_000);
            }
            self.agg.insert(ar.clone(), t);
        }
        Ok(self
            .times
            .get(&format!("{ar}({member})"))
            .copied()
            .unwrap_or(0))
    }
}

/// `-t` on an archive member: make the archive if needed and set the member's date.
pub fn atouch(name: &str) {
    let Some((ar, member)) = split(name) else {
        return;
    };
    let f = std::fs::OpenOptions::new().read(true).write(true).open(ar);
    let mut f = match f {
        Ok(f) => f,
        Err(_) => match std::fs::File::create(ar) {
            Ok(mut f) => {
                let _ = f.write_all(ARMAG);
                return;
            }
            Err(e) => {
                eprintln!("create {ar}: {}", crate::ioerr(&e));
                return;
            }
        },
    };
    let now = crate::run::now() / 1_000_000_000;
    let mut pos = ARMAG.len() as u64;
    let mut h = [0u8; HDR];
    while f.seek(SeekFrom::Start(pos)).is_ok() && f.read_exact(&mut h).is_ok() {
        let mut n = field(&h[0..16]);
        if n.ends_with('/') {
            n.pop();
        }
        if n == member {
            let date = format!("{now:<12}");
            let _ = f.seek(SeekFrom::Start(pos + 16));
            let _ = f.write_all(&date.as_bytes()[..12]);
            break;
        }
        let size: u64 = field(&h[48..58]).parse().unwrap_or(0);
        pos += HDR as u64 + size + (size & 1);
    }
}
