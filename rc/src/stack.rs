//! Deep recursion (nesting in the text, or in what runs) moves onto stacks allocated
//! from the heap instead of overflowing the thread's stack.
//!
//! `stacker::maybe_grow` would find the stack's end by reading /proc/self/maps at the
//! first call, which costs rc's start-up more than everything else it does; so the
//! main thread's end is worked out from `RLIMIT_STACK` when rc starts ([`init`]), and
//! stacker only allocates. Elsewhere (other threads, tests) stacker does it all.

use std::cell::Cell;

thread_local! {
    /// The lowest stack address usable before growing; 0 if unknown.
    static LIMIT: Cell<usize> = const { Cell::new(0) };
}

/// Grow when less than this is left...
const RED_ZONE: usize = 128 * 1024;
/// ...by a segment of this size.
const GROW: usize = 2 * 1024 * 1024;

#[inline(always)]
fn sp() -> usize {
    let x = 0u8;
    std::hint::black_box(&x) as *const u8 as usize
}

/// Note where this (the main) thread's stack ends.
pub fn init() {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct it is given.
    let size = if unsafe { libc::getrlimit(libc::RLIMIT_STACK, &mut rl) } == 0
        && rl.rlim_cur != libc::RLIM_INFINITY
        && rl.rlim_cur >= 1024 * 1024
    {
        (rl.rlim_cur as usize).min(1 << 30)
    } else {
        8 * 1024 * 1024
    };
    // A margin for what ran before main.
    LIMIT.set(sp().saturating_sub(size) + 512 * 1024);
}

/// Run `f`, on a new stack segment if this one is nearly used up.
#[inline]
pub fn guard<R>(f: impl FnOnce() -> R) -> R {
    let limit = LIMIT.get();
    if limit == 0 {
        return stacker::maybe_grow(RED_ZONE, GROW, f);
    }
    if sp() > limit + RED_ZONE {
        return f();
    }
    stacker::grow(GROW, || {
        let old = LIMIT.replace(sp().saturating_sub(GROW) + 64 * 1024);
        let r = f();
        LIMIT.set(old);
        r
    })
}
