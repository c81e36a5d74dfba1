//! A `LockedHeapPool` copied by a fork while another thread holds its lock: the child's copy of
//! the lock stays held, since the thread that would release it was not copied.

#![cfg(target_os = "linux")]

use std::sync::mpsc;

use melon_alloc::{LockedHeapPool, OsSource};

static POOL: LockedHeapPool = LockedHeapPool::new(OsSource::new(), None);

/// Whether `POOL`'s lock was free when its `Debug` looked: only then does it show the figures.
fn lock_was_free() -> bool {
    format!("{POOL:?}").contains("stats")
}

#[test]
fn a_fork_while_another_thread_holds_the_lock_leaves_the_child_a_held_lock() {
    let (held_tx, held_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        POOL.with(|_| {
            held_tx.send(()).unwrap();
            release_rx.recv().unwrap();
        });
    });
    held_rx.recv().unwrap();
    // SAFETY: the child only formats into glibc's heap, whose fork handlers leave it usable,
    // and leaves with `_exit`, running nothing of the parent's.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let held = !lock_was_free();
        // SAFETY: ends the child at once.
        unsafe { libc::_exit(i32::from(!held)) };
    }
    release_tx.send(()).unwrap();
    holder.join().unwrap();
    let mut status = 0;
    // SAFETY: waits for the child just forked, writing its status into a local.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status), "the child did not exit: status {status}");
    assert_eq!(libc::WEXITSTATUS(status), 0, "the child found its copy of the lock free");
    assert!(lock_was_free(), "the holder released the parent's lock");
}
