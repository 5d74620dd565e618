//! alloy bindings generated from the committed artifacts in `artifacts/`.
//!
//! The artifacts are produced by `contracts/compile.js`; a test recompiles and compares, so
//! these bindings always match `contracts/*.sol`.

// Generated code: event and function signatures mirror the Solidity ones.
#![allow(missing_docs, clippy::too_many_arguments)]

alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug, PartialEq, Eq)]
    Tally,
    "artifacts/Tally.json"
);

alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug, PartialEq, Eq)]
    TestToken,
    "artifacts/TestToken.json"
);

alloy::sol! {
    /// The slice of ERC-20 the client needs to fund a channel with any token.
    #[sol(rpc)]
    interface IERC20 {
        function approve(address spender, uint256 value) external returns (bool);
        function balanceOf(address owner) external view returns (uint256);
    }
}
