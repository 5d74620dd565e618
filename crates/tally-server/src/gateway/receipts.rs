//! A receipt by (lane, seq) (spec/HTTP.md §5.7): for a client that lost the end of a
//! streamed response, or its connection, and with it the receipt that travels at the end.

use super::*;

/// How far back, in records of the channel, a seq older than its lane's last is looked for.
/// A client asks for a receipt it just missed; older ones are in the records pages.
pub const RECEIPT_SCAN: u64 = 4096;

impl Gateway {
    /// The `PAYMENT-RESPONSE` value of the record answering `(lane, seq)`, and its index.
    ///
    /// Only a receipt already given out is signed again: a durable record, or a promised
    /// one (its response held). A record still waiting for durability in sync mode has no
    /// receipt yet (`lane_busy`: retry when it is answered), as a request still being
    /// served has none.
    pub async fn receipt_of(
        &self,
        channel: &ChannelId,
        lane: u32,
        seq: u64,
    ) -> Result<(u64, HeaderValue), GatewayError> {
        let mut guard = self.lock(channel).await?;
        let store = self.log()?;
        let st = loaded(&mut guard)?;
        st.sync_durable(&store).await?;
        let not_found = || {
            GatewayError::new(
                Reason::NotFound,
                format!("no record answers lane {lane} seq {seq}"),
            )
        };
        let busy = || {
            GatewayError::new(
                Reason::LaneBusy { lane, seq },
                format!("lane {lane} seq {seq} is still being answered; retry shortly"),
            )
        };
        let state = st.lanes.get(&lane).ok_or_else(not_found)?;
        if state.busy.is_some_and(|(s, _)| s == seq) {
            return Err(busy());
        }
        let last = state.last.as_ref().ok_or_else(not_found)?;
        let record = if last.seq == seq {
            if last.index >= st.durable.size && last.cached.is_none() {
                return Err(busy());
            }
            self.record_of(st, last.index).await?
        } else if seq < last.seq {
            let below = last.index.min(st.durable.size);
            drop(guard);
            let index = self.scan_for(channel, lane, seq, below).await?;
            self.stored_record(channel, index.ok_or_else(not_found)?)
                .await?
        } else {
            return Err(not_found());
        };
        let a = &record.authorization;
        if a.lane != lane || a.seq != seq {
            return Err(GatewayError::internal(format!(
                "record {} answers lane {} seq {}, not lane {lane} seq {seq}",
                record.outcome.index, a.lane, a.seq
            )));
        }
        let payer = self.inner.funding.get(channel).await?.payer.to_string();
        let (_, header) = self.sign_receipt(record.outcome, &payer)?;
        Ok((record.outcome.index, header))
    }

    /// The index of `(lane, seq)` among the durable records below `below`, looking back at
    /// most [`RECEIPT_SCAN`] records; seqs only grow along a lane, so the scan stops at the
    /// lane's first record below `seq`.
    async fn scan_for(
        &self,
        channel: &ChannelId,
        lane: u32,
        seq: u64,
        below: u64,
    ) -> Result<Option<u64>, GatewayError> {
        let from = below.saturating_sub(RECEIPT_SCAN);
        let records = self.log()?.records(channel, from..below).await?;
        for (offset, bytes) in records.iter().enumerate().rev() {
            let record = Record::from_bytes(bytes)
                .map_err(|e| GatewayError::internal(format!("stored record: {e}")))?;
            let a = &record.authorization;
            if a.lane != lane {
                continue;
            }
            if a.seq == seq {
                return Ok(Some(from + offset as u64));
            }
            if a.seq < seq {
                return Ok(None);
            }
        }
        Ok(None)
    }
}
