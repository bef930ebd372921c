//! Keys and templates: lists of attributes, as factotum(4) and libauth have them.
//!
//! Text is split into tokens with rc-style quoting (`'...'`, `''` for a quote inside
//! quotes), as Plan 9's `tokenize` does. A token `name=value` is a name-value pair (the
//! first `=` splits it), `name?` is a query (the attribute must be present, with any
//! value), and a bare `name` is a pair with the empty value. Names starting with `!` are
//! secret: [`Key`] keeps them apart and never prints their values.
//!
//! Every value lives in a [`Secret`], which overwrites its bytes with zeros when
//! dropped, so a password does not linger in freed memory.

use std::fmt;

/// A string whose bytes are overwritten with zeros when it is dropped.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Secret {
        Secret(s)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        zero(&mut self.0);
    }
}

/// Overwrite a string's bytes (all of its capacity that is initialised: its length)
/// with zeros, in a way the optimiser keeps.
pub fn zero(s: &mut String) {
    // SAFETY: zero bytes are valid UTF-8, so the string stays a string.
    let v = unsafe { s.as_mut_vec() };
    zero_bytes(v);
    v.clear();
}

/// Overwrite bytes with zeros, in a way the optimiser keeps.
pub fn zero_bytes(v: &mut [u8]) {
    for b in v.iter_mut() {
        // SAFETY: `b` is a valid, aligned, exclusive reference.
        unsafe { std::ptr::write_volatile(b, 0) };
    }
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Why attribute text did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttrError {
    #[error("unterminated quote")]
    Unterminated,
    #[error("empty attribute name")]
    EmptyName,
}

/// What kind of attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `name=value` (or a bare `name`, with the empty value).
    Val,
    /// `name?`: must be present.
    Query,
}

/// One attribute.
#[derive(Clone, PartialEq, Eq)]
pub struct Attr {
    pub name: String,
    pub kind: Kind,
    pub value: Secret,
}

impl fmt::Debug for Attr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            Kind::Query => write!(f, "{}?", quote(&self.name)),
            Kind::Val if self.is_secret() => write!(f, "{}=..", quote(&self.name)),
            Kind::Val => write!(f, "{}={}", quote(&self.name), quote(self.value.as_str())),
        }
    }
}

impl Attr {
    pub fn val(name: &str, value: &str) -> Attr {
        Attr {
            name: name.into(),
            kind: Kind::Val,
            value: Secret::new(value.into()),
        }
    }
    pub fn query(name: &str) -> Attr {
        Attr {
            name: name.into(),
            kind: Kind::Query,
            value: Secret::default(),
        }
    }
    /// Whether the name marks a secret (`!password`).
    pub fn is_secret(&self) -> bool {
        self.name.starts_with('!')
    }
}

/// A list of attributes: a key's public part, a template, the attributes of a
/// conversation.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Attrs(pub Vec<Attr>);

impl fmt::Debug for Attrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter()).finish()
    }
}

/// Split text into tokens as Plan 9's `tokenize` does: blanks, tabs, carriage returns
/// and newlines separate tokens; `'` starts and ends quoted text in which `''` is one
/// quote; quoted and unquoted text join into one token (`a='b c'`). Each token is
/// returned whole, as a [`Secret`], since tokens may hold passwords.
pub fn tokenize(s: &str) -> Result<Vec<Secret>, AttrError> {
    let mut out = Vec::new();
    let mut cur = Secret::default();
    let mut in_tok = false;
    let mut quoted = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            if c == '\'' {
                if chars.peek() == Some(&'\'') {
                    chars.next();
                    cur.0.push('\'');
                } else {
                    quoted = false;
                }
            } else {
                cur.0.push(c);
            }
            continue;
        }
        match c {
            ' ' | '\t' | '\r' | '\n' => {
                if in_tok {
                    out.push(std::mem::take(&mut cur));
                    in_tok = false;
                }
            }
            '\'' => {
                in_tok = true;
                quoted = true;
            }
            _ => {
                in_tok = true;
                cur.0.push(c);
            }
        }
    }
    if quoted {
        return Err(AttrError::Unterminated);
    }
    if in_tok {
        out.push(cur);
    }
    Ok(out)
}

