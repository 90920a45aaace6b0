//! The parts of a connection every channel writes to: output, events, limits.

use std::collections::VecDeque;

use super::error::UsageError;
use super::event::{Event, RequestId};
use crate::frame::method::Method;
use crate::frame::{FRAME_OVERHEAD, Frame};
use crate::transmit::Transmit;
use crate::types::ChannelId;

#[derive(Debug)]
pub(crate) struct Shared {
    /// Frames queued for the transport.
    pub(crate) out: Transmit,
    /// Events queued for the application.
    pub(crate) events: VecDeque<Event>,
    /// The agreed `frame_max` (0: no limit; before tune, the spec's minimum).
    pub(crate) frame_max: u32,
    /// The largest inbound body accepted.
    pub(crate) max_message_size: u64,
    next_request: u64,
}

impl Shared {
    pub(crate) fn new(frame_max: u32, max_message_size: u64) -> Self {
        Self {
            out: Transmit::new(),
            events: VecDeque::new(),
            frame_max,
            max_message_size,
            next_request: 0,
        }
    }

    /// A fresh request id.
    pub(crate) fn next_request(&mut self) -> RequestId {
        self.next_request += 1;
        RequestId(self.next_request)
    }

    /// Queues a method frame. RabbitMQ never splits a method over frames, so one that does not
    /// fit `frame_max` (a huge arguments table) is refused here rather than by the broker.
    pub(crate) fn send(&mut self, channel: ChannelId, method: Method) -> Result<(), UsageError> {
        let size = method.encoded_len() + FRAME_OVERHEAD;
        if self.frame_max != 0 && size > self.frame_max as usize {
            return Err(UsageError::FrameTooLarge {
                size,
                frame_max: self.frame_max,
            });
        }
        tracing::trace!(channel = channel.0, method = method.name(), "send");
        self.out
            .push_frame(&Frame::Method(channel, method))
            .map_err(|_| UsageError::FrameTooLarge {
                size,
                frame_max: self.frame_max,
            })
    }
}
