//! What the tests read of the pages that keep the descriptions of a process's identities and
//! owner slots (see `owner.rs`).

/// Pages of a pool's file of one page's length that this process maps: those that keep the
/// descriptions its identities and slots lock through alive (the pools themselves map more).
pub(crate) fn pinned_pages() -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines()
        .filter(|line| line.contains("melon-alloc"))
        .filter(|line| {
            let range = line.split(' ').next().unwrap();
            let (start, end) = range.split_once('-').unwrap();
            let len =
                usize::from_str_radix(end, 16).unwrap() - usize::from_str_radix(start, 16).unwrap();
            len == 4096
        })
        .count()
}