/// Whether `s` must be quoted to come back from [`tokenize`] as one token.
fn needs_quotes(s: &str) -> bool {
    s.is_empty() || s.chars().any(|c| c <= ' ' || c == '\'' || c == '\u{7f}')
}

/// Quote `s` rc-style if it needs it (Plan 9's `%q`).
pub fn quote(s: &str) -> String {
    if !needs_quotes(s) {
        return s.to_string();
    }
    let mut q = String::with_capacity(s.len() + 2);
    q.push('\'');
    for c in s.chars() {
        if c == '\'' {
            q.push('\'');
        }
        q.push(c);
    }
    q.push('\'');
    q
}

impl Attrs {
    pub fn new() -> Attrs {
        Attrs(Vec::new())
    }

    /// Parse attribute text. A query for a name that also has a value is dropped, as
    /// libauth's `_parseattr` does.
    pub fn parse(s: &str) -> Result<Attrs, AttrError> {
        let mut v = Vec::new();
        for t in tokenize(s)? {
            let t = t.as_str();
            let a = if let Some(i) = t.find('=') {
                Attr::val(&t[..i], &t[i + 1..])
            } else if let Some(n) = t.strip_suffix('?') {
                Attr::query(n)
            } else {
                Attr::val(t, "")
            };
            if a.name.is_empty() {
                return Err(AttrError::EmptyName);
            }
            v.push(a);
        }
        let mut out = Attrs(Vec::with_capacity(v.len()));
        for (i, a) in v.iter().enumerate() {
            if a.kind == Kind::Query
                && v.iter()
                    .enumerate()
                    .any(|(j, b)| j != i && b.kind == Kind::Val && b.name == a.name)
            {
                continue;
            }
            out.0.push(a.clone());
        }
        Ok(out)
    }

    /// The value of the first name-value attribute called `name`.
    pub fn find(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|a| a.kind == Kind::Val && a.name == name)
            .map(|a| a.value.as_str())
    }

    fn has_name(&self, name: &str) -> bool {
        self.0.iter().any(|a| a.kind == Kind::Val && a.name == name)
    }

    fn has_name_val(&self, name: &str, val: &str) -> bool {
        self.0
            .iter()
            .any(|a| a.kind == Kind::Val && a.name == name && a.value.as_str() == val)
    }

    /// Set `name=value`, replacing any attributes of that name.
    pub fn set(&mut self, name: &str, value: &str) {
        self.0.retain(|a| a.name != name);
        self.0.push(Attr::val(name, value));
    }

    /// Remove every attribute called `name`.
    pub fn remove(&mut self, name: &str) {
        self.0.retain(|a| a.name != name);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sorted by name (stable), as factotum lists keys.
    pub fn sorted(&self) -> Attrs {
        let mut v = self.0.clone();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Attrs(v)
    }

    /// Print the names only, each as a query (`!password?`): libauth's `%N`, used
    /// for secrets.
    pub fn names(&self) -> String {
        let v: Vec<String> = self
            .0
            .iter()
            .map(|a| format!("{}?", quote(&a.name)))
            .collect();
        v.join(" ")
    }

    /// Print with secret values hidden: secrets appear as `!name?`.
    pub fn public(&self) -> String {
        let v: Vec<String> = self
            .0
            .iter()
            .map(|a| {
                if a.is_secret() && a.kind == Kind::Val {
                    format!("{}?", quote(&a.name))
                } else {
                    attr_text(a)
                }
            })
            .collect();
        v.join(" ")
    }
}

fn attr_text(a: &Attr) -> String {
    match a.kind {
        Kind::Query => format!("{}?", quote(&a.name)),
        Kind::Val => format!("{}={}", quote(&a.name), quote(a.value.as_str())),
    }
}

/// The full text, secrets included (libauth's `%A`): for the protocol's own use, never
/// for logs or listings — use [`Attrs::public`] there.
impl fmt::Display for Attrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for a in &self.0 {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            f.write_str(&attr_text(a))?;
        }
        Ok(())
    }
}

/// Attributes that a template names but that never rule a key out by their absence:
/// if the key has them, the values must agree (plan9port's `ignored`).
const IGNORED: &[&str] = &["role", "disabled"];

