//! LZ4 frames (the `compressed: true` values), inflated block by block.
//!
//! Part of the decode stage, and pure like it. The frame format is read
//! here rather than through `lz4_flex::frame::FrameDecoder`: that decoder
//! zeroes a buffer of the frame's maximum block size (64 KiB at least) for
//! every frame, and a market-data message inflates to a few hundred bytes,
//! so the zeroing took three quarters of the time spent on LZ4 in profiles
//! of the drain. Here each block is inflated with `lz4_flex::block` into a
//! buffer each thread keeps, and copied out. `FrameDecoder` stays the
//! reference that the tests and the `lz4` fuzz target compare against.
//!
//! Frames are checked as strictly as `FrameDecoder` checks them (version,
//! reserved bits, header checksum, block sizes, block and content
//! checksums, content size), and more: the value must be exactly one
//! frame, ending with its end mark and checksum at the last byte.

use std::cell::RefCell;
use std::hash::Hasher;

use lz4_flex::block::DecompressError;
use twox_hash::XxHash32;

use super::DecodeError;

/// The magic number that opens an LZ4 frame.
pub const MAGIC: [u8; 4] = [0x04, 0x22, 0x4D, 0x18];

/// How far back a match of a linked block may reach into earlier blocks.
const WINDOW: usize = 64 * 1024;

// The frame descriptor's FLG byte.
const FLG_VERSION_MASK: u8 = 0b1100_0000;
const FLG_VERSION_01: u8 = 0b0100_0000;
const FLG_INDEPENDENT_BLOCKS: u8 = 0b0010_0000;
const FLG_BLOCK_CHECKSUMS: u8 = 0b0001_0000;
const FLG_CONTENT_SIZE: u8 = 0b0000_1000;
const FLG_CONTENT_CHECKSUM: u8 = 0b0000_0100;
const FLG_RESERVED: u8 = 0b0000_0010;
const FLG_DICTIONARY_ID: u8 = 0b0000_0001;
// The BD byte: bits 4-6 give the maximum block size, the others are reserved.
const BD_RESERVED: u8 = 0b1000_1111;
// A block's size word: the high bit marks a block stored uncompressed.
const BLOCK_UNCOMPRESSED: u32 = 0x8000_0000;

