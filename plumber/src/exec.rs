//! Applying rules to a message (plumb(6), plumber(4)): the first rule set whose
//! patterns all succeed wins; its variables are then used to build the action.

use crate::msg::{Message, pack_attr, unpack_attr};
use crate::rules::{Object, Rule, RuleSet, Rules, Verb, expand_word};

/// The state of matching one rule set against a message.
#[derive(Debug, Default)]
pub struct Exec {
    /// `$0`..`$9` from the last `matches`.
    pub matched: [Option<String>; 10],
    /// `$file` and `$dir`, once `isfile` or `isdir` has succeeded.
    pub file: Option<String>,
    pub dir: Option<String>,
    /// The span a click selected, which every `data matches` must agree on.
    p: Option<(usize, usize)>,
    clear_click: bool,
    set_data: bool,
}

/// Plan 9's cleanname: a path with `.`, `..` and doubled slashes taken out lexically.
pub fn cleanname(p: &str) -> String {
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for e in p.split('/') {
        match e {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            e => parts.push(e),
        }
    }
    let j = parts.join("/");
    match (rooted, j.is_empty()) {
        (true, _) => format!("/{j}"),
        (false, true) => ".".into(),
        (false, false) => j,
    }
}

fn absolute(dir: &str, file: &str) -> String {
    if file.starts_with('/') {
        file.into()
    } else {
        cleanname(&format!("{dir}/{file}"))
    }
}

impl Exec {
    /// `$file` / `$dir`: the name found by isfile/isdir, else the data taken as a
    /// file name relative to wdir.
    fn filename(&self, m: &Message, name: Option<&String>) -> String {
        if let Some(n) = name
            && !n.is_empty()
        {
            return cleanname(n);
        }
        let data = String::from_utf8_lossy(&m.data);
        if data.starts_with('/') || m.wdir.is_empty() {
            return cleanname(&data);
        }
        cleanname(&format!("{}/{}", m.wdir, data))
    }

    fn dollar(&self, m: &Message, rules: &Rules, name: &str) -> Option<String> {
        if let Some(d) = name.strip_prefix(|c: char| c.is_ascii_digit())
            && d.is_empty()
        {
            let i = (name.as_bytes()[0] - b'0') as usize;
            return Some(self.matched[i].clone().unwrap_or_default());
        }
        Some(match name {
            "src" => m.src.clone(),
            "dst" => m.dst.clone(),
            "wdir" => m.wdir.clone(),
            "type" => m.kind.clone(),
            "attr" => pack_attr(&m.attr),
            "data" => String::from_utf8_lossy(&m.data).into_owned(),
            "file" => self.filename(m, self.file.as_ref()),
            "dir" => self.filename(m, self.dir.as_ref()),
            _ => return rules.vars.get(name).cloned(),
        })
    }

