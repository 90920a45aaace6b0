//! Outgoing bytes, ready for one vectored write, with published bodies by reference.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::BasicProperties;
use crate::frame::content::ContentHeader;
use crate::frame::method::Method;
use crate::frame::methods::BasicPublish;
use crate::frame::{EncodeError, FRAME_END, FRAME_OVERHEAD, Frame, FrameType, put_header};
use crate::types::ChannelId;

/// Bodies (or body chunks) up to this size are copied next to their frame header instead of
/// being queued as a segment of their own: for a small body, one more `IoSlice` and a reference
/// count cost more than copying its octets (the `publish_encode` bench compares the two).
pub const INLINE_BODY_MAX: usize = 256;

/// The least the staged buffer grows by when a publish does not fit.
///
/// Sealing the staged octets in front of a body segment shares the staged buffer with the
/// queued segment. Grown by one publish's exact size, the buffer would be full after every
/// publish, and the next one would allocate a new buffer and then its shared header: two
/// allocations per publish whenever several publishes wait for one write. Growing by 8 KiB
/// (the size of the read buffer's chunks) lets about a hundred publishes share one buffer.
const STAGED_GROWTH: usize = 8 * 1024;

/// A queue of encoded frames in write order, which is a [`bytes::Buf`].
///
/// Small frames are encoded into one buffer; a published body larger than
/// [`INLINE_BODY_MAX`] is queued as slices of the caller's [`Bytes`], so it reaches the socket
/// without a copy. Hand it to `write_buf` / `write_vectored` ([`Buf::chunks_vectored`]).
///
/// ```
/// use amqp_wire::{BasicProperties, ChannelId, Transmit, methods::BasicPublish, ShortStr};
/// use bytes::{Buf, Bytes};
///
/// let body = Bytes::from(vec![7u8; 20_000]);
/// let publish = BasicPublish { routing_key: ShortStr::from_static("q"), ..Default::default() };
/// let mut out = Transmit::new();
/// out.push_publish(ChannelId(1), &publish, &BasicProperties::default(), body, 8192).unwrap();
/// // method + header frames, then three body frames of 8184, 8184 and 3632 octets.
/// assert_eq!(out.remaining(), 18 + 22 + 20_000 + 3 * 8);
/// ```
#[derive(Debug, Default)]
pub struct Transmit {
    /// Segments ready to write, oldest first; `staged` follows them.
    segments: VecDeque<Bytes>,
    /// Octets in `segments`.
    segments_len: usize,
    /// The tail: small frames being encoded.
    staged: BytesMut,
}

