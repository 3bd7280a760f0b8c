//! Fuzz target `wire_decode`: see [`choreo_fuzz::wire_decode`].
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: choreo_fuzz::seeds::write_when_asked("wire_decode"),
    |data: &[u8]| choreo_fuzz::wire_decode::run(data)
);
