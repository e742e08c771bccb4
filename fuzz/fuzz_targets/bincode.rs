//! bincode 2 (standard configuration) records of every data type.
#![no_main]

#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&selector, value)) = data.split_first() else {
        return;
    };
    let headers = vec![common::header("content-type", "application/x-bincode")];
    common::run(common::data_type(selector), headers, value);
});
