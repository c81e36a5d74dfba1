//! Reading a run's results back from disk: criterion's estimates in `criterion/` of the target
//! directory (`target/`, or `CARGO_TARGET_DIR` as for cargo and criterion themselves), the
//! tab-separated figures of the binaries (the heap targets' interleaved rounds, the hammer, the
//! resident measurement and the others) and the machine's facts in `target/bench-results/`, and
//! the peers' versions from `Cargo.lock`.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::UNIX_EPOCH;

use crate::root;
use crate::target_dir;

/// One criterion benchmark: criterion's mean, per element of its throughput.
#[derive(Clone, Copy)]
pub(super) struct Estimate {
    /// Nanoseconds per element (per alloc+free pair, or per block for the drop).
    pub(super) ns: f64,
    /// The fastest and the slowest of criterion's samples, in nanoseconds per element: the
    /// spread of the figure over its runs. `None` when criterion left no samples.
    pub(super) spread: Option<(f64, f64)>,
    /// Elements per iteration.
    pub(super) elements: f64,
    /// When criterion wrote the estimate, in seconds since the epoch.
    pub(super) when: u64,
}

/// Reads `<target directory>/criterion/<group>/<id>/new/`: the mean's point estimate from
/// `estimates.json` and the throughput from `benchmark.json`. `None` when the benchmark has not
/// been run.
///
/// The two files are small, flat and written by criterion itself, so a key search does the job
/// that a JSON parser would, without a dependency.
pub(super) fn estimate(group: &str, id: &str) -> Option<Estimate> {
    // Criterion writes under the target directory cargo builds in, which `CARGO_TARGET_DIR` or
    // `build.target-dir` moves; reading `target/` regardless would report an older run's figures
    // as this one's.
    let dir = target_dir().ok()?.join("criterion").join(group).join(id).join("new");
    let estimates = fs::read_to_string(dir.join("estimates.json")).ok()?;
    let mean = &estimates[estimates.find("\"mean\"")?..];
    let iteration = number_after(mean, "\"point_estimate\":")?;
    let benchmark = fs::read_to_string(dir.join("benchmark.json")).unwrap_or_default();
    let elements = number_after(&benchmark, "\"Elements\":").unwrap_or(1.0).max(1.0);
    let when = fs::metadata(dir.join("estimates.json"))
        .and_then(|meta| meta.modified())
        .ok()
        .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |elapsed| elapsed.as_secs());
    let samples = fs::read_to_string(dir.join("sample.json")).unwrap_or_default();
    let spread = sample_spread(&samples).map(|(low, high)| (low / elements, high / elements));
    Some(Estimate { ns: iteration / elements, spread, elements, when })
}

/// The fastest and the slowest time per iteration among the samples of criterion's
/// `sample.json`: each sample times `iters[i]` iterations in `times[i]` nanoseconds.
fn sample_spread(samples: &str) -> Option<(f64, f64)> {
    let iters = numbers_after(samples, "\"iters\":[")?;
    let times = numbers_after(samples, "\"times\":[")?;
    let per_iteration = iters.iter().zip(&times).filter(|(iters, _)| **iters > 0.0);
    let (low, high) = per_iteration
        .map(|(iters, time)| time / iters)
        .fold((f64::INFINITY, 0.0_f64), |(low, high), each| (low.min(each), high.max(each)));
    (low.is_finite() && iters.len() == times.len()).then_some((low, high))
}

/// The numbers of the JSON array that follows the first `key` (which ends with its `[`).
fn numbers_after(text: &str, key: &str) -> Option<Vec<f64>> {
    let rest = &text[text.find(key)? + key.len()..];
    let list = &rest[..rest.find(']')?];
    list.split(',').map(|number| number.trim().parse().ok()).collect()
}

/// The number that follows the first `key` in `text`.
fn number_after(text: &str, key: &str) -> Option<f64> {
    let rest = &text[text.find(key)? + key.len()..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end].trim().parse().ok()
}

/// The lines of a tab-separated file after its header, split into fields.
fn tsv(path: &Path) -> Vec<Vec<String>> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter(|line| !line.trim().is_empty())
        .map(|line| line.split('\t').map(str::to_string).collect())
        .collect()
}

