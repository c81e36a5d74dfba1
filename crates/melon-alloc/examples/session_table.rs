//! A table of sessions in a shared pool, found by name by forked workers and by a process that
//! was not forked from the master.
//!
//! A master makes a pool in a new file under `/dev/shm` and publishes in it, under the name
//! `sessions`, a `ShmMutex<SessionTable>`: plain data, an array of session records, each with a
//! `ShmOffset<Payload>` to a value in a block of its own. Four forked workers find the table by
//! name, open sessions and serve requests under its mutex. Then the same binary, started again
//! with `--reader`, receives the pool's descriptor over a UNIX socket, opens the pool by its path
//! as well, and reads the table and every payload. A fifth worker is killed while it holds the
//! table's mutex, half way through a request: the master's next lock reports it, and the master
//! repairs the table. At the end the name and every value go, and the pool is as it was before
//! the first name, less the block the directory keeps.
//!
//! # What another process can follow
//!
//! The table and its payloads refer to each other by offset, never by pointer, and a name or an
//! offset means the same value in every process, wherever it maps the pool. So the reader, which
//! maps the pool at addresses of its own (twice), uses them as the workers do. A container for
//! processes that attach to a pool is built this way: plain data, arrays and `ShmOffset`s.
//!
//! The workers also count each session's requests in a `hashbrown::HashMap` whose allocator is
//! `&'static ShmPool`, under a `ShmMutex` that the master made with `ShmMutex::new_poisoning_in`
//! before forking: a worker that died in the middle of an insertion could leave the map pointing at
//! a table already freed, so that mutex, unlike the table's, reports every lock after such a death
//! as `ShmError::Poisoned` and never hands the map out again. That map is valid only in the process
//! that made it and in the processes forked from it afterwards: it holds pointers, to its buffer in
//! the pool and to the master's `ShmPool` handle, and they mean the same only where the pool and
//! the handle lie at the same addresses. The reader could not use it. A forked worker also has
//! copies of the master's values, and must not drop them: dropping the box of the map would free
//! the map for every process, and the map's allocator is the master's handle. So a worker ends with
//! `_exit` (a process that carries on would `std::mem::forget` them).
//!
//! Run it with `cargo run --release --example session_table` (Linux).

#[cfg(target_os = "linux")]
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [flag, descriptor, path] if flag == "--reader" => sessions::reader(descriptor, path),
        _ => sessions::master(),
    }
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!(
        "this example needs Linux: shared pools are files of shared memory mapped MAP_SHARED"
    );
}

/// Everything but `main`: shared pools exist on Linux only.
#[cfg(target_os = "linux")]
mod sessions {
    use std::hash::{BuildHasherDefault, DefaultHasher};
    use std::os::fd::{AsRawFd, FromRawFd, RawFd};
    use std::os::unix::net::UnixStream;
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    use melon_alloc::shm::{ShmBox, ShmMutex, ShmMutexBox, ShmMutexGuard, ShmOffset, ShmSafe};
    use melon_alloc::{ShmError, ShmPool};

    const WORKERS: usize = 4;
    const SESSIONS_PER_WORKER: usize = 4;
    const REQUESTS_PER_WORKER: u64 = 500;
    /// Session records in the table.
    const SLOTS: usize = 32;
    /// The table's name in the pool's directory.
    const TABLE: &str = "sessions";
    /// The block the directory takes with the pool's first name and keeps for the pool's life
    /// (see `ShmPool::insert_named`).
    const DIRECTORY_BLOCK: usize = 32 << 10;
    const USERS: [&str; WORKERS * SESSIONS_PER_WORKER] = [
        "amara", "bjorn", "chen", "dalia", "emeka", "freya", "goro", "hana", "ines", "jonas",
        "kofi", "lena", "mateo", "nadia", "oskar", "priya",
    ];

