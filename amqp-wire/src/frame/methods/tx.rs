//! The `tx` class (90): transactions. No method has arguments.

/// `tx.select`: put the channel in transaction mode.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxSelect;

/// `tx.select-ok`: the channel is in transaction mode.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxSelectOk;

/// `tx.commit`: commit the publishes and acks since the last commit or rollback.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxCommit;

/// `tx.commit-ok`: the transaction is committed; a new one has begun.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxCommitOk;

/// `tx.rollback`: discard the publishes and acks since the last commit or rollback.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxRollback;

/// `tx.rollback-ok`: the transaction is rolled back; a new one has begun.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxRollbackOk;

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::error::DecodeError;
    use crate::frame::method::Method;
    use crate::frame::methods::testing::{check_vector, round_trip};

    #[test]
    fn every_tx_method_round_trips() {
        round_trip(TxSelect.into());
        round_trip(TxSelectOk.into());
        round_trip(TxCommit.into());
        round_trip(TxCommitOk.into());
        round_trip(TxRollback.into());
        round_trip(TxRollbackOk.into());
    }

    #[test]
    fn commit_is_class_90_method_20() {
        check_vector(3, TxCommit.into(), "01 00 03 00 00 00 04 00 5A 00 14 CE");
    }

    #[test]
    fn an_argument_after_a_bare_method_is_trailing() {
        let payload = Bytes::from_static(b"\x00\x5a\x00\x0a\x00");
        assert_eq!(Method::decode(&payload), Err(DecodeError::TrailingBytes(1)));
    }
}
