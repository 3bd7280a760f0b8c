//! Fuzz target `traceparent`: see [`choreo_fuzz::traceparent`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| choreo_fuzz::traceparent::run(data));
