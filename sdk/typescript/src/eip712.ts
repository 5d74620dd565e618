/**
 * EIP-712 messages the client's secp256k1 checkpoint key signs (spec/CHAIN.md §3,
 * spec/PROTOCOL.md §8.2–§8.3): the Checkpoint a payee claims with, and the SessionKey
 * binding of spec/HTTP.md §5.2.
 */
import { TallyError, concat, fromHex, toHex, uintLE, utf8 } from "./bytes.js";
import { type Eip712Sig, keccak, secpSignDigest } from "./crypto.js";
import type { Checkpoint } from "./checkpoint.js";

const u256 = (v: bigint | number): Uint8Array => uintLE(v, 32).reverse();

/** A 20-byte address from `0x…` hex (any case), left-padded to 32 bytes as abi.encode does. */
export function addressWord(addr: string): Uint8Array {
  if (!/^0x[0-9a-fA-F]{40}$/.test(addr)) throw new TallyError(`not an address: ${addr}`);
  return concat(new Uint8Array(12), fromHex(addr.slice(2).toLowerCase()));
}

export function domainSeparator(chainId: bigint | number, contract: string): Uint8Array {
  return keccak(
    keccak(utf8("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")),
    keccak(utf8("tally")), keccak(utf8("1")), u256(chainId), addressWord(contract),
  );
}

const digest = (sep: Uint8Array, structHash: Uint8Array): Uint8Array => keccak(Uint8Array.of(0x19, 0x01), sep, structHash);

/** CHAIN.md §3.2. */
export function checkpointDigest(chainId: bigint | number, contract: string, c: Checkpoint): Uint8Array {
  const structHash = keccak(
    keccak(utf8("Checkpoint(bytes32 channelId,uint64 size,bytes32 root,uint256 cumulative)")),
    c.channelId, u256(c.size), c.root, u256(c.cumulative),
  );
  return digest(domainSeparator(chainId, contract), structHash);
}

/** HTTP.md §5.2: `SessionKey(bytes32 channelId,bytes32 sessionKey)`. */
export function sessionDigest(chainId: bigint | number, contract: string, channelId: Uint8Array, sessionKey: Uint8Array): Uint8Array {
  const structHash = keccak(keccak(utf8("SessionKey(bytes32 channelId,bytes32 sessionKey)")), channelId, sessionKey);
  return digest(domainSeparator(chainId, contract), structHash);
}

/** The wire form `{v, r, s}` (r and s as 64 lower-case hex digits). */
export function signEip712(key: Uint8Array, d: Uint8Array): Eip712Sig {
  const { v, r, s } = secpSignDigest(key, d);
  return { v, r: toHex(r), s: toHex(s) };
}
