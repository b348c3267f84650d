//! Which memory allocator hothot runs on, and through which entry points.
//!
//! mimalloc (the default `mimalloc` feature; README's "Performance" has the
//! measurements), its v2 line (libmimalloc-sys's `v2` feature): under
//! hothot's pattern of allocations, v3 emptied and freed a page and took a
//! fresh one about once every three requests, and handed full pages
//! between threads; counted with callgrind, v2 costs about 1,150
//! instructions less per proxied request.
//!
//! It is called as the `mimalloc` crate calls it except for one thing:
//! requests that need no more than word alignment (nearly all of them) go
//! to mimalloc's plain `mi_malloc`/`mi_zalloc`/`mi_realloc`. Why: the crate
//! sends every request to `mi_malloc_aligned`, whose fast path (v2 and v3
//! alike) serves only blocks up to 1 KiB whose next free block happens to
//! be aligned; anything larger (a connection's task, a header map's
//! buffers) is over-allocated by `alignment - 1` bytes through the generic
//! path, into the next size class. Counted with callgrind
//! (`scripts/bench-instructions.sh`, with v3) that was about 7,000
//! instructions of allocation per proxied request. Every mimalloc block is
//! at least word-aligned (its smallest block is one word and all block
//! sizes are multiples of it), so the plain entry points give such requests
//! the alignment they ask for. Larger alignments (tokio's cache-padded
//! structures) still take the aligned entry points.

use core::alloc::{GlobalAlloc, Layout};
use core::ffi::{c_int, c_long, c_void};
use libmimalloc_sys as mi;

extern "C" {
    // In libmimalloc-sys only with its `extended` feature.
    fn mi_option_set(option: c_int, value: c_long);
}

/// `mi_option_arena_eager_commit`: its place in v2's `mi_option_t`.
const ARENA_EAGER_COMMIT: c_int = 4;

/// Run by the loader before anything allocates (`src/main.rs` registers
/// it): mimalloc commits its arenas piece by piece as they are used, not
/// whole at once, unless `MIMALLOC_ARENA_EAGER_COMMIT` says otherwise.
///
/// Why: v2 commits an arena eagerly and asks for transparent huge pages on
/// it, so whatever it touches becomes resident in 2 MiB pages (18 MiB of
/// them after start-up). Measured: resident memory after start-up 36 MiB
/// instead of 16 (v3: 27), and 63 - 65 MiB instead of 23 - 41 under a
/// write load (`scripts/bench-writes.sh`; v3: 37 - 38), for the same
/// instructions per request (callgrind, 56,726 against 56,782 - 56,921).
/// It must run before the first allocation, which creates the arena: in
/// `main` it was too late.
pub extern "C" fn configure_at_load() {
    // Nothing here may allocate. An operator's own setting stands.
    // SAFETY: getenv reads the environment, which nothing changes yet;
    // mi_option_set only writes mimalloc's table of options.
    unsafe {
        if libc::getenv(c"MIMALLOC_ARENA_EAGER_COMMIT".as_ptr()).is_null() {
            mi_option_set(ARENA_EAGER_COMMIT, 0);
        }
    }
}

/// The alignment every mimalloc block has, whatever its size.
const WORD: usize = core::mem::size_of::<usize>();

/// hothot's global allocator (see the module documentation).
pub struct Allocator;

// SAFETY: every block comes from mimalloc and goes back to it; a block
// handed out by the plain entry points is word-aligned, and those are used
// only when the layout asks for no more than that.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= WORD {
            unsafe { mi::mi_malloc(layout.size()) as *mut u8 }
        } else {
            unsafe { mi::mi_malloc_aligned(layout.size(), layout.align()) as *mut u8 }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= WORD {
            unsafe { mi::mi_zalloc(layout.size()) as *mut u8 }
        } else {
            unsafe { mi::mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8 }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        unsafe { mi::mi_free(ptr as *mut c_void) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= WORD {
            unsafe { mi::mi_realloc(ptr as *mut c_void, new_size) as *mut u8 }
        } else {
            unsafe {
                mi::mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    extern "C" {
        fn mi_option_get(option: c_int) -> c_long;
    }

    /// The option number names the option meant: a test process does not
    /// run `configure_at_load`, so it holds v2's default for
    /// `arena_eager_commit`, 2 ("on where the OS overcommits").
    #[test]
    fn the_option_set_at_load_is_arena_eager_commit() {
        if std::env::var_os("MIMALLOC_ARENA_EAGER_COMMIT").is_none() {
            assert_eq!(unsafe { mi_option_get(ARENA_EAGER_COMMIT) }, 2);
        }
    }

    /// Each size class the plain path serves, including the over-1 KiB ones
    /// that motivated it, hands out blocks aligned as the layout asks, also
    /// after growing and shrinking; larger alignments are still honoured.
    #[test]
    fn blocks_have_the_alignment_their_layout_asks_for() {
        let allocator = Allocator;
        for align in [1, 2, 4, 8, 16, 64, 128, 4096] {
            for size in [1, 7, 8, 24, 100, 1000, 1500, 4096, 5000, 70_000] {
                let layout = Layout::from_size_align(size, align).expect("valid layout");
                unsafe {
                    let block = allocator.alloc(layout);
                    assert!(!block.is_null());
                    assert_eq!(block as usize % align, 0, "size {size} align {align}");
                    block.write_bytes(0xAB, size);
                    let zeroed = allocator.alloc_zeroed(layout);
                    assert_eq!(
                        zeroed as usize % align,
                        0,
                        "zeroed size {size} align {align}"
                    );
                    assert!((0..size).all(|i| *zeroed.add(i) == 0));
                    let grown = allocator.realloc(block, layout, size * 3);
                    assert_eq!(grown as usize % align, 0, "grown size {size} align {align}");
                    assert!((0..size).all(|i| *grown.add(i) == 0xAB), "contents kept");
                    let grown_layout = Layout::from_size_align(size * 3, align).expect("valid");
                    allocator.dealloc(grown, grown_layout);
                    allocator.dealloc(zeroed, layout);
                }
            }
        }
    }
}