/// Whether the template `pat` matches the attributes `a0` and `a1` (a key's public
/// and secret parts): every `name=value` must be present with that value, every
/// `name?` must be present; `role` and `disabled` must agree only if present.
pub fn matches(pat: &Attrs, a0: &Attrs, a1: &Attrs) -> bool {
    pat.0.iter().all(|p| {
        let has = |n: &str| a0.has_name(n) || a1.has_name(n);
        let has_val = |n: &str, v: &str| a0.has_name_val(n, v) || a1.has_name_val(n, v);
        if IGNORED.contains(&p.name.as_str()) {
            return !has(&p.name) || has_val(&p.name, p.value.as_str());
        }
        match p.kind {
            Kind::Query => has(&p.name),
            Kind::Val => has_val(&p.name, p.value.as_str()),
        }
    })
}

/// What a protocol works out from a key once, when the key is added (9front's and
/// plan9port's `k->priv`): dp9ik's password-derived AES key and its pakhash, say.
/// Shared between the copies of a key; the protocol zeroes it on drop.
pub type Derived = std::sync::Arc<dyn std::any::Any + Send + Sync>;

/// A key: public attributes (with `proto=` first) and secret ones (names starting
/// with `!`), kept apart so the secrets are never printed by accident.
#[derive(Clone)]
pub struct Key {
    pub public: Attrs,
    pub secret: Attrs,
    /// What the key's protocol derived from it when it was added, if anything.
    pub derived: Option<Derived>,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.listing())
    }
}

impl Key {
    /// Split parsed attributes into a key's public and secret parts.
    pub fn from_attrs(a: Attrs) -> Key {
        let (secret, public): (Vec<Attr>, Vec<Attr>) = a.0.into_iter().partition(|x| x.is_secret());
        Key {
            public: Attrs(public),
            secret: Attrs(secret),
            derived: None,
        }
    }

    /// Whether the template matches this key.
    pub fn matches(&self, pat: &Attrs) -> bool {
        matches(pat, &self.public, &self.secret)
    }

    /// Whether this key and `other` have the same public attributes (each matches the
    /// other), so that adding `other` replaces this one.
    pub fn same_public(&self, other: &Key) -> bool {
        matches(&self.public, &other.public, &Attrs::new())
            && matches(&other.public, &self.public, &Attrs::new())
    }

    /// The value of an attribute, public or secret.
    pub fn find(&self, name: &str) -> Option<&str> {
        self.public.find(name).or_else(|| self.secret.find(name))
    }

    /// The key as factotum's ctl lists it, without the `key ` prefix and newline:
    /// public attributes sorted by name, then the secret names as `!name?`.
    pub fn listing(&self) -> String {
        format!("{} {}", self.public.sorted(), self.secret.names())
    }
}

/// The keys factotum holds, in the order they were added.
#[derive(Clone, Default, Debug)]
pub struct Ring {
    keys: Vec<Key>,
}

impl Ring {
    pub fn new() -> Ring {
        Ring::default()
    }

    /// Add a key, replacing one with identical public attributes.
    pub fn add(&mut self, k: Key) {
        if let Some(old) = self.keys.iter_mut().find(|o| o.same_public(&k)) {
            *old = k;
        } else {
            self.keys.push(k);
        }
    }

    /// Delete every key the template matches; how many went.
    pub fn delete(&mut self, pat: &Attrs) -> usize {
        let n = self.keys.len();
        self.keys.retain(|k| !k.matches(pat));
        n - self.keys.len()
    }

