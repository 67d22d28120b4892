/**
 * The inputs the prediction API is compared on with MLflow's scoring server
 * (`mlflow models serve`), for the iris model of test/fixtures/register_iris.py
 * (four double columns). Used by test/integration/serving-compat.test.ts; each
 * case is one POST /invocations: a body and a Content-Type header (undefined:
 * none sent).
 */
export const FEATURES = ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"] as const;
export const SETOSA = [5.1, 3.5, 1.4, 0.2];
export const VIRGINICA = [6.7, 3.0, 5.2, 2.3];
export const VERSICOLOR = [5.9, 3.0, 4.2, 1.5];

export interface CompatCase {
  readonly name: string;
  readonly body: string | Uint8Array;
  readonly contentType: string | undefined;
}

const JSON_TYPE = "application/json";
const rec = (row: readonly unknown[], cols: readonly string[] = FEATURES): Record<string, unknown> => Object.fromEntries(cols.map((c, i) => [c, row[i]]));
const j = (name: string, doc: unknown, contentType: string | undefined = JSON_TYPE): CompatCase => ({ name, body: JSON.stringify(doc), contentType });
const split = (data: unknown[], columns: readonly string[] = FEATURES, extra: Record<string, unknown> = {}) => ({ dataframe_split: { columns, data, ...extra } });
const csv = (name: string, text: string, contentType = "text/csv"): CompatCase => ({ name, body: text, contentType });

/** Rows cycling through the three species. */
export function rows(n: number): number[][] {
  const base = [SETOSA, VIRGINICA, VERSICOLOR];
  return Array.from({ length: n }, (_, i) => base[i % 3] as number[]);
}

