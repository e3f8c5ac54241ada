//! A per-thread cache of freed blocks of up to 8 KiB in front of `malloc`.
//!
//! glibc's own thread cache keeps at most 7 blocks of a size, and none above 1,032 bytes. A proxy
//! frees in bursts: an HTTP/2 connection with 100 requests in flight frees 100 header maps in a row,
//! then allocates 100 again. Past the seventh, every block went to glibc's bins and back
//! (`_int_malloc`, `_int_free`, `malloc_consolidate`: about 200 instructions each way), and so did
//! every block above 1,032 bytes (the boxed routing future, hyper's 8 KiB read buffers). This cache
//! keeps up to [`MAX_PER_CLASS`] blocks of each size class (more of the smallest, up to
//! [`SMALL_CLASS_BYTES`] of them) and [`MAX_BYTES`] in all per thread, on a
//! free list threaded through the blocks themselves.
//!
//! Blocks are `malloc`'s own. A freed block joins the class of the size it was allocated for, and
//! an allocation takes a block of the least class that holds its size. Up to 1,032 bytes the
//! classes are `malloc`'s own 16-byte steps: `malloc` gives a request at least its chunk, whose
//! size is a function of the request, so every block of a class holds the class's size, and a
//! request gets a block of the size `malloc` would have given it. Above, classes go in 256-byte steps, a freed block joins
//! the class its usable size serves, and a thread that keeps blocks allocates (and reallocates)
//! such a block at its class's size, up to 255 bytes more than asked for, so that it serves its
//! size again; other threads allocate the size asked for. A block may be freed on another thread
//! than the one that allocated it: it joins that thread's cache, or goes to `free`.
//!
//! Only threads that ask for it keep blocks ([`enable`]): the data planes' workers, once they serve
//! connections. Other threads (the snapshot applier, blocking tasks, start-up) free at once, so an
//! idle process holds no more than before. A thread's blocks go back to `malloc` when it exits, and
//! [`flush`] gives back the calling thread's at once.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ffi::c_void;
use std::ptr;

extern "C" {
    fn malloc_usable_size(ptr: *mut c_void) -> usize;
    fn free(ptr: *mut c_void);
}

/// What `malloc` aligns every block to (x86_64 and aarch64 glibc); cached blocks need no more.
const MALLOC_ALIGN: usize = 16;
/// The largest size kept.
pub(crate) const MAX_CACHED_SIZE: usize = 8192;
/// Sizes up to this go in `malloc`'s own 16-byte steps (usable sizes 24, 40, 56, ...), larger
/// ones in 256-byte steps.
const SMALL_MAX: usize = 1032;
const SMALL_CLASSES: usize = 64;
const LARGE_BASE: usize = 1024;
const LARGE_STEP: usize = 256;
/// Size classes, with class 0 unused.
const CLASSES: usize = 1 + SMALL_CLASSES + (MAX_CACHED_SIZE - LARGE_BASE) / LARGE_STEP;
/// Blocks kept per class at most: an HTTP/2 connection's requests in flight, and some.
pub(crate) const MAX_PER_CLASS: u32 = 256;
/// Bytes a class of small blocks may hold beyond [`MAX_PER_CLASS`] blocks: an HTTP/2 request has
/// four blocks of 24 bytes, so 100 requests in flight free 400.
pub(crate) const SMALL_CLASS_BYTES: usize = 32 * 1024;
/// Blocks kept per class at most.
const LIMITS: [u32; CLASSES] = {
    let mut limits = [MAX_PER_CLASS; CLASSES];
    let mut class = 1;
    while class < CLASSES {
        let fit = SMALL_CLASS_BYTES / class_size(class);
        if fit > MAX_PER_CLASS as usize {
            limits[class] = fit as u32;
        }
        class += 1;
    }
    limits
};
/// Bytes kept per thread at most, over all classes.
pub(crate) const MAX_BYTES: usize = 1024 * 1024;

/// Whether a block of `layout` goes through the cache. `alloc` and `dealloc` decide by this
/// alone, so every block goes back the way it came.
pub(crate) fn cached(layout: Layout) -> bool {
    cfg!(all(target_os = "linux", target_env = "gnu"))
        && layout.align() <= MALLOC_ALIGN
        && layout.size() != 0
        && layout.size() <= MAX_CACHED_SIZE
}

/// The smallest class whose blocks all hold `size` bytes (`1..=MAX_CACHED_SIZE`).
fn class_for(size: usize) -> usize {
    if size <= SMALL_MAX {
        size.saturating_sub(8).div_ceil(16).max(1)
    } else {
        SMALL_CLASSES + (size - LARGE_BASE).div_ceil(LARGE_STEP)
    }
}

