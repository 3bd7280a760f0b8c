//! Fuzz target `ingest`: see [`choreo_fuzz::ingest`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| choreo_fuzz::ingest::run(data));
