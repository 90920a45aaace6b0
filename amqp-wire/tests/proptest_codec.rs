//! Property tests of the codec, through the public API only.
//!
//! - Every method, every field value type (nested tables and arrays included), and every basic
//!   property survives encode → decode.
//! - Random frames encoded back to back and fed to a [`FrameDecoder`] in arbitrary chunks come
//!   back as the same frames.
//! - No input makes a decoder panic: neither arbitrary bytes nor mutations of valid encodings.
//!
//! Values are compared twice: the re-encoded octets must equal the first encoding (which also
//! checks the payload bits of NaNs, since `NaN != NaN` defeats `==`), and the values must be
//! `==` whenever they hold no NaN.

use std::fmt::Debug;

use amqp_wire::methods::*;
use amqp_wire::table::MAX_DEPTH;
use amqp_wire::{
    BasicProperties, ChannelId, ContentHeader, Decimal, DeliveryTag, FieldArray, FieldTable,
    FieldValue, Frame, FrameDecoder, LongStr, Method, ReplyCode, ShortStr,
};
use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

// ---------------------------------------------------------------------------------------------
// Strategies: primitives and field tables
// ---------------------------------------------------------------------------------------------

/// Mostly readable names, sometimes any octets up to the 255 limit.
fn short_str() -> impl Strategy<Value = ShortStr> + Clone {
    prop_oneof![
        4 => "[a-z.]{0,40}".prop_map(|s| ShortStr::try_from(s).unwrap()),
        1 => vec(any::<u8>(), 0..=ShortStr::MAX_LEN)
            .prop_map(|v| ShortStr::from_bytes(Bytes::from(v)).unwrap()),
    ]
}

