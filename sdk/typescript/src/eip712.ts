/**
 * EIP-712 messages the client's secp256k1 checkpoint key signs (spec/CHAIN.md §3,
 * spec/PROTOCOL.md §8.2–§8.3): the Checkpoint a payee claims with, and the SessionKey
 * binding of spec/HTTP.md §5.2.
 */
import { TallyError, concat, fromHex, toHex, uintLE, utf8 } from "./bytes.js";
import { type Eip712Sig, keccak, secpSignDigest } from "./crypto.js";
import type { Checkpoint } from "./checkpoint.js";

/** A uint256 `abi.encode` word (big-endian); refuses negatives and values past 2^256. */
export const u256 = (v: bigint | number): Uint8Array => uintLE(v, 32).reverse();

/** A 20-byte address from `0x…` hex (any case), left-padded to 32 bytes as abi.encode does. */
export function addressWord(addr: string): Uint8Array {
  if (!/^0x[0-9a-fA-F]{40}$/.test(addr)) throw new TallyError(`not an address: ${addr}`);
  return concat(new Uint8Array(12), fromHex(addr.slice(2).toLowerCase()));
}

/**
 * The separator of an `EIP712Domain(string name,string version,uint256 chainId,address
 * verifyingContract)` (CHAIN.md §3.1): the Tally deployment's, or a token's (§2.1).
 */
export function domainSeparatorOf(name: string, version: string, chainId: bigint | number, contract: string): Uint8Array {
  return keccak(
    keccak(utf8("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")),
    keccak(utf8(name)), keccak(utf8(version)), u256(chainId), addressWord(contract),
  );
}

/** The Tally deployment's domain separator: name "tally", version "1" (CHAIN.md §3.1). */
export function domainSeparator(chainId: bigint | number, contract: string): Uint8Array {
  return domainSeparatorOf("tally", "1", chainId, contract);
}

/** `keccak256(typeHash || abi.encode(members…))`, each member one 32-byte word (§3.2). */
export const structHash = (type: string, ...words: Uint8Array[]): Uint8Array => keccak(keccak(utf8(type)), ...words);

/** `keccak256(0x19 || 0x01 || domainSeparator || structHash)` (§3.2). */
export const typedDigest = (sep: Uint8Array, hash: Uint8Array): Uint8Array => keccak(Uint8Array.of(0x19, 0x01), sep, hash);
/** The fields of a Checkpoint or a Close, encoded alike (§3.2, §3.3). */
const stateWords = (c: Checkpoint): Uint8Array[] => [c.channelId, u256(c.size), c.root, u256(c.cumulative)];

/** CHAIN.md §3.2. */
export function checkpointDigest(chainId: bigint | number, contract: string, c: Checkpoint): Uint8Array {
  const hash = structHash("Checkpoint(bytes32 channelId,uint64 size,bytes32 root,uint256 cumulative)", ...stateWords(c));
  return typedDigest(domainSeparator(chainId, contract), hash);
}

/** CHAIN.md §3.3: the Close both the checkpoint signer and the payee sign for `cooperativeClose`. */
export function closeDigest(chainId: bigint | number, contract: string, c: Checkpoint): Uint8Array {
  const hash = structHash("Close(bytes32 channelId,uint64 size,bytes32 root,uint256 cumulative)", ...stateWords(c));
  return typedDigest(domainSeparator(chainId, contract), hash);
}

/** HTTP.md §5.2: `SessionKey(bytes32 channelId,bytes32 sessionKey)`. */
export function sessionDigest(chainId: bigint | number, contract: string, channelId: Uint8Array, sessionKey: Uint8Array): Uint8Array {
  const hash = structHash("SessionKey(bytes32 channelId,bytes32 sessionKey)", channelId, sessionKey);
  return typedDigest(domainSeparator(chainId, contract), hash);
}

/** The wire form `{v, r, s}` (r and s as 64 lower-case hex digits). */
export function signEip712(key: Uint8Array, d: Uint8Array): Eip712Sig {
  const { v, r, s } = secpSignDigest(key, d);
  return { v, r: toHex(r), s: toHex(s) };
}