    /// Expand the first word of `s` with the message's variables; the word and the
    /// rest.
    pub fn expand<'s>(&self, m: &Message, rules: &Rules, s: &'s str) -> (String, &'s str) {
        expand_word(s, &mut |n| self.dollar(m, rules, n))
    }

    /// The words of an action's argument, expanded (plumber's argument vector).
    pub fn argv(&self, m: &Message, rules: &Rules, s: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut s = s;
        loop {
            s = s.trim_start_matches([' ', '\t']);
            if s.is_empty() {
                break;
            }
            let (w, rest) = self.expand(m, rules, s);
            out.push(w);
            if rest.len() == s.len() {
                break;
            }
            s = rest;
        }
        out
    }

    fn setvar(&mut self, text: &[u8], spans: &[Option<(usize, usize)>]) {
        self.matched = Default::default();
        for (i, s) in spans.iter().enumerate().take(10) {
            self.matched[i] = s.map(|(a, b)| String::from_utf8_lossy(&text[a..b]).into_owned());
        }
    }

    fn object_text(m: &Message, obj: Object) -> Option<Vec<u8>> {
        Some(match obj {
            Object::Src => m.src.as_bytes().to_vec(),
            Object::Dst => m.dst.as_bytes().to_vec(),
            Object::Wdir => m.wdir.as_bytes().to_vec(),
            Object::Type => m.kind.as_bytes().to_vec(),
            Object::Attr => pack_attr(&m.attr).into_bytes(),
            Object::Data => m.data.clone(),
            Object::Arg | Object::Plumb => return None,
        })
    }

    fn matches(&mut self, m: &Message, r: &Rule) -> bool {
        let Some(re) = &r.re else { return false };
        if r.obj == Object::Data
            && let Some(click) = m.lookup("click")
        {
            let click = usize::try_from(crate::msg::atoi(click)).unwrap_or(0);
            let Some(sp) = re.click_match(&m.data, click) else {
                return false;
            };
            let Some(whole) = sp[0] else { return false };
            if self.p.is_some_and(|p| p != whole) {
                return false;
            }
            self.clear_click = true;
            self.set_data = true;
            self.p = Some(whole);
            self.setvar(&m.data, &sp);
            return true;
        }
        let Some(text) = Self::object_text(m, r.obj) else {
            return false;
        };
        match re.full_match(&text) {
            Some(sp) => {
                self.setvar(&text, &sp);
                true
            }
            None => false,
        }
    }

    fn isfile(&mut self, m: &Message, rules: &Rules, r: &Rule, dir: bool) -> bool {
        let name = match r.obj {
            Object::Arg => self.expand(m, rules, &r.arg).0,
            Object::Plumb => return false,
            o => match Self::object_text(m, o) {
                Some(t) => String::from_utf8_lossy(&t).into_owned(),
                None => return false,
            },
        };
        let file = absolute(&m.wdir, &name);
        let ok = match std::fs::metadata(&file) {
            Ok(md) => md.is_dir() == dir,
            Err(_) => false,
        };
        if ok {
            if dir {
                self.dir = Some(file);
            } else {
                self.file = Some(file);
            }
        }
        ok
    }

    /// One pattern; rewrites (`set`, `add`, `delete`) change `m` for good.
    fn pattern(&mut self, m: &mut Message, rules: &Rules, r: &Rule) -> bool {
        match r.verb {
            Verb::Is => match Self::object_text(m, r.obj) {
                Some(t) => t == r.qarg.as_bytes(),
                None => false,
            },
            Verb::Matches => self.matches(m, r),
            Verb::IsFile => self.isfile(m, rules, r, false),
            Verb::IsDir => self.isfile(m, rules, r, true),
            Verb::Set => {
                let v = self.expand(m, rules, &r.arg).0;
                match r.obj {
                    Object::Data => {
                        m.data = v.into_bytes();
                        self.p = None;
                        self.set_data = false;
                    }
                    Object::Dst => m.dst = v,
                    Object::Src => m.src = v,
                    Object::Type => m.kind = v,
                    Object::Wdir => m.wdir = v,
                    Object::Attr => m.attr = unpack_attr(&v),
                    Object::Arg | Object::Plumb => {}
                }
                true
            }
            Verb::Add => {
                let v = self.expand(m, rules, &r.arg).0;
                m.attr.extend(unpack_attr(&v));
                true
            }
            Verb::Delete => {
                let v = self.expand(m, rules, &r.arg).0;
                m.del_attr(&v)
            }
            Verb::To | Verb::Client | Verb::Start => false,
        }
    }

    /// Try one rule set; on success `m` has its port as dst (if it had none) and the
    /// click has been applied.
    pub fn match_set(m: &mut Message, rules: &Rules, rs: &RuleSet) -> Option<Exec> {
        if !m.dst.is_empty()
            && let Some(p) = &rs.port
            && *p != m.dst
        {
            return None;
        }
        let mut e = Exec::default();
        for r in &rs.pats {
            if !e.pattern(m, rules, r) {
                return None;
            }
        }
        if let Some(p) = &rs.port
            && m.dst.is_empty()
        {
            m.dst = p.clone();
        }
        if e.clear_click {
            m.del_attr("click");
            if e.set_data {
                m.data = e.matched[0].clone().unwrap_or_default().into_bytes();
            }
        }
        Some(e)
    }
}

/// The outcome of applying the rules to a message.
pub struct Matched<'r> {
    pub set: &'r RuleSet,
    pub exec: Exec,
}

/// Apply the rules: the first set that matches, if any. `m` is changed by the rules
/// that ran, as plumber(4) does.
pub fn apply<'r>(m: &mut Message, rules: &'r Rules) -> Option<Matched<'r>> {
    for rs in &rules.sets {
        if let Some(exec) = Exec::match_set(m, rules, rs) {
            return Some(Matched { set: rs, exec });
        }
    }
    None
}

