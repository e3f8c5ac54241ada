//! The process allocator: the system's `malloc`, with a per-thread cache of freed blocks up to
//! 8 KiB ([`cache`]) and over-aligned small blocks served without `memalign` (see the crate README).

use std::alloc::{GlobalAlloc, Layout, System};

pub mod cache;

/// What `malloc` aligns every block to on the platforms Bulkhead runs on (x86_64, aarch64 Linux).
const MALLOC_ALIGN: usize = 16;
/// The largest alignment served by shifting inside a `malloc` block.
const MAX_SHIFTED_ALIGN: usize = 4096;
/// The largest size served by shifting (larger blocks are rare and keep the system's way).
const MAX_SHIFTED_SIZE: usize = 1 << 20;
/// Bytes before an aligned block that hold its `malloc` block's start.
const HEADER: usize = std::mem::size_of::<usize>();

/// The global allocator of Bulkhead's binaries: [`System`], except that freed blocks of up to 8 KiB
/// are kept per thread for the next allocation of their size ([`cache`]), and over-aligned blocks
/// of up to 1 MiB come from a plain `malloc` block, aligned inside it.
#[derive(Debug, Default, Clone, Copy)]
pub struct Malloc;

/// Whether `layout` is served by shifting inside a larger `malloc` block. `alloc` and `dealloc`
/// decide by this alone, so a block always goes back the way it came.
fn shifted(layout: Layout) -> bool {
    layout.align() > MALLOC_ALIGN
        && layout.align() <= MAX_SHIFTED_ALIGN
        && layout.size() <= MAX_SHIFTED_SIZE
}

/// The `malloc` layout that holds an aligned `layout` and its header.
fn outer(layout: Layout) -> Option<Layout> {
    Layout::from_size_align(layout.size().checked_add(layout.align())?, MALLOC_ALIGN).ok()
}

