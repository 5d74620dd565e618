//! Key files. Every secret is 32 bytes written as 64 hex digits in a file of mode 0600;
//! a file group or others can read is refused. The file handling is tally-server's
//! (`config::read_key_file`, `read_secp256k1_key_file`, `write_key_file`), shared rather than
//! copied: an ed25519 seed and a secp256k1 secret are both 32-byte secrets, so the checkpoint
//! key goes through the same functions as its raw 32 bytes. Secrets are never printed.

use std::path::Path;

use alloy::primitives::Address;
use alloy::signers::local::PrivateKeySigner;
use tally_core::SecretKey;
use tally_server::config::{read_key_file, read_secp256k1_key_file, write_key_file};

use crate::error::{CliError, Result};

/// Reads an ed25519 key (session or provider key).
pub fn read_ed25519(path: &Path) -> Result<SecretKey> {
    read_key_file(path).map_err(|e| CliError::Usage(e.to_string()))
}

/// Writes a new ed25519 key; refuses to overwrite.
pub fn write_ed25519(path: &Path, key: &SecretKey) -> Result<()> {
    write_key_file(path, key).map_err(|e| CliError::Usage(e.to_string()))
}

/// Reads a secp256k1 key (checkpoint key or a chain wallet).
pub fn read_secp256k1(path: &Path) -> Result<PrivateKeySigner> {
    read_secp256k1_key_file(path).map_err(|e| CliError::Usage(e.to_string()))
}

/// Writes a secp256k1 key; refuses to overwrite.
pub fn write_secp256k1(path: &Path, key: &PrivateKeySigner) -> Result<()> {
    let raw: [u8; 32] = key.to_bytes().0;
    write_key_file(path, &SecretKey::from_seed(&raw)).map_err(|e| CliError::Usage(e.to_string()))
}

/// A fresh ed25519 key from the OS random source.
pub fn generate_ed25519() -> SecretKey {
    SecretKey::generate(&mut rand::rngs::OsRng)
}

/// A fresh secp256k1 key.
pub fn generate_secp256k1() -> PrivateKeySigner {
    PrivateKeySigner::random()
}

/// The address of a secp256k1 key (public; fine to print).
pub fn address(key: &PrivateKeySigner) -> Address {
    key.address()
}
