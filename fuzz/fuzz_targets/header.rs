//! Fuzz the header frame codec: `Header::decode` must never panic on any
//! bytes, and whatever it accepts must round-trip: its encoding decodes to
//! the same header, and that encoding is a fixed point of decode + encode.
//!
//! Each input is tried as a whole frame and also behind a valid magic and
//! version prefix, so the fuzzer spends its time in the postcard body.
//! (The accepted frame need not be the encoding byte for byte: postcard
//! also accepts over-long varints.)

#![no_main]

use libfuzzer_sys::fuzz_target;
use mensageria::header::{is_header, Header, MAGIC, VERSION};

fn check(frame: &[u8]) {
    if let Ok(header) = Header::decode(frame) {
        assert!(is_header(frame), "decoded a frame without the magic prefix");
        let encoded = header.encode();
        let again = Header::decode(&encoded).expect("an encoded header must decode");
        assert_eq!(again, header, "a re-encoded header must decode to itself");
        assert_eq!(again.encode(), encoded, "encode must be a fixed point");
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut framed = Vec::with_capacity(data.len() + MAGIC.len() + 1);
    framed.extend_from_slice(&MAGIC);
    framed.push(VERSION);
    framed.extend_from_slice(data);
    check(&framed);
});
