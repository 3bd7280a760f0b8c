//! Fuzz target `saga_toml`: see [`choreo_fuzz::saga_toml`].
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: choreo_fuzz::seeds::write_when_asked("saga_toml"),
    |data: &[u8]| choreo_fuzz::saga_toml::run(data)
);