/// The largest class a block of `usable` bytes (more than 1,032) serves.
fn large_class_of_block(usable: usize) -> usize {
    (SMALL_CLASSES + (usable - LARGE_BASE) / LARGE_STEP).min(CLASSES - 1)
}

/// The size to ask `malloc` for, for a block of `size` bytes ([`cached`]) on a thread that keeps
/// blocks or not: `size`, or its class's size when larger than 1,032 bytes on a thread that does
/// (so that, freed, the block serves requests of its size again).
fn alloc_size(size: usize, keeps: bool) -> usize {
    if keeps && size > SMALL_MAX {
        class_size(class_for(size))
    } else {
        size
    }
}

/// [`alloc_size`] on the calling thread, for `realloc`.
pub(crate) fn realloc_size(size: usize) -> usize {
    alloc_size(size, with_cache(|_| ()).is_some())
}

/// The least usable size of the blocks of `class`.
const fn class_size(class: usize) -> usize {
    if class <= SMALL_CLASSES {
        16 * class + 8
    } else {
        LARGE_BASE + (class - SMALL_CLASSES) * LARGE_STEP
    }
}

/// Free blocks of one class, each holding the address of the next in its first bytes.
#[derive(Clone, Copy)]
struct Bin {
    head: *mut u8,
    len: u32,
}

/// One thread's cache, allocated when the thread asks for one ([`enable`]).
struct Cache {
    bins: [Bin; CLASSES],
    bytes: usize,
}

impl Cache {
    /// A cached block of `class`, if any.
    fn pop(&mut self, class: usize) -> Option<*mut u8> {
        let bin = &mut self.bins[class];
        if bin.head.is_null() {
            return None;
        }
        let block = bin.head;
        // SAFETY: `push` wrote the next block's address at the start of every cached block.
        bin.head = unsafe { block.cast::<*mut u8>().read() };
        bin.len -= 1;
        self.bytes -= class_size(class);
        Some(block)
    }

    /// Keeps `block` of `class` unless the class or the thread is at its limit.
    fn push(&mut self, class: usize, block: *mut u8) -> bool {
        let size = class_size(class);
        let bin = &mut self.bins[class];
        if bin.len >= LIMITS[class] || self.bytes + size > MAX_BYTES {
            return false;
        }
        // SAFETY: `block` is a free block of at least 16 bytes, 16-aligned.
        unsafe { block.cast::<*mut u8>().write(bin.head) };
        bin.head = block;
        bin.len += 1;
        self.bytes += size;
        true
    }

    /// Gives every cached block back to `malloc`.
    fn flush(&mut self) {
        for class in 1..CLASSES {
            while let Some(block) = self.pop(class) {
                // SAFETY: every cached block is a `malloc` block no one else holds.
                unsafe { free(block.cast()) };
            }
        }
    }
}

thread_local! {
    /// The calling thread's cache, null until [`enable`]. A pointer rather than the cache itself,
    /// so a thread that keeps nothing carries 8 bytes, not the cache, in its thread-local storage.
    static CACHE: Cell<*mut Cache> = const { Cell::new(ptr::null_mut()) };
    /// Registered by [`enable`]: gives the cache back when the thread exits.
    static OWNER: Owner = const { Owner };
}

/// Frees the thread's cache and its blocks at thread exit.
struct Owner;

impl Drop for Owner {
    fn drop(&mut self) {
        // Detached first: what other destructors free from now on goes to `free`.
        let cache = CACHE.with(|c| c.replace(ptr::null_mut()));
        if !cache.is_null() {
            // SAFETY: `enable` allocated the cache with `System` and this layout; it was the
            // thread's alone and is detached.
            unsafe {
                (*cache).flush();
                System.dealloc(cache.cast(), Layout::new::<Cache>());
            }
        }
    }
}

/// Runs `f` on the calling thread's cache, if it has one.
fn with_cache<R>(f: impl FnOnce(&mut Cache) -> R) -> Option<R> {
    let cache = CACHE.try_with(Cell::get).ok()?;
    // SAFETY: the cache belongs to this thread, lives until `Owner` detaches it, and no call
    // made while it is borrowed re-enters it (`malloc` and `free` are C): this is the only
    // reference to it.
    (!cache.is_null()).then(|| f(unsafe { &mut *cache }))
}

