//! The per-request section of the page: a pool per request on a tokio runtime against the global
//! allocator, mimalloc and bumpalo in a `LocalSet`, and where melon's time goes.

use std::fmt::Write as _;

use super::{measured_section, Target};
use crate::bench::format::{verdict, yes_no};
use crate::bench::results::PerRequest;

pub(super) fn per_request_results(
    page: &mut String,
    targets: &mut Vec<Target>,
    per_request: &PerRequest,
    on_threads: &PerRequest,
) {
    let measured = !per_request.rows.is_empty();
    if !measured_section(page, "A pool per request, across `.await`", measured, per_request.when) {
        return;
    }
    page.push_str(
        "A server's requests on tokio: 5,000 requests, 100 in flight, each building a \
         `hashbrown::HashMap<u64, u64>` of 200 entries by inserts and an 800-byte \
         `allocator_api2::vec::Vec`, with a `yield_now().await` after each while both live, then \
         reading them back (`crates/melon-alloc-bench/src/per_request.rs`). `melon`: each \
         request's task makes `ROOT.child_with_limit(1 MiB)` of a `static ROOT: SyncPool` and \
         drops it at the end, on a multi-threaded runtime (2 workers here). `global`: the same \
         collections in the global allocator (glibc), on the same runtime. `mimalloc`: the same \
         collections in mimalloc, through an `allocator_api2` `Allocator` over \
         `mi_malloc_aligned` and `mi_free`, on the same runtime. `bumpalo`: each \
         request's task makes a `Bump` of its own and builds the same collections in it through \
         bumpalo's `allocator-api2` feature; a `Bump` is not `Sync`, so these tasks run on one \
         thread, in a `LocalSet` with `spawn_local`. Every peer uses hashbrown's default hasher. \
         The rounds run the four in turn after a round of warm-up, the first to run moving one \
         place a round; time is the median over the rounds, the ratio the median of each round's \
         time over the global allocator's in the same round, with the least and greatest in \
         brackets (the targets are judged by such ratios, to bumpalo's time too), and bytes are \
         what one request's \
         pool held at its peak (the child's `peak_bytes_held`, `Bump::allocated_bytes`), \
         averaged over one request in 16. Produced by:\n\n\
         ```sh\n\
         cargo xtask bench --only per_request\n\
         ```\n\n\
         | peer | µs per request | time / global | bytes per request's pool |\n\
         |---|---:|---:|---:|\n",
    );
    rows(page, per_request);
    let time = |peer| per_request.get(peer).map(|row| row.us_per_request);
    let melon = per_request.get("melon");
    // Melon's rounds over the peer's, each over the same round's time of the other.
    let to_bumpalo = melon.and_then(|row| row.to_bumpalo);
    let to_global = melon.map(|row| row.ratio).filter(|_| time("global").is_some());
    let peers = [
        ("bumpalo", "bumpalo's in a `LocalSet`", to_bumpalo),
        ("global", "the global allocator's", to_global),
    ];
    for (peer, label, ratio) in peers {
        let met = ratio.map(|[median, ..]| median <= 1.0);
        let shown = match (ratio, time("melon"), time(peer)) {
            (Some([median, min, max]), Some(melon), Some(other)) => format!(
                "{median:.2} ({min:.2}–{max:.2}) × {peer}'s time, the median of the rounds' \
                 ratios; {melon:.2} µs against {other:.2} µs"
            ),
            _ => "n/a".into(),
        };
        let _ = writeln!(
            page,
            "\nTarget: melon's time per request at most {label}, by the median of each round's \
             ratio. {} ({shown}).",
            met.map_or("Not measured", verdict),
        );
        targets.push(Target {
            target: format!(
                "per-request pools on tokio: time per request ≤ {label} (median of interleaved \
                 rounds)"
            ),
            result: shown,
            met: yes_no(met),
        });
    }
    let bytes = |peer| per_request.get(peer).map(|row| row.bytes).filter(|&bytes| bytes > 0.0);
    let ratio = bytes("melon").zip(bytes("bumpalo")).map(|(melon, bump)| melon / bump);
    let met = ratio.map(|ratio| ratio <= 4.0);
    let shown = ratio.map_or("n/a".into(), |ratio| format!("{ratio:.2} × bumpalo's"));
    let _ = writeln!(
        page,
        "\nTarget: bytes held by one request's pool at most 4 times bumpalo's. {} ({shown}).",
        met.map_or("Not measured", verdict),
    );
    targets.push(Target {
        target: "per-request pools on tokio: bytes per request's pool ≤ 4 × bumpalo's".into(),
        result: shown,
        met: yes_no(met),
    });
    page.push('\n');
    on_threads_results(page, on_threads);
    page.push_str(PER_REQUEST_NOTES);
}

