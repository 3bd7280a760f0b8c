//! Fuzz target `registry`: see [`choreo_fuzz::registry`].
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: choreo_fuzz::seeds::write_when_asked("registry"),
    |data: &[u8]| choreo_fuzz::registry::run(data)
);