/// When a file was last written, in seconds since the epoch.
fn modified(path: &Path) -> Option<u64> {
    fs::metadata(path)
        .and_then(|meta| meta.modified())
        .ok()
        .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
        .map(|elapsed| elapsed.as_secs())
}

/// The hammer's figures: for each (workload, variant, processes), the million operations per
/// second and the CPU nanoseconds per operation of every run.
#[derive(Default)]
pub(super) struct Hammer {
    runs: BTreeMap<(String, String, usize), Vec<(f64, f64)>>,
    /// Million operations per second by (workload, variant, processes), then by run.
    by_run: BTreeMap<(String, String, usize), BTreeMap<usize, f64>>,
    pub(super) when: Option<u64>,
}

impl Hammer {
    pub(super) fn read(results: &Path) -> Self {
        let path = results.join("hammer.tsv");
        let mut hammer = Hammer { when: modified(&path), ..Hammer::default() };
        for fields in tsv(&path) {
            // Files from before the producer/consumer workload have no workload column: all
            // their lines are the mixed workload's.
            let (workload, rest) = match &fields[..] {
                [workload, rest @ ..] if rest.len() == 5 => (workload.as_str(), rest),
                rest => ("mixed", rest),
            };
            let [variant, processes, run, mops, cpu] = rest else { continue };
            let (Ok(processes), Ok(mops), Ok(cpu)) = (processes.parse(), mops.parse(), cpu.parse())
            else {
                continue;
            };
            let key = (workload.to_string(), variant.clone(), processes);
            if let Ok(run) = run.parse() {
                hammer.by_run.entry(key.clone()).or_default().insert(run, mops);
            }
            hammer.runs.entry(key).or_default().push((mops, cpu));
        }
        hammer
    }

    pub(super) fn processes(&self) -> Vec<usize> {
        let mut counts: Vec<usize> = self.runs.keys().map(|&(_, _, count)| count).collect();
        counts.sort_unstable();
        counts.dedup();
        counts
    }

    fn cell(&self, workload: &str, variant: &str, processes: usize) -> Option<&Vec<(f64, f64)>> {
        self.runs.get(&(workload.to_string(), variant.to_string(), processes))
    }

    /// The median million operations per second of a cell.
    pub(super) fn mops(&self, workload: &str, variant: &str, processes: usize) -> Option<f64> {
        let runs = self.cell(workload, variant, processes)?;
        Some(median(runs.iter().map(|&(mops, _)| mops).collect()))
    }

    /// The median CPU nanoseconds per operation of a cell.
    pub(super) fn cpu(&self, workload: &str, variant: &str, processes: usize) -> Option<f64> {
        let runs = self.cell(workload, variant, processes)?;
        Some(median(runs.iter().map(|&(_, cpu)| cpu).collect()))
    }

    /// The lowest and highest million operations per second of a cell.
    pub(super) fn spread(
        &self,
        workload: &str,
        variant: &str,
        processes: usize,
    ) -> Option<(f64, f64)> {
        let runs = self.cell(workload, variant, processes)?;
        let low = runs.iter().map(|&(mops, _)| mops).fold(f64::INFINITY, f64::min);
        let high = runs.iter().map(|&(mops, _)| mops).fold(0.0, f64::max);
        Some((low, high))
    }

    /// The ratio of two cells run by run (a run goes round every cell once, so its two cells
    /// ran under the same conditions): the median of the runs' ratios and their extremes.
    pub(super) fn ratio(
        &self,
        over: (&str, &str),
        under: (&str, &str),
        processes: usize,
    ) -> Option<Spread> {
        self.cell_ratio((over.0, over.1, processes), (under.0, under.1, processes))
    }

    /// How a variant's figure at `to` processes compares with its figure at `from`, run by run
    /// as [`ratio`](Hammer::ratio) compares two variants.
    pub(super) fn scaling(
        &self,
        (workload, variant): (&str, &str),
        from: usize,
        to: usize,
    ) -> Option<Spread> {
        self.cell_ratio((workload, variant, to), (workload, variant, from))
    }

