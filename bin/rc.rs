//! rc: Plan 9's shell. See docs/rc.md.
//!
//! A shell is started often (every `rc -c`, every mk recipe), so this binary skips
//! the Rust runtime's start-up (`no_main`: no stack-guard probing of /proc/self/maps,
//! SIGPIPE left at its default as programs expect) and uses the C allocator, which
//! costs nothing to set up.
#![no_main]

// The unwinder linked in (it is small), so that rc does not also load libgcc_s at
// every start.
#[link(name = "gcc_eh", kind = "static", modifiers = "+whole-archive")]
unsafe extern "C" {}

#[unsafe(no_mangle)]
extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    let argv: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if argv.len() == 2 && argv[1] == "--help" {
        print!("{}", rc::USAGE_LONG);
        return 0;
    }
    rc::main(argv)
}
