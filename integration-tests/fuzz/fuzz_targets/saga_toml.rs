//! Fuzz target `saga_toml`: see [`choreo_fuzz::saga_toml`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| choreo_fuzz::saga_toml::run(data));
