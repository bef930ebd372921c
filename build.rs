//! Link settings for the binaries.

fn main() {
    // rc starts for every `rc -c` and every mk recipe, so its start-up is trimmed:
    // relative relocations packed (fewer to apply and fewer pages written), and C
    // library symbols bound when first called rather than all at once.
    println!("cargo:rustc-link-arg-bin=rc=-Wl,-z,pack-relative-relocs");
    println!("cargo:rustc-link-arg-bin=rc=-Wl,-z,lazy");
    println!("cargo:rerun-if-changed=build.rs");
}
