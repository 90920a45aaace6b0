//! The incremental frame decoder.
//!
//! Two stages, as in h2 and tokio-util's `length_delimited`:
//!
//! ```text
//!   bytes arrive ──► [1] 7-octet header: type known? channel allowed? size within frame_max?
//!                        │ no: error before a single payload octet is buffered
//!                        ▼ yes: reserve room for the rest, return Ok(None) until it is there
//!                    [2] whole frame in: check the 0xCE end octet, split it off (no copy),
//!                        parse the payload with complete parsers (short payload = syntax error)
//! ```
//! Only stage 1 returns `Ok(None)`.
//!
//! Stage 2 is where the time goes, per frame. Two costs dominate it and shape the code:
//! - **Reference counts.** Each `Bytes` handle on the read buffer is an atomic increment and,
//!   when dropped, an atomic decrement (about 8 ns each on a VM). A frame takes one handle
//!   (`split_to`, narrowed to the payload before `freeze`), each string or table one more;
//!   a content header with no string property takes none: it is parsed where it lies.
//! - **Copies of big values.** A `Frame` is 384 octets (a header's properties are 368), and
//!   each move through a `Result`, a `map(Some)` or a `context` wrapper copies all of it.
//!   Values are built where they are returned, and a header is decoded in place.

use bytes::{Buf, Bytes, BytesMut};
use tracing::trace;

use crate::error::DecodeError;
use crate::frame::content::ContentHeader;
use crate::frame::method::Method;
use crate::frame::{FRAME_END, FRAME_OVERHEAD, Frame, FrameType, HEADER_LEN};
use crate::types::{ChannelId, ProtocolVersion};

/// The most a decoder reserves ahead for one frame, whatever `frame_max` allows: the rest
/// grows as bytes arrive, so an untrusted size never sizes an allocation.
const MAX_RESERVE: usize = 1 << 20;

/// Turns bytes into [`Frame`]s, from any split of the input.
///
/// The contract is tokio-util's `Decoder::decode` (without depending on it): `Ok(Some(frame))`
/// consumes the frame's octets from `src`; `Ok(None)` means more bytes are needed, and room
/// for the rest of the frame has been reserved; `Err` means the stream cannot be trusted any
/// more and the connection must close with [`DecodeError::reply_code`].
///
/// ```
/// use amqp_wire::{Frame, FrameDecoder};
/// use bytes::BytesMut;
///
/// let mut decoder = FrameDecoder::new(4096);
/// let mut src = BytesMut::from(&[8u8, 0, 0, 0][..]);
/// assert_eq!(decoder.decode(&mut src), Ok(None));
/// src.extend_from_slice(&[0, 0, 0, 0xce]);
/// assert_eq!(decoder.decode(&mut src), Ok(Some(Frame::Heartbeat)));
/// assert!(src.is_empty());
/// ```
#[derive(Clone, Debug)]
pub struct FrameDecoder {
    max_frame_size: u32,
}

impl FrameDecoder {
    /// A decoder that refuses frames larger than `max_frame_size` octets in all (header and end
    /// octet included, as `frame_max` counts them). 0 means no limit.
    pub fn new(max_frame_size: u32) -> Self {
        Self { max_frame_size }
    }

    /// Changes the limit, e.g. to the `frame_max` agreed by `connection.tune-ok`.
    pub fn set_max_frame_size(&mut self, max_frame_size: u32) {
        self.max_frame_size = max_frame_size;
    }

    /// The current limit (0: none).
    pub fn max_frame_size(&self) -> u32 {
        self.max_frame_size
    }

    /// Decodes the next frame from the front of `src`.
    ///
    /// # Errors
    /// A [`DecodeError`] for a malformed frame, and [`DecodeError::ProtocolHeader`] when the
    /// peer answered with a protocol header (it refuses our version).
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        let Some(&type_octet) = src.first() else {
            return Ok(None);
        };
        if type_octet == b'A' {
            return protocol_header(src);
        }
        let kind =
            FrameType::from_octet(type_octet).ok_or(DecodeError::UnknownFrameType(type_octet))?;
        if src.len() < HEADER_LEN {
            src.reserve(HEADER_LEN - src.len());
            return Ok(None);
        }
        let channel = ChannelId(u16::from_be_bytes([src[1], src[2]]));
        let size = u32::from_be_bytes([src[3], src[4], src[5], src[6]]);
        self.check_header(kind, channel, size)?;
        let total = size as usize + FRAME_OVERHEAD;
        if src.len() < total {
            let missing = total - src.len();
            // The size is the peer's word: never let it size an allocation on its own.
            src.reserve(missing.min(MAX_RESERVE));
            return Ok(None);
        }
        let end = src[total - 1];
        if end != FRAME_END {
            return Err(DecodeError::FrameEnd { found: end });
        }
        trace!(kind = kind.name(), channel = channel.0, size, "frame");
        // Stage 2. Each arm builds the returned value where it is returned: a frame can be
        // 384 octets, and each move through a `Result` or `map(Some)` is a copy.
        match kind {
            FrameType::Method => {
                let payload = split_payload(src, total);
                Ok(Some(Frame::Method(channel, Method::decode(&payload)?)))
            }
            FrameType::Header => header_frame(channel, src, total),
            FrameType::Body => Ok(Some(Frame::Body(channel, split_payload(src, total)))),
            FrameType::Heartbeat => {
                src.advance(total);
                Ok(Some(Frame::Heartbeat))
            }
        }
    }

    /// Stage 1's checks, made before any of the payload is buffered.
    fn check_header(
        &self,
        kind: FrameType,
        channel: ChannelId,
        size: u32,
    ) -> Result<(), DecodeError> {
        let total = u64::from(size) + FRAME_OVERHEAD as u64;
        if self.max_frame_size != 0 && total > u64::from(self.max_frame_size) {
            return Err(DecodeError::FrameTooLarge {
                size: total,
                max: self.max_frame_size,
            });
        }
        match kind {
            FrameType::Heartbeat if channel != ChannelId::CONNECTION => {
                Err(DecodeError::WrongChannel {
                    frame: kind.name(),
                    channel: channel.0,
                })
            }
            FrameType::Heartbeat if size != 0 => Err(DecodeError::HeartbeatPayload(size)),
            FrameType::Header | FrameType::Body if channel == ChannelId::CONNECTION => {
                Err(DecodeError::WrongChannel {
                    frame: kind.name(),
                    channel: channel.0,
                })
            }
            _ => Ok(()),
        }
    }
}

