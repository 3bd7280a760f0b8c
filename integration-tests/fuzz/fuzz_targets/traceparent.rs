//! Fuzz target `traceparent`: see [`choreo_fuzz::traceparent`].
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: choreo_fuzz::seeds::write_when_asked("traceparent"),
    |data: &[u8]| choreo_fuzz::traceparent::run(data)
);