    /// The median of the runs' ratios of cell `over` to cell `under`, each named by its
    /// workload, variant and count of processes, with their extremes.
    fn cell_ratio(&self, over: (&str, &str, usize), under: (&str, &str, usize)) -> Option<Spread> {
        let cell = |(workload, variant, processes): (&str, &str, usize)| {
            self.by_run.get(&(workload.to_string(), variant.to_string(), processes))
        };
        let (over, under) = (cell(over)?, cell(under)?);
        let ratios =
            over.iter().filter_map(|(run, a)| under.get(run).map(|b| a / b)).collect::<Vec<_>>();
        Spread::of(ratios)
    }

    pub(super) fn run_count(&self) -> usize {
        self.runs.values().map(Vec::len).max().unwrap_or(0)
    }
}

/// The median of some figures (the mean of the middle two for an even count).
fn median(mut figures: Vec<f64>) -> f64 {
    figures.sort_by(f64::total_cmp);
    let middle = figures.len() / 2;
    match figures.len() {
        0 => f64::NAN,
        len if len % 2 == 0 => (figures[middle - 1] + figures[middle]) / 2.0,
        _ => figures[middle],
    }
}

/// The median of some figures with the least and greatest of them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Spread {
    pub(super) median: f64,
    pub(super) min: f64,
    pub(super) max: f64,
}

impl Spread {
    /// The spread of `figures`, or `None` when there are none.
    fn of(figures: Vec<f64>) -> Option<Self> {
        let min = figures.iter().copied().reduce(f64::min)?;
        let max = figures.iter().copied().reduce(f64::max)?;
        Some(Spread { median: median(figures), min, max })
    }
}

/// The heap workloads that carry a target, timed for melon and glibc in interleaved rounds by
/// the `heap_targets` binary: each allocator's nanoseconds per pair, round by round.
#[derive(Default)]
pub(super) struct Interleaved {
    /// Nanoseconds per pair by (workload, allocator), then by round.
    ns: BTreeMap<(String, String), BTreeMap<usize, f64>>,
    /// Alloc+free pairs each allocator did per round, by workload.
    pairs: BTreeMap<String, u64>,
    pub(super) when: Option<u64>,
}

impl Interleaved {
    /// The figures `binary` (`heap_targets` or `shm_targets`) wrote to `<binary>.tsv`.
    pub(super) fn read(results: &Path, binary: &str) -> Self {
        let path = results.join(format!("{binary}.tsv"));
        let mut heap_targets = Interleaved { when: modified(&path), ..Interleaved::default() };
        for fields in tsv(&path) {
            let [workload, peer, round, ns, pairs] = &fields[..] else { continue };
            let (Ok(round), Ok(ns), Ok(pairs)) = (round.parse(), ns.parse(), pairs.parse()) else {
                continue;
            };
            let key = (workload.clone(), peer.clone());
            heap_targets.ns.entry(key).or_default().insert(round, ns);
            heap_targets.pairs.insert(workload.clone(), pairs);
        }
        heap_targets
    }

    /// Whether the run measured nothing.
    pub(super) fn is_empty(&self) -> bool {
        self.ns.is_empty()
    }

    /// An allocator's nanoseconds per pair over the rounds of a workload.
    pub(super) fn time(&self, workload: &str, peer: &str) -> Option<Spread> {
        let rounds = self.ns.get(&(workload.to_string(), peer.to_string()))?;
        Spread::of(rounds.values().copied().collect())
    }

    /// Each round's time of `peer` over `baseline`'s in the same round, over the rounds of a
    /// workload that both have, and how many such rounds there are.
    pub(super) fn ratio(
        &self,
        workload: &str,
        peer: &str,
        baseline: &str,
    ) -> Option<(Spread, usize)> {
        let own = self.ns.get(&(workload.to_string(), peer.to_string()))?;
        let base = self.ns.get(&(workload.to_string(), baseline.to_string()))?;
        let ratios: Vec<f64> =
            own.iter().filter_map(|(round, own)| base.get(round).map(|base| own / base)).collect();
        let rounds = ratios.len();
        Spread::of(ratios).map(|spread| (spread, rounds))
    }

    /// Alloc+free pairs per allocator per round of a workload.
    pub(super) fn pairs(&self, workload: &str) -> Option<u64> {
        self.pairs.get(workload).copied()
    }

