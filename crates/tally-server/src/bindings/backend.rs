//! The gateway's sled database behind tally-log's [`BindingsBackend`] interface, the one the
//! PostgreSQL store of cluster mode implements too (spec/CLUSTER.md §2, version 3): each call
//! is the inherent method of the same name, so the gateway and the shared conformance suite
//! exercise the same code. sled calls are synchronous; the futures simply run them (the
//! gateway itself calls the inherent methods from `spawn_blocking`).

use tally_core::{ChannelId, Hash, PublicKey, RequestSalt, Signature};
use tally_log::bindings::{BindingsBackend, BindingsErrorKind, CloseMark, CreditMark};

use super::{Bindings, BindingsError, Closing};

impl BindingsBackend for Bindings {
    type Error = BindingsError;

    fn kind(error: &BindingsError) -> BindingsErrorKind {
        match error {
            BindingsError::Rule(e) => BindingsErrorKind::of(e),
            BindingsError::Db(_) => BindingsErrorKind::Other,
        }
    }

    async fn remember_terms(&self, hash: &Hash, bytes: &[u8]) -> Result<(), BindingsError> {
        Ok(Bindings::remember_terms(self, hash, bytes)?)
    }

    async fn terms(&self, hash: &Hash) -> Result<Option<Vec<u8>>, BindingsError> {
        Ok(Bindings::terms(self, hash)?)
    }

    async fn session(&self, channel: &ChannelId) -> Result<Option<PublicKey>, BindingsError> {
        Bindings::session(self, channel)
    }

    async fn bind(&self, channel: &ChannelId, key: &PublicKey) -> Result<(), BindingsError> {
        Bindings::bind(self, channel, key)
    }

    async fn salt(&self, channel: &ChannelId) -> Result<Option<RequestSalt>, BindingsError> {
        Bindings::salt(self, channel)
    }

    async fn salt_or_insert(
        &self,
        channel: &ChannelId,
        fresh: RequestSalt,
    ) -> Result<RequestSalt, BindingsError> {
        Bindings::salt_or_insert(self, channel, fresh)
    }

    async fn closing(&self, channel: &ChannelId) -> Result<Option<CloseMark>, BindingsError> {
        Ok(Bindings::closing(self, channel)?.map(CloseMark::from))
    }

    async fn mark_closing(
        &self,
        channel: &ChannelId,
        close: &CloseMark,
    ) -> Result<(), BindingsError> {
        Bindings::mark_closing(self, channel, &Closing::from(*close))
    }

    async fn closings(&self) -> Result<Vec<(ChannelId, CloseMark, Option<u64>)>, BindingsError> {
        Ok(Bindings::closings(self)?
            .into_iter()
            .map(|(id, c, at)| (id, CloseMark::from(c), at))
            .collect())
    }

    async fn credit_for(
        &self,
        channel: &ChannelId,
        index: u64,
    ) -> Result<Option<CreditMark>, BindingsError> {
        Bindings::credit_for(self, channel, index)
    }

    async fn mark_credited(
        &self,
        channel: &ChannelId,
        index: u64,
        mark: &CreditMark,
    ) -> Result<(), BindingsError> {
        Bindings::mark_credited(self, channel, index, mark)
    }

    async fn mark_promising(&self, channel: &ChannelId) -> Result<(), BindingsError> {
        Bindings::mark_promising(self, channel)
    }

    async fn is_promising(&self, channel: &ChannelId) -> Result<bool, BindingsError> {
        Bindings::is_promising(self, channel)
    }

    async fn clear_promising(&self, channels: &[ChannelId]) -> Result<(), BindingsError> {
        Bindings::clear_promising(self, channels)
    }

    async fn keep_restore(
        &self,
        channel: &ChannelId,
        nonce: &Hash,
        size: u64,
        statement: &[u8],
        signature: &Signature,
    ) -> Result<(), BindingsError> {
        Bindings::keep_restore(self, channel, nonce, size, statement, signature)
    }

    async fn restores(
        &self,
        channel: &ChannelId,
    ) -> Result<Vec<(Vec<u8>, Signature)>, BindingsError> {
        Bindings::restores(self, channel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sled database passes the suite every side-state backend must pass (the
    /// PostgreSQL store runs it in tally-store-pg's tests).
    #[tokio::test(flavor = "current_thread")]
    async fn the_sled_bindings_pass_the_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let db = Bindings::open(dir.path()).unwrap();
        tally_log::bindings_conformance::run_all(&db).await;
    }

    /// The refusals survive reopening: the stored binding and close stay the first ones.
    #[tokio::test(flavor = "current_thread")]
    async fn first_writers_still_win_after_reopening() {
        use tally_log::bindings_conformance::{channel, close};
        let dir = tempfile::tempdir().unwrap();
        let ch = channel(1);
        let (a, b) = (
            tally_core::SecretKey::from_seed(&[1; 32]).public(),
            tally_core::SecretKey::from_seed(&[2; 32]).public(),
        );
        {
            let db = Bindings::open(dir.path()).unwrap();
            Bindings::bind(&db, &ch, &a).unwrap();
            BindingsBackend::mark_closing(&db, &ch, &close(1))
                .await
                .unwrap();
        }
        let db = Bindings::open(dir.path()).unwrap();
        let err = Bindings::bind(&db, &ch, &b).unwrap_err();
        assert_eq!(Bindings::kind(&err), BindingsErrorKind::SessionConflict);
        let err = BindingsBackend::mark_closing(&db, &ch, &close(2))
            .await
            .unwrap_err();
        assert_eq!(Bindings::kind(&err), BindingsErrorKind::ClosingConflict);
        assert_eq!(Bindings::session(&db, &ch).unwrap(), Some(a));
        assert_eq!(
            BindingsBackend::closing(&db, &ch).await.unwrap(),
            Some(close(1))
        );
    }

    /// Two threads bind different keys to the same channels at once: sled's compare-and-swap
    /// lets exactly one win each time, as PostgreSQL's first writer does (tally-store-pg's
    /// `racing_binds_of_two_nodes_store_exactly_one_key`).
    #[test]
    fn racing_binds_store_exactly_one_key() {
        use tally_log::RuleError;
        let dir = tempfile::tempdir().unwrap();
        let db = Bindings::open(dir.path()).unwrap();
        let keys = [
            tally_core::SecretKey::from_seed(&[1; 32]).public(),
            tally_core::SecretKey::from_seed(&[2; 32]).public(),
        ];
        for n in 0..16u8 {
            let ch = tally_log::bindings_conformance::channel(n);
            let barrier = std::sync::Barrier::new(2);
            let results: Vec<_> = std::thread::scope(|s| {
                let handles: Vec<_> = keys
                    .iter()
                    .map(|k| {
                        let (db, barrier) = (&db, &barrier);
                        s.spawn(move || {
                            barrier.wait();
                            Bindings::bind(db, &ch, k)
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let won: Vec<_> = results.iter().map(Result::is_ok).collect();
            assert_eq!(
                won.iter().filter(|w| **w).count(),
                1,
                "channel {n}: {results:?}"
            );
            let loser = results.iter().find_map(|r| r.as_ref().err()).unwrap();
            assert!(matches!(
                loser,
                BindingsError::Rule(RuleError::SessionConflict)
            ));
            let winner = if won[0] { keys[0] } else { keys[1] };
            assert_eq!(Bindings::session(&db, &ch).unwrap(), Some(winner));
        }
    }
}
