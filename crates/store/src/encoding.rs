//! The journal's data on disk (issue 27 item 4): a compact binary encoding of each row's
//! JSON, zstd with a dictionary built into the binary, so that a journal row of about
//! 500 bytes of JSON takes about 60.
//!
//! A journal row's JSON repeats the same keys and shapes on every step (the step, its
//! effect, the contact's snapshot in an `enter` effect or a condition's reads), and a row
//! is too small for a compressor to learn them from the row itself (plain zstd halves
//! it); a dictionary trained on journal rows holds them once for all
//! (`journal-v1.dict`, trained by `scripts/journal-dict.py`, see its header).
//!
//! Stored data is `[TAG_ZSTD_V1] + zstd frame` (the frame carries the JSON's length).
//! JSON text never starts with that byte, so rows written before this encoding (plain
//! JSON text) are still read as they are ([`decode`]). A later dictionary takes a new tag;
//! this one must never change, since rows written with it are read with it.

use std::cell::RefCell;
use std::sync::OnceLock;

use serde_json::Value;
use zstd::bulk::{Compressor, Decompressor};
use zstd::dict::{DecoderDictionary, EncoderDictionary};
use zstd::zstd_safe::CParameter;

use crate::StoreError;

/// The first byte of data encoded with [`DICT_V1`].
pub const TAG_ZSTD_V1: u8 = 0x01;

/// The dictionary of tag [`TAG_ZSTD_V1`] (32 KiB).
pub static DICT_V1: &[u8] = include_bytes!("journal-v1.dict");

/// zstd's level: 3 gives about 8x on journal rows for about 1.5 µs per row; 9 gives 11x
/// for about 6 µs, which cost `nurture bench` (a) about 8 % of its steps/s (A/B in
/// docs/benchmarks.md); decoding costs about 1 µs either way.
const LEVEL: i32 = 3;

/// The most bytes one row may decode to: a corrupt or hostile frame that claims more is
/// refused before anything is allocated.
pub const MAX_DECODED: usize = 16 << 20;

fn encoder_dict() -> &'static EncoderDictionary<'static> {
    static D: OnceLock<EncoderDictionary<'static>> = OnceLock::new();
    D.get_or_init(|| EncoderDictionary::copy(DICT_V1, LEVEL))
}

fn decoder_dict() -> &'static DecoderDictionary<'static> {
    static D: OnceLock<DecoderDictionary<'static>> = OnceLock::new();
    D.get_or_init(|| DecoderDictionary::copy(DICT_V1))
}

thread_local! {
    static COMPRESSOR: RefCell<Option<Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<Decompressor<'static>>> = const { RefCell::new(None) };
}

fn new_compressor() -> std::io::Result<Compressor<'static>> {
    let mut c = Compressor::with_prepared_dictionary(encoder_dict())?;
    // The dictionary is known by its tag; its id in every frame would cost 4 bytes.
    c.set_parameter(CParameter::DictIdFlag(false))?;
    Ok(c)
}

/// A row's JSON text, encoded for storage. JSON longer than [`MAX_DECODED`] is stored as
/// it is (plain JSON text, read back without a bound), so no row written is refused when
/// read.
pub fn encode(json: &str) -> Vec<u8> {
    if json.len() > MAX_DECODED {
        return json.as_bytes().to_vec();
    }
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_none() {
            *c = Some(new_compressor().expect("zstd compressor with the built-in dictionary"));
        }
        let frame = c
            .as_mut()
            .expect("set above")
            .compress(json.as_bytes())
            .expect("zstd compresses into a growing buffer");
        let mut out = Vec::with_capacity(frame.len() + 1);
        out.push(TAG_ZSTD_V1);
        out.extend_from_slice(&frame);
        out
    })
}

