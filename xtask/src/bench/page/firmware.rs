//! The microcontroller section of the page: melon's core pool against embedded-alloc's two heaps
//! and talc as a firmware's global allocator on an emulated Cortex-M4.

use std::fmt::Write as _;

use super::{measured_section, Target};
use crate::bench::format::yes_no;
use crate::bench::results::Firmware;

/// The request sizes whose RAM per live block the firmware measures, with melon's class size for
/// each: what the class rounding alone costs.
const SIZES: [(u64, u64); 3] = [(16, 16), (64, 64), (200, 208)];

/// Bytes of the fresh heap of each measurement.
const HEAP: u64 = 64 * 1024;

/// The share of RAM per block above the class size that melon's chunk headers and region
/// bookkeeping may add: what "no overhead per block" is taken to allow.
const BOOKKEEPING: f64 = 0.01;

pub(super) fn firmware_results(page: &mut String, targets: &mut Vec<Target>, firmware: &Firmware) {
    let measured = !firmware.peers.is_empty();
    if !measured_section(page, "On a microcontroller", measured, firmware.when) {
        return;
    }
    page.push_str(
        "The firmware in `firmware/src/compare/` built once per allocator as its \
         `#[global_allocator]` for `thumbv7em-none-eabihf` (`opt-level = \"s\"`) and run on \
         QEMU's `mps2-an386` Cortex-M4 board: melon's `LockedPool<RegionSource>`, \
         embedded-alloc 0.6's `LlffHeap` and `TlsfHeap`, and talc 5's `TalcLock`. Code is the \
         `.text` of `firmware/src/footprint.rs`, which only builds `alloc`'s collections \
         through its global allocator, over that of the same program with a bump allocator \
         that never frees. \
         RAM per block is 64 KiB over the number of blocks of that size (aligned to 8) a fresh \
         heap over 64 KiB serves before it refuses one; the largest blocks are found by \
         bisection in a fresh heap over 64 KiB, and in one filled with 64-byte blocks of which \
         every other one was freed. The last column is how many of one block each of eight \
         sizes in eight classes (16 to 3000 bytes) a fresh heap over 64 KiB holds at once, and \
         the largest block it serves besides them. melon's second row is the core built with \
         its `small-chunks` feature (4 KiB chunks, classes up to 2016 bytes). Produced by:\n\n\
         ```sh\n\
         cargo xtask bench --only firmware\n\
         ```\n\n\
         | allocator | code (B) | RAM per 16 / 64 / 200 B block | largest block, fresh | \
         largest block, fragmented | 8 sizes at once: held, largest besides |\n\
         |---|---:|---:|---:|---:|---:|\n",
    );
    let baseline = firmware.get("bump").map(|bump| bump.text_bytes);
    let code = |name: &str| {
        let peer = firmware.get(name)?;
        baseline.map(|baseline| peer.text_bytes.saturating_sub(baseline))
    };
    let per_block = |name: &str, size: u64| {
        let count = firmware.get(name)?.figure(&format!("blocks {size}"))?;
        (count > 0).then(|| HEAP as f64 / count as f64)
    };
    for peer in firmware.peers.iter().filter(|peer| peer.name != "bump") {
        let ram: Vec<String> = SIZES
            .iter()
            .map(|&(size, _)| {
                per_block(&peer.name, size).map_or("n/a".into(), |b| format!("{b:.1}"))
            })
            .collect();
        let figure = |name| peer.figure(name).map_or("n/a".into(), |value| value.to_string());
        let code = code(&peer.name).map_or("n/a".into(), |bytes| bytes.to_string());
        let name = if peer.name.starts_with("melon") {
            format!("**{}**", peer.name)
        } else {
            peer.name.clone()
        };
        let _ = writeln!(
            page,
            "| {name} | {code} | {} | {} | {} | {} of 8, {} |",
            ram.join(" / "),
            figure("largest_fresh"),
            figure("largest_fragmented"),
            figure("spread_held"),
            figure("largest_after_spread")
        );
    }
    page.push('\n');

    let rounded: Vec<Option<bool>> = SIZES
        .iter()
        .map(|&(size, class)| {
            per_block("melon", size).map(|bytes| bytes <= class as f64 * (1.0 + BOOKKEEPING))
        })
        .collect();
    let met =
        rounded.iter().copied().collect::<Option<Vec<bool>>>().map(|all| all.iter().all(|&m| m));
    let shown: Vec<String> = SIZES
        .iter()
        .map(|&(size, class)| {
            per_block("melon", size).map_or("n/a".into(), |bytes| format!("{bytes:.1} for {class}"))
        })
        .collect();
    targets.push(Target {
        target: "firmware: RAM per live block within 1 % of the class size (16 / 64 / 200 B)"
            .into(),
        result: shown.join(", "),
        met: yes_no(met),
    });
    let ratio = code("melon").zip(code("talc")).map(|(melon, talc)| melon as f64 / talc as f64);
    targets.push(Target {
        target: "firmware: code size ≤ talc's".into(),
        result: ratio.map_or("n/a".into(), |r| format!("{r:.2} × talc's")),
        met: yes_no(ratio.map(|r| r <= 1.0)),
    });
    let _ = writeln!(
        page,
        "Targets: melon's RAM per live block no more than its class size (16, 64 and 208 bytes) \
         and {:.0} % for its chunk headers; its code no larger than talc's.\n",
        BOOKKEEPING * 100.0
    );
}