/// The same requests on two plain threads, one at a time each, where the peers' allocators meet
/// only each other.
fn on_threads_results(page: &mut String, on_threads: &PerRequest) {
    if on_threads.rows.is_empty() {
        return;
    }
    page.push_str(
        "The same requests on two threads, each serving every other request one after another on \
         a current-thread runtime of its own, every peer included, measured in the same run \
         after the table above. With no other work between them, the threads allocate all the \
         time, and whatever their allocations share, a lock or a line, shows: before a `SyncPool` \
         kept the chunks its children give back in a stripe for each thread (\"A `SyncPool`'s \
         children on different threads do not meet on the root's lock\" in \
         `docs/architecture.md`), melon took 1.52 to 1.55 times the global allocator's time \
         here, in two runs alternating with runs of this build (2026-12-05). Produced by:\n\n\
         ```sh\n\
         cargo run --release -p melon-alloc-bench --bin per_request -- --threads 2\n\
         ```\n\n\
         | peer | µs per request, 2 threads | time / global | bytes per request's pool |\n\
         |---|---:|---:|---:|\n",
    );
    rows(page, on_threads);
    page.push('\n');
}

/// One table row a peer.
fn rows(page: &mut String, per_request: &PerRequest) {
    for row in &per_request.rows {
        let [median, min, max] = row.ratio;
        let ratio = format!("{median:.2} ({min:.2}–{max:.2})");
        let ratio = if row.peer == "melon" { format!("**{ratio}**") } else { ratio };
        let bytes = if row.bytes > 0.0 { format!("{:.0}", row.bytes) } else { "n/a".into() };
        let _ = writeln!(page, "| {} | {:.2} | {ratio} | {bytes} |", row.peer, row.us_per_request);
    }
}

/// What one request's pool holds, and why.
const PER_REQUEST_NOTES: &str = "A request's child pool gives each size class it uses a 4 KiB \
page of a split chunk until a class fills its page, and a class that needs a page takes the \
emptied page of a smaller class first (see \"Pages for classes a pool barely uses\" and \"An \
emptied page passes to a larger class\" in `docs/architecture.md`). The map grows through seven \
size classes and the buffer uses an eighth: the map's six smaller tables take turns in two pages \
of one chunk, and its last table (4368 bytes) takes a whole 16 KiB chunk; once the table before it \
is freed, the split chunk's pages are all empty and it goes back to the root (\"A split chunk \
whose passed pages empty goes back at once\" in `docs/architecture.md`), and the buffer takes a \
page of a chunk taken anew. So the pool holds two chunks at its peak, 32 KiB, where it held three, \
48 KiB, before pages passed between classes, and eight whole chunks, 128 KiB, before pages. A \
`Bump` holds about 15 KiB, in chunks that grow as it fills.