/// A stored row's data as JSON: [`encode`]d, or plain JSON text from before.
pub fn decode(stored: &[u8]) -> Result<Value, StoreError> {
    match stored.first() {
        Some(&TAG_ZSTD_V1) => {
            let json = decompress(&stored[1..])?;
            serde_json::from_slice(&json).map_err(|e| corrupt(&e.to_string()))
        }
        _ => serde_json::from_slice(stored).map_err(|e| corrupt(&e.to_string())),
    }
}

/// A frame's bytes, within [`MAX_DECODED`].
fn decompress(frame: &[u8]) -> Result<Vec<u8>, StoreError> {
    let size = match zstd::zstd_safe::get_frame_content_size(frame) {
        Ok(Some(n)) if n <= MAX_DECODED as u64 => n as usize,
        Ok(Some(_)) => return Err(corrupt("its frame claims more than 16 MiB")),
        _ => return Err(corrupt("its frame has no readable size")),
    };
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(
                Decompressor::with_prepared_dictionary(decoder_dict())
                    .map_err(|e| corrupt(&e.to_string()))?,
            );
        }
        let out = d
            .as_mut()
            .expect("set above")
            .decompress(frame, size)
            .map_err(|e| corrupt(&e.to_string()))?;
        if out.len() == size {
            Ok(out)
        } else {
            Err(corrupt("its frame is shorter than it claims"))
        }
    })
}

fn corrupt(why: &str) -> StoreError {
    StoreError::Corrupt(format!("journal data cannot be decoded: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEP: &str = r#"[{"kind":"step","data":{"step":"welcome","kind":"send_email"}},{"kind":"effect","data":{"template":"welcome","subject":"Welcome, Ada","key":"c66733dd77945c1552cbca1e","effect":"email","step":"welcome"}}]"#;

    #[test]
    fn a_row_round_trips_and_is_less_than_half_its_json() {
        let stored = encode(STEP);
        assert_eq!(stored[0], TAG_ZSTD_V1);
        assert!(
            stored.len() * 2 < STEP.len(),
            "{} bytes for {} of JSON",
            stored.len(),
            STEP.len()
        );
        let back = decode(&stored).unwrap();
        assert_eq!(back, serde_json::from_str::<Value>(STEP).unwrap());
    }

    #[test]
    fn json_longer_than_the_read_bound_is_stored_plain_and_reads_back() {
        let big = format!(r#"{{"field":"{}"}}"#, "x".repeat(MAX_DECODED));
        let stored = encode(&big);
        assert_eq!(stored.first(), Some(&b'{'));
        assert_eq!(
            decode(&stored).unwrap()["field"].as_str().map(str::len),
            Some(MAX_DECODED)
        );
        let small = encode(STEP);
        assert_eq!(small[0], TAG_ZSTD_V1);
    }

    #[test]
    fn plain_json_from_before_the_encoding_is_read_as_it_is() {
        let back = decode(STEP.as_bytes()).unwrap();
        assert_eq!(back, serde_json::from_str::<Value>(STEP).unwrap());
    }

    #[test]
    fn a_frame_claiming_more_than_the_bound_is_refused_without_allocating_it() {
        // A frame header whose content size is 2^40 bytes, then nothing.
        let mut bomb = vec![TAG_ZSTD_V1, 0x28, 0xb5, 0x2f, 0xfd, 0xe0];
        bomb.extend_from_slice(&(1u64 << 40).to_le_bytes());
        let e = decode(&bomb).unwrap_err().to_string();
        assert!(e.contains("more than 16 MiB"), "{e}");
    }

    #[test]
    fn a_truncated_or_altered_frame_is_corrupt_not_a_panic() {
        let stored = encode(STEP);
        for cut in [1, 2, 5, stored.len() / 2, stored.len() - 1] {
            assert!(decode(&stored[..cut]).is_err(), "cut at {cut}");
        }
        let mut flipped = stored.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        // zstd has no checksum here: an altered byte may decode to other bytes, which
        // are then not the JSON, or to an error; never to a panic.
        let _ = decode(&flipped);
    }
}