thread_local! {
    /// Where blocks are inflated before they are copied out: kept per thread,
    /// so that its zeroing is paid once, not per message. It grows to the
    /// largest block a frame may hold, bounded by `max_value_bytes`.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// What the frame descriptor says.
struct Descriptor {
    max_block: usize,
    linked: bool,
    block_checksums: bool,
    content_checksum: bool,
    content_size: Option<u64>,
    /// Where the first block starts.
    len: usize,
}

/// Inflates a value that is one LZ4 frame, refusing one that would grow
/// past `limit` bytes.
pub fn inflate(frame: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    if !frame.starts_with(&MAGIC) {
        return Err(DecodeError::NotLz4Frame);
    }
    let truncated = || truncated(frame);
    let descriptor = descriptor(frame)?;
    let word = |at: usize| {
        frame
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(truncated)
    };

    let mut out = Vec::with_capacity(frame.len().saturating_mul(4).min(limit));
    let mut content = descriptor.content_checksum.then(|| XxHash32::with_seed(0));
    let mut at = descriptor.len;
    loop {
        let size_word = word(at)?;
        let block_at = at;
        at += 4;
        if size_word == 0 {
            break;
        }
        let size = (size_word & !BLOCK_UNCOMPRESSED) as usize;
        if size > descriptor.max_block {
            return Err(DecodeError::Lz4(format!(
                "block at byte offset {block_at} holds {size} bytes, more than the frame's maximum block size ({})",
                descriptor.max_block
            )));
        }
        let data = frame.get(at..at + size).ok_or_else(truncated)?;
        at += size;
        if descriptor.block_checksums {
            let expected = word(at)?;
            at += 4;
            if XxHash32::oneshot(0, data) != expected {
                return Err(DecodeError::Lz4(format!(
                    "block at byte offset {block_at}: checksum mismatch"
                )));
            }
        }
        let start = out.len();
        let room = limit - start;
        if size_word & BLOCK_UNCOMPRESSED != 0 {
            if size > room {
                return Err(DecodeError::TooLarge { limit });
            }
            out.extend_from_slice(data);
        } else {
            let capacity = descriptor.max_block.min(room);
            SCRATCH.with_borrow_mut(|scratch| {
                if scratch.len() < capacity {
                    scratch.resize(capacity, 0);
                }
                let output = &mut scratch[..capacity];
                let inflated = if descriptor.linked && start > 0 {
                    let dict = &out[start.saturating_sub(WINDOW)..];
                    lz4_flex::block::decompress_into_with_dict(data, output, dict)
                } else {
                    lz4_flex::block::decompress_into(data, output)
                };
                match inflated {
                    Ok(n) => {
                        out.extend_from_slice(&output[..n]);
                        Ok(())
                    }
                    Err(DecompressError::OutputTooSmall { .. })
                        if capacity < descriptor.max_block =>
                    {
                        Err(DecodeError::TooLarge { limit })
                    }
                    Err(e) => Err(DecodeError::Lz4(format!(
                        "block at byte offset {block_at}: {e}"
                    ))),
                }
            })?;
        }
        if let Some(hasher) = &mut content {
            hasher.write(&out[start..]);
        }
    }
    if let Some(expected) = descriptor.content_size
        && expected != out.len() as u64
    {
        return Err(DecodeError::Lz4(format!(
            "the frame declares {expected} bytes of content but holds {}",
            out.len()
        )));
    }
    if let Some(hasher) = content {
        let expected = word(at)?;
        at += 4;
        if hasher.finish_32() != expected {
            return Err(DecodeError::Lz4("content checksum mismatch".to_owned()));
        }
    }
    if at < frame.len() {
        return Err(DecodeError::Lz4(format!(
            "{} bytes after the end of the frame (at byte offset {at})",
            frame.len() - at
        )));
    }
    Ok(out)
}

/// The frame ends before its end mark (or a part it announced).
fn truncated(frame: &[u8]) -> DecodeError {
    DecodeError::Lz4(format!("frame truncated at byte offset {}", frame.len()))
}

/// Reads the frame descriptor that follows the magic number.
fn descriptor(frame: &[u8]) -> Result<Descriptor, DecodeError> {
    let truncated = || truncated(frame);
    let (&flg, &bd) = frame.get(4).zip(frame.get(5)).ok_or_else(truncated)?;
    if flg & FLG_VERSION_MASK != FLG_VERSION_01 {
        return Err(DecodeError::Lz4(format!(
            "unsupported frame version {}",
            (flg & FLG_VERSION_MASK) >> 6
        )));
    }
    if flg & FLG_RESERVED != 0 || bd & BD_RESERVED != 0 {
        return Err(DecodeError::Lz4(
            "reserved bits are set in the frame descriptor".to_owned(),
        ));
    }
    if flg & FLG_DICTIONARY_ID != 0 {
        return Err(DecodeError::Lz4(
            "frames with a dictionary are not supported".to_owned(),
        ));
    }
    let max_block = match bd >> 4 {
        4 => 64 * 1024,
        5 => 256 * 1024,
        6 => 1024 * 1024,
        7 => 4 * 1024 * 1024,
        other => {
            return Err(DecodeError::Lz4(format!(
                "unsupported maximum block size code {other}"
            )));
        }
    };
    let mut len = 6;
    let content_size = if flg & FLG_CONTENT_SIZE != 0 {
        let bytes = frame.get(6..14).ok_or_else(truncated)?;
        len += 8;
        let mut size = [0; 8];
        size.copy_from_slice(bytes);
        Some(u64::from_le_bytes(size))
    } else {
        None
    };
    let &checksum = frame.get(len).ok_or_else(truncated)?;
    if (XxHash32::oneshot(0, &frame[4..len]) >> 8) as u8 != checksum {
        return Err(DecodeError::Lz4(
            "frame descriptor checksum mismatch".to_owned(),
        ));
    }
    Ok(Descriptor {
        max_block,
        linked: flg & FLG_INDEPENDENT_BLOCKS == 0,
        block_checksums: flg & FLG_BLOCK_CHECKSUMS != 0,
        content_checksum: flg & FLG_CONTENT_CHECKSUM != 0,
        content_size,
        len: len + 1,
    })
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use lz4_flex::frame::{BlockMode, BlockSize, FrameDecoder, FrameEncoder, FrameInfo};

    use super::*;

    const LIMIT: usize = 8 * 1024 * 1024;

    fn frame(data: &[u8], info: &FrameInfo) -> Vec<u8> {
        let mut encoder = FrameEncoder::with_frame_info(info.clone(), Vec::new());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn reference(frame: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        FrameDecoder::new(frame).read_to_end(&mut out)?;
        Ok(out)
    }

    /// 600 KB: random bytes first (blocks stored uncompressed), then JSON
    /// between random bytes (compressed blocks), with repeats far enough
    /// apart that linked blocks refer back into earlier ones.
    fn sample() -> Vec<u8> {
        let mut data = Vec::new();
        let mut x: u32 = 0x9E37_79B9;
        while data.len() < 600_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            if data.len() > 150_000 && x.is_multiple_of(3) {
                let line = format!(
                    "{{\"coinId\":\"c{}\",\"usdPrice\":\"{}.{}\"}}",
                    x % 50,
                    x % 997,
                    x % 89
                );
                data.extend_from_slice(line.as_bytes());
            } else {
                data.extend_from_slice(&x.to_le_bytes());
            }
        }
        data
    }

    /// Every layout lz4_flex writes; with the content size `len` where a
    /// layout declares it.
    fn infos(len: usize) -> Vec<FrameInfo> {
        let mut all = Vec::new();
        for block_size in [BlockSize::Max64KB, BlockSize::Max256KB] {
            for block_mode in [BlockMode::Independent, BlockMode::Linked] {
                for flags in 0..8u8 {
                    all.push(
                        FrameInfo::new()
                            .block_size(block_size)
                            .block_mode(block_mode)
                            .block_checksums(flags & 1 != 0)
                            .content_checksum(flags & 2 != 0)
                            .content_size((flags & 4 != 0).then_some(len as u64)),
                    );
                }
            }
        }
        all
    }

    #[test]
    fn inflates_what_lz4_flex_writes_in_every_frame_layout() {
        let data = sample();
        for (len, info) in [0, 1, 300, data.len()]
            .into_iter()
            .flat_map(|len| infos(len).into_iter().map(move |i| (len, i)))
        {
            let frame = frame(&data[..len], &info);
            let inflated =
                inflate(&frame, LIMIT).unwrap_or_else(|e| panic!("{len} bytes, {info:?}: {e}"));
            assert_eq!(inflated, &data[..len], "{len} bytes, {info:?}");
            assert_eq!(reference(&frame).unwrap(), inflated);
        }
        // Both kinds of block were met.
        let whole = frame(&data, &FrameInfo::new().block_size(BlockSize::Max64KB));
        let (mut stored, mut compressed, mut at) = (0, 0, 7);
        loop {
            let word = u32::from_le_bytes(whole[at..at + 4].try_into().unwrap());
            if word == 0 {
                break;
            }
            if word & BLOCK_UNCOMPRESSED != 0 {
                stored += 1;
            } else {
                compressed += 1;
            }
            at += 4 + (word & !BLOCK_UNCOMPRESSED) as usize;
        }
        assert!(
            stored > 0 && compressed > 0,
            "{stored} stored, {compressed} compressed"
        );
    }

    #[test]
    fn refuses_what_is_not_exactly_one_intact_frame() {
        let data = sample();
        let info = FrameInfo::new()
            .block_mode(BlockMode::Linked)
            .block_checksums(true)
            .content_checksum(true)
            .content_size(Some(data.len() as u64));
        let whole = frame(&data, &info);
        // Any one byte changed, at a spread of places, is caught (by a
        // checksum, a size or the block format) and never panics.
        for at in (4..whole.len())
            .step_by(997)
            .chain([4, 5, 6, 13, 14, whole.len() - 1])
        {
            let mut bad = whole.clone();
            bad[at] ^= 0x41;
            assert!(
                matches!(inflate(&bad, LIMIT), Err(DecodeError::Lz4(_))),
                "byte {at}"
            );
        }
        for cut in [5, 6, 14, 15, 19, 100, whole.len() - 4, whole.len() - 1] {
            let Err(DecodeError::Lz4(message)) = inflate(&whole[..cut], LIMIT) else {
                panic!("cut at {cut}");
            };
            assert!(message.contains("truncated"), "cut at {cut}: {message}");
        }
        let mut longer = whole.clone();
        longer.extend_from_slice(&whole);
        let Err(DecodeError::Lz4(message)) = inflate(&longer, LIMIT) else {
            panic!("two frames");
        };
        assert!(message.contains("after the end of the frame"), "{message}");
        assert_eq!(inflate(b"{\"a\":1}", LIMIT), Err(DecodeError::NotLz4Frame));
        // A byte changed in a block stored uncompressed (the data opens
        // with random bytes) is caught by the checksum that covers it.
        for (block, content, caught) in [
            (true, false, "block at byte offset 7: checksum"),
            (false, true, "content checksum"),
        ] {
            let info = FrameInfo::new()
                .block_size(BlockSize::Max64KB)
                .block_checksums(block)
                .content_checksum(content);
            let mut bad = frame(&data, &info);
            assert_ne!(
                u32::from_le_bytes(bad[7..11].try_into().unwrap()) & BLOCK_UNCOMPRESSED,
                0
            );
            bad[111] ^= 1;
            let Err(DecodeError::Lz4(message)) = inflate(&bad, LIMIT) else {
                panic!("{info:?}");
            };
            assert!(message.contains(caught), "{message}");
        }
        // A content size that disagrees with the content, under a valid
        // descriptor checksum.
        let mut lying = frame(&data[..1000], &FrameInfo::new().content_size(Some(1000)));
        lying[6..14].copy_from_slice(&999u64.to_le_bytes());
        lying[14] = (XxHash32::oneshot(0, &lying[4..14]) >> 8) as u8;
        assert!(
            matches!(inflate(&lying, LIMIT), Err(DecodeError::Lz4(m)) if m.contains("declares 999"))
        );
    }

    #[test]
    fn stops_at_the_limit() {
        let data = sample();
        for info in infos(data.len()) {
            let frame = frame(&data, &info);
            assert_eq!(inflate(&frame, data.len()).map(|v| v.len()), Ok(data.len()));
            assert_eq!(
                inflate(&frame, data.len() - 1),
                Err(DecodeError::TooLarge {
                    limit: data.len() - 1
                }),
                "{info:?}"
            );
            assert_eq!(
                inflate(&frame, 10),
                Err(DecodeError::TooLarge { limit: 10 })
            );
        }
    }
}
