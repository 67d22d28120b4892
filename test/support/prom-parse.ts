/**
 * A small, strict parser of the Prometheus text exposition format (0.0.4),
 * for tests of `GET /metrics`. It throws on anything a Prometheus server
 * would reject, and on a few things it would tolerate but that point to a
 * bug in us (a family split in two, a duplicate series, a TYPE line after
 * the family's samples, a histogram without +Inf).
 */

export type MetricType = "counter" | "gauge" | "histogram" | "summary" | "untyped";

export interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
  readonly timestamp?: number;
}

export interface MetricFamily {
  readonly name: string;
  help?: string;
  type: MetricType;
  readonly samples: Sample[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const TYPES = new Set<MetricType>(["counter", "gauge", "histogram", "summary", "untyped"]);

export class PromParseError extends Error {
  constructor(lineNo: number, line: string, why: string) {
    super(`line ${lineNo}: ${why}: ${JSON.stringify(line)}`);
    this.name = "PromParseError";
  }
}

/** Values as Prometheus reads them (Go's strconv.ParseFloat: NaN and Inf in any case; prom-client writes "Nan"). */
function parseValue(text: string): number | undefined {
  const word = text.toLowerCase();
  if (word === "nan") return Number.NaN;
  if (word === "+inf" || word === "inf" || word === "+infinity" || word === "infinity") return Number.POSITIVE_INFINITY;
  if (word === "-inf" || word === "-infinity") return Number.NEGATIVE_INFINITY;
  if (!/^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$/.test(text)) return undefined;
  return Number(text);
}

/** The family a sample belongs to: `x_bucket`, `x_sum`, `x_count` belong to histogram/summary `x`. */
function familyOf(sampleName: string, families: Map<string, MetricFamily>): MetricFamily | undefined {
  const direct = families.get(sampleName);
  if (direct) return direct;
  for (const suffix of ["_bucket", "_sum", "_count"]) {
    if (!sampleName.endsWith(suffix)) continue;
    const base = families.get(sampleName.slice(0, -suffix.length));
    if (!base) continue;
    if (base.type === "histogram" || (base.type === "summary" && suffix !== "_bucket")) return base;
  }
  return undefined;
}

/** Parses `{a="1",b="x\"y"}` starting at `i` (the `{`); returns labels and the index after `}`. */
function parseLabels(s: string, start: number, fail: (why: string) => never): { labels: Record<string, string>; end: number } {
  const labels: Record<string, string> = {};
  let i = start + 1;
  for (;;) {
    if (s[i] === "}") return { labels, end: i + 1 };
    const nameMatch = /^[a-zA-Z_][a-zA-Z0-9_]*/.exec(s.slice(i));
    if (!nameMatch) return fail("bad label name");
    const name = nameMatch[0];
    if (Object.hasOwn(labels, name)) fail(`duplicate label ${name}`);
    i += name.length;
    if (s[i] !== "=" || s[i + 1] !== '"') fail(`label ${name}: expected ="`);
    i += 2;
    let value = "";
    for (;;) {
      const c = s[i];
      if (c === undefined) fail("unterminated label value");
      if (c === '"') break;
      if (c === "\\") {
        const n = s[i + 1];
        if (n === "\\") value += "\\";
        else if (n === '"') value += '"';
        else if (n === "n") value += "\n";
        else fail(`bad escape \\${n ?? ""} in label value`);
        i += 2;
        continue;
      }
      if (c === "\n") fail("newline in label value");
      value += c;
      i++;
    }
    labels[name] = value;
    i++; // closing quote
    if (s[i] === ",") {
      i++;
      continue;
    }
    if (s[i] !== "}") fail("expected , or } after label value");
  }
}

export function parsePrometheusText(text: string): Map<string, MetricFamily> {
  if (text.length > 0 && !text.endsWith("\n")) throw new Error("exposition must end with a newline");
  const families = new Map<string, MetricFamily>();
  const typed = new Set<string>();
  const seenSeries = new Set<string>();
  let current: MetricFamily | undefined;
  const lines = text.split("\n");
  lines.pop(); // after the final newline

  for (const [idx, line] of lines.entries()) {
    const fail: (why: string) => never = (why) => {
      throw new PromParseError(idx + 1, line, why);
    };
    /** The family `name`, opened now if new; all lines of a family must be contiguous. */
    const enter = (name: string): MetricFamily => {
      let fam = families.get(name);
      if (fam) {
        if (fam !== current) fail(`family ${name} appears twice`);
        return fam;
      }
      fam = { name, type: "untyped", samples: [] };
      families.set(name, fam);
      current = fam;
      return fam;
    };
    if (line.trim() === "") continue;

    if (line.startsWith("#")) {
      const m = /^#\s+(HELP|TYPE)\s+(\S+)(?:\s(.*))?$/.exec(line);
      if (!m) continue; // a plain comment
      const [, keyword, name = "", rest = ""] = m;
      if (!METRIC_NAME.test(name)) fail("bad metric name");
      const fam = enter(name);
      if (keyword === "HELP") {
        if (fam.help !== undefined) fail(`second HELP for ${name}`);
        if (!/^(?:[^\\]|\\[\\n])*$/.test(rest)) fail("bad escape in HELP");
        fam.help = rest.replace(/\\(\\|n)/g, (_m, c: string) => (c === "n" ? "\n" : "\\"));
      } else {
        if (typed.has(name)) fail(`second TYPE for ${name}`);
        if (fam.samples.length > 0) fail(`TYPE for ${name} after its samples`);
        const t = rest.trim();
        if (!TYPES.has(t as MetricType)) fail(`unknown type ${JSON.stringify(t)}`);
        fam.type = t as MetricType;
        typed.add(name);
      }
      continue;
    }

    const nameMatch = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line);
    if (!nameMatch) fail("not a sample line");
    const sampleName = nameMatch[0];
    let i = sampleName.length;
    let labels: Record<string, string> = {};
    if (line[i] === "{") {
      const parsed = parseLabels(line, i, fail);
      labels = parsed.labels;
      i = parsed.end;
    }
    const vm = /^[ \t]+(\S+)(?:[ \t]+(-?[0-9]+))?[ \t]*$/.exec(line.slice(i));
    if (!vm) fail("expected a value (and optional timestamp) after the name");
    const value = parseValue(vm[1] ?? "");
    if (value === undefined) fail(`bad value ${JSON.stringify(vm[1])}`);

    const fam = familyOf(sampleName, families) ?? enter(sampleName);
    if (fam !== current) fail(`family ${fam.name} appears twice`);
    if (fam.type === "histogram" && sampleName === `${fam.name}_bucket` && labels.le === undefined) fail("bucket without le");
    if (fam.type === "summary" && sampleName === fam.name && labels.quantile === undefined) fail("summary sample without quantile");
    if ((fam.type === "counter" || fam.type === "histogram") && value < 0) fail("negative counter");

    const key = `${sampleName}{${Object.keys(labels)
      .sort()
      .map((k) => `${k}=${JSON.stringify(labels[k])}`)
      .join(",")}}`;
    if (seenSeries.has(key)) fail(`duplicate series ${key}`);
    seenSeries.add(key);
    const ts = vm[2];
    fam.samples.push(ts === undefined ? { name: sampleName, labels, value } : { name: sampleName, labels, value, timestamp: Number(ts) });
  }

  for (const fam of families.values()) {
    if (fam.type !== "histogram") continue;
    const hasInf = fam.samples.some((s) => s.name === `${fam.name}_bucket` && s.labels.le === "+Inf");
    const hasCount = fam.samples.some((s) => s.name === `${fam.name}_count`);
    if (fam.samples.length > 0 && (!hasInf || !hasCount)) throw new Error(`histogram ${fam.name} lacks a +Inf bucket or _count`);
  }
  return families;
}

/** The value of the sample `name` with exactly these labels, or undefined. */
export function sampleValue(
  families: Map<string, MetricFamily>,
  name: string,
  labels: Record<string, string> = {},
): number | undefined {
  for (const fam of families.values()) {
    for (const s of fam.samples) {
      if (s.name !== name) continue;
      const keys = Object.keys(labels);
      if (keys.length !== Object.keys(s.labels).length) continue;
      if (keys.every((k) => s.labels[k] === labels[k])) return s.value;
    }
  }
  return undefined;
}
