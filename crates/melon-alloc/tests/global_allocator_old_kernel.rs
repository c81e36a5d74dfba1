//! `LockedHeapPool` as the global allocator of a program that links the whole library, on a
//! kernel older than Linux 6.4, which refuses `prctl(PR_GET_AUXV)`. The pool's first chunk asks
//! for the system's page size; a page-size lookup that fell back to reading `/proc/self/auxv`
//! into a `Vec` would allocate through the pool from inside the pool's lock and wait for ever.
//! The test runs its own binary again under a seccomp filter that makes that `prctl` fail as an
//! old kernel does, and checks that the program starts, allocates and ends.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant};

use melon_alloc::heap::{LockedHeapPool, OsSource};

#[global_allocator]
static POOL: LockedHeapPool = LockedHeapPool::new(OsSource::new(), None);

/// Set in the environment of the run under the filter.
const UNDER_FILTER: &str = "MELON_ALLOC_TEST_WITHOUT_PR_GET_AUXV";

/// `prctl`'s request for the auxiliary vector, which Linux 6.4 added.
const PR_GET_AUXV: u32 = 0x4155_5856;

/// Long enough for any machine to start a test binary; a run that waits on its own lock never
/// ends, and this only bounds how long the test takes to say so.
const PATIENCE: Duration = Duration::from_secs(60);

#[test]
fn a_global_allocator_pool_starts_on_a_kernel_without_pr_get_auxv() {
    if std::env::var_os(UNDER_FILTER).is_some() {
        // The run under the filter: the harness has allocated through the pool to get here.
        let squares: Vec<u64> = (0..10_000).map(|n| n * n).collect();
        assert_eq!(squares.iter().sum::<u64>(), 333_283_335_000);
        return;
    }
    let exe = CString::new(std::env::current_exe().unwrap().as_os_str().as_bytes()).unwrap();
    let args = [
        exe.clone(),
        CString::new("--exact").unwrap(),
        CString::new("a_global_allocator_pool_starts_on_a_kernel_without_pr_get_auxv").unwrap(),
        CString::new("--test-threads=1").unwrap(),
    ];
    let env = CString::new(format!("{UNDER_FILTER}=1")).unwrap();
    let argv: Vec<*const libc::c_char> =
        args.iter().map(|arg| arg.as_ptr()).chain([std::ptr::null()]).collect();
    let envp = [env.as_ptr(), std::ptr::null()];
    let filter = refuse_pr_get_auxv();
    let program = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_ptr().cast_mut() };

    // SAFETY: the child calls only `prctl`, `execve` and `_exit`, which are async-signal-safe,
    // on memory prepared before the fork.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: as above; every pointer points into memory the parent made before the fork.
        unsafe {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &program) != 0
            {
                libc::_exit(90);
            }
            libc::execve(exe.as_ptr(), argv.as_ptr(), envp.as_ptr());
            libc::_exit(91);
        }
    }
    let started = Instant::now();
    let mut status = 0;
    loop {
        // SAFETY: `pid` is this process's child, not yet waited for.
        let done = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        assert!(done >= 0, "waitpid failed");
        if done == pid {
            break;
        }
        if started.elapsed() > PATIENCE {
            // SAFETY: as above.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            panic!("the program under the filter did not end in {PATIENCE:?}: it waits on itself");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the program under the filter ended with status {status:#x}"
    );
}

/// A seccomp filter that fails `prctl(PR_GET_AUXV, ...)` with `EINVAL`, as a kernel before 6.4
/// does, and lets every other system call through.
fn refuse_pr_get_auxv() -> Vec<libc::sock_filter> {
    const LOAD_WORD: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JUMP_IF_EQUAL: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const RETURN: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    // Offsets in `struct seccomp_data`: the call's number, then the low half of its first
    // argument (x86_64 is little-endian).
    const NUMBER: u32 = 0;
    const FIRST_ARGUMENT: u32 = 16;
    let step = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    vec![
        step(LOAD_WORD, 0, 0, NUMBER),
        step(JUMP_IF_EQUAL, 0, 3, libc::SYS_prctl as u32),
        step(LOAD_WORD, 0, 0, FIRST_ARGUMENT),
        step(JUMP_IF_EQUAL, 0, 1, PR_GET_AUXV),
        step(RETURN, 0, 0, libc::SECCOMP_RET_ERRNO | libc::EINVAL as u32),
        step(RETURN, 0, 0, libc::SECCOMP_RET_ALLOW),
    ]
}
