//! A pre-fork server's life: a master makes a shared pool of 4 MiB that may grow to 256 MiB and
//! forks four workers; each keeps its scratch in a child pool of its own, which grows the pool,
//! and counts the requests it serves on a board the master allocated in the shared pool. One
//! worker is killed with SIGKILL mid-work: the master reaps it, takes back the chunks its child
//! pool held, and forks a replacement. At the end the workers stop, every byte of the pool is
//! free again, and the master prints the pool's statistics.
//!
//! Run it with `cargo run --release --example prefork_server` (Linux).

#[cfg(target_os = "linux")]
fn main() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use melon_alloc::ShmPool;

    const WORKERS: usize = 4;

    let shm = ShmPool::builder()
        .capacity(4 << 20)
        .max_capacity(256 << 20)
        .build()
        .expect("4 MiB of shared memory, and room to grow to 256");
    let start = shm.available();
    // The board: one request count per worker, then the word that tells the workers to stop.
    // A block of the shared pool itself: shared, it outlives any worker.
    let board = shm.alloc_zeroed((WORKERS + 1) * 8).expect("room for the board");
    // SAFETY: the block is `WORKERS + 1` zeroed, aligned words, alive until freed at the end,
    // and every process only reads and writes them atomically.
    let board =
        unsafe { std::slice::from_raw_parts(board.as_ptr().cast::<AtomicU64>(), WORKERS + 1) };
    let stop = &board[WORKERS];
    println!(
        "master {}: a pool of {} bytes that may grow to {}, {start} bytes free",
        std::process::id(),
        shm.capacity(),
        shm.max_capacity()
    );

    let mut workers: Vec<libc::pid_t> =
        (0..WORKERS).map(|worker| spawn(&shm, worker, &board[worker], stop)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let stats = shm.stats().expect("the lock is free");
    println!(
        "4 workers at work: {} bytes lent to their child pools; the pool grew to {} bytes in {} \
         segments",
        stats.lent_bytes, stats.capacity, stats.segments
    );

    // A worker dies without warning.
    let victim = 2;
    // SAFETY: the pid is this process's own child, not yet reaped.
    unsafe { libc::kill(workers[victim], libc::SIGKILL) };
    let status = reap(workers[victim]);
    println!("worker {victim} killed (signal {})", libc::WTERMSIG(status));
    let report = shm.reclaim_dead().expect("the lock is free");
    println!(
        "  reclaimed {} process: {} chunks, {} bytes; {} bytes now lent",
        report.processes,
        report.chunks,
        report.bytes,
        shm.stats().expect("the lock is free").lent_bytes
    );
    workers[victim] = spawn(&shm, victim, &board[victim], stop);
    println!("  worker {victim} replaced");
    std::thread::sleep(Duration::from_millis(300));

    stop.store(1, Ordering::Release);
    for (worker, &pid) in workers.iter().enumerate() {
        let status = reap(pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "worker {worker}");
        println!("worker {worker} served {} requests", board[worker].load(Ordering::Acquire));
    }
    // The workers' child pools gave their chunks back as the workers finished, but the workers
    // ended with `_exit`, never dropping the pool: their slots in the owner table come back now.
    let report = shm.reclaim_dead().expect("the lock is free");
    println!(
        "after the workers ended: reclaimed {} processes, {} bytes",
        report.processes, report.bytes
    );
    // SAFETY: the board came from the pool, and no worker is left to use it.
    unsafe { shm.free(std::ptr::NonNull::from(&board[0]).cast()) };
    let stats = shm.stats().expect("the lock is free");
    println!("\n{stats}\n");
    println!(
        "{} of {} data bytes free, {} blocks live, {} bytes lent, pool consistent: {}",
        stats.available,
        stats.data_bytes,
        stats.live_blocks,
        stats.lent_bytes,
        shm.check().is_ok()
    );
    assert_eq!(stats.available, stats.data_bytes, "every byte is free again");
    assert!(stats.segments > 1, "the workers grew the pool");
}

/// Forks worker `worker`, which serves requests until `stop` is set, counting them in `served`.
#[cfg(target_os = "linux")]
fn spawn(
    shm: &melon_alloc::ShmPool,
    worker: usize,
    served: &std::sync::atomic::AtomicU64,
    stop: &std::sync::atomic::AtomicU64,
) -> libc::pid_t {
    // SAFETY: the master is single-threaded, so the child may keep running Rust code.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        serve(shm, worker, served, stop);
        // SAFETY: leaves the worker at once, without running the master's destructors.
        unsafe { libc::_exit(0) };
    }
    pid
}

/// A worker: each request builds a few buffers of scratch in the worker's own child pool, and
/// frees them when done.
#[cfg(target_os = "linux")]
fn serve(
    shm: &melon_alloc::ShmPool,
    worker: usize,
    served: &std::sync::atomic::AtomicU64,
    stop: &std::sync::atomic::AtomicU64,
) {
    use std::sync::atomic::Ordering;

    let scratch = shm.child();
    // A cache that lives as long as the worker, as a parsed configuration would.
    let _cache: Vec<_> = (0..64).map(|_| scratch.alloc(16 << 10)).collect();
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64 ^ worker as u64;
    while stop.load(Ordering::Acquire) == 0 {
        let buffers: Vec<_> = (0..8)
            .filter_map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let size = 64 + (seed % 4000) as usize;
                let block = scratch.alloc(size)?;
                // SAFETY: the block holds `size` bytes and is this request's alone.
                unsafe { block.as_ptr().write_bytes(worker as u8, size) };
                Some(block)
            })
            .collect();
        for block in buffers {
            // SAFETY: each block came from `scratch` and is freed once.
            unsafe { scratch.free(block) };
        }
        served.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(target_os = "linux")]
fn reap(pid: libc::pid_t) -> libc::c_int {
    let mut status = 0;
    // SAFETY: `pid` is a child of this process and `status` is a valid place to write.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    status
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("this example needs Linux: shared pools are memfds mapped MAP_SHARED");
}