/// Splits the whole frame at the front of `src` off and returns its payload.
///
/// One reference count per frame: `split_to` takes it, and narrowing the split-off part to
/// the payload before `freeze` costs none (`freeze().slice(..)` would take a second one, and
/// give the first back when the frame was dropped: two atomic operations for nothing).
#[inline]
fn split_payload(src: &mut BytesMut, total: usize) -> Bytes {
    let mut frame = src.split_to(total);
    frame.advance(HEADER_LEN);
    frame.truncate(total - FRAME_OVERHEAD);
    frame.freeze()
}

/// A whole content header frame at the front of `src`.
///
/// When no property is a string or a table (a delivery with only `delivery_mode`, say),
/// nothing decoded refers to the payload: it is parsed where it lies and skipped, and no
/// reference count is taken.
///
/// The header is decoded in place, in the value returned: decoding it elsewhere and moving
/// it in copies its 376 octets once more, per delivery.
fn header_frame(
    channel: ChannelId,
    src: &mut BytesMut,
    total: usize,
) -> Result<Option<Frame>, DecodeError> {
    let mut frame = Ok(Some(Frame::Header(channel, ContentHeader::default())));
    if let Ok(Some(Frame::Header(_, header))) = &mut frame {
        if ContentHeader::shares_payload(&src[HEADER_LEN..total - 1]) {
            let payload = split_payload(src, total);
            header.decode_into(&payload, &payload)?;
        } else {
            header.decode_into(&Bytes::new(), &src[HEADER_LEN..total - 1])?;
            src.advance(total);
        }
    }
    frame
}

