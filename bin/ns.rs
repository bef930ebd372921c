//! ns: print the name space as the bind and mount commands that rebuild it.
//! See docs/ns.md.

use clap::Parser;

/// Print this process's name space (a ninespace private one) as the `bind` and
/// `mount` lines, in namespace(6)'s format, that would rebuild it on the root a
/// private name space starts with.
#[derive(Parser)]
#[command(name = "ns", version)]
struct Args {}

fn main() {
    // The namespace engine runs its union and 9P servers as `ns --serve ...`.
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).is_some_and(|a| a == "--serve") {
        std::process::exit(srv::ns::serve::main(&argv[2..]));
    }
    let _ = Args::parse();
    if !srv::ns::is_private() {
        eprintln!("ns: not in a private name space (rfork n, or a login rc, makes one)");
        std::process::exit(1);
    }
    match srv::ns::lines() {
        Ok(lines) => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            for l in lines {
                if writeln!(out, "{l}").is_err() {
                    std::process::exit(1);
                }
            }
        }
        Err(e) => {
            eprintln!("ns: {e}");
            std::process::exit(1);
        }
    }
}
