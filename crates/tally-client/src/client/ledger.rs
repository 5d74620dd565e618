//! What the client does with its verified mirror besides paying: checkpoints (signed over
//! the mirror's head only, spec/PROTOCOL.md §5.5 and §6), the cooperative close, the audit
//! of the provider's log, proof bundles (§7.3) and disputes (spec/HTTP.md §7).

use alloy::primitives::Address;
use http::{HeaderMap, Method};
use tally_chain::{ChainCheckpoint, CloseAgreement};
use tally_core::{Checkpoint, SignedCheckpoint};
use tally_http::api::{
    CloseRequest, CloseSigned, DisputeGranted, DisputeRequest, DisputedExchange, RecordsPage,
};
use tally_http::headers::API_PREFIX;
use tally_http::payment::WireEip712Sig;
use tally_http::{Amount, WireCheckpoint};

use super::{paid, Client, Expect, State};
use crate::error::{ClientError, Misbehavior};
use crate::statement::{verify_statement, Statement};

impl Client {
    /// The mirror's head as a checkpoint: the state this client verified record by record.
    pub(super) fn head_checkpoint(&self, st: &State) -> Checkpoint {
        Checkpoint {
            channel_id: self.channel,
            size: st.mirror.size(),
            root: st.mirror.root(),
            cumulative: st.mirror.cumulative(),
        }
    }

    /// The EIP-712 domain of the terms' chain and contract.
    pub(super) fn domain(st: &State) -> alloy::sol_types::Eip712Domain {
        tally_chain::eip712::domain(st.terms.terms.chain.chain_id, st.contract)
    }

    pub(super) fn sign_checkpoint(&self, st: &State) -> Result<WireCheckpoint, ClientError> {
        let cp = self.head_checkpoint(st);
        let note = SignedCheckpoint {
            checkpoint: cp,
            client_signature: cp.sign_client(&self.session_key),
            provider_cosignature: None,
        }
        .to_note(&self.session_public, &st.terms.terms.provider_key);
        let chain = ChainCheckpoint::sign(&self.checkpoint_key, &Self::domain(st), cp)
            .map_err(|e| ClientError::Signing(e.to_string()))?;
        Ok(WireCheckpoint {
            note,
            eip712: WireEip712Sig::from_parts(chain.sig.parts()),
        })
    }

    /// Signs a checkpoint at the mirror's size and posts it; returns the note with the
    /// provider's cosignature (verified), which is also kept in the mirror for disputes.
    pub async fn checkpoint(&self) -> Result<SignedCheckpoint, ClientError> {
        let mut st = self.state.lock().await;
        self.post_checkpoint(&mut st).await
    }

    pub(super) async fn post_checkpoint(
        &self,
        st: &mut State,
    ) -> Result<SignedCheckpoint, ClientError> {
        st.mirror.sync().await?;
        let wire = self.sign_checkpoint(st)?;
        let back: WireCheckpoint = self.post_json("/checkpoints", &wire).await?;
        let provider = st.terms.terms.provider_key;
        let signed = SignedCheckpoint::from_note(&back.note, &self.session_public, &provider, true)
            .map_err(|e| ClientError::Protocol(format!("cosigned checkpoint: {e}")))?;
        let ours = Checkpoint::parse_body(
            wire.note
                .split_inclusive('\n')
                .take(4)
                .collect::<String>()
                .as_str(),
        )
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
        if signed.checkpoint != ours {
            return Err(ClientError::Protocol(
                "the cosigned checkpoint is not the one sent".into(),
            ));
        }
        st.mirror.put_meta("checkpoint", back.note.as_bytes())?;
        st.checkpoint_due = false;
        Ok(signed)
    }

    /// Agrees a cooperative close with the provider at the mirror's head (spec/HTTP.md §5.4):
    /// signs the EIP-712 Close struct of (size, root, cumulative) with the checkpoint key,
    /// posts it, and checks the provider's answer is that same state with a payee signature
    /// that recovers to `payee`, which should be the channel's onchain payee
    /// (`ChannelFunding::payee`; the terms' `pay_to` is only what the provider claims).
    /// Returns everything `cooperativeClose` takes. Once the provider answered, it records
    /// nothing more on this channel. A provider refusal is [`ClientError::Refused`]; a wrong
    /// answer stops the client with [`Misbehavior::BadClose`].
    pub async fn close(&self, payee: Address) -> Result<CloseAgreement, ClientError> {
        let mut st = self.state.lock().await;
        st.mirror.sync().await?;
        let cp = self.head_checkpoint(&st);
        let domain = Self::domain(&st);
        let signer_sig = tally_chain::eip712::sign_close(&self.checkpoint_key, &domain, &cp)
            .map_err(|e| ClientError::Signing(e.to_string()))?;
        let request = CloseRequest {
            size: cp.size,
            root: cp.root,
            cumulative: Amount(cp.cumulative),
            eip712: WireEip712Sig::from_parts(signer_sig.parts()),
        };
        let back: CloseSigned = self.post_json("/close", &request).await?;
        if (back.size, back.root, back.cumulative.0) != (cp.size, cp.root, cp.cumulative) {
            let why = format!(
                "asked to close at size {}, answered for size {}",
                cp.size, back.size
            );
            return Err(Self::stop(&mut st, Misbehavior::BadClose(why)));
        }
        let payee_sig = tally_chain::Eip712Sig::from_parts(back.payee_eip712.parts());
        if let Err(e) = tally_chain::eip712::verify_close(&payee_sig, &domain, &cp, payee) {
            let why = format!("payee signature: {e}");
            return Err(Self::stop(&mut st, Misbehavior::BadClose(why)));
        }
        Ok(CloseAgreement {
            checkpoint: cp,
            signer_sig,
            payee_sig,
        })
    }

