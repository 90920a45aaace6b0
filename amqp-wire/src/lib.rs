//! The AMQP 0-9-1 protocol, sans-IO: a zero-copy frame codec.
//!
//! This crate does no I/O and reads no clock. It turns bytes into [`Frame`]s and frames into
//! bytes; a transport (such as `amqp-client`) owns the socket and moves the bytes.
//!
//! - [`FrameDecoder`] takes bytes as they arrive in a [`bytes::BytesMut`] and returns whole
//!   frames. Bodies and the strings of decoded methods are slices of the read buffer
//!   (a reference count, never a copy).
//! - [`Frame::encode`] writes a frame into a `BytesMut`; [`Transmit`] queues frames and
//!   published bodies for one vectored write, the bodies by reference.
//! - [`Method`] covers every method of AMQP 0-9-1 with RabbitMQ's extensions, in both
//!   directions; [`FieldTable`] follows RabbitMQ's type tags; [`BasicProperties`] holds the 14
//!   basic properties.
//!
//! ```
//! use amqp_wire::{ChannelId, Frame, FrameDecoder, Method, methods::QueueDeclare, ShortStr};
//! use bytes::BytesMut;
//!
//! let declare = QueueDeclare { queue: ShortStr::from_static("jobs"), durable: true, ..Default::default() };
//! let mut wire = BytesMut::new();
//! Frame::Method(ChannelId(1), declare.clone().into()).encode(&mut wire).unwrap();
//!
//! let mut decoder = FrameDecoder::new(131_072);
//! let frame = decoder.decode(&mut wire).unwrap().unwrap();
//! assert_eq!(frame, Frame::Method(ChannelId(1), Method::QueueDeclare(declare)));
//! ```
#![forbid(unsafe_code)]

mod codec;
pub mod connection;
mod error;
pub mod frame;
pub mod table;
mod transmit;
mod types;

pub use codec::FrameDecoder;
pub use error::{DecodeError, ReplyCode};
pub use frame::content::{BasicProperties, ContentHeader};
pub use frame::method::Method;
pub use frame::methods;
pub use frame::{EncodeError, Frame, FrameType};
pub use table::{Decimal, FieldArray, FieldTable, FieldValue};
pub use transmit::{INLINE_BODY_MAX, Transmit};
pub use types::{ChannelId, DeliveryTag, LongStr, ProtocolVersion, ShortStr, ShortStrTooLong};
