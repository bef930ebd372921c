//! rc: Plan 9's shell. See docs/rc.md.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let argv: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if argv.iter().skip(1).any(|a| a == "--help") && argv.len() == 2 {
        print!("{}", rc::USAGE_LONG);
        return;
    }
    std::process::exit(rc::main(argv));
}