Where melon's extra time goes, measured on 2026-12-04 (not rerun by `cargo xtask bench`), over \
five rounds of 5,000 requests of one peer alone under cachegrind, with the second-level cache \
simulated as one of 2 MiB, 16-way (this machine's two cores have 1 MiB each). Melon runs about \
56,900 instructions a request against the global allocator's 55,300; the map's inserts alone \
vary by a few hundred a request from run to run, with the hash seed. At 100 requests in flight \
melon misses that cache 61 times a request, and glibc about once. Most of melon's misses are \
conflicts, not capacity: with the same 2 MiB simulated fully associative (`--LL=2097152,2048,64`) \
melon misses it 4 times a request. Before emptied pages passed to larger classes and split \
chunks handed out their pages, and pages and chunks of a few large blocks their blocks, from one \
their address picks (\"Where a chunk's first blocks lie\" in `docs/architecture.md`), melon \
missed it 110 times a request, and 6 times fully associative. Since the page a split chunk gives \
first and the block a page or chunk of a few large blocks carves first are picked by a hash of the \
address rather than by its bits just above the chunk's size, which the cache indexes by too, \
melon missed it 35 times a request, and since a dropped child gives its chunks back from its \
largest class down and a `SyncPool` keeps them in a stripe for the thread, so that the next \
request on the thread takes each chunk for the part it played before (\"Dropping\" and \"A \
`SyncPool`'s children on different threads do not meet on the root's lock\" in \
`docs/architecture.md`), 12 times a request, with a child that carries no stripes of its own \
(measured on 2026-12-05, same command). With the cache \
simulated as one core's, 1 MiB 8-way (`--LL=1048576,8,64`), at 50 requests in flight, each \
core's share, melon missed it 64 times a request, then 32, and now 16, and glibc less than once:

```sh
cargo build --release -p melon-alloc-bench --bin per_request
valgrind --tool=cachegrind --cache-sim=yes --LL=2097152,16,64 --cachegrind-out-file=/dev/null \\
    target/release/per_request --rounds 4 --peers melon --in-flight 100
```

How the gap depends on the requests in flight, measured on 2026-12-05 (not rerun by `cargo xtask
bench`): three runs at each count of `per_request --rounds 9 --peers melon,global --in-flight N`,
each run's median of the per-round ratios of melon's time to the global allocator's. With 10
requests in flight, 1.00 to 1.03; with 100, 1.08 to 1.09; with 400, 1.13 to 1.27. A request's pool
keeps the chunks it takes until the request ends, so the bytes all the pools hold grow with the
requests in flight, where glibc hands a request memory that another one freed a moment before.

What the gap is made of, measured on 2026-12-05 (not rerun by `cargo xtask bench`), in four runs
each, in turn, of `per_request --rounds 15 --peers melon,global --map empty` and `--map sized`. With
each request's map made with room for its 200 entries, so that it takes one table and never grows,
melon took 0.29 to 0.44 µs a request more than the global allocator (1.09 to 1.12 times its time);
growing through seven tables as above, 0.51 to 0.75 µs more (1.11 to 1.17 times). So the growth
makes about 0.2 µs of the gap: each new table goes into the request's own pages, last written when
an earlier request had them, where glibc hands it a block that another request freed a moment
before, still in the first-level cache. Under cachegrind, with the command above and with `--peers
global`, melon's rehash misses that cache on 92 writes a request and glibc's on 56. With sized maps,
callgrind (`valgrind --tool=callgrind target/release/per_request --rounds 4 --peers melon --map
sized`, and `--peers global`) counts 1,450 instructions a request more for melon than for glibc in
`memcpy`, called by tokio as it moves each request's future, which holds the request's child pool,
its engine's lists inline; everything else together, melon runs about 200 instructions a request
fewer than glibc. The second-level conflicts of the simulation above are not what costs on this
machine: with transparent huge pages turned off (`echo never >
/sys/kernel/mm/transparent_hugepage/enabled`), so that the second-level cache sees the pool's pages
at scattered physical addresses, four runs each, in turn, of `per_request --rounds 15 --peers
melon,global` gave 1.10 to 1.12 times the global allocator's time, against 1.09 to 1.15 with
`madvise`.

The copies of the future cost instructions but not time: a build whose requests kept their child
pool in a `Box`, so that each future held a pointer where it held the pool's 904 bytes (1,064 bytes
a future against the global allocator's 120), took 1.08 to 1.12 times the global allocator's time,
against 1.10 to 1.11 for the pool kept in the future, in three runs of each build in turn on
2026-12-07 (`per_request --rounds 9 --peers melon,global`, the machine in its slower state).

";
