/**
 * Parsers for the /proc files the process table reads. Pure: text in, data
 * out, so they are tested with fixtures and shared by the real host and tests.
 */
import type { ProcessInfo } from "./host.ts";

/** Parses /proc/<pid>/stat; the command name (field 2) may contain spaces and parentheses. */
export function parseProcStat(text: string): ProcessInfo | undefined {
  const open = text.indexOf("(");
  const close = text.lastIndexOf(")");
  if (open < 0 || close < open) return undefined;
  const pid = Number(text.slice(0, open).trim());
  // Fields from 3 on, after the ")": index 0 = field 3 (state).
  const rest = text
    .slice(close + 1)
    .trim()
    .split(/\s+/);
  const state = rest[0];
  const pgrp = Number(rest[2]);
  const startTime = rest[19];
  if (!Number.isInteger(pid) || state === undefined || !Number.isInteger(pgrp) || startTime === undefined) return undefined;
  return { pid, state, pgrp, startTime };
}

/** A zombie or dead process: it holds a pid but runs nothing. */
export function isDeadState(state: string): boolean {
  return state === "Z" || state === "X" || state === "x";
}

/** /proc/<pid>/cmdline: NUL-separated argv. */
export function parseCmdline(text: string): string[] {
  return text.split("\0").filter((a, i, all) => a !== "" || i < all.length - 1);
}

export interface TcpSocketLine {
  readonly address: string;
  readonly port: number;
  /** 0A = LISTEN (include/net/tcp_states.h). */
  readonly listening: boolean;
  readonly inode: string;
}

/**
 * Parses /proc/net/tcp or /proc/net/tcp6. Addresses are hex in the kernel's
 * byte order: each 32-bit word little-endian; ports big-endian.
 * IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) come out as IPv4.
 */
export function parseProcNetTcp(text: string): TcpSocketLine[] {
  const out: TcpSocketLine[] = [];
  for (const line of text.split("\n").slice(1)) {
    const f = line.trim().split(/\s+/);
    const local = f[1];
    const st = f[3];
    const inode = f[9];
    if (!local || !st || inode === undefined) continue;
    const [hexAddr, hexPort] = local.split(":");
    if (!hexAddr || !hexPort) continue;
    const address = hexAddr.length === 8 ? ipv4(hexAddr) : ipv6(hexAddr);
    if (address === undefined) continue;
    out.push({ address, port: Number.parseInt(hexPort, 16), listening: st === "0A", inode });
  }
  return out;
}

function wordBytes(hex8: string): number[] {
  // One little-endian 32-bit word: "0100007F" is 127.0.0.1.
  return [6, 4, 2, 0].map((i) => Number.parseInt(hex8.slice(i, i + 2), 16));
}

function ipv4(hex: string): string {
  return wordBytes(hex).join(".");
}

function ipv6(hex: string): string | undefined {
  if (hex.length !== 32) return undefined;
  const bytes = [0, 8, 16, 24].flatMap((i) => wordBytes(hex.slice(i, i + 8)));
  const mapped = bytes.slice(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff;
  if (mapped) return bytes.slice(12).join(".");
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((((bytes[i] ?? 0) << 8) | (bytes[i + 1] ?? 0)).toString(16));
  return compressIpv6(groups);
}

/** RFC 5952 form: the longest run of two or more zero groups becomes "::". */
function compressIpv6(groups: string[]): string {
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < groups.length; ) {
    if (groups[i] !== "0") {
      i++;
      continue;
    }
    let j = i;
    while (j < groups.length && groups[j] === "0") j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best < 0) return groups.join(":");
  return `${groups.slice(0, best).join(":")}::${groups.slice(best + bestLen).join(":")}`;
}

/** The unified-hierarchy path from /proc/<pid>/cgroup ("0::/system.slice/x.service"). */
export function parseCgroup(text: string): string | undefined {
  const line = text.split("\n").find((l) => l.startsWith("0::"));
  return line?.slice(3) || undefined;
}
