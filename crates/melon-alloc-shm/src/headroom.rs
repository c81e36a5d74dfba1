//! How much memory the system, and each control group this process is in, have to spare: asked
//! before the pool's file reserves memory. A file in memory (a `memfd`, or one on `tmpfs`) takes
//! its pages from them with no limit of its own, so a reservation larger than what is left runs
//! the system, or the group, out of memory: the kernel's out-of-memory killer then ends
//! processes, and not necessarily the caller, whose pages belong to the file. A reservation
//! refused here is an error the caller reports instead.
//!
//! Everything is read into buffers on the stack: a pool made without memory to spare must fail
//! with an error, not abort for want of a heap block.

use core::ffi::CStr;
use std::os::fd::BorrowedFd;

use rustix::fs::{Mode, OFlags};

/// The share of the memory there is that a reservation must leave free, as a shift: 1/64.
const KEEP_SHIFT: u32 = 6;

/// The least reservation that is asked about: a smaller one is made as any allocation of the
/// program's is, without the few tens of microseconds that reading the figures costs (a pool of
/// a few megabytes, a growth by a segment).
const ASK_FROM: u64 = 16 << 20;

/// A control group limit at or above this is none: cgroup v1 writes "no limit" as the largest
/// multiple of the page size that fits an `i64`.
const NO_LIMIT: u64 = 1 << 62;

/// `f_type` of a file system whose files live in memory: tmpfs (and so a `memfd`) and ramfs.
const IN_MEMORY: [i64; 2] = [0x0102_1994, 0x8584_58f6];

/// Whether `bytes` more of the file behind `fd` fit in the memory the system and this process's
/// control groups have to spare, keeping 1/64 of each free. A reservation under 16 MiB, a file
/// that does not live in memory (on a disk, or on hugetlbfs, whose pages are set aside already)
/// and a figure the system does not give count as room.
pub(crate) fn has_room(fd: BorrowedFd<'_>, bytes: u64) -> bool {
    bytes < ASK_FROM || !in_memory(fd) || fits(bytes, spare())
}

/// Whether the file behind `fd` lives in memory, on tmpfs or ramfs.
fn in_memory(fd: BorrowedFd<'_>) -> bool {
    #[allow(clippy::unnecessary_cast, reason = "`f_type` is of another type on other targets")]
    rustix::fs::fstatfs(fd).is_ok_and(|stat| IN_MEMORY.contains(&(stat.f_type as i64)))
}

/// Whether a reservation of `bytes` fits in `spare`, the figure [`spare`] gave; one the system
/// does not give counts as room.
fn fits(bytes: u64, spare: Option<u64>) -> bool {
    spare.is_none_or(|spare| bytes <= spare)
}

/// The least that the system and the control groups with a limit have to spare; `None` when
/// none of them can be read.
pub(crate) fn spare() -> Option<u64> {
    [system_spare(), groups_spare()].into_iter().flatten().min()
}

/// `MemAvailable` less 1/64 of `MemTotal`, from `/proc/meminfo`, in bytes.
fn system_spare() -> Option<u64> {
    let mut buffer = [0u8; 512];
    let text = read(c"/proc/meminfo", &mut buffer)?;
    let field = |name: &str| {
        let line = text.lines().find(|line| line.starts_with(name))?;
        let kib: u64 = line[name.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
        kib.checked_mul(1024)
    };
    let (total, available) = (field("MemTotal:")?, field("MemAvailable:")?);
    Some(available.saturating_sub(total >> KEEP_SHIFT))
}

/// The least that the memory control groups this process is in, and their ancestors, have to
/// spare below their limits, less 1/64 of each limit: cgroup v2's `memory.max` and
/// `memory.current`, or v1's `memory.limit_in_bytes` and `memory.usage_in_bytes`. `None` where
/// no group with a limit can be read.
fn groups_spare() -> Option<u64> {
    let mut buffer = [0u8; 4096];
    let text = read(c"/proc/self/cgroup", &mut buffer)?;
    groups_spare_in(text, |path| {
        let mut buffer = [0u8; 64];
        read(path, &mut buffer)?.trim().parse().ok()
    })
}

/// [`groups_spare`] for the groups `cgroup` lists, as `/proc/self/cgroup` does, with each
/// control file's number read by `number` (`None` for a file missing, or one that says "max").
fn groups_spare_in(cgroup: &str, number: impl Fn(&CStr) -> Option<u64>) -> Option<u64> {
    let mut least: Option<u64> = None;
    for line in cgroup.lines() {
        // `hierarchy:controllers:path`; v2's hierarchy is 0, with no controllers named.
        let mut fields = line.splitn(3, ':');
        let (Some(hierarchy), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let files = if hierarchy == "0" && controllers.is_empty() {
            ("/sys/fs/cgroup", "memory.max", "memory.current")
        } else if controllers.split(',').any(|controller| controller == "memory") {
            ("/sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.usage_in_bytes")
        } else {
            continue;
        };
        // The group and each of its ancestors, whose limits hold for it too.
        let mut group = path.trim_end_matches('/');
        loop {
            least = [least, group_spare(files, group, &number)].into_iter().flatten().min();
            match group.rfind('/') {
                Some(parent) => group = &group[..parent],
                None => break,
            }
        }
    }
    least
}

/// What the group at `path` under `files.0` has to spare below its limit (`files.1`), with its
/// usage in `files.2`, less 1/64 of the limit, each file read by `read_number`; `None` when it
/// has no limit or cannot be read.
fn group_spare(
    files: (&str, &str, &str),
    path: &str,
    read_number: impl Fn(&CStr) -> Option<u64>,
) -> Option<u64> {
    let (base, limit_file, usage_file) = files;
    let number = |file: &str| -> Option<u64> {
        let mut name = [0u8; 512];
        read_number(join(&mut name, &[base, path, "/", file])?)
    };
    // "max" (v2) does not parse: no limit; nor is v1's largest number one.
    let limit = number(limit_file).filter(|&limit| limit < NO_LIMIT)?;
    let usage = number(usage_file)?;
    Some(limit.saturating_sub(limit >> KEEP_SHIFT).saturating_sub(usage))
}

/// `parts` written one after another into `buffer`, with a 0 after them; `None` if they do not
/// fit or hold a 0 byte.
fn join<'a>(buffer: &'a mut [u8], parts: &[&str]) -> Option<&'a CStr> {
    let mut len = 0;
    for part in parts {
        let end = len + part.len();
        buffer.get_mut(len..end)?.copy_from_slice(part.as_bytes());
        len = end;
    }
    *buffer.get_mut(len)? = 0;
    CStr::from_bytes_with_nul(&buffer[..=len]).ok()
}

