//! The client's guard against terms raised under it (spec/HTTP.md §4.3).
//!
//! Every authorization signs `terms_hash`, so paying under a terms document is agreeing to
//! it. The client keeps the terms it last agreed to in its mirror (`terms` metadata key; on
//! first use, the terms served then) and reviews every document it is served, at connect
//! and on `terms_changed`, with [`price_increases`]. A change that charges no call more and
//! credits the client no less is adopted silently; a raising one is adopted only if the
//! caller opted in ([`crate::ClientConfig::accept_terms_changes`], or
//! [`crate::Client::accept_terms`] later). Until then every paid request fails with
//! [`ClientError::TermsRaised`] before anything is signed; free requests, checkpoints,
//! disputes and the cooperative close still work, so a client can always leave.

use tally_http::terms::{price_increases, TermsIncrease};
use tally_http::Terms;

use crate::discovery::Discovered;
use crate::error::ClientError;
use crate::mirror::Mirror;

/// The mirror metadata key of the accepted terms document.
const ACCEPTED_TERMS: &str = "terms";

/// The accepted terms and what the served ones raise against them.
pub(crate) struct TermsGuard {
    accepted: Terms,
    raised: Vec<TermsIncrease>,
    accept_all: bool,
}

impl TermsGuard {
    /// Loads the accepted terms from `mirror` (the served ones on first use) and reviews
    /// `served` against them.
    pub(crate) fn open(
        mirror: &Mirror,
        served: &Discovered,
        accept_all: bool,
    ) -> Result<Self, ClientError> {
        let accepted = match mirror.get_meta(ACCEPTED_TERMS)? {
            Some(bytes) => Terms::parse(&bytes)
                .map_err(|e| ClientError::Mirror(format!("accepted terms: {e}")))?,
            None => served.terms.clone(),
        };
        let mut guard = TermsGuard {
            accepted,
            raised: Vec::new(),
            accept_all,
        };
        guard.review(mirror, served)?;
        Ok(guard)
    }

    /// Reviews newly served terms: adopts them unless they raise something the caller has
    /// not opted in to, in which case paying stays refused until [`Self::accept`].
    pub(crate) fn review(
        &mut self,
        mirror: &Mirror,
        served: &Discovered,
    ) -> Result<(), ClientError> {
        let raised = price_increases(&self.accepted, &served.terms);
        if raised.is_empty() || self.accept_all {
            return self.accept(mirror, served);
        }
        self.raised = raised;
        Ok(())
    }

    /// Agrees to `served`: stores it durably as the accepted terms.
    pub(crate) fn accept(
        &mut self,
        mirror: &Mirror,
        served: &Discovered,
    ) -> Result<(), ClientError> {
        let bytes = served.terms.render();
        if mirror.get_meta(ACCEPTED_TERMS)?.as_deref() != Some(bytes.as_slice()) {
            mirror.put_meta(ACCEPTED_TERMS, &bytes)?;
        }
        self.accepted = served.terms.clone();
        self.raised.clear();
        Ok(())
    }

    /// What the served terms raise and the client has not accepted (empty: paying is fine).
    pub(crate) fn raised(&self) -> &[TermsIncrease] {
        &self.raised
    }

    /// Refuses to pay while the served terms raise something not accepted.
    pub(crate) fn check_pay(&self) -> Result<(), ClientError> {
        if self.raised.is_empty() {
            return Ok(());
        }
        Err(ClientError::TermsRaised {
            changes: self.raised.clone(),
        })
    }
}
