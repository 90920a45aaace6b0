//! The `Method` enum and the (class, method) id table that dispatches to the method structs.

use bytes::{BufMut, Bytes, BytesMut};

use super::methods::*;
use super::wire::{self, PResult, fail, named, short};
use crate::error::DecodeError;

/// What every method struct implements: its arguments' wire form.
pub(crate) trait Args: Sized {
    /// Parses the arguments (after the class and method ids). `i` is a sub-slice of `src`.
    fn decode<'a>(src: &Bytes, i: &'a [u8]) -> PResult<'a, Self>;
    /// Writes the arguments.
    fn encode(&self, dst: &mut BytesMut);
    /// The exact number of octets [`Args::encode`] writes.
    fn encoded_len(&self) -> usize;
}

/// Implements [`Args`] for methods without arguments.
macro_rules! no_args {
    ($($name:ident),* $(,)?) => {$(
        impl Args for $name {
            fn decode<'a>(_src: &Bytes, i: &'a [u8]) -> PResult<'a, Self> {
                Ok((i, Self))
            }
            fn encode(&self, _dst: &mut BytesMut) {}
            fn encoded_len(&self) -> usize {
                0
            }
        }
    )*};
}

no_args!(
    ConnectionCloseOk,
    ConnectionUnblocked,
    ConnectionUpdateSecretOk,
    ChannelCloseOk,
    ExchangeDeclareOk,
    ExchangeDeleteOk,
    ExchangeBindOk,
    ExchangeUnbindOk,
    QueueBindOk,
    QueueUnbindOk,
    BasicQosOk,
    BasicRecoverOk,
    ConfirmSelectOk,
    TxSelect,
    TxSelectOk,
    TxCommit,
    TxCommitOk,
    TxRollback,
    TxRollbackOk,
);

/// The id table: one line per method, `Struct = class/method "class.method"`.
macro_rules! methods {
    ($($name:ident = $class:literal / $method:literal $text:literal,)*) => {
        /// Any AMQP 0-9-1 method, client's and server's alike; one variant per method struct.
        #[derive(Clone, Debug, PartialEq)]
        #[non_exhaustive]
        pub enum Method {
            $(
                #[doc = concat!("`", $text, "` (", $class, "/", $method, ")")]
                $name($name),
            )*
        }

        $(
            impl $name {
                /// The class id on the wire.
                pub const CLASS_ID: u16 = $class;
                /// The method id on the wire.
                pub const METHOD_ID: u16 = $method;
            }

            impl From<$name> for Method {
                fn from(m: $name) -> Self {
                    Self::$name(m)
                }
            }
        )*

        impl Method {
            /// The class id.
            pub fn class_id(&self) -> u16 {
                match self { $(Self::$name(_) => $class,)* }
            }

            /// The method id.
            pub fn method_id(&self) -> u16 {
                match self { $(Self::$name(_) => $method,)* }
            }

            /// The spec's name, such as `"queue.declare"`.
            pub fn name(&self) -> &'static str {
                match self { $(Self::$name(_) => $text,)* }
            }

            #[inline]
            fn decode_args<'a>(
                class_id: u16,
                method_id: u16,
                src: &Bytes,
                i: &'a [u8],
            ) -> PResult<'a, Self> {
                // `named` rather than nom's `context`: the name is only made on failure.
                match (class_id, method_id) {
                    $((
                        $class, $method) => {
                            let (i, m) = named($name::decode(src, i), $text)?;
                            Ok((i, Self::$name(m)))
                        }
                    )*
                    _ => fail(DecodeError::UnknownMethod { class_id, method_id }),
                }
            }

            fn args_len(&self) -> usize {
                match self { $(Self::$name(m) => m.encoded_len(),)* }
            }

            fn encode_args(&self, dst: &mut BytesMut) {
                match self { $(Self::$name(m) => m.encode(dst),)* }
            }
        }
    };
}

