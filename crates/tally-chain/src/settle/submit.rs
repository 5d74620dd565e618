//! The claim in flight (module docs of [`super`]): signing locally before broadcasting, so
//! the hash and nonce are recorded first; following it to `confirmations` deep; re-broadcasting
//! the same bytes or replacing them with raised fees under the same nonce.

use super::*;
use fees::{bumped_fees, initial_fees, urgent_fees};

impl<S: CheckpointSource> SettlementWorker<S> {
    /// Simulates a single `claim` of `c` and sends it if the contract would accept it; a
    /// refusal goes to `rejected`. Returns whether a claim was sent. An `urgent` claim of a
    /// withdrawing channel bids by its deadline ([`urgent_fees`]).
    pub(super) async fn submit_alone(
        &mut self,
        c: &Candidate,
        urgent: bool,
        report: &mut TickReport,
    ) -> Result<bool, ChainError> {
        let id = c.cp.checkpoint.channel_id;
        match self.client.simulate_claim(&c.cp).await {
            Ok(()) => {}
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => {
                report.rejected.push((id, e.to_string()));
                return Ok(false);
            }
        }
        let expected = HashMap::from([(id, c.capped)]);
        let deadline = match c.why {
            Why::Withdrawing { at } if urgent => Some(at),
            _ => None,
        };
        self.submit(std::slice::from_ref(&c.cp), &expected, deadline, report)
            .await?;
        Ok(true)
    }

    /// A batch failed simulation or would skip entries: keep only the entries a single
    /// `claim` accepts now.
    pub(super) async fn isolate_failures(
        &self,
        batch: Vec<ChainCheckpoint>,
        report: &mut TickReport,
    ) -> Result<Vec<ChainCheckpoint>, ChainError> {
        let mut good = Vec::new();
        for cp in batch {
            match self.client.simulate_claim(&cp).await {
                Ok(()) => good.push(cp),
                Err(e) if e.is_transient() => return Err(e),
                Err(e) => report
                    .rejected
                    .push((cp.checkpoint.channel_id, e.to_string())),
            }
        }
        Ok(good)
    }

    /// Signs a claim for `batch` at the account's mined nonce, records it as in flight, then
    /// broadcasts it. A broadcast error is returned but the claim stays in flight.
    pub(super) async fn submit(
        &mut self,
        batch: &[ChainCheckpoint],
        expected: &HashMap<ChannelId, u128>,
        deadline: Option<u64>,
        report: &mut TickReport,
    ) -> Result<(), ChainError> {
        let sender = self.client.sender();
        let call = if let [one] = batch {
            self.client
                .contract()
                .claim(one.to_abi())
                .from(sender)
                .into_transaction_request()
        } else {
            let items = batch.iter().map(ChainCheckpoint::to_abi).collect();
            self.client
                .contract()
                .claimMany(items)
                .from(sender)
                .into_transaction_request()
        };
        let expect = batch
            .iter()
            .map(|c| {
                let id = c.checkpoint.channel_id;
                let capped = expected.get(&id).copied().unwrap_or(0);
                (id, c.checkpoint.size, capped)
            })
            .collect();
        let hash = self
            .send_call(call, expect, Vec::new(), batch.len() > 1, deadline, None)
            .await?;
        let channels = batch.iter().map(|c| c.checkpoint.channel_id).collect();
        report.submitted = Some((hash, channels));
        self.broadcast_and_check(report).await
    }

