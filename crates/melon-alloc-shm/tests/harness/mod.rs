//! The harness of the multi-process test binaries (`harness = false` in `Cargo.toml`): it runs
//! their cases, forks their children and watches them, and gives them memory to talk through.
//!
//! Forking is safe only in a process with a single thread, which the standard harness is not:
//! these binaries run their cases one after another in their main thread, and start no other.
//! So only they declare this module; the binaries under the standard harness use `common`, which
//! has no `fork` for them to call by mistake.
//!
//! A child reports only through its exit status (a panic exits with 101), and the parent checks
//! every status. The last line of a run says how many cases passed and failed, and the exit code
//! is non-zero if any failed. Arguments that do not start with `-` pick the cases whose names
//! contain them (or equal them, with `--exact`); `--list` lists the cases as the standard harness
//! does, so that tools that list tests find them, and `--ignored` runs none, as no case is
//! ignored.

// Each binary uses a part of the harness, and the rest would be reported as unused in it.
#![allow(dead_code)]

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// How long a child may run before the parent calls it hung.
pub(crate) const CHILD_LIMIT: Duration = Duration::from_secs(300);

/// How long a process waits for a word from another before the case fails: words come within
/// moments, so this bound only proves that nothing hangs, on however busy a machine.
const WORD_LIMIT: Duration = Duration::from_secs(10);

