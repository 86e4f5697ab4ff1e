//! Shared by the benchmarks.
#![allow(dead_code)]

/// Touches `FJORD_BENCH_PREFAULT_GIB` GiB of memory (default 16) once and frees it.
///
/// The VMs this project is measured on back guest memory lazily: the first touch of a page
/// costs about 9 µs (3 GiB took 7.1 s; touching them again took 0.25 s). A benchmark that writes
/// gigabytes into fresh page cache would measure that instead of the code, so the benchmarks
/// touch memory once first. `FJORD_BENCH_PREFAULT_GIB=0` skips it, to see the difference.
pub fn prefault_memory() {
    let gib: usize =
        std::env::var("FJORD_BENCH_PREFAULT_GIB").ok().and_then(|v| v.parse().ok()).unwrap_or(16);
    let mut chunk: Vec<Vec<u8>> = Vec::new();
    for _ in 0..gib {
        let mut block = vec![0u8; 1 << 30];
        for i in (0..block.len()).step_by(4096) {
            block[i] = 1;
        }
        chunk.push(block);
    }
    std::hint::black_box(&chunk);
}