impl Transmit {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Octets waiting to be written.
    pub fn len(&self) -> usize {
        self.segments_len + self.staged.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues octets as they are, such as the protocol header, which is not a frame.
    pub fn push_raw(&mut self, octets: &[u8]) {
        self.staged.extend_from_slice(octets);
    }

    /// Encodes a frame at the end of the queue.
    ///
    /// # Errors
    /// [`EncodeError::PayloadTooLarge`] when the payload does not fit a frame; nothing is queued.
    pub fn push_frame(&mut self, frame: &Frame) -> Result<(), EncodeError> {
        frame.encode(&mut self.staged)
    }

    /// Queues one publish: the method, the content header with `body.len()`, and the body cut
    /// into frames of at most `frame_max` octets (`frame_max - 8` of body each; 0: one frame).
    /// An empty body sends no body frame.
    ///
    /// # Errors
    /// [`EncodeError::PayloadTooLarge`] when a frame cannot hold even one octet of body
    /// (`frame_max` of 8 or less); nothing is queued.
    pub fn push_publish(
        &mut self,
        channel: ChannelId,
        publish: &BasicPublish,
        properties: &BasicProperties,
        body: Bytes,
        frame_max: u32,
    ) -> Result<(), EncodeError> {
        let chunk = body_chunk_len(frame_max)?;
        let method = Method::BasicPublish(publish.clone());
        let header = ContentHeader {
            body_size: body.len() as u64,
            properties: properties.clone(),
        };
        self.push_content(channel, &method, &header, body, chunk)
    }

    /// Queues any content-carrying method with its header and body (publish, and the broker's
    /// deliver, get-ok and return when the codec plays the broker).
    ///
    /// # Errors
    /// As [`Transmit::push_publish`].
    pub fn push_content_frames(
        &mut self,
        channel: ChannelId,
        method: &Method,
        header: &ContentHeader,
        body: Bytes,
        frame_max: u32,
    ) -> Result<(), EncodeError> {
        let chunk = body_chunk_len(frame_max)?;
        self.push_content(channel, method, header, body, chunk)
    }

    fn push_content(
        &mut self,
        channel: ChannelId,
        method: &Method,
        header: &ContentHeader,
        body: Bytes,
        chunk: usize,
    ) -> Result<(), EncodeError> {
        let method_len = method.encoded_len();
        let header_len = header.encoded_len();
        let frames = body.len().div_ceil(chunk);
        let inline = match body.len() % chunk {
            _ if chunk <= INLINE_BODY_MAX => body.len(),
            last if last <= INLINE_BODY_MAX => last,
            _ => 0,
        };
        // What the staged part needs: two frames, the body frame headers, and the body itself
        // when it goes inline.
        let needed =
            method_len + header_len + 2 * FRAME_OVERHEAD + frames * FRAME_OVERHEAD + inline;
        if self.staged.capacity() - self.staged.len() < needed {
            self.staged.reserve(needed.max(STAGED_GROWTH));
        }
        let method_size =
            u32::try_from(method_len).map_err(|_| EncodeError::PayloadTooLarge(method_len))?;
        let header_size =
            u32::try_from(header_len).map_err(|_| EncodeError::PayloadTooLarge(header_len))?;
        put_header(&mut self.staged, FrameType::Method, channel, method_size);
        method.encode(&mut self.staged);
        self.staged.put_u8(FRAME_END);
        put_header(&mut self.staged, FrameType::Header, channel, header_size);
        header.encode(&mut self.staged);
        self.staged.put_u8(FRAME_END);
        let mut offset = 0;
        while offset < body.len() {
            let end = body.len().min(offset + chunk);
            // `chunk` fits a u32: `body_chunk_len` derives it from a u32 `frame_max`.
            put_header(
                &mut self.staged,
                FrameType::Body,
                channel,
                (end - offset) as u32,
            );
            self.push_body_chunk(&body, offset, end);
            self.staged.put_u8(FRAME_END);
            offset = end;
        }
        Ok(())
    }

    /// Queues `body[start..end]`: copied when small, else as a slice of `body`.
    fn push_body_chunk(&mut self, body: &Bytes, start: usize, end: usize) {
        if end - start <= INLINE_BODY_MAX {
            self.staged.put_slice(&body[start..end]);
            return;
        }
        self.seal_staged();
        self.segments_len += end - start;
        self.segments.push_back(body.slice(start..end));
    }

    /// Moves the staged octets into the segment queue, so a body segment can follow them.
    fn seal_staged(&mut self) {
        if !self.staged.is_empty() {
            let sealed = self.staged.split().freeze();
            self.segments_len += sealed.len();
            self.segments.push_back(sealed);
        }
    }

    /// Moves everything queued in `other` to the end of this queue. Segments move without a
    /// copy; `other`'s staged small frames are copied, being small.
    pub fn append(&mut self, other: &mut Self) {
        if !other.segments.is_empty() {
            self.seal_staged();
            self.segments_len += other.segments_len;
            self.segments.append(&mut other.segments);
            other.segments_len = 0;
        }
        self.staged.extend_from_slice(&other.staged);
        other.staged.clear();
    }
}

/// The largest body slice a frame of `frame_max` octets can carry (0: no limit).
fn body_chunk_len(frame_max: u32) -> Result<usize, EncodeError> {
    match frame_max {
        0 => Ok(u32::MAX as usize),
        n if (n as usize) <= FRAME_OVERHEAD => Err(EncodeError::PayloadTooLarge(1)),
        n => Ok(n as usize - FRAME_OVERHEAD),
    }
}

impl Buf for Transmit {
    fn remaining(&self) -> usize {
        self.len()
    }

    fn chunk(&self) -> &[u8] {
        match self.segments.front() {
            Some(segment) => segment,
            None => &self.staged,
        }
    }