    /// Signs `call` at the account's mined nonce and records it as the transaction in flight
    /// (a claim with its `expect`ed states, a payout of `payouts`, or the agreed `close` of a
    /// channel); returns its hash.
    /// [`broadcast_and_check`](Self::broadcast_and_check) sends it.
    pub(super) async fn send_call(
        &mut self,
        call: TransactionRequest,
        expect: Vec<(ChannelId, u64, u128)>,
        payouts: Vec<ChannelId>,
        batch: bool,
        deadline: Option<u64>,
        close: Option<ChannelId>,
    ) -> Result<B256, ChainError> {
        let provider = self.client.provider().clone();
        let sender = self.client.sender();
        let nonce = provider.get_transaction_count(sender).latest().await?;
        let gas = provider.estimate_gas(call.clone()).await?;
        let request = call
            .with_nonce(nonce)
            .with_chain_id(self.client.chain_id())
            // Headroom: a replacement may be mined against slightly different state.
            .with_gas_limit(gas.saturating_add(gas / 5));
        let market = self.market_for(&provider, deadline).await?;
        let fees = initial_fees(market, self.config.max_fee_per_gas);
        let attempt = sign(&self.wallet, &request, fees).await?;
        let hash = attempt.hash;
        self.in_flight = Some(InFlight {
            nonce,
            request,
            newest: attempt,
            replaced: Vec::new(),
            signed_at: Instant::now(),
            expect,
            payouts,
            batch,
            deadline,
            close,
        });
        if close.is_some() {
            self.stats.closes.push(hash);
        } else if flight_is_claim(&self.in_flight) {
            self.stats.submitted.push(hash);
        } else {
            self.stats.payouts.push(hash);
        }
        Ok(hash)
    }

    /// Broadcasts the transaction in flight (just signed by `send_call`) and looks for its
    /// receipt at once. A broadcast error is returned but the transaction stays in flight.
    pub(super) async fn broadcast_and_check(
        &mut self,
        report: &mut TickReport,
    ) -> Result<(), ChainError> {
        let Some(flight) = &self.in_flight else {
            return Ok(());
        };
        let (hash, raw) = (flight.newest.hash, flight.newest.raw.clone());
        let provider = self.client.provider().clone();
        broadcast(&provider, hash, &raw).await?;
        // A fast chain may already have mined it; look now rather than next tick.
        self.check_in_flight(report, false).await?;
        Ok(())
    }

    /// Follows the claim in flight. Returns true when nothing is in flight any more (so a new
    /// claim may be signed). With `may_resend`, also handles an unmined claim: abandons it if
    /// its nonce was used by something else, replaces it with higher fees after
    /// `pending_timeout`, or re-broadcasts it when the node does not know it.
    pub(super) async fn check_in_flight(
        &mut self,
        report: &mut TickReport,
        may_resend: bool,
    ) -> Result<bool, ChainError> {
        let Some(flight) = &self.in_flight else {
            return Ok(true);
        };
        let provider = self.client.provider().clone();
        // Read before the receipts: a nonce used by then would show one of ours as mined.
        let mined_nonce = if may_resend {
            Some(
                provider
                    .get_transaction_count(self.client.sender())
                    .latest()
                    .await?,
            )
        } else {
            None
        };
        let versions = std::iter::once(flight.newest.hash).chain(flight.replaced.iter().copied());
        for hash in versions {
            let Some(receipt) = provider.get_transaction_receipt(hash).await? else {
                continue;
            };
            let head = provider.get_block_number().await?;
            let mined_in = receipt.block_number.unwrap_or(head);
            if head.saturating_add(1) < mined_in.saturating_add(self.config.confirmations) {
                report.waiting_on = Some(hash);
                return Ok(false);
            }
            let ok = receipt.status();
            report.confirmed = Some((hash, ok));
            let skipped = if ok && flight.batch {
                skipped_in(&receipt, self.client.address())
            } else {
                Vec::new()
            };
            for (id, size, claimed) in &flight.expect {
                if skipped.iter().any(|(s, _)| s == id) {
                    // Skipped: the chain did not move; re-read it before any new claim.
                    self.known.remove(id);
                } else if ok {
                    self.known.insert(*id, (*size, *claimed));
                    // Owed from the end of its window: `pay_out` reads when that is.
                    self.unpaid.insert(*id, 0);
                } else {
                    // Reverted: forget what we assumed, so the next tick re-reads the chain.
                    self.known.remove(id);
                }
            }
            if ok {
                for id in &flight.payouts {
                    self.unpaid.remove(id);
                }
            }
            let closed = flight.close.filter(|_| ok);
            self.in_flight = None;
            if let Some(id) = closed {
                self.mark_closed(&id);
                report.closed = Some(id);
            }
            for (id, why) in &skipped {
                self.stats.skipped += 1;
                if self.quarantined.insert(*id, why.clone()).is_none() {
                    self.stats.quarantined.push(*id);
                }
            }
            report.skipped = skipped;
            return Ok(true);
        }
        let newest = &flight.newest;
        let Some(mined_nonce) = mined_nonce else {
            report.waiting_on = Some(newest.hash);
            return Ok(false);
        };
        if mined_nonce > flight.nonce {
            // Something else used the nonce, so no version can be mined any more. Fresh reads
            // decide what to claim next.
            report.abandoned = Some(newest.hash);
            for (id, _, _) in &flight.expect {
                self.known.remove(id);
            }
            self.in_flight = None;
            return Ok(true);
        }
        let timeout = if flight.deadline.is_some() {
            self.config.urgent_pending_timeout
        } else {
            self.config.pending_timeout
        };
        if flight.signed_at.elapsed() >= timeout {
            let market = self.market_for(&provider, flight.deadline).await?;
            if let Some(fees) = bumped_fees(newest.fees, market, self.config.max_fee_per_gas) {
                let attempt = sign(&self.wallet, &flight.request, fees).await?;
                let (hash, raw) = (attempt.hash, attempt.raw.clone());
                if let Some(flight) = self.in_flight.as_mut() {
                    let old = std::mem::replace(&mut flight.newest, attempt);
                    flight.replaced.push(old.hash);
                    flight.signed_at = Instant::now();
                }
                self.stats.resent.push(hash);
                report.resent = Some(hash);
                report.waiting_on = Some(hash);
                broadcast(&provider, hash, &raw).await?;
                return Ok(false);
            }
        }
        let (hash, raw) = (newest.hash, newest.raw.clone());
        report.waiting_on = Some(hash);
        if provider.get_transaction_by_hash(hash).await?.is_none() {
            // The broadcast failed, or the node dropped it: the same signed bytes again.
            report.rebroadcast = Some(hash);
            broadcast(&provider, hash, &raw).await?;
        }
        Ok(false)
    }
}

