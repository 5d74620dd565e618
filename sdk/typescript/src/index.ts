/** @tally/x402-client: pay tally gateways from TypeScript (spec/PROTOCOL.md, spec/HTTP.md). */
export * from "./bytes.js";
export * from "./crypto.js";
export * from "./messages.js";
export * from "./merkle.js";
export * from "./checkpoint.js";
export * from "./eip712.js";
export * from "./terms.js";
export * from "./mirror.js";
export * from "./lanes.js";
export * from "./wire.js";
export * from "./errors.js";
export * from "./bundle.js";
export { TallyClient, type TallyClientConfig, type RequestOptions } from "./client.js";
export type { Exchange, Receipt, TallyResponse } from "./paid.js";
export { TallyScheme, type TallySchemeOptions } from "./x402.js";
