//! The LZ4 frame reader against lz4_flex's own `FrameDecoder`, both ways:
//! - any bytes: whatever `inflate_lz4_frame` accepts, `FrameDecoder` reads to the
//!   same content (it accepts more: a frame cut at a block boundary, bytes
//!   after the frame);
//! - any content, framed by `FrameEncoder` in the layout the first byte
//!   selects: `inflate_lz4_frame` gives the content back.
#![no_main]

use std::io::{Read, Write};

use lz4_flex::frame::{BlockMode, BlockSize, FrameDecoder, FrameEncoder, FrameInfo};
use timesink::pipeline::DecodeError;
use timesink::pipeline::inflate_lz4_frame;

const LIMIT: usize = 1 << 20;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    if selector & 0x80 == 0 {
        if let Ok(inflated) = inflate_lz4_frame(rest, LIMIT) {
            // Not `read_to_end`: `FrameDecoder::read` returns 0 for a block
            // that inflates to nothing, as at the end; it goes on after it.
            let mut decoder = FrameDecoder::new(rest);
            let (mut reference, mut chunk) = (Vec::new(), [0; 4096]);
            loop {
                let n = decoder
                    .read(&mut chunk)
                    .expect("FrameDecoder refuses a frame inflate accepted");
                if n == 0 && decoder.get_ref().is_empty() {
                    break;
                }
                reference.extend_from_slice(&chunk[..n]);
            }
            assert_eq!(inflated, reference);
        }
        return;
    }
    let info = FrameInfo::new()
        .block_size(if selector & 1 == 0 {
            BlockSize::Max64KB
        } else {
            BlockSize::Max256KB
        })
        .block_mode(if selector & 2 == 0 {
            BlockMode::Independent
        } else {
            BlockMode::Linked
        })
        .block_checksums(selector & 4 != 0)
        .content_checksum(selector & 8 != 0)
        .content_size((selector & 16 != 0).then_some(rest.len() as u64));
    let mut encoder = FrameEncoder::with_frame_info(info, Vec::new());
    encoder.write_all(rest).expect("encoding to memory");
    let frame = encoder.finish().expect("encoding to memory");
    match inflate_lz4_frame(&frame, LIMIT) {
        Ok(inflated) => assert_eq!(inflated, rest),
        Err(DecodeError::TooLarge { .. }) => assert!(rest.len() > LIMIT),
        Err(e) => panic!("inflate refuses lz4_flex's frame: {e}"),
    }
});