    /// The figures of `lines` (`(workload, peer, ns per pair of each round)`), written as
    /// `binary` writes them to a directory of the test `test`'s own and read back.
    #[cfg(test)]
    pub(super) fn written(test: &str, binary: &str, lines: &[(&str, &str, &[f64])]) -> Self {
        use std::fmt::Write as _;
        let dir = std::env::temp_dir().join(format!("xtask-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        let mut tsv = String::from("workload\tpeer\tround\tns_per_pair\tpairs\n");
        for &(workload, peer, rounds) in lines {
            for (round, ns) in rounds.iter().enumerate() {
                let _ = writeln!(tsv, "{workload}\t{peer}\t{}\t{ns}\t3072000", round + 1);
            }
        }
        std::fs::write(dir.join(format!("{binary}.tsv")), tsv).expect("the figures' file");
        let figures = Self::read(&dir, binary);
        std::fs::remove_dir_all(&dir).expect("the scratch directory removed");
        figures
    }
}

/// The resident measurement: bytes per live block by (request size, allocator).
#[derive(Default)]
pub(super) struct Resident {
    pub(super) bytes: BTreeMap<(usize, String), f64>,
    pub(super) when: Option<u64>,
}

impl Resident {
    pub(super) fn read(results: &Path) -> Self {
        let path = results.join("resident.tsv");
        let mut resident = Resident { when: modified(&path), ..Resident::default() };
        for fields in tsv(&path) {
            let [size, allocator, bytes] = &fields[..] else { continue };
            if let (Ok(size), Ok(bytes)) = (size.parse(), bytes.parse()) {
                resident.bytes.insert((size, allocator.clone()), bytes);
            }
        }
        resident
    }

    pub(super) fn get(&self, size: usize, allocator: &str) -> Option<f64> {
        self.bytes.get(&(size, allocator.to_string())).copied()
    }

    pub(super) fn allocators(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for (_, name) in self.bytes.keys() {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        // The order the binary measures them in: melon first, glibc second.
        let rank = |name: &str| {
            ["melon", "glibc", "mimalloc_heap", "talc", "rlsf"]
                .iter()
                .position(|known| *known == name)
                .unwrap_or(usize::MAX)
        };
        names.sort_by_key(|name| rank(name));
        names
    }
}

/// The facts recorded by the run, by key.
pub(super) struct Facts(BTreeMap<String, String>);

impl Facts {
    pub(super) fn read(results: &Path) -> Self {
        let text = fs::read_to_string(results.join("machine.tsv")).unwrap_or_default();
        Facts(
            text.lines()
                .filter_map(|line| line.split_once('\t'))
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect(),
        )
    }

    pub(super) fn get(&self, key: &str) -> &str {
        self.0.get(key).map_or("", String::as_str)
    }

    pub(super) fn number(&self, key: &str) -> Option<u64> {
        self.get(key).parse().ok()
    }
}

/// Crate versions from `Cargo.lock`, by package name.
pub(super) fn locked_versions() -> BTreeMap<String, String> {
    let lock = fs::read_to_string(root().join("Cargo.lock")).unwrap_or_default();
    let mut versions = BTreeMap::new();
    let mut name = None;
    for line in lock.lines() {
        if let Some(value) = line.strip_prefix("name = ") {
            name = Some(value.trim_matches('"').to_string());
        } else if let (Some(value), Some(package)) = (line.strip_prefix("version = "), name.take())
        {
            versions.entry(package).or_insert_with(|| value.trim_matches('"').to_string());
        }
    }
    versions
}

/// The global-allocator comparison: one row per (threads, allocator), its fields as the
/// `global` binary wrote them (see its header line), and when it was measured.
#[derive(Default)]
pub(super) struct Global {
    pub(super) rows: Vec<GlobalRow>,
    pub(super) when: Option<u64>,
}

/// One (threads, allocator) of the global-allocator comparison.
pub(super) struct GlobalRow {
    pub(super) threads: u32,
    pub(super) allocator: String,
    pub(super) wall_ms: f64,
    /// Median, least and greatest of the rounds' wall time over glibc's.
    pub(super) wall_ratio: [f64; 3],
    pub(super) peak_mib: f64,
    /// Median, least and greatest of the rounds' peak resident memory over glibc's.
    pub(super) peak_ratio: [f64; 3],
}

impl Global {
    pub(super) fn read(results: &Path) -> Self {
        let path = results.join("global.tsv");
        let mut global = Global { when: modified(&path), ..Global::default() };
        for fields in tsv(&path) {
            let [threads, allocator, rest @ ..] = &fields[..] else { continue };
            let numbers: Vec<f64> = rest.iter().filter_map(|field| field.parse().ok()).collect();
            let Ok(threads) = threads.parse() else { continue };
            let [wall_ms, w1, w2, w3, peak_mib, p1, p2, p3] = numbers[..] else { continue };
            global.rows.push(GlobalRow {
                threads,
                allocator: allocator.clone(),
                wall_ms,
                wall_ratio: [w1, w2, w3],
                peak_mib,
                peak_ratio: [p1, p2, p3],
            });
        }
        global
    }

    pub(super) fn get(&self, threads: u32, allocator: &str) -> Option<&GlobalRow> {
        self.rows.iter().find(|row| row.threads == threads && row.allocator == allocator)
    }
}

/// The per-request comparison: one row per peer, its fields as the `per_request` binary wrote
/// them (see its header line), and when it was measured.
#[derive(Default)]
pub(super) struct PerRequest {
    pub(super) rows: Vec<PerRequestRow>,
    pub(super) when: Option<u64>,
}

/// One peer of the per-request comparison.
pub(super) struct PerRequestRow {
    pub(super) peer: String,
    pub(super) us_per_request: f64,
    /// Median, least and greatest of the rounds' time over the global allocator's.
    pub(super) ratio: [f64; 3],
    /// Bytes one request's pool held at its peak; 0 where there is no such pool.
    pub(super) bytes: f64,
    /// Median, least and greatest of the rounds' time over bumpalo's, where bumpalo ran.
    pub(super) to_bumpalo: Option<[f64; 3]>,
}

impl PerRequest {
    /// The comparison on the shared tokio runtime, from `per_request.tsv`.
    pub(super) fn read(results: &Path) -> Self {
        Self::read_file(results, "per_request.tsv")
    }

    /// The comparison on plain threads (`per_request --threads 2`).
    pub(super) fn read_on_threads(results: &Path) -> Self {
        Self::read_file(results, crate::bench::PER_REQUEST_THREADS_TSV)
    }

    fn read_file(results: &Path, name: &str) -> Self {
        let path = results.join(name);
        let mut per_request = PerRequest { when: modified(&path), ..PerRequest::default() };
        for fields in tsv(&path) {
            let [peer, rest @ ..] = &fields[..] else { continue };
            let numbers: Vec<f64> = rest.iter().filter_map(|field| field.parse().ok()).collect();
            let (&[us_per_request, r1, r2, r3, bytes], to_bumpalo) =
                numbers.split_at(5.min(numbers.len()))
            else {
                continue;
            };
            let to_bumpalo = match *to_bumpalo {
                [b1, b2, b3] if !b1.is_nan() => Some([b1, b2, b3]),
                _ => None,
            };
            per_request.rows.push(PerRequestRow {
                peer: peer.clone(),
                us_per_request,
                ratio: [r1, r2, r3],
                bytes,
                to_bumpalo,
            });
        }
        per_request
    }

    pub(super) fn get(&self, peer: &str) -> Option<&PerRequestRow> {
        self.rows.iter().find(|row| row.peer == peer)
    }
}

/// The firmware comparison: per peer, in the order measured, the bytes of its build's `.text`
/// and the figures its run printed.
#[derive(Default)]
pub(super) struct Firmware {
    pub(super) peers: Vec<FirmwarePeer>,
    pub(super) when: Option<u64>,
}

/// One allocator of the firmware comparison.
pub(super) struct FirmwarePeer {
    pub(super) name: String,
    pub(super) text_bytes: u64,
    figures: Vec<(String, u64)>,
}

impl FirmwarePeer {
    /// The figure the firmware printed as `name value`.
    pub(super) fn figure(&self, name: &str) -> Option<u64> {
        self.figures.iter().find(|(figure, _)| figure == name).map(|&(_, value)| value)
    }
}

impl Firmware {
    pub(super) fn read(results: &Path) -> Self {
        let path = results.join("firmware.tsv");
        let mut firmware = Firmware { when: modified(&path), ..Firmware::default() };
        for fields in tsv(&path) {
            let [peer, text, figure, value] = &fields[..] else { continue };
            let (Ok(text_bytes), Ok(value)) = (text.parse(), value.parse()) else { continue };
            if firmware.peers.last().is_none_or(|last| last.name != *peer) {
                firmware.peers.push(FirmwarePeer {
                    name: peer.clone(),
                    text_bytes,
                    figures: Vec::new(),
                });
            }
            if let Some(last) = firmware.peers.last_mut() {
                last.figures.push((figure.clone(), value));
            }
        }
        firmware
    }

    pub(super) fn get(&self, name: &str) -> Option<&FirmwarePeer> {
        self.peers.iter().find(|peer| peer.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spread_is_the_fastest_and_slowest_sample_per_iteration() {
        let samples =
            r#"{"sampling_mode":"Linear","iters":[10.0,20.0,30.0],"times":[50.0,80.0,180.0]}"#;
        assert_eq!(sample_spread(samples), Some((4.0, 6.0)));
    }

    /// The hammer's results read from a file of `rows` (workload, variant, processes, run and
    /// million operations a second) under its header.
    fn hammer_of(name: &str, rows: &[&str]) -> Hammer {
        let dir = std::env::temp_dir().join(format!("xtask-{name}-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let header = "workload\tvariant\tprocesses\trun\tmops\tcpu_ns_per_op";
        let lines: Vec<String> = core::iter::once(header.to_string())
            .chain(rows.iter().map(|row| format!("{row}\t1")))
            .collect();
        fs::write(dir.join("hammer.tsv"), lines.join("\n")).unwrap();
        let hammer = Hammer::read(&dir);
        fs::remove_dir_all(&dir).unwrap();
        hammer
    }

    /// A hammer ratio sets each run's cells against each other, not one cell's median against
    /// the other's: here the medians' ratio would be 10 / 10 = 1, while every run's is 2 or 0.5.
    #[test]
    fn a_hammer_ratio_is_the_median_of_the_runs_own() {
        let hammer = hammer_of(
            "ratio",
            &[
                "mixed\tshm\t2\t1\t20",
                "mixed\tglibc\t2\t1\t10",
                "mixed\tshm\t2\t2\t10",
                "mixed\tglibc\t2\t2\t5",
                "mixed\tshm\t2\t3\t5",
                "mixed\tglibc\t2\t3\t10",
            ],
        );
        let ratio = hammer.ratio(("mixed", "shm"), ("mixed", "glibc"), 2).unwrap();
        assert_eq!((ratio.median, ratio.min, ratio.max), (2.0, 0.5, 2.0));
        assert_eq!(hammer.mops("mixed", "shm", 2), Some(10.0));
        assert_eq!(hammer.mops("mixed", "glibc", 2), Some(10.0));
        assert!(hammer.ratio(("mixed", "shm"), ("mixed", "rts-alloc"), 2).is_none());
    }

    #[test]
    fn a_hammer_scaling_pairs_each_run_with_its_own_run_at_the_other_count() {
        let hammer = hammer_of(
            "scaling",
            &[
                "mixed\tshm-child\t2\t1\t90",
                "mixed\tshm-child\t4\t1\t99",
                "mixed\tshm-child\t2\t2\t100",
                "mixed\tshm-child\t4\t2\t95",
                "mixed\tshm-child\t2\t3\t80",
                "mixed\tshm-child\t4\t3\t84",
            ],
        );
        // The medians of the cells (90 at 2, 95 at 4) would give 1.056; each run's own ratio
        // is 1.1, 0.95 and 1.05.
        let scaling = hammer.scaling(("mixed", "shm-child"), 2, 4).unwrap();
        assert_eq!((scaling.median, scaling.min, scaling.max), (1.05, 0.95, 1.1));
        assert!(hammer.scaling(("mixed", "shm-child"), 2, 16).is_none());
    }

    #[test]
    fn samples_that_do_not_pair_up_give_no_spread() {
        assert_eq!(sample_spread(r#"{"iters":[10.0,20.0],"times":[50.0]}"#), None);
        assert_eq!(sample_spread(r#"{"iters":[],"times":[]}"#), None);
        assert_eq!(sample_spread(""), None);
    }
}
