//! mk: Plan 9's build tool. See docs/mk.md.

fn main() {
    let argv: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if argv.len() == 2 && argv[1] == "--help" {
        print!("{}", mk::USAGE_LONG);
        return;
    }
    std::process::exit(mk::main(argv));
}
