//! A consumed message's headers, read from librdkafka directly: the one
//! place that reads librdkafka's memory by hand (`unsafe`), kept small.

use rdkafka::types::RDKafkaRespErr;

/// The headers of a consumed message, read from librdkafka directly.
///
/// Not through rdkafka's `Headers::get`: it panics on a header name that is
/// not UTF-8, and any producer can send one. Such a name is read with
/// U+FFFD in place of its invalid bytes; the value stays byte for byte.
#[derive(Clone, Copy)]
pub struct NativeHeaders<'m> {
    /// Null when the message has no headers.
    headers: *const rdkafka::bindings::rd_kafka_headers_t,
    next: usize,
    /// The headers live as long as the message they were read from.
    message: std::marker::PhantomData<&'m ()>,
}

impl<'m> NativeHeaders<'m> {
    pub fn of(m: &'m rdkafka::message::BorrowedMessage<'_>) -> NativeHeaders<'m> {
        let mut headers = std::ptr::null_mut();
        // SAFETY: `m.ptr()` is the live message `m` wraps; librdkafka only
        // writes the headers pointer (or returns an error and leaves it).
        let found = unsafe { rdkafka::bindings::rd_kafka_message_headers(m.ptr(), &mut headers) };
        if found != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
            headers = std::ptr::null_mut();
        }
        NativeHeaders {
            headers,
            next: 0,
            message: std::marker::PhantomData,
        }
    }
}

impl<'m> Iterator for NativeHeaders<'m> {
    type Item = (std::borrow::Cow<'m, str>, Option<&'m [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.headers.is_null() {
            return None;
        }
        let (mut name, mut value, mut size) = (std::ptr::null(), std::ptr::null(), 0usize);
        // SAFETY: `headers` belongs to the message borrowed for 'm, which
        // owns it; librdkafka writes the three out-pointers or fails.
        let found = unsafe {
            rdkafka::bindings::rd_kafka_header_get_all(
                self.headers,
                self.next,
                &mut name,
                &mut value,
                &mut size,
            )
        };
        if found != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
            return None;
        }
        self.next += 1;
        // SAFETY: librdkafka keeps each header name NUL-terminated and its
        // value `size` bytes long, both inside the message's headers.
        let (name, value) = unsafe {
            (
                std::ffi::CStr::from_ptr(name).to_bytes(),
                (!value.is_null()).then(|| std::slice::from_raw_parts(value.cast::<u8>(), size)),
            )
        };
        // Checked first as it is (the case of every name a client sends):
        // `from_utf8_lossy` walks it in chunks, several times slower.
        let name = match std::str::from_utf8(name) {
            Ok(name) => std::borrow::Cow::Borrowed(name),
            Err(_) => String::from_utf8_lossy(name),
        };
        Some((name, value))
    }
}
