//! The rules built into the plumber (docs/plumbing.md): `initial.plumbing` is read
//! when `$home/lib/plumbing` does not exist; it and any rules file may
//! `include basic` and `include fileaddr`, which come from here when no file of that
//! name is found.

/// The rules read when the user has none.
pub const INITIAL: &str = include_str!("../rules/initial.plumbing");
pub const BASIC: &str = include_str!("../rules/basic");
pub const FILEADDR: &str = include_str!("../rules/fileaddr");

/// A built-in rules file by name.
pub fn file(name: &str) -> Option<&'static str> {
    match name {
        "initial.plumbing" => Some(INITIAL),
        "basic" => Some(BASIC),
        "fileaddr" => Some(FILEADDR),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use crate::exec::{apply, startup};
    use crate::msg::{Message, unpack_attr};
    use crate::rules::{HostLibrary, Rules};

    fn defaults() -> Rules {
        Rules::parse("initial.plumbing", super::INITIAL, &HostLibrary).unwrap()
    }

    #[test]
    fn parse_and_declare_ports() {
        let r = defaults();
        for p in [
            "seemail",
            "showmail",
            "web",
            "sendmail",
            "image",
            "postscript",
            "edit",
        ] {
            assert!(r.ports.iter().any(|x| x == p), "port {p}");
        }
        assert_eq!(r.vars["editor"], "acme");
    }

    fn route(data: &str, wdir: &str) -> Option<(String, Vec<String>, Message)> {
        let r = defaults();
        let mut m = Message::text("test", wdir, data.as_bytes());
        let mt = apply(&mut m, &r)?;
        let argv = startup(&m, &r, Some(&mt)).map(|x| x.0).unwrap_or_default();
        Some((m.dst.clone(), argv, m))
    }

    #[test]
    fn urls_go_to_web() {
        let (dst, argv, _) = route("https://example.com/a/b?c=d", "/").unwrap();
        assert_eq!(dst, "web");
        assert_eq!(argv, ["xdg-open", "https://example.com/a/b?c=d"]);
    }

    #[test]
    fn clicked_url_in_a_line() {
        let r = defaults();
        let mut m = Message::text("acme", "/", b"see http://9p.io/plan9/ for more");
        m.attr = unpack_attr("click=12");
        apply(&mut m, &r).unwrap();
        assert_eq!(m.dst, "web");
        assert_eq!(m.data, b"http://9p.io/plan9/");
    }

    #[test]
    fn file_addresses_go_to_edit() {
        let d = tempfile::tempdir().unwrap();
        let dp = d.path().to_str().unwrap();
        std::fs::write(d.path().join("main.c"), "int main;\n").unwrap();
        let f = format!("{dp}/main.c");
        for (data, addr) in [
            ("main.c", ""),
            ("main.c:12", "12"),
            ("main.c:/main/", "/main/"),
            ("main.c:12,14", "12,14"),
            ("main.c:3:7", "3-#0+#7-#1"),
        ] {
            let (dst, argv, m) = route(data, dp).unwrap_or_else(|| panic!("{data}"));
            assert_eq!(dst, "edit", "{data}");
            assert_eq!(argv, ["acme"]);
            assert_eq!(m.data, f.as_bytes(), "{data}");
            assert_eq!(m.lookup("addr"), Some(addr), "{data}");
        }
        assert!(route("nosuchfile.c:12", dp).is_none());
    }

    #[test]
    fn man_pages_images_mail() {
        let (_, argv, _) = route("ls(1)", "/").unwrap();
        assert_eq!(argv[0], "rc");
        assert!(argv[2].starts_with("man 1 ls "), "{argv:?}");
        assert!(
            argv[2].ends_with("'action=showdata filename=/man/ls(1)'"),
            "{argv:?}"
        );

        let d = tempfile::tempdir().unwrap();
        let dp = d.path().to_str().unwrap();
        std::fs::write(d.path().join("cat.PNG"), "x").unwrap();
        std::fs::write(d.path().join("doc.pdf"), "x").unwrap();
        let (dst, argv, _) = route("cat.PNG", dp).unwrap();
        assert_eq!(
            (dst.as_str(), argv[1].as_str()),
            ("image", format!("{dp}/cat.PNG").as_str())
        );
        let (dst, _, _) = route("doc.pdf", dp).unwrap();
        assert_eq!(dst, "postscript");

        let (dst, argv, _) = route("glenda@bell-labs.com", "/").unwrap();
        assert_eq!(dst, "sendmail");
        assert_eq!(argv, ["xdg-open", "mailto:glenda@bell-labs.com"]);
    }

    #[test]
    fn nobody_wants_plain_words() {
        assert!(route("hello world", "/").is_none());
    }
}