// SAFETY: every block is either the system allocator's own (same layout both ways), a `malloc`
// block that holds at least its size class's size (`cache`), or lies inside a live `malloc` block
// whose start is stored right before it; see `alloc` and `dealloc`.
unsafe impl GlobalAlloc for Malloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if cache::cached(layout) {
            // SAFETY: the caller's contract for `layout` is passed on unchanged.
            return unsafe { cache::alloc(layout, false) };
        }
        if !shifted(layout) {
            // SAFETY: the caller's contract for `layout` is passed on unchanged.
            return unsafe { System.alloc(layout) };
        }
        let Some(outer) = outer(layout) else {
            return std::ptr::null_mut();
        };
        // SAFETY: `outer` has a non-zero size (it includes `align`). Through `self`, so a small
        // one comes from the thread's cache like any other block (tokio's tasks and socket
        // registrations are such blocks).
        let raw = unsafe { self.alloc(outer) };
        if raw.is_null() {
            return raw;
        }
        // `raw` is MALLOC_ALIGN-aligned and `align` a larger power of two, so the aligned address
        // is 16 to `align` bytes past `raw`: room for the header, and `size` bytes still fit.
        let offset = layout.align() - (raw as usize & (layout.align() - 1));
        // SAFETY: `offset <= align`, inside the `size + align` bytes of `raw`.
        let aligned = unsafe { raw.add(offset) };
        // SAFETY: `offset >= MALLOC_ALIGN >= HEADER`, so the header lies inside `raw`'s block, and
        // `aligned - HEADER` is at least 8-aligned.
        unsafe { aligned.sub(HEADER).cast::<*mut u8>().write(raw) };
        aligned
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if cache::cached(layout) {
            // SAFETY: allocated by `cache::alloc`, or reallocated at `cache::realloc_size`, with
            // this layout.
            return unsafe { cache::dealloc(ptr, layout) };
        }
        if !shifted(layout) {
            // SAFETY: allocated by `System` with this layout (see `alloc`).
            return unsafe { System.dealloc(ptr, layout) };
        }
        // SAFETY: `alloc` stored the `malloc` block's start right before `ptr`.
        let raw = unsafe { ptr.sub(HEADER).cast::<*mut u8>().read() };
        if let Some(outer) = outer(layout) {
            // SAFETY: `raw` was allocated by `self.alloc` with exactly `outer`.
            unsafe { self.dealloc(raw, outer) };
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if cache::cached(layout) {
            // SAFETY: as in `alloc`.
            return unsafe { cache::alloc(layout, true) };
        }
        if !shifted(layout) {
            // SAFETY: as in `alloc`.
            return unsafe { System.alloc_zeroed(layout) };
        }
        // SAFETY: as in `alloc`.
        let ptr = unsafe { self.alloc(layout) };
        if !ptr.is_null() {
            // SAFETY: `ptr` is valid for `size` bytes.
            unsafe { ptr.write_bytes(0, layout.size()) };
        }
        ptr
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY (both arms): the caller's contract; a new size keeps the alignment.
        let grown = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if cache::cached(grown) {
            // A cached size's class may be larger than the size (`cache::realloc_size`).
            return unsafe { System.realloc(ptr, layout, cache::realloc_size(new_size)) };
        }
        if !shifted(layout) && !shifted(grown) {
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // An over-aligned block moves: allocate, copy, free (as `GlobalAlloc`'s default does).
        let new = unsafe { self.alloc(grown) };
        if !new.is_null() {
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

/// Gives the pages of freed heap memory back to the system (glibc's `malloc_trim(0)`); a no-op
/// where the C library has no such call. Returns whether any memory was released. The calling
/// thread's cached blocks ([`cache::flush`]) go back to `malloc` first.
///
/// glibc returns the top of a heap to the system only above a threshold that it raises each time a
/// large `mmap`ed block is freed, and never the free pages inside a heap. A data plane calls this
/// after applying a snapshot: the decoded snapshot, freed once compiled, is megabytes of heap (3.4
/// MiB for a router with 5,000 routes) that would otherwise stay resident until reused. It costs a
/// walk over the free blocks of every arena, under each arena's lock: for occasional events, not for
/// a request path.
pub fn release_free_memory() -> bool {
    cache::flush();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: `malloc_trim` only returns free pages of glibc's own heaps to the kernel; it
        // takes each arena's lock and touches no block in use.
        unsafe { malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Anonymous resident memory of this process, in KiB.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn rss_anon_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("RssAnon:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn freed_heap_pages_go_back_to_the_system() {
        // 64 MiB in 4 KiB blocks, written so that they are resident; the last block stays
        // allocated so that glibc cannot give the freed ones back by itself (they are not at the
        // top of the heap).
        let mut blocks: Vec<Vec<u8>> = (0..16_384).map(|i| vec![i as u8 | 1; 4096]).collect();
        let pin = blocks.pop();
        drop(blocks);
        let before = rss_anon_kib();
        assert!(release_free_memory(), "malloc_trim released nothing");
        let after = rss_anon_kib();
        drop(pin);
        assert!(
            before >= after + 32 * 1024,
            "RssAnon {before} KiB -> {after} KiB after release_free_memory"
        );
    }

    /// Allocates `layout`, checks alignment and that every byte is writable and kept, frees it.
    fn roundtrip(layout: Layout, zeroed: bool) {
        let a = Malloc;
        // SAFETY: non-zero sizes only (the callers' layouts).
        unsafe {
            let p = if zeroed {
                a.alloc_zeroed(layout)
            } else {
                a.alloc(layout)
            };
            assert!(!p.is_null());
            assert_eq!(p as usize % layout.align(), 0, "{layout:?}");
            if zeroed {
                assert!((0..layout.size()).all(|i| *p.add(i) == 0), "{layout:?}");
            }
            for i in 0..layout.size() {
                *p.add(i) = (i % 251) as u8;
            }
            assert!((0..layout.size()).all(|i| *p.add(i) == (i % 251) as u8));
            a.dealloc(p, layout);
        }
    }

    #[test]
    fn every_alignment_is_honoured_both_ways() {
        for shift in 0..=14 {
            let align = 1usize << shift;
            for size in [1, 7, 8, 16, 100, 128, 1000, 4096, 70_000] {
                let layout = Layout::from_size_align(size, align).unwrap();
                roundtrip(layout, false);
                roundtrip(layout, true);
            }
        }
    }

    #[test]
    fn the_largest_shifted_and_the_first_unshifted_blocks_work() {
        for size in [MAX_SHIFTED_SIZE, MAX_SHIFTED_SIZE + 1] {
            let layout = Layout::from_size_align(size, 128).unwrap();
            assert_eq!(shifted(layout), size == MAX_SHIFTED_SIZE);
            roundtrip(layout, true);
        }
        let big_align = Layout::from_size_align(64, MAX_SHIFTED_ALIGN * 2).unwrap();
        assert!(!shifted(big_align));
        roundtrip(big_align, false);
    }

    proptest! {
        /// Random layouts, grown and shrunk: aligned, contents kept up to the smaller size.
        #[test]
        fn reallocation_keeps_contents_and_alignment(
            shift in 0u32..13,
            size in 1usize..20_000,
            new_size in 1usize..20_000,
        ) {
            let a = Malloc;
            let layout = Layout::from_size_align(size, 1 << shift).unwrap();
            // SAFETY: non-zero sizes; the block is used within its size.
            unsafe {
                let p = a.alloc(layout);
                prop_assert!(!p.is_null());
                for i in 0..size {
                    *p.add(i) = (i % 253) as u8;
                }
                let q = a.realloc(p, layout, new_size);
                prop_assert!(!q.is_null());
                prop_assert_eq!(q as usize % layout.align(), 0);
                for i in 0..size.min(new_size) {
                    prop_assert_eq!(*q.add(i), (i % 253) as u8);
                }
                a.dealloc(q, Layout::from_size_align(new_size, layout.align()).unwrap());
            }
        }
    }
}
