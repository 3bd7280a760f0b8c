//! Fuzz target `config`: see [`choreo_fuzz::config`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| choreo_fuzz::config::run(data));
