//! Fuzz target `envelope`: see [`choreo_fuzz::envelope`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| choreo_fuzz::envelope::run(data));