fn octets(max: usize) -> impl Strategy<Value = Bytes> + Clone {
    vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn long_str() -> impl Strategy<Value = LongStr> + Clone {
    octets(64).prop_map(LongStr)
}

/// Floats with special values (`any`) and every bit pattern, NaN payloads included.
fn f32_any() -> impl Strategy<Value = f32> + Clone {
    prop_oneof![any::<f32>(), any::<u32>().prop_map(f32::from_bits)]
}

fn f64_any() -> impl Strategy<Value = f64> + Clone {
    prop_oneof![any::<f64>(), any::<u64>().prop_map(f64::from_bits)]
}

/// Every field value type that holds no other value.
fn scalar_value() -> impl Strategy<Value = FieldValue> + Clone {
    prop_oneof![
        any::<bool>().prop_map(FieldValue::Bool),
        any::<i8>().prop_map(FieldValue::I8),
        any::<u8>().prop_map(FieldValue::U8),
        any::<i16>().prop_map(FieldValue::I16),
        any::<u16>().prop_map(FieldValue::U16),
        any::<i32>().prop_map(FieldValue::I32),
        any::<u32>().prop_map(FieldValue::U32),
        any::<i64>().prop_map(FieldValue::I64),
        f32_any().prop_map(FieldValue::F32),
        f64_any().prop_map(FieldValue::F64),
        (any::<u8>(), any::<u32>())
            .prop_map(|(scale, value)| FieldValue::Decimal(Decimal { scale, value })),
        long_str().prop_map(FieldValue::LongStr),
        octets(64).prop_map(FieldValue::Bytes),
        any::<u64>().prop_map(FieldValue::Timestamp),
        Just(FieldValue::Void),
    ]
}

fn table_of(entries: Vec<(ShortStr, FieldValue)>) -> FieldTable {
    let mut table = FieldTable::new();
    for (name, value) in entries {
        table.insert_short(name, value);
    }
    table
}

/// Any field value, tables and arrays nested up to four levels.
fn field_value() -> impl Strategy<Value = FieldValue> + Clone {
    scalar_value().prop_recursive(3, 48, 6, |inner| {
        prop_oneof![
            vec((short_str(), inner.clone()), 0..6)
                .prop_map(|entries| FieldValue::Table(table_of(entries))),
            vec(inner, 0..6).prop_map(|values| FieldValue::Array(FieldArray(values))),
        ]
    })
}

fn field_table() -> impl Strategy<Value = FieldTable> + Clone {
    vec((short_str(), field_value()), 0..8).prop_map(table_of)
}

/// A small table, for method arguments and headers.
fn arguments() -> impl Strategy<Value = FieldTable> + Clone {
    prop_oneof![
        2 => Just(FieldTable::new()),
        1 => vec((short_str(), field_value()), 0..4).prop_map(table_of),
    ]
}

// ---------------------------------------------------------------------------------------------
// Strategies: methods, one per class, then all of them
// ---------------------------------------------------------------------------------------------

fn reply_code() -> impl Strategy<Value = ReplyCode> + Clone {
    any::<u16>().prop_map(ReplyCode)
}

fn delivery_tag() -> impl Strategy<Value = DeliveryTag> + Clone {
    any::<u64>().prop_map(DeliveryTag)
}

fn connection_method() -> BoxedStrategy<Method> {
    let tune = || (any::<u16>(), any::<u32>(), any::<u16>());
    let close = || (reply_code(), short_str(), any::<u16>(), any::<u16>());
    prop_oneof![
        (
            any::<u8>(),
            any::<u8>(),
            field_table(),
            long_str(),
            long_str()
        )
            .prop_map(
                |(version_major, version_minor, server_properties, mechanisms, locales)| {
                    Method::ConnectionStart(ConnectionStart {
                        version_major,
                        version_minor,
                        server_properties,
                        mechanisms,
                        locales,
                    })
                }
            ),
        (field_table(), short_str(), long_str(), short_str()).prop_map(
            |(client_properties, mechanism, response, locale)| {
                Method::ConnectionStartOk(ConnectionStartOk {
                    client_properties,
                    mechanism,
                    response,
                    locale,
                })
            }
        ),
        long_str().prop_map(|challenge| Method::ConnectionSecure(ConnectionSecure { challenge })),
        long_str().prop_map(|response| Method::ConnectionSecureOk(ConnectionSecureOk { response })),
        tune().prop_map(|(channel_max, frame_max, heartbeat)| {
            Method::ConnectionTune(ConnectionTune {
                channel_max,
                frame_max,
                heartbeat,
            })
        }),
        tune().prop_map(|(channel_max, frame_max, heartbeat)| {
            Method::ConnectionTuneOk(ConnectionTuneOk {
                channel_max,
                frame_max,
                heartbeat,
            })
        }),
        short_str()
            .prop_map(|virtual_host| Method::ConnectionOpen(ConnectionOpen { virtual_host })),
        Just(Method::ConnectionOpenOk(ConnectionOpenOk)),
        close().prop_map(|(reply_code, reply_text, class_id, method_id)| {
            Method::ConnectionClose(ConnectionClose {
                reply_code,
                reply_text,
                class_id,
                method_id,
            })
        }),
        Just(Method::ConnectionCloseOk(ConnectionCloseOk)),
        short_str().prop_map(|reason| Method::ConnectionBlocked(ConnectionBlocked { reason })),
        Just(Method::ConnectionUnblocked(ConnectionUnblocked)),
        (long_str(), short_str()).prop_map(|(new_secret, reason)| {
            Method::ConnectionUpdateSecret(ConnectionUpdateSecret { new_secret, reason })
        }),
        Just(Method::ConnectionUpdateSecretOk(ConnectionUpdateSecretOk)),
    ]
    .boxed()
}

fn channel_method() -> BoxedStrategy<Method> {
    prop_oneof![
        Just(Method::ChannelOpen(ChannelOpen)),
        Just(Method::ChannelOpenOk(ChannelOpenOk)),
        any::<bool>().prop_map(|active| Method::ChannelFlow(ChannelFlow { active })),
        any::<bool>().prop_map(|active| Method::ChannelFlowOk(ChannelFlowOk { active })),
        (reply_code(), short_str(), any::<u16>(), any::<u16>()).prop_map(
            |(reply_code, reply_text, class_id, method_id)| {
                Method::ChannelClose(ChannelClose {
                    reply_code,
                    reply_text,
                    class_id,
                    method_id,
                })
            }
        ),
        Just(Method::ChannelCloseOk(ChannelCloseOk)),
    ]
    .boxed()
}

fn access_method() -> BoxedStrategy<Method> {
    prop_oneof![
        (short_str(), any::<[bool; 5]>()).prop_map(
            |(realm, [exclusive, passive, active, write, read])| {
                Method::AccessRequest(AccessRequest {
                    realm,
                    exclusive,
                    passive,
                    active,
                    write,
                    read,
                })
            }
        ),
        Just(Method::AccessRequestOk(AccessRequestOk)),
    ]
    .boxed()
}

fn exchange_method() -> BoxedStrategy<Method> {
    let binding = || {
        (
            short_str(),
            short_str(),
            short_str(),
            any::<bool>(),
            arguments(),
        )
    };
    prop_oneof![
        (short_str(), short_str(), any::<[bool; 5]>(), arguments()).prop_map(
            |(exchange, kind, [passive, durable, auto_delete, internal, no_wait], arguments)| {
                Method::ExchangeDeclare(ExchangeDeclare {
                    exchange,
                    kind,
                    passive,
                    durable,
                    auto_delete,
                    internal,
                    no_wait,
                    arguments,
                })
            }
        ),
        Just(Method::ExchangeDeclareOk(ExchangeDeclareOk)),
        (short_str(), any::<bool>(), any::<bool>()).prop_map(|(exchange, if_unused, no_wait)| {
            Method::ExchangeDelete(ExchangeDelete {
                exchange,
                if_unused,
                no_wait,
            })
        }),
        Just(Method::ExchangeDeleteOk(ExchangeDeleteOk)),
        binding().prop_map(|(destination, source, routing_key, no_wait, arguments)| {
            Method::ExchangeBind(ExchangeBind {
                destination,
                source,
                routing_key,
                no_wait,
                arguments,
            })
        }),
        Just(Method::ExchangeBindOk(ExchangeBindOk)),
        binding().prop_map(|(destination, source, routing_key, no_wait, arguments)| {
            Method::ExchangeUnbind(ExchangeUnbind {
                destination,
                source,
                routing_key,
                no_wait,
                arguments,
            })
        }),
        Just(Method::ExchangeUnbindOk(ExchangeUnbindOk)),
    ]
    .boxed()
}

fn queue_method() -> BoxedStrategy<Method> {
    prop_oneof![
        (short_str(), any::<[bool; 5]>(), arguments()).prop_map(
            |(queue, [passive, durable, exclusive, auto_delete, no_wait], arguments)| {
                Method::QueueDeclare(QueueDeclare {
                    queue,
                    passive,
                    durable,
                    exclusive,
                    auto_delete,
                    no_wait,
                    arguments,
                })
            }
        ),
        (short_str(), any::<u32>(), any::<u32>()).prop_map(
            |(queue, message_count, consumer_count)| {
                Method::QueueDeclareOk(QueueDeclareOk {
                    queue,
                    message_count,
                    consumer_count,
                })
            }
        ),
        (
            short_str(),
            short_str(),
            short_str(),
            any::<bool>(),
            arguments()
        )
            .prop_map(|(queue, exchange, routing_key, no_wait, arguments)| {
                Method::QueueBind(QueueBind {
                    queue,
                    exchange,
                    routing_key,
                    no_wait,
                    arguments,
                })
            }),
        Just(Method::QueueBindOk(QueueBindOk)),
        (short_str(), any::<bool>())
            .prop_map(|(queue, no_wait)| Method::QueuePurge(QueuePurge { queue, no_wait })),
        any::<u32>().prop_map(|message_count| Method::QueuePurgeOk(QueuePurgeOk { message_count })),
        (short_str(), any::<[bool; 3]>()).prop_map(|(queue, [if_unused, if_empty, no_wait])| {
            Method::QueueDelete(QueueDelete {
                queue,
                if_unused,
                if_empty,
                no_wait,
            })
        }),
        any::<u32>()
            .prop_map(|message_count| Method::QueueDeleteOk(QueueDeleteOk { message_count })),
        (short_str(), short_str(), short_str(), arguments()).prop_map(
            |(queue, exchange, routing_key, arguments)| {
                Method::QueueUnbind(QueueUnbind {
                    queue,
                    exchange,
                    routing_key,
                    arguments,
                })
            }
        ),
        Just(Method::QueueUnbindOk(QueueUnbindOk)),
    ]
    .boxed()
}

/// The `basic` methods that carry content.
fn basic_content_method() -> BoxedStrategy<Method> {
    prop_oneof![
        (short_str(), short_str(), any::<bool>(), any::<bool>()).prop_map(
            |(exchange, routing_key, mandatory, immediate)| {
                Method::BasicPublish(BasicPublish {
                    exchange,
                    routing_key,
                    mandatory,
                    immediate,
                })
            }
        ),
        (reply_code(), short_str(), short_str(), short_str()).prop_map(
            |(reply_code, reply_text, exchange, routing_key)| {
                Method::BasicReturn(BasicReturn {
                    reply_code,
                    reply_text,
                    exchange,
                    routing_key,
                })
            }
        ),
        (
            short_str(),
            delivery_tag(),
            any::<bool>(),
            short_str(),
            short_str()
        )
            .prop_map(
                |(consumer_tag, delivery_tag, redelivered, exchange, routing_key)| {
                    Method::BasicDeliver(BasicDeliver {
                        consumer_tag,
                        delivery_tag,
                        redelivered,
                        exchange,
                        routing_key,
                    })
                }
            ),
        (
            delivery_tag(),
            any::<bool>(),
            short_str(),
            short_str(),
            any::<u32>()
        )
            .prop_map(
                |(delivery_tag, redelivered, exchange, routing_key, message_count)| {
                    Method::BasicGetOk(BasicGetOk {
                        delivery_tag,
                        redelivered,
                        exchange,
                        routing_key,
                        message_count,
                    })
                }
            ),
    ]
    .boxed()
}

/// The `basic` methods without content.
fn basic_other_method() -> BoxedStrategy<Method> {
    prop_oneof![
        (any::<u32>(), any::<u16>(), any::<bool>()).prop_map(
            |(prefetch_size, prefetch_count, global)| {
                Method::BasicQos(BasicQos {
                    prefetch_size,
                    prefetch_count,
                    global,
                })
            }
        ),
        Just(Method::BasicQosOk(BasicQosOk)),
        (short_str(), short_str(), any::<[bool; 4]>(), arguments()).prop_map(
            |(queue, consumer_tag, [no_local, no_ack, exclusive, no_wait], arguments)| {
                Method::BasicConsume(BasicConsume {
                    queue,
                    consumer_tag,
                    no_local,
                    no_ack,
                    exclusive,
                    no_wait,
                    arguments,
                })
            }
        ),
        short_str()
            .prop_map(|consumer_tag| Method::BasicConsumeOk(BasicConsumeOk { consumer_tag })),
        (short_str(), any::<bool>()).prop_map(|(consumer_tag, no_wait)| {
            Method::BasicCancel(BasicCancel {
                consumer_tag,
                no_wait,
            })
        }),
        short_str().prop_map(|consumer_tag| Method::BasicCancelOk(BasicCancelOk { consumer_tag })),
        (short_str(), any::<bool>())
            .prop_map(|(queue, no_ack)| Method::BasicGet(BasicGet { queue, no_ack })),
        Just(Method::BasicGetEmpty(BasicGetEmpty)),
        (delivery_tag(), any::<bool>()).prop_map(|(delivery_tag, multiple)| {
            Method::BasicAck(BasicAck {
                delivery_tag,
                multiple,
            })
        }),
        (delivery_tag(), any::<bool>()).prop_map(|(delivery_tag, requeue)| {
            Method::BasicReject(BasicReject {
                delivery_tag,
                requeue,
            })
        }),
        any::<bool>().prop_map(|requeue| Method::BasicRecoverAsync(BasicRecoverAsync { requeue })),
        any::<bool>().prop_map(|requeue| Method::BasicRecover(BasicRecover { requeue })),
        Just(Method::BasicRecoverOk(BasicRecoverOk)),
        (delivery_tag(), any::<bool>(), any::<bool>()).prop_map(
            |(delivery_tag, multiple, requeue)| {
                Method::BasicNack(BasicNack {
                    delivery_tag,
                    multiple,
                    requeue,
                })
            }
        ),
    ]
    .boxed()
}

fn basic_method() -> BoxedStrategy<Method> {
    prop_oneof![4 => basic_content_method(), 11 => basic_other_method()].boxed()
}

fn confirm_method() -> BoxedStrategy<Method> {
    prop_oneof![
        any::<bool>().prop_map(|no_wait| Method::ConfirmSelect(ConfirmSelect { no_wait })),
        Just(Method::ConfirmSelectOk(ConfirmSelectOk)),
    ]
    .boxed()
}

fn tx_method() -> BoxedStrategy<Method> {
    prop_oneof![
        Just(Method::TxSelect(TxSelect)),
        Just(Method::TxSelectOk(TxSelectOk)),
        Just(Method::TxCommit(TxCommit)),
        Just(Method::TxCommitOk(TxCommitOk)),
        Just(Method::TxRollback(TxRollback)),
        Just(Method::TxRollbackOk(TxRollbackOk)),
    ]
    .boxed()
}

/// Any method, each class weighted by how many methods it has.
fn method() -> BoxedStrategy<Method> {
    prop_oneof![
        14 => connection_method(),
        6 => channel_method(),
        2 => access_method(),
        8 => exchange_method(),
        10 => queue_method(),
        18 => basic_method(),
        2 => confirm_method(),
        6 => tx_method(),
    ]
    .boxed()
}

// ---------------------------------------------------------------------------------------------
// Strategies: content and frames
// ---------------------------------------------------------------------------------------------

fn opt<T: Debug + Clone>(s: impl Strategy<Value = T> + Clone) -> impl Strategy<Value = Option<T>> {
    proptest::option::of(s)
}

fn basic_properties() -> impl Strategy<Value = BasicProperties> {
    let first = (
        opt(short_str()),
        opt(short_str()),
        opt(arguments()),
        opt(any::<u8>()),
        opt(any::<u8>()),
        opt(short_str()),
        opt(short_str()),
    );
    let second = (
        opt(short_str()),
        opt(short_str()),
        opt(any::<u64>()),
        opt(short_str()),
        opt(short_str()),
        opt(short_str()),
        opt(short_str()),
    );
    (first, second).prop_map(
        |(
            (
                content_type,
                content_encoding,
                headers,
                delivery_mode,
                priority,
                correlation_id,
                reply_to,
            ),
            (expiration, message_id, timestamp, kind, user_id, app_id, cluster_id),
        )| BasicProperties {
            content_type,
            content_encoding,
            headers,
            delivery_mode,
            priority,
            correlation_id,
            reply_to,
            expiration,
            message_id,
            timestamp,
            kind,
            user_id,
            app_id,
            cluster_id,
        },
    )
}

fn content_header() -> impl Strategy<Value = ContentHeader> {
    (any::<u64>(), basic_properties()).prop_map(|(body_size, properties)| ContentHeader {
        body_size,
        properties,
    })
}

/// Channels a content frame may use: anything but 0.
fn content_channel() -> impl Strategy<Value = ChannelId> {
    (1..=u16::MAX).prop_map(ChannelId)
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        4 => (any::<u16>(), method()).prop_map(|(c, m)| Frame::Method(ChannelId(c), m)),
        2 => (content_channel(), content_header()).prop_map(|(c, h)| Frame::Header(c, h)),
        2 => (content_channel(), octets(300)).prop_map(|(c, b)| Frame::Body(c, b)),
        1 => Just(Frame::Heartbeat),
    ]
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn encode_method(m: &Method) -> Bytes {
    let mut dst = BytesMut::new();
    m.encode(&mut dst);
    assert_eq!(dst.len(), m.encoded_len(), "encoded_len of {}", m.name());
    dst.freeze()
}

fn encode_header(h: &ContentHeader) -> Bytes {
    let mut dst = BytesMut::new();
    h.encode(&mut dst);
    assert_eq!(dst.len(), h.encoded_len(), "encoded_len of {h:?}");
    dst.freeze()
}

fn encode_table(t: &FieldTable) -> Bytes {
    let mut dst = BytesMut::new();
    t.encode(&mut dst);
    assert_eq!(dst.len(), t.encoded_len(), "encoded_len of {t:?}");
    dst.freeze()
}

fn encode_frame(f: &Frame) -> Bytes {
    let mut dst = BytesMut::new();
    f.encode(&mut dst).unwrap();
    assert_eq!(dst.len(), f.encoded_len(), "encoded_len of {f:?}");
    dst.freeze()
}

/// `==`, unless a NaN makes `==` meaningless (the callers compare octets as well).
fn assert_same<T: PartialEq + Debug>(decoded: &T, original: &T) {
    let (d, o) = (format!("{decoded:?}"), format!("{original:?}"));
    assert_eq!(d, o);
    if !o.contains("NaN") {
        assert_eq!(decoded, original);
    }
}

/// Decodes `bytes` with `decode`; if that succeeds, encoding the value and decoding again must
/// give the same value: whatever the decoder accepts, the encoder can write back.
fn stable_if_accepted<T: PartialEq + Debug, E>(
    bytes: &Bytes,
    decode: impl Fn(&Bytes) -> Result<T, E>,
    encode: impl Fn(&T) -> Bytes,
) {
    if let Ok(value) = decode(bytes) {
        let again = encode(&value);
        let Ok(back) = decode(&again) else {
            panic!("{value:?} decoded from {bytes:?} does not decode once re-encoded");
        };
        assert_same(&back, &value);
        assert_eq!(encode(&back), again);
    }
}

/// `bytes` with `edits` applied: each edit overwrites one octet, or truncates when `cut`.
fn mutate(bytes: &Bytes, edits: &[(Index, u8)], cut: Option<Index>) -> Bytes {
    let mut out = bytes.to_vec();
    if !out.is_empty() {
        for (at, value) in edits {
            let i = at.index(out.len());
            out[i] = *value;
        }
    }
    if let Some(cut) = cut {
        out.truncate(cut.index(out.len() + 1));
    }
    Bytes::from(out)
}

/// Decodes until the decoder wants more or fails; checks it always makes progress.
fn drain_decoder(decoder: &mut FrameDecoder, src: &mut BytesMut) -> (Vec<Frame>, bool) {
    let mut frames = Vec::new();
    loop {
        let before = src.len();
        match decoder.decode(src) {
            Ok(Some(frame)) => {
                assert!(src.len() < before, "a frame consumed nothing");
                frames.push(frame);
            }
            Ok(None) => return (frames, true),
            Err(_) => return (frames, false),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn every_method_round_trips(m in method()) {
        let wire = encode_method(&m);
        let back = Method::decode(&wire).unwrap();
        assert_same(&back, &m);
        prop_assert_eq!(encode_method(&back), wire);
        prop_assert_eq!((back.class_id(), back.method_id()), (m.class_id(), m.method_id()));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_field_value_type_round_trips(name in short_str(), value in field_value()) {
        let table = table_of(vec![(name.clone(), value.clone())]);
        let wire = encode_table(&table);
        // length, name, then the value's tag.
        prop_assert_eq!(wire[4 + 1 + name.len()], value.tag());
        let back = FieldTable::decode(&wire).unwrap();
        assert_same(&back, &table);
        prop_assert_eq!(encode_table(&back), wire);
    }

    #[test]
    fn nested_tables_round_trip(table in field_table()) {
        let wire = encode_table(&table);
        let back = FieldTable::decode(&wire).unwrap();
        assert_same(&back, &table);
        prop_assert_eq!(encode_table(&back), wire);
    }

    #[test]
    fn nesting_up_to_max_depth_round_trips_and_deeper_is_refused(depth in 0..MAX_DEPTH + 8) {
        let mut value = FieldValue::Void;
        for level in 0..depth {
            value = if level % 2 == 0 {
                FieldValue::Array(FieldArray(vec![value]))
            } else {
                FieldValue::Table(table_of(vec![(ShortStr::from_static("n"), value)]))
            };
        }
        let table = table_of(vec![(ShortStr::from_static("top"), value)]);
        let decoded = FieldTable::decode(&encode_table(&table));
        if depth <= MAX_DEPTH {
            prop_assert_eq!(decoded, Ok(table));
        } else {
            prop_assert_eq!(decoded, Err(amqp_wire::DecodeError::TableTooDeep));
        }
    }

    #[test]
    fn content_headers_round_trip(header in content_header()) {
        let wire = encode_header(&header);
        let back = ContentHeader::decode(&wire).unwrap();
        assert_same(&back, &header);
        prop_assert_eq!(encode_header(&back), wire);
        prop_assert_eq!(back.properties.flags() & 0b11, 0);
    }
}

// ---------------------------------------------------------------------------------------------
// Streams in arbitrary chunks
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_frame_stream_decodes_the_same_from_any_chunking(
        frames in vec(frame(), 0..12),
        splits in vec(any::<Index>(), 0..8),
        unlimited in any::<bool>(),
    ) {
        let mut stream = BytesMut::new();
        for f in &frames {
            stream.extend_from_slice(&encode_frame(f));
        }
        let mut cuts: Vec<usize> = splits.iter().map(|i| i.index(stream.len() + 1)).collect();
        cuts.push(stream.len());
        cuts.sort_unstable();

        let mut decoder = FrameDecoder::new(if unlimited { 0 } else { 1 << 20 });
        let mut src = BytesMut::new();
        let mut decoded = Vec::new();
        let mut start = 0;
        for cut in cuts {
            src.extend_from_slice(&stream[start..cut]);
            start = cut;
            let (more, ok) = drain_decoder(&mut decoder, &mut src);
            prop_assert!(ok, "a valid stream failed to decode");
            decoded.extend(more);
        }
        prop_assert!(src.is_empty(), "{} octets left over", src.len());
        assert_same(&decoded, &frames);
        let mut again = BytesMut::new();
        for f in &decoded {
            again.extend_from_slice(&encode_frame(f));
        }
        prop_assert_eq!(again, stream);
    }
}

// ---------------------------------------------------------------------------------------------
// Hostile input: no panic, ever
// ---------------------------------------------------------------------------------------------

/// Octets that `FrameDecoder` will read as one whole frame of type `kind`.
fn framed(kind: u8, channel: u16, payload: &[u8]) -> BytesMut {
    let mut f = BytesMut::with_capacity(payload.len() + 8);
    f.extend_from_slice(&[kind]);
    f.extend_from_slice(&channel.to_be_bytes());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f.extend_from_slice(&[0xce]);
    f
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic_the_frame_decoder(
        bytes in vec(any::<u8>(), 0..2048),
        max in prop_oneof![Just(0u32), Just(4096), Just(131_072)],
    ) {
        let mut src = BytesMut::from(&bytes[..]);
        drain_decoder(&mut FrameDecoder::new(max), &mut src);
    }

    #[test]
    fn arbitrary_payloads_in_well_formed_frames_never_panic(
        kind in prop::sample::select(vec![1u8, 2, 3, 8]),
        channel in any::<u16>(),
        payload in vec(any::<u8>(), 0..2048),
    ) {
        let mut src = framed(kind, channel, &payload);
        let mut decoder = FrameDecoder::new(0);
        if let (frames, true) = drain_decoder(&mut decoder, &mut src) {
            prop_assert_eq!(frames.len(), 1);
            prop_assert!(src.is_empty());
            let again = encode_frame(&frames[0]);
            let back = decoder.decode(&mut BytesMut::from(&again[..])).unwrap().unwrap();
            assert_same(&back, &frames[0]);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_payload_decoders(bytes in vec(any::<u8>(), 0..2048)) {
        let bytes = Bytes::from(bytes);
        stable_if_accepted(&bytes, Method::decode, encode_method);
        stable_if_accepted(&bytes, ContentHeader::decode, encode_header);
        stable_if_accepted(&bytes, FieldTable::decode, encode_table);
    }

    #[test]
    fn arbitrary_arguments_after_real_ids_never_panic(
        m in method(),
        tail in vec(any::<u8>(), 0..2048),
    ) {
        // Known class and method ids, so the argument parsers see the garbage.
        let mut payload = encode_method(&m)[..4].to_vec();
        payload.extend_from_slice(&tail);
        stable_if_accepted(&Bytes::from(payload), Method::decode, encode_method);
    }

    #[test]
    fn arbitrary_properties_after_a_real_header_start_never_panic(
        tail in vec(any::<u8>(), 0..2048),
    ) {
        // class 60, weight 0, then body size, flags and values from the garbage.
        let mut payload = vec![0, 60, 0, 0];
        payload.extend_from_slice(&tail);
        stable_if_accepted(&Bytes::from(payload), ContentHeader::decode, encode_header);
    }

    #[test]
    fn arbitrary_table_contents_never_panic(body in vec(any::<u8>(), 0..2048)) {
        // A length that matches, so the entry parsers see the garbage.
        let mut payload = (body.len() as u32).to_be_bytes().to_vec();
        payload.extend_from_slice(&body);
        stable_if_accepted(&Bytes::from(payload), FieldTable::decode, encode_table);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn mutated_methods_never_panic(
        m in method(),
        edits in vec((any::<Index>(), any::<u8>()), 0..4),
        cut in proptest::option::of(any::<Index>()),
    ) {
        let wire = mutate(&encode_method(&m), &edits, cut);
        stable_if_accepted(&wire, Method::decode, encode_method);
    }

    #[test]
    fn mutated_headers_never_panic(
        h in content_header(),
        edits in vec((any::<Index>(), any::<u8>()), 0..4),
        cut in proptest::option::of(any::<Index>()),
    ) {
        let wire = mutate(&encode_header(&h), &edits, cut);
        stable_if_accepted(&wire, ContentHeader::decode, encode_header);
    }

    #[test]
    fn mutated_tables_never_panic(
        t in field_table(),
        edits in vec((any::<Index>(), any::<u8>()), 0..4),
        cut in proptest::option::of(any::<Index>()),
    ) {
        let wire = mutate(&encode_table(&t), &edits, cut);
        stable_if_accepted(&wire, FieldTable::decode, encode_table);
    }

    #[test]
    fn mutated_frame_streams_never_panic(
        frames in vec(frame(), 1..6),
        edits in vec((any::<Index>(), any::<u8>()), 0..4),
        cut in proptest::option::of(any::<Index>()),
    ) {
        let mut stream = BytesMut::new();
        for f in &frames {
            stream.extend_from_slice(&encode_frame(f));
        }
        let wire = mutate(&stream.freeze(), &edits, cut);
        drain_decoder(&mut FrameDecoder::new(0), &mut BytesMut::from(&wire[..]));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// What a decoded table holds is proportional to its octets on the wire, whatever they
    /// are: no value decodes to more than a fixed multiple of the octets it took, so what a
    /// peer makes us hold is bounded by what it sent (and `frame_max` bounds that).
    #[test]
    fn decoded_tables_hold_memory_proportional_to_their_wire_size(table in field_table()) {
        let wire = encode_table(&table);
        let back = FieldTable::decode(&wire).unwrap();
        let bound = DECODED_PER_OCTET * wire.len() + size_of::<FieldTable>();
        prop_assert!(back.decoded_size() <= bound, "{} > {}", back.decoded_size(), bound);
    }

    /// The worst case for that bound: arrays of one-octet values (`V`, void), nested.
    #[test]
    fn arrays_of_voids_stay_within_the_bound(n in 0usize..5000, depth in 0usize..4) {
        let mut value = FieldValue::Array(FieldArray(vec![FieldValue::Void; n]));
        for _ in 0..depth {
            value = FieldValue::Array(FieldArray(vec![value.clone(), value]));
        }
        let table = table_of(vec![(ShortStr::from_static("v"), value)]);
        let wire = encode_table(&table);
        let back = FieldTable::decode(&wire).unwrap();
        let bound = DECODED_PER_OCTET * wire.len() + size_of::<FieldTable>();
        prop_assert!(back.decoded_size() <= bound, "{} > {}", back.decoded_size(), bound);
    }
}

/// The most memory one octet of a table on the wire decodes to: a one-octet value becomes a
/// `FieldValue`, in a vector that may have grown to twice its length.
const DECODED_PER_OCTET: usize = 2 * size_of::<(ShortStr, FieldValue)>();