impl<S> SettlementWorker<S> {
    /// The fees to bid from: the market estimate, scaled by [`urgent_fees`] when the claim
    /// has a `deadline` (its window closes then, chain time).
    async fn market_for(
        &self,
        provider: &DynProvider,
        deadline: Option<u64>,
    ) -> Result<FeeBid, ChainError> {
        let market = market_fees(provider).await?;
        let Some(at) = deadline else {
            return Ok(market);
        };
        let now = provider
            .get_block_by_number(BlockNumberOrTag::Latest)
            .await?
            .ok_or_else(|| ChainError::Rpc("node has no latest block".into()))?
            .header
            .timestamp;
        let margin = self.config.deadline_margin.as_secs();
        Ok(urgent_fees(market, at.saturating_sub(now), margin))
    }
}

async fn market_fees(provider: &DynProvider) -> Result<FeeBid, ChainError> {
    let est = provider.estimate_eip1559_fees().await?;
    Ok(FeeBid {
        max_fee_per_gas: est.max_fee_per_gas,
        max_priority_fee_per_gas: est.max_priority_fee_per_gas,
    })
}

/// Signs `request` with `fees`, locally: the hash is known before anything is sent.
async fn sign(
    wallet: &EthereumWallet,
    request: &TransactionRequest,
    fees: FeeBid,
) -> Result<Attempt, ChainError> {
    let envelope = request
        .clone()
        .with_max_fee_per_gas(fees.max_fee_per_gas)
        .with_max_priority_fee_per_gas(fees.max_priority_fee_per_gas)
        .build(wallet)
        .await
        .map_err(|e| ChainError::Signature(format!("signing a claim transaction: {e}")))?;
    Ok(Attempt {
        hash: *envelope.tx_hash(),
        fees,
        raw: envelope.encoded_2718(),
    })
}

fn flight_is_claim(flight: &Option<InFlight>) -> bool {
    flight.as_ref().is_some_and(|f| f.payouts.is_empty())
}

/// Sends signed bytes. An error is ignored when the node has the transaction anyway (it was
/// already known, or the answer was lost after the node accepted it).
async fn broadcast(provider: &DynProvider, hash: B256, raw: &[u8]) -> Result<(), ChainError> {
    let Err(e) = provider.send_raw_transaction(raw).await else {
        return Ok(());
    };
    match provider.get_transaction_by_hash(hash).await {
        Ok(Some(_)) => Ok(()),
        _ => Err(ChainError::from(e)),
    }
}
