// mesh/digest.ts — SHA-256 and HMAC-SHA-256 as one synchronous call each, from node:crypto (Node, and Deno 2's Node
// compatibility). WebCrypto's crypto.subtle answers every call through a job, a transfer and a promise: the three
// digests of a POST /routes (the API key, the Idempotency-Key's record, the request's fingerprint) took 16 % of
// routing's CPU under load, more than its route planning.
import { createHash, createHmac } from "node:crypto"

export const sha256 = (data: string | Uint8Array): Uint8Array => new Uint8Array(createHash("sha256").update(data).digest())

export const hmacSha256 = (key: string, data: string): Uint8Array => new Uint8Array(createHmac("sha256", key).update(data).digest())
