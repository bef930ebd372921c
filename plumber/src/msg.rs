//! Plumb messages and their wire format (plumb(7)), byte for byte as plan9port's
//! libplumb writes and reads them:
//!
//! ```text
//! src\n dst\n wdir\n type\n attr\n ndata\n data
//! ```
//!
//! Each header is one line (an absent field is an empty line); `ndata` is the decimal
//! length of `data`, which is raw bytes and may hold newlines. `attr` is a list of
//! `name=value` separated by blanks; a value holding a blank, a tab, `'` or `=` is
//! quoted with single quotes, a quote inside doubled.

use thiserror::Error;

/// The largest message the plumber accepts or a client reassembles.
pub const MAX_MESSAGE: usize = 8 << 20;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MsgError {
    #[error("bad plumb message format")]
    Format,
    #[error("plumb message too large")]
    TooLarge,
}

/// One attribute, `name=value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub name: String,
    pub value: String,
}

/// A plumb message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    pub src: String,
    pub dst: String,
    pub wdir: String,
    /// `type` on the wire.
    pub kind: String,
    pub attr: Vec<Attr>,
    pub data: Vec<u8>,
}

/// Whether a value needs quoting on the wire.
fn needs_quote(v: &str) -> bool {
    v.contains([' ', '\'', '=', '\t'])
}

/// Pack a list of attributes as the `attr` line (without its newline).
pub fn pack_attr(attrs: &[Attr]) -> String {
    let mut s = String::new();
    for a in attrs {
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(&a.name);
        s.push('=');
        if needs_quote(&a.value) {
            s.push('\'');
            for c in a.value.chars() {
                s.push(c);
                if c == '\'' {
                    s.push('\'');
                }
            }
            s.push('\'');
        } else {
            s.push_str(&a.value);
        }
    }
    s
}

/// Unpack an `attr` line. As libplumb does, parsing stops quietly at the first word
/// without `=` (or at a newline), keeping the attributes before it.
pub fn unpack_attr(line: &str) -> Vec<Attr> {
    let b = line.as_bytes();
    let mut out = Vec::new();
    let mut p = 0;
    while p < b.len() && b[p] != b'\n' {
        while p < b.len() && (b[p] == b' ' || b[p] == b'\t') {
            p += 1;
        }
        if p >= b.len() {
            break;
        }
        let mut q = p;
        while q < b.len() && !matches!(b[q], b'\n' | b' ' | b'\t' | b'=') {
            q += 1;
        }
        if q >= b.len() || b[q] != b'=' {
            break;
        }
        let name = line[p..q].to_string();
        q += 1;
        let mut v: Vec<u8> = Vec::new();
        let mut quoting = false;
        while q < b.len() && b[q] != b'\n' {
            let c = b[q];
            q += 1;
            if quoting {
                if c == b'\'' {
                    if q < b.len() && b[q] == b'\'' {
                        q += 1;
                    } else {
                        quoting = false;
                        continue;
                    }
                }
            } else {
                if c == b' ' || c == b'\t' {
                    break;
                }
                if c == b'\'' {
                    quoting = true;
                    continue;
                }
            }
            v.push(c);
        }
        // Quotes are ASCII, so the bytes between are whole characters.
        let value = String::from_utf8(v).unwrap_or_default();
        out.push(Attr { name, value });
        p = q;
    }
    out
}

/// The value of the first attribute called `name`.
pub fn lookup<'a>(attrs: &'a [Attr], name: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.value.as_str())
}

/// C's atoi: leading blanks, a sign, digits; anything else ends the number.
pub fn atoi(s: &str) -> i64 {
    let t = s.trim_start_matches([' ', '\t']);
    let (neg, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let mut n: i64 = 0;
    for c in t.bytes() {
        if !c.is_ascii_digit() {
            break;
        }
        n = n.saturating_mul(10).saturating_add(i64::from(c - b'0'));
    }
    if neg { -n } else { n }
}

/// What [`unpack_partial`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Unpacked {
    Message(Message),
    /// The headers are whole and promise this many more bytes of data.
    More(usize),
}