/// The peer sent `AMQP` and a version instead of a frame: it refuses ours and will close.
fn protocol_header(src: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
    let n = src.len().min(4);
    if src[..n] != b"AMQP"[..n] {
        return Err(DecodeError::UnknownFrameType(b'A'));
    }
    if src.len() < 8 {
        src.reserve(8 - src.len());
        return Ok(None);
    }
    let mut header = src.split_to(8);
    header.advance(4);
    Err(DecodeError::ProtocolHeader(ProtocolVersion([
        header[0], header[1], header[2], header[3],
    ])))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ReplyCode;

    const HEARTBEAT: &[u8] = &[8, 0, 0, 0, 0, 0, 0, 0xce];
    /// test-vectors.md §3: channel.open on channel 1.
    const CHANNEL_OPEN: &[u8] = &[1, 0, 1, 0, 0, 0, 5, 0, 0x14, 0, 0x0a, 0, 0xce];
    /// test-vectors.md §6: body "hello" on channel 1.
    const BODY: &[u8] = b"\x03\x00\x01\x00\x00\x00\x05hello\xce";

    fn decode_all(decoder: &mut FrameDecoder, src: &mut BytesMut) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(f) = decoder.decode(src).unwrap() {
            frames.push(f);
        }
        frames
    }

    #[test]
    fn every_split_point_gives_the_same_frames() {
        let stream: Vec<u8> = [HEARTBEAT, CHANNEL_OPEN, BODY].concat();
        let mut decoder = FrameDecoder::new(4096);
        let whole = decode_all(&mut decoder, &mut BytesMut::from(&stream[..]));
        assert_eq!(whole.len(), 3);
        for split in 0..=stream.len() {
            let mut src = BytesMut::from(&stream[..split]);
            let mut frames = decode_all(&mut decoder, &mut src);
            src.extend_from_slice(&stream[split..]);
            frames.extend(decode_all(&mut decoder, &mut src));
            assert_eq!(frames, whole, "split at {split}");
            assert!(src.is_empty());
        }
    }

    #[test]
    fn a_body_is_a_slice_of_the_read_buffer() {
        let mut src = BytesMut::from(BODY);
        let start = src.as_ptr();
        let Some(Frame::Body(ch, body)) = FrameDecoder::new(0).decode(&mut src).unwrap() else {
            panic!("not a body");
        };
        assert_eq!((ch, &body[..]), (ChannelId(1), &b"hello"[..]));
        assert_eq!(
            body.as_ptr(),
            start.wrapping_add(HEADER_LEN),
            "body was copied"
        );
    }

    #[test]
    fn a_bad_frame_end_is_a_frame_error() {
        let mut src = BytesMut::from(&[8, 0, 0, 0, 0, 0, 0, 0x00][..]);
        let err = FrameDecoder::new(4096).decode(&mut src).unwrap_err();
        assert_eq!(err, DecodeError::FrameEnd { found: 0 });
        assert_eq!(err.reply_code(), ReplyCode::FRAME_ERROR);
    }

    #[test]
    fn an_oversized_frame_is_refused_from_its_header_alone() {
        // A body frame announcing 4089 octets: 4097 in all, one over the limit.
        let mut src = BytesMut::from(&[3, 0, 1, 0, 0, 0x0f, 0xf9][..]);
        let err = FrameDecoder::new(4096).decode(&mut src).unwrap_err();
        assert_eq!(
            err,
            DecodeError::FrameTooLarge {
                size: 4097,
                max: 4096
            }
        );
        assert_eq!(err.reply_code(), ReplyCode::FRAME_ERROR);
        // One octet less fits, and waits for its payload.
        let mut src = BytesMut::from(&[3, 0, 1, 0, 0, 0x0f, 0xf8][..]);
        assert_eq!(FrameDecoder::new(4096).decode(&mut src), Ok(None));
        assert!(src.capacity() >= 4096);
    }

    #[test]
    fn no_decoder_reserves_what_the_peer_announces() {
        for frame_max in [0, 4096, 131_072, u32::MAX] {
            for size in [100u32, 4088, 131_064, 1 << 24, u32::MAX - 8] {
                let mut src = BytesMut::from(&[3, 0, 1][..]);
                src.extend_from_slice(&size.to_be_bytes());
                let result = FrameDecoder::new(frame_max).decode(&mut src);
                let fits = frame_max == 0 || u64::from(size) + 8 <= u64::from(frame_max);
                assert_eq!(result.is_ok(), fits, "frame_max {frame_max}, size {size}");
                assert!(
                    src.capacity() <= MAX_RESERVE + 64,
                    "frame_max {frame_max}, size {size}: reserved {}",
                    src.capacity()
                );
            }
        }
    }

    #[test]
    fn frame_type_and_channel_rules() {
        let cases: [(&[u8], DecodeError); 4] = [
            (&[4, 0, 0, 0, 0, 0, 0], DecodeError::UnknownFrameType(4)),
            (
                &[8, 0, 1, 0, 0, 0, 0],
                DecodeError::WrongChannel {
                    frame: "heartbeat",
                    channel: 1,
                },
            ),
            (&[8, 0, 0, 0, 0, 0, 1], DecodeError::HeartbeatPayload(1)),
            (
                &[3, 0, 0, 0, 0, 0, 1],
                DecodeError::WrongChannel {
                    frame: "body",
                    channel: 0,
                },
            ),
        ];
        for (bytes, want) in cases {
            let got = FrameDecoder::new(4096).decode(&mut BytesMut::from(bytes));
            assert_eq!(got, Err(want.clone()), "{bytes:?}");
        }
        assert_eq!(
            DecodeError::WrongChannel {
                frame: "heartbeat",
                channel: 1
            }
            .reply_code(),
            ReplyCode::UNEXPECTED_FRAME
        );
    }

    #[test]
    fn a_protocol_header_reply_names_the_offered_version() {
        let mut src = BytesMut::from(&b"AMQP\x00\x00"[..]);
        let mut decoder = FrameDecoder::new(4096);
        assert_eq!(decoder.decode(&mut src), Ok(None));
        src.extend_from_slice(b"\x09\x01");
        assert_eq!(
            decoder.decode(&mut src),
            Err(DecodeError::ProtocolHeader(ProtocolVersion::AMQP_0_9_1))
        );
        let mut not_amqp = BytesMut::from(&b"AMQX0000"[..]);
        assert_eq!(
            decoder.decode(&mut not_amqp),
            Err(DecodeError::UnknownFrameType(b'A'))
        );
    }

    #[test]
    fn a_truncated_method_payload_is_a_syntax_error() {
        // channel.close with size 4: ids only, arguments missing.
        let mut src = BytesMut::from(&[1, 0, 1, 0, 0, 0, 4, 0, 0x14, 0, 0x28, 0xce][..]);
        let err = FrameDecoder::new(4096).decode(&mut src).unwrap_err();
        assert_eq!(err.reply_code(), ReplyCode::SYNTAX_ERROR);
    }
}