    /// The first key the template matches.
    pub fn lookup(&self, pat: &Attrs) -> Option<&Key> {
        self.keys.iter().find(|k| k.matches(pat))
    }

    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    /// The ctl listing: `key <public> <secret names>\n` per key.
    pub fn listing(&self) -> String {
        let mut s = String::new();
        for k in &self.keys {
            s.push_str("key ");
            s.push_str(&k.listing());
            s.push('\n');
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> Attrs {
        Attrs::parse(s).unwrap()
    }

    #[test]
    fn tokens_and_quotes() {
        let t: Vec<String> = tokenize("a 'b c'  d='e''f' ''\tg\n")
            .unwrap()
            .iter()
            .map(|s| s.as_str().to_string())
            .collect();
        assert_eq!(t, ["a", "b c", "d=e'f", "", "g"]);
        assert_eq!(tokenize("a 'b"), Err(AttrError::Unterminated));
        assert_eq!(quote("x"), "x");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("it's me"), "'it''s me'");
    }

    #[test]
    fn parse_kinds() {
        let a = p("proto=p9sk1 user? confirm !password='a b=c' x=y=z");
        assert_eq!(a.0.len(), 5);
        assert_eq!(a.0[1].kind, Kind::Query);
        assert_eq!(a.0[2].kind, Kind::Val);
        assert_eq!(a.0[2].value.as_str(), "");
        assert_eq!(a.find("!password"), Some("a b=c"));
        assert_eq!(a.find("x"), Some("y=z"));
        assert_eq!(Attrs::parse("=x"), Err(AttrError::EmptyName));
        assert_eq!(Attrs::parse("?"), Err(AttrError::EmptyName));
        // A query is dropped when the name also has a value.
        assert_eq!(p("user? user=glenda").to_string(), "user=glenda");
    }

    #[test]
    fn printing_hides_secrets() {
        let a = p("proto=pass user=glenda !password='top secret'");
        assert_eq!(a.public(), "proto=pass user=glenda !password?");
        assert_eq!(
            a.to_string(),
            "proto=pass user=glenda !password='top secret'"
        );
        let k = Key::from_attrs(p("user=glenda proto=pass !password=x service=ssh"));
        assert_eq!(k.listing(), "proto=pass service=ssh user=glenda !password?");
        assert!(!format!("{:?}", k.secret).contains("=x"));
    }

    #[test]
    fn matching() {
        let k = Key::from_attrs(p("proto=pass user=glenda service=ssh !password=pw"));
        assert!(k.matches(&p("proto=pass")));
        assert!(k.matches(&p("proto=pass user?")));
        assert!(k.matches(&p("proto=pass !password?")));
        assert!(!k.matches(&p("proto=pass dom?")));
        assert!(!k.matches(&p("proto=p9sk1")));
        assert!(!k.matches(&p("proto=pass user=bob")));
        // role is ignored unless the key has one.
        assert!(k.matches(&p("proto=pass role=client")));
        let r = Key::from_attrs(p("proto=pass role=server !password=x"));
        assert!(!r.matches(&p("proto=pass role=client")));
        // A bare name must be there with the empty value.
        let c = Key::from_attrs(p("proto=pass confirm !password=x"));
        assert!(c.matches(&p("confirm")));
        assert!(!k.matches(&p("confirm")));
    }

    #[test]
    fn ring_replaces_same_public() {
        let mut r = Ring::new();
        r.add(Key::from_attrs(p("proto=pass user=u !password=a")));
        r.add(Key::from_attrs(p("proto=pass user=v !password=b")));
        r.add(Key::from_attrs(p("user=u proto=pass !password=c")));
        assert_eq!(r.keys().len(), 2);
        assert_eq!(r.lookup(&p("user=u")).unwrap().find("!password"), Some("c"));
        assert_eq!(r.delete(&p("proto=pass")), 2);
        assert_eq!(r.listing(), "");
    }

    #[test]
    fn secret_zeroes() {
        let mut s = String::from("password");
        zero(&mut s);
        assert!(s.is_empty());
        let mut b = *b"abc";
        zero_bytes(&mut b);
        assert_eq!(b, [0, 0, 0]);
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC*") {
            let _ = Attrs::parse(&s);
        }

        #[test]
        fn parse_never_panics_quotes(s in "[a-z=?! '\\t\\n!]{0,40}") {
            let _ = Attrs::parse(&s);
        }

        #[test]
        fn print_parse_round_trip(s in "[a-z=?! '\\t\\n!é]{0,40}") {
            if let Ok(a) = Attrs::parse(&s) {
                let again = Attrs::parse(&a.to_string()).unwrap();
                prop_assert_eq!(again, a);
            }
        }

        #[test]
        fn quote_round_trip(s in "\\PC*") {
            let t = tokenize(&quote(&s)).unwrap();
            prop_assert_eq!(t.len(), 1);
            prop_assert_eq!(t[0].as_str(), s.as_str());
        }
    }
}
