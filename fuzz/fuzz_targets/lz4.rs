//! LZ4 frames, and whatever they inflate to (JSON or bincode).
#![no_main]

#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&selector, value)) = data.split_first() else {
        return;
    };
    let content_type = if selector & 0x80 == 0 {
        "application/json"
    } else {
        "application/x-bincode"
    };
    let headers = vec![
        common::header("compressed", "true"),
        common::header("content-type", content_type),
    ];
    common::run(common::data_type(selector), headers, value);
});
