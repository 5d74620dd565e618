// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// @title Tally: payment channels settled by client-signed log checkpoints.
/// @notice A channel holds an ERC-20 deposit from a payer for one payee. Anyone posts a state
/// (log size, Merkle root, cumulative net amount) signed by the payer's checkpoint signer; a
/// state that lowers the amount (a credit) must also carry the payee's signature. What the
/// payee is owed becomes final after a challenge window (the channel's withdraw delay) and
/// is transferred by a separate, permissionless payout. Nothing per request reaches this
/// contract.
/// @dev Layout and rules are specified in spec/CHAIN.md (§4: states, claims and payouts).
/// Every state change emits an event. Every function that changes state holds a
/// transient-storage reentrancy lock. Claims make no external call. Outgoing transfers follow
/// checks-effects-interactions: `payout`, `finalizeWithdraw` and `cooperativeClose` update all
/// state before they transfer; `payoutMany` pays one (token, payee) run when the next id
/// differs, so a transfer can precede later ids' updates (only the lock makes that safe).
/// `claimMany` skips (with `ClaimSkipped`) an entry that `claim` would reject, so one bad entry
/// cannot make a whole batch revert. `open` and `topUp` must call the token before crediting,
/// because they credit the balance difference the call caused.
contract Tally {
    /// @notice One channel's state. Packed so that a claim touches four slots (five when it
    /// promotes the previous state to final).
    struct Channel {
        // slot 0: what every claim reads and writes (all zero at open)
        uint64 claimedSize; // log size of the current state
        uint64 creditSize; // size of the last accepted cosigned state; nothing at or below it is accepted
        uint64 settleAt; // end of the current state's challenge window (0 before any state)
        bool closed; // closed channels are kept so their id can never be reopened
        // slot 1: what every claim reads
        address signer; // payer's checkpoint key (secp256k1 address); never zero once opened
        uint64 withdrawAt; // 0 = no withdrawal pending; else earliest finalize time
        uint32 withdrawDelay; // seconds of the exit delay and of every challenge window
        // slot 2
        uint128 deposit; // total ever deposited
        uint128 claimed; // capped cumulative of the current state
        // slot 3
        bytes32 root; // Merkle root of the current state
        // slot 4
        uint128 settled; // final amount while a newer state is in its window
        uint128 paid; // total ever transferred to the payee
        // slots 5-7: read by exits and payouts only
        address payee;
        address payer;
        address token;
    }

    /// @notice The fields a checkpoint signature covers (besides the EIP-712 domain).
    struct Checkpoint {
        bytes32 channelId;
        uint64 size;
        bytes32 root;
        uint256 cumulative;
    }

    /// @notice A secp256k1 signature split into its parts; v is 27 or 28.
    struct Sig {
        uint8 v;
        bytes32 r;
        bytes32 s;
    }

    /// @notice What a gasless open names: the same arguments as `open`, plus the payer, who
    /// signs instead of sending (CHAIN.md §2.1).
    struct OpenRequest {
        address payer;
        address payee;
        address token;
        uint256 amount;
        address signer;
        uint32 withdrawDelay;
        bytes32 salt;
    }

    /// @notice An EIP-3009 `ReceiveWithAuthorization` window and signature, made by the payer
    /// in the token's EIP-712 domain with `to` = this contract.
    struct Authorization {
        uint256 validAfter;
        uint256 validBefore;
        Sig sig;
    }

    /// @notice An EIP-2612 permit (owner = the payer, spender = this contract, value = the
    /// amount) and the payer's Tally-domain signature of what the funds are for.
    struct PermitAuth {
        uint256 deadline;
        Sig permit;
        Sig intent;
    }

    /// @notice A checkpoint together with the checkpoint signer's signature over it.
    struct SignedCheckpoint {
        Checkpoint checkpoint;
        Sig sig;
    }

    bytes32 private constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 private constant NAME_HASH = keccak256("tally");
    bytes32 private constant VERSION_HASH = keccak256("1");
    /// @notice EIP-712 type hash of a claimable checkpoint.
    bytes32 public constant CHECKPOINT_TYPEHASH =
        keccak256("Checkpoint(bytes32 channelId,uint64 size,bytes32 root,uint256 cumulative)");
    /// @notice EIP-712 type hash of a cooperative-close agreement.
    bytes32 public constant CLOSE_TYPEHASH =
        keccak256("Close(bytes32 channelId,uint64 size,bytes32 root,uint256 cumulative)");
    /// @notice EIP-712 type hash of a payer's permit-funded open (CHAIN.md §3.5).
    bytes32 public constant OPEN_TYPEHASH = keccak256(
        "Open(address payee,address token,uint256 amount,address signer,uint32 withdrawDelay,bytes32 salt,uint256 deadline)"
    );
    /// @notice EIP-712 type hash of a funder's permit-funded top-up (CHAIN.md §3.5).
    bytes32 public constant TOP_UP_TYPEHASH =
        keccak256("TopUp(bytes32 channelId,uint256 amount,bytes32 salt,uint256 deadline)");
    /// @dev Tags that keep an open's and a top-up's EIP-3009 nonces apart (CHAIN.md §2.1).
    bytes32 private constant OPEN_NONCE_TAG = keccak256("tally.open");
    bytes32 private constant TOP_UP_NONCE_TAG = keccak256("tally.topUp");
    /// @dev Upper bound for s (secp256k1n / 2); larger s values are the malleable twin.
    uint256 private constant HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;
    /// @notice The shortest withdraw delay `open` accepts. Without a floor a payer could
    /// initiate and finalize in one transaction and take back signed but unclaimed funds.
    /// An hour leaves the payee's worker time to see the event, ride out an RPC outage and
    /// bump fees on a congested chain; providers that need longer refuse shorter channels
    /// offchain (spec/CHAIN.md §5).
    uint32 public constant MIN_WITHDRAW_DELAY = 1 hours;
    /// @notice The longest withdraw delay `open` accepts. A bound keeps a payee's log scan and
    /// bookkeeping for a withdrawing channel finite, and stops a payer from parking a deposit
    /// the payee must watch for years (spec/CHAIN.md §5).
    uint32 public constant MAX_WITHDRAW_DELAY = 30 days;

    uint256 private immutable cachedChainId;
    bytes32 private immutable cachedDomainSeparator;

    mapping(bytes32 => Channel) private channels;
    /// @notice Permit-funded top-up intents already used, by `keccak256(abi.encode(funder,
    /// digest))`: the permit alone does not stop a second use of the same intent once the
    /// funder grants a new allowance.
    mapping(bytes32 => bool) public usedIntents;
    bool private transient locked;

    event ChannelOpened(
        bytes32 indexed channelId,
        address indexed payer,
        address indexed payee,
        address token,
        address signer,
        uint32 withdrawDelay,
        bytes32 salt,
        uint256 deposit
    );
    event ToppedUp(bytes32 indexed channelId, address indexed from, uint256 amount, uint256 deposit);
    /// @notice A state was posted: `claimed` is its capped cumulative, final from `settleAt` on.
    event Claimed(bytes32 indexed channelId, uint64 size, bytes32 root, uint256 claimed, uint64 settleAt);
    /// @notice `amount` was transferred to the payee; `paid` is the channel's new total.
    event PaidOut(bytes32 indexed channelId, address indexed payee, uint256 amount, uint256 paid);
    /// @notice `payee` is indexed so a payee's worker can ask the node for its own channels only.
    event WithdrawInitiated(bytes32 indexed channelId, address indexed payee, uint64 withdrawAt);
    event WithdrawFinalized(bytes32 indexed channelId, uint256 refund);
    /// @notice `claimMany` left an entry out; `reason` is the selector of the custom error
    /// `claim` would have reverted with for it (e.g. `ClaimWindowClosed.selector`).
    event ClaimSkipped(bytes32 indexed channelId, bytes4 reason);
    event CooperativelyClosed(
        bytes32 indexed channelId, uint64 size, bytes32 root, uint256 claimed, uint256 paid, uint256 refund
    );

    error ZeroAddress();
    error ZeroAmount();
    error AmountTooLarge();
    error ChannelExists(bytes32 channelId);
    error UnknownChannel(bytes32 channelId);
    error ChannelClosed(bytes32 channelId);
    error NotPayer();
    error StaleCheckpoint(uint64 claimedSize, uint64 size);
    error CumulativeDecreased(uint256 claimed, uint256 cumulative);
    error BadSignature();
    error WithdrawPending(uint64 withdrawAt);
    error WithdrawNotInitiated();
    error WithdrawDelayActive(uint64 withdrawAt);
    error ClaimWindowClosed(uint64 withdrawAt);
    error TokenCallFailed(address token);
    error Reentrancy();
    error EmptyBatch();
    error WithdrawDelayTooShort(uint32 minimum, uint32 withdrawDelay);
    error WithdrawDelayTooLong(uint32 maximum, uint32 withdrawDelay);
    error ChallengeWindowOpen(uint64 settleAt);
    error NothingToPay(bytes32 channelId);
    error IntentExpired(uint256 deadline);
    error IntentUsed(bytes32 digest);

    modifier nonReentrant() {
        if (locked) revert Reentrancy();
        locked = true;
        _;
        locked = false;
    }

    constructor() {
        cachedChainId = block.chainid;
        cachedDomainSeparator = _buildDomainSeparator();
    }

    // ---------------------------------------------------------------- channels

    /// @notice Opens a channel funded by msg.sender (the payer) with `amount` of `token`.
    /// @return channelId keccak256(abi.encode(chainid, this, payer, payee, token, salt)).
    function open(
        address payee,
        address token,
        uint256 amount,
        address signer,
        uint32 withdrawDelay,
        bytes32 salt
    ) external nonReentrant returns (bytes32 channelId) {
        OpenRequest memory o = OpenRequest(msg.sender, payee, token, amount, signer, withdrawDelay, salt);
        Channel storage c;
        (channelId, c) = _create(o);
        _credit(c, channelId, o, _pull(token, msg.sender, amount));
    }

    /// @notice Opens a channel funded by the payer's EIP-3009 `receiveWithAuthorization`;
    /// anyone may submit it (CHAIN.md §2.1). The authorization's nonce must be
    /// `openNonce(o)`, which binds every argument its signature does not cover.
    function openWithAuthorization(OpenRequest calldata o, Authorization calldata auth)
        external
        nonReentrant
        returns (bytes32 channelId)
    {
        Channel storage c;
        (channelId, c) = _create(o);
        bytes32 nonce = keccak256(abi.encode(OPEN_NONCE_TAG, channelId, o.signer, o.withdrawDelay));
        _credit(c, channelId, o, _receive(o.token, o.payer, o.amount, auth, nonce));
    }

    /// @notice Opens a channel funded by the payer's EIP-2612 permit; anyone may submit it.
    /// The payer's `Open` signature (CHAIN.md §3.5) names the channel, so a submitter cannot
    /// change it; the id's uniqueness stops a second use.
    function openWithPermit(OpenRequest calldata o, PermitAuth calldata auth)
        external
        nonReentrant
        returns (bytes32 channelId)
    {
        if (block.timestamp > auth.deadline) revert IntentExpired(auth.deadline);
        Channel storage c;
        (channelId, c) = _create(o);
        bytes32 structHash = keccak256(
            abi.encode(OPEN_TYPEHASH, o.payee, o.token, o.amount, o.signer, o.withdrawDelay, o.salt, auth.deadline)
        );
        _verify(_typedDigest(structHash), auth.intent, o.payer);
        _permit(o.token, o.payer, o.amount, auth);
        _credit(c, channelId, o, _pull(o.token, o.payer, o.amount));
    }

    /// @dev The checks every open makes, and the new channel's fields except its deposit.
    function _create(OpenRequest memory o) private returns (bytes32 channelId, Channel storage c) {
        if (o.payee == address(0) || o.token == address(0) || o.signer == address(0)) revert ZeroAddress();
        if (o.amount == 0) revert ZeroAmount();
        uint32 withdrawDelay = o.withdrawDelay;
        if (withdrawDelay < MIN_WITHDRAW_DELAY) revert WithdrawDelayTooShort(MIN_WITHDRAW_DELAY, withdrawDelay);
        if (withdrawDelay > MAX_WITHDRAW_DELAY) revert WithdrawDelayTooLong(MAX_WITHDRAW_DELAY, withdrawDelay);
        channelId = channelIdOf(o.payer, o.payee, o.token, o.salt);
        c = channels[channelId];
        if (c.signer != address(0)) revert ChannelExists(channelId);
        c.payee = o.payee;
        c.signer = o.signer;
        c.token = o.token;
        c.withdrawDelay = withdrawDelay;
        c.payer = o.payer;
    }

    /// @dev Records the deposit an open received (what arrived, fee-on-transfer safe).
    function _credit(Channel storage c, bytes32 channelId, OpenRequest memory o, uint256 received) private {
        if (received == 0) revert ZeroAmount();
        if (received > type(uint128).max) revert AmountTooLarge();
        c.deposit = uint128(received);
        emit ChannelOpened(channelId, o.payer, o.payee, o.token, o.signer, o.withdrawDelay, o.salt, received);
    }

    /// @notice Adds `amount` to an open channel's deposit; anyone may fund a channel. Like
    /// `open`, it reverts with ZeroAmount when the token delivered nothing.
    function topUp(bytes32 channelId, uint256 amount) external nonReentrant {
        Channel storage c = _fundable(channelId, amount);
        _addDeposit(c, channelId, msg.sender, _pull(c.token, msg.sender, amount));
    }

    /// @notice `topUp` funded by `from`'s EIP-3009 `receiveWithAuthorization`; anyone may
    /// submit it. The authorization's nonce must be `keccak256(abi.encode(keccak256("tally.topUp"),
    /// channelId, salt))`, so it can fund this channel only (CHAIN.md §2.1).
    function topUpWithAuthorization(
        bytes32 channelId,
        address from,
        uint256 amount,
        bytes32 salt,
        Authorization calldata auth
    ) external nonReentrant {
        Channel storage c = _fundable(channelId, amount);
        bytes32 nonce = keccak256(abi.encode(TOP_UP_NONCE_TAG, channelId, salt));
        _addDeposit(c, channelId, from, _receive(c.token, from, amount, auth, nonce));
    }

    /// @notice `topUp` funded by `from`'s EIP-2612 permit and `from`'s `TopUp` signature
    /// (CHAIN.md §3.5); anyone may submit it, once per signed intent.
    function topUpWithPermit(bytes32 channelId, address from, uint256 amount, bytes32 salt, PermitAuth calldata auth)
        external
        nonReentrant
    {
        if (block.timestamp > auth.deadline) revert IntentExpired(auth.deadline);
        Channel storage c = _fundable(channelId, amount);
        bytes32 digest = _typedDigest(keccak256(abi.encode(TOP_UP_TYPEHASH, channelId, amount, salt, auth.deadline)));
        // Keyed by funder too: someone who signs the same TopUp with their own key uses up
        // their own intent, never `from`'s.
        bytes32 used = keccak256(abi.encode(from, digest));
        if (usedIntents[used]) revert IntentUsed(digest);
        _verify(digest, auth.intent, from);
        usedIntents[used] = true;
        address token = c.token;
        _permit(token, from, amount, auth);
        _addDeposit(c, channelId, from, _pull(token, from, amount));
    }

    /// @dev The checks every top-up makes before it moves tokens.
    function _fundable(bytes32 channelId, uint256 amount) private view returns (Channel storage c) {
        c = _live(channelId);
        if (c.withdrawAt != 0) revert WithdrawPending(c.withdrawAt);
        if (amount == 0) revert ZeroAmount();
    }

    /// @dev Adds what a top-up received to the deposit.
    function _addDeposit(Channel storage c, bytes32 channelId, address from, uint256 received) private {
        if (received == 0) revert ZeroAmount();
        uint256 deposit = uint256(c.deposit) + received;
        if (deposit > type(uint128).max) revert AmountTooLarge();
        c.deposit = uint128(deposit);
        emit ToppedUp(channelId, from, received, deposit);
    }

    // -------------------------------------------------------------- settlement

    /// @notice Posts a state the checkpoint signer signed; anyone may submit it, nothing is
    /// transferred (CHAIN.md §4.1). Reverts with the reason when it is not accepted.
    function claim(SignedCheckpoint calldata signed) external nonReentrant {
        _revertWith(_claim(signed));
    }

    /// @notice Posts a state signed by the checkpoint signer and the payee over the same
    /// Checkpoint digest. It may lower the amount (a credit) down to what is final already;
    /// between cosigned and current states the larger size wins (CHAIN.md §4.2).
    function claimCosigned(SignedCheckpoint calldata signed, Sig calldata payeeSig) external nonReentrant {
        Checkpoint calldata cp = signed.checkpoint;
        Channel storage c = channels[cp.channelId];
        _revertWith(_precheck(c, cp, true));
        uint64 claimedSize = c.claimedSize;
        if (cp.size <= claimedSize) revert StaleCheckpoint(claimedSize, cp.size);
        uint256 capped = _capped(c, cp.cumulative);
        uint256 fin = _final(c);
        if (capped < fin) revert CumulativeDecreased(fin, cp.cumulative);
        bytes32 digest = _hashCheckpoint(CHECKPOINT_TYPEHASH, cp);
        _verify(digest, signed.sig, c.signer);
        _verify(digest, payeeSig, c.payee);
        c.creditSize = cp.size;
        _apply(c, cp, capped, true);
    }

    /// @notice Posts many client-signed states in one transaction. An entry `claim` would
    /// reject is skipped with a `ClaimSkipped` event carrying that error's selector; the
    /// others are applied as if the skipped entry was not there (CHAIN.md §4.3).
    /// @return skipped How many entries were skipped (a simulation reads it; 0 = all applied).
    function claimMany(SignedCheckpoint[] calldata batch) external nonReentrant returns (uint256 skipped) {
        uint256 n = batch.length;
        if (n == 0) revert EmptyBatch();
        for (uint256 i = 0; i < n; ++i) {
            bytes memory err = _claim(batch[i]);
            if (err.length != 0) {
                ++skipped;
                emit ClaimSkipped(batch[i].checkpoint.channelId, bytes4(err));
            }
        }
    }

    /// @dev Checks and applies one client-signed state. Never reverts for a state it refuses:
    /// it changes nothing and returns the ABI-encoded custom error instead (empty on success),
    /// so `claim` can revert with it and `claimMany` can skip the entry. Memory is only
    /// allocated on the refusal path.
    function _claim(SignedCheckpoint calldata signed) private returns (bytes memory err) {
        Checkpoint calldata cp = signed.checkpoint;
        Channel storage c = channels[cp.channelId];
        err = _precheck(c, cp, false);
        if (err.length != 0) return err;
        uint256 claimed = c.claimed;
        uint256 capped = _capped(c, cp.cumulative);
        if (capped < claimed) return abi.encodeWithSelector(CumulativeDecreased.selector, claimed, cp.cumulative);
        uint64 claimedSize = c.claimedSize;
        if (capped == claimed && cp.size <= claimedSize) {
            return abi.encodeWithSelector(StaleCheckpoint.selector, claimedSize, cp.size);
        }
        if (!_valid(_hashCheckpoint(CHECKPOINT_TYPEHASH, cp), signed.sig, c.signer)) {
            return abi.encodeWithSelector(BadSignature.selector);
        }
        _apply(c, cp, capped, capped != claimed);
    }

    /// @dev Rules 1-3 of CHAIN.md §4, common to both kinds of state; returns the encoded error.
    function _precheck(Channel storage c, Checkpoint calldata cp, bool cosigned)
        private
        view
        returns (bytes memory)
    {
        if (c.signer == address(0)) return abi.encodeWithSelector(UnknownChannel.selector, cp.channelId);
        if (c.closed) return abi.encodeWithSelector(ChannelClosed.selector, cp.channelId);
        uint64 withdrawAt = c.withdrawAt;
        if (withdrawAt != 0 && block.timestamp >= withdrawAt && !(cosigned && block.timestamp < c.settleAt)) {
            return abi.encodeWithSelector(ClaimWindowClosed.selector, withdrawAt);
        }
        uint64 creditSize = c.creditSize;
        if (cp.size <= creditSize) return abi.encodeWithSelector(StaleCheckpoint.selector, creditSize, cp.size);
        return "";
    }

    /// @dev Makes `cp` the current state (CHAIN.md §4.3): promotes the previous state to
    /// `settled` if its window has passed, then restarts the window when `restart`.
    function _apply(Channel storage c, Checkpoint calldata cp, uint256 capped, bool restart) private {
        uint64 settleAt = c.settleAt;
        if (block.timestamp >= settleAt) {
            uint128 claimed = c.claimed;
            if (c.settled != claimed) c.settled = claimed;
        }
        if (restart) {
            settleAt = uint64(block.timestamp) + c.withdrawDelay;
            c.settleAt = settleAt;
        }
        c.claimedSize = cp.size;
        c.claimed = uint128(capped);
        c.root = cp.root;
        emit Claimed(cp.channelId, cp.size, cp.root, capped, settleAt);
    }

    /// @notice Transfers what the payee is owed for good on this channel (open or closed) to
    /// the payee; anyone may call it (CHAIN.md §4.4).
    /// @return amount What was transferred.
    function payout(bytes32 channelId) external nonReentrant returns (uint256 amount) {
        Channel storage c = channels[channelId];
        if (c.signer == address(0)) revert UnknownChannel(channelId);
        amount = _release(c, channelId);
        if (amount == 0) revert NothingToPay(channelId);
        _push(c.token, c.payee, amount);
    }

    /// @notice `payout` for each id; ids with nothing payable (or unknown) are passed over.
    /// Consecutive payouts with the same token and payee share one transfer.
    /// @return total The sum transferred.
    function payoutMany(bytes32[] calldata ids) external nonReentrant returns (uint256 total) {
        uint256 n = ids.length;
        if (n == 0) revert EmptyBatch();
        address runToken;
        address runPayee;
        uint256 runAmount;
        for (uint256 i = 0; i < n; ++i) {
            Channel storage c = channels[ids[i]];
            if (c.signer == address(0)) continue;
            uint256 amount = _release(c, ids[i]);
            if (amount == 0) continue;
            address token = c.token;
            address payee = c.payee;
            if (token != runToken || payee != runPayee) {
                if (runAmount != 0) _push(runToken, runPayee, runAmount);
                (runToken, runPayee, runAmount) = (token, payee, 0);
            }
            runAmount += amount;
            total += amount;
        }
        if (runAmount != 0) _push(runToken, runPayee, runAmount);
    }

    /// @dev Marks the payable amount paid and emits `PaidOut`; the caller transfers it.
    function _release(Channel storage c, bytes32 channelId) private returns (uint256 amount) {
        uint256 fin = _final(c);
        uint256 paid = c.paid;
        if (fin <= paid) return 0;
        amount = fin - paid;
        c.paid = uint128(fin);
        emit PaidOut(channelId, c.payee, amount, fin);
    }

    // ------------------------------------------------------------------- exits

    /// @notice The payer starts the exit clock; client-signed states are accepted until it runs out.
    function initiateWithdraw(bytes32 channelId) external nonReentrant {
        Channel storage c = _live(channelId);
        if (msg.sender != c.payer) revert NotPayer();
        if (c.withdrawAt != 0) revert WithdrawPending(c.withdrawAt);
        uint64 at = uint64(block.timestamp) + c.withdrawDelay;
        c.withdrawAt = at;
        emit WithdrawInitiated(channelId, c.payee, at);
    }

    /// @notice After the delay, and once the current state is final, returns `deposit −
    /// claimed` to the payer and closes the channel. Anyone may call it; the refund always goes
    /// to the payer. What the payee is owed stays in the contract for `payout`.
    function finalizeWithdraw(bytes32 channelId) external nonReentrant {
        Channel storage c = _live(channelId);
        uint64 at = c.withdrawAt;
        if (at == 0) revert WithdrawNotInitiated();
        if (block.timestamp < at) revert WithdrawDelayActive(at);
        uint64 settleAt = c.settleAt;
        if (block.timestamp < settleAt) revert ChallengeWindowOpen(settleAt);
        uint256 refund = uint256(c.deposit) - c.claimed;
        c.closed = true;
        emit WithdrawFinalized(channelId, refund);
        if (refund != 0) _push(c.token, c.payer, refund);
    }

    /// @notice Closes a channel at once when the payer's checkpoint signer and the payee both
    /// signed the same final state. Anyone may submit it. The payee receives the agreed capped
    /// amount minus what it was already paid, the payer the rest (CHAIN.md §4.5).
    function cooperativeClose(Checkpoint calldata cp, Sig calldata signerSig, Sig calldata payeeSig)
        external
        nonReentrant
    {
        Channel storage c = _live(cp.channelId);
        uint64 claimedSize = c.claimedSize;
        if (cp.size < claimedSize) revert StaleCheckpoint(claimedSize, cp.size);
        uint256 paid = c.paid;
        uint256 capped = _capped(c, cp.cumulative);
        if (capped < paid) revert CumulativeDecreased(paid, cp.cumulative);
        bytes32 digest = _hashCheckpoint(CLOSE_TYPEHASH, cp);
        _verify(digest, signerSig, c.signer);
        _verify(digest, payeeSig, c.payee);

        uint256 toPayee = capped - paid;
        uint256 refund = uint256(c.deposit) - capped;
        c.claimedSize = cp.size;
        c.claimed = uint128(capped);
        c.settled = uint128(capped);
        c.paid = uint128(capped);
        c.root = cp.root;
        c.closed = true;
        address token = c.token;
        emit CooperativelyClosed(cp.channelId, cp.size, cp.root, capped, toPayee, refund);
        if (toPayee != 0) _push(token, c.payee, toPayee);
        if (refund != 0) _push(token, c.payer, refund);
    }

    // ------------------------------------------------------------------- views

    /// @notice The id `open` assigns; the Rust side derives the same value offline.
    function channelIdOf(address payer, address payee, address token, bytes32 salt)
        public
        view
        returns (bytes32)
    {
        return keccak256(abi.encode(block.chainid, address(this), payer, payee, token, salt));
    }

    /// @notice A channel's full state (all zero for an unknown id).
    function getChannel(bytes32 channelId) external view returns (Channel memory) {
        return channels[channelId];
    }

    /// @notice What `payout` would transfer now (CHAIN.md §1: final − paid).
    function payableOf(bytes32 channelId) external view returns (uint256) {
        Channel storage c = channels[channelId];
        uint256 fin = _final(c);
        uint256 paid = c.paid;
        return fin > paid ? fin - paid : 0;
    }

    /// @notice The EIP-3009 nonce `openWithAuthorization` requires for `o` (CHAIN.md §2.1).
    function openNonce(OpenRequest calldata o) external view returns (bytes32) {
        bytes32 channelId = channelIdOf(o.payer, o.payee, o.token, o.salt);
        return keccak256(abi.encode(OPEN_NONCE_TAG, channelId, o.signer, o.withdrawDelay));
    }

    /// @notice The EIP-712 domain separator for this chain and contract.
    function domainSeparator() public view returns (bytes32) {
        return block.chainid == cachedChainId ? cachedDomainSeparator : _buildDomainSeparator();
    }

    /// @notice The digest a checkpoint signer signs for `claim` (exposed for differential tests).
    function checkpointDigest(Checkpoint calldata cp) external view returns (bytes32) {
        return _hashCheckpoint(CHECKPOINT_TYPEHASH, cp);
    }

    /// @notice The digest both parties sign for `cooperativeClose`.
    function closeDigest(Checkpoint calldata cp) external view returns (bytes32) {
        return _hashCheckpoint(CLOSE_TYPEHASH, cp);
    }

    // ----------------------------------------------------------------- helpers

    function _live(bytes32 channelId) private view returns (Channel storage c) {
        c = channels[channelId];
        if (c.signer == address(0)) revert UnknownChannel(channelId);
        if (c.closed) revert ChannelClosed(channelId);
    }

    /// @dev What the payee is owed for good: the current state once its window has passed,
    /// else the amount that was final when it was posted (CHAIN.md §1).
    function _final(Channel storage c) private view returns (uint256) {
        return block.timestamp >= c.settleAt ? c.claimed : c.settled;
    }

    function _capped(Channel storage c, uint256 cumulative) private view returns (uint256) {
        uint256 deposit = c.deposit;
        return cumulative < deposit ? cumulative : deposit;
    }

    /// @dev Reverts with an ABI-encoded error returned by a check; does nothing if empty.
    function _revertWith(bytes memory err) private pure {
        if (err.length != 0) {
            assembly ("memory-safe") {
                revert(add(err, 32), mload(err))
            }
        }
    }

    function _buildDomainSeparator() private view returns (bytes32) {
        return keccak256(abi.encode(DOMAIN_TYPEHASH, NAME_HASH, VERSION_HASH, block.chainid, address(this)));
    }

    function _hashCheckpoint(bytes32 typeHash, Checkpoint calldata cp) private view returns (bytes32) {
        return _typedDigest(keccak256(abi.encode(typeHash, cp.channelId, cp.size, cp.root, cp.cumulative)));
    }

    /// @dev The EIP-712 digest of `structHash` in this contract's domain.
    function _typedDigest(bytes32 structHash) private view returns (bytes32) {
        return keccak256(abi.encodePacked(hex"1901", domainSeparator(), structHash));
    }

    /// @dev Reverts with BadSignature unless `_valid`.
    function _verify(bytes32 digest, Sig calldata sig, address expected) private pure {
        if (!_valid(digest, sig, expected)) revert BadSignature();
    }

    /// @dev Accepts only canonical (low-s, v in {27,28}) signatures from exactly `expected`.
    function _valid(bytes32 digest, Sig calldata sig, address expected) private pure returns (bool) {
        if (uint256(sig.s) > HALF_N || (sig.v != 27 && sig.v != 28)) return false;
        address recovered = ecrecover(digest, sig.v, sig.r, sig.s);
        return recovered != address(0) && recovered == expected;
    }

    /// @dev transferFrom into this contract; returns what actually arrived (fee-on-transfer safe).
    function _pull(address token, address from, uint256 amount) private returns (uint256) {
        uint256 before = _balanceOf(token);
        _call(token, abi.encodeWithSelector(0x23b872dd, from, address(this), amount));
        return _balanceOf(token) - before;
    }

    /// @dev EIP-3009 `receiveWithAuthorization(from, this, amount, …, nonce)` on `token`;
    /// returns what actually arrived. The token checks the signature, the window and the
    /// nonce's single use; a failure reverts with TokenCallFailed.
    function _receive(address token, address from, uint256 amount, Authorization calldata a, bytes32 nonce)
        private
        returns (uint256)
    {
        uint256 before = _balanceOf(token);
        _call(
            token,
            abi.encodeWithSelector(
                0xef55bec6, from, address(this), amount, a.validAfter, a.validBefore, nonce, a.sig.v, a.sig.r, a.sig.s
            )
        );
        return _balanceOf(token) - before;
    }

    /// @dev Submits the EIP-2612 permit and ignores its outcome: anyone can submit a permit
    /// first (front-running it), and then the allowance is already there. `_pull` fails
    /// when it is not.
    function _permit(address token, address owner, uint256 amount, PermitAuth calldata a) private {
        (bool ok,) = token.call(
            abi.encodeWithSelector(0xd505accf, owner, address(this), amount, a.deadline, a.permit.v, a.permit.r, a.permit.s)
        );
        ok; // deliberately unused: see above
    }

    function _push(address token, address to, uint256 amount) private {
        _call(token, abi.encodeWithSelector(0xa9059cbb, to, amount));
    }

    function _balanceOf(address token) private view returns (uint256) {
        (bool ok, bytes memory ret) = token.staticcall(abi.encodeWithSelector(0x70a08231, address(this)));
        if (!ok || ret.length < 32) revert TokenCallFailed(token);
        return abi.decode(ret, (uint256));
    }

    /// @dev Calls a token and accepts success with no return data (from a contract) or a true bool.
    function _call(address token, bytes memory data) private {
        (bool ok, bytes memory ret) = token.call(data);
        if (!ok) revert TokenCallFailed(token);
        if (ret.length == 0) {
            if (token.code.length == 0) revert TokenCallFailed(token);
        } else if (ret.length < 32 || abi.decode(ret, (uint256)) != 1) {
            revert TokenCallFailed(token);
        }
    }
}
