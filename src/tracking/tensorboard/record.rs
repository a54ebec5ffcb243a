//! TFRecord framing, the container of TensorBoard event files.
//!
//! Each record is `u64 LE length`, `u32 LE masked CRC32C of those 8 bytes`, the payload, and
//! `u32 LE masked CRC32C of the payload`. The mask, `((crc >> 15) | (crc << 17)) + 0xA282EAD8`,
//! keeps a CRC of data that itself contains CRCs from being trivially zero. Readers (TensorBoard
//! included) stop at the first record whose CRC does not match.

use std::io::Write;
use std::path::Path;

use crate::tracking::TrackingError;

/// The constant TensorFlow adds when masking a CRC.
const MASK_DELTA: u32 = 0xA282_EAD8;

/// Bytes of framing before a payload: length and its CRC.
const HEADER_LEN: usize = 12;

/// Bytes of framing after a payload: its CRC.
const FOOTER_LEN: usize = 4;

/// Masks a CRC32C as TFRecord stores it.
pub fn mask(crc: u32) -> u32 {
    crc.rotate_right(15).wrapping_add(MASK_DELTA)
}

/// Undoes [`mask`].
pub fn unmask(masked: u32) -> u32 {
    masked.wrapping_sub(MASK_DELTA).rotate_left(15)
}

/// The masked CRC32C (Castagnoli) of `data`.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    mask(crc32c::crc32c(data))
}

/// Writes one framed record. The caller buffers; this issues four small writes.
pub fn write_record<W: Write>(out: &mut W, payload: &[u8]) -> std::io::Result<()> {
    let len = (payload.len() as u64).to_le_bytes();
    out.write_all(&len)?;
    out.write_all(&masked_crc32c(&len).to_le_bytes())?;
    out.write_all(payload)?;
    out.write_all(&masked_crc32c(payload).to_le_bytes())
}

/// Splits framed bytes into payloads, checking both CRCs of every record.
///
/// Fails with a message naming the byte offset of the first bad or truncated record.
pub fn decode_records(bytes: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut payloads = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let header = bytes.get(at..at + HEADER_LEN).ok_or_else(|| format!("record at byte {at}: truncated header"))?;
        let (len_bytes, len_crc) = header.split_at(8);
        if masked_crc32c(len_bytes) != le_u32(len_crc) {
            return Err(format!("record at byte {at}: length CRC mismatch"));
        }
        let len = usize::try_from(u64::from_le_bytes(<[u8; 8]>::try_from(len_bytes).unwrap_or_default()))
            .map_err(|_| format!("record at byte {at}: length does not fit in memory"))?;
        let start = at + HEADER_LEN;
        let end = start.checked_add(len).ok_or_else(|| format!("record at byte {at}: length overflows"))?;
        let payload = bytes.get(start..end).ok_or_else(|| format!("record at byte {at}: truncated payload"))?;
        let crc = bytes.get(end..end + FOOTER_LEN).ok_or_else(|| format!("record at byte {at}: truncated CRC"))?;
        if masked_crc32c(payload) != le_u32(crc) {
            return Err(format!("record at byte {at}: payload CRC mismatch"));
        }
        payloads.push(payload);
        at = end + FOOTER_LEN;
    }
    Ok(payloads)
}

/// Reads a whole record file and returns its payloads; see [`decode_records`].
pub fn read_records(path: &Path) -> Result<Vec<Vec<u8>>, TrackingError> {
    let bytes = std::fs::read(path).map_err(|source| TrackingError::Io { path: path.to_owned(), source })?;
    let payloads =
        decode_records(&bytes).map_err(|message| TrackingError::Corrupt { path: path.to_owned(), message })?;
    Ok(payloads.into_iter().map(<[u8]>::to_vec).collect())
}

/// A little-endian u32 from a 4-byte slice (0 for any other length, which callers rule out).
fn le_u32(bytes: &[u8]) -> u32 {
    <[u8; 4]>::try_from(bytes).map_or(0, u32::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CRC32C check values: the catalogue's "123456789" and RFC 3720 (iSCSI) appendix B.4; the
    /// masked values are TensorBoard 2.21's `pywrap_tensorflow.masked_crc32c` of the same input.
    #[test]
    fn crc32c_and_mask_match_known_vectors() {
        let ascending: Vec<u8> = (0..32).collect();
        let cases: [(&[u8], u32, u32); 6] = [
            (b"", 0x0000_0000, 0xA282_EAD8),
            (b"123456789", 0xE306_9283, 0xC78A_B0E5),
            (&[0u8; 32], 0x8A91_36AA, 0x0FD7_FFFA),
            (&[0xFFu8; 32], 0x62A8_AB43, 0xF909_B029),
            (&ascending, 0x46DD_794E, 0x951F_7892),
            (&26u64.to_le_bytes(), 0xD81D_45AA, 0x2DD8_9B12),
        ];
        for (data, crc, masked) in cases {
            assert_eq!(crc32c::crc32c(data), crc, "crc of {data:?}");
            assert_eq!(masked_crc32c(data), masked, "masked crc of {data:?}");
            assert_eq!(unmask(masked), crc);
        }
    }

    #[test]
    fn mask_round_trips_and_changes_the_value() {
        for crc in [0u32, 1, 0xA282_EAD8, 0xDEAD_BEEF, u32::MAX] {
            assert_eq!(unmask(mask(crc)), crc);
            assert_ne!(mask(crc), crc);
        }
    }

    /// The framed bytes of one file-version event, as TensorBoard 2.21's own `RecordWriter`
    /// writes them.
    #[test]
    fn framing_matches_tensorboard_record_writer() {
        let payload = [
            0x09, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f, 0x1a, 0x0d, b'b', b'r', b'a', b'i', b'n', b'.', b'E', b'v', b'e', b'n',
            b't', b':', b'2',
        ];
        let mut out = Vec::new();
        write_record(&mut out, &payload).unwrap();
        let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "1800000000000000a37f4b2209000000000000f83f1a0d627261696e2e4576656e743a322a28646c");
    }

    #[test]
    fn framing_round_trips() {
        let payloads: [&[u8]; 4] = [b"", b"a", &[0u8; 300], b"the last record"];
        let mut out = Vec::new();
        for payload in payloads {
            write_record(&mut out, payload).unwrap();
        }
        assert_eq!(out.len(), payloads.iter().map(|p| p.len() + HEADER_LEN + FOOTER_LEN).sum::<usize>());
        assert_eq!(decode_records(&out).unwrap(), payloads);
    }

    #[test]
    fn corruption_and_truncation_are_reported() {
        let mut out = Vec::new();
        write_record(&mut out, b"first").unwrap();
        write_record(&mut out, b"second").unwrap();
        let second = HEADER_LEN + 5 + FOOTER_LEN;

        let mut flipped = out.clone();
        flipped[second + HEADER_LEN + 2] ^= 0x01;
        assert_eq!(decode_records(&flipped).unwrap_err(), format!("record at byte {second}: payload CRC mismatch"));

        let mut bad_len = out.clone();
        bad_len[second] ^= 0x01;
        assert_eq!(decode_records(&bad_len).unwrap_err(), format!("record at byte {second}: length CRC mismatch"));

        let truncated = &out[..out.len() - 1];
        assert_eq!(decode_records(truncated).unwrap_err(), format!("record at byte {second}: truncated CRC"));
    }
}
