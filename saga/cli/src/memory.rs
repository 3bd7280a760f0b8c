//! The process's memory choices, which belong to the binary and not to the libraries: no
//! transparent huge pages, and the allocator's freed memory given back to the system every
//! minute.
//! (The allocator itself, mimalloc, is declared in `main.rs`.)

use std::time::Duration;

/// A number of `/proc/<pid>/status` (Linux): `field` names its line with the colon, e.g.
/// `"VmRSS:"` (KiB) or `"THP_enabled:"`; `None` when the process or the line is not there.
pub fn status_figure(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// How often [`give_back_periodically`] gives memory back: its first time is a minute after the
/// start, so a command that ends sooner never does.
pub const GIVE_BACK_EVERY: Duration = Duration::from_secs(60);

/// Transparent huge pages off for this process and its children (Linux). mimalloc asked the
/// kernel for them (`madvise(MADV_HUGEPAGE)`), and a huge page is resident as a whole, 2 MiB, as
/// soon as one byte of it is used: an idle coordinator held 38–40 MB with them, 27 MB without,
/// and a soak's coordinator ended its lives at 52–63 MiB with them, 34–42 MiB without. The
/// setting is the whole process's, but a page already faulted in as a huge one stays so: call it
/// first, before the runtime allocates. A kernel without the call (before 3.15) keeps its
/// setting.
pub fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
}

