//! A pre-fork server's life: a master makes a shared pool of 4 MiB that may grow to 256 MiB and
//! forks four workers; each keeps its scratch in a child pool of its own, which grows the pool,
//! and counts the requests it serves on a board the master allocated in the shared pool. Now and
//! then a worker passes a message to the next one: a block of its child pool, handed off, whose
//! offset it leaves in the next worker's mailbox on the board; the receiver keeps the latest
//! message it got and frees the one before. One worker is killed with SIGKILL mid-work: the
//! master reaps it, takes back the chunks its child pool held, and forks a replacement. The
//! message the killed worker held is never freed: once the workers have stopped, its chunk waits
//! as an orphan, which the master, knowing every worker gone, gives back. At the end every byte
//! of the pool is free again, and the master prints the pool's statistics.
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
    // The board: one request count per worker, the word that tells the workers to stop, and a
    // mailbox per worker (a message's offset plus one, or 0). A block of the shared pool itself:
    // shared, it outlives any worker.
    let words = 2 * WORKERS + 1;
    let board = shm.alloc_zeroed(words * 8).expect("room for the board");
    // SAFETY: the block is `words` zeroed, aligned words, alive until freed at the end, and every
    // process only reads and writes them atomically.
    let board = unsafe { std::slice::from_raw_parts(board.as_ptr().cast::<AtomicU64>(), words) };
    let stop = &board[WORKERS];
    let mailboxes = &board[WORKERS + 1..];
    println!(
        "master {}: a pool of {} bytes that may grow to {}, {start} bytes free",
        std::process::id(),
        shm.capacity(),
        shm.max_capacity()
    );

    let mut workers: Vec<libc::pid_t> =
        (0..WORKERS).map(|worker| spawn(&shm, worker, &board[worker], stop, mailboxes)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let stats = shm.stats().expect("the lock is free");
    println!(
        "4 workers at work: {} bytes lent to their child pools; the pool grew to {} bytes in {} \
         segments",
        stats.lent_bytes, stats.capacity, stats.segments
    );

    // A worker dies without warning, once it has taken a message from its mailbox, which it
    // then holds until the next one.
    let victim = 2;
    while mailboxes[victim].load(Ordering::Acquire) == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    while mailboxes[victim].load(Ordering::Acquire) != 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
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
    workers[victim] = spawn(&shm, victim, &board[victim], stop, mailboxes);
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
    // Messages left in the mailboxes, which nobody took: the master frees them.
    for block in mailboxes.iter().filter_map(|mailbox| take_message(&shm, mailbox)) {
        // SAFETY: the block was handed off, and nobody else holds it any more.
        unsafe { shm.try_free(block) }.expect("a message handed off, freed once");
    }
    // The message the killed worker held was never freed: its sender's chunk waits for it.
    let orphaned = shm.stats().expect("the lock is free").orphaned_bytes;
    // SAFETY: every worker that could hold a handed-off message has exited.
    let report = unsafe { shm.reclaim_orphans() }.expect("the lock is free");
    println!(
        "orphaned chunks, waiting for messages nobody will free: {orphaned} bytes; given back: \
         {} chunks, {} bytes",
        report.chunks, report.bytes
    );
    assert!(orphaned > 0 && report.bytes >= orphaned, "the killed worker's message");
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

/// Forks worker `worker`, which serves requests until `stop` is set, counting them in `served`,
/// and passes messages through `mailboxes`.
#[cfg(target_os = "linux")]
fn spawn(
    shm: &melon_alloc::ShmPool,
    worker: usize,
    served: &std::sync::atomic::AtomicU64,
    stop: &std::sync::atomic::AtomicU64,
    mailboxes: &[std::sync::atomic::AtomicU64],
) -> libc::pid_t {
    // SAFETY: the master is single-threaded, so the child may keep running Rust code.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        serve(shm, worker, served, stop, mailboxes);
        // SAFETY: leaves the worker at once, without running the master's destructors.
        unsafe { libc::_exit(0) };
    }
    pid
}

/// A worker: each request builds a few buffers of scratch in the worker's own child pool, and
/// frees them when done; every sixteenth passes a message to the next worker, and each takes the
/// message in its own mailbox, if there is one, in place of the one it held.
#[cfg(target_os = "linux")]
fn serve(
    shm: &melon_alloc::ShmPool,
    worker: usize,
    served: &std::sync::atomic::AtomicU64,
    stop: &std::sync::atomic::AtomicU64,
    mailboxes: &[std::sync::atomic::AtomicU64],
) {
    use std::sync::atomic::Ordering;

    let scratch = shm.child();
    let mut held = None;
    let mut requests = 0_u64;
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
        requests += 1;
        if requests % 16 == 0 {
            send(shm, &scratch, &mailboxes[(worker + 1) % mailboxes.len()], worker);
        }
        if let Some(block) = take_message(shm, &mailboxes[worker]) {
            if let Some(before) = held.replace(block) {
                // SAFETY: a message handed off to this worker, freed once.
                unsafe { shm.try_free(before) }.expect("a message handed off");
            }
        }
        served.fetch_add(1, Ordering::Relaxed);
    }
    if let Some(last) = held {
        // SAFETY: as above.
        unsafe { shm.try_free(last) }.expect("a message handed off");
    }
}

/// Takes the message in `mailbox`, if there is one: the block at the offset it holds, plus one.
#[cfg(target_os = "linux")]
fn take_message(
    shm: &melon_alloc::ShmPool,
    mailbox: &std::sync::atomic::AtomicU64,
) -> Option<std::ptr::NonNull<u8>> {
    let message = mailbox.swap(0, std::sync::atomic::Ordering::Acquire);
    (message != 0).then(|| shm.ptr_at(message as usize - 1).expect("an offset in the pool"))
}

/// Passes a message from `worker`'s child pool `scratch` to the worker whose mailbox is
/// `mailbox`, unless it still has one to take.
#[cfg(target_os = "linux")]
fn send(
    shm: &melon_alloc::ShmPool,
    scratch: &melon_alloc::ChildPool<'_>,
    mailbox: &std::sync::atomic::AtomicU64,
    worker: usize,
) {
    use std::sync::atomic::Ordering;

    if mailbox.load(Ordering::Relaxed) != 0 {
        return;
    }
    let Some(message) = scratch.alloc(200) else { return };
    // SAFETY: the block holds 200 bytes and is this worker's alone until handed off.
    unsafe { message.as_ptr().write_bytes(worker as u8, 200) };
    // SAFETY: the block is the child's, in use, handed off once, and from now on freed through
    // the shared pool alone.
    let offset = unsafe { shm.hand_off(message) }.expect("a block of this worker's child pool");
    let posted =
        mailbox.compare_exchange(0, offset as u64 + 1, Ordering::Release, Ordering::Relaxed);
    if posted.is_err() {
        // SAFETY: the message was handed off and nobody else got it: freed once, here.
        unsafe { shm.try_free(message) }.expect("a message handed off");
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