methods! {
    ConnectionStart = 10/10 "connection.start",
    ConnectionStartOk = 10/11 "connection.start-ok",
    ConnectionSecure = 10/20 "connection.secure",
    ConnectionSecureOk = 10/21 "connection.secure-ok",
    ConnectionTune = 10/30 "connection.tune",
    ConnectionTuneOk = 10/31 "connection.tune-ok",
    ConnectionOpen = 10/40 "connection.open",
    ConnectionOpenOk = 10/41 "connection.open-ok",
    ConnectionClose = 10/50 "connection.close",
    ConnectionCloseOk = 10/51 "connection.close-ok",
    ConnectionBlocked = 10/60 "connection.blocked",
    ConnectionUnblocked = 10/61 "connection.unblocked",
    ConnectionUpdateSecret = 10/70 "connection.update-secret",
    ConnectionUpdateSecretOk = 10/71 "connection.update-secret-ok",
    ChannelOpen = 20/10 "channel.open",
    ChannelOpenOk = 20/11 "channel.open-ok",
    ChannelFlow = 20/20 "channel.flow",
    ChannelFlowOk = 20/21 "channel.flow-ok",
    ChannelClose = 20/40 "channel.close",
    ChannelCloseOk = 20/41 "channel.close-ok",
    AccessRequest = 30/10 "access.request",
    AccessRequestOk = 30/11 "access.request-ok",
    ExchangeDeclare = 40/10 "exchange.declare",
    ExchangeDeclareOk = 40/11 "exchange.declare-ok",
    ExchangeDelete = 40/20 "exchange.delete",
    ExchangeDeleteOk = 40/21 "exchange.delete-ok",
    ExchangeBind = 40/30 "exchange.bind",
    ExchangeBindOk = 40/31 "exchange.bind-ok",
    ExchangeUnbind = 40/40 "exchange.unbind",
    ExchangeUnbindOk = 40/51 "exchange.unbind-ok",
    QueueDeclare = 50/10 "queue.declare",
    QueueDeclareOk = 50/11 "queue.declare-ok",
    QueueBind = 50/20 "queue.bind",
    QueueBindOk = 50/21 "queue.bind-ok",
    QueuePurge = 50/30 "queue.purge",
    QueuePurgeOk = 50/31 "queue.purge-ok",
    QueueDelete = 50/40 "queue.delete",
    QueueDeleteOk = 50/41 "queue.delete-ok",
    QueueUnbind = 50/50 "queue.unbind",
    QueueUnbindOk = 50/51 "queue.unbind-ok",
    BasicQos = 60/10 "basic.qos",
    BasicQosOk = 60/11 "basic.qos-ok",
    BasicConsume = 60/20 "basic.consume",
    BasicConsumeOk = 60/21 "basic.consume-ok",
    BasicCancel = 60/30 "basic.cancel",
    BasicCancelOk = 60/31 "basic.cancel-ok",
    BasicPublish = 60/40 "basic.publish",
    BasicReturn = 60/50 "basic.return",
    BasicDeliver = 60/60 "basic.deliver",
    BasicGet = 60/70 "basic.get",
    BasicGetOk = 60/71 "basic.get-ok",
    BasicGetEmpty = 60/72 "basic.get-empty",
    BasicAck = 60/80 "basic.ack",
    BasicReject = 60/90 "basic.reject",
    BasicRecoverAsync = 60/100 "basic.recover-async",
    BasicRecover = 60/110 "basic.recover",
    BasicRecoverOk = 60/111 "basic.recover-ok",
    BasicNack = 60/120 "basic.nack",
    ConfirmSelect = 85/10 "confirm.select",
    ConfirmSelectOk = 85/11 "confirm.select-ok",
    TxSelect = 90/10 "tx.select",
    TxSelectOk = 90/11 "tx.select-ok",
    TxCommit = 90/20 "tx.commit",
    TxCommitOk = 90/21 "tx.commit-ok",
    TxRollback = 90/30 "tx.rollback",
    TxRollbackOk = 90/31 "tx.rollback-ok",
}

impl Method {
    /// Decodes a method frame's whole payload: class id, method id, arguments.
    ///
    /// Strings and tables in the result are slices of `payload`.
    ///
    /// # Errors
    /// [`DecodeError::UnknownMethod`] for an id pair not in the table, otherwise a syntax error
    /// for short, malformed or over-long arguments.
    pub fn decode(payload: &Bytes) -> Result<Self, DecodeError> {
        wire::finish(Self::parse(payload))
    }

