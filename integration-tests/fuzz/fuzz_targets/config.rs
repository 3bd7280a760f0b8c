//! Fuzz target `config`: see [`choreo_fuzz::config`].
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: choreo_fuzz::seeds::write_when_asked("config"),
    |data: &[u8]| choreo_fuzz::config::run(data)
);