impl Message {
    /// A text message from `src` with `data`, as `plumb` sends one.
    pub fn text(src: &str, wdir: &str, data: &[u8]) -> Message {
        Message {
            src: src.into(),
            wdir: wdir.into(),
            kind: "text".into(),
            data: data.to_vec(),
            ..Message::default()
        }
    }

    /// The wire form.
    pub fn pack(&self) -> Vec<u8> {
        let attr = pack_attr(&self.attr);
        let mut b = Vec::with_capacity(
            self.src.len()
                + self.dst.len()
                + self.wdir.len()
                + self.kind.len()
                + attr.len()
                + self.data.len()
                + 32,
        );
        for f in [&self.src, &self.dst, &self.wdir, &self.kind, &attr] {
            b.extend_from_slice(f.as_bytes());
            b.push(b'\n');
        }
        b.extend_from_slice(self.data.len().to_string().as_bytes());
        b.push(b'\n');
        b.extend_from_slice(&self.data);
        b
    }

    /// Parse one whole message, which must fill `buf` exactly.
    pub fn unpack(buf: &[u8]) -> Result<Message, MsgError> {
        match unpack_partial(buf)? {
            Unpacked::Message(m) => Ok(m),
            Unpacked::More(_) => Err(MsgError::Format),
        }
    }

    /// The value of attribute `name`.
    pub fn lookup(&self, name: &str) -> Option<&str> {
        lookup(&self.attr, name)
    }

    /// Remove the first attribute called `name`; whether there was one.
    pub fn del_attr(&mut self, name: &str) -> bool {
        match self.attr.iter().position(|a| a.name == name) {
            Some(i) => {
                self.attr.remove(i);
                true
            }
            None => false,
        }
    }
}