/// Gives the system back the memory the allocator keeps after it was freed. The allocator is
/// mimalloc for the whole process: the Rust code's, and, because the workspace builds mimalloc
/// with `override`, the C code's `malloc` too (librdkafka on its own threads; see
/// the test `the_c_code_allocates_through_mimalloc`). mimalloc purges freed pages of its arenas
/// a second after they were freed, but only from a thread that calls the allocator again. A
/// restore's transient memory (hash tables outgrown while they filled, the records read) stayed
/// resident: a replica that restored 1 M sagas held 1 243 B per saga, 1 072 B with purges made at
/// once (`MIMALLOC_PURGE_DELAY=0`). `mi_collect(true)` purges every arena now, from any thread.
#[allow(unsafe_code)]
pub fn give_back_freed_memory() {
    // SAFETY: mi_collect takes no pointers and may be called from any thread at any time; it
    // collects the calling thread's heap and purges the arenas under their own locks.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// Runs [`give_back_freed_memory`] every [`GIVE_BACK_EVERY`] on a blocking thread (it walks every
/// arena), for as long as the runtime runs.
pub fn give_back_periodically() {
    give_back_every(GIVE_BACK_EVERY, give_back_freed_memory);
}

/// Runs `give_back` every `period` (the first time one period after now) on a blocking thread,
/// for as long as the runtime runs.
fn give_back_every(period: Duration, give_back: fn()) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(period);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            every.tick().await;
            match tokio::task::spawn_blocking(give_back).await {
                Ok(()) => tracing::debug!("freed memory given back to the system"),
                Err(_) => return,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    static RUNS: AtomicUsize = AtomicUsize::new(0);

    fn counted() {
        RUNS.fetch_add(1, Ordering::SeqCst);
    }

    /// The give-back runs once a minute, the first time a minute after the start (virtual clock).
    #[tokio::test(start_paused = true)]
    async fn freed_memory_is_given_back_once_a_minute() {
        let task = give_back_every(GIVE_BACK_EVERY, counted);
        let runs_after = |secs: u64| async move {
            let until = tokio::time::Instant::now() + Duration::from_secs(secs);
            tokio::time::sleep_until(until).await;
            // The run itself is on a blocking thread: let it finish.
            for _ in 0..100 {
                tokio::task::yield_now().await;
                std::thread::sleep(Duration::from_millis(1));
            }
            RUNS.load(Ordering::SeqCst)
        };
        assert_eq!(runs_after(59).await, 0, "not before a minute");
        assert_eq!(runs_after(2).await, 1, "once after a minute");
        assert_eq!(runs_after(57).await, 1, "not again within the minute");
        assert_eq!(runs_after(2).await, 2, "again after the second minute");
        task.abort();
    }

    /// Resident anonymous memory of this process, in KiB (Linux).
    #[cfg(target_os = "linux")]
    fn anonymous_kib() -> u64 {
        status_figure(std::process::id(), "RssAnon:").expect("RssAnon in /proc/self/status")
    }

    /// Whether this is the test's own process: if not, runs test `name` alone in a child process
    /// (the other tests' allocations and frees would move its figures) and checks that it passed.
    #[cfg(target_os = "linux")]
    fn in_a_process_of_its_own(name: &str) -> bool {
        const ALONE: &str = "CHOREO_MEMORY_TEST_ALONE";
        if std::env::var_os(ALONE).is_some() {
            return true;
        }
        let out = std::process::Command::new(std::env::current_exe().expect("the test binary"))
            .args(["--exact", name, "--nocapture", "--test-threads=1"])
            .env(ALONE, "1")
            .output()
            .expect("the test binary runs");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && said.contains("test result: ok. 1 passed"),
            "{said}"
        );
        false
    }

    /// Checks that mimalloc's freed 64 MiB were still resident (`before` → `after_free`, in
    /// KiB), so that the test can tell, and that [`give_back_freed_memory`] gives them back.
    #[cfg(target_os = "linux")]
    fn freed_64_mib_are_given_back(before: u64, after_free: u64) {
        let held = after_free.saturating_sub(before);
        assert!(
            held > 32 * 1024,
            "mimalloc gave the freed 64 MiB back by itself ({held} KiB still held): the test \
             cannot tell whether give_back_freed_memory works"
        );
        give_back_freed_memory();
        let after = anonymous_kib();
        assert!(
            after + 32 * 1024 < after_free,
            "still {after} KiB resident after giving back, {after_free} KiB before: mimalloc's \
             freed 64 MiB were not given back"
        );
    }

    /// The C code's `malloc` and `free` are mimalloc's (the `override` feature): librdkafka's
    /// allocations are then as fast as the Rust code's (with glibc's, its threads and the
    /// runtime's waited on the arena locks) and given back by [`give_back_freed_memory`].
    /// Without the feature, glibc's `malloc` answers and this fails.
    #[test]
    #[allow(unsafe_code)]
    fn the_c_code_allocates_through_mimalloc() {
        // SAFETY: a plain allocation of 64 bytes, checked for null, freed once below.
        let p = unsafe { libc::malloc(64) };
        assert!(!p.is_null(), "malloc gave a block");
        // SAFETY: mi_is_in_heap_region only compares the address with mimalloc's regions.
        let from_mimalloc = unsafe { libmimalloc_sys::mi_is_in_heap_region(p) };
        // SAFETY: allocated above by malloc, freed once.
        unsafe { libc::free(p) };
        assert!(
            from_mimalloc,
            "the C code's malloc is glibc's, not mimalloc's: build mimalloc with `override`"
        );
    }

    /// 64 MiB of small blocks that mimalloc handed out and took back on a thread that then ended
    /// (as a restore's do) stay resident until they are given back: mimalloc purges them only
    /// a second later, and only when some thread calls it again.
    #[cfg(target_os = "linux")]
    #[test]
    #[allow(unsafe_code)]
    fn memory_mimalloc_freed_on_an_ended_thread_is_given_back_to_the_system() {
        use std::alloc::{GlobalAlloc, Layout};
        if !in_a_process_of_its_own(
            "memory::tests::memory_mimalloc_freed_on_an_ended_thread_is_given_back_to_the_system",
        ) {
            return;
        }
        let (before, after_free) = std::thread::spawn(|| {
            // The binary's allocator, called as `main.rs` declares it (this test binary's Rust
            // allocator is the system's, whose `malloc` is mimalloc's too, by the override).
            let layout = Layout::from_size_align(256, 8).expect("a layout");
            let before = anonymous_kib();
            let blocks: Vec<*mut u8> = (0..256 * 1024)
                .map(|i| {
                    // SAFETY: a non-zero size; the block is written within it, then freed below
                    // with the same layout, once.
                    unsafe {
                        let p = mimalloc::MiMalloc.alloc(layout);
                        assert!(!p.is_null(), "mimalloc gave a block");
                        p.write_bytes(i as u8, 256);
                        p
                    }
                })
                .collect();
            for p in blocks {
                // SAFETY: allocated above by the same allocator with `layout`, freed once.
                unsafe { mimalloc::MiMalloc.dealloc(p, layout) }
            }
            (before, anonymous_kib())
        })
        .join()
        .expect("the thread");
        freed_64_mib_are_given_back(before, after_free);
    }
}
