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

alloy::sol! {
    /// What a gasless deposit reads from its token: the EIP-712 domain parts (EIP-3009 and
    /// EIP-2612 share the token's domain), the permit nonce, and the EIP-3009 nonce state.
    #[sol(rpc)]
    interface IERC20Authorizable {
        function name() external view returns (string);
        function version() external view returns (string);
        function DOMAIN_SEPARATOR() external view returns (bytes32);
        function nonces(address owner) external view returns (uint256);
        function authorizationState(address authorizer, bytes32 nonce) external view returns (bool);
    }
}