/// The command a matched set starts: (argv, hold the message for a client).
pub fn startup(
    m: &Message,
    rules: &Rules,
    matched: Option<&Matched<'_>>,
) -> Result<(Vec<String>, bool), &'static str> {
    let Some(mt) = matched else {
        return Err("no start action for plumb message");
    };
    for a in &mt.set.acts {
        let hold = match a.verb {
            Verb::Start => false,
            Verb::Client => {
                if m.dst.is_empty() {
                    return Err("no port for \"client\" rule");
                }
                true
            }
            _ => continue,
        };
        let argv = mt.exec.argv(m, rules, &a.arg);
        if argv.is_empty() {
            return Err("empty argument list");
        }
        return Ok((argv, hold));
    }
    Err("no start action for plumb message")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::Attr;
    use crate::rules::Library;

    struct NoLib;
    impl Library for NoLib {
        fn open(&self, _: &str) -> Option<String> {
            None
        }
    }

    fn rules(t: &str) -> Rules {
        Rules::parse("t", t, &NoLib).unwrap()
    }

    fn msg(data: &str) -> Message {
        Message::text("test", "/tmp", data.as_bytes())
    }

    #[test]
    fn cleanname_cases() {
        assert_eq!(cleanname("/a/./b/../c//d/"), "/a/c/d");
        assert_eq!(cleanname("a/../.."), "..");
        assert_eq!(cleanname("/.."), "/");
        assert_eq!(cleanname(""), ".");
    }

    #[test]
    fn is_on_each_object() {
        for (obj, field) in [
            ("src", 0),
            ("dst", 1),
            ("wdir", 2),
            ("type", 3),
            ("data", 4),
        ] {
            let r = rules(&format!("{obj} is yes\nplumb to p\n"));
            let mut m = Message::default();
            let mut n = Message::default();
            for (i, f) in [&mut m.src, &mut m.dst, &mut m.wdir, &mut m.kind]
                .into_iter()
                .enumerate()
            {
                if i == field {
                    *f = "yes".into();
                }
            }
            if field == 4 {
                m.data = b"yes".to_vec();
            }
            if field == 1 {
                // A dst must name the set's port for the set to be tried.
                let r = rules("dst is p\nplumb to p\n");
                m.dst = "p".into();
                assert!(apply(&mut m, &r).is_some());
                continue;
            }
            assert!(apply(&mut m, &r).is_some(), "{obj} is");
            assert!(apply(&mut n, &r).is_none(), "{obj} is not");
        }
        let r = rules("attr is 'a=1 b=2'\nplumb to p\n");
        let mut m = msg("x");
        m.attr = crate::msg::unpack_attr("a=1 b=2");
        assert!(apply(&mut m, &r).is_some());
    }

    #[test]
    fn matches_sets_variables() {
        let r = rules(
            "type matches 't.*'\nsrc matches '(a)(c)me'\nwdir matches '/tmp'\ndata matches '([a-z]+)\\.([ch])'\nplumb to edit\nplumb start ed $1 $2 $src $wdir $type $dst $data\n",
        );
        let mut m = msg("main.c");
        m.src = "acme".into();
        let mt = apply(&mut m, &r).unwrap();
        assert_eq!(m.dst, "edit");
        let (argv, hold) = startup(&m, &r, Some(&mt)).unwrap();
        assert!(!hold);
        assert_eq!(
            argv,
            ["ed", "main", "c", "acme", "/tmp", "text", "edit", "main.c"]
        );
        // The whole text must match.
        let mut m = msg("xmain.c.");
        assert!(apply(&mut m, &r).is_none());
        // attr matches is against the packed attributes.
        let r = rules("attr matches '.*addr=[0-9]+.*'\nplumb to p\n");
        let mut m = msg("x");
        m.attr.push(Attr {
            name: "addr".into(),
            value: "12".into(),
        });
        assert!(apply(&mut m, &r).is_some());
    }

    #[test]
    fn click_narrows_data_and_is_removed() {
        let r = rules(
            "data matches '[a-zA-Z0-9_./]+'\ndata matches '([a-zA-Z0-9_./]+):([0-9]+)'\nplumb to edit\nplumb client ed\n",
        );
        let mut m = msg("error at foo.c:12: bad");
        m.attr = crate::msg::unpack_attr("click=11 other=1");
        let mt = apply(&mut m, &r);
        // The two matches select different spans (foo.c vs foo.c:12): no match.
        assert!(mt.is_none());
        let r =
            rules("data matches '([a-zA-Z0-9_./]+):([0-9]+)'\nplumb to edit\nplumb client ed $1\n");
        let mut m = msg("error at foo.c:12: bad");
        m.attr = crate::msg::unpack_attr("click=11 other=1");
        let mt = apply(&mut m, &r).unwrap();
        assert_eq!(m.data, b"foo.c:12");
        assert_eq!(m.lookup("click"), None);
        assert_eq!(m.lookup("other"), Some("1"));
        let (argv, hold) = startup(&m, &r, Some(&mt)).unwrap();
        assert!(hold);
        assert_eq!(argv, ["ed", "foo.c"]);
    }

    #[test]
    fn isfile_isdir_file_dir() {
        let d = tempfile::tempdir().unwrap();
        let dp = d.path().to_str().unwrap();
        std::fs::write(d.path().join("f.txt"), "x").unwrap();
        let r = rules(
            "data matches '([a-z.]+):([0-9]+)'\narg isfile $1\ndata set $file\nattr add addr=$2\nplumb to edit\nplumb start x $file $data $attr\n",
        );
        let mut m = Message::text("t", dp, b"f.txt:7");
        let mt = apply(&mut m, &r).unwrap();
        let f = format!("{dp}/f.txt");
        assert_eq!(m.data, f.as_bytes());
        assert_eq!(m.lookup("addr"), Some("7"));
        let (argv, _) = startup(&m, &r, Some(&mt)).unwrap();
        assert_eq!(argv, ["x", f.as_str(), f.as_str(), "addr=7"]);
        let mut m = Message::text("t", dp, b"nope.txt:7");
        assert!(apply(&mut m, &r).is_none());

        let r = rules("arg isdir $data\nplumb start ls $dir\n");
        let mut m = Message::text("t", "/", dp.as_bytes());
        let mt = apply(&mut m, &r).unwrap();
        assert_eq!(startup(&m, &r, Some(&mt)).unwrap().0, ["ls", dp]);
        let mut m = Message::text("t", dp, b"f.txt");
        assert!(apply(&mut m, &r).is_none(), "a file is not a directory");
        let r = rules("data isfile -\nplumb start cat $file\n");
        let mut m = Message::text("t", dp, b"f.txt");
        assert!(apply(&mut m, &r).is_some());
        let r = rules("wdir isdir -\narg isdir /\nplumb start x $dir\n");
        let mut m = Message::text("t", dp, b"whatever");
        let mt = apply(&mut m, &r).unwrap();
        assert_eq!(startup(&m, &r, Some(&mt)).unwrap().0, ["x", "/"]);
    }

    #[test]
    fn set_add_delete() {
        let r = rules(
            "src set new\ndst set p\nwdir set /w\ntype set t2\nattr delete gone\nattr add k='''a b'''\ndata set $src.$type\nplumb to p\n",
        );
        let mut m = msg("x");
        m.attr = crate::msg::unpack_attr("gone=1 keep=2");
        assert!(apply(&mut m, &r).is_some());
        assert_eq!(
            (
                m.src.as_str(),
                m.dst.as_str(),
                m.wdir.as_str(),
                m.kind.as_str()
            ),
            ("new", "p", "/w", "t2")
        );
        assert_eq!(m.data, b"new.t2");
        assert_eq!(crate::msg::pack_attr(&m.attr), "keep=2 k='a b'");
        // delete of an absent attribute fails the set.
        let r = rules("attr delete nosuch\nplumb to p\n");
        assert!(apply(&mut msg("x"), &r).is_none());
        let r = rules("attr set 'a=1 b=2'\nplumb to p\n");
        let mut m = msg("x");
        assert!(apply(&mut m, &r).is_some());
        assert_eq!(crate::msg::pack_attr(&m.attr), "a=1 b=2");
    }

    #[test]
    fn dst_must_name_the_port() {
        let r = rules("type is text\nplumb to web\n\ntype is text\nplumb to edit\n");
        let mut m = msg("x");
        m.dst = "edit".into();
        let mt = apply(&mut m, &r).unwrap();
        assert_eq!(mt.set.port.as_deref(), Some("edit"));
    }

    #[test]
    fn variables_of_the_file_at_run_time() {
        let r = rules("editor=sam\n\ntype is text\nplumb to edit\nplumb client $editor -r $data\n");
        let mut m = msg("x y");
        let mt = apply(&mut m, &r).unwrap();
        assert_eq!(startup(&m, &r, Some(&mt)).unwrap().0, ["sam", "-r", "x y"]);
    }

    #[test]
    fn client_needs_a_port() {
        let r = rules("type is text\nplumb client x\n");
        let mut m = msg("x");
        let mt = apply(&mut m, &r).unwrap();
        assert_eq!(
            startup(&m, &r, Some(&mt)).unwrap_err(),
            "no port for \"client\" rule"
        );
        assert_eq!(
            startup(&m, &r, None).unwrap_err(),
            "no start action for plumb message"
        );
    }
}
