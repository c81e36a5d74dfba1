//! Workers forked from one parent share a pool: each allocates, stamps and frees blocks in it,
//! hands one block to the parent by offset, and the parent reads and frees them all. Then one
//! more worker takes the pool's lock and stops; the parent's wait with a timeout gives up, the
//! worker is killed holding the lock, and the parent's next wait takes the lock over.
//!
//! Run it with `cargo run --release --example fork_workers` (Linux).

#[cfg(target_os = "linux")]
fn main() {
    use std::time::Instant;

    use melon_alloc::ShmPool;

    const WORKERS: usize = 4;
    const ROUNDS: usize = 200_000;

    let shm = ShmPool::new(64 << 20).expect("64 MiB of shared memory");
    let start_available = shm.available();
    // One slot per worker for the offset of the block it leaves for the parent.
    let mailbox = shm.alloc_zeroed(WORKERS * 8).expect("room for the mailbox");
    let slots = mailbox.cast::<u64>();
    println!("parent {}: a 64 MiB pool, {start_available} bytes free", std::process::id());

    let started = Instant::now();
    let mut children = Vec::new();
    for worker in 0..WORKERS {
        // SAFETY: the process is single-threaded here, so the child may keep running Rust code.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let code = work(&shm, worker, ROUNDS, slots.as_ptr());
            // SAFETY: leaves the child at once, without running the parent's destructors twice.
            unsafe { libc::_exit(code) };
        }
        children.push(pid);
    }
    let mut failed = 0;
    for pid in children {
        let mut status = 0;
        // SAFETY: `pid` is a child of this process and `status` is a valid place to write.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            failed += 1;
        }
    }
    let elapsed = started.elapsed();
    let operations = WORKERS * ROUNDS * 2;
    println!(
        "{WORKERS} workers did {operations} allocations and frees in {:.0} ms ({:.1} million a second)",
        elapsed.as_secs_f64() * 1e3,
        operations as f64 / elapsed.as_secs_f64() / 1e6
    );
    for worker in 0..WORKERS {
        // SAFETY: the mailbox holds one offset per worker, written before the worker exited.
        let offset = unsafe { slots.as_ptr().add(worker).read() } as usize;
        let block = shm.ptr_at(offset).expect("an offset inside the pool");
        // SAFETY: the worker left a NUL-terminated greeting in the block.
        let text = unsafe { std::ffi::CStr::from_ptr(block.as_ptr().cast()) };
        println!("  worker {worker} left {text:?} at offset {offset}");
        // SAFETY: the block came from the pool and nobody else uses it any more.
        unsafe { melon_alloc::free(block) };
    }
    // SAFETY: the mailbox came from the pool and is not used again.
    unsafe { shm.free(mailbox) };
    let stats = shm.stats().expect("the lock is free");
    println!(
        "after the workers: {} live blocks, {} bytes free (started with {start_available}), \
         pool consistent: {}",
        stats.live_blocks,
        stats.available,
        shm.check().is_ok()
    );
    assert_eq!(failed, 0, "a worker failed");
    die_holding_the_lock(&shm);
}

/// Forks a worker that takes the pool's lock and stops there; waits for it with a timeout,
/// which gives up; kills the worker; and takes the lock over from the dead holder.
#[cfg(target_os = "linux")]
fn die_holding_the_lock(shm: &melon_alloc::ShmPool) {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{Duration, Instant};

    let flag = shm.alloc_zeroed(4).expect("room for a flag");
    // SAFETY: the block is 4 bytes, aligned to 16 and zeroed, in memory both processes map;
    // both touch it only atomically.
    let held = unsafe { AtomicU32::from_ptr(flag.as_ptr().cast()) };
    // SAFETY: the process is single-threaded here, so the child may keep running Rust code.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        if let Ok(_guard) = shm.lock() {
            held.store(1, Ordering::Release);
            loop {
                // SAFETY: `pause` only waits for a signal; SIGKILL ends the process here.
                unsafe { libc::pause() };
            }
        }
        // SAFETY: leaves the child at once, without running the parent's destructors twice.
        unsafe { libc::_exit(1) };
    }
    while held.load(Ordering::Acquire) == 0 {
        let mut status = 0;
        // SAFETY: `pid` is a child of this process and `status` is a valid place to write.
        let ended = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        assert_eq!(ended, 0, "the worker ended before it took the lock");
        std::thread::sleep(Duration::from_millis(1));
    }
    let refused = shm.try_lock_for(Duration::from_millis(20)).err();
    let said = refused.as_ref().map_or_else(|| "it did not".to_string(), ToString::to_string);
    println!("worker {pid} holds the lock; a wait of 20 ms gives up: {said}");
    // SAFETY: `pid` is a child of this process.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let started = Instant::now();
    let guard = shm.lock().expect("the lock, taken over from the dead worker");
    let waited = started.elapsed();
    drop(guard);
    let mut status = 0;
    // SAFETY: `pid` is a child of this process and `status` is a valid place to write.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let stats = shm.stats().expect("the lock is free");
    println!(
        "worker {pid} killed holding the lock; taken over in {:.1} ms ({} takeover), pool \
         consistent: {}",
        waited.as_secs_f64() * 1e3,
        stats.lock_takeovers,
        shm.check().is_ok()
    );
    assert!(refused.is_some(), "a wait for a live holder gave up");
    assert_eq!(stats.lock_takeovers, 1, "the dead worker's lock was taken over");
    // SAFETY: the flag came from the pool and neither process uses it any more.
    unsafe { shm.free(flag) };
}

/// One worker's share: allocate and free blocks of mixed sizes, then leave a greeting for the
/// parent. Returns the process exit code.
#[cfg(target_os = "linux")]
fn work(shm: &melon_alloc::ShmPool, worker: usize, rounds: usize, slots: *mut u64) -> i32 {
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64 ^ worker as u64;
    for _ in 0..rounds {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let size = 16 + (seed % 1000) as usize;
        let Some(block) = shm.alloc(size) else { return 1 };
        // SAFETY: the block holds `size` bytes.
        unsafe { block.as_ptr().write_bytes(worker as u8, size) };
        // SAFETY: the block came from `shm` and is not used again.
        if unsafe { shm.try_free(block) }.is_err() {
            return 2;
        }
    }
    let greeting = format!("hello from worker {worker}, process {}\0", std::process::id());
    let Some(block) = shm.alloc(greeting.len()) else { return 3 };
    // SAFETY: the block holds the greeting's length.
    unsafe { block.as_ptr().copy_from_nonoverlapping(greeting.as_ptr(), greeting.len()) };
    let Some(offset) = shm.offset_of(block) else { return 4 };
    // SAFETY: the mailbox has a slot for every worker, in shared memory.
    unsafe { slots.add(worker).write(offset as u64) };
    0
}

#[cfg(not(target_os = "linux"))]
fn main() {
    println!("the shared pool needs Linux");
}