/// The start of the file at `path`, as much of it as `buffer` holds, as text; `None` when it
/// cannot be read or is not UTF-8 as far as it was read.
fn read<'a>(path: &CStr, buffer: &'a mut [u8]) -> Option<&'a str> {
    let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).ok()?;
    let mut len = 0;
    while len < buffer.len() {
        match rustix::io::read(&fd, &mut buffer[len..]) {
            Ok(0) => break,
            Ok(read) => len += read,
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return None,
        }
    }
    // A line cut by the buffer's end is dropped whole, and with it a character cut in two.
    let whole = if len == buffer.len() {
        buffer[..len].iter().rposition(|&byte| byte == b'\n').unwrap_or(0)
    } else {
        len
    };
    core::str::from_utf8(&buffer[..whole]).ok()
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::{fits, groups_spare_in, has_room, in_memory, join, spare, system_spare, ASK_FROM};

    #[test]
    fn a_file_in_memory_has_room_for_what_the_machine_can_spare_and_no_more() {
        let memfd = rustix::fs::memfd_create("headroom", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        assert!(in_memory(memfd.as_fd()));
        // One reading, since what the machine can spare moves between two.
        let spare = spare().expect("the figures of this machine");
        assert!(fits(spare, Some(spare)));
        assert!(!fits(spare + 1, Some(spare)));
        assert!(fits(u64::MAX, None), "a figure the system does not give counts as room");
        // No machine spares every byte there is; small reservations are not asked about.
        assert!(!has_room(memfd.as_fd(), u64::MAX));
        assert!(has_room(memfd.as_fd(), ASK_FROM - 1));
    }

    #[test]
    fn the_system_has_memory_to_spare() {
        assert!(system_spare().expect("/proc/meminfo gives MemAvailable") > 0);
        assert!(spare().is_some());
    }

    /// The numbers of a fake hierarchy of control groups, by file.
    fn fake<'a>(files: &'a [(&'a str, u64)]) -> impl Fn(&core::ffi::CStr) -> Option<u64> + 'a {
        move |path| {
            let path = path.to_str().ok()?;
            files.iter().find(|(name, _)| *name == path).map(|&(_, number)| number)
        }
    }

    #[test]
    fn the_tightest_group_up_the_hierarchy_is_what_is_left() {
        const MIB: u64 = 1 << 20;
        // v2: the group has no limit ("max" reads as none), its parent 1 GiB with 200 MiB used,
        // the root none.
        let v2 = "0::/service/worker\n";
        let files = [
            ("/sys/fs/cgroup/service/memory.max", 1024 * MIB),
            ("/sys/fs/cgroup/service/memory.current", 200 * MIB),
            ("/sys/fs/cgroup/service/worker/memory.current", 100 * MIB),
        ];
        assert_eq!(groups_spare_in(v2, fake(&files)), Some(1024 * MIB - 16 * MIB - 200 * MIB));
        // v1, among other controllers: a 512 MiB limit with 505 MiB used leaves nothing once
        // 1/64 of the limit is kept.
        let v1 = "5:cpu,cpuacct:/a\n4:memory:/a\n0::/\n";
        let files = [
            ("/sys/fs/cgroup/memory/a/memory.limit_in_bytes", 512 * MIB),
            ("/sys/fs/cgroup/memory/a/memory.usage_in_bytes", 505 * MIB),
            ("/sys/fs/cgroup/memory/memory.limit_in_bytes", 9_223_372_036_854_771_712),
            ("/sys/fs/cgroup/memory/memory.usage_in_bytes", 4096 * MIB),
        ];
        assert_eq!(groups_spare_in(v1, fake(&files)), Some(0));
        // No limit anywhere, or no memory controller: nothing to say.
        assert_eq!(groups_spare_in(v1, fake(&files[2..])), None);
        assert_eq!(groups_spare_in("3:pids:/a\n", fake(&files)), None);
    }

    #[test]
    fn paths_are_joined_or_refused() {
        let mut buffer = [0u8; 16];
        assert_eq!(join(&mut buffer, &["/a", "/b", "/", "c"]).unwrap(), c"/a/b/c");
        assert!(join(&mut buffer, &["/0123456789", "abcdef"]).is_none(), "too long");
        assert!(join(&mut buffer, &["a\0b"]).is_none(), "a 0 inside");
        assert!(spare().is_some());
    }
}
