//! Header parsing: any names and values (absent, non-UTF-8, repeated), then
//! the value they describe.
//!
//! Input layout: a selector byte, then headers as
//! `name_len value_len(0xff = absent) name value`, until a 0 name length;
//! the rest is the value.
#![no_main]

#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&selector, mut rest)) = data.split_first() else {
        return;
    };
    let mut headers = Vec::new();
    while let [name_len, value_len, tail @ ..] = rest {
        let name_len = usize::from(*name_len);
        if name_len == 0 {
            rest = tail;
            break;
        }
        let value_len = (*value_len != 0xff).then_some(usize::from(*value_len));
        let need = name_len + value_len.unwrap_or(0);
        if tail.len() < need {
            return;
        }
        let name = String::from_utf8_lossy(&tail[..name_len]).into_owned();
        let value = value_len.map(|n| tail[name_len..name_len + n].to_vec());
        headers.push((name, value));
        rest = &tail[need..];
    }
    common::run(common::data_type(selector), headers, rest);
});
