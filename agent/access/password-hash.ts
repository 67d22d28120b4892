/**
 * Salted PBKDF2 hashes of passwords the agent applied, so that it can tell
 * whether a password changed, and hand a service the previous one's hash for
 * a grace period, without keeping the password itself.
 */
import { pbkdf2Sync, randomBytes, timingSafeEqual } from "node:crypto";

export interface PasswordHash {
  readonly salt: string;
  readonly iterations: number;
  readonly hash: string;
}

const ITERATIONS = 100_000;

export function hashPassword(password: string): PasswordHash {
  const salt = randomBytes(16);
  return { salt: salt.toString("hex"), iterations: ITERATIONS, hash: pbkdf2Sync(password, salt, ITERATIONS, 32, "sha256").toString("hex") };
}

export function passwordMatches(password: string, h: PasswordHash): boolean {
  const want = Buffer.from(h.hash, "hex");
  const got = pbkdf2Sync(password, Buffer.from(h.salt, "hex"), h.iterations, want.length || 32, "sha256");
  return want.length === got.length && timingSafeEqual(want, got);
}