/** Every case; `parquet` is a Parquet file of two rows (made by the test with pandas). */
export function compatCases(parquet: Uint8Array): CompatCase[] {
  const two = [SETOSA, VIRGINICA];
  const reversed = [...FEATURES].reverse();
  return [
    // formats
    j("dataframe_split", split(two)),
    j("dataframe_split with an index", split(two, FEATURES, { index: [7, 9] })),
    j("dataframe_split, columns reordered", split(two.map((r) => [...r].reverse()), reversed)),
    j("dataframe_split without columns", { dataframe_split: { data: two } }),
    j("dataframe_split with an unknown field", split(two, FEATURES, { dtypes: { a: 1 } })),
    j("dataframe_split, data not a list", { dataframe_split: { columns: FEATURES, data: 5 } }),
    j("dataframe_split, not an object", { dataframe_split: [SETOSA] }),
    j("dataframe_records", { dataframe_records: two.map((r) => rec(r)) }),
    j("dataframe_records, keys in another order", { dataframe_records: two.map((r) => rec([...r].reverse(), reversed)) }),
    j("dataframe_records, one object (not a list)", { dataframe_records: rec(SETOSA) }),
    j("dataframe_records, rows as lists", { dataframe_records: two }),
    j("instances, rows in signature order", { instances: two }),
    j("instances, records", { instances: two.map((r) => rec(r)) }),
    j("instances, columnar", { instances: Object.fromEntries(FEATURES.map((f, i) => [f, two.map((r) => r[i])])) }),
    j("instances, one row (flat list)", { instances: SETOSA }),
    j("inputs, rows in signature order", { inputs: two }),
    j("inputs, records", { inputs: two.map((r) => rec(r)) }),
    j("inputs, columnar", { inputs: Object.fromEntries(FEATURES.map((f, i) => [f, two.map((r) => r[i])])) }),
    j("inputs, one instance {column: value}", { inputs: rec(VIRGINICA) }),
    j("inputs, columnar with unequal lengths", { inputs: { ...Object.fromEntries(FEATURES.map((f, i) => [f, two.map((r) => r[i])])), petal_width_cm: [0.2] } }),
    j("inputs, a scalar", { inputs: 5 }),
    j("params beside the input", { ...split(two), params: { threshold: 0.5 } }),
    j("an unknown top-level key beside the input", { ...split(two), extra: 1 }),
    j("two input keys", { instances: two, inputs: two }),
    j("no input key", { data: two }),
    j("an empty object", {}),
    // types
    j("integers where doubles are expected", split([[5, 3, 1, 0]])),
    j("integers where doubles are expected, records", { dataframe_records: [rec([5, 3, 1, 0])] }),
    j("strings that look like numbers", { dataframe_records: [rec(SETOSA.map(String))] }),
    j("strings that look like numbers, dataframe_split", split([SETOSA.map(String)])),
    j("strings that look like numbers, instances", { instances: [SETOSA.map(String)] }),
    j("one string that looks like a number among numbers", { dataframe_records: [rec([5.1, "3.5", 1.4, 0.2])] }),
    j("a string that is not a number", { dataframe_records: [rec([5.1, "wide", 1.4, 0.2])] }),
    j("booleans", split([[true, false, true, true]])),
    j("one boolean among numbers", split([[5.1, true, 1.4, 0.2]])),
    j("a nested list as a value", split([[5.1, [3.5], 1.4, 0.2]])),
    j("an object as a value", { dataframe_records: [rec([5.1, { v: 3.5 }, 1.4, 0.2])] }),
    j("big numbers", split([[1e300, -1e300, 1e-300, 0]])),
    { name: "a huge integer", body: `{"dataframe_split": {"columns": ${JSON.stringify(FEATURES)}, "data": [[12345678901234567890123, 3.5, 1.4, 0.2]]}}`, contentType: JSON_TYPE },
    { name: "a 64-bit integer", body: `{"dataframe_split": {"columns": ${JSON.stringify(FEATURES)}, "data": [[9007199254740993, 3.5, 1.4, 0.2]]}}`, contentType: JSON_TYPE },
    // extra and missing columns
    j("an extra column (records)", { dataframe_records: [{ ...rec(SETOSA), color: "blue" }] }),
    j("an extra numeric column (split)", split([[...SETOSA, 9]], [...FEATURES, "extra"])),
    j("an extra column of another length (inputs columnar)", { inputs: { ...Object.fromEntries(FEATURES.map((f, i) => [f, [SETOSA[i]]])), color: ["blue", "red"] } }),
    j("an extra column (inputs columnar)", { inputs: { ...Object.fromEntries(FEATURES.map((f, i) => [f, [SETOSA[i]]])), color: ["blue"] } }),
    j("a missing column (records)", { dataframe_records: [rec(SETOSA.slice(0, 3))] }),
    j("a missing column (split)", split([SETOSA.slice(0, 3)], FEATURES.slice(0, 3))),
    j("a misspelt column", split([SETOSA], [...FEATURES.slice(0, 3), "petal_width"])),
    j("a column given twice (split)", split([[...SETOSA, 0.3]], [...FEATURES, "petal_width_cm"])),
    j("a key missing in one record", { dataframe_records: [rec(SETOSA), rec(VIRGINICA.slice(0, 3))] }),
    j("instances, a short row", { instances: [SETOSA.slice(0, 3)] }),
    j("instances, a long row", { instances: [[...SETOSA, 1]] }),
    j("dataframe_split, a short row", split([SETOSA.slice(0, 2)])),
    j("dataframe_split, rows of different lengths", split([SETOSA, VIRGINICA.slice(0, 3)])),
    // nulls, NaN, empty
    j("a null", split([[5.1, null, 1.4, 0.2]])),
    j("a null in records", { dataframe_records: [rec([5.1, null, 1.4, 0.2])] }),
    { name: "a NaN literal", body: `{"dataframe_split": {"columns": ${JSON.stringify(FEATURES)}, "data": [[5.1, NaN, 1.4, 0.2]]}}`, contentType: JSON_TYPE },
    { name: "an Infinity literal", body: `{"dataframe_split": {"columns": ${JSON.stringify(FEATURES)}, "data": [[5.1, Infinity, 1.4, 0.2]]}}`, contentType: JSON_TYPE },
    j("instances, an empty list", { instances: [] }),
    j("inputs, an empty list", { inputs: [] }),
    j("dataframe_split, no rows", split([])),
    j("dataframe_records, an empty list", { dataframe_records: [] }),
    j("an empty record", { dataframe_records: [{}] }),
    // malformed
    { name: "an empty body", body: "", contentType: JSON_TYPE },
    { name: "whitespace only", body: "  \n", contentType: JSON_TYPE },
    { name: "not JSON", body: "{predictions", contentType: JSON_TYPE },
    { name: "truncated JSON", body: JSON.stringify(split(two)).slice(0, 30), contentType: JSON_TYPE },
    j("a JSON array", [SETOSA]),
    j("a JSON string", "instances"),
    j("JSON null", null),
    { name: "a body that is not UTF-8", body: new Uint8Array([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d]), contentType: JSON_TYPE },
    // content types
    j("application/json; charset=utf-8", { dataframe_records: two.map((r) => rec(r)) }, "application/json; charset=utf-8"),
    j("application/json; charset=UTF-8", { dataframe_records: two.map((r) => rec(r)) }, "application/json; charset=UTF-8"),
    j("application/json;charset=utf-8 (no space)", { dataframe_records: two.map((r) => rec(r)) }, "application/json;charset=utf-8"),
    j("Application/JSON (capitals)", { dataframe_records: two.map((r) => rec(r)) }, "Application/JSON"),
    j("application/json; charset=latin-1", { dataframe_records: two.map((r) => rec(r)) }, "application/json; charset=latin-1"),
    j("application/json; format=pandas-split (MLflow 1.x)", { dataframe_records: two.map((r) => rec(r)) }, "application/json; format=pandas-split"),
    j("text/plain", { dataframe_records: two.map((r) => rec(r)) }, "text/plain"),
    { name: "no content type", body: new TextEncoder().encode(JSON.stringify({ dataframe_records: two.map((r) => rec(r)) })), contentType: undefined },
    j("application/x-www-form-urlencoded", { dataframe_records: two.map((r) => rec(r)) }, "application/x-www-form-urlencoded"),
    // CSV
    csv("CSV with a header", `${FEATURES.join(",")}\n${SETOSA.join(",")}\n${VIRGINICA.join(",")}\n`),
    csv("CSV, columns reordered", `${reversed.join(",")}\n${[...SETOSA].reverse().join(",")}\n`),
    csv("CSV with an extra column", `${FEATURES.join(",")},note\n${SETOSA.join(",")},hello\n`),
    csv("CSV with a missing column", `${FEATURES.slice(0, 3).join(",")}\n${SETOSA.slice(0, 3).join(",")}\n`),
    csv("CSV with CRLF line ends", `${FEATURES.join(",")}\r\n${SETOSA.join(",")}\r\n`),
    csv("CSV with quoted values", `${FEATURES.map((f) => `"${f}"`).join(",")}\n${SETOSA.map((v) => `"${v}"`).join(",")}\n`),
    csv("CSV with spaces around values", `${FEATURES.join(",")}\n${SETOSA.join(" , ")}\n`),
    csv("CSV with a blank line", `${FEATURES.join(",")}\n${SETOSA.join(",")}\n\n${VIRGINICA.join(",")}\n`),
    csv("CSV with integers", `${FEATURES.join(",")}\n5,3,1,0\n`),
    csv("CSV with an index column", `,${FEATURES.join(",")}\n0,${SETOSA.join(",")}\n`),
    csv("CSV with an empty field", `${FEATURES.join(",")}\n5.1,,1.4,0.2\n`),
    csv("CSV with a text value", `${FEATURES.join(",")}\n5.1,abc,1.4,0.2\n`),
    csv("CSV with NaN", `${FEATURES.join(",")}\n5.1,NaN,1.4,0.2\n`),
    csv("CSV header only", `${FEATURES.join(",")}\n`),
    csv("CSV without a header", `${SETOSA.join(",")}\n${VIRGINICA.join(",")}\n`),
    csv("CSV with a short row", `${FEATURES.join(",")}\n5.1,3.5\n`),
    csv("CSV with a long row", `${FEATURES.join(",")}\n5.1,3.5,1.4,0.2,9\n`),
    csv("CSV, empty body", ""),
    csv("text/csv; charset=utf-8", `${FEATURES.join(",")}\n${SETOSA.join(",")}\n`, "text/csv; charset=utf-8"),
    { name: "Parquet", body: parquet, contentType: "application/vnd.apache.parquet" },
    { name: "Parquet, not a Parquet file", body: "PAR1 nope", contentType: "application/vnd.apache.parquet" },
    // big batches
    j("10,000 rows, dataframe_split", split(rows(10_000))),
    j("10,000 rows, instances (records)", { instances: rows(10_000).map((r) => rec(r)) }),
    j("10,000 rows, inputs (columnar)", { inputs: Object.fromEntries(FEATURES.map((f, i) => [f, rows(10_000).map((r) => r[i])])) }),
    j("10,000 rows, dataframe_records", { dataframe_records: rows(10_000).map((r) => rec(r)) }),
    csv("10,000 rows, CSV", `${FEATURES.join(",")}\n${rows(10_000).map((r) => r.join(",")).join("\n")}\n`),
  ];
}
