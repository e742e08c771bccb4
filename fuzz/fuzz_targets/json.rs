//! JSON values (bare records, envelopes, arrays) of every data type.
#![no_main]

#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&selector, value)) = data.split_first() else {
        return;
    };
    common::run(common::data_type(selector), Vec::new(), value);
});
