//! Fuzz target `registry`: see [`choreo_fuzz::registry`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| choreo_fuzz::registry::run(data));