/// A block for `layout`, which must be [`cached`]: a cached one of its class, or else `malloc`'s.
///
/// # Safety
/// As [`GlobalAlloc::alloc`].
pub(crate) unsafe fn alloc(layout: Layout, zeroed: bool) -> *mut u8 {
    let popped = with_cache(|cache| cache.pop(class_for(layout.size())));
    if let Some(Some(block)) = popped {
        if zeroed {
            // SAFETY: the block holds at least its class's size, `>= size` bytes.
            unsafe { block.write_bytes(0, layout.size()) };
        }
        return block;
    }
    let size = alloc_size(layout.size(), popped.is_some());
    // SAFETY: at least `size`, a multiple of 256 up to 8 KiB when larger.
    let layout = unsafe { Layout::from_size_align_unchecked(size, layout.align()) };
    if zeroed {
        // SAFETY: a non-zero size.
        unsafe { System.alloc_zeroed(layout) }
    } else {
        // SAFETY: a non-zero size.
        unsafe { System.alloc(layout) }
    }
}

/// Frees `ptr`, a block allocated with `layout` by [`alloc`] (or reallocated to it at
/// [`realloc_size`]), which must be [`cached`]: kept if the thread keeps blocks and has room, in
/// its size's class up to 1,032 bytes (every block of the size holds the class's size), in the
/// class its usable size serves above (the block may or may not have been rounded up).
///
/// # Safety
/// As [`GlobalAlloc::dealloc`].
pub(crate) unsafe fn dealloc(ptr: *mut u8, layout: Layout) {
    let class = if layout.size() <= SMALL_MAX {
        class_for(layout.size())
    } else {
        // SAFETY: `ptr` is a live `malloc` block (every block of a cached layout is one).
        large_class_of_block(unsafe { malloc_usable_size(ptr.cast()) })
    };
    // SAFETY: as above.
    debug_assert!(unsafe { malloc_usable_size(ptr.cast()) } >= class_size(class));
    if with_cache(|cache| cache.push(class, ptr)) != Some(true) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) };
    }
}

/// Makes the calling thread keep the blocks it frees, for its next allocations of their size
/// classes: for threads that allocate and free at a high rate, such as a data plane's workers.
/// The cache (about 1.5 KiB) is allocated on the first call; later calls cost a thread-local read.
pub fn enable() {
    if CACHE.try_with(|c| !c.get().is_null()).unwrap_or(true) {
        return;
    }
    // Registers the destructor first: a thread already exiting gets no cache.
    if OWNER.try_with(|_| ()).is_err() {
        return;
    }
    let layout = Layout::new::<Cache>();
    // SAFETY: a non-zero size.
    let cache = unsafe { System.alloc(layout) }.cast::<Cache>();
    if cache.is_null() {
        return;
    }
    let empty = Bin {
        head: ptr::null_mut(),
        len: 0,
    };
    // SAFETY: `cache` is a fresh block for a `Cache`.
    unsafe {
        cache.write(Cache {
            bins: [empty; CLASSES],
            bytes: 0,
        })
    };
    CACHE.with(|c| c.set(cache));
}

/// Gives the calling thread's cached blocks back to `malloc`.
pub fn flush() {
    with_cache(Cache::flush);
}