/// A case: its name, which the command line picks cases by, and its body, which fails the case
/// by panicking.
pub(crate) type Case = (&'static str, fn());

/// What a binary whose build leaves out the cases that crash at fail points says before its
/// cases run, so that a pass is not read as covering them; `None` in a build that has them.
pub(crate) const FAILPOINTS_NOTE: Option<&str> = if cfg!(melon_failpoints) {
    None
} else {
    Some("the cases that crash at fail points run with `RUSTFLAGS=\"--cfg melon_failpoints\"`")
};

/// Runs the cases the command line picks, one after another, each under `catch_unwind` so that
/// one failure does not hide the cases after it, and says how each went, as the standard harness
/// would. `note` is printed before the first case runs, but not in a list, which tools read.
/// Returns what the binary exits with: a failure if any case failed.
pub(crate) fn run_cases(mut cases: Vec<Case>, note: Option<&str>) -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().any(|arg| arg == name);
    let filters: Vec<&str> =
        args.iter().map(String::as_str).filter(|arg| !arg.starts_with('-')).collect();
    let picked = |name: &str| {
        filters.is_empty()
            || filters.iter().any(|filter| {
                if flag("--exact") {
                    name == *filter
                } else {
                    name.contains(filter)
                }
            })
    };
    cases.retain(|&(name, _)| picked(name) && !flag("--ignored"));
    if flag("--list") {
        for (name, _) in &cases {
            println!("{name}: test");
        }
        return ExitCode::SUCCESS;
    }
    if let Some(note) = note {
        println!("note: {note}");
    }

    let (mut passed, mut failed) = (0, 0);
    for (name, case) in cases {
        let start = Instant::now();
        let outcome = catch_unwind(case);
        let took = start.elapsed().as_secs_f64();
        if outcome.is_ok() {
            passed += 1;
            println!("test {name} ... ok ({took:.1} s)");
        } else {
            failed += 1;
            println!("test {name} ... FAILED ({took:.1} s)");
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// How a child process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    Code(i32),
    Signal(i32),
}

/// A forked child, killed and reaped if the parent gives up on it (a failed case).
#[derive(Debug)]
pub(crate) struct Child {
    /// The child's process id, for the signals a case sends it besides those of `Child`.
    pub(crate) pid: libc::pid_t,
    reaped: bool,
}

/// Forks a child that runs `body` and exits with status 0, or 101 if `body` panics.
pub(crate) fn fork(body: impl FnOnce()) -> Child {
    // Output still buffered would be written twice, once by each process.
    let _ = std::io::stdout().flush();
    // SAFETY: this process has a single thread (the binary runs no test harness but this one,
    // which starts no thread), so the child may run any code, allocation included.
    let pid = unsafe { libc::fork() };
    after_fork(pid, body)
}

/// Both sides of a fork that returned `pid`: the child runs `body` and exits, with status 0 or
/// with 101 if `body` panics; the parent gets the child.
pub(crate) fn after_fork(pid: libc::pid_t, body: impl FnOnce()) -> Child {
    assert!(pid >= 0, "fork failed: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let code = match catch_unwind(AssertUnwindSafe(body)) {
            Ok(()) => 0,
            Err(_) => 101,
        };
        // SAFETY: `_exit` ends the child without running the destructors and exit handlers of
        // the parent's state it inherited, which belong to the parent.
        unsafe { libc::_exit(code) }
    }
    Child { pid, reaped: false }
}

impl Child {
    /// Waits for the child to end, at most `limit`; a child still running then is killed and
    /// the case fails.
    pub(crate) fn wait(&mut self, limit: Duration) -> Exit {
        let start = Instant::now();
        loop {
            let mut status = 0;
            // SAFETY: `waitpid` on this process's own child writes its status into a local.
            let done = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
            if done == self.pid {
                self.reaped = true;
                if libc::WIFEXITED(status) {
                    return Exit::Code(libc::WEXITSTATUS(status));
                }
                return Exit::Signal(libc::WTERMSIG(status));
            }
            assert_eq!(done, 0, "waitpid failed: {}", std::io::Error::last_os_error());
            if start.elapsed() > limit {
                self.kill();
                panic!("child {} still running after {limit:?}", self.pid);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Waits for the child and asserts that it succeeded.
    pub(crate) fn succeeds(mut self, what: &str) {
        assert_eq!(self.wait(CHILD_LIMIT), Exit::Code(0), "{what} (child {})", self.pid);
    }

    /// Sends SIGKILL, without waiting.
    pub(crate) fn signal_kill(&self) {
        // SAFETY: the process is this process's own child, not yet reaped, so the pid is its.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
    }

    /// Kills the child with SIGKILL, reaps it, and asserts that the kill is what ended it.
    pub(crate) fn kill_dead(&mut self) {
        self.signal_kill();
        assert_eq!(self.wait(CHILD_LIMIT), Exit::Signal(libc::SIGKILL), "child {}", self.pid);
    }

    /// Kills and reaps the child, if that was not done yet.
    pub(crate) fn kill(&mut self) {
        if self.reaped {
            return;
        }
        self.signal_kill();
        let mut status = 0;
        // SAFETY: as in `wait`, blocking this time: the child has been killed.
        unsafe { libc::waitpid(self.pid, &mut status, 0) };
        self.reaped = true;
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sleeps until the process is killed, as an idle worker does.
pub(crate) fn idle_until_killed() -> ! {
    loop {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Ends the calling process with SIGKILL, as a worker killed from outside ends: no unwinding,
/// no destructor, no exit handler, and whatever it holds left held.
pub(crate) fn kill_self() -> ! {
    // SAFETY: sends a signal to this very process, which SIGKILL ends.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    // The signal is delivered before `kill` returns to a single-threaded process, so this is not
    // reached; it only gives the function its type.
    idle_until_killed()
}

// ---------------------------------------------------------------------------------------------
// Memory shared with children
// ---------------------------------------------------------------------------------------------

/// An atomic integer type, whose all-zero bytes are a valid value.
pub(crate) trait Atomic: Sync + 'static {}
impl Atomic for AtomicU32 {}
impl Atomic for AtomicU64 {}

/// Zeroed memory shared with forked children (a `MAP_SHARED` anonymous mapping), seen as
/// atomics: how processes tell each other things besides their exit status, and tables that
/// several processes fill.
pub(crate) struct SharedWords<A: Atomic> {
    base: NonNull<A>,
    len: usize,
}

impl<A: Atomic> SharedWords<A> {
    /// `len` zeroed atomics, shared with every child forked from now on.
    pub(crate) fn new(len: usize) -> Self {
        let bytes = len * core::mem::size_of::<A>();
        // SAFETY: a new anonymous mapping at an address of the kernel's choosing replaces nothing.
        let base = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
        Self { base: NonNull::new(base.cast()).unwrap(), len }
    }
}

impl<A: Atomic> core::ops::Deref for SharedWords<A> {
    type Target = [A];

    fn deref(&self) -> &[A] {
        // SAFETY: (1) the mapping holds `len` values of `A`, page-aligned, zeroed by the kernel,
        // which is a valid atomic; (2) it lives until `self` is dropped; (3) every access, from
        // any process, is atomic.
        unsafe { core::slice::from_raw_parts(self.base.as_ptr(), self.len) }
    }
}

impl<A: Atomic> Drop for SharedWords<A> {
    fn drop(&mut self) {
        // SAFETY: the mapping is this value's own, and no reference into it outlives `self`.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len * core::mem::size_of::<A>()) };
    }
}

/// Waits until `word` is non-zero, for at most ten seconds, and returns it.
pub(crate) fn await_word(word: &AtomicU64) -> u64 {
    let start = Instant::now();
    loop {
        let value = word.load(Ordering::Acquire);
        if value != 0 {
            return value;
        }
        assert!(start.elapsed() < WORD_LIMIT, "no word from the other process");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The names in the directory of `path` that start with its own name, itself included: what a
/// creation there left behind.
pub(crate) fn names_beside(path: &std::path::Path) -> Vec<String> {
    let own = path.file_name().unwrap().to_string_lossy().into_owned();
    let mut names: Vec<String> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(&own))
        .collect();
    names.sort();
    names
}

/// The descriptors this process has open, by number.
pub(crate) fn open_descriptors() -> Vec<i32> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// The device and inode of the file behind descriptor `fd`, or zeros if it is not open.
pub(crate) fn file_of(fd: i32) -> (u64, u64) {
    // SAFETY: `fstat` writes into a local `stat`, or fails on a number that is not open.
    let mut stat: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat(fd, &mut stat) } != 0 {
        return (0, 0);
    }
    (stat.st_dev as u64, stat.st_ino as u64)
}