    /// One session's record.
    #[repr(C)]
    struct Session {
        id: u64,
        /// Requests served in the session.
        hits: u64,
        /// What the session keeps beside its record, in a block of its own.
        payload: ShmOffset<Payload>,
        /// Bytes of `user` in use.
        user_len: u64,
        user: [u8; 32],
    }

    // SAFETY: integers, bytes and an offset: no pointer, no destructor, and every bit pattern
    // is valid (the user's length is bounded where it is read).
    unsafe impl ShmSafe for Session {}

    impl Session {
        const EMPTY: Self =
            Self { id: 0, hits: 0, payload: ShmOffset::from_raw(0), user_len: 0, user: [0; 32] };

        fn new(id: u64, user: &str, payload: ShmOffset<Payload>) -> Self {
            let mut session = Self { id, payload, ..Self::EMPTY };
            let len = user.len().min(session.user.len());
            session.user[..len].copy_from_slice(&user.as_bytes()[..len]);
            session.user_len = len as u64;
            session
        }

        /// The user's name. Another process may have left any bytes in the record, so the
        /// length is bounded by the array and the bytes checked.
        fn user(&self) -> &str {
            let len = self.user_len.min(self.user.len() as u64) as usize;
            std::str::from_utf8(&self.user[..len]).unwrap_or("?")
        }
    }

    /// The sessions of the whole server, in one value under one mutex.
    #[repr(C)]
    struct SessionTable {
        /// Records in use, from the first: they are never closed in this example.
        open: u64,
        /// Requests served in all sessions.
        requests: u64,
        sessions: [Session; SLOTS],
    }

    // SAFETY: integers and an array of `Session`s, which are `ShmSafe`: no pointer, no
    // destructor, and every bit pattern is valid (the count of records in use is bounded where
    // it is read).
    unsafe impl ShmSafe for SessionTable {}

    impl SessionTable {
        const EMPTY: Self = Self { open: 0, requests: 0, sessions: [Session::EMPTY; SLOTS] };

        fn opened(&self) -> &[Session] {
            &self.sessions[..self.in_use()]
        }

        fn opened_mut(&mut self) -> &mut [Session] {
            let in_use = self.in_use();
            &mut self.sessions[..in_use]
        }

        fn in_use(&self) -> usize {
            self.open.min(SLOTS as u64) as usize
        }

        fn hits(&self) -> u64 {
            self.opened().iter().map(|session| session.hits).sum()
        }
    }

    /// A session's own value, in a block of its own: the worker that opened it, and what it
    /// has been sent, which changes only atomically.
    #[repr(C)]
    struct Payload {
        worker: u64,
        bytes_sent: AtomicU64,
    }

    // SAFETY: an integer and an atomic one: no pointer, no destructor, every bit pattern valid.
    unsafe impl ShmSafe for Payload {}

    /// The workers' counts: session id to requests. Its hasher has fixed keys, so that it
    /// needs nothing but the map itself in any process.
    type Counts = hashbrown::HashMap<u64, u64, BuildHasherDefault<DefaultHasher>, &'static ShmPool>;

    /// Removes the pool's file when dropped, at the end of the master or as a panic unwinds it.
    /// Only the master drops it: a worker never unwinds past `fork` and ends with `_exit`.
    struct Unlink(PathBuf);

    impl Drop for Unlink {
        fn drop(&mut self) {
            // The processes that map the pool keep it; the name only lets others open it.
            let _ = std::fs::remove_file(&self.0);
        }
    }

