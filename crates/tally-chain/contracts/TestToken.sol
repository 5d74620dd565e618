// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// @title TestToken: a minimal ERC-20 with EIP-3009 (transfer and receive with authorization)
/// and EIP-2612 permit, the two ways a payer without gas funds a channel (CHAIN.md §2.1).
/// @notice For tests, the gas report and the demo only. Anyone can mint. `mode` lets tests
/// imitate non-standard tokens: 0 = standard, 1 = transfer/transferFrom return no data
/// (USDT style), 2 = transfer/transferFrom return false without moving funds, 3 =
/// transfer/transferFrom burn a flat fee of FLAT_FEE units from the amount sent (a
/// fee-on-transfer token; sending FLAT_FEE or less delivers nothing). `setPaused` imitates a
/// pausable token (USDC can pause): while paused every transfer reverts with `Paused`.
contract TestToken {
    string public name;
    string public constant symbol = "TUSD";
    string public constant version = "1";
    uint8 public constant decimals = 6;
    uint8 public immutable mode;
    uint256 public constant FLAT_FEE = 10;
    uint256 public totalSupply;
    bool public paused;

    mapping(address => uint256) public balanceOf;
    mapping(address => mapping(address => uint256)) public allowance;
    mapping(address => mapping(bytes32 => bool)) public authorizationState;
    mapping(address => uint256) public nonces;

    bytes32 public constant TRANSFER_WITH_AUTHORIZATION_TYPEHASH = keccak256(
        "TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)"
    );
    bytes32 public constant RECEIVE_WITH_AUTHORIZATION_TYPEHASH = keccak256(
        "ReceiveWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)"
    );
    bytes32 public constant PERMIT_TYPEHASH =
        keccak256("Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)");
    bytes32 private constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    uint256 private constant HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

    event Transfer(address indexed from, address indexed to, uint256 value);
    event Approval(address indexed owner, address indexed spender, uint256 value);
    event AuthorizationUsed(address indexed authorizer, bytes32 indexed nonce);

    error InsufficientBalance();
    error InsufficientAllowance();
    error AuthorizationNotYetValid();
    error AuthorizationExpired();
    error AuthorizationAlreadyUsed();
    error InvalidSignature();
    error Paused();
    error CallerMustBePayee();
    error PermitExpired();

    constructor(string memory name_, uint8 mode_) {
        name = name_;
        mode = mode_;
    }

    /// @notice The EIP-712 domain separator used by transferWithAuthorization.
    function DOMAIN_SEPARATOR() public view returns (bytes32) {
        return keccak256(
            abi.encode(DOMAIN_TYPEHASH, keccak256(bytes(name)), keccak256(bytes(version)), block.chainid, address(this))
        );
    }

    /// @notice Test-only switch: anyone can pause or unpause every transfer.
    function setPaused(bool paused_) external {
        paused = paused_;
    }

    /// @notice Test-only faucet.
    function mint(address to, uint256 value) external {
        totalSupply += value;
        balanceOf[to] += value;
        emit Transfer(address(0), to, value);
    }

    function approve(address spender, uint256 value) external returns (bool) {
        allowance[msg.sender][spender] = value;
        emit Approval(msg.sender, spender, value);
        return true;
    }

    function transfer(address to, uint256 value) external returns (bool) {
        if (paused) revert Paused();
        if (mode == 2) return false;
        _moveMinusFee(msg.sender, to, value);
        _quirkReturn();
        return true;
    }

    function transferFrom(address from, address to, uint256 value) external returns (bool) {
        if (paused) revert Paused();
        if (mode == 2) return false;
        uint256 allowed = allowance[from][msg.sender];
        if (allowed != type(uint256).max) {
            if (allowed < value) revert InsufficientAllowance();
            allowance[from][msg.sender] = allowed - value;
        }
        _moveMinusFee(from, to, value);
        _quirkReturn();
        return true;
    }

    /// @notice EIP-3009: moves `value` from `from` to `to` with `from`'s EIP-712 signature,
    /// submitted by anyone. Each (from, nonce) pair works once.
    function transferWithAuthorization(
        address from,
        address to,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external {
        _useAuthorization(TRANSFER_WITH_AUTHORIZATION_TYPEHASH, from, to, value, validAfter, validBefore, nonce, v, r, s);
        _move(from, to, value);
    }

    /// @notice EIP-3009: like transferWithAuthorization, but only `to` may submit it, so a
    /// contract can bind what the transfer is for (Tally derives `nonce` from the channel).
    function receiveWithAuthorization(
        address from,
        address to,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external {
        if (msg.sender != to) revert CallerMustBePayee();
        _useAuthorization(RECEIVE_WITH_AUTHORIZATION_TYPEHASH, from, to, value, validAfter, validBefore, nonce, v, r, s);
        _moveMinusFee(from, to, value);
    }

    /// @notice EIP-2612: sets `allowance[owner][spender] = value` with `owner`'s signature.
    function permit(address owner, address spender, uint256 value, uint256 deadline, uint8 v, bytes32 r, bytes32 s)
        external
    {
        if (block.timestamp > deadline) revert PermitExpired();
        bytes32 structHash = keccak256(abi.encode(PERMIT_TYPEHASH, owner, spender, value, nonces[owner]++, deadline));
        _checkSigner(structHash, owner, v, r, s);
        allowance[owner][spender] = value;
        emit Approval(owner, spender, value);
    }

    /// @dev The checks and bookkeeping both EIP-3009 forms share; reverts unless `from`
    /// signed this authorization and it is usable now.
    function _useAuthorization(
        bytes32 typeHash,
        address from,
        address to,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) private {
        if (paused) revert Paused();
        if (block.timestamp <= validAfter) revert AuthorizationNotYetValid();
        if (block.timestamp >= validBefore) revert AuthorizationExpired();
        if (authorizationState[from][nonce]) revert AuthorizationAlreadyUsed();
        _checkSigner(keccak256(abi.encode(typeHash, from, to, value, validAfter, validBefore, nonce)), from, v, r, s);
        authorizationState[from][nonce] = true;
        emit AuthorizationUsed(from, nonce);
    }

    /// @dev Reverts unless (v, r, s) is `expected`'s canonical signature of `structHash`.
    function _checkSigner(bytes32 structHash, address expected, uint8 v, bytes32 r, bytes32 s) private view {
        bytes32 digest = keccak256(abi.encodePacked(hex"1901", DOMAIN_SEPARATOR(), structHash));
        if (uint256(s) > HALF_N) revert InvalidSignature();
        address signer = ecrecover(digest, v, r, s);
        if (signer == address(0) || signer != expected) revert InvalidSignature();
    }

    function _move(address from, address to, uint256 value) private {
        uint256 bal = balanceOf[from];
        if (bal < value) revert InsufficientBalance();
        unchecked {
            balanceOf[from] = bal - value;
        }
        balanceOf[to] += value;
        emit Transfer(from, to, value);
    }

    /// @dev `_move`, except that in mode 3 the flat fee is burned from the sender instead of
    /// reaching `to`.
    function _moveMinusFee(address from, address to, uint256 value) private {
        if (mode != 3) return _move(from, to, value);
        uint256 fee = value < FLAT_FEE ? value : FLAT_FEE;
        _move(from, to, value - fee);
        uint256 bal = balanceOf[from];
        if (bal < fee) revert InsufficientBalance();
        unchecked {
            balanceOf[from] = bal - fee;
        }
        totalSupply -= fee;
        emit Transfer(from, address(0), fee);
    }

    /// @dev In mode 1, end the call with empty return data like tokens that predate ERC-20's bool.
    function _quirkReturn() private view {
        if (mode == 1) {
            assembly {
                return(0, 0)
            }
        }
    }
}
