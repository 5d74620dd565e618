//! The CLI's typed errors and the exit code each maps to. Only the binary turns them into
//! messages; the library never prints an error itself.

use thiserror::Error;

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: a verification found a discrepancy (a bad bill, proof, dispute refusal).
pub const EXIT_VERIFY: u8 = 1;
/// Exit code: a usage error, an I/O error, or an unreachable service.
pub const EXIT_USAGE: u8 = 2;

/// Everything a command can fail with.
#[derive(Debug, Error)]
pub enum CliError {
    /// The command line or a file's contents make no sense.
    #[error("{0}")]
    Usage(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// A service (chain node, gateway, upstream) could not be used.
    #[error("{0}")]
    Service(String),
    /// Something was checked and found wrong; the message says what.
    #[error("{0}")]
    Verification(String),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Verification(_) => EXIT_VERIFY,
            CliError::Usage(_) | CliError::Io { .. } | CliError::Service(_) => EXIT_USAGE,
        }
    }

    /// An I/O error on `path`.
    pub fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        CliError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

impl From<tally_audit::StatementError> for CliError {
    fn from(e: tally_audit::StatementError) -> Self {
        match e {
            tally_audit::StatementError::Io { what, source } => CliError::Io { path: what, source },
            other => CliError::Usage(other.to_string()),
        }
    }
}

impl From<tally_chain::ChainError> for CliError {
    fn from(e: tally_chain::ChainError) -> Self {
        CliError::Service(format!("chain: {e}"))
    }
}

impl From<tally_server::StartError> for CliError {
    fn from(e: tally_server::StartError) -> Self {
        CliError::Usage(format!("gateway: {e}"))
    }
}

impl From<tally_client::ClientError> for CliError {
    fn from(e: tally_client::ClientError) -> Self {
        use tally_client::ClientError as E;
        match e {
            E::Misbehavior(_) | E::Stopped(_) => CliError::Verification(e.to_string()),
            E::Refused { .. } => CliError::Verification(e.to_string()),
            E::TermsRaised { .. } => CliError::Verification(format!(
                "{e}; run again with --accept-terms to pay under the new terms"
            )),
            _ => CliError::Service(format!("client: {e}")),
        }
    }
}

impl From<tally_log::LogError> for CliError {
    fn from(e: tally_log::LogError) -> Self {
        CliError::Service(format!("log store: {e}"))
    }
}

/// Shorthand.
pub type Result<T> = std::result::Result<T, CliError>;
