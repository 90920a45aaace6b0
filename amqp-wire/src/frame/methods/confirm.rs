//! The `confirm` class (85): publisher confirms, a RabbitMQ extension.

use bytes::{BufMut, Bytes, BytesMut};

use crate::frame::method::Args;
use crate::frame::wire::{PResult, bit, flag, octet};

const SELECT_NO_WAIT: u8 = 0x01;

/// `confirm.select`: put the channel in confirm mode; each publish is then acked or nacked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfirmSelect {
    /// Do not answer with `confirm.select-ok`.
    pub no_wait: bool,
}

impl Args for ConfirmSelect {
    fn decode<'a>(_src: &Bytes, i: &'a [u8]) -> PResult<'a, Self> {
        let (i, bits) = octet(i)?;
        Ok((
            i,
            Self {
                no_wait: bit(bits, SELECT_NO_WAIT),
            },
        ))
    }
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u8(flag(self.no_wait, SELECT_NO_WAIT));
    }
    fn encoded_len(&self) -> usize {
        1
    }
}

/// `confirm.select-ok`: the channel is in confirm mode; delivery tags start at 1.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfirmSelectOk;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::methods::testing::{check_vector, round_trip};

    #[test]
    fn every_confirm_method_round_trips() {
        round_trip(ConfirmSelect { no_wait: true }.into());
        round_trip(ConfirmSelect { no_wait: false }.into());
        round_trip(ConfirmSelectOk.into());
    }

    #[test]
    fn select_vector_14() {
        check_vector(
            1,
            ConfirmSelect::default().into(),
            "01 00 01 00 00 00 05 00 55 00 0A 00 CE",
        );
    }

    #[test]
    fn select_no_wait_is_bit_0() {
        check_vector(
            1,
            ConfirmSelect { no_wait: true }.into(),
            "01 00 01 00 00 00 05 00 55 00 0A 01 CE",
        );
    }
}