    pub(crate) fn master() {
        let pid = std::process::id();
        let path = PathBuf::from(format!("/dev/shm/melon-session-table-{pid}"));
        let pool = ShmPool::builder()
            .path(&path)
            .capacity(4 << 20)
            .build()
            .expect("a pool of 4 MiB in a new file under /dev/shm");
        let file = Unlink(path.clone());
        // Leaked: the map's allocator refers to this handle for as long as the map lives, and
        // no process drops it (the workers end with `_exit`, the master with the program).
        let shm: &'static ShmPool = Box::leak(Box::new(pool));
        let start = shm.available();
        println!(
            "master {pid}: a pool of {} bytes at {}, {start} bytes free",
            shm.capacity(),
            path.display()
        );

        let offset =
            shm.insert_named_mutex(TABLE, SessionTable::EMPTY).expect("room for the table");
        println!(
            "master: published a ShmMutex<SessionTable> of {} bytes as {TABLE:?}, at offset {}; \
             {} bytes free",
            size_of::<ShmMutex<SessionTable>>(),
            offset.raw(),
            shm.available()
        );
        let counts = ShmMutex::new_poisoning_in(
            Counts::with_hasher_in(BuildHasherDefault::default(), shm),
            shm,
        )
        .expect("room for the map's mutex");
        println!(
            "master: a ShmMutex<HashMap> at offset {}, for the forked workers only",
            counts.offset().raw()
        );

        serve(shm, &counts);
        read_from_another_process(shm, &path);
        kill_a_holder(shm);
        clean_up(shm, counts, start);
        drop(file);
        assert!(!path.exists());
        println!("master: removed {}", path.display());
    }

    /// Forks the workers, reaps them, and prints the table and the map they filled.
    fn serve(shm: &'static ShmPool, counts: &ShmMutex<Counts>) {
        println!("\nmaster: forking {WORKERS} workers");
        // Workers that have started: each waits until all have (or a second has passed, should
        // one never start), so that they contend for the table's mutex rather than run one
        // after another.
        let started = ShmBox::new_in(AtomicU64::new(0), shm).expect("room for the count");
        let workers: Vec<_> =
            (0..WORKERS).map(|worker| fork(|| work(shm, worker, counts, &started))).collect();
        for (worker, pid) in workers.into_iter().enumerate() {
            let status = reap(pid);
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "worker {worker} failed: wait status {status:#x}"
            );
        }
        drop(started);
        println!("master: reaped {WORKERS} workers, each exited with status 0");

        let table = shm.named::<ShmMutex<SessionTable>>(TABLE).expect("the lock is free");
        let table = table.expect("published by the master").lock().expect("the table's mutex");
        print_table(shm, &table).expect("every payload in place");
        assert_eq!(table.requests, WORKERS as u64 * REQUESTS_PER_WORKER);
        assert_eq!(table.hits(), table.requests);

