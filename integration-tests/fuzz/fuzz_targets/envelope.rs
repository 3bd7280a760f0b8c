//! Fuzz target `envelope`: see [`choreo_fuzz::envelope`].
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: {
        choreo_fuzz::seeds::write_when_asked("envelope");
        choreo_fuzz::envelope::init();
    },
    |data: &[u8]| choreo_fuzz::envelope::run(data)
);