/// Parse the start of a message: a whole message, or how many bytes of data are still
/// to come (libplumb's `plumbunpackpartial`). A message whose data is longer than
/// `ndata` says, or headers that are cut short or not UTF-8, are malformed.
pub fn unpack_partial(buf: &[u8]) -> Result<Unpacked, MsgError> {
    let mut lines: [&str; 6] = [""; 6];
    let mut i = 0;
    for l in &mut lines {
        let rest = &buf[i..];
        let Some(n) = rest.iter().position(|&c| c == b'\n') else {
            return Err(MsgError::Format);
        };
        *l = std::str::from_utf8(&rest[..n]).map_err(|_| MsgError::Format)?;
        i += n + 1;
    }
    let ndata = atoi(lines[5]);
    let have = buf.len() - i;
    if ndata < 0 {
        return Err(MsgError::Format);
    }
    let ndata = usize::try_from(ndata).map_err(|_| MsgError::TooLarge)?;
    if ndata > MAX_MESSAGE {
        return Err(MsgError::TooLarge);
    }
    if ndata > have {
        return Ok(Unpacked::More(ndata - have));
    }
    if ndata < have {
        return Err(MsgError::Format);
    }
    Ok(Unpacked::Message(Message {
        src: lines[0].into(),
        dst: lines[1].into(),
        wdir: lines[2].into(),
        kind: lines[3].into(),
        attr: unpack_attr(lines[4]),
        data: buf[i..].to_vec(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn attr(n: &str, v: &str) -> Attr {
        Attr {
            name: n.into(),
            value: v.into(),
        }
    }

    #[test]
    fn pack_as_plumb7_describes() {
        // plumb(7): src, dst, wdir, type, attr, ndata, each ending in newline, then data.
        let m = Message {
            src: "acme".into(),
            dst: "edit".into(),
            wdir: "/usr/glenda".into(),
            kind: "text".into(),
            attr: vec![attr("addr", "42"), attr("click", "3")],
            data: b"mkfile".to_vec(),
        };
        assert_eq!(
            m.pack(),
            b"acme\nedit\n/usr/glenda\ntext\naddr=42 click=3\n6\nmkfile".to_vec()
        );
        assert_eq!(Message::unpack(&m.pack()).unwrap(), m);
    }

    #[test]
    fn empty_fields_are_empty_lines() {
        let m = Message::text("plumb", "", b"");
        assert_eq!(m.pack(), b"plumb\n\n\ntext\n\n0\n".to_vec());
        let u = Message::unpack(b"\n\n\n\n\n0\n").unwrap();
        assert_eq!(u, Message::default());
    }

    #[test]
    fn data_may_hold_newlines() {
        let raw = b"9term\n\n/tmp\ntext\n\n7\na\nb\n\nc\n";
        let m = Message::unpack(raw).unwrap();
        assert_eq!(m.data, b"a\nb\n\nc\n");
        assert_eq!(m.pack(), raw.to_vec());
    }

    #[test]
    fn attribute_quoting() {
        let a = vec![
            attr("action", "showdata"),
            attr("filename", "/man/ls(1)"),
            attr("q", "it's"),
            attr("sp", "a b"),
            attr("eq", "x=y"),
            attr("tab", "a\tb"),
            attr("empty", ""),
        ];
        let s = pack_attr(&a);
        assert_eq!(
            s,
            "action=showdata filename=/man/ls(1) q='it''s' sp='a b' eq='x=y' tab='a\tb' empty="
        );
        assert_eq!(unpack_attr(&s), a);
    }

    #[test]
    fn unpack_attr_stops_at_malformed_word() {
        assert_eq!(
            unpack_attr("a=1 junk b=2"),
            vec![attr("a", "1")],
            "libplumb stops at a word without ="
        );
        assert_eq!(
            unpack_attr("  a='x y'  b=2 "),
            vec![attr("a", "x y"), attr("b", "2")]
        );
        // A value may be quoted in parts, as rc words are.
        assert_eq!(unpack_attr("a=x'y z'w"), vec![attr("a", "xy zw")]);
    }

    #[test]
    fn partial_and_malformed() {
        assert_eq!(
            unpack_partial(b"s\nd\nw\nt\n\n10\nabc").unwrap(),
            Unpacked::More(7)
        );
        assert_eq!(unpack_partial(b"s\nd\nw\nt\n"), Err(MsgError::Format));
        assert_eq!(
            unpack_partial(b"s\nd\nw\nt\n\n2\nabc"),
            Err(MsgError::Format)
        );
        assert_eq!(unpack_partial(b"s\nd\nw\nt\n\n-1\n"), Err(MsgError::Format));
        assert_eq!(
            unpack_partial(b"s\nd\nw\nt\n\n99999999999999999999\n"),
            Err(MsgError::TooLarge)
        );
        // atoi: "abc" is 0.
        assert!(matches!(
            unpack_partial(b"s\nd\nw\nt\n\nabc\n"),
            Ok(Unpacked::Message(_))
        ));
        assert_eq!(Message::unpack(b"\xff\n\n\n\n\n0\n"), Err(MsgError::Format));
    }

    proptest! {
        #[test]
        fn unpack_never_panics(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = unpack_partial(&b);
        }

        #[test]
        fn unpack_never_panics_on_plausible(
            hdr in proptest::collection::vec("[a-z=' \t\n0-9]{0,12}", 6),
            data in proptest::collection::vec(any::<u8>(), 0..20),
        ) {
            let mut b = hdr.join("\n").into_bytes();
            b.push(b'\n');
            b.extend_from_slice(&data);
            let _ = unpack_partial(&b);
        }

        #[test]
        fn pack_unpack_round_trip(
            src in "[^\n]{0,10}", dst in "[^\n]{0,10}", wdir in "[^\n]{0,10}",
            kind in "[^\n]{0,10}",
            attrs in proptest::collection::vec(("[a-z]{1,5}", "[^\n]{0,8}"), 0..4),
            data in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let m = Message {
                src, dst, wdir, kind,
                attr: attrs.into_iter().map(|(n, v)| Attr { name: n, value: v }).collect(),
                data,
            };
            prop_assert_eq!(Message::unpack(&m.pack()).unwrap(), m);
        }
    }
}
