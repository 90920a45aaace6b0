//! Helpers shared by the method tests.

use bytes::{Bytes, BytesMut};

use crate::frame::method::Method;
use crate::frame::{FRAME_END, HEADER_LEN};
use crate::{ChannelId, Frame};

/// Parses whitespace-separated hex pairs, as written in `test-vectors.md`.
pub(crate) fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).expect("a hex pair"))
        .collect()
}

/// Encodes a method's payload, checks `encoded_len`, and decodes it back to the same method.
pub(crate) fn round_trip(m: Method) {
    let mut dst = BytesMut::new();
    m.encode(&mut dst);
    assert_eq!(dst.len(), m.encoded_len(), "encoded_len of {}", m.name());
    assert_eq!(Method::decode(&dst.freeze()), Ok(m));
}

/// Checks a method frame against a hex vector both ways: `m` on `channel` encodes to exactly
/// `vector`, and the vector's payload decodes to `m`. Returns the payload.
pub(crate) fn check_vector(channel: u16, m: Method, vector: &str) -> Bytes {
    let want = hex(vector);
    let frame = Frame::Method(ChannelId(channel), m);
    let mut dst = BytesMut::new();
    frame.encode(&mut dst).expect("the frame encodes");
    assert_eq!(&dst[..], &want[..], "encoding of {frame:?}");
    assert_eq!(dst.len(), frame.encoded_len(), "encoded_len of {frame:?}");
    assert_eq!(want.last(), Some(&FRAME_END));
    let payload = Bytes::from(want).slice(HEADER_LEN..dst.len() - 1);
    let Frame::Method(_, m) = frame else {
        unreachable!()
    };
    assert_eq!(Method::decode(&payload), Ok(m), "decoding of the vector");
    payload
}