        let counts = counts.lock().expect("the map's mutex");
        let mut entries: Vec<_> = counts.iter().map(|(&id, &hits)| (id, hits)).collect();
        entries.sort_unstable();
        let shown: Vec<_> = entries.iter().map(|(id, hits)| format!("{id}:{hits}")).collect();
        println!(
            "master: the map in the pool, {} entries in {} bytes of buffer (session:requests): {}",
            counts.len(),
            counts.allocation_size(),
            shown.join(" ")
        );
        for session in table.opened() {
            assert_eq!(counts.get(&session.id), Some(&session.hits), "session {}", session.id);
        }
    }

    /// A worker: finds the table by name, opens its sessions, serves its requests under the
    /// table's mutex, and adds its counts to the map.
    fn work(
        shm: &'static ShmPool,
        worker: usize,
        counts: &ShmMutex<Counts>,
        started: &AtomicU64,
    ) -> Result<(), ShmError> {
        started.fetch_add(1, Ordering::AcqRel);
        let deadline = Instant::now() + Duration::from_secs(1);
        while started.load(Ordering::Acquire) < WORKERS as u64 && Instant::now() < deadline {
            std::thread::yield_now();
        }
        let table = shm.named::<ShmMutex<SessionTable>>(TABLE)?.expect("published before the fork");
        // Each session the worker opens is followed by a round of requests, spread over the
        // sessions it has open: (slot, id) of each, and the requests it served.
        let mut mine = Vec::new();
        let mut hits = [0; SESSIONS_PER_WORKER];
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64 ^ worker as u64;
        for number in 0..SESSIONS_PER_WORKER {
            let user = USERS[worker * SESSIONS_PER_WORKER + number];
            mine.push(open_session(shm, table, worker, user)?);
            for _ in 0..REQUESTS_PER_WORKER / SESSIONS_PER_WORKER as u64 {
                // The request's own work, done outside the table's mutex.
                std::thread::sleep(Duration::from_micros(50));
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let pick = (seed % mine.len() as u64) as usize;
                let mut table = table.lock()?;
                let session = &mut table.sessions[mine[pick].0];
                session.hits += 1;
                // SAFETY: (1) this worker placed the payload, and the master frees it only at
                // the end, once every process that reads the table is gone; (2) it changes only
                // through its atomic.
                let payload = unsafe { shm.get(session.payload) }?;
                payload.bytes_sent.fetch_add(200 + seed % 1800, Ordering::Relaxed);
                table.requests += 1;
                hits[pick] += 1;
            }
        }

        let mut counts = counts.lock()?;
        for (&(_, id), &hits) in mine.iter().zip(&hits) {
            counts.insert(id, hits);
        }
        drop(counts);
        let ids: Vec<_> = mine.iter().map(|&(_, id)| id).collect();
        println!(
            "  worker {worker} (pid {}): opened sessions {ids:?}, served {REQUESTS_PER_WORKER} \
             requests",
            std::process::id()
        );
        Ok(())
    }

    /// Opens a session for `user`: its payload, then its record. Returns the record's slot and
    /// the session's id.
    fn open_session(
        shm: &ShmPool,
        table: &ShmMutex<SessionTable>,
        worker: usize,
        user: &str,
    ) -> Result<(usize, u64), ShmError> {
        // The payload goes in a block of its own before the table's mutex is taken: the table
        // keeps only its offset.
        let payload = Payload { worker: worker as u64, bytes_sent: AtomicU64::new(0) };
        let payload = ShmBox::new_in(payload, shm)?.into_offset();
        let mut table = table.lock()?;
        let slot = table.in_use();
        table.open += 1;
        let id = table.open;
        *table.sessions.get_mut(slot).expect("a slot for every session") =
            Session::new(id, user, payload);
        Ok((slot, id))
    }

    /// Starts this binary again as the reader, a process that shares nothing with the master
    /// but what it is given: the pool's descriptor over a socket, and the pool's path.
    fn read_from_another_process(shm: &ShmPool, path: &Path) {
        let (socket, theirs) = UnixStream::pair().expect("a pair of UNIX sockets");
        // The reader inherits this one descriptor across `exec`; every other one of the master
        // stays close-on-exec.
        // SAFETY: `theirs` is an open descriptor of this process, and F_SETFD changes only its
        // flags.
        let cleared = unsafe { libc::fcntl(theirs.as_raw_fd(), libc::F_SETFD, 0) };
        assert_eq!(cleared, 0, "clearing FD_CLOEXEC");
        let binary = std::env::current_exe().expect("the path of this binary");
        println!("\nmaster: starting {} --reader", binary.display());
        let mut reader = Command::new(binary)
            .arg("--reader")
            .arg(theirs.as_raw_fd().to_string())
            .arg(path)
            .spawn()
            .expect("the reader started");
        // The reader has its copy. Without the master's, a reader that died early would make
        // `send_to` fail (EPIPE) rather than leave the message unread.
        drop(theirs);
        shm.send_to(&socket).expect("the pool's descriptor sent");
        let status = reader.wait().expect("the reader's status");
        assert!(status.success(), "the reader failed: {status}");
        println!("master: the reader exited with status 0");
    }

    /// The reader: receives the pool, opens it by path too, and prints the table with every
    /// payload, following their offsets in both of its mappings.
    pub(crate) fn reader(descriptor: &str, path: &str) {
        let pid = std::process::id();
        let descriptor: RawFd = descriptor.parse().expect("a descriptor number");
        // SAFETY: the master left this descriptor, its end of a socket pair, open across `exec`
        // for this process, and nothing else here owns or closes it.
        let socket = unsafe { UnixStream::from_raw_fd(descriptor) };
        // SAFETY: the master, this same binary, sends the pool it made, so one of this library's
        // layout version.
        let received = unsafe { ShmPool::receive(&socket) }.expect("the pool's descriptor");
        // SAFETY: (1) the file is the master's pool, made by this same binary; (2) it was made
        // with mode 0600, so only this user's processes can write it, and of those only this
        // example's do, through this library.
        let opened = unsafe { ShmPool::open_path(path) }.expect("the pool's file");
        println!("  reader {pid}: received the pool's descriptor, and opened {path}");

        let find = |shm: &ShmPool| shm.find::<ShmMutex<SessionTable>>(TABLE).expect("the lock");
        let offset = find(&received).expect("published by the master");
        assert_eq!(find(&opened), Some(offset), "one pool, one directory");
        let table = received.named::<ShmMutex<SessionTable>>(TABLE).expect("the lock");
        let table = table.expect("published by the master");
        let same = opened.named::<ShmMutex<SessionTable>>(TABLE).expect("the lock");
        let same = same.expect("published by the master");
        assert_ne!(std::ptr::from_ref(table), std::ptr::from_ref(same));
        println!(
            "  reader: {TABLE:?} at offset {} in both mappings, at {table:p} in one and {same:p} \
             in the other",
            offset.raw()
        );

        let table = table.lock().expect("the table's mutex");
        print_table(&received, &table).expect("every payload in place");
        for session in table.opened() {
            // SAFETY: as in `print_table`: the master keeps the payloads while this process
            // runs, and they change only atomically, under the table's mutex, which is held.
            let here = unsafe { received.get(session.payload) }.expect("a payload");
            // SAFETY: as above; the same value, through the other mapping.
            let there = unsafe { opened.get(session.payload) }.expect("a payload");
            assert_ne!(std::ptr::from_ref(here), std::ptr::from_ref(there));
            let sent = |payload: &Payload| payload.bytes_sent.load(Ordering::Relaxed);
            assert_eq!(sent(here), sent(there), "session {}", session.id);
        }
        println!("  reader: every payload reads the same through both mappings");
    }

    /// Forks a worker that dies holding the table's mutex, and shows the master's next lock.
    fn kill_a_holder(shm: &'static ShmPool) {
        println!("\nmaster: forking worker {WORKERS}, which will die holding the table's mutex");
        let doomed = fork(|| {
            let table = shm.named::<ShmMutex<SessionTable>>(TABLE)?.expect("published");
            let mut table = table.lock()?;
            // Half a request: counted in the total, not yet in its session's hits.
            table.requests += 1;
            println!(
                "  worker {WORKERS} (pid {}): holding the table's mutex half way through a \
                 request; raising SIGKILL",
                std::process::id()
            );
            // SAFETY: raising a signal touches no memory; SIGKILL ends this process here, with
            // the mutex held.
            unsafe { libc::raise(libc::SIGKILL) };
            unreachable!("SIGKILL is neither caught nor ignored");
        });
        let status = reap(doomed);
        assert!(
            libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
            "wait status {status:#x}"
        );
        println!("master: reaped worker {WORKERS}, killed by signal {}", libc::WTERMSIG(status));

        let table = shm.named::<ShmMutex<SessionTable>>(TABLE).expect("the lock is free");
        let table = table.expect("published by the master");
        let mut guard = table.lock().expect("the table's mutex, taken over");
        assert!(guard.holder_died());
        let hits = guard.hits();
        println!(
            "master: holder_died() is true: the table may be half changed; it counts {} \
             requests, its sessions {hits}",
            guard.requests
        );
        // The sessions' hits are the record of each request served; the total follows them.
        guard.requests = hits;
        println!("master: the total set back to {hits}, the dead worker's half request undone");
        drop(guard);
        let guard = table.lock().expect("the table's mutex");
        assert!(!guard.holder_died());
        println!(
            "master: locked again: holder_died() is false; takeovers() is {}",
            table.takeovers()
        );
    }

    /// Frees every payload, removes the table's name, drops the map, and checks that the pool
    /// is back where it was but for the directory's block.
    fn clean_up(shm: &'static ShmPool, counts: ShmMutexBox<'static, Counts>, start: usize) {
        println!("\nmaster: cleaning up");
        let table = shm.named::<ShmMutex<SessionTable>>(TABLE).expect("the lock is free");
        let mut table = table.expect("published by the master").lock().expect("the mutex");
        for session in table.opened_mut() {
            // SAFETY: a worker gave the payload up with `into_offset` and stored its offset
            // here only; it is taken up once, and nothing follows it after: the workers and the
            // reader are gone, and the record is emptied below.
            let payload = unsafe { ShmBox::from_offset(shm, session.payload) };
            drop(payload.expect("a payload of the pool"));
            *session = Session::EMPTY;
        }
        table.open = 0;
        drop(table);
        // SAFETY: no process uses the table any more: the workers and the reader are gone; the
        // master's other references to it, from `named`, lived in the functions above, which
        // have returned, and this one's guard is dropped above.
        let removed = unsafe { shm.remove_named::<ShmMutex<SessionTable>>(TABLE) };
        assert!(removed.expect("the lock is free"));
        // Dropping the box drops the map, which frees its buffer through its allocator, and
        // then frees the mutex's block.
        drop(counts);
        println!("master: {} names left in the directory", shm.name_count().expect("the lock"));

        let stats = shm.stats().expect("the lock is free");
        println!("\n{stats}\n");
        let check = shm.check();
        println!("check: {check:?}");
        println!(
            "available: {} bytes, {start} before the first name, less the directory's block of \
             {DIRECTORY_BLOCK}",
            stats.available
        );
        assert!(check.is_ok());
        assert_eq!(stats.available, start - DIRECTORY_BLOCK);
        assert_eq!(stats.live_blocks, 1, "the directory's block alone");
    }

    /// Prints the sessions in use, following each one's payload by its offset.
    fn print_table(shm: &ShmPool, table: &ShmMutexGuard<'_, SessionTable>) -> Result<(), ShmError> {
        println!(
            "  {:>7}  {:<6} {:>5}  {:>14}  {:>6}  {:>10}",
            "session", "user", "hits", "payload offset", "worker", "bytes sent"
        );
        for session in table.opened() {
            // SAFETY: (1) a worker placed the payload, and the master frees it only at the end,
            // once the workers and the reader are gone; (2) it changes only through its atomic,
            // under the table's mutex, which the guard holds.
            let payload = unsafe { shm.get(session.payload) }?;
            println!(
                "  {:>7}  {:<6} {:>5}  {:>14}  {:>6}  {:>10}",
                session.id,
                session.user(),
                session.hits,
                session.payload.raw(),
                payload.worker,
                payload.bytes_sent.load(Ordering::Relaxed)
            );
        }
        println!("  {} sessions, {} requests", table.in_use(), table.requests);
        Ok(())
    }

    /// Forks a worker that runs `work` and ends with `_exit`: status 0 when it returns `Ok`, 1
    /// for an error, 101 for a panic. It never returns or unwinds into the master's code, so it
    /// drops none of the master's values.
    fn fork(work: impl FnOnce() -> Result<(), ShmError>) -> libc::pid_t {
        // SAFETY: the master is single-threaded, so the child may keep running Rust code.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)) {
                Ok(Ok(())) => 0,
                Ok(Err(error)) => {
                    eprintln!("worker {}: {error}", std::process::id());
                    1
                }
                Err(_) => 101,
            };
            // SAFETY: ends the worker at once, without running the destructors of the master's
            // values it has copies of.
            unsafe { libc::_exit(code) };
        }
        pid
    }

    fn reap(pid: libc::pid_t) -> libc::c_int {
        let mut status = 0;
        // SAFETY: `pid` is a child of this process and `status` is a valid place to write.
        let reaped = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(reaped, pid, "waitpid");
        status
    }
}
