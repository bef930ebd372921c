//! `dial::parse` and `dial::parse_host` of arbitrary UTF-8: never a panic. A bare name
//! is a service in `$NAMESPACE`, which points at a directory under the fuzz target
//! directory (created on first use).
#![no_main]

use lib9::dial::{self, Addr};
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;

fn ns_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/ns"))
}

fn check(s: &str) {
    match dial::parse(s) {
        Ok(Addr::Unix(p)) if !s.contains('!') && !s.starts_with('/') && !s.starts_with("./") => {
            // A bare name: the service of that name in $NAMESPACE.
            assert_eq!(p.parent(), Some(ns_dir().as_path()), "{s:?}");
            assert_eq!(p.file_name().and_then(|f| f.to_str()), Some(s), "{s:?}");
        }
        Ok(a) => {
            let _ = a.to_string();
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    // The default service may be anything too: split the input at its first NUL.
    let (host, defsrv) = s.split_once('\0').unwrap_or((s, "9fs"));
    match dial::parse_host(host, defsrv) {
        Ok(a) => {
            let _ = a.to_string();
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    let _ = dial::service_port(s);
}

fuzz_target!(
    init: {
        let ns = ns_dir();
        std::fs::create_dir_all(ns.parent().unwrap()).expect("fuzz target directory");
        // SAFETY: init runs once, before the fuzzing loop and before any other thread.
        unsafe { std::env::set_var("NAMESPACE", &ns) };
    },
    |data: &[u8]| {
        if let Ok(s) = std::str::from_utf8(data) {
            check(s);
        }
    }
);
