//! /proc/self/mountinfo, read.

use std::io;

/// One mount, as the kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub id: u64,
    pub parent: u64,
    /// `major:minor` of the file system.
    pub dev: String,
    /// The directory of the file system that is mounted here.
    pub root: String,
    /// Where it is mounted.
    pub point: String,
    pub fstype: String,
    pub source: String,
}

/// A field as it was given: the kernel writes space, tab, newline and backslash
/// as three-digit octal escapes.
pub fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parse mountinfo text; lines that do not parse are left out.
pub fn parse(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Mount> {
    let f: Vec<&str> = line.split(' ').collect();
    let dash = f.iter().position(|s| *s == "-")?;
    if dash < 6 || f.len() < dash + 3 {
        return None;
    }
    Some(Mount {
        id: f[0].parse().ok()?,
        parent: f[1].parse().ok()?,
        dev: f[2].to_string(),
        root: unescape(f[3]),
        point: unescape(f[4]),
        fstype: f[dash + 1].to_string(),
        source: unescape(f[dash + 2]),
    })
}

/// This process's mounts.
pub fn read() -> io::Result<Vec<Mount>> {
    Ok(parse(&std::fs::read_to_string("/proc/self/mountinfo")?))
}

/// The mounts stacked at `point`, bottom first.
pub fn stack<'a>(all: &'a [Mount], point: &str) -> Vec<&'a Mount> {
    let here: Vec<&Mount> = all.iter().filter(|m| m.point == point).collect();
    // The bottom one's parent is not mounted here; each next one's parent is the one
    // below it.
    let mut out: Vec<&Mount> = Vec::new();
    let mut cur = here
        .iter()
        .find(|m| !here.iter().any(|p| p.id == m.parent) || m.id == m.parent)
        .copied();
    while let Some(m) = cur {
        if out.iter().any(|o| o.id == m.id) {
            break;
        }
        out.push(m);
        cur = here
            .iter()
            .find(|n| n.parent == m.id && n.id != m.id)
            .copied();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
22 1 0:20 / / rw - tmpfs ninespace rw
30 22 8:1 /usr /usr rw,nosuid shared:1 - ext4 /dev/sda1 rw
31 30 8:1 /home/u/bin /usr rw - ext4 /dev/sda1 rw
40 31 0:50 / /usr rw - fuse.union union\\040x rw
41 22 0:51 / /a\\040b rw - tmpfs none rw
";

    #[test]
    fn parses_and_unescapes() {
        let m = parse(TEXT);
        assert_eq!(m.len(), 5);
        assert_eq!(m[1].root, "/usr");
        assert_eq!(m[3].source, "union x");
        assert_eq!(m[4].point, "/a b");
        assert_eq!(m[3].fstype, "fuse.union");
    }

    #[test]
    fn stacks_bottom_first() {
        let m = parse(TEXT);
        let s: Vec<u64> = stack(&m, "/usr").iter().map(|m| m.id).collect();
        assert_eq!(s, vec![30, 31, 40]);
        assert!(stack(&m, "/nothing").is_empty());
    }

    #[test]
    fn garbage_is_left_out() {
        assert!(parse("x y z\n\n1 2\n- - -\n").is_empty());
        assert_eq!(unescape("a\\0"), "a\\0");
        assert_eq!(unescape("\\134"), "\\");
    }

    proptest::proptest! {
        #[test]
        fn any_text_parses_without_panic(t in "\\PC{0,400}") {
            let all = parse(&t);
            for m in &all {
                let _ = stack(&all, &m.point);
            }
        }

        #[test]
        fn escapes_read_back(s in "[ -~\t\n]{0,40}") {
            let e: String = s.chars().map(|c| match c {
                ' ' => "\\040".to_string(),
                '\t' => "\\011".to_string(),
                '\n' => "\\012".to_string(),
                '\\' => "\\134".to_string(),
                c => c.to_string(),
            }).collect();
            proptest::prop_assert_eq!(unescape(&e), s);
        }
    }
}