    fn advance(&mut self, mut cnt: usize) {
        while cnt > 0 {
            let Some(front) = self.segments.front_mut() else {
                // `Buf::advance` may panic past `remaining`; BytesMut does.
                self.staged.advance(cnt);
                return;
            };
            let n = cnt.min(front.len());
            front.advance(n);
            self.segments_len -= n;
            cnt -= n;
            if front.is_empty() {
                self.segments.pop_front();
            }
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        let parts = self
            .segments
            .iter()
            .map(|b| &b[..])
            .chain(std::iter::once(&self.staged[..]));
        for (slot, part) in dst.iter_mut().zip(parts.filter(|p| !p.is_empty())) {
            *slot = IoSlice::new(part);
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FrameDecoder, ShortStr};

    fn publish() -> BasicPublish {
        BasicPublish {
            routing_key: ShortStr::from_static("q"),
            ..Default::default()
        }
    }

    fn drain(t: &mut Transmit) -> Vec<u8> {
        let mut out = Vec::new();
        while t.has_remaining() {
            let c = t.chunk();
            out.extend_from_slice(c);
            let n = c.len();
            t.advance(n);
        }
        out
    }

    #[test]
    fn vectors_4_5_6_make_one_publish() {
        let mut t = Transmit::new();
        let props = BasicProperties {
            delivery_mode: Some(2),
            ..Default::default()
        };
        t.push_publish(
            ChannelId(1),
            &publish(),
            &props,
            Bytes::from_static(b"hello"),
            131_072,
        )
        .unwrap();
        let want: &[u8] = b"\x01\x00\x01\x00\x00\x00\x0a\x00\x3c\x00\x28\x00\x00\x00\x01\x71\x00\xce\
            \x02\x00\x01\x00\x00\x00\x0f\x00\x3c\x00\x00\x00\x00\x00\x00\x00\x00\x00\x05\x10\x00\x02\xce\
            \x03\x00\x01\x00\x00\x00\x05hello\xce";
        assert_eq!(drain(&mut t), want);
    }

    #[test]
    fn vector_22_body_split_by_frame_max_references_the_caller_bytes() {
        let body = Bytes::from((0..20_000u32).map(|i| i as u8).collect::<Vec<_>>());
        let mut t = Transmit::new();
        t.push_publish(
            ChannelId(1),
            &publish(),
            &BasicProperties::default(),
            body.clone(),
            8192,
        )
        .unwrap();
        let body_range = body.as_ptr_range();
        let referenced: Vec<usize> = t
            .segments
            .iter()
            .filter(|s| body_range.contains(&s.as_ptr()))
            .map(Bytes::len)
            .collect();
        assert_eq!(referenced, [8184, 8184, 3632]);

        let mut wire = BytesMut::from(&drain(&mut t)[..]);
        let mut decoder = FrameDecoder::new(8192);
        let mut sizes = Vec::new();
        let mut got = Vec::new();
        while let Some(frame) = decoder.decode(&mut wire).unwrap() {
            if let Frame::Body(_, b) = frame {
                sizes.push(b.len());
                got.extend_from_slice(&b);
            }
        }
        assert_eq!(sizes, [8184, 8184, 3632]);
        assert_eq!(got, body);
    }

    #[test]
    fn an_empty_body_sends_no_body_frame() {
        let mut t = Transmit::new();
        t.push_publish(
            ChannelId(1),
            &publish(),
            &BasicProperties::default(),
            Bytes::new(),
            4096,
        )
        .unwrap();
        let mut wire = BytesMut::from(&drain(&mut t)[..]);
        let mut decoder = FrameDecoder::new(4096);
        let mut kinds = Vec::new();
        while let Some(frame) = decoder.decode(&mut wire).unwrap() {
            kinds.push(frame.frame_type());
        }
        assert_eq!(kinds, [FrameType::Method, FrameType::Header]);
    }

    #[test]
    fn vectored_chunks_cover_everything_in_order() {
        let mut t = Transmit::new();
        let big = Bytes::from(vec![1u8; 1000]);
        t.push_frame(&Frame::Heartbeat).unwrap();
        t.push_publish(
            ChannelId(1),
            &publish(),
            &BasicProperties::default(),
            big,
            0,
        )
        .unwrap();
        t.push_frame(&Frame::Heartbeat).unwrap();
        let mut slices = [IoSlice::new(&[]); 16];
        let n = t.chunks_vectored(&mut slices);
        let flat: Vec<u8> = slices[..n].iter().flat_map(|s| s.iter().copied()).collect();
        assert_eq!(flat.len(), t.remaining());
        // Advancing across segment boundaries keeps the order.
        t.advance(10);
        let rest = drain(&mut t);
        assert_eq!(&flat[10..], &rest[..]);
    }

    #[test]
    fn append_keeps_order() {
        let mut a = Transmit::new();
        let mut b = Transmit::new();
        a.push_frame(&Frame::Heartbeat).unwrap();
        let big = Bytes::from(vec![9u8; 600]);
        b.push_publish(
            ChannelId(2),
            &publish(),
            &BasicProperties::default(),
            big,
            0,
        )
        .unwrap();
        b.push_frame(&Frame::Heartbeat).unwrap();
        let mut expected = drain(&mut Transmit {
            staged: a.staged.clone(),
            ..Default::default()
        });
        let mut b_copy = Transmit {
            segments: b.segments.clone(),
            ..Default::default()
        };
        b_copy.segments_len = b.segments_len;
        b_copy.staged = b.staged.clone();
        expected.extend(drain(&mut b_copy));
        a.append(&mut b);
        assert!(b.is_empty());
        assert_eq!(drain(&mut a), expected);
    }

    #[test]
    fn queued_publishes_share_the_staged_buffer() {
        // 32 publishes of a body that goes by reference, none written yet: the staged frames
        // sealed in front of each body must be slices of one buffer, not one buffer each.
        let body = Bytes::from(vec![5u8; 4096]);
        let body_range = body.as_ptr_range();
        let mut t = Transmit::new();
        for _ in 0..32 {
            t.push_publish(
                ChannelId(1),
                &publish(),
                &BasicProperties::default(),
                body.clone(),
                131_072,
            )
            .unwrap();
        }
        let staged: Vec<&Bytes> = t
            .segments
            .iter()
            .filter(|s| !body_range.contains(&s.as_ptr()))
            .collect();
        assert_eq!(staged.len(), 32);
        let contiguous = staged
            .windows(2)
            .filter(|w| w[0].as_ptr_range().end == w[1].as_ptr())
            .count();
        assert_eq!(contiguous, 31, "a new buffer for every publish");
    }

    #[test]
    fn a_frame_max_without_room_for_body_is_refused() {
        let mut t = Transmit::new();
        let r = t.push_publish(
            ChannelId(1),
            &publish(),
            &BasicProperties::default(),
            Bytes::new(),
            8,
        );
        assert!(r.is_err());
        assert!(t.is_empty());
    }
}