    #[inline]
    fn parse(payload: &Bytes) -> PResult<'_, Self> {
        let (i, class_id) = short(payload)?;
        let (i, method_id) = short(i)?;
        Self::decode_args(class_id, method_id, payload, i)
    }

    /// The exact size of the payload [`Method::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        4 + self.args_len()
    }

    /// Writes the payload: class id, method id, arguments (no frame header).
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.reserve(self.encoded_len());
        dst.put_u16(self.class_id());
        dst.put_u16(self.method_id());
        self.encode_args(dst);
    }

    /// The (class, method) ids of the replies a peer may answer this method with; empty for
    /// an asynchronous method and for one sent with `nowait` set.
    pub fn replies(&self) -> &'static [(u16, u16)] {
        match self {
            Self::ConnectionStart(_) => &[(10, 11)],
            Self::ConnectionSecure(_) => &[(10, 21)],
            Self::ConnectionTune(_) => &[(10, 31)],
            Self::ConnectionOpen(_) => &[(10, 41)],
            Self::ConnectionClose(_) => &[(10, 51)],
            Self::ConnectionUpdateSecret(_) => &[(10, 71)],
            Self::ChannelOpen(_) => &[(20, 11)],
            Self::ChannelFlow(_) => &[(20, 21)],
            Self::ChannelClose(_) => &[(20, 41)],
            Self::AccessRequest(_) => &[(30, 11)],
            Self::ExchangeDeclare(m) if !m.no_wait => &[(40, 11)],
            Self::ExchangeDelete(m) if !m.no_wait => &[(40, 21)],
            Self::ExchangeBind(m) if !m.no_wait => &[(40, 31)],
            Self::ExchangeUnbind(m) if !m.no_wait => &[(40, 51)],
            Self::QueueDeclare(m) if !m.no_wait => &[(50, 11)],
            Self::QueueBind(m) if !m.no_wait => &[(50, 21)],
            Self::QueuePurge(m) if !m.no_wait => &[(50, 31)],
            Self::QueueDelete(m) if !m.no_wait => &[(50, 41)],
            // queue.unbind has no nowait bit.
            Self::QueueUnbind(_) => &[(50, 51)],
            Self::BasicQos(_) => &[(60, 11)],
            Self::BasicConsume(m) if !m.no_wait => &[(60, 21)],
            Self::BasicCancel(m) if !m.no_wait => &[(60, 31)],
            Self::BasicGet(_) => &[(60, 71), (60, 72)],
            // The XML forgets recover-ok (errata 28); RabbitMQ sends it.
            Self::BasicRecover(_) => &[(60, 111)],
            Self::ConfirmSelect(m) if !m.no_wait => &[(85, 11)],
            Self::TxSelect(_) => &[(90, 11)],
            Self::TxCommit(_) => &[(90, 21)],
            Self::TxRollback(_) => &[(90, 31)],
            _ => &[],
        }
    }

    /// The (class, method) ids.
    pub fn id(&self) -> (u16, u16) {
        (self.class_id(), self.method_id())
    }

    /// True for the methods that a content header and body follow: `basic.publish`,
    /// `basic.return`, `basic.deliver` and `basic.get-ok`.
    pub fn has_content(&self) -> bool {
        matches!(
            self,
            Self::BasicPublish(_)
                | Self::BasicReturn(_)
                | Self::BasicDeliver(_)
                | Self::BasicGetOk(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::methods::testing::round_trip;

    /// Every reply id in `replies` names a method of the table, and the `-ok` one at that.
    #[test]
    fn reply_ids_name_the_ok_methods() {
        let requests: Vec<Method> = vec![
            ConnectionStart::default().into(),
            ConnectionSecure::default().into(),
            ConnectionTune::default().into(),
            ConnectionOpen::default().into(),
            ConnectionClose::default().into(),
            ConnectionUpdateSecret::default().into(),
            ChannelOpen.into(),
            ChannelFlow::default().into(),
            ChannelClose::default().into(),
            ExchangeDeclare::default().into(),
            ExchangeDelete::default().into(),
            ExchangeBind::default().into(),
            ExchangeUnbind::default().into(),
            QueueDeclare::default().into(),
            QueueBind::default().into(),
            QueuePurge::default().into(),
            QueueDelete::default().into(),
            QueueUnbind::default().into(),
            BasicQos::default().into(),
            BasicConsume::default().into(),
            BasicCancel::default().into(),
            BasicGet::default().into(),
            BasicRecover::default().into(),
            ConfirmSelect::default().into(),
            TxSelect.into(),
            TxCommit.into(),
            TxRollback.into(),
        ];
        for request in requests {
            let replies = request.replies();
            assert!(!replies.is_empty(), "{} has no reply", request.name());
            for &(class_id, method_id) in replies {
                let mut payload = BytesMut::new();
                payload.put_u16(class_id);
                payload.put_u16(method_id);
                // Decoding only the ids proves the pair is in the table (arguments are short).
                let err = Method::decode(&payload.freeze());
                assert!(
                    !matches!(err, Err(DecodeError::UnknownMethod { .. })),
                    "{} -> {class_id}/{method_id} is not a method",
                    request.name()
                );
            }
        }
        let no_wait = QueueDeclare {
            no_wait: true,
            ..Default::default()
        };
        assert!(Method::from(no_wait).replies().is_empty());
        assert!(Method::from(BasicPublish::default()).replies().is_empty());
        round_trip(TxSelect.into());
    }
}