    /// Fetches the provider's whole log, audits it with [`verify_statement`] and compares
    /// its root with the mirror's at the same size.
    pub async fn audit(&self) -> Result<Statement, ClientError> {
        let mut st = self.state.lock().await;
        st.mirror.sync().await?;
        let provider = st.terms.terms.provider_key;
        let mut all = Vec::new();
        loop {
            let page: RecordsPage = self
                .get_json(self.channel_url(&format!("/records?from={}", all.len())))
                .await?;
            if page.records.is_empty() {
                break;
            }
            for wr in &page.records {
                let r = wr
                    .decode()
                    .map_err(|e| ClientError::Protocol(e.to_string()))?;
                all.push((r, wr.provider_signature));
            }
            if all.len() as u64 >= page.size {
                break;
            }
        }
        let statement = verify_statement(&all, &self.session_public, &provider)
            .map_err(|e| ClientError::Protocol(format!("statement: {e}")))?;
        let size = statement.records.min(st.mirror.size());
        let ours = st.mirror.root_at(size)?;
        let theirs = if size == statement.records {
            statement.root
        } else {
            let mut t = tally_log::MemoryTree::new(tally_log::Blake3Hasher);
            for (r, _) in &all[..size as usize] {
                t.push(&tally_core::encoding::Canonical::to_bytes(r));
            }
            t.root()
        };
        if ours != theirs {
            return Err(Self::stop(
                &mut st,
                Misbehavior::Fork { size, ours, theirs },
            ));
        }
        Ok(statement)
    }

    /// A proof bundle of mirrored record `index` against the latest cosigned checkpoint
    /// held ([`Mirror::proof_bundle`]); `chain` is left empty for the caller to fill.
    pub async fn proof_bundle(&self, index: u64) -> Result<tally_core::ProofBundle, ClientError> {
        let mut st = self.state.lock().await;
        // Records are read from the store: wait for pipelined appends.
        st.mirror.sync().await?;
        st.mirror
            .proof_bundle(index, &self.session_public, &st.terms.terms.provider_key)
    }

    /// Disputes mirrored record `index`: builds a proof bundle against the latest cosigned
    /// checkpoint held and posts it with a `max_amount = 0` authorization. Returns the
    /// credit granted (and mirrored), or the provider's refusal.
    pub async fn dispute(
        &self,
        index: u64,
        exchange: DisputedExchange,
    ) -> Result<DisputeGranted, ClientError> {
        let bundle = self.proof_bundle(index).await?;
        self.dispute_bundle(bundle, exchange).await
    }

    /// Disputes the record a proof bundle proves (one made by [`Client::proof_bundle`], or
    /// read back from a file): posts it with a `max_amount = 0` authorization. The bundle
    /// must be for this client's session key; the provider checks the rest. The payee's
    /// signature over the state after the credit, if the gateway sent one, is checked and
    /// kept ([`Client::credit_state`], spec/HTTP.md §7).
    pub async fn dispute_bundle(
        &self,
        bundle: tally_core::ProofBundle,
        exchange: DisputedExchange,
    ) -> Result<DisputeGranted, ClientError> {
        if bundle.client_key != self.session_public {
            return Err(ClientError::Protocol(
                "the bundle is for another session key".into(),
            ));
        }
        let body = serde_json::to_vec(&DisputeRequest { bundle, exchange })
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let path = format!("{API_PREFIX}/channels/{}/disputes", self.channel.to_hex());
        let resp = self
            .send_paid(
                Method::POST,
                &path,
                "",
                HeaderMap::new(),
                body,
                Some(0),
                Expect::Credit,
                false,
            )
            .await?;
        let paid::Answered::Whole(resp) = resp else {
            return Err(ClientError::Protocol(
                "a dispute answered with a stream".into(),
            ));
        };
        let granted =
            serde_json::from_slice(&resp.body).map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.keep_credit_state(&resp).await?;
        Ok(granted)
    }
}
