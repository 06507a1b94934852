//! The fuzz targets' smoke, run by every test run (and so by CI): each target's
//! function over every file of its seed corpus (`fuzz/corpus/<target>/`) and of
//! its kept crash inputs (`fuzz/regressions/<target>/`), then over thousands of
//! deterministic mutations of them (bit flips, interesting bytes, truncations,
//! splices, repeats). No libFuzzer and no coverage feedback: a quick check that
//! no known input and no near neighbour panics, on the workspace's one build.
//! `scripts/fuzz` runs the real fuzzer.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

/// Mutated inputs tried per target, unless `CONCLAVE_FUZZ_SMOKE_MUTATIONS`
/// asks for another number (a longer unguided run, where cargo-fuzz cannot).
pub const MUTATIONS_PER_TARGET: usize = 3000;

fn mutations_per_target() -> usize {
    match std::env::var("CONCLAVE_FUZZ_SMOKE_MUTATIONS") {
        Ok(count) => count
            .parse()
            .unwrap_or_else(|_| panic!("CONCLAVE_FUZZ_SMOKE_MUTATIONS={count} is not a count")),
        Err(_) => MUTATIONS_PER_TARGET,
    }
}

/// The repository's `fuzz/` folder.
fn fuzz_folder() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of `folder`, sorted by name (each a whole input).
fn inputs_in(folder: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return Vec::new();
    };
    let mut inputs: Vec<(String, Vec<u8>)> = entries
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.is_file())
        .map(|path| {
            let bytes = std::fs::read(&path)
                .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
            (path.display().to_string(), bytes)
        })
        .collect();
    inputs.sort();
    inputs
}

/// A small deterministic generator (SplitMix64): the same mutations every run,
/// so a failure repeats.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `bound` (which must not be 0).
    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }
}

/// Bytes a decoder often treats specially: zero, limits, lengths' high bits.
const INTERESTING: [u8; 8] = [0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff, 0x40, 0x3f];

/// One to four mutations of `input`, with `other` (another input) for splices.
fn mutate(random: &mut SplitMix, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut data = input.to_vec();
    for _ in 0..=random.below(4) {
        match random.below(7) {
            0 if !data.is_empty() => {
                let at = random.below(data.len());
                data[at] ^= 1 << random.below(8);
            }
            1 if !data.is_empty() => {
                let at = random.below(data.len());
                data[at] = INTERESTING[random.below(INTERESTING.len())];
            }
            2 if !data.is_empty() => {
                data.truncate(random.below(data.len()));
            }
            3 => {
                // This input's start, the other's end.
                let cut = random.below(data.len() + 1);
                let other_cut = random.below(other.len() + 1);
                data.truncate(cut);
                data.extend_from_slice(&other[other_cut..]);
            }
            4 if !data.is_empty() => {
                // A chunk repeated in place.
                let start = random.below(data.len());
                let end = start + random.below((data.len() - start).min(64)) + 1;
                let chunk = data[start..end].to_vec();
                data.splice(start..start, chunk);
            }
            5 => {
                let at = random.below(data.len() + 1);
                let byte = (random.next() & 0xff) as u8;
                data.insert(at, byte);
            }
            _ if !data.is_empty() => {
                let at = random.below(data.len());
                data.remove(at);
            }
            _ => data.push(INTERESTING[random.below(INTERESTING.len())]),
        }
    }
    data
}

/// Runs `function` (a fuzz target's body) over the target's corpus, its kept
/// crash inputs and [`MUTATIONS_PER_TARGET`] mutations of them. Panics if the
/// corpus is missing or empty, or if any input panics: then the inputs that
/// did are written to a temporary folder, named in the message, to be kept in
/// `fuzz/regressions/<target>/` with the fix.
pub fn run(target: &str, function: fn(&[u8])) {
    let corpus_folder = fuzz_folder().join("corpus").join(target);
    let mut inputs = inputs_in(&corpus_folder);
    assert!(
        !inputs.is_empty(),
        "the seed corpus of fuzz target {target} ({}) is missing or empty; \
         `scripts/fuzz seeds` makes it",
        corpus_folder.display()
    );
    inputs.extend(inputs_in(&fuzz_folder().join("regressions").join(target)));

    let mut failures = Vec::new();
    let mut attempt = |name: String, data: &[u8]| {
        if catch_unwind(AssertUnwindSafe(|| function(data))).is_err() {
            failures.push((name, data.to_vec()));
        }
    };
    for (name, data) in &inputs {
        attempt(name.clone(), data);
    }
    // Seeded by the target's name: each target its own sequence, every run alike.
    let seed = target
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3)
        });
    let mut random = SplitMix(seed);
    for mutation in 0..mutations_per_target() {
        let input = &inputs[random.below(inputs.len())].1;
        let other = &inputs[random.below(inputs.len())].1;
        let data = mutate(&mut random, input, other);
        attempt(format!("mutation {mutation}"), &data);
    }

    if !failures.is_empty() {
        let folder = std::env::temp_dir().join(format!("conclave-fuzz-smoke-{target}"));
        std::fs::create_dir_all(&folder).expect("a temporary folder");
        let names: Vec<String> = failures
            .iter()
            .enumerate()
            .map(|(index, (name, data))| {
                let path = folder.join(format!("failure-{index}"));
                std::fs::write(&path, data).expect("a temporary file");
                format!("{name} -> {}", path.display())
            })
            .collect();
        panic!(
            "fuzz target {target} panicked on {} input(s); keep each in fuzz/regressions/{target}/ \
             with its fix:\n{}",
            failures.len(),
            names.join("\n")
        );
    }
}
