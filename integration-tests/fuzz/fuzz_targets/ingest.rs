//! Fuzz target `ingest`: see [`choreo_fuzz::ingest`].
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: choreo_fuzz::seeds::write_when_asked("ingest"),
    |data: &[u8]| choreo_fuzz::ingest::run(data)
);
