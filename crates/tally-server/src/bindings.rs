//! The gateway's own small database, next to the log: which session key each channel bound
//! (spec/HTTP.md §5.2) and which records a dispute already credited (§7). Both must survive
//! restarts; both are written with a flush before the caller is answered.

use std::path::Path;

use tally_core::{ChannelId, PublicKey};

/// Session bindings and dispute credits, in one sled database.
pub struct Bindings {
    db: sled::Db,
    sessions: sled::Tree,
    credits: sled::Tree,
}

impl Bindings {
    /// Opens or creates the database at `path`.
    pub fn open(path: &Path) -> Result<Self, sled::Error> {
        let db = sled::Config::new().path(path).open()?;
        let sessions = db.open_tree("sessions")?;
        let credits = db.open_tree("credits")?;
        Ok(Bindings {
            db,
            sessions,
            credits,
        })
    }

    /// The session key bound to `channel`. A stored value that is not a valid key reads as
    /// an error, never as "unbound".
    pub fn session(&self, channel: &ChannelId) -> Result<Option<PublicKey>, String> {
        match self.sessions.get(channel.0).map_err(|e| e.to_string())? {
            None => Ok(None),
            Some(v) => {
                let bytes: [u8; 32] = v
                    .as_ref()
                    .try_into()
                    .map_err(|_| "stored session key has the wrong length".to_string())?;
                PublicKey::from_bytes(&bytes)
                    .map(Some)
                    .map_err(|e| format!("stored session key: {e}"))
            }
        }
    }

    /// Binds `key` to `channel` durably.
    pub fn bind(&self, channel: &ChannelId, key: &PublicKey) -> Result<(), sled::Error> {
        self.sessions.insert(channel.0, &key.to_bytes())?;
        self.db.flush()?;
        Ok(())
    }

    /// The credit record's seq if record `index` of `channel` was already credited.
    pub fn credit_for(&self, channel: &ChannelId, index: u64) -> Result<Option<u64>, sled::Error> {
        Ok(self.credits.get(credit_key(channel, index))?.map(|v| {
            let mut b = [0u8; 8];
            let n = v.len().min(8);
            b[..n].copy_from_slice(&v[..n]);
            u64::from_be_bytes(b)
        }))
    }

    /// Marks record `index` as credited by record `credit_seq`, durably.
    pub fn mark_credited(
        &self,
        channel: &ChannelId,
        index: u64,
        credit_seq: u64,
    ) -> Result<(), sled::Error> {
        self.credits
            .insert(credit_key(channel, index), &credit_seq.to_be_bytes())?;
        self.db.flush()?;
        Ok(())
    }
}

fn credit_key(channel: &ChannelId, index: u64) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..32].copy_from_slice(&channel.0);
    k[32..].copy_from_slice(&index.to_be_bytes());
    k
}