/// Bytes the calling thread's cache holds (for the tests of the limits).
#[cfg(test)]
fn cached_bytes() -> usize {
    with_cache(|cache| cache.bytes).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_size_has_the_least_class_that_holds_it() {
        let mut last = 0;
        for size in 1..=MAX_CACHED_SIZE {
            let class = class_for(size);
            assert!((1..CLASSES).contains(&class), "size {size} class {class}");
            assert!(class_size(class) >= size, "size {size} class {class}");
            assert!(class >= last, "size {size}");
            last = class;
            assert!(
                class == 1 || class_size(class - 1) < size,
                "size {size} fits a smaller class"
            );
        }
        assert_eq!(class_for(MAX_CACHED_SIZE), CLASSES - 1);
        assert_eq!(class_size(CLASSES - 1), MAX_CACHED_SIZE);
    }

    /// Up to 1,032 bytes a block is the size `malloc` gives anyway, and holds its class's size.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn small_blocks_are_the_size_malloc_gives() {
        on_new_thread(|| {
            for size in 1..=SMALL_MAX {
                let layout = Layout::from_size_align(size, 1).unwrap();
                // SAFETY: non-zero sizes; freed below with their layouts.
                unsafe {
                    let p = alloc(layout, false);
                    // glibc's chunk for a request, less its 8-byte header: what `malloc` gives
                    // at least, and the class's size.
                    let given = ((size + 8 + 15) & !15).max(32) - 8;
                    assert_eq!(class_size(class_for(size)), given, "size {size}");
                    let usable = malloc_usable_size(p.cast());
                    assert!(usable >= given, "size {size}: {usable}");
                    dealloc(p, layout);
                }
            }
        });
    }

    /// Above 1,032 bytes a thread that keeps blocks allocates (and reallocates) at the class's
    /// size, so that the freed block serves its own size again; other threads allocate the size
    /// asked for, and such a block serves a class it holds.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn large_blocks_go_back_to_a_class_they_hold() {
        for keeps in [true, false] {
            on_new_thread(move || {
                if keeps {
                    enable();
                }
                for size in (SMALL_MAX + 1..=MAX_CACHED_SIZE).step_by(7) {
                    let layout = Layout::from_size_align(size, 1).unwrap();
                    // SAFETY: non-zero sizes; freed with their layouts.
                    unsafe {
                        let p = alloc(layout, false);
                        let class = large_class_of_block(malloc_usable_size(p.cast()));
                        assert!(
                            class_size(class) <= malloc_usable_size(p.cast()),
                            "size {size}"
                        );
                        if keeps {
                            assert_eq!(class, class_for(size), "size {size}");
                        }
                        let grown = size % 5 * 2000 + 1033;
                        let q = crate::Malloc.realloc(p, layout, grown);
                        let class = large_class_of_block(malloc_usable_size(q.cast()));
                        assert!(
                            class_size(class) <= malloc_usable_size(q.cast()),
                            "{size} -> {grown}"
                        );
                        if keeps && grown <= MAX_CACHED_SIZE {
                            assert_eq!(class, class_for(grown), "{size} -> {grown}");
                        }
                        crate::Malloc.dealloc(q, Layout::from_size_align(grown, 1).unwrap());
                    }
                }
                flush();
            });
        }
    }

    /// Runs `f` on a thread of its own, with a cache of its own.
    fn on_new_thread(f: impl FnOnce() + Send + 'static) {
        std::thread::spawn(f).join().unwrap();
    }

    fn layout(size: usize) -> Layout {
        Layout::from_size_align(size, 8).unwrap()
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn a_thread_that_keeps_blocks_reuses_the_last_freed_of_a_class() {
        on_new_thread(|| {
            let a = crate::Malloc;
            // SAFETY (every block below): non-zero sizes, freed with the layout they came with.
            unsafe {
                let p = a.alloc(layout(100));
                a.dealloc(p, layout(100));
                assert_eq!(cached_bytes(), 0, "kept before `enable`");
                enable();
                let p = a.alloc(layout(100));
                a.dealloc(p, layout(100));
                assert_eq!(cached_bytes(), class_size(class_for(100)));
                // 90 bytes are in the same class as 100: the block comes back.
                let q = a.alloc(layout(90));
                assert_eq!(q, p);
                assert_eq!(cached_bytes(), 0);
                // A block allocated on another thread (at the size asked for: that thread keeps
                // nothing) joins this one's cache, in the class it holds.
                let other = std::thread::spawn(move || a.alloc(layout(4000)) as usize)
                    .join()
                    .unwrap();
                a.dealloc(other as *mut u8, layout(4000));
                assert_eq!(a.alloc(layout(3800)) as usize, other);
                a.dealloc(other as *mut u8, layout(3800));
                a.dealloc(q, layout(90));
                flush();
                assert_eq!(cached_bytes(), 0);
            }
        });
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn a_block_from_the_cache_is_zeroed_when_asked() {
        on_new_thread(|| {
            enable();
            let a = crate::Malloc;
            // SAFETY: non-zero sizes, used within them, freed with their layouts.
            unsafe {
                let p = a.alloc(layout(64));
                p.write_bytes(0xff, 64);
                a.dealloc(p, layout(64));
                let q = a.alloc_zeroed(layout(60));
                assert_eq!(q, p);
                assert!((0..60).all(|i| *q.add(i) == 0));
                a.dealloc(q, layout(60));
            }
        });
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn a_thread_keeps_no_more_than_the_limits() {
        on_new_thread(|| {
            enable();
            let a = crate::Malloc;
            let burst = |size: usize, n: usize| {
                // SAFETY: non-zero sizes, freed with their layouts.
                unsafe {
                    let blocks: Vec<_> = (0..n).map(|_| a.alloc(layout(size))).collect();
                    for p in blocks {
                        a.dealloc(p, layout(size));
                    }
                }
            };
            burst(24, 3 * LIMITS[1] as usize);
            assert_eq!(cached_bytes(), SMALL_CLASS_BYTES / 24 * 24);
            burst(200, 3 * MAX_PER_CLASS as usize);
            assert_eq!(
                cached_bytes(),
                SMALL_CLASS_BYTES / 24 * 24 + MAX_PER_CLASS as usize * 200
            );
            burst(8192, 2 * MAX_BYTES / 8192);
            assert!(cached_bytes() <= MAX_BYTES, "{} bytes kept", cached_bytes());
            assert!(
                cached_bytes() > MAX_BYTES - 8192,
                "{} bytes kept",
                cached_bytes()
            );
            flush();
            assert_eq!(cached_bytes(), 0);
        });
    }
}
