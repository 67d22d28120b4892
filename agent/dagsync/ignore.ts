/**
 * `.airflowignore` in Airflow 3's default `glob` syntax (gitignore-like):
 * one pattern per line, `#` comments, `*` and `?` within a path segment,
 * `**` across segments, a leading `/` anchors to the root, a trailing `/`
 * matches a directory and everything under it, `!` re-includes.
 */

interface Rule {
  readonly negate: boolean;
  readonly re: RegExp;
}

function globToRegExp(glob: string): RegExp {
  let anchored = glob.startsWith("/");
  let g = anchored ? glob.slice(1) : glob;
  const dirOnly = g.endsWith("/");
  if (dirOnly) g = g.slice(0, -1);
  if (g.includes("/")) anchored = true;
  let re = "";
  for (let i = 0; i < g.length; i++) {
    const c = g[i]!;
    if (c === "*" && g[i + 1] === "*") {
      re += ".*";
      i++;
      if (g[i + 1] === "/") i++;
    } else if (c === "*") re += "[^/]*";
    else if (c === "?") re += "[^/]";
    else re += c.replace(/[.+^${}()|[\]\\]/g, "\\$&");
  }
  const prefix = anchored ? "^" : "^(?:.*/)?";
  // A pattern matches the path itself or anything below it (a directory).
  return new RegExp(`${prefix}${re}(?:/.*)?$`);
}

export function parseAirflowIgnore(text: string): Rule[] {
  return text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith("#"))
    .map((l) => (l.startsWith("!") ? { negate: true, re: globToRegExp(l.slice(1)) } : { negate: false, re: globToRegExp(l) }));
}

export function isIgnored(rules: readonly Rule[], name: string): boolean {
  let ignored = false;
  for (const r of rules) if (r.re.test(name)) ignored = !r.negate;
  return ignored;
}
