//! Fuzz target `wire_decode`: see [`choreo_fuzz::wire_decode`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| choreo_fuzz::wire_decode::run(data));
